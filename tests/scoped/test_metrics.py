"""The hot-path series, as Prometheus reads them from ``/metrics``."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from scoped.metrics import Metrics


def samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(m.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_counters_count_by_labels() -> None:
    m = Metrics()
    for _ in range(3):
        m.requests.inc("compute", "GET", "2xx")
    m.requests.inc("image", "PUT", "5xx")
    got = samples(m)
    key = (("method", "GET"), ("outcome", "2xx"), ("service", "compute"))
    assert got[("scoped_requests_total", key)] == 3
    key = (("method", "PUT"), ("outcome", "5xx"), ("service", "image"))
    assert got[("scoped_requests_total", key)] == 1


def test_histogram_buckets_are_cumulative_and_inclusive() -> None:
    m = Metrics()
    for seconds in (0.001, 0.0011, 0.3, 100.0):  # on a bound, past it, far out
        m.upstream_seconds.observe(seconds, "Berlin")
    got = samples(m)

    def bucket(le: str) -> float:
        return got[("scoped_upstream_seconds_bucket", (("le", le),))]

    assert bucket("0.001") == 1  # le means <=
    assert bucket("0.0025") == 2
    assert bucket("0.25") == 2
    assert bucket("0.5") == 3
    assert bucket("30.0") == 3
    assert bucket("+Inf") == 4
    assert got[("scoped_upstream_seconds_count", ())] == 4
    assert abs(got[("scoped_upstream_seconds_sum", ())] - 100.3021) < 1e-9
    assert abs(got[("scoped_upstream_site_seconds_total", (("site", "Berlin"),))] - 100.3021) < 1e-9


def test_a_thousand_sites_cost_a_few_series_each() -> None:
    """Per site: its calls by outcome and its seconds, not a histogram each."""
    m = Metrics()
    for i in range(1000):
        m.upstream.inc(f"S{i}", "compute", "200")
        m.upstream_seconds.observe(0.02, f"S{i}")
    per_site = [key for key in samples(m) if ("site", "S7") in key[1]]
    assert sorted(name for name, _ in per_site) == [
        "scoped_upstream_requests_total",
        "scoped_upstream_site_seconds_total",
    ]
    assert samples(m)[("scoped_upstream_seconds_count", ())] == 1000
