"""`warm worker`: execute a queued run's items through the edge, as many workers as there are hosts.

Each worker reads at most `--jobs` entries more than it has in flight (so what a dead worker leaves
pending, and what may run twice, is at most its `--jobs`), runs each with the ordinary runner (the
adaptive window, `--rate`, the run's `--retries` with backoff) against the edge, and acknowledges it
with its outcome. Every `idle_timeout / 2` it takes over entries idle longer than `idle_timeout`
(`XAUTOCLAIM`: a worker died with them), and every `idle_timeout / 3` it resets the idle time of its
own entries in flight, so a slow request of a live worker is not taken over.

Bounded: a worker leaves when every run it looks at is complete (all entries acknowledged, done or
failed); `--follow` keeps it waiting for new runs. The first SIGTERM or Ctrl-C stops reading, lets
the items in flight finish and be acknowledged, then exits; a second one cancels them (they stay
pending and another worker reclaims them).
"""
from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field

from .model import FAIL, OK, SKIP, Item, Outcome
from .queue import STALLED, QueueDown, WarmQueue
from .runner import Runner
from .target_edge import EdgeTarget

OPEN = ("queued", "planning")  # run states with work to come


@dataclass
class WorkerOptions:
    name: str
    token: str
    edge: str | None = None  # None: the run's
    jobs: int | None = None
    rate: float | None = None
    idle_timeout: float = 60.0
    follow: bool = False
    only: str | None = None  # one run (id) instead of every incomplete one
    poll: float = 2.0
    progress_interval: float = 10.0  # seconds between progress lines (0: none)
    counts: dict[str, int] = field(default_factory=lambda: {OK: 0, SKIP: 0, FAIL: 0})


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Worker:
    def __init__(self, queue: WarmQueue, options: WorkerOptions) -> None:
        self.q, self.o = queue, options
        self.stopping = asyncio.Event()
        self.inflight: dict[asyncio.Task, str] = {}

    def stop(self) -> None:
        if not self.stopping.is_set():
            say(f"warm worker {self.o.name}: stopping after the {len(self.inflight)} items in flight")
        self.stopping.set()

    async def run(self) -> None:
        """Drain incomplete runs, oldest first, until none is left (or, with --follow, until stopped)."""
        while not self.stopping.is_set():
            run = await self._next()
            if run is not None:
                await self.drain(run)
            elif not self.o.follow:
                return
            else:
                try:
                    await asyncio.wait_for(self.stopping.wait(), self.o.poll)
                except TimeoutError:
                    pass

    async def _next(self) -> str | None:
        for run in [await self.q.find(self.o.only)] if self.o.only else await self.q.runs():
            if await self.q.state(run) in OPEN:
                return run
        return None

    async def drain(self, run: str) -> None:
        """Execute `run`'s entries until it is complete or the worker stops."""
        options = await self.q.options(run)
        jobs = self.o.jobs or options.jobs
        edge = self.o.edge or options.edge
        target = EdgeTarget(edge, self.o.token, jobs=jobs, host=options.host, refresh_before=options.refresh_before,
                            timeout=options.timeout)
        runner = Runner(target, jobs=jobs, retries=options.retries, rate=self.o.rate or options.rate,
                        done=lambda *_: None)
        idle_ms = max(1, int(self.o.idle_timeout * 1000))
        before, started = dict(self.o.counts), time.monotonic()
        beat = None
        try:
            await target.check()
            say(f"warm worker {self.o.name}: run {run}, {jobs} jobs → {edge}")
            beat = asyncio.create_task(self._beat(run))
            next_reclaim, next_line = 0.0, time.monotonic() + (self.o.progress_interval or float("inf"))
            while not self.stopping.is_set():
                if time.monotonic() >= next_line:
                    say(self._line(run, before, started))
                    next_line += self.o.progress_interval
                free, got = jobs - len(self.inflight), []
                if free and time.monotonic() >= next_reclaim:
                    got, over = await self.q.reclaim(run, self.o.name, idle_ms, free)
                    for entry, item, deliveries in over:
                        await self._finish(run, entry, item, Outcome(
                            FAIL, 0, f"delivered {deliveries} times without an answer (its workers died or stalled)"),
                                           deliveries)
                    next_reclaim = time.monotonic() + self.o.idle_timeout / 2
                if free and not got:
                    got = await self.q.read(run, self.o.name, free, 0 if self.inflight else 500)
                for entry, item in got:
                    self.inflight[asyncio.create_task(self._execute(run, runner, entry, item))] = entry
                if not self.inflight:
                    if not got and (state := await self.q.state(run)) not in OPEN:
                        if state == "stalled":
                            say(f"warm worker {self.o.name}: run {run} stopped planning over {STALLED:.0f}s ago "
                                "and its items are done: leaving it (re-plan it to warm the rest)")
                        break
                    continue
                timeout = None if len(self.inflight) >= jobs else 0 if got else 0.2
                done, _ = await asyncio.wait(self.inflight, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    self.inflight.pop(task)
                    task.result()  # Fatal (a wrong token …) ends the worker
            if self.inflight:  # stopping: let them finish and be acknowledged
                await asyncio.gather(*self.inflight)
                self.inflight.clear()
        finally:
            for task in self.inflight:
                task.cancel()
            self.inflight.clear()
            if beat is not None:
                beat.cancel()
            await target.close()
        say(self._line(run, before, started) + ("" if self.stopping.is_set() else ", run complete"))

    def _line(self, run: str, before: dict[str, int], started: float) -> str:
        c = {s: self.o.counts[s] - before[s] for s in self.o.counts}
        elapsed = time.monotonic() - started
        return (f"warm worker {self.o.name}: run {run}: ok {c[OK]}  skip {c[SKIP]}  fail {c[FAIL]} here in "
                f"{elapsed:.1f}s, {sum(c.values()) / max(elapsed, 1e-9):.1f} items/s")

    async def _execute(self, run: str, runner: Runner, entry: str, item: Item) -> None:
        await self.q.started(run, entry)
        outcome, attempts, _ = await runner.attempt(item)
        await self._finish(run, entry, item, outcome, attempts)

    async def _finish(self, run: str, entry: str, item: Item, outcome: Outcome, attempts: int) -> None:
        if await self.q.finish(run, entry, self.o.name, item, outcome, attempts):
            self.o.counts[outcome.state] += 1

    async def _beat(self, run: str) -> None:
        while True:
            try:
                await self.q.heartbeat(run, self.o.name, list(self.inflight.values()))
            except QueueDown:  # the main loop meets it too, and says so
                return
            await asyncio.sleep(max(self.o.idle_timeout / 3, 0.05))
