"""The bounded async runner: keeps the backend busy, never more than `--jobs` requests in flight.

- Adaptive concurrency (AIMD, like TCP): the window grows by one per window of good answers up to
  `--jobs`, halves (at most once a second) when the backend answers 5xx/429 or times out, and
  shrinks by one when the time per fetched image rises above 4x the best seen, so a warmer never
  pushes a struggling OMERO over.
- After an error every worker pauses briefly (50 ms doubling, at most 10 s) until an answer is good.
- `--rate` spaces request starts evenly (a token bucket of one).
- An item is retried `--retries` times with jittered exponential backoff, then recorded as Fail with
  its last status and reason; a failure never stops the run. Only `Fatal` (bad token, …) does.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from .model import FAIL, Item, Outcome, Retryable
from .retry import delay

LATENCY_FACTOR = 4.0  # slower than this multiple of the best time per image → one job fewer
LATENCY_FLOOR = 0.005  # seconds per image below which latency changes are noise
PAUSE_BASE, PAUSE_CAP = 0.05, 10.0


class Target(Protocol):
    async def warm(self, item: Item) -> Outcome: ...


class Gate:
    """Admission for each attempt: the adaptive window, the pause after errors, and the rate limit."""

    def __init__(self, jobs: int, rate: float | None = None) -> None:
        self.max = jobs
        self.limit = float(jobs)
        self.inflight = 0
        self.rate = rate
        self._next_start = 0.0
        self._pause_until = 0.0
        self._errors_in_row = 0
        self._last_cut = 0.0
        self._ewma: dict[str, float] = {}
        self._best: dict[str, float] = {}
        self._wakeup = asyncio.Event()

    async def acquire(self) -> None:
        while self.inflight >= max(1, int(self.limit)):
            self._wakeup.clear()
            await self._wakeup.wait()
        self.inflight += 1
        now = time.monotonic()
        wait = self._pause_until - now
        if self.rate:
            start = max(now, self._next_start)
            self._next_start = start + 1.0 / self.rate
            wait = max(wait, start - now)
        if wait > 0:
            await asyncio.sleep(wait)

    def release(self, *, error: bool, kind: str = "", per_image: float | None = None) -> None:
        now = time.monotonic()
        self.inflight -= 1
        if error:
            self._errors_in_row += 1
            self._pause_until = now + min(PAUSE_CAP, PAUSE_BASE * 2 ** (self._errors_in_row - 1))
            self._cut(now, self.limit / 2)
        else:
            self._errors_in_row = 0
            if per_image is not None and self._slower(kind, per_image):
                self._cut(now, self.limit - 1)
            else:
                self.limit = min(float(self.max), self.limit + 1.0 / max(self.limit, 1.0))
        self._wakeup.set()

    def _cut(self, now: float, to: float) -> None:
        if now - self._last_cut >= 1.0:
            self.limit = max(1.0, to)
            self._last_cut = now

    def _slower(self, kind: str, per_image: float) -> bool:
        ewma = self._ewma[kind] = 0.8 * self._ewma.get(kind, per_image) + 0.2 * per_image
        best = self._best[kind] = min(self._best.get(kind, ewma) * 1.002, ewma)  # drifts up with a slower backend
        return ewma > LATENCY_FLOOR and ewma > LATENCY_FACTOR * best


Done = Callable[[Item, Outcome, int, float], None]


class Runner:
    def __init__(self, target: Target, *, jobs: int, retries: int, rate: float | None, done: Done) -> None:
        self.target = target
        self.jobs = jobs
        self.retries = retries
        self.gate = Gate(jobs, rate)
        self.done = done

    async def run(self, feed: Callable[[asyncio.Queue], Awaitable[None]]) -> None:
        """Run `feed` (which puts items on the queue) and the workers until the feed is exhausted."""
        queue: asyncio.Queue[Item | None] = asyncio.Queue(maxsize=self.jobs * 64)

        async def producer() -> None:
            await feed(queue)
            for _ in range(self.jobs):
                await queue.put(None)

        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(producer())
            for _ in range(self.jobs):
                tasks.create_task(self._worker(queue))

    async def _worker(self, queue: asyncio.Queue) -> None:
        while (item := await queue.get()) is not None:
            outcome, attempts, ms = await self.attempt(item)
            self.done(item, outcome, attempts, ms)

    async def attempt(self, item: Item) -> tuple[Outcome, int, float]:
        for attempt in range(self.retries + 1):
            await self.gate.acquire()
            started = time.perf_counter()
            try:
                outcome = await self.target.warm(item)
            except Retryable as exc:
                self.gate.release(error=True)
                if attempt == self.retries:
                    return Outcome(FAIL, exc.status, exc.reason), attempt + 1, (time.perf_counter() - started) * 1e3
                await asyncio.sleep(delay(attempt))
                continue
            except BaseException:
                self.gate.release(error=False)
                raise
            elapsed = time.perf_counter() - started
            self.gate.release(error=False, kind=item.kind,
                                    per_image=elapsed / outcome.fetched if outcome.fetched else None)
            return outcome, attempt + 1, elapsed * 1e3
        raise AssertionError("unreachable")
