"""What the worker processes of one gateway share (``scoped gateway --workers N``).

Each worker is a whole gateway: its own event loop, connection pool, token
and catalog caches, and circuits. They share the listening socket (uvicorn's
supervisor) and one directory, through which

- ``/metrics`` answers for every worker, whichever one the scrape reaches:
  each worker writes a snapshot of its series there (``metrics-<pid>.json``,
  every :data:`PUBLISH_EVERY` seconds while it serves, every
  :data:`REPUBLISH` rounds anyway, and when it stops), and a
  scrape merges them: counters and histograms summed (a dead worker's last
  counts kept, so no counter goes back), gauges the highest of the live
  workers;
- circuits agree: a worker writes every change of a site's circuit
  (``circuits-<pid>.json``) and adopts, at each probe round, the latest change
  another live worker made, so a site one worker found dead is skipped by
  every worker within ``circuit.probe_interval`` (each worker's own probes
  close it again the same way).

Caches stay per worker: a token or catalog cached in one worker is read
again by another (a round trip more, never a wrong answer); long paging
markers are shared by the marker store (memcached), not here.

Why files and not prometheus-client's multiprocess mode: the hot series are
plain dictionaries (scoped/metrics.py: a prometheus-client child costs ~4
µs per request); a snapshot a second costs nothing per request.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.metrics_core import Metric

WORKERS_ENV = "SCOPED_WORKERS_DIR"
"""The shared directory, handed by ``scoped gateway`` to its workers."""
PUBLISH_EVERY = 1.0
"""Seconds between a worker's snapshots when it served requests (or a
circuit changed): how stale ``/metrics`` can be."""
REPUBLISH = 10
"""Rounds after which a snapshot is written anyway (series that move
without a request: catalog reads, token renewals)."""

_CIRCUITS = "circuits-"
_METRICS = "metrics-"


class WorkerShare:
    """This worker's view of the directory its siblings share."""

    def __init__(self, folder: str | Path, pid: int | None = None) -> None:
        self.folder = Path(folder)
        self.pid = os.getpid() if pid is None else pid

    # -- metrics --------------------------------------------------------------

    def write_metrics(self, families: Iterable[Metric]) -> None:
        data = [
            {
                "name": f.name,
                "type": f.type,
                "doc": f.documentation,
                "samples": [[s.name, s.labels, s.value] for s in f.samples],
            }
            for f in families
        ]
        self._write(f"{_METRICS}{self.pid}.json", data)

    def merged_metrics(self, own: list[Metric]) -> list[Metric]:
        """Every worker's series together; this worker's from ``own`` (live),
        the others' from their last snapshot."""
        snapshots: list[tuple[bool, list[Metric]]] = [(True, own)]
        for pid, data in self._read(_METRICS):
            if pid != self.pid:
                snapshots.append((_alive(pid), [_family(f) for f in data]))
        return merge(snapshots)

    # -- circuits -------------------------------------------------------------

    def write_circuits(self, changes: Mapping[str, tuple[int, float]]) -> None:
        """Every site whose circuit this worker changed: (state, wall time)."""
        self._write(f"{_CIRCUITS}{self.pid}.json", dict(changes))

    def others_circuits(self) -> dict[str, tuple[int, float]]:
        """Per site, the latest change a live sibling made: (state, wall time)."""
        latest: dict[str, tuple[int, float]] = {}
        for pid, data in self._read(_CIRCUITS):
            if pid == self.pid or not _alive(pid) or not isinstance(data, dict):
                continue
            for site, (state, at) in data.items():
                if site not in latest or at > latest[site][1]:
                    latest[site] = (int(state), float(at))
        return latest

    # -- files ----------------------------------------------------------------

    def _write(self, name: str, data: Any) -> None:
        tmp = self.folder / f".{name}.{self.pid}.tmp"
        tmp.write_bytes(orjson.dumps(data))
        os.replace(tmp, self.folder / name)  # readers see the old or the new, whole

    def _read(self, prefix: str) -> Iterable[tuple[int, Any]]:
        for path in self.folder.glob(f"{prefix}*.json"):
            pid = path.name[len(prefix) : -len(".json")]
            if not pid.isdigit():
                continue
            with contextlib.suppress(OSError, orjson.JSONDecodeError):
                yield int(pid), orjson.loads(path.read_bytes())


def merge(snapshots: list[tuple[bool, list[Metric]]]) -> list[Metric]:
    """One set of families from several workers' (alive?, families):
    counters, histograms and the rest summed (``_created`` the earliest),
    gauges the highest of the live workers."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for alive, fams in snapshots:
        for fam in fams:
            if fam.name not in families:
                families[fam.name] = Metric(fam.name, fam.documentation, fam.type)
                values[fam.name] = {}
            into = values[fam.name]
            for s in fam.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                if fam.type == "gauge":
                    if alive:
                        into[key] = max(into.get(key, s.value), s.value)
                elif s.name.endswith("_created"):
                    into[key] = min(into.get(key, s.value), s.value)
                else:
                    into[key] = into.get(key, 0.0) + s.value
    out = []
    for name, fam in families.items():
        # A histogram's samples of one label set together, in the order its
        # buckets were first seen (every worker writes them the same way).
        keyed = list(values[name].items())
        order = {k: i for i, (k, _) in enumerate(keyed)}
        keyed.sort(key=lambda kv: (_without_le(kv[0][1]), order[kv[0]]))
        for (sample, labels), value in keyed:
            fam.add_sample(sample, dict(labels), value)
        out.append(fam)
    return out


def _without_le(labels: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    return tuple(kv for kv in labels if kv[0] != "le")


def _family(data: dict[str, Any]) -> Metric:
    fam = Metric(data["name"], data["doc"], data["type"])
    for name, labels, value in data["samples"]:
        fam.add_sample(name, labels, value)
    return fam


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
