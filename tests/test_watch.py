"""`edge watch` against a real PostgreSQL holding OMERO's eventlog: what each change purges (soft or hard),
gaps in ids, its position across restarts (file and Redis), a database that goes down and comes back, a
burst the size of a screen import (lag and throughput printed), and end to end: the simulator journals its
writes there (`bench sim --db`) as OMERO does, made straight at OMERO (as OMERO.insight would), and the edge
in front stops answering what they changed.
"""
from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import tempfile
import time
from contextlib import closing
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from bench.sim.omerodb import SCHEMA
from edge.purge import SOFT, PurgeRegistry
from edge.watch import Position
from tests.helpers import Launcher, free_port, script, start_sim, wait_until
from tests.helpers.launch import PURGE_TOKEN
from tests.helpers.postgres import Postgres
from tests.helpers.procs import Proc

pytestmark = pytest.mark.process
_names = itertools.count()
ALICE_IMAGE, DS_ALICE, PUBLIC_GROUP, LAB_A = 1001970, 204, 3, 4  # the small data set (docs/sim.md)


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    pg = Postgres()
    yield pg
    pg.stop()


@pytest.fixture
def dsn(postgres: Postgres) -> str:
    """A fresh database with OMERO's tables (the part the watcher and the sim use)."""
    name = f"omero_{os.getpid()}_{next(_names)}"
    with psycopg.connect(postgres.dsn, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    url = postgres.dsn.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(SCHEMA)
    return url


def log_events(dsn: str, *changes: tuple[str, str, int], ids: list[int] | None = None) -> list[int]:
    """One OMERO event with these (action, class, id) eventlog rows; explicit eventlog ids if given."""
    with psycopg.connect(dsn, autocommit=True) as db, db.transaction():
        event = db.execute("INSERT INTO event (time) VALUES (localtimestamp) RETURNING id").fetchone()[0]
        out = []
        for n, (action, cls, ident) in enumerate(changes):
            row = db.execute("INSERT INTO eventlog (id, action, entitytype, entityid, event) VALUES "
                             "(coalesce(%s, nextval('eventlog_id_seq')), %s, %s, %s, %s) RETURNING id",
                             (ids[n] if ids else None, action, f"ome.model.{cls}", ident, event)).fetchone()[0]
            out.append(row)
        return out


def watch(*args: str, cache_dir: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([script("edge"), "watch", "--cache-dir", cache_dir, *args], capture_output=True,
                          text=True, timeout=timeout)


def purged(cache_dir: str) -> dict[str, int]:
    """The purge state the edges of this node read: tag (soft ones prefixed ~) → sequence number."""
    return dict(PurgeRegistry(cache_dir).purged)


def test_position_keeps_gaps_until_they_commit_or_time_out():
    pos = Position(10)
    assert pos.advance([11, 14, 15], now=100.0, gap_seconds=60) == 0
    assert (pos.after, sorted(pos.gaps)) == (15, [12, 13])
    pos.advance([13], now=110.0, gap_seconds=60)          # a late commit fills its gap
    assert sorted(pos.gaps) == [12]
    assert pos.advance([16], now=161.0, gap_seconds=60) == 1   # 12 never came: rolled back
    assert (pos.after, pos.gaps) == (16, {})
    pos.advance([16 + 20_000], now=162.0, gap_seconds=60)      # a sequence jump is not 20k transactions
    assert pos.gaps == {} and Position.loads(pos.dumps()) == pos


def test_each_change_purges_its_objects_soft_or_hard(dsn: str, tmp_path):
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute("INSERT INTO pixels VALUES (501, 50); INSERT INTO renderingdef VALUES (601, 501, 701);"
                   "INSERT INTO thumbnail VALUES (801, 501); INSERT INTO channel VALUES (901, 501, 911);"
                   "INSERT INTO datasetimagelink VALUES (1, 7, 50); INSERT INTO well VALUES (30, 3);"
                   "INSERT INTO wellsample VALUES (40, 30, 60, 8); INSERT INTO imageannotationlink VALUES (5, 70, 99);"
                   "INSERT INTO screenplatelink VALUES (2, 9, 3)")
    cache = str(tmp_path / "cache")
    assert watch("--db", dsn, "--from", "0", "--once", cache_dir=cache).returncode == 0   # nothing yet
    log_events(dsn, ("UPDATE", "display.RenderingDef", 601), ("UPDATE", "display.QuantumDef", 701),
               ("INSERT", "display.Thumbnail", 801), ("UPDATE", "core.LogicalChannel", 911),
               ("UPDATE", "annotations.MapAnnotation", 99),       # linked to image 70
               ("UPDATE", "core.Image", 60),                      # chgrp/chown show as updates: hard, containers too
               ("DELETE", "containers.Dataset", 12), ("DELETE", "screen.ScreenPlateLink", 2),
               ("INSERT", "meta.Session", 1), ("REINDEX", "core.Image", 61),  # ignored
               ("DELETE", "display.RenderingDef", 999))          # its rows are gone: unresolved
    done = watch("--db", dsn, "--once", cache_dir=cache)
    assert done.returncode == 0, done.stderr
    state = purged(cache)
    assert {t for t in state if t.startswith(SOFT)} == {SOFT + "image:50", SOFT + "image:70"}
    hard = {t for t in state if not t.startswith(SOFT)}
    assert hard == {"image:60", "well:30", "plate:3", "plateacquisition:8", "dataset:12", "screen:9"}
    assert re.search(r"caught up at eventlog id \d+: 8 changes purged \(6 hard, 2 soft tags\), 2 ignored, "
                     r"1 unresolved", done.stderr), done.stderr


def test_gaps_are_read_when_they_commit_and_the_position_survives_restarts(dsn: str, tmp_path):
    cache = str(tmp_path / "cache")
    assert watch("--db", dsn, "--once", cache_dir=cache).returncode == 0       # starts now: id 0
    log_events(dsn, ("UPDATE", "core.Image", 1), ("UPDATE", "core.Image", 4), ids=[1, 4])  # 2, 3 in flight
    assert watch("--db", dsn, "--once", cache_dir=cache).returncode == 0
    position = json.loads(open(os.path.join(cache, "watch.position")).read())
    assert (position["after"], sorted(position["gaps"])) == (4, ["2", "3"])
    log_events(dsn, ("UPDATE", "core.Image", 3), ids=[3])                     # a long transaction commits late
    assert watch("--db", dsn, "--once", cache_dir=cache).returncode == 0
    assert {"image:1", "image:3", "image:4"} <= set(purged(cache)) and "image:2" not in purged(cache)
    seq = purged(cache)["image:1"]
    assert watch("--db", dsn, "--once", cache_dir=cache).returncode == 0       # nothing new: nothing re-purged
    assert purged(cache)["image:1"] == seq


def test_position_in_redis_and_purges_seen_by_a_running_edge(dsn: str, redis_server, tmp_path):
    """With Redis the position is kept there, beside the purge state every node follows."""
    url = redis_server.url.rsplit("/", 1)[0] + "/11"
    cache = str(tmp_path / "cache")
    assert watch("--db", dsn, "--redis", url, "--once", cache_dir=cache).returncode == 0
    log_events(dsn, ("UPDATE", "core.Image", 5))
    assert watch("--db", dsn, "--redis", url, "--once", cache_dir=cache).returncode == 0
    import redis
    client = redis.Redis.from_url(url)
    assert json.loads(client.get("edge:11:watch:position"))["after"] >= 1
    assert b"image:5" in client.hgetall("edge:11:purge:tags")
    assert not os.path.exists(os.path.join(cache, "watch.position"))


def test_bad_settings_are_one_line_errors(tmp_path, postgres: Postgres):
    cache = str(tmp_path / "cache")
    for args, message in ((("--once",), "needs watch_db"), (("--db", "mysql://x/y"), "postgresql:// URL"),
                          (("--db", postgres.dsn, "--from", "later"), "--from must be now or"),
                          (("--db", postgres.dsn, "--once"), "no eventlog/event tables")):
        done = watch(*args, cache_dir=cache)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr


def _follower(launcher: Launcher, dsn: str, cache: str, *args: str) -> tuple[Proc, str]:
    metrics = free_port()
    proc = launcher.start([script("edge"), "watch", "--db", dsn, "--cache-dir", cache, "--metrics-bind",
                           f"127.0.0.1:{metrics}", *args], name="watch", ports=[metrics])
    return proc, f"http://127.0.0.1:{metrics}/metrics"


def _metric(url: str, name: str) -> float:
    found = re.search(rf"^{name} ([0-9.e+-]+)$", httpx.get(url, timeout=5).text, re.M)
    return float(found.group(1)) if found else float("nan")


def test_a_database_that_goes_down_and_comes_back(postgres: Postgres, dsn: str, tmp_path):
    cache, launcher = str(tmp_path / "cache"), Launcher()
    try:
        proc, metrics = _follower(launcher, dsn, cache)
        wait_until(lambda: _metric(metrics, "edge_watch_db_up") == 1, 20)
        postgres.pause()
        try:
            wait_until(lambda: _metric(metrics, "edge_watch_db_up") == 0, 20, message="the watcher saw no outage")
        finally:
            postgres.start()
        log_events(dsn, ("DELETE", "core.Image", 77))
        wait_until(lambda: "image:77" in purged(cache), 40, message="no purge after the database came back")
        assert proc.alive()
        assert "watch paused" in proc.log() and "answers again" in proc.log()
    finally:
        launcher.stop_all()


def test_a_burst_the_size_of_a_screen_import(dsn: str, tmp_path):
    """20,000 images imported (Image, Pixels, RenderingDef, Thumbnail, WellSample each: 100,000 rows) and
    2,000 rendering changes, committed at once while the watcher follows."""
    images, changes = 20_000, 2_000
    cache, launcher = str(tmp_path / "cache"), Launcher()
    try:
        proc, metrics = _follower(launcher, dsn, cache)
        wait_until(lambda: _metric(metrics, "edge_watch_db_up") == 1, 20)
        with psycopg.connect(dsn, autocommit=True) as db, db.transaction():
            for table, columns in (("pixels", "i, i"), ("renderingdef", "i, i, NULL"), ("thumbnail", "i, i"),
                                   ("well", "i, 1 + i / 1536"), ("wellsample", "i, i, i, NULL")):
                db.execute(f"INSERT INTO {table} SELECT {columns} FROM generate_series(1, %s) i", (images,))
            db.execute("INSERT INTO event (time) VALUES (localtimestamp)")
            for cls in ("core.Image", "core.Pixels", "display.RenderingDef", "display.Thumbnail", "screen.WellSample"):
                db.execute("INSERT INTO eventlog (action, entitytype, entityid, event) SELECT 'INSERT', %s, i, "
                           "currval('event_id_seq') FROM generate_series(1, %s) i", (f"ome.model.{cls}", images))
            db.execute("INSERT INTO eventlog (action, entitytype, entityid, event) SELECT 'UPDATE', "
                       "'ome.model.display.RenderingDef', i, currval('event_id_seq') FROM generate_series(1, %s) i",
                       (changes,))
            newest = db.execute("SELECT max(id) FROM eventlog").fetchone()[0]
        committed = time.monotonic()
        wait_until(lambda: _metric(metrics, "edge_watch_position") >= newest, 120, interval=0.05,
                   message="the watcher fell behind")
        took = time.monotonic() - committed
        rows = images * 5 + changes
        state = purged(cache)
        assert f"image:{images}" in state and f"well:{images}" in state
        print(f"\nburst: {rows} eventlog rows ({images} images imported, {changes} rendering changes) "
              f"purged in {took:.2f} s = {rows / took:,.0f} rows/s; {len(state)} tags; "
              f"watcher lag after: {_metric(metrics, 'edge_watch_lag_seconds'):.2f} s, "
              f"behind {_metric(metrics, 'edge_watch_behind_events'):.0f}")
        assert _metric(metrics, "edge_watch_behind_events") == 0
    finally:
        launcher.stop_all()


# ---- end to end: the sim journals its writes, the edge in front stops answering what changed --------------------
@pytest.fixture
def omero(dsn: str, redis_server) -> Iterator[tuple]:
    """The sim writing OMERO's eventlog, an edge in verified mode in front, `edge watch` on the edge's node."""
    sim = start_sim("--db", dsn, redis_url=redis_server.url)
    launcher = Launcher(sim)
    try:
        edge = launcher.edge("--access", "verified", "--session-redis", redis_server.url)
        _, metrics = _follower(launcher, dsn, edge.cache_dir)
        wait_until(lambda: _metric(metrics, "edge_watch_db_up") == 1, 20)
        yield sim, edge, metrics
    finally:
        launcher.stop_all()
        sim.stop()


def _browser(sim, edge, name: str) -> httpx.Client:
    with closing(sim.login(name)) as session:
        return httpx.Client(base_url=edge.url, cookies=session.cookies, timeout=20)


def test_settings_saved_straight_at_omero_reach_the_edge(omero):
    """alice saves new rendering settings past the edge: her cached thumbnail is soft-purged (stale while one
    refresh runs), then the new bytes."""
    sim, edge, metrics = omero
    path = f"/webgateway/render_thumbnail/{ALICE_IMAGE}/"
    alice = _browser(sim, edge, "alice")
    old = alice.get(path)
    assert alice.get(path).headers["x-edge-cache"] == "HIT"
    with closing(sim.login("alice")) as insight:
        saved = insight.post(f"/webgateway/saveImgRDef/{ALICE_IMAGE}/", params={"c": "1|0:255$00FF00", "m": "c"})
        assert saved.text == "true"
        new = insight.get(path).content
    written = time.monotonic()
    assert new != old.content
    seen = wait_until(lambda: (r := alice.get(path)).headers["x-edge-cache"] != "HIT" and r, 15,
                      message="the edge still answers the old thumbnail as a HIT")
    took = time.monotonic() - written
    assert seen.headers["x-edge-cache"] in ("STALE", "MISS")
    wait_until(lambda: alice.get(path).content == new, 10, message="the new thumbnail never came")
    print(f"\nsaveImgRDef at OMERO → edge answers STALE/MISS after {took * 1000:.0f} ms "
          f"(watcher lag metric {_metric(metrics, 'edge_watch_lag_seconds'):.2f} s)")


def test_a_move_out_of_the_public_group_stops_public_answers(omero):
    """alice moves her dataset into the public group and back, straight at OMERO: the public audience gets the
    image while it is public and the backend's refusal as soon as it is not (a hard purge)."""
    sim, edge, _ = omero
    path = f"/webgateway/render_thumbnail/{ALICE_IMAGE}/"
    with closing(sim.login("alice")) as insight, edge.client() as anon:
        assert anon.get(path).status_code == 404
        moved = insight.post("/webclient/chgrp/", data={"group_id": str(PUBLIC_GROUP), "Dataset": str(DS_ALICE)})
        assert moved.status_code == 200, moved.text
        wait_until(lambda: anon.get(path).status_code == 200, 15, message="the public never saw the moved image")
        assert anon.get(path).headers["x-edge-cache"] == "HIT"
        back = insight.post("/webclient/chgrp/", data={"group_id": str(LAB_A), "Dataset": str(DS_ALICE)})
        assert back.status_code == 200
        written = time.monotonic()
        gone = wait_until(lambda: (r := anon.get(path)).status_code != 200 and r, 15,
                          message="the edge still answers the public for an image that left the public group")
        print(f"\nchgrp out of public at OMERO → public answer {gone.status_code} after "
              f"{(time.monotonic() - written) * 1000:.0f} ms")
        assert gone.status_code == 404 and gone.headers["x-edge-cache"] == "MISS"


def test_purges_sent_to_edges_by_http(dsn: str, tmp_path):
    """--edge: nodes that share no directory or Redis are told by POST /_edge/purge."""
    sim = start_sim()
    launcher = Launcher(sim)
    try:
        edge = launcher.edge()
        path = f"/webgateway/render_thumbnail/{sim.info['public_images'][0]}/"
        edge.get(path)
        assert edge.get(path).headers["x-edge-cache"] == "HIT"
        cache = tempfile.mkdtemp(prefix="watch-")
        assert watch("--db", dsn, "--once", cache_dir=cache).returncode == 0
        log_events(dsn, ("DELETE", "core.Image", sim.info["public_images"][0]))
        env = {**os.environ, "EDGE_PURGE_TOKEN": PURGE_TOKEN}
        done = subprocess.run([script("edge"), "watch", "--db", dsn, "--cache-dir", cache, "--edge", edge.url,
                               "--once"], capture_output=True, text=True, timeout=60, env=env)
        assert done.returncode == 0, done.stderr
        assert edge.get(path).headers["x-edge-cache"] == "MISS"
    finally:
        launcher.stop_all()
        sim.stop()
