"""The local tiers in process: the memory LRU's byte accounting and order, the disk tier on a temporary
directory (round trip, expiry, corrupt records), and a failing tier degrading to absent then retried."""
from __future__ import annotations

from pathlib import Path

import pytest

from edge import tiers
from edge.entry import Entry
from edge.tiers import DiskTier, MemoryTier
from tests.helpers import FakeTime

BODY = 100
SIZE = BODY + 256  # Entry.size: the body plus a fixed overhead


def entry(key: str, body: int = BODY, *, ttl: float = 60.0, stale: float = 60.0) -> Entry:
    return Entry.build(key, 200, "application/json", b"x" * body, ttl=ttl, stale=stale, epoch=0, tags=(),
                       public=True)


def held(tier: MemoryTier, *digests: str) -> list[str]:
    return [d for d in digests if tier.get(d) is not None]


# --- MemoryTier --------------------------------------------------------------------------------------

def test_memory_is_bounded_in_bytes_and_evicts_least_recently_used() -> None:
    tier = MemoryTier(8 * SIZE)
    names = [f"d{i}" for i in range(8)]
    for name in names:
        tier.set(name, entry(name))
    assert len(tier) == 8 and tier.bytes == 8 * SIZE
    assert tier.get("d0") is not None  # used: now the most recent
    tier.set("d8", entry("d8"))
    assert tier.bytes <= tier.max_bytes
    assert held(tier, *names, "d8") == ["d0", *names[2:], "d8"]  # d1 was the least recently used


def test_memory_replacing_and_deleting_keep_the_byte_count() -> None:
    tier = MemoryTier(64 * SIZE)
    tier.set("a", entry("a"))
    tier.set("a", entry("a", 3 * BODY))
    tier.set("b", entry("b"))
    assert len(tier) == 2 and tier.bytes == (3 * BODY + 256) + SIZE
    tier.delete("a")
    tier.delete("never-stored")
    assert len(tier) == 1 and tier.bytes == SIZE
    tier.clear()
    assert len(tier) == 0 and tier.bytes == 0 and tier.get("b") is None


def test_memory_refuses_one_entry_larger_than_an_eighth() -> None:
    """One huge body must not flush the hot set."""
    tier = MemoryTier(8 * SIZE)
    for name in ("a", "b"):
        tier.set(name, entry(name))
    tier.set("huge", entry("huge", SIZE))  # SIZE + 256 bytes > max / 8
    assert tier.get("huge") is None and held(tier, "a", "b") == ["a", "b"] and tier.bytes == 2 * SIZE


def test_memory_refused_replacement_drops_the_old_entry() -> None:
    """A refreshed entry too big for memory goes to the other tiers; the old one must not keep answering here."""
    tier = MemoryTier(8 * SIZE)
    tier.set("a", entry("a"))
    tier.set("a", entry("a", SIZE))
    assert tier.get("a") is None and len(tier) == 0 and tier.bytes == 0


# --- DiskTier ------------------------------------------------------------------------------------------

@pytest.fixture
def disk(tmp_path: Path) -> DiskTier:
    tier = DiskTier(str(tmp_path / "cache"), size_limit=2**26)
    yield tier
    tier.close()


def test_disk_round_trip_and_delete(disk: DiskTier) -> None:
    a, b = entry("key-a"), entry("key-b", 70_000)  # b is above diskcache's file threshold: a file of its own
    disk.set_many([("da", a), ("db", b)])
    for digest, stored in (("da", a), ("db", b)):
        got = disk.get(digest, stored.key)
        assert (got.key, got.body, got.headers, got.etag, got.stale_until) == \
            (stored.key, stored.body, stored.headers, stored.etag, stored.stale_until)
    assert disk.stats()[0] == 2
    disk.delete("da")
    assert disk.get("da", "key-a") is None and disk.get("db", "key-b") is not None
    assert disk.get("unknown", "key") is None


def test_disk_entries_expire_when_they_can_no_longer_be_served(disk: DiskTier) -> None:
    kept, gone = entry("k", ttl=30, stale=90), entry("g", ttl=-20, stale=10)  # the second one: past it
    disk.set_many([("dk", kept), ("dg", gone)])
    _, expires = disk.cache.get("dk", expire_time=True)
    assert expires == pytest.approx(kept.stale_until, abs=1.0)
    _, expires = disk.cache.get("dg", expire_time=True)
    assert expires == pytest.approx(gone.stored + 1.0, abs=1.0)  # at least a second, never "no expiry"


@pytest.mark.parametrize("damage", ["garbage", "truncated", "bit flip", "other key"])
def test_disk_corrupt_record_is_a_miss_and_removed(disk: DiskTier, damage: str) -> None:
    good = entry("key")
    raw = good.dumps()
    record = {"garbage": b"not an entry", "truncated": raw[:-10], "bit flip": raw[:-1] + bytes([raw[-1] ^ 1]),
              "other key": entry("another key").dumps()}[damage]
    disk.cache.set("d", record)
    assert disk.get("d", "key") is None
    assert "d" not in disk.cache
    assert disk.up  # a bad record is not a bad disk


def test_disk_failure_degrades_to_absent_then_is_retried(disk: DiskTier, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeTime().install(monkeypatch, tiers)

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as broken:
        broken.setattr(disk.cache, "transact", full)
        disk.set_many([("d", entry("key"))])  # no exception reaches the request
    assert not disk.up and disk.get("d", "key") is None and "No space" in disk.last_error
    disk.set_many([("d", entry("key"))])
    assert "d" not in disk.cache  # still resting: nothing tried
    clock.advance(disk.retry_after + 0.1)
    disk.set_many([("d", entry("key"))])
    assert disk.up and disk.get("d", "key") is not None
