"""Purge sequence numbers in process, without Redis: what an epoch is valid against, purging everything,
and the node-wide log and mmap counter that workers sharing a cache directory read on every request."""
from __future__ import annotations

import asyncio
from pathlib import Path

from edge.kinds import ALL
from edge.purge import PurgeRegistry

IMAGE, PLATE = ("image:12",), ("plate:3", "image:12")


def purge(registry: PurgeRegistry, *tags: str) -> int:
    return asyncio.run(registry.purge(list(tags)))


def test_a_purge_invalidates_fills_that_started_before_it_and_only_its_tags() -> None:
    registry = PurgeRegistry(None)
    before = registry.epoch()
    assert registry.valid(IMAGE, before)
    seq = purge(registry, "image:12")
    assert seq > before and registry.epoch() == seq
    assert not registry.valid(IMAGE, before) and not registry.valid(PLATE, before)
    assert registry.valid(("image:13",), before) and registry.valid((), before)
    assert registry.valid(IMAGE, registry.epoch())  # a fill that starts after the purge stores for good


def test_purge_all_invalidates_every_older_entry() -> None:
    registry = PurgeRegistry(None)
    purge(registry, "image:1")
    old = registry.epoch()
    purge(registry, ALL)
    assert not any(registry.valid(tags, old) for tags in [(), ("image:2",), PLATE])
    assert registry.valid(("image:2",), registry.epoch())


def test_sequence_numbers_only_grow() -> None:
    registry = PurgeRegistry(None)
    seqs = [purge(registry, tag) for tag in ("image:1", "image:1", "plate:3")]
    assert seqs == sorted(set(seqs)) and len(seqs) == 3
    assert not registry.valid(("image:1",), seqs[0])  # the second purge of the same object counts too


def test_workers_sharing_a_directory_see_each_others_purges(tmp_path: Path) -> None:
    a, b = PurgeRegistry(str(tmp_path)), PurgeRegistry(str(tmp_path))
    fill_started = b.epoch()
    seq = purge(a, "image:12")
    b.refresh()  # what the cache does before every lookup
    assert b.epoch() == seq and not b.valid(IMAGE, fill_started) and b.valid(("image:13",), fill_started)
    assert purge(b, "plate:3") == seq + 1  # one counter for the node
    a.refresh()
    assert not a.valid(("plate:3",), seq) and a.purged == b.purged


def test_a_fill_that_started_before_another_workers_purge_is_invalid_after_it(tmp_path: Path) -> None:
    filler, purger = PurgeRegistry(str(tmp_path)), PurgeRegistry(str(tmp_path))
    purge(purger, "image:1")
    epoch = filler.epoch()  # the fill starts: the entry will carry this epoch
    purge(purger, "image:12")  # ... the purge lands while it is in flight
    filler.refresh()
    assert not filler.valid(IMAGE, epoch)
    assert filler.valid(IMAGE, filler.epoch())


def test_a_worker_that_has_not_read_the_log_yet_still_takes_the_next_number(tmp_path: Path) -> None:
    """The counter is read under the log's lock: a number handed out twice would let the second purge
    miss entries filled between the two."""
    a, b = PurgeRegistry(str(tmp_path)), PurgeRegistry(str(tmp_path))
    first = purge(a, "image:1")
    filled = a.epoch()  # after the first purge
    assert purge(b, "image:12") == first + 1  # b never refreshed in between
    a.refresh()
    assert not a.valid(IMAGE, filled)


def test_a_restarted_worker_reads_the_purges_made_before(tmp_path: Path) -> None:
    first = PurgeRegistry(str(tmp_path))
    for tag in ("image:12", ALL, "plate:3"):
        purge(first, tag)
    again = PurgeRegistry(str(tmp_path))
    assert again.purged == first.purged and again.epoch() == first.epoch() == 3
    assert purge(again, "image:1") == 4
