"""The disk fill lock in process: two workers' locks on one cache directory (two DiskTiers, as two
processes have), leases that lapse and are renewed, and the non-storable result left for waiters.
Leases are real and short (50 ms); nothing sleeps longer than 0.1 s."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.entry import Entry
from edge.locks import DiskLock
from edge.tiers import DiskTier

LONG, SHORT = 30.0, 0.05


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[tuple[DiskLock, DiskLock, DiskLock]]:
    """Three workers of one node: each its own DiskTier on the shared directory."""
    disks = [DiskTier(str(tmp_path), size_limit=2**26) for _ in range(3)]
    yield tuple(DiskLock(disk, owner) for disk, owner in zip(disks, "abc"))
    for disk in disks:
        disk.close()


def run(*steps):
    """Awaits each step in order, in one event loop; returns their results."""
    async def scenario() -> list:
        return [await step for step in steps]
    return asyncio.run(scenario())


def lapse() -> None:
    time.sleep(2 * SHORT)


def test_one_holder_at_a_time_until_released(workers) -> None:
    a, b, _ = workers
    assert run(a.acquire("d", LONG), b.acquire("d", LONG), b.held("d"), a.acquire("other", LONG)) == \
        [True, False, True, True]
    run(a.release("d"))
    assert run(b.held("d"), b.acquire("d", LONG)) == [False, True]


def test_a_lease_lapses_when_its_holder_stops_renewing(workers) -> None:
    a, b, _ = workers
    assert run(a.acquire("d", SHORT)) == [True]
    lapse()
    assert run(b.held("d"), b.acquire("d", LONG)) == [False, True]


def test_renewing_moves_the_lease_end(workers) -> None:
    """Renewal sets the end to now + ttl: shortened here, so the lapse is observable within 0.1 s."""
    a, b, _ = workers
    run(a.acquire("d", LONG), a.renew("d", SHORT))
    lapse()
    assert run(b.acquire("d", LONG)) == [True]


def test_a_lapsed_holder_does_not_release_the_next_holders_lock(workers) -> None:
    """a stalled past its lease, b took over; a finishing late must not let c start a third fill."""
    a, b, c = workers
    run(a.acquire("d", SHORT))
    lapse()
    assert run(b.acquire("d", LONG), a.release("d"), c.acquire("d", LONG)) == [True, None, False]
    run(b.release("d"))
    assert run(c.acquire("d", LONG)) == [True]


def test_a_non_storable_answer_is_left_for_the_waiters(workers) -> None:
    a, b, _ = workers
    answer = Entry.build("key", 404, "text/plain", b"no such image", ttl=0, stale=0, epoch=0, tags=(),
                         public=True)
    run(a.leave_result("d", answer))
    got, other = run(b.result("d", "key"), b.result("d", "another key"))
    assert (got.status, got.body) == (404, b"no such image") and other is None
    assert run(b.result("never", "key")) == [None]
