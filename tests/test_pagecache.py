"""The disk tier's SQLite file read into the page cache when an edge starts (`disk_readahead`), in process:
a file evicted from the page cache is resident again shortly after start-up, and stays evicted with the
setting off. Residency is read with util-linux's `fincore`."""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.scenarios.scale import fill_disk
from edge.pagecache import available_bytes, readahead
from tests.inprocess import MakeEdge
from tests.inprocess import anyio_backend, make_edge, sim_apps  # noqa: F401 - fixtures

pytestmark = pytest.mark.anyio

ENTRIES = 25_000  # ≈ 105 MB of SQLite file: past the 64 MiB SQLite maps, and past one WILLNEED's 8 MB cap


def resident(path: Path) -> float:
    """The share of `path`'s pages in the page cache."""
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES,SIZE", str(path)],
                         capture_output=True, text=True, check=True).stdout.split()
    res, size = map(int, out)
    return res / size if size else 1.0


def evict(path: Path) -> None:
    os.sync()  # dirty pages are not dropped
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


@pytest.fixture
def evicted_cache(tmp_path: Path) -> Path:
    """tmp_path/cache0 (make_edge's first cache directory) holding ENTRIES thumbnails, out of the page cache."""
    if shutil.which("fincore") is None or not hasattr(os, "posix_fadvise"):
        pytest.skip("needs util-linux's fincore and posix_fadvise (Linux)")
    directory = tmp_path / "cache0"
    directory.mkdir()
    fill_disk(directory, 0, ENTRIES)
    db = directory / "cache.db"
    evict(db)
    if resident(db) > 0.2:
        pytest.skip(f"{tmp_path}'s file system keeps files in memory (tmpfs?): residency cannot be controlled")
    return db


async def wait_resident(db: Path, share: float, seconds: float) -> float:
    for _ in range(int(seconds / 0.05)):
        if (now := resident(db)) >= share:
            return now
        await asyncio.sleep(0.05)
    return resident(db)


async def test_an_edge_reads_its_disk_tier_into_the_page_cache_at_start(make_edge: MakeEdge, evicted_cache: Path):
    await make_edge()  # disk_readahead defaults to on
    assert await wait_resident(evicted_cache, 0.9, 10) >= 0.9


async def test_with_disk_readahead_off_the_file_stays_out(make_edge: MakeEdge, evicted_cache: Path):
    await make_edge(disk_readahead=False)
    await asyncio.sleep(0.5)
    assert resident(evicted_cache) < 0.5


def test_files_over_the_budget_are_left_alone(tmp_path: Path):
    big = tmp_path / "big"
    big.write_bytes(b"\0" * 4096)
    assert readahead([str(big), str(tmp_path / "absent")], budget=4095) == (0, 4096)
    assert readahead([str(big)], budget=4096) == (4096, 4096)
    assert available_bytes() > 0 and available_bytes(str(tmp_path / "no-meminfo")) == 0
    done = subprocess.run([sys.executable, "-m", "edge.pagecache", "--budget", "100", str(big)],
                          capture_output=True, text=True)
    assert done.returncode == 0 and "larger than the read-ahead budget" in done.stderr


async def test_entries_another_process_writes_stay_visible(make_edge: MakeEdge, evicted_cache: Path):
    """The read-ahead opens and closes the SQLite file: in the edge's own process that would drop SQLite's POSIX
    locks (a close releases all of a process's locks on the file) and hide another process's later writes.
    After the read-ahead, entries written by another process are hits."""
    edge = await make_edge()
    assert await wait_resident(evicted_cache, 0.9, 10) >= 0.9
    writer = subprocess.run([sys.executable, "-c", WRITE_ONE, str(evicted_cache.parent)], capture_output=True,
                            text=True)
    assert writer.returncode == 0, writer.stderr
    path = writer.stdout.strip()
    r = await edge.get(path)
    assert (r.headers["x-edge-cache"], r.headers["x-edge-tier"]) == ("HIT", "disk"), path


# One thumbnail entry stored by a process of its own, as a second edge on the same directory would; prints its path.
WRITE_ONE = """
import sys, time
from edge.keys import digest
from edge.tiers import DiskTier
from bench.scenarios.scale import thumbnail_entry, thumbnail_key
i = 10**9
tier = DiskTier(sys.argv[1], 2**34)
tier.set_many([(digest(thumbnail_key(i)), thumbnail_entry(i, time.time()))])
tier.close()
print(f"/webgateway/render_thumbnail/{i}/")
"""
