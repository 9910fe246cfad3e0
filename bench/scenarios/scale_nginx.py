"""`bench scale`'s competitor: nginx's proxy cache holding the same number of entries as the tiers.

Writing files in nginx's own cache format is nginx's business, so the cache is filled the way it fills
in production: N distinct URLs requested through it (h2load, one connection, 10 streams: h2load walks its
URL list from the start on every connection) in front of a constant 3 KB body served by a second server
of the same nginx. Each size adds only the URLs it lacks. Hits: h2load on one connection, one stream at a
time, over a random sample of the cached URLs; CPU µs per hit from the nginx process tree (/proc).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import httpx

from bench.clients import Transport
from bench.measure import LoadFailed
from bench.nginx import Listeners, Nginx, constant_cache_conf
from bench.procs import HOST, free_port
from bench.scenarios.hits import h2load, tree_cpu_seconds
from bench.scenarios.scale import BODY_BYTES, du, sample
from bench.targets import Stack

KEYS_PER_MIB = 8000  # nginx docs (proxy_cache_path): "one megabyte zone can store about 8 thousand keys"
FILL_CONCURRENCY = 10  # one h2 connection with 10 streams (bench.scenarios.hits.h2load's shape)
FILL_CHUNK = 500_000


def pss_mib(root: int) -> float:
    """Proportional set size of `root` and its children (the shared keys zone counted once in all)."""
    total = 0
    for pid in [root, *_children(root)]:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        total += next(int(line.split()[1]) for line in text.splitlines() if line.startswith("Pss:"))
    return total / 1024


def _children(root: int) -> list[int]:
    try:
        return [int(pid) for pid in Path(f"/proc/{root}/task/{root}/children").read_text().split()]
    except OSError:
        return []


def url(port: int, i: int) -> str:
    return f"http://{HOST}:{port}/webgateway/render_thumbnail/{i}/"


def run_nginx(stack: Stack, sizes: list[int], lookups: int, log: Callable[[str], None]) -> list[dict]:
    prefix = stack.fresh_dir("nginx-scale")
    body = prefix / "body.jpg"
    body.write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * (BODY_BYTES - 6) + b"\xff\xd9")
    listeners = Listeners(free_port(), free_port(), free_port())
    zone = math.ceil(max(sizes) * 1.2 / KEYS_PER_MIB) + 1
    nginx = Nginx(stack.children, prefix, listeners,
                  constant_cache_conf(prefix, listeners, stack.certs, free_port(), body, zone))
    rows, filled = [], 0
    try:
        nginx.start()
        for n in sizes:
            fill_s = 0.0
            for low in range(filled, n, FILL_CHUNK):  # each h2load run well within its timeout
                high = min(n, low + FILL_CHUNK)
                done = h2load([url(listeners.h2c, i) for i in range(low, high)], Transport.H2, FILL_CONCURRENCY,
                              high - low, stack.tmp / "h2load-scale-fill.log")
                fill_s += (high - low) / done["req_per_s"]
            fill_rate, filled = (n - filled) / fill_s, n
            disk, files = du(prefix / "cache")
            if files < n:
                raise LoadFailed(f"nginx cached {files:,} files after {n:,} distinct URLs")
            urls = [url(listeners.h2c, i) for i in sample(n, lookups, n)]
            if httpx.get(url(listeners.h1, n - 1)).headers.get("x-proxy-cache") != "HIT":
                raise LoadFailed("nginx's proxy cache misses a URL it was filled with")
            cpu = tree_cpu_seconds(nginx.child.pid)
            hits = h2load(urls, Transport.H2, 1, lookups, stack.tmp / "h2load-scale-hits.log")
            cpu = tree_cpu_seconds(nginx.child.pid) - cpu
            rows.append({"tier": "nginx-cache", "entries": n, "fill_per_s": round(fill_rate),
                         "bytes_per_entry": round(disk / n), "files": files, "keys_zone_mib": zone,
                         "p50_us": round(hits["p50_ms"] * 1000, 1), "p99_us": round(hits["p99_ms"] * 1000, 1),
                         "mean_us": round(hits["mean_ms"] * 1000, 1), "hits_per_s": round(hits["req_per_s"]),
                         "cpu_us_per_hit": round(cpu / lookups * 1e6, 2), "rss_mib": round(pss_mib(nginx.child.pid), 1)})
            log(f"nginx: {n:,} files: hit p50 {rows[-1]['p50_us']} µs, {rows[-1]['cpu_us_per_hit']} CPU µs/hit, "
                f"{rows[-1]['bytes_per_entry']:,} B/file, filled at {fill_rate:,.0f}/s")
    finally:
        nginx.stop()
    return rows
