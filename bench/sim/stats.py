"""Request and render counters per endpoint: what `/_sim/stats` reports and tests assert on.

A "render" is backend work that produced an answer (a thumbnail, a region, each id of a batch,
a plate grid, imgData, an API page or object); requests count everything that reached a route.
"""
from __future__ import annotations

from collections import Counter


class Stats:
    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.renders: Counter[str] = Counter()

    def request(self, endpoint: str) -> None:
        self.requests[endpoint] += 1

    def render(self, endpoint: str, n: int = 1) -> None:
        self.renders[endpoint] += n

    def snapshot(self) -> dict:
        return {
            "requests": dict(sorted(self.requests.items())),
            "renders": dict(sorted(self.renders.items())),
            "total": {"requests": sum(self.requests.values()), "renders": sum(self.renders.values())},
        }

    def reset(self) -> None:
        self.requests.clear()
        self.renders.clear()
