"""Recent warm-mode requests of this process: what the status page shows as warm runs in progress.

A warm run (`warm --edge`) is a stream of warm-mode requests, so "in progress" means some arrived in
the last few seconds. Counted per whole second in a small ring, so the hot path pays one
dictionary update and nothing grows with the request rate.
"""
from __future__ import annotations

import time
from collections.abc import Callable

WINDOW = 60  # seconds of history kept for the per-minute rate
ACTIVE = 10  # a run with a request in the last this many seconds is in progress


class WarmActivity:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.total = 0
        self.last = 0.0
        self._seconds: dict[int, int] = {}

    def add(self) -> None:
        now = self.clock()
        second = int(now)
        self.total += 1
        self.last = now
        seconds = self._seconds
        seconds[second] = seconds.get(second, 0) + 1
        if len(seconds) > WINDOW:
            for old in [s for s in seconds if s <= second - WINDOW]:
                del seconds[old]

    def snapshot(self) -> dict:
        now = self.clock()
        recent = sum(n for s, n in self._seconds.items() if s > now - WINDOW)
        ago = now - self.last if self.total else None
        return {"requests": self.total, "last_minute": recent, "per_second": round(recent / WINDOW, 2),
                "active": ago is not None and ago < ACTIVE, "last_seen_s": None if ago is None else round(ago, 1)}
