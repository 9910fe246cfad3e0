"""The disk tier's files read into the page cache at start-up, by a child process.

A disk hit costs memory speed only while SQLite's pages are resident: over 3M entries (a 12.6 GB file) a hit
costs 1.0–1.6× one over 10k when the file is in the page cache, 10× when it is not, and right after a bulk fill
or a reboot only part of it is (docs/bench.md, "3M and the page cache"). `readahead` asks the kernel to read the
files (posix_fadvise WILLNEED) when they fit in the memory budget, so the first hits after a start are not
random reads. Linux only; elsewhere it does nothing.

It runs in a child (`python -m edge.pagecache`), never in an edge process: SQLite's locks are POSIX record
locks, which a process loses on *every* descriptor of the file when it closes *any* one of them (SQLite's
"How To Corrupt" §2.2); opening and closing cache.db beside the tier's connections made another process's
writes invisible to this one (seen: every warm entry missed on the second edge sharing the directory).
"""
from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

STEP = 2 * 2**20  # bytes per read-ahead request
SHARE = 0.75  # of MemAvailable: files larger in all are left to be read as hits need them
log = logging.getLogger("edge")


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
    kernel may submit the reads before returning). Only in a process holding no SQLite connection to them."""
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


def start(paths: list[str]) -> subprocess.Popen:
    """`readahead` within SHARE of the memory available now, in a child process; its one line of outcome goes
    to this process's stderr."""
    budget = int(available_bytes() * SHARE)
    return subprocess.Popen([sys.executable, "-m", "edge.pagecache", "--budget", str(budget), *paths],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edge.pagecache", description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=int, required=True, help="bytes: files larger in all are left alone")
    p.add_argument("paths", nargs="+")
    args = p.parse_args(argv)
    try:
        asked, total = readahead(args.paths, args.budget)
    except OSError as exc:
        print(f"edge: disk tier: page cache read-ahead failed: {exc}", file=sys.stderr)
        return 1
    if asked:
        print(f"edge: disk tier: asked the kernel to read {asked / 1e6:.1f} MB of {args.paths[0]} into the "
              f"page cache", file=sys.stderr)
    elif total:
        print(f"edge: disk tier: {args.paths[0]} ({total / 1e6:.1f} MB) is larger than the read-ahead budget "
              f"({args.budget / 1e6:.1f} MB): hits read what they need", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
