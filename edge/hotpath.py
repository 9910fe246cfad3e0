"""Hot hits kept whole: a repeated anonymous GET of a URL fresh in memory is one lookup and four checks.

The first hot hit of a URL in a second goes the checked way (app.Edge._hot_checked: hot key → key and
digest, memory tier, freshness, purges, HIT headers) and leaves its answer here; the next ones in the
same second reuse it while nothing it was checked against has changed: the same second (the headers'
max-age), still fresh, no purge since (the registry's sequence only grows, with every purge of any
worker: purge.PurgeRegistry._apply), and the memory tier still holding that very entry (a refill or
an eviction replaces it).
"""
from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass

from .entry import Entry
from .purge import PurgeRegistry
from .tiers import MemoryTier

_SIZE = 100_000  # answers kept (an LRU of hot URLs is the memory tier's job: this is cleared when full)


@dataclass(slots=True)
class HotAnswer:
    entry: Entry
    digest: str
    second: int
    known: int                                  # the purge registry's sequence when checked
    headers: list[tuple[bytes, bytes]]          # the HIT headers (deliver.Delivery.headers)
    text: list[tuple[str, str]] | None = None   # the same as str pairs, for RSGI, made on first use

    def text_headers(self) -> list[tuple[str, str]]:
        if self.text is None:
            self.text = text_headers(self.headers)
        return self.text


def text_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers]


class HotAnswers:
    def __init__(self, memory: MemoryTier, registry: PurgeRegistry, clock: Callable[[], float]) -> None:
        self.memory, self.registry, self.clock = memory, registry, clock
        self._answers: dict[tuple, HotAnswer] = {}

    def get(self, key: tuple) -> HotAnswer | None:
        answer = self._answers.get(key)
        if answer is None:
            return None
        now = self.clock()
        if int(now) != answer.second or answer.entry.fresh_until <= now:
            return None
        self.registry.refresh()
        if self.registry.known != answer.known or self.memory.get(answer.digest) is not answer.entry:
            return None
        return answer

    def put(self, key: tuple, answer: HotAnswer) -> None:
        if len(self._answers) >= _SIZE:
            self._answers.clear()
        self._answers[key] = answer


def freeze_heap() -> None:
    """A server worker's start-up heap (modules, settings, pools, route tables) lives as long as the worker: out
    of the collector's sight, the collections a hit's garbage triggers no longer walk it (they were 15 % of a
    worker's CPU under hit load, py-spy; 2 % after). Cycles made later are collected as before."""
    gc.collect()
    gc.freeze()
