"""Prometheus metrics of one gateway (DESIGN.md §7).

Each gateway has its own registry, so several can live in one process (tests,
the WSGI filter in several pipelines) without clashing series.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
_WIDTH_BUCKETS = (1, 2, 3, 5, 10, 20, 50, 100, 200, 500)


class Metrics:
    """The series a gateway exports on ``GET /metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "scoped_requests",
            "Requests served, by service, method and outcome (HTTP status class).",
            ["service", "method", "outcome"],
            registry=self.registry,
        )
        self.upstream = Counter(
            "scoped_upstream_requests",
            "Calls to sites, by site, service and outcome (status or failure kind).",
            ["site", "service", "outcome"],
            registry=self.registry,
        )
        self.upstream_seconds = Histogram(
            "scoped_upstream_seconds",
            "Time to a site's answer (headers; body too when merged), by site.",
            ["site"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.fanout = Histogram(
            "scoped_fanout_width",
            "Sites a request was planned to reach.",
            buckets=_WIDTH_BUCKETS,
            registry=self.registry,
        )
        self.failovers = Counter(
            "scoped_failovers",
            "Failovers (|) from a site that failed to the next one tried.",
            ["from_site", "to_site"],
            registry=self.registry,
        )

        self.circuit_state = Gauge(
            "scoped_circuit_state",
            "Circuit of each site: 0 closed, 1 open (skipped), 2 half-open (on trial).",
            ["site"],
            registry=self.registry,
        )
        self.token_renewals = Counter(
            "scoped_token_renewals",
            "Service tokens renewed at each site.",
            ["site"],
            registry=self.registry,
        )
        self.catalog_refreshes = Counter(
            "scoped_catalog_refreshes",
            "Catalog reads from each site's Keystone, by outcome (ok, error).",
            ["site", "outcome"],
            registry=self.registry,
        )

        self._children: dict[tuple[object, ...], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, cached: the hot path pays one dict lookup."""
        key = (id(metric), *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def render(self) -> bytes:
        return generate_latest(self.registry)
