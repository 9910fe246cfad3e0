"""Node-wide metrics: every worker's samples in a node-local directory, added up by whichever worker is scraped.

Why not prometheus_client's multiprocess mode: it makes every `inc()` a locked mmap write (1.4 µs
against 0.5 µs for a plain Counter and 0.06 µs for the hit path's plain int, `python -m timeit`),
and it cannot aggregate custom collectors such as HotCounters. Here a worker keeps its cheap
in-process registry and writes all of it, as JSON, to `<dir>/<pid>-<token>.json` once a second
(only when it changed). A scrape reads its own registry live and the other files, sums counters and
histogram buckets, folds the files of dead workers into `dead.json` (so totals never go backwards
when a worker dies or restarts, as prometheus_client does for counters), and combines gauges per
GAUGE_RULES. Other workers' samples are at most a second old.
"""
from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import re
import secrets
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric

log = logging.getLogger("edge")
INTERVAL = 1.0  # seconds between a worker's snapshots
DEAD, LOCK = "dead.json", "lock"
OURS = re.compile(r"[0-9]+-[0-9a-f]+\.(?:json|tmp)|dead\.(?:json|tmp)|lock")  # the files written here
CUMULATIVE = frozenset({"counter", "histogram"})  # summed, dead workers' totals kept

# How the workers' values of a gauge make the node's, by (metric, tier label); (metric, None) = any label.
# A gauge not named here takes the largest value.
GAUGE_RULES: dict[tuple[str, str | None], Callable[[Iterable[float]], float]] = {
    ("edge_tier_entries", "memory"): sum,  # L0 is per process: the node holds all of them
    ("edge_tier_bytes", "memory"): sum,
    ("edge_tier_entries", None): max,  # L1 is one directory every worker reports; L2 is shared
    ("edge_tier_bytes", None): max,
    ("edge_tier_up", None): min,  # up only where every worker can use it
    ("edge_prefetch_in_flight", None): sum,
    ("edge_upstream_breaker_state", None): max,  # the worst worker's breaker
}

Snapshot = list[dict]  # families: {"name", "type", "help", "samples": [[sample name, {label: value}, value]]}


def snapshot(registry: CollectorRegistry) -> Snapshot:
    """A registry's families as JSON-ready data, without `_created` samples (they do not add up)."""
    return [{"name": f.name, "type": f.type, "help": f.documentation,
             "samples": [[s.name, s.labels, s.value] for s in f.samples if s.name != f.name + "_created"]}
            for f in registry.collect()]


def _rule(family: dict, labels: dict) -> Callable[[Iterable[float]], float]:
    if family["type"] in CUMULATIVE:
        return sum
    name = family["name"]
    return GAUGE_RULES.get((name, labels.get("tier"))) or GAUGE_RULES.get((name, None), max)


def combine(snapshots: Iterable[Snapshot], cumulative_only: bool = False) -> Snapshot:
    """The node's families from the workers' (first seen order); `cumulative_only` keeps what outlives a worker."""
    families: dict[str, dict] = {}
    values: dict[str, dict[tuple, list[float]]] = {}
    for snap in snapshots:
        for family in snap:
            if cumulative_only and family["type"] not in CUMULATIVE:
                continue
            families.setdefault(family["name"], family)
            samples = values.setdefault(family["name"], {})
            for name, labels, value in family["samples"]:
                samples.setdefault((name, tuple(labels.items())), []).append(value)
    return [{**family, "samples": [[name, dict(labels), _rule(family, dict(labels))(found)]
                                   for (name, labels), found in values[family["name"]].items()]}
            for family in families.values()]


class _Families:
    """A collector over combined families, for generate_latest."""

    def __init__(self, families: Snapshot) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        for family in self.families:
            metric = Metric(family["name"], family["help"], family["type"])
            for name, labels, value in family["samples"]:
                metric.add_sample(name, labels, value)
            yield metric


def render(families: Snapshot) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return generate_latest(registry)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read(path: Path) -> Snapshot | None:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None  # gone meanwhile, or a foreign file


def _write(path: Path, data: bytes) -> None:
    """Atomically: a reader sees the old snapshot or the new one, never half of one."""
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def wipe(directory: str) -> None:
    """`edge serve` at start: the previous run's snapshots go (only the files this module writes)."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    for found in path.iterdir():
        if OURS.fullmatch(found.name):
            found.unlink(missing_ok=True)


class NodeMetrics:
    """One worker's side: its snapshot file, and the node's totals when it answers a scrape."""

    def __init__(self, directory: str, registry: CollectorRegistry, refresh: Callable[[], None]) -> None:
        """`refresh` sets the gauges that are read, not counted (tier sizes, breaker states)."""
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.registry, self.refresh = registry, refresh
        self.path = self.dir / f"{os.getpid()}-{secrets.token_hex(4)}.json"
        self._written = b""
        self._writing = threading.Lock()  # the timer's thread and a scrape's: one temporary file at a time

    def write(self) -> Snapshot:
        """This worker's snapshot, written to its file when it changed."""
        with self._writing:
            self.refresh()
            snap = snapshot(self.registry)
            data = json.dumps(snap, separators=(",", ":")).encode()
            if data != self._written:
                try:
                    _write(self.path, data)
                    self._written = data
                except OSError as exc:
                    log.warning("cannot write metrics snapshot %s: %s", self.path, exc)
            return snap

    def start(self) -> None:
        """Snapshots every INTERVAL seconds, in a task of their own (not one of the answers' background
        tasks, which tests wait for)."""
        self._task = asyncio.ensure_future(self._run())

    def stop(self) -> None:
        self._task.cancel()
        self.write()  # the last one: what this worker counted stays in the node's totals

    async def _run(self) -> None:
        while True:
            await asyncio.to_thread(self.write)  # the disk tier's stats are SQLite queries
            await asyncio.sleep(INTERVAL)

    def render(self) -> bytes:
        try:
            return render(self.node())
        except OSError as exc:  # the directory is gone or full: this worker's own, rather than no answer
            log.warning("metrics directory %s unusable, answering this worker's metrics: %s", self.dir, exc)
            return render(snapshot(self.registry))

    def node(self) -> Snapshot:
        """The node's families: this worker live, the others' files, the dead workers' totals. Under the
        directory's lock, so a scrape never sees a dead worker's file and its fold both, or neither."""
        own = self.write()
        with open(self.dir / LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            dead_path = self.dir / DEAD
            dead = _read(dead_path) or []
            live, gone = [], []
            for path in self.dir.glob("*-*.json"):
                pid = path.name.split("-", 1)[0]
                snap = _read(path) if path != self.path and pid.isdigit() else None
                if snap is not None:
                    (live if _alive(int(pid)) else gone).append((path, snap))
            if gone:
                dead = combine([dead, *(snap for _, snap in gone)], cumulative_only=True)
                _write(dead_path, json.dumps(dead, separators=(",", ":")).encode())
                for path, _ in gone:
                    path.unlink(missing_ok=True)
        return combine([own, *(snap for _, snap in live), dead])
