"""The cache decision, one place for single requests and batch members alike (Varnish's hit/miss).

Pure functions of the entry and the clock, so every branch is unit-tested without a server.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from .entry import Entry


class Action(Enum):
    HIT = "hit"  # fresh: answer from the cache
    REVALIDATE = "revalidate"  # stale within stale_while_revalidate: answer it, refresh in the background
    MISS = "miss"  # fetch (a stale entry may still answer if the upstream fails: see `stale_on_error`)


def decide(entry: Entry | None, now: float, *, refresh_before: float = 0.0, swr: float = 0.0,
           warm: bool = False, softened: float | None = None, soft_window: float = 0.0) -> Action:
    """What to do with what the tiers found. `refresh_before` (warm mode's refresh) makes entries
    stored before it a miss; warm mode never answers stale, so the warmer learns what is fresh now.
    `softened` is when a soft purge made the entry stale: answered while refreshed for `soft_window`."""
    if entry is None or entry.stored < refresh_before:
        return Action.MISS
    if softened is not None:
        return Action.REVALIDATE if not warm and now < softened + soft_window else Action.MISS
    if entry.is_fresh(now):
        return Action.HIT
    if not warm and now < entry.stale_until and now < entry.fresh_until + swr:
        return Action.REVALIDATE
    return Action.MISS


def stale_on_error(entry: Entry | None, now: float, *, warm: bool = False) -> bool:
    """Whether `entry` may answer in place of a failed fetch (stale_if_error; never in warm mode)."""
    return entry is not None and not warm and now < entry.stale_until


@dataclass(frozen=True)
class Freshness:
    """`decide` with the deployment's windows and its soft purges, as every lookup asks it."""

    swr: float
    soft_window: float
    soft_since: Callable[[Entry | None], float | None]  # PurgeRegistry.soft_since

    def decide(self, entry: Entry | None, now: float, warm: float | None) -> Action:
        """`warm` is the request's warm mode (its refresh-before time), None for a client."""
        return decide(entry, now, refresh_before=warm or 0.0, swr=self.swr, warm=warm is not None,
                      softened=self.soft_since(entry), soft_window=self.soft_window)
