"""The warm CLI end to end: `bench sim` (speed 0, the session's) behind real edges with a real Redis.

Every test gets its own edge (fresh disk tier, its own Redis database), so warm and cold states
never leak between tests; faults injected into the simulator are cleared before a test ends.
"""
from __future__ import annotations

import signal
import subprocess

import pytest

from tests.helpers import Sim, script, start_sim, wait_until
from tests.helpers.warm import TOKEN, batch_hits, journal_rows, public, public_image_ids, run_id, warm

pytestmark = pytest.mark.process


@pytest.fixture(scope="module")
def sim(redis_server) -> Sim:
    """A sim of this module's own: what other test files on this worker did to the session's sim (saved
    settings, sessions, faults) must not change what a warm run finds cached or in progress."""
    s = start_sim(redis_url=redis_server.url)
    yield s
    s.stop()


def client_urls(sim) -> list[str]:
    """Grids (every field, every run) and API pages as the webclient, gallery and API clients ask."""
    urls = ["/api/v0/m/screens/", "/api/v0/m/projects/", "/api/v0/m/datasets/?orphaned=true",
            "/api/v0/m/images/?orphaned=true"]
    for s in public(sim, "screens"):
        urls.append(f"/api/v0/m/screens/{s['id']}/plates/")
    for p in public(sim, "plates"):
        pid = p["id"]
        urls += [f"/api/v0/m/plates/{pid}/wells/", f"/api/v0/m/plates/{pid}/plateacquisitions/"]
        urls += [f"/api/v0/m/plates/{pid}/wells/?limit=200&offset={o}" for o in range(200, p["wells"], 200)]
        urls += [f"/webgateway/plate/{pid}/{f}/?_=1700000000000" for f in range(p["fields"])]
        for acq in p["acquisitions"]:
            urls += [f"/webgateway/plate/{pid}/{f}/{acq['id']}/" for f in range(len(acq["fields"]))]
    for pr in public(sim, "projects"):
        urls.append(f"/api/v0/m/projects/{pr['id']}/datasets/")
    for ds in public(sim, "datasets"):
        urls.append(f"/api/v0/m/datasets/{ds['id']}/images/")
    return urls


def rows_so_far(journal: str) -> int:
    """Rows of the newest run; 0 while the journal is still being created."""
    try:
        return len(journal_rows(journal))
    except Exception:  # noqa: BLE001 - the journal may not exist yet
        return 0


def assert_all_cached_but_placeholders(rows: dict, in_progress: set[int]) -> None:
    """A second pass skips everything except the batches holding a placeholder (never final, never stored)."""
    for url, (state, kind, *_) in rows.items():
        has_placeholder = kind == "thumb" and any(f"id={i}" in url for i in in_progress)
        assert state == ("ok" if has_placeholder else "skip"), (url, state)


def test_warm_all_then_every_thumbnail_grid_and_page_hits(sim, warm_edges, tmp_path):
    edge = warm_edges(1)
    journal = str(tmp_path / "j.sqlite")
    done = warm("all", "--edge", edge.url, "--journal", journal, "--progress", "line")
    assert done.returncode == 0, done.stderr
    assert "warm: done" in done.stderr

    in_progress = set(sim.info["in_progress_images"])
    images = [i for i in public_image_ids(sim) if i not in in_progress]
    assert len(images) > 1000
    assert set(batch_hits(edge, images)) == {"HIT"}
    assert edge.get(f"/webgateway/render_thumbnail/{images[0]}/").headers["x-edge-cache"] == "HIT"
    assert edge.get(f"/webgateway/render_thumbnail/{images[-1]}/96/").headers["x-edge-cache"] == "HIT"
    for url in client_urls(sim):
        assert edge.get(url).headers["x-edge-cache"] == "HIT", url

    status = warm("status", "--journal", journal)
    assert status.returncode == 0 and "state done" in status.stdout and "fail 0.0%" in status.stdout

    sim.reset()
    again = warm("all", "--edge", edge.url, "--journal", journal, "--progress", "none")
    assert again.returncode == 0, again.stderr
    stats = sim.stats()
    # Only placeholders (thumbnails still "in progress") are never final, so never cached.
    assert stats["total"]["renders"] == len(in_progress & set(public_image_ids(sim))), stats
    # and the webclient page, passed through every run to learn the active group (never cacheable)
    assert set(stats["requests"]) <= {"get_thumbnails", "webclient:index"}, stats
    assert_all_cached_but_placeholders(journal_rows(journal), in_progress)


def test_interrupted_run_resumes_without_repeating_work(sim, warm_edges, tmp_path):
    edge = warm_edges(2)
    journal = str(tmp_path / "j.sqlite")
    sim.faults(latency_ms=25)
    try:
        proc = subprocess.Popen([script("warm"), "all", "--edge", edge.url, "--token", TOKEN, "--journal", journal,
                                 "--jobs", "1", "--progress", "none"], stderr=subprocess.PIPE, text=True)
        try:
            wait_until(lambda: rows_so_far(journal) >= 15, 30, 0.3, message="the run journalled too little")
        finally:
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=30)
    finally:
        sim.faults()
    assert proc.returncode == 130, err
    run = run_id(journal)
    assert f"warm --resume {run}" in err
    before = journal_rows(journal)
    assert 15 <= len(before)

    resumed = warm("--resume", run, "--journal", journal, "--progress", "none")
    assert resumed.returncode == 0, resumed.stderr
    after = journal_rows(journal)
    assert {url: after[url] for url in before} == before  # nothing finished before was redone
    plan = warm("all", "--edge", edge.url, "--dry-run")
    total = int(next(line.split()[1] for line in plan.stdout.splitlines() if line.startswith("total")))
    assert len(after) == total
    assert "state done" in warm("status", run, "--journal", journal).stdout


def test_two_shards_cover_everything_exactly_once(sim, warm_edges, tmp_path):
    edge = warm_edges(3)
    shards = []
    for k in (1, 2):
        journal = str(tmp_path / f"shard{k}.sqlite")
        result = warm("all", "--edge", edge.url, "--journal", journal, "--shard", f"{k}/2", "--progress", "none")
        assert result.returncode == 0, result.stderr
        shards.append(journal_rows(journal))
    one, two = (set(s) for s in shards)
    assert one and two and not one & two
    full = str(tmp_path / "full.sqlite")
    assert warm("all", "--edge", edge.url, "--journal", full, "--progress", "none").returncode == 0
    everything = journal_rows(full)
    assert set(everything) == one | two
    assert_all_cached_but_placeholders(everything, set(sim.info["in_progress_images"]))


def test_backend_errors_become_fail_entries_and_the_run_completes(sim, warm_edges, tmp_path):
    edge = warm_edges(4)
    journal = str(tmp_path / "j.sqlite")
    # The items' renders fail, not the listings: a listing failing 4 times in a row (0.35⁴) aborts the run instead.
    sim.faults(error_rate=0.35, endpoints=["get_thumbnails", "render_thumbnail"])
    try:
        result = warm("screen", "1", "2", "--edge", edge.url, "--journal", journal, "--retries", "0",
                      "--progress", "none")
    finally:
        sim.faults()
    assert result.returncode == 3, result.stderr
    rows = journal_rows(journal)
    failed = {url: row for url, row in rows.items() if row[0] == "fail"}
    assert failed and len(rows) > len(failed)
    assert {row[3] for row in failed.values()} <= {500, 502, 503, 504}
    status = warm("status", "--journal", journal, "--failures", str(len(failed))).stdout
    assert "failures (" in status and next(iter(failed)) in status

    retried = warm("--resume", "last", "--journal", journal, "--retry-failed", "--progress", "none")
    assert retried.returncode == 0, retried.stderr
    assert [row[0] for row in journal_rows(journal).values()].count("fail") == 0


def test_direct_mode_fills_the_shared_redis_tier(sim, warm_edges, redis_server, tmp_path):
    edge = warm_edges(5)  # started cold: whatever it serves next comes from what --direct wrote to Redis
    journal = str(tmp_path / "j.sqlite")
    direct = ["plate", "1003", "--direct", "--redis", f"redis://127.0.0.1:{redis_server.port}/5", "--backend", sim.url,
              "--edge", edge.url, "--journal", journal, "--progress", "none"]
    result = warm(*direct)
    assert result.returncode == 0, result.stderr
    assert {row[0] for row in journal_rows(journal).values()} == {"ok"}
    sim.reset()
    grid = edge.get("/webgateway/plate/1003/0/")
    assert grid.headers["x-edge-cache"] == "HIT" and grid.headers["x-edge-tier"] == "redis"
    ids = [cell["id"] for row in grid.json()["grid"] for cell in row if cell]
    assert set(batch_hits(edge, ids)) == {"HIT"}
    assert edge.get("/api/v0/m/plates/1003/wells/").headers["x-edge-cache"] == "HIT"
    assert sim.stats()["total"]["renders"] == 0

    again = warm(*direct)
    assert again.returncode == 0 and {row[0] for row in journal_rows(journal).values()} == {"skip"}


def test_tiles_are_the_keys_the_viewer_requests(sim, warm_edges, tmp_path):
    edge = warm_edges(6)
    image = sim.info["pyramid_images"][0]
    journal = str(tmp_path / "j.sqlite")
    result = warm("tiles", "--image", str(image), "--levels", "2", "--edge", edge.url, "--journal", journal,
                  "--progress", "none")
    assert result.returncode == 0, result.stderr
    rows = journal_rows(journal)
    assert len(rows) == 1 + 4 and {row[0] for row in rows.values()} == {"ok"}  # 512 px level: 1 tile; 1024: 4
    for url in rows:
        assert url.startswith(f"/webgateway/render_image_region/{image}/")
        # the viewer's own request: parameters in its order plus its cache-buster
        assert edge.get(url + "&_=1700000000123").headers["x-edge-cache"] == "HIT"


def test_usage_errors_are_one_line(sim, tmp_path):
    journal = str(tmp_path / "j.sqlite")
    cases = [
        (["all", "--edge", "ftp://x", "--journal", journal], "--edge must be an http(s)"),
        (["all", "--shard", "3/2", "--journal", journal], "--shard must be K/N"),
        (["all", "--since", "last tuesday", "--journal", journal], "is not a date"),
        (["tiles", "--image", "1", "--levels", "x", "--journal", journal], "--levels must be"),
        (["all", "--edge", "http://127.0.0.1:9", "--journal", journal], "cannot reach the edge"),
        (["status", "nope", "--journal", journal], "no run"),
    ]
    for argv, message in cases:
        result = warm(*argv, "--progress", "none") if argv[0] != "status" else warm(*argv)
        assert result.returncode in (1, 2), (argv, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr, (argv, result.stderr)
    no_token = warm("all", "--journal", journal, env={"EDGE_WARM_TOKEN": ""})
    assert no_token.returncode == 2 and "warm token" in no_token.stderr


def test_wrong_token_stops_with_a_clear_message(sim, warm_edges, tmp_path):
    edge = warm_edges(7)
    result = warm("plate", "1004", "--edge", edge.url, "--token", "wrong", "--journal", str(tmp_path / "j.sqlite"),
                  "--progress", "none")
    assert result.returncode == 1 and "warm_token" in result.stderr and "Traceback" not in result.stderr
