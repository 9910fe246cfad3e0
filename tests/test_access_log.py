"""The access log through real `edge serve` processes: a line per answer with its cache status, tier,
audience and request id, credentials never written, and SIGHUP reopening a rotated file."""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import tempfile
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from edge.accesslog import Recorder, fresh_ids, request_id, scrub_query
from tests.helpers import EdgeProc, Launcher, Sim, script, wait_until

SECRETS = ("SECRET", "bob", "pw")


def lines(path: Path, n: int) -> list[str]:
    """The log's lines once it holds at least `n` (it is flushed once a second)."""
    def enough() -> list[str] | None:
        found = path.read_text().splitlines() if path.exists() else []
        return found if len(found) >= n else None
    return wait_until(enough, timeout=5, message=f"{path} did not reach {n} lines")


def logged_edge(edges: Launcher, fmt: str, **env: str) -> tuple[EdgeProc, Path]:
    path = Path(tempfile.mkdtemp(prefix="edge-log-")) / "access.log"
    edge = edges("--access-log", str(path), env={"EDGE_ACCESS_LOG_FORMAT": fmt, **env})
    return edge, path


def test_json_lines_for_miss_hit_bypass_404_and_no_credentials(sim: Sim, edges: Launcher):
    edge, path = logged_edge(edges, "json")
    image = sim.info["public_images"][0]
    thumb = f"/webgateway/render_thumbnail/{image}/"
    missing = "/webgateway/render_thumbnail/987654321/"
    creds = f"{thumb}?bsession=SECRET&username=bob&password=pw&b%73ession=SECRET"
    answers = [edge.get(thumb, headers={"x-request-id": "trace-42", "referer": "http://x/?password=pw"}),
               edge.get(thumb), edge.get(creds), edge.get(missing),
               edge.get(thumb, headers={"x-request-id": "<bad id>"})]
    assert [r.headers["x-edge-cache"] for r in answers] == ["MISS", "HIT", "BYPASS", "MISS", "HIT"]
    got = [json.loads(line) for line in lines(path, len(answers))]
    print("\n" + "\n".join(json.dumps(g) for g in got))
    miss, hit, bypass, not_found, bad_id = got
    assert (miss["method"], miss["path"], miss["status"], miss["cache"], miss["tier"], miss["audience"]) == \
        ("GET", thumb, 200, "MISS", "-", "public")
    assert miss["bytes"] == len(answers[0].content) > 0 and miss["upstream_ms"] > 0
    assert miss["request_id"] == "trace-42" == answers[0].headers["x-request-id"]
    assert (hit["cache"], hit["tier"], hit["upstream_ms"], hit["bytes"]) == ("HIT", "memory", 0.0, miss["bytes"])
    assert (bypass["cache"], bypass["audience"], bypass["status"]) == ("BYPASS", "bypass", 200)
    assert bypass["path"] == f"{thumb}?bsession=-&username=-&password=-&b%73ession=-"
    assert (not_found["status"], not_found["cache"]) == (404, "MISS")
    assert re.fullmatch(r"[0-9a-f]{16}", bad_id["request_id"]) and bad_id["request_id"] == answers[4].headers[
        "x-request-id"]
    assert len({g["request_id"] for g in got}) == len(got)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", g["time"]) and g["remote"] == "127.0.0.1"
               for g in got)
    text = path.read_text()
    assert not any(s in text for s in SECRETS), text


def test_combined_format_with_disk_hits(sim: Sim, edges: Launcher):
    edge, path = logged_edge(edges, "combined", EDGE_MEMORY_SIZE="0")
    thumb = f"/webgateway/render_thumbnail/{sim.info['public_images'][1]}/"
    assert [edge.get(thumb).headers["x-edge-cache"] for _ in range(2)] == ["MISS", "HIT"]
    got = lines(path, 2)
    print("\n" + "\n".join(got))
    pattern = (r'127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] "GET (?P<path>\S+) HTTP/1\.1" '
               r'(?P<status>\d+) (?P<bytes>\d+) "-" "python-httpx/[\d.]+" cache=(?P<cache>\w+) tier=(?P<tier>\S+) '
               r'upstream_ms=[\d.]+ duration_ms=[\d.]+ audience=public request_id=[0-9a-f]{16}')
    parsed = [re.fullmatch(pattern, line) for line in got]
    assert all(parsed), got
    assert [(m["path"], m["status"], m["cache"], m["tier"]) for m in parsed] == \
        [(thumb, "200", "MISS", "-"), (thumb, "200", "HIT", "disk")]
    assert parsed[0]["bytes"] == parsed[1]["bytes"] != "0"


def test_audience_is_a_class_never_a_session(sim: Sim, edges: Launcher, redis_server):
    """verified mode: alice's own entry is 'user', the public user's session 'public'; no session id logged."""
    edge, path = logged_edge(edges, "json", EDGE_ACCESS="verified", EDGE_SESSION_REDIS_URL=redis_server.url)
    cookie_name = sim.info["session_cookie"]
    with closing(sim.login("alice")) as client:
        alice = client.cookies[cookie_name]
    public = httpx.get(f"{sim.url}/webgateway/render_thumbnail/{sim.info['public_images'][0]}/").cookies[cookie_name]
    mine = f"/webgateway/render_thumbnail/{sim.info['private']['lab-a']['images'][0]}/"
    theirs = f"/webgateway/render_thumbnail/{sim.info['public_images'][3]}/"
    answers = [edge.get(mine, cookies={cookie_name: alice}), edge.get(theirs, cookies={cookie_name: public})]
    assert [r.status_code for r in answers] == [200, 200]
    got = [json.loads(line) for line in lines(path, 2)]
    assert [(g["path"], g["audience"], g["cache"]) for g in got] == [(mine, "user", "MISS"), (theirs, "public", "MISS")]
    text = path.read_text()
    assert alice not in text and public not in text and "alice" not in text


def test_two_workers_append_whole_lines(sim: Sim, edges: Launcher):
    """Each worker writes its buffer in one append: lines never interleave, none is lost."""
    path = Path(tempfile.mkdtemp(prefix="edge-log-")) / "access.log"
    edge = edges("--access-log", str(path), "--workers", "2")
    paths = [f"/webgateway/render_thumbnail/{i}/" for i in sim.plate_images(0, 25)] * 4

    async def burst() -> list[int]:
        limits = httpx.Limits(max_keepalive_connections=0)  # new connections: both workers answer
        async with httpx.AsyncClient(base_url=edge.url, timeout=30, limits=limits) as client:
            sem = asyncio.Semaphore(16)

            async def one(p: str) -> int:
                async with sem:
                    return (await client.get(p)).status_code
            return await asyncio.gather(*(one(p) for p in paths))

    assert set(asyncio.run(burst())) == {200}
    got = [json.loads(line) for line in lines(path, len(paths))]
    assert sorted(g["path"] for g in got) == sorted(paths) and len(got) == len(paths)
    print(f"\n2 workers, {len(paths)} requests: {len(got)} whole lines, "
          f"{sum(g['cache'] == 'HIT' for g in got)} hits")


def test_stdout(sim: Sim, edges: Launcher):
    edge = edges("--access-log", "-")
    thumb = f"/webgateway/render_thumbnail/{sim.info['public_images'][2]}/"
    rid = edge.get(thumb).headers["x-request-id"]
    line = wait_until(lambda: next((x for x in edge.proc.log().splitlines() if rid in x), None), timeout=5)
    assert json.loads(line)["path"] == thumb


# When a server's master has respawned its workers after SIGHUP (granian: the new worker is up, then the old
# one stopped gracefully; hypercorn: every worker stopped gracefully, then new ones started).
RESPAWNED = {"granian": lambda edge, path: "Stopped old worker-1" in edge.proc.log(),
             "hypercorn": lambda edge, path: path.exists()}


@pytest.mark.parametrize("server", sorted(RESPAWNED))
def test_sighup_reopens_a_rotated_file_and_loses_no_line(sim: Sim, edges: Launcher, server: str):
    """The new worker opens the path anew; the old one flushes its last lines to the renamed file."""
    path = Path(tempfile.mkdtemp(prefix="edge-log-")) / "access.log"
    edge = edges("--access-log", str(path), server=server)
    paths = [f"/webgateway/render_thumbnail/{i}/" for i in sim.info["public_images"][:6]]
    for p in paths[:3]:
        assert edge.get(p).status_code == 200
    rotated = path.with_name("access.log.1")
    os.rename(path, rotated)
    assert edge.get(paths[3]).status_code == 200  # still the old worker: its line goes to the renamed file
    os.kill(edge.proc.pid, signal.SIGHUP)
    wait_until(lambda: RESPAWNED[server](edge, path), timeout=20, message="no respawn on SIGHUP")
    assert path.exists()  # the new worker opened it at start-up
    for p in paths[4:]:  # (hypercorn: queued in the listen backlog until its new worker is up)
        assert edge.get(p).status_code == 200
    old = [json.loads(x)["path"] for x in lines(rotated, 4)]
    new = [json.loads(x)["path"] for x in lines(path, 2)]
    print(f"\n{server}: rotated file: {len(old)} lines, new file after SIGHUP: {len(new)} lines")
    assert old == paths[:4] and new == paths[4:]
    assert edge.proc.alive()


def test_sighup_to_a_worker_reopens_its_file(sim: Sim, edges: Launcher):
    """`kill -HUP` reaching a worker itself (a whole process group signalled) reopens, never ends it."""
    edge, path = logged_edge(edges, "json")
    workers = [int(pid) for pid in Path(f"/proc/{edge.proc.pid}/task/{edge.proc.pid}/children").read_text().split()]
    assert len(workers) == 1
    thumb = f"/webgateway/render_thumbnail/{sim.info['public_images'][7]}/"
    assert edge.get(thumb).status_code == 200
    os.rename(path, path.with_name("access.log.1"))
    os.kill(workers[0], signal.SIGHUP)
    wait_until(path.exists, timeout=5, message="the worker did not reopen its log")
    assert edge.get(thumb).headers["x-edge-cache"] == "HIT"
    assert [json.loads(x)["cache"] for x in lines(path.with_name("access.log.1"), 1)] == ["MISS"]
    assert [json.loads(x)["cache"] for x in lines(path, 1)] == ["HIT"]
    assert Path(f"/proc/{workers[0]}").exists() and "Respawning" not in edge.proc.log()


@pytest.mark.process
def test_bad_access_log_path_is_a_one_line_error():
    run = subprocess.run([script("edge"), "serve", "--access-log", "/nonexistent-dir/access.log"],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 2 and run.stderr.strip() == \
        "edge: error: access_log /nonexistent-dir/access.log: no such directory", run.stderr


@pytest.mark.parametrize(("query", "logged"), [
    (b"a=1&b=2", b"a=1&b=2"),
    (b"username=bob&password=pw&server=1", b"username=-&password=-&server=1"),
    (b"BSESSION=x&c=%20", b"BSESSION=-&c=%20"),
    (b"pass%77ord=pw&csrfmiddlewaretoken=t&x", b"pass%77ord=-&csrfmiddlewaretoken=-&x"),
    (b"password", b"password=-"),
])
def test_scrub_query(query: bytes, logged: bytes):
    assert scrub_query(query) == logged


def test_request_id_sanity():
    fresh = fresh_ids()
    assert request_id([(b"x-request-id", b"abc-123_4.5")], fresh) == b"abc-123_4.5"
    made = [request_id([(b"x-request-id", bad)], fresh) for bad in (b"", b"a b", b"x" * 129, b'"quoted"', b"\xff")]
    assert all(re.fullmatch(rb"[0-9a-f]{16}", rid) for rid in made) and len(set(made)) == len(made)
    assert next(fresh_ids())[:8] != made[0][:8]  # another process's prefix


def test_recorder_notes_the_answer_and_replaces_an_upstream_request_id():
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def answer() -> Recorder:
        rec = Recorder(send, b"ours")
        shared = [(b"x-request-id", b"theirs"), (b"x-edge-cache", b"BYPASS"), (b"x-edge-tier", b"")]
        await rec({"type": "http.response.start", "status": 201, "headers": shared})
        await rec({"type": "http.response.body", "body": b"abc", "more_body": True})
        await rec({"type": "http.response.body", "body": b"de"})
        assert shared[0] == (b"x-request-id", b"theirs")  # the caller's list is untouched
        return rec

    rec = asyncio.run(answer())
    assert (rec.status, rec.bytes, rec.cache, rec.tier) == (201, 5, b"BYPASS", b"")
    assert [v for k, v in sent[0]["headers"] if k == b"x-request-id"] == [b"ours"]
