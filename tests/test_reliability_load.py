"""Reliability under load: a bounded h2load run against `edge serve --workers 2`.

URL list: the thumbnail of every image of the public plates (the warm-up pass misses, then hits;
h2load's clients each walk the list from the top, so first requests for a URL coalesce). Zero failed
requests, worker memory flat (RSS before/after from /proc) and no file-descriptor growth.
"""
from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import Sim, find_binary

pytestmark = pytest.mark.process

REQUESTS = 100_000


def plate_thumbnails(sim: Sim) -> list[str]:
    paths = []
    with httpx.Client(base_url=sim.url, timeout=30) as client:
        for plate in sim.info["plates"]:
            if not plate["public"]:
                continue
            for field in range(plate["fields"]):
                grid = client.get(f"/webgateway/plate/{plate['id']}/{field}/").json()["grid"]
                paths += [f"/webgateway/render_thumbnail/{cell['id']}/" for row in grid for cell in row if cell]
    return paths


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out += [int(c) for c in text]
    return out


def rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1))


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def h2load(urls_file: Path, n: int, timeout: float) -> tuple[dict[str, int], float, str]:
    binary = find_binary("h2load")
    out = subprocess.run([binary, "-n", str(n), "-c", "10", "-m", "10", "-i", str(urls_file)],
                         capture_output=True, text=True, timeout=timeout)
    text = out.stdout + out.stderr
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", text)
    assert m, text
    counts = dict(zip(("total", "started", "done", "succeeded", "failed", "errored", "timeout"), map(int, m.groups())))
    rate = float(re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", text).group(1))
    return counts, rate, text


@pytest.mark.skipif(find_binary("h2load") is None, reason="h2load (nghttp2-client) not installed")
def test_h2load_zero_failures_flat_memory_no_fd_growth(sim: Sim, edges, tmp_path):
    edge = edges("--workers", "2")
    paths = plate_thumbnails(sim)
    urls = tmp_path / "urls.txt"
    urls.write_text("\n".join([edge.url + paths[0]] + paths[1:]) + "\n")
    workers = children(edge.proc.pid)
    assert len(workers) == 2, workers

    # warm-up: every h2load client walks the whole list once, so every entry is filled and the
    # upstream connection pools reach their size here; misses in the measured run would open
    # upstream connections and read as descriptor growth
    warm = 10 * len(paths)
    renders_start = sim.stats()["renders"].get("render_thumbnail", 0)
    counts, _, text = h2load(urls, warm, timeout=90)
    assert counts["succeeded"] == warm, text
    time.sleep(0.5)
    before = {pid: (rss_kb(pid), fds(pid)) for pid in workers}
    renders_before = sim.stats()["renders"].get("render_thumbnail", 0)

    started = time.monotonic()
    counts, rate, text = h2load(urls, REQUESTS, timeout=150)
    took = time.monotonic() - started
    time.sleep(1.0)  # let the server close h2load's connections
    after = {pid: (rss_kb(pid), fds(pid)) for pid in workers}
    renders_now = sim.stats()["renders"].get("render_thumbnail", 0)
    renders, filled = renders_now - renders_before, renders_now - renders_start
    status = re.search(r"status codes: (.*)", text).group(1)
    print(f"\nh2load -n {REQUESTS} -c 10 -m 10 over {len(paths)} plate thumbnails: {counts}, {rate:.0f} req/s "
          f"({took:.1f}s), status codes {status}; backend thumbnail renders {renders} (warm-up and run: {filled})")
    for pid in workers:
        print(f"  worker {pid}: RSS {before[pid][0] / 1024:.1f} -> {after[pid][0] / 1024:.1f} MB, "
              f"fds {before[pid][1]} -> {after[pid][1]}")
    assert counts["succeeded"] == REQUESTS and counts["failed"] == counts["errored"] == counts["timeout"] == 0, text
    assert status.startswith(f"{REQUESTS} 2xx"), status
    # without Redis the two workers share the disk tier but not their fill locks: a miss is fetched
    # once per worker at most (the images whose pyramid is still being built answer OMERO's
    # "in progress" JPEG, which is never stored, so those few are fetched again in the measured run)
    assert filled <= len(workers) * len(paths), (filled, renders)
    for pid in workers:
        assert after[pid][0] - before[pid][0] < 64 * 1024, (pid, before[pid], after[pid])
        assert after[pid][1] - before[pid][1] <= 8, (pid, before[pid], after[pid])
    assert edge.proc.alive() and "Traceback" not in edge.proc.log()
