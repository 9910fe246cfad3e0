"""The benchmark commands at a tiny size: they run, stop what they start, and write the JSON they promise.

Speed 0 and one repeat: these tests prove the machinery, not the figures (those belong in the
report of a full run, docs/bench.md).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

from bench import commands
from bench.browser import chromium
from bench.clients import JQUERY_VERSION, ClientError, JQuery, Response, js_param, response_head, response_status, \
    unwrap_jsonp
from bench.scenarios.tiles import render_params
from tests.helpers import find_binary, script

TINY = ["--speed", "0", "--repeat", "1", "--workers", "4"]
RECORD_KEYS = {"target", "mode", "transport", "rtt_ms", "median_s", "p95_s", "min_s", "requests", "bytes",
               "backend_renders"}

needs_nginx = pytest.mark.skipif(find_binary("nginx") is None, reason="nginx not installed (make system-deps)")
needs_h2load = pytest.mark.skipif(find_binary("h2load") is None, reason="h2load not installed (make system-deps)")
needs_chromium = pytest.mark.skipif(chromium() is None, reason="Chromium not installed (make system-deps)")


def bench(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    done = subprocess.run([script("bench"), *args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def no_children_left(before: set[int]) -> None:
    """Every process the command started is gone (nothing leaked onto our ports)."""
    leaked = [pid for pid in _bench_children() if pid not in before]
    assert not leaked, f"processes left behind: {leaked}"


def _bench_children() -> set[int]:
    out = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"omero-edge-bench-" in text or b"bench.delayproxy" in text:
            out.add(int(cmdline.parent.name))
    return out


@pytest.mark.process
@needs_nginx
@pytest.mark.timeout(300)  # every target, mode and transport (the default is 120 s a test)
def test_plate_384_every_target_mode_and_transport(tmp_path: Path) -> None:
    before = _bench_children()
    out, png = tmp_path / "plate.json", tmp_path / "plate.png"
    done = bench("plate-384", *TINY, "--rtt", "0", "--transports", "h1,h2-tls", "--json", str(out), "--plot", str(png))
    doc = json.loads(out.read_text())
    results = doc["results"]
    cells = {(r["target"], r["mode"], r["transport"]) for r in results}
    assert cells == {(t, m, tr) for t in ("direct", "edge-cold", "edge-warm", "nginx-cold", "nginx-warm")
                     for m in ("webclient", "per-well") for tr in ("h1", "h2-tls") if (t, tr) != ("direct", "h2-tls")}
    for r in results:
        assert RECORD_KEYS <= r.keys() and "extra" not in r
        assert r["min_s"] <= r["median_s"] <= r["p95_s"]
        assert r["bytes"] > 0
    by = {(r["target"], r["mode"], r["transport"]): r for r in results}
    wells = by[("direct", "per-well", "h1")]["requests"] - 1
    assert 300 < wells <= 384
    assert by[("direct", "webclient", "h1")]["requests"] == 1 + -(-wells // 50)
    assert by[("edge-warm", "per-well", "h2-tls")]["backend_renders"] == 0       # warm means no backend work
    assert by[("edge-warm", "webclient", "h1")]["backend_renders"] == 0
    assert by[("edge-cold", "per-well", "h1")]["backend_renders"] >= wells       # cold means every thumbnail
    assert by[("nginx-warm", "per-well", "h1")]["backend_renders"] == 1         # IDR's nginx never caches the grid
    assert doc["settings"]["workers"] == 4 and doc["machine"]["cores"] >= 1
    assert png.stat().st_size > 1000
    assert "comparable" in done.stdout
    no_children_left(before)


@pytest.mark.process
@needs_nginx
def test_tiles_through_the_delay_proxy(tmp_path: Path) -> None:
    out = tmp_path / "tiles.json"
    bench("tiles", *TINY, "--rtt", "10", "--targets", "direct,edge-warm,nginx-cold", "--transports", "h2",
          "--json", str(out))
    results = json.loads(out.read_text())["results"]
    assert {r["target"] for r in results} == {"direct", "edge-warm", "nginx-cold"}
    for r in results:
        assert r["rtt_ms"] == 10 and r["mode"] == "viewer"
        assert r["requests"] > 10                       # image_data, the bird's-eye view, the tiles of six views
        assert r["min_s"] >= 0.010 * 3                  # handshake + image_data + at least one view, each ≥ 1 RTT
    assert next(r for r in results if r["target"] == "edge-warm")["backend_renders"] == 0


@pytest.mark.process
@needs_nginx
@needs_h2load
def test_hits_reports_throughput_latency_and_cpu(tmp_path: Path) -> None:
    out = tmp_path / "hits.json"
    bench("hits", "--speed", "0", "--requests", "300", "--concurrency", "1,20", "--interfaces", "asgi,rsgi",
          "--runs", "2", "--warmup", "100", "--json", str(out))
    report = json.loads(out.read_text())
    assert report["settings"]["runs"] == 2 and report["settings"]["warmup"] == 100
    results = report["results"]
    targets = ("edge-asgi", "edge-rsgi", "bare-asgi", "bare-rsgi", "nginx-static", "nginx-warm",
               "nginx-tls+edge-asgi", "nginx-tls+edge-rsgi")  # the default transport is h2-tls
    assert {(r["target"], r["concurrency"]) for r in results} == {(t, c) for t in targets for c in (1, 20)}
    for r in results:
        assert r["succeeded"] == 300 and r["backend_renders"] == 0
        assert r["req_per_s"] > 0 and r["p99_ms"] >= r["p50_ms"] > 0 and r["cpu_us_per_req"] >= 0
        assert r["req_per_s_vs_static"] > 0 and r["p99_vs_static"] > 0 and r["p99_vs_cache"] > 0
        # each figure is the median of the two timed runs, both kept
        assert r["runs"] == 2 and min(r["req_per_s_runs"]) <= r["req_per_s"] <= max(r["req_per_s_runs"])
        # every edge and bare row is compared with the bare app on its own interface; nginx rows are not
        assert ("req_per_s_vs_bare" in r) == r["target"].startswith(("edge-", "bare-"))
    assert all(r["req_per_s_vs_bare"] == 1.0 for r in results if r["target"].startswith("bare-"))


@pytest.mark.process
def test_warm_against_backend_capacity(tmp_path: Path) -> None:
    out = tmp_path / "warm.json"
    bench("warm", "--speed", "0", "--jobs", "4", "--json", str(out))
    [row] = json.loads(out.read_text())["results"]
    assert row["jobs"] == 4 and row["backend_renders"] >= row["images"]
    assert row["capacity_per_s"] > 0 and row["utilisation"] > 0


@pytest.mark.process
def test_help_explains_every_flag() -> None:
    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers())
    for name, sub in parser._subparsers._group_actions[0].choices.items():
        for action in sub._actions:
            assert action.help, f"bench {name} {action.option_strings} has no help"
    assert "--browser" in bench("plate-384", "--help").stdout


@pytest.mark.process
def test_bad_arguments_are_rejected_clearly() -> None:
    done = subprocess.run([script("bench"), "plate-384", "--targets", "edge-hot"], capture_output=True, text=True)
    assert done.returncode == 2 and "choose from direct" in done.stderr


def test_delay_proxy_adds_the_round_trip() -> None:
    async def scenario() -> float:
        async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            while data := await r.read(1024):
                w.write(data)
                await w.drain()
            w.close()

        from bench.delayproxy import serve
        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        target = server.sockets[0].getsockname()[1]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            listen = s.getsockname()[1]
        stop = asyncio.Event()
        proxy = asyncio.create_task(serve([(listen, target)], 0.025, stop))
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", listen)
        writer.write(b"a")
        await reader.readexactly(1)                     # first exchange pays the handshake RTT too
        start = time.perf_counter()
        writer.write(b"b")
        await reader.readexactly(1)
        elapsed = time.perf_counter() - start
        writer.close()
        stop.set()
        await proxy
        server.close()
        return elapsed

    assert 0.045 <= asyncio.run(scenario()) < 0.2


def test_hpack_status_without_dynamic_table() -> None:
    assert response_status(b"\x88") == 200                       # indexed :status 200
    assert response_status(b"\x20\x0d\x03302\x0f\x10\x03abc") == 302   # size update, literal :status, other header
    with pytest.raises(ClientError):
        response_status(b"\xbe")                                  # index 62: the dynamic table


@pytest.mark.process
@needs_nginx
@needs_chromium
def test_plate_384_in_headless_chromium(tmp_path: Path) -> None:
    """The bench page in headless Chromium, through an edge filled by `warm plate`: jQuery's JSONP requests
    (checked by the bench against the shapes below), every well's thumbnail, no backend request at all
    (the sim's /_sim/stats around the load)."""
    out = tmp_path / "browser.json"
    started = time.monotonic()
    bench("plate-384", "--browser", *TINY, "--rtt", "0", "--targets", "edge-warm", "--json", str(out))
    assert time.monotonic() - started < 60
    [record] = json.loads(out.read_text())["results"]
    assert record["target"] == "edge-warm" and record["transport"] == "h2-tls" and record["client"] == "chromium"
    assert record["backend_requests"] == 0 and record["backend_renders"] == 0 and record["median_s"] > 0
    assert 300 < record["wells"] <= 384 and record["thumbnails"] == record["wells"]
    assert record["requests"] == 1 + -(-record["wells"] // record["batch"]) and record["batch"] == 50
    assert record["jquery"] == JQUERY_VERSION and record["bytes"] > 0
    grid, batch = record["example_urls"]
    jsonp = r"callback=jQuery[0-9]+_([0-9]+)&_=([0-9]+)"
    grid_n, grid_ts = map(int, re.fullmatch(rf"/webgateway/plate/[0-9]+/0/\?{jsonp}", grid).groups())
    batch_match = re.fullmatch(rf"/webgateway/get_thumbnails/\?(?:id=[0-9]+&){{50}}{jsonp}", batch)
    name_n, batch_ts = map(int, batch_match.groups())
    assert grid_ts == grid_n + 1 and name_n == grid_n and batch_ts == grid_n + 2   # jQuery reuses the freed name
    assert abs(grid_n / 1000 - time.time()) < 120                                  # the counter starts at Date.now()


def test_jquery_urls_and_jsonp_answers() -> None:
    """bench's JQuery: the URLs a page's jQuery 3.7.1 makes for gs_json and cache:false, and the JSONP check."""
    jq = JQuery(now_ms=1_700_000_000_000, rng=random.Random(1))
    assert re.fullmatch(r"jQuery371[0-9]{12,20}", jq.expando)
    grid, name = jq.jsonp("/webgateway/plate/7/0/")
    assert grid == f"/webgateway/plate/7/0/?callback={jq.expando}_1700000000000&_=1700000000001"
    jq.done(name)
    batch, again = jq.jsonp("/webgateway/get_thumbnails/?" + js_param([("id", 1), ("id", 2)]))
    assert again == name and batch == f"/webgateway/get_thumbnails/?id=1&id=2&callback={name}&_=1700000000002"
    assert jq.jsonp("/webgateway/get_thumbnails/?id=3")[1] == f"{jq.expando}_1700000000003"
    assert jq.uncached("/iviewer/image_data/5/") == "/iviewer/image_data/5/?_=1700000000005"
    assert unwrap_jsonp(Response(200, b'cb({"a": 1})', b"application/javascript"), "cb") == b'{"a": 1}'
    assert unwrap_jsonp(Response(200, b'{"a": 1}', b"application/json"), "cb") is None
    assert unwrap_jsonp(Response(200, b'other({"a": 1})', b"application/javascript"), "cb") is None
    assert response_head(b"\x88\x5f\x16application/javascript") == (200, b"application/javascript")


def test_iviewer_tile_query_as_a_browser_sends_it() -> None:
    """Active channels only in c, one maps entry each (quantization only off linear, coefficient only off
    linear and logarithmic), numbers as JavaScript writes them, the query escaped as Chromium escapes it."""
    window, linear = {"start": 0.0, "end": 255.0}, {"family": "linear", "coefficient": 1.0}
    img = {"channels": [
        {"active": True, "window": window, "color": "FF0000", "inverted": False, **linear},
        {"active": False, "window": window, "color": "00FF00", "inverted": None, **linear},
        {"active": True, "window": {"start": 10.5, "end": 1e6}, "color": "0000FF", "lut": "cool.lut", "inverted": True,
         "family": "exponential", "coefficient": 2.0},
        {"active": True, "window": window, "color": "FFFFFF", "inverted": None, "family": "logarithmic",
         "coefficient": 1.5}],
        "rdefs": {"model": "color", "projection": "normal"}}
    assert render_params(img) == (
        "c=1|0:255$FF0000,3|10.5:1000000$cool.lut,4|0:255$FFFFFF"
        "&maps=[{%22inverted%22:{%22enabled%22:false}},"
        "{%22inverted%22:{%22enabled%22:true},%22quantization%22:{%22family%22:%22exponential%22,%22coefficient%22:2}},"
        "{%22inverted%22:{%22enabled%22:false},%22quantization%22:{%22family%22:%22logarithmic%22}}]"
        "&m=c&p=normal&q=0.9")
