"""Shared test settings."""

from hypothesis import HealthCheck, settings

# The machine is shared (2 cores, other work running): no per-example
# deadline, and slow input generation is not a failure. Timings are measured
# by the benchmarks in tests/bench/, never asserted here.
settings.register_profile(
    "scoped", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=200
)
settings.load_profile("scoped")
