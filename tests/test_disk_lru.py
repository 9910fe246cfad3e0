"""The disk tier's LRU without a write per hit: the access times of hits are written in batches (one
transaction per `touch_batch` hits, and on close), and a full tier still evicts the least recently hit."""
from __future__ import annotations

import sqlite3

from edge.entry import Entry
from edge.tiers import DiskTier

N = 60


def entry(i: int) -> tuple[str, Entry]:
    return f"d{i:03}", Entry.build(f"k{i}", 200, "application/json", b"x" * 2000, ttl=600.0, stale=600.0,
                                   epoch=0, tags=(), public=True)


def filled(directory: str) -> DiskTier:
    tier = DiskTier(directory, 2**40)
    for i in range(N):  # one transaction each: distinct store (and access) times, oldest first
        tier.set_many([entry(i)])
    return tier


def access_times(directory: str, count: int) -> list[float]:
    """What the cull orders by, read by another connection (what another worker sees)."""
    with sqlite3.connect(f"{directory}/cache.db") as db:
        return [db.execute("SELECT access_time FROM Cache WHERE key = ?", (f"d{i:03}",)).fetchone()[0]
                for i in range(count)]


def test_hits_are_reads_until_a_batch_is_due(tmp_path):
    tier = filled(str(tmp_path))
    tier.touch_batch = 8
    stored = access_times(str(tmp_path), 8)
    for i in range(7):
        assert tier.get(f"d{i:03}", f"k{i}") is not None
    assert access_times(str(tmp_path), 8) == stored  # seven hits: nothing written yet
    assert tier.get("d007", "k7") is not None  # the eighth writes the batch
    touched = access_times(str(tmp_path), 8)
    assert all(t > s for t, s in zip(touched, stored)) and len(set(touched)) == 1
    tier.close()


def test_full_tier_evicts_the_least_recently_hit(tmp_path):
    tier = filled(str(tmp_path))
    kept = [0, 1, 2, 3, 4]  # the oldest stored, then hit: they must outlive younger, unread entries
    for i in kept:
        assert tier.get(f"d{i:03}", f"k{i}") is not None
    tier.close()  # writes the pending access times
    _, volume = DiskTier(str(tmp_path), 2**40).stats()
    tier = DiskTier(str(tmp_path), volume)  # full: each new entry pushes the least recently used out
    for i in range(N, N + 20):
        tier.set_many([entry(i)])
    held = [i for i in range(N) if tier.get(f"d{i:03}", f"k{i}") is not None]
    tier.close()
    assert all(i in held for i in kept)
    assert len(held) < N and 5 not in held  # evicted: the oldest entries nobody read
