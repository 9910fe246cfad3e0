"""The distributed warm queue end to end: a real redis-server holds the queue, `bench sim` (slowed to
`--speed 2`, so a run lasts seconds) behind a real edge, `warm … --queue`, `warm worker` and
`warm status --queue` as subprocesses. Workers are killed with SIGKILL, as a host dies.
"""
from __future__ import annotations

import json
import re
import signal
import time

import pytest
import redis

from tests.helpers import script, wait_until
from tests.helpers.launch import EdgeProc, Sim, start_sim
from tests.helpers.procs import Proc, RedisServer, find_binary, free_port
from tests.helpers.warm import TOKEN, batch_hits, public_image_ids, start_edge, warm
from warm.model import Item
from warm.queue import decode, encode, run_state

pytestmark = pytest.mark.process
SPEED = 2.0  # get_thumbnails of 5 ids: (15 + 3 × 5) ms × 2 = 60 ms in one of the sim's 4 workers
BATCH = "5"


@pytest.fixture(scope="module")
def queue_sim():
    s = start_sim("--speed", str(SPEED), "--workers", "4")
    yield s
    s.stop()


@pytest.fixture
def queue(redis_server: RedisServer) -> str:
    """A fresh Redis database for the queue (the edges use 1–3)."""
    url = f"redis://127.0.0.1:{redis_server.port}/8"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture
def procs():
    """The test's workers and edges, stopped by PID when it ends."""
    started: list[Proc] = []
    yield started
    for proc in reversed(started):
        proc.stop()


@pytest.fixture
def edge_for(queue_sim: Sim, redis_server: RedisServer, procs):
    """`edge_for(db)`: an edge in front of the slowed sim with Redis database `db`."""
    def make(db: int) -> EdgeProc:
        edge = start_edge(queue_sim, redis_server, db)
        procs.append(edge.proc)
        return edge
    return make


def worker(procs: list, queue: str, name: str, *args: str) -> Proc:
    procs.append(Proc([script("warm"), "worker", "--queue", queue, "--name", name, *args],
                      env={"EDGE_WARM_TOKEN": TOKEN}, name=name))
    return procs[-1]


def status(queue: str, *args: str) -> dict:
    done = warm("status", "--queue", queue, "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def enqueue(queue: str, *args: str) -> str:
    done = warm(*args, "--queue", queue)
    assert done.returncode == 0, done.stderr
    return re.search(r"run (\S+): ", done.stderr).group(1)


def test_two_workers_one_killed_every_item_warmed_none_lost(queue_sim: Sim, queue, procs, edge_for, tmp_path):
    edge, local_edge = edge_for(1), edge_for(2)
    r = redis.Redis.from_url(queue, decode_responses=True)
    run = enqueue(queue, "thumbnails", "--all", "--edge", edge.url, "--thumbnails-batch", BATCH, "--jobs", "4")
    items = status(queue)["total"]
    assert items > 200
    queue_sim.reset()
    started = time.monotonic()
    victim = worker(procs, queue, "victim", "--idle-timeout", "1")
    survivor = worker(procs, queue, "survivor", "--idle-timeout", "1")
    workers_key = f"warm:{{{run}}}:workers"
    wait_until(lambda: int(r.hget(workers_key, "victim:ok") or 0) >= 30, timeout=30,
               message="the victim acknowledged nothing")
    victim.kill()
    at_kill = {c["name"]: c["pending"] for c in r.xpending(f"warm:{{{run}}}:items", "workers")["consumers"]}
    in_flight = at_kill.get("victim", 0)
    survivor.popen.wait(60)
    elapsed = time.monotonic() - started
    assert survivor.popen.returncode == 0, survivor.log()
    assert "run complete" in survivor.log()

    s = status(queue, run)
    assert (s["state"], s["done"], s["total"], s["fail"], s["pending"], s["waiting"]) == \
        ("done", items, items, 0, 0, 0), s
    # every entry acknowledged (and so deleted: the stream keeps only unfinished work), none in flight
    assert r.xlen(f"warm:{{{run}}}:items") == 0 and r.hlen(f"warm:{{{run}}}:starts") == 0
    assert r.xinfo_groups(f"warm:{{{run}}}:items")[0]["pending"] == 0
    assert s["workers"]["victim"]["ok"] >= 30 and s["workers"]["survivor"]["ok"] > 0, s["workers"]
    assert in_flight > 0 and s["reclaimed"] == in_flight, (in_flight, s["reclaimed"])
    assert s["workers"]["survivor"]["reclaimed"] == in_flight
    assert s["duplicates"] <= in_flight, (s["duplicates"], in_flight)
    backend_batches = queue_sim.stats()["requests"].get("get_thumbnails", 0)

    in_progress = set(queue_sim.info["in_progress_images"])
    images = [i for i in public_image_ids(queue_sim) if i not in in_progress]
    assert set(batch_hits(edge, images)) == {"HIT"}  # every planned thumbnail, as a client asks

    # The backend's capacity for the same work: one plain local run of 8 jobs (4 sim workers + 4).
    local = warm("thumbnails", "--all", "--edge", local_edge.url, "--thumbnails-batch", BATCH, "--jobs", "8",
                 "--journal", str(tmp_path / "local.sqlite"), "--progress", "none")
    assert local.returncode == 0, local.stderr
    local_rate = float(re.search(r"([\d.]+) items/s", local.stderr).group(1))
    model = 4 / ((15 + 3 * int(BATCH)) * SPEED / 1000)
    print(f"\nqueue figures: items {items}, workers 2 (one SIGKILLed after {s['workers']['victim']['ok']} "
          f"acknowledged), in flight at the kill {in_flight}, reclaimed {s['reclaimed']}, duplicates "
          f"{s['duplicates']}, backend get_thumbnails {backend_batches}; rate {s['rate']:.1f} items/s "
          f"({items / elapsed:.1f} items/s wall incl. worker start-up, {elapsed:.1f}s) vs a local run "
          f"{local_rate:.1f} items/s and the sim's model {model:.1f} batches/s")


def test_an_item_that_always_fails_ends_failed_after_its_attempts(queue_sim: Sim, queue, procs, edge_for, tmp_path):
    edge = edge_for(3)
    ids = tmp_path / "ids.txt"
    ids.write_text("".join(f"{i}\n" for i in queue_sim.plate_images(0, 10)))
    run = enqueue(queue, "images", "--ids", str(ids), "--edge", edge.url, "--thumbnails-batch", BATCH,
                  "--retries", "2")
    queue_sim.faults(error_rate=1.0)
    try:
        w = worker(procs, queue, "w1", "--idle-timeout", "5")
        assert w.popen.wait(60) == 0, w.log()
    finally:
        queue_sim.faults()
    s = status(queue, run)
    assert (s["state"], s["total"], s["done"], s["fail"], s["failed_total"]) == ("done", 2, 2, 2, 2), s
    assert {(f["status"], f["attempts"], f["worker"]) for f in s["failed"]} == {(500, 3, "w1")}, s["failed"]
    text = warm("status", "--queue", queue, run)
    assert text.returncode == 0 and "failures (2 of 2 shown)" in text.stdout, text.stdout
    assert "/webgateway/get_thumbnails/?id=" in text.stdout and "3 attempts, w1" in text.stdout


def test_an_entry_whose_workers_keep_dying_is_recorded_failed(queue_sim: Sim, queue, procs, edge_for, tmp_path):
    """A worker that read entries and died (here: a consumer that reads and never acknowledges) leaves them
    pending; the next worker takes them over, and past --max-deliveries records them failed, never lost."""
    edge = edge_for(3)
    ids = tmp_path / "ids.txt"
    ids.write_text("".join(f"{i}\n" for i in queue_sim.plate_images(0, 10)))
    r = redis.Redis.from_url(queue, decode_responses=True)
    run = enqueue(queue, "images", "--ids", str(ids), "--edge", edge.url, "--thumbnails-batch", BATCH,
                  "--max-deliveries", "1")
    dead = r.xreadgroup("workers", "dead", {f"warm:{{{run}}}:items": ">"}, count=1)
    assert len(dead[0][1]) == 1
    w = worker(procs, queue, "w2", "--idle-timeout", "0.3")
    assert w.popen.wait(60) == 0, w.log()
    s = status(queue, run)
    assert (s["state"], s["done"], s["ok"], s["fail"], s["reclaimed"]) == ("done", 2, 1, 1, 1), s
    assert "delivered 2 times" in s["failed"][0]["reason"], s["failed"]


def test_sigterm_finishes_the_items_in_flight(queue_sim: Sim, queue, procs, edge_for, tmp_path):
    edge = edge_for(3)
    r = redis.Redis.from_url(queue, decode_responses=True)
    ids = tmp_path / "ids.txt"
    ids.write_text("".join(f"{i}\n" for i in queue_sim.plate_images(1, 60)))
    run = enqueue(queue, "images", "--ids", str(ids), "--edge", edge.url, "--thumbnails-batch", "2", "--refresh")
    w = worker(procs, queue, "w3", "--jobs", "2", "--rate", "10")
    wait_until(lambda: int(r.hget(f"warm:{{{run}}}:workers", "w3:ok") or 0) >= 5, timeout=30)
    w.popen.send_signal(signal.SIGTERM)
    assert w.popen.wait(30) == 0, w.log()
    assert "stopping after the" in w.log()
    s = status(queue, run)
    assert s["state"] == "queued" and s["pending"] == 0 and 5 <= s["done"] < s["total"], s


def test_follow_waits_for_new_runs_and_a_stalled_planner_is_left(queue_sim: Sim, queue, procs, edge_for, tmp_path):
    """--follow: a worker started before any run warms the runs enqueued later. A run whose planner stopped
    long ago (its host died mid-planning: state still `planning`) is drained, then left as `stalled`."""
    edge = edge_for(3)
    ids = tmp_path / "ids.txt"
    ids.write_text("".join(f"{i}\n" for i in queue_sim.plate_images(0, 10)))
    follower = worker(procs, queue, "f1", "--follow", "--poll", "0.2")
    run = enqueue(queue, "images", "--ids", str(ids), "--edge", edge.url, "--thumbnails-batch", BATCH)
    meta = redis.Redis.from_url(queue, decode_responses=True)
    wait_until(lambda: meta.hget(f"warm:{{{run}}}:meta", "done") == "2", timeout=30)
    assert follower.alive()
    follower.popen.send_signal(signal.SIGTERM)
    assert follower.popen.wait(30) == 0, follower.log()
    s = status(queue, run)
    assert s["state"] == "done" and s["workers"]["f1"]["ok"] + s["workers"]["f1"]["skip"] == 2, s

    stalled = enqueue(queue, "images", "--ids", str(ids), "--edge", edge.url, "--thumbnails-batch", "2",
                      "--refresh")
    meta.hset(f"warm:{{{stalled}}}:meta", mapping={"state": "planning", "beat": 0})
    w = worker(procs, queue, "f2", "--run", stalled)
    assert w.popen.wait(30) == 0, w.log()
    assert "stopped planning" in w.log()
    s = status(queue, stalled)
    assert (s["state"], s["done"], s["ok"]) == ("stalled", 5, 5), s


def durable_redis(port: int, directory: str) -> Proc:
    """A redis-server that keeps what it acknowledged across a SIGKILL (append-only file, fsync always)."""
    return Proc.up([find_binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "yes", "--appendfsync", "always", "--dir", directory], name="redis-aof",
                   ports=[port])


def test_a_worker_waits_out_a_redis_restart(queue_sim: Sim, procs, edge_for, tmp_path):
    """The queue's Redis dies mid-run and comes back: the worker says so, waits, and the run completes
    with every item acknowledged once."""
    edge = edge_for(3)
    port = free_port()
    first = durable_redis(port, str(tmp_path))
    procs.append(first)
    queue = f"redis://127.0.0.1:{port}/0"
    ids = tmp_path / "ids.txt"
    ids.write_text("".join(f"{i}\n" for i in queue_sim.plate_images(1, 60)))
    run = enqueue(queue, "images", "--ids", str(ids), "--edge", edge.url, "--thumbnails-batch", "2", "--refresh")
    total = status(queue, run)["total"]
    assert total == 30
    w = worker(procs, queue, "w4", "--rate", "10", "--redis-patience", "30", "--idle-timeout", "2")
    r = redis.Redis.from_url(queue, decode_responses=True)
    wait_until(lambda: int(r.hget(f"warm:{{{run}}}:workers", "w4:ok") or 0) >= 5, timeout=30)
    first.kill()
    time.sleep(1.5)
    procs.append(durable_redis(port, str(tmp_path)))
    assert w.popen.wait(60) == 0, w.log()
    log = w.log()
    assert "is unreachable" in log and "answers again" in log and "run complete" in log, log
    s = status(queue, run)
    assert (s["state"], s["done"], s["total"], s["fail"]) == ("done", total, total, 0), s


def test_bad_input_and_redis_down_are_one_line_errors(queue):
    down = f"redis://127.0.0.1:{free_port()}/0"
    cases = [(("worker", "--queue", "http://127.0.0.1:1"), 2, "--queue must be a redis:// URL"),
             (("worker", "--queue", queue, "--jobs", "0"), 2, "--jobs must be positive"),
             (("thumbnails", "--all", "--queue", queue, "--direct"), 2, "do not combine"),
             (("status", "--queue", queue, "nosuchrun"), 2, "no run"),
             (("worker", "--queue", queue, "--progress-interval", "-1"), 2, "must not be negative"),
             (("worker", "--queue", down, "--redis-patience", "1"), 1, "cannot reach the queue's Redis")]
    for argv, code, message in cases:
        done = warm(*argv)
        assert done.returncode == code and message in done.stderr, (argv, done.returncode, done.stderr)
        assert "Traceback" not in done.stderr and done.stderr.strip().splitlines()[-1].startswith("warm: error:")
    empty = warm("worker", "--queue", queue, timeout=30)
    assert empty.returncode == 0, empty.stderr  # nothing queued: a bounded worker leaves at once


@pytest.mark.parametrize(("meta", "state"), [
    ({"state": "queued", "total": "5", "done": "5"}, "done"),
    ({"state": "queued", "total": "5", "done": "4"}, "queued"),
    ({"state": "planning", "total": "5", "done": "5", "beat": "now"}, "planning"),  # a beat just now
    ({"state": "planning", "total": "5", "done": "4", "beat": "0"}, "planning"),  # items left: still drained
    ({"state": "planning", "total": "5", "done": "5", "beat": "0"}, "stalled"),
])
def test_run_states(meta, state):
    now = time.time()  # at run time, not collection (xdist may run this minutes later)
    assert run_state({**meta, "beat": str(now)} if meta.get("beat") == "now" else meta, now) == state


def test_an_item_survives_the_stream_as_json():
    item = Item("/webgateway/get_thumbnails/?id=1&id=2", "thumb", "plate:7", (1, 2))
    assert decode(encode(item)) == item
