"""The disk tier's files read into the page cache at start-up.

A disk hit costs memory speed only while SQLite's pages are resident: over 3M entries (a 12.6 GB file) a hit
costs 1.37× one over 10k when the file is in the page cache, 10× when it is not, and right after a bulk fill or
a reboot only part of it is (docs/bench.md, "3M and the page cache"). `readahead` asks the kernel to read the
files (posix_fadvise WILLNEED) when they fit in the memory budget, so the first hits after a start are not
random reads. Linux only; elsewhere it does nothing.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

STEP = 2 * 2**20  # bytes per read-ahead request


def available_bytes(meminfo: str = "/proc/meminfo") -> int:
    """MemAvailable (what the kernel could give without swapping), 0 when it cannot be read."""
    try:
        for line in Path(meminfo).read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def readahead(paths: Iterable[str], budget: int) -> tuple[int, int]:
    """Ask the kernel to read `paths` into the page cache if their total size is within `budget` bytes.
    Returns (bytes asked for, total bytes); (0, total) when over the budget or unsupported. Blocking (the
    kernel may submit the reads before returning): run it in a thread."""
    files = [(p, os.stat(p).st_size) for p in paths if os.path.isfile(p)]
    total = sum(size for _, size in files)
    if not hasattr(os, "posix_fadvise") or total > budget:
        return 0, total
    for path, size in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            # One WILLNEED reads at most the device's readahead maximum (Linux force_page_cache_ra caps it at
            # max(io_pages, ra_pages): 8 MB here), so the file is asked for step by step.
            for offset in range(0, size, STEP):
                os.posix_fadvise(fd, offset, min(STEP, size - offset), os.POSIX_FADV_WILLNEED)
        finally:
            os.close(fd)
    return total, total
