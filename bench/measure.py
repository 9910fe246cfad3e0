"""The timing loop every load scenario shares: targets × modes × transports × RTTs × repeats.

A load is one page visit: it opens its own connections inside the timed window and the clock
stops at the last byte of the last response. Backend work is read from the sim's counters
around each load. Each load is bounded by `load_timeout`, and the number of loads by the
settings, so a run always ends. The client runs on uvloop when it is installed, which halves
its per-request cost (bench.clients).
"""
from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Protocol

from bench.clients import Session, Tally, Transport, open_session
from bench.procs import HOST
from bench.targets import Stack, Target

Load = Callable[[Session, str], Awaitable[Tally]]


class LoadFailed(RuntimeError):
    """A load got non-200 answers or timed out; the message names the cell."""


@dataclass
class Record:
    """One target × mode × transport × RTT cell (the JSON `results` entries)."""
    target: str
    mode: str
    transport: str
    rtt_ms: float
    repeat: int
    median_s: float
    p95_s: float
    min_s: float
    max_s: float
    samples_s: list[float]
    requests: int
    bytes: int
    backend_renders: int          # most backend renders in any one load (a warm load must show 0)
    backend_requests: int         # most backend requests in any one load (extra: that load's by endpoint)
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        out = asdict(self)
        extra = out.pop("extra")
        return {**out, **extra}


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): with few samples, p95 is the slowest load."""
    ordered = sorted(samples)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def _runner() -> asyncio.Runner:
    try:
        import uvloop
    except ImportError:
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


class Meter:
    """Runs timed loads against targets of one stack."""

    def __init__(self, stack: Stack, load_timeout: float, log: Callable[[str], None]) -> None:
        self.stack, self.load_timeout, self.log = stack, load_timeout, log
        self.runner = _runner()

    def close(self) -> None:
        self.runner.close()

    def once(self, load: Load, mode: str, target: Target, transport: Transport, proxied: bool = True) -> tuple[float, Tally]:
        """One load; returns (seconds to the last byte, tally)."""
        port = target.address(transport) if proxied else target.ports()[transport]
        tls = self.stack.certs.client_context(["h2"]) if transport is Transport.H2_TLS else None

        async def timed() -> tuple[float, Tally]:
            async with asyncio.timeout(self.load_timeout):
                start = time.perf_counter()
                session = open_session(transport, HOST, port, tls)
                try:
                    tally = await load(session, mode)
                    return time.perf_counter() - start, tally
                finally:
                    await session.close()

        where = f"{target.name} {mode} {transport.value}"
        try:
            seconds, tally = self.runner.run(timed())
        except TimeoutError:
            raise LoadFailed(f"{where}: no complete load within {self.load_timeout:.0f}s") from None
        bad = {status: n for status, n in tally.statuses.items() if status != 200}
        if bad:
            raise LoadFailed(f"{where}: non-200 answers {bad}")
        return seconds, tally

    def cell(self, load: Load, mode: str, target: Target, transport: Transport, rtt_ms: float,
             repeat: int) -> Record:
        samples: list[float] = []
        renders: list[int] = []
        backend: list[dict[str, int]] = []
        steps: dict[str, list[float]] = {}
        counts: dict[str, int] = {}  # the target's own counts (Target.after_load), summed over the loads
        tally = Tally()
        for _ in range(repeat):
            target.before_load(transport)
            before = self.stack.sim.stats()
            seconds, tally = self.once(load, mode, target, transport)
            for name, n in target.after_load(transport).items():
                counts[name] = counts.get(name, 0) + n
            after = self.stack.sim.stats()
            samples.append(seconds)
            renders.append(after["total"]["renders"] - before["total"]["renders"])
            backend.append(_delta(before["requests"], after["requests"]))
            for name, step_s in tally.steps.items():
                steps.setdefault(name, []).append(step_s)
        busiest = max(backend, key=lambda by: sum(by.values()))
        record = Record(target.name, mode, transport.value, rtt_ms, repeat, statistics.median(samples),
                        percentile(samples, 95), min(samples), max(samples), [round(s, 6) for s in samples],
                        tally.requests, tally.bytes, max(renders), sum(busiest.values()),
                        {"backend_by_endpoint": busiest})
        if counts:
            record.extra["target_counts"] = counts
        if steps:
            record.extra["steps_ms"] = {name: round(statistics.median(v) * 1000, 3) for name, v in steps.items()}
        self.log(f"{target.name:10} {mode:9} {transport.value:6} rtt {rtt_ms:g} ms: median "
                 f"{record.median_s * 1000:.1f} ms, {record.requests} req, {record.backend_renders} renders")
        return record


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Requests per backend endpoint between two `/_sim/stats` snapshots (endpoints with none left out)."""
    return {name: n - before.get(name, 0) for name, n in sorted(after.items()) if n > before.get(name, 0)}


class Primer:
    """Untimed loads that fill warm targets: each (target, key) once, unproxied."""

    def __init__(self, meter: Meter, load: Load) -> None:
        self.meter, self.load = meter, load
        self.done: set[tuple[int, str]] = set()

    def first(self, target: Target, key: str) -> bool:
        """True the first time (target, key) is seen; for fills that are not a load (the warmer)."""
        seen = (id(target), key) in self.done
        self.done.add((id(target), key))
        return not seen

    def load_once(self, target: Target, mode: str, transport: Transport, key: str) -> None:
        if self.first(target, key):
            self.meter.once(self.load, mode, target, transport, proxied=False)


@contextmanager
def running(target: Target, rtt_ms: float) -> Iterator[Target]:
    """The target started (behind a delay proxy when rtt_ms > 0), and stopped afterwards."""
    try:
        target.start()
        target.start_proxy(rtt_ms)
        yield target
    finally:
        target.stop_proxy()
        target.stop()


class Scenario(Protocol):
    """What `run_matrix` needs from a load scenario."""
    name: str
    modes: tuple[str, ...]

    async def load(self, session: Session, mode: str) -> Tally: ...

    def prime(self, target: Target, mode: str, transport: Transport) -> str: ...


def run_matrix(stack: Stack, meter: Meter, scenario: Scenario, targets: list[str], modes: list[str],
               transports: list[Transport], rtts: list[float], repeat: int) -> tuple[list[Record], dict[str, str]]:
    """Every cell, RTT by RTT and target by target (one target's processes alive at a time).

    Returns the records and, per warm target, how it was filled."""
    records: list[Record] = []
    primed_by: dict[str, str] = {}
    for rtt in rtts:
        for name in targets:
            with running(stack.target(name), rtt) as target:
                for mode in modes:
                    for transport in transports:
                        if transport not in target.transports():
                            continue
                        if target.warm:
                            primed_by[target.name] = scenario.prime(target, mode, transport)
                        records.append(meter.cell(scenario.load, mode, target, transport, rtt, repeat))
    return records, primed_by
