"""Prometheus metrics of one gateway (docs/design.md §7).

Each gateway has its own registry, so several can live in one process (tests,
the WSGI filter in several pipelines) without clashing series.

The series touched by every request (:class:`Tally`, :class:`Spread`) are
plain dictionaries read by a collector when ``/metrics`` is scraped: a
prometheus-client child costs a lock and a few calls per update, about 4 µs
of the gateway's per-request CPU on a forwarding path. The core updates them
from one event-loop thread; a scrape copies them before reading. The rare
series (circuits, tokens, catalogs, failovers) are prometheus-client's own.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
_WIDTH_BUCKETS = (1, 2, 3, 5, 10, 20, 50, 100, 200, 500)


class Tally:
    """A counter by label values: ``tally.counts[labels] += 1`` on the hot path."""

    def __init__(self, name: str, doc: str, labels: Sequence[str]) -> None:
        self.name, self.doc, self.labels = name, doc, list(labels)
        self.counts: dict[tuple[str, ...], int] = {}

    def inc(self, *labels: str) -> None:
        counts = self.counts
        counts[labels] = counts.get(labels, 0) + 1

    def family(self) -> Metric:
        family = CounterMetricFamily(self.name, self.doc, labels=self.labels)
        for labels, count in sorted(dict(self.counts).items()):
            family.add_metric(labels, count)
        return family


class Spread:
    """A histogram by label values; buckets counted apart, summed at a scrape."""

    def __init__(self, name: str, doc: str, labels: Sequence[str], bounds: Sequence[float]):
        self.name, self.doc, self.labels = name, doc, list(labels)
        self.bounds = tuple(float(b) for b in bounds)
        self.series: dict[tuple[str, ...], list[float]] = {}
        """labels -> [count per bucket (the last one +Inf)..., sum]"""

    def observe(self, value: float, *labels: str) -> None:
        row = self.series.get(labels)
        if row is None:
            row = self.series[labels] = [0.0] * (len(self.bounds) + 2)
        row[bisect_left(self.bounds, value)] += 1
        row[-1] += value

    def family(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        for labels, live in sorted(dict(self.series).items()):
            row = list(live)
            buckets, running = [], 0.0
            for bound, count in zip((*self.bounds, float("inf")), row[:-1], strict=True):
                running += count
                le = floatToGoString(bound)  # type: ignore[no-untyped-call]
                buckets.append((le, running))
            family.add_metric(list(labels), buckets, sum_value=row[-1])
        return family


class SiteLatency:
    """Time to sites' answers: one histogram for every site together, and
    per site only its total seconds (over ``scoped_upstream_requests_total``,
    its mean). A histogram per site is 17 series a site: 17,000 and most of
    a 1.2 MB ``/metrics`` at 1000 sites, for buckets nobody reads per site."""

    def __init__(self, name: str, doc: str, bounds: Sequence[float]) -> None:
        self.spread = Spread(name, doc, [], bounds)
        self.site_name = name.replace("upstream_", "upstream_site_")
        self.by_site: dict[str, float] = {}

    def observe(self, value: float, site: str) -> None:
        self.spread.observe(value)
        by_site = self.by_site
        by_site[site] = by_site.get(site, 0.0) + value

    def families(self) -> Iterator[Metric]:
        yield self.spread.family()
        family = CounterMetricFamily(
            self.site_name,
            "Seconds spent waiting for each site's answers (over "
            "scoped_upstream_requests_total: its mean).",
            labels=["site"],
        )
        for site, seconds in sorted(dict(self.by_site).items()):
            family.add_metric([site], seconds)
        yield family


class _Collector:
    def __init__(self, *metrics: Tally | Spread | SiteLatency) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        for metric in self.metrics:
            if isinstance(metric, SiteLatency):
                yield from metric.families()
            else:
                yield metric.family()


class Metrics:
    """The series a gateway exports on ``GET /metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Tally(
            "scoped_requests",
            "Requests served, by service, method and outcome (HTTP status class).",
            ["service", "method", "outcome"],
        )
        self.upstream = Tally(
            "scoped_upstream_requests",
            "Calls to sites, by site, service and outcome (status or failure kind).",
            ["site", "service", "outcome"],
        )
        self.upstream_seconds = SiteLatency(
            "scoped_upstream_seconds",
            "Time to a site's answer (headers; body too when merged), every site together.",
            _LATENCY_BUCKETS,
        )
        self.fanout = Spread(
            "scoped_fanout_width", "Sites a request was planned to reach.", [], _WIDTH_BUCKETS
        )
        self.tls_handshakes = Tally(
            "scoped_upstream_tls_handshakes",
            "TLS handshakes of new connections to sites: full, or resumed (a session kept "
            "from an earlier connection to the same origin).",
            ["kind"],
        )
        self.registry.register(
            _Collector(
                self.requests,
                self.upstream,
                self.upstream_seconds,
                self.fanout,
                self.tls_handshakes,
            )
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
        self.token_exchanges = Counter(
            "scoped_token_exchanges",
            "Keystone-to-Keystone exchanges for a site's own token for a user's "
            "(then cached until shortly before it expires), by site and outcome (ok, error).",
            ["site", "outcome"],
            registry=self.registry,
        )
        self.catalog_refreshes = Counter(
            "scoped_catalog_refreshes",
            "Catalog reads from sites' Keystones: those that failed by site, the rest "
            '(outcome ok) counted together with site "*".',
            ["site", "outcome"],
            registry=self.registry,
        )

    def families(self) -> list[Metric]:
        """Every series now (what a scrape would read)."""
        return list(self.registry.collect())

    def render(self, merged: list[Metric] | None = None) -> bytes:
        """The exposition: this gateway's series, or ``merged`` (every
        worker's, scoped/workers.py)."""
        if merged is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Fixed(merged))
        return generate_latest(registry)


class _Fixed:
    """A collector of families already collected."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)
