"""`bench browse` at a tiny size: every target and RTT row, the webclient's requests, and who sends what
to the backend (speed 0, one repeat: the machinery and the invariants, not the figures)."""
from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from bench.clients import Response, Tally
from bench.scenarios.browse import CLICKS, NEVER_CACHED, Visit, recache_urls
from tests.test_bench import TINY, bench, needs_nginx, no_children_left, _bench_children

TARGETS = ("direct", "edge-cold", "edge-warm", "nginx-cold", "nginx-warm", "nginx-recache")


class Recorder:
    """A Session that answers 200 with `{}` and records the URLs (no server)."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    async def get_many(self, paths: list[str]) -> list[Response]:
        self.urls += paths
        return [Response(200, b"{}", b"application/json") for _ in paths]


def test_every_jquery_get_carries_a_fresh_underscore_last() -> None:
    session = Recorder()
    v = Visit(session, 2, frozenset({3}))              # type: ignore[arg-type]
    asyncio.run(v.ajax_many(v.panels("image", 7)))
    asyncio.run(v.thumbnails([1, 2, 3, 4, 5]))
    counters = [int(re.search(r"[?&]_=(\d+)$", url).group(1)) for url in session.urls]
    assert len(set(counters)) == len(counters) == 5
    assert session.urls[0].startswith("/webclient/metadata_details/image/7/?_=")
    assert session.urls[1].startswith("/webclient/api/annotations/?type=map&parents=true&image=7&_=")
    assert session.urls[2].startswith("/webclient/get_thumbnails/?id=1&id=2&_=")
    assert v.placeholders == 1 and v.tally.requests == 5 and isinstance(v.tally, Tally)


def test_recache_urls_are_idr_s_without_underscore() -> None:
    urls = recache_urls({"screen": 1, "plate": 2, "well": 3, "image": 4, "project": 5, "dataset": 6, "ds-image": 7})
    assert urls[0] == "/webclient/api/annotations/?type=map&parents=true&screen=1"
    assert urls[-1] == "/webclient/api/annotations/?type=map&parents=true&image=7"
    assert not any("_=" in u for u in urls)


@pytest.mark.process
@pytest.mark.timeout(300)  # six targets' servers on a loaded machine (the default is 120 s a test)
@needs_nginx
def test_browse_every_target_and_rtt(tmp_path: Path) -> None:
    before = _bench_children()
    out = tmp_path / "browse.json"
    # one RTT keeps the suite short; every target at 0 and 20 ms is the docs/bench.md run
    done = bench("browse", *TINY, "--rtt", "10", "--transports", "h2", "--json", str(out), timeout=300)
    doc = json.loads(out.read_text())
    results = doc["results"]
    assert {(r["target"], r["rtt_ms"]) for r in results} == {(t, 10) for t in TARGETS}
    picked, placeholders = doc["settings"]["picked"], doc["settings"]["placeholder_batches"]
    assert set(picked) == {"screen", "plate", "well", "image", "project", "dataset", "ds-image"}
    by = {(r["target"], r["rtt_ms"]): r for r in results}
    visit = by[("direct", 10)]
    for r in results:
        assert list(r["steps_ms"]) == list(CLICKS)
        assert r["requests"] == visit["requests"] > 20           # every target got the same visit
        assert r["median_s"] * 1000 >= sum(r["steps_ms"].values()) * 0.99
        assert r["backend_never_cached"] == len(NEVER_CACHED)    # the page and getImgRDef, every time
        assert "speedup_vs_direct" in r and set(r["steps_speedup_vs_direct"]) == set(CLICKS)
        if r["rtt_ms"] == 10:
            assert r["steps_ms"]["tabs"] >= 3 * 10               # three tabs opened in turn, ≥ 1 RTT each
    cold = visit["backend_cacheable"]
    assert cold > 20
    for rtt in (10,):
        assert by[("edge-warm", rtt)]["backend_cacheable"] == 0             # warm: only the never-cached page
        assert by[("edge-warm", rtt)]["backend_requests"] == len(NEVER_CACHED) + placeholders
        assert by[("edge-cold", rtt)]["backend_cacheable"] == cold
        assert by[("nginx-cold", rtt)]["backend_cacheable"] == cold
        # IDR's key keeps the `&` before `_=`: recache.py's entries (no `_`) are never hit by a browser
        assert by[("nginx-recache", rtt)]["backend_cacheable"] == cold
        # a previous visitor's JSON and panels hit; load_plate, open_with, the well's children and the
        # JSONP grid and batches (a new callback per visit) still reach the backend
        warm = by[("nginx-warm", rtt)]
        assert 0 < warm["backend_cacheable"] < cold
        assert {"webclient:load_plate", "open_with", "well_children", "plate"} <= set(warm["backend_by_endpoint"])
        assert not any(k.startswith("webclient:api_") or k.startswith("webclient:metadata_")
                       for k in warm["backend_by_endpoint"])
    assert "ds-tabs" in done.stdout
    no_children_left(before)
