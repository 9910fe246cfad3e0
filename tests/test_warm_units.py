"""Unit tests of the warmer's pure parts: URLs per object, iviewer parameters, shards, dates, journal."""
from __future__ import annotations

import asyncio
import time

import pytest

from edge.keys import key_for
from warm.dates import BadDate, omero_time, parse_date
from warm.journal import Journal, scrub
from warm.model import API, GRID, IMGDATA, OK, SKIP, THUMB, Item, Outcome, PlateLayout, Ref, Retryable
from warm.plan import Planner, api_pages
from warm import retry as retry_module
from warm import runner as runner_module
from warm.runner import Runner
from warm.shard import BadShard, Shard
from warm.tiles import BadLevels, js_number, parse_levels, render_params, tile_urls

IMG = {
    "tiles": True, "size": {"width": 8192, "height": 6000, "z": 5, "t": 1},
    "zoomLevelScaling": {"0": 1.0, "1": 0.5, "2": 0.25, "3": 0.125},
    "rdefs": {"model": "color", "projection": "normal", "defaultZ": 2, "defaultT": 0},
    "channels": [
        {"active": True, "color": "0000FF", "window": {"start": 60.0, "end": 1800.5}, "family": "linear",
         "coefficient": 1.0, "inverted": False},
        {"active": True, "color": "00FF00", "lut": "cool.lut", "window": {"start": 10, "end": 200},
         "family": "exponential", "coefficient": 2.0, "inverted": True},
        {"active": False, "color": "FF0000", "window": {"start": 0.0, "end": 4095.0}, "family": "logarithmic",
         "coefficient": 1.0},
    ],
}


def test_render_params_are_iviewers():
    params = dict(render_params(IMG))
    # iviewer lists only the active channels, one `maps` entry each (Image.js:262-300; tests/test_warm_clients.py)
    assert params["c"] == "1|60:1800.5$0000FF,2|10:200$cool.lut"
    assert params["maps"] == ('[{"inverted":{"enabled":false}},{"inverted":{"enabled":true},'
                              '"quantization":{"family":"exponential","coefficient":2}}]')
    assert (params["m"], params["p"], params["q"]) == ("c", "normal", "0.9")
    assert js_number(1.0) == "1" and js_number(0.25) == "0.25" and js_number(7) == "7"


def test_tile_urls_cover_the_lowest_levels_first():
    urls = tile_urls(42, IMG, parse_levels("2"))
    # level 3: 1024x750 → 2x2 tiles of 512; level 2: 2048x1500 → 4x3
    assert len(urls) == 4 + 12
    assert urls[0].startswith("/webgateway/render_image_region/42/2/0/?tile=3,0,0,512,512&c=")
    assert urls[4].split("&")[0].endswith("tile=2,0,0,512,512")
    assert len(tile_urls(42, IMG, parse_levels("3,1"))) == 4 + 8 * 6  # level 1: 4096x3000
    small = {**IMG, "tiles": False, "size": {"width": 672, "height": 512, "z": 1, "t": 1}}
    assert [u.split("?")[0] for u in tile_urls(7, small, parse_levels("2"))] == ["/webgateway/render_image/7/0/0/"]
    # the warmed URL and the viewer's own (its order, a cache-buster) share one cache key
    viewer = urls[0] + "&_=1700000000000"
    assert key_for(urls[0].split("?")[0], urls[0].split("?")[1].encode()) == \
        key_for(viewer.split("?")[0], viewer.split("?")[1].encode())
    with pytest.raises(BadLevels):
        parse_levels("0")
    with pytest.raises(BadLevels):
        parse_levels("4-2")


def test_plate_plan_grids_runs_batches_and_pages():
    layout = PlateLayout(wells=384, fields=[list(range(1, 121)), list(range(121, 241))],
                         acquisitions=[(61, 1), (62, 1)])
    items = list(Planner(frozenset({API, GRID, THUMB})).plan(Ref("plate", 5), layout))
    urls = [i.url for i in items]
    assert urls[:3] == ["/api/v0/m/plates/5/wells/", "/api/v0/m/plates/5/wells/?limit=200&offset=200",
                        "/api/v0/m/plates/5/plateacquisitions/"]
    assert [u for u in urls if "/plate/5/" in u] == ["/webgateway/plate/5/0/", "/webgateway/plate/5/1/",
                                                    "/webgateway/plate/5/0/61/", "/webgateway/plate/5/0/62/"]
    batches = [i for i in items if i.kind == THUMB]
    assert [len(b.ids) for b in batches] == [50, 50, 20, 50, 50, 20]
    assert batches[0].url == "/webgateway/get_thumbnails/?" + "&".join(f"id={i}" for i in range(1, 51))
    assert {i.obj for i in items} == {"plate:5"}
    # an image already batched (another field or a run's grid) is not batched again
    again = PlateLayout(wells=1, fields=[[1, 2], [2, 3]])
    assert [b.ids for b in Planner(frozenset({THUMB})).plan(Ref("plate", 6), again)] == [(1, 2), (3,)]
    assert [i.kind for i in Planner(frozenset({IMGDATA})).plan(Ref("plate", 6), again)] == [IMGDATA] * 6  # + image_data


def test_api_pages_use_the_clients_page_size():
    assert list(api_pages("/api/v0/m/screens/", "", 0)) == ["/api/v0/m/screens/"]
    assert list(api_pages("/api/v0/m/images/", "orphaned=true", 401)) == [
        "/api/v0/m/images/?orphaned=true", "/api/v0/m/images/?orphaned=true&limit=200&offset=200",
        "/api/v0/m/images/?orphaned=true&limit=200&offset=400"]
    assert list(api_pages("/api/v0/m/screens/", "", 10, limit=5)) == [
        "/api/v0/m/screens/?limit=5", "/api/v0/m/screens/?limit=5&offset=5"]


def test_shards_split_objects_deterministically():
    names = [f"plate:{i}" for i in range(1000)]
    owners = [[n for n in names if Shard(k, 3).owns(n)] for k in (1, 2, 3)]
    assert sorted(sum(owners, [])) == sorted(names) and all(250 < len(o) < 420 for o in owners)
    assert str(Shard.parse("2/3")) == "2/3"
    for bad in ("0/2", "3/2", "1", "a/b", "1/0"):
        with pytest.raises(BadShard):
            Shard.parse(bad)


def test_dates():
    assert parse_date("2024-05-01T00:00:00+00:00") == 1714521600
    assert parse_date("1714521600") == 1714521600
    assert parse_date("7d", now=1_000_000) == 1_000_000 - 7 * 86400
    assert omero_time(1714521600000) == 1714521600 and omero_time(None) is None
    with pytest.raises(BadDate):
        parse_date("yesterday-ish")


def test_journal_resume_and_scrubbed_command_line(tmp_path):
    j = Journal(tmp_path / "j.sqlite")
    info = j.start(["all", "--token", "secret", "--edge=http://e", "--token=s2", "--resume", "x"], "1/2")
    assert info.argv == ["all", "--edge=http://e"] and info.state == "running"
    j.record(Item("/a", API, "screen:1"), Outcome(OK, 200), 1, 3.0)
    j.record(Item("/b", THUMB, "plate:2"), Outcome("fail", 502, "backend answered 502"), 4, 9.0)
    j.record_object("screen:1")
    j.finish("interrupted")
    j.close()
    again = Journal(tmp_path / "j.sqlite")
    resumed = again.start([], "1/2", resume=info.id[:10])
    assert resumed.id == info.id and again.state("/a") == OK and again.state("/b") == "fail"
    assert again.state("/c") is None and again.object_done("screen:1") and again.has_failures("plate:2")
    assert again.totals(info.id) == {API: {OK: 1, SKIP: 0, "fail": 0}, THUMB: {OK: 0, SKIP: 0, "fail": 1}}
    assert again.failures(info.id, 10) == [("plate:2", "/b", 502, "backend answered 502")]
    assert scrub(["x", "--token", "t", "--resume=1"]) == ["x"]


class FlakyTarget:
    """Fails every item's first two attempts with a 503, answers the third."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.inflight = self.peak = 0

    async def warm(self, item: Item) -> Outcome:
        self.calls[item.url] = self.calls.get(item.url, 0) + 1
        self.inflight += 1
        self.peak = max(self.peak, self.inflight)
        await asyncio.sleep(0.001)
        self.inflight -= 1
        if self.calls[item.url] < 3:
            raise Retryable(503, "busy")
        return Outcome(OK, 200, fetched=1)


def test_runner_retries_then_records_and_never_exceeds_jobs(monkeypatch):
    monkeypatch.setattr(runner_module, "PAUSE_CAP", 0.005)
    monkeypatch.setattr(retry_module, "CAP", 0.005)

    async def go(retries: int) -> tuple[list, FlakyTarget]:
        target, done = FlakyTarget(), []
        runner = Runner(target, jobs=3, retries=retries, rate=None, done=lambda *a: done.append(a))

        async def feed(queue):
            for i in range(12):
                await queue.put(Item(f"/{i}", THUMB, "x"))

        await runner.run(feed)
        return done, target

    done, target = asyncio.run(go(retries=2))
    assert len(done) == 12 and {d[1].state for d in done} == {OK} and {d[2] for d in done} == {3}
    assert target.peak <= 3
    done, _ = asyncio.run(go(retries=1))
    assert {(d[1].state, d[1].status, d[2]) for d in done} == {("fail", 503, 2)}


def test_rate_limit_spaces_requests(monkeypatch):
    monkeypatch.setattr(runner_module, "PAUSE_CAP", 0.005)
    monkeypatch.setattr(retry_module, "CAP", 0.005)

    async def go() -> float:
        runner = Runner(FlakyTarget(), jobs=4, retries=2, rate=200.0, done=lambda *a: None)
        started = time.monotonic()

        async def feed(queue):
            for i in range(10):
                await queue.put(Item(f"/{i}", THUMB, "x"))

        await runner.run(feed)
        return time.monotonic() - started

    assert asyncio.run(go()) >= 29 / 200  # 30 attempts at 200/s
