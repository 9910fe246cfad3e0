"""`warm follow` re-warms what the edge purged (issue 15.3): the purge list endpoint, then the CLI end to end."""
from __future__ import annotations

import json

import httpx
import pytest

from edge.protocol import WARM_HEADER
from tests.helpers.launch import PURGE_TOKEN
from tests.helpers.warm import TOKEN, warm

pytestmark = pytest.mark.process


def purge(edge, body: dict) -> None:
    r = httpx.post(edge.url + "/_edge/purge", json=body, headers={"authorization": f"Bearer {PURGE_TOKEN}"},
                   timeout=15)
    assert r.status_code == 200, r.text


def test_the_purge_list_needs_the_warm_token_and_pages(sim, edges):
    edge = edges(env={"EDGE_WARM_TOKEN": TOKEN})
    assert httpx.get(edge.url + "/_edge/purges", timeout=15).status_code == 401
    start = httpx.get(edge.url + "/_edge/purges", params={"after": 0}, headers={WARM_HEADER: TOKEN}).json()["seq"]
    purge(edge, {"image": [1, 2]})
    purge(edge, {"plate": [3], "soft": True})
    listed = httpx.get(edge.url + "/_edge/purges", params={"after": start, "limit": 2},
                       headers={WARM_HEADER: TOKEN}, timeout=15).json()
    assert [(p["tag"], p["soft"]) for p in listed["purges"]] == [("image:1", False), ("image:2", False)]
    assert listed["more"] is True and listed["seq"] == start + 2
    rest = httpx.get(edge.url + "/_edge/purges", params={"after": listed["purges"][-1]["seq"]},
                     headers={WARM_HEADER: TOKEN}, timeout=15).json()
    assert [(p["tag"], p["soft"]) for p in rest["purges"]] == [("plate:3", True)] and rest["more"] is False
    bad = httpx.get(edge.url + "/_edge/purges", params={"after": "x"}, headers={WARM_HEADER: TOKEN}, timeout=15)
    assert bad.status_code == 400
    assert httpx.get(edge.url + "/_edge/health", timeout=15).json()["purges"]["seq"] == start + 2


def test_follow_rewarms_purged_images_from_its_position(sim, edges, tmp_path):
    edge = edges(env={"EDGE_WARM_TOKEN": TOKEN})
    images = sim.info["public_images"][:3]
    with edge.client() as c:
        assert {c.get(f"/webgateway/render_thumbnail/{i}/").headers["x-edge-cache"] for i in images} == {"MISS"}
    state = tmp_path / "follow.json"
    common = ["--edge", edge.url, "--journal", str(tmp_path / "j.sqlite"), "--state", str(state), "--progress", "none"]
    first = warm("follow", "--once", *common)  # no state: starts at the newest purge, nothing to do
    assert first.returncode == 0, first.stderr
    after = json.loads(state.read_text())["after"] if state.exists() else None
    purge(edge, {"image": images[:2]})
    sim.reset()
    done = warm("follow", "--once", "--from", "0", *common)
    assert done.returncode == 0, done.stderr
    assert "2 purges after" in done.stderr, done.stderr
    assert sim.stats()["requests"].get("get_thumbnails", 0) >= 1  # re-warmed as a batch, through the edge
    with edge.client() as c:
        assert [c.get(f"/webgateway/render_thumbnail/{i}/").headers["x-edge-cache"] for i in images] == ["HIT"] * 3
    kept = json.loads(state.read_text())["after"]
    assert after is None or kept > after
    sim.reset()
    again = warm("follow", "--once", *common)  # from the kept position: nothing new
    assert again.returncode == 0 and "purges after" not in again.stderr
    assert sim.stats()["total"]["requests"] == 0
    bad = warm("follow", "--once", "--from", "soon", "--state", str(tmp_path / "other.json"), "--edge", edge.url)
    assert bad.returncode == 2 and "--from" in bad.stderr


def test_follow_refuses_direct_mode_and_a_missing_token(edge):
    refused = warm("follow", "--once", "--direct", "--edge", edge.url)
    assert refused.returncode == 2 and "through the edge" in refused.stderr
    missing = warm("follow", "--once", "--edge", edge.url, env={"EDGE_WARM_TOKEN": ""})
    assert missing.returncode == 2 and "warm token" in missing.stderr
