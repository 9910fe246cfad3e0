"""`bench scale` at tiny sizes: it fills every tier (memory, disk, Redis, nginx's proxy cache), measures
each size and writes every figure to the JSON. The figures themselves belong in docs/bench.md; here only
their presence and sanity (counts that add up, positive times, ratios against the smallest size)."""
from __future__ import annotations

import json
import subprocess

import pytest
import redis

from tests.helpers import find_binary, script

pytestmark = pytest.mark.skipif(find_binary("nginx") is None or find_binary("h2load") is None,
                                reason="nginx and h2load needed (make system-deps)")
SIZES = [1000, 3000]
LOOKUPS = 1000
LATENCY = ("p50_us", "p99_us", "mean_us")


def run_scale(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([script("bench"), "scale", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def report(tmp_path_factory, redis_server) -> dict:
    out = tmp_path_factory.mktemp("scale") / "scale.json"
    done = run_scale("--sizes", "1k,3k", "--tiers", "memory,disk,nginx", "--lookups", str(LOOKUPS),
                     "--redis", redis_server.url, "--memory-size", str(2 * 2**20), "--json", str(out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "cost ×" in done.stdout  # the table was printed
    return json.loads(out.read_text())


def rows(report: dict, tier: str) -> list[dict]:
    found = [r for r in report["results"] if r["tier"] == tier]
    assert [r["entries"] for r in found] == SIZES
    return found


def check_latency(row: dict) -> None:
    assert 0 < row["p50_us"] <= row["p99_us"] and row["mean_us"] > 0
    assert row["cost_ratio"] > 0 and isinstance(row["flat"], bool)


def check_common(row: dict) -> None:
    check_latency(row)
    assert row["fill_per_s"] > 0


def test_disk_tier_figures(report):
    for row in rows(report, "disk"):
        check_common(row)
        beside = row["beside"]  # hits alternating with a directory of the smallest size, in one process
        assert beside["reference_entries"] == SIZES[0] and row["cost_ratio"] == beside["ratio"] > 0
        assert row["lookups"] + row["misses"] == LOOKUPS and row["misses"] < LOOKUPS // 10
        assert 3 * 1024 < row["bytes_per_entry"] < 16 * 1024  # a 3 KB body and its head in SQLite pages
        assert 0 < row["startup_s"] < 30 and 10 < row["rss_mib"] <= row["peak_rss_mib"]
        evict = row["evict"]
        assert evict["inserts"] >= 100 and evict["evicted"] > 0 and all(evict[k] > 0 for k in LATENCY)


def test_disk_tier_before_issue_14_beside_it(report):
    for row in rows(report, "disk (diskcache LRU)"):
        check_latency(row)
        assert row["lookups"] + row["misses"] == LOOKUPS


def test_memory_tier_holds_what_fits(report):
    for row in rows(report, "memory"):
        check_common(row)
        assert row["held"] <= 2 * 2**20 // row["bytes_per_entry"] and row["held"] < row["entries"]
        assert row["misses"] == 0


def test_redis_tier_figures_and_cleanup(report, redis_server):
    for row in rows(report, "redis"):
        check_common(row)
        assert 3 * 1024 < row["bytes_per_entry"] < 16 * 1024 and row["memory_usage_one"] > 3 * 1024
    assert not list(redis.Redis.from_url(redis_server.url).scan_iter(match="bench-scale:*"))


def test_nginx_cache_figures(report):
    for row in rows(report, "nginx-cache"):
        check_common(row)
        assert row["files"] == row["entries"] and row["bytes_per_entry"] >= 3 * 1024
        assert row["cpu_us_per_hit"] > 0 and row["rss_mib"] > 0


def test_bad_sizes_are_a_usage_error():
    done = run_scale("--sizes", "lots")
    assert done.returncode == 2 and "bad size 'lots'" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.skipif(find_binary("initdb") is None, reason="PostgreSQL server binaries needed (make system-deps)")
def test_plan_over_a_postgres_catalog(tmp_path):
    out = tmp_path / "plan.json"
    done = run_scale("--tiers", "plan", "--plan-images", "2k", "--json", str(out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (row,) = json.loads(out.read_text())["results"]
    # 2 plates × 2 fields × ⌈384 / 50⌉ batches, and the other 464 images as one batch in each of 100 datasets.
    assert (row["plates"], row["images"], row["items"]) == (2, 2000, 2 * 2 * 8 + 100)
    assert row["plan_s"] > 0 and 10 < row["peak_rss_mib"] < 1024
    assert "batches planned" in done.stdout
