"""Access control: private data never leaks through the cache, public data is shared.

Everything runs against real processes: a private Redis holding OMERO.web-style sessions, the
simulated OMERO with its users and private groups, and edges in `verified` and `public-only` mode.
"""
from __future__ import annotations

import pickle
from contextlib import closing

import httpx
import pytest
import redis
from hypothesis import HealthCheck, given, settings, strategies as st

from edge.identity import SESSION_PREFIX
from tests.helpers import EdgeProc, Launcher, Sim

pytestmark = pytest.mark.process

USERS = ("alice", "bob", "carol")


@pytest.fixture(scope="module")
def sessions(sim: Sim) -> dict[str, str]:
    """A logged-in session cookie per user (made through the sim's real login)."""
    anonymous = httpx.get(f"{sim.url}/webgateway/render_thumbnail/{sim.info['public_images'][0]}/")
    out = {"public": anonymous.cookies[sim.info["session_cookie"]]}  # OMERO.web's public-user session
    for user in USERS:
        with closing(sim.login(user)) as client:
            out[user] = client.cookies[sim.info["session_cookie"]]
    return out


@pytest.fixture(scope="module")
def verified(sim: Sim, redis_server) -> EdgeProc:
    factory = Launcher(sim)
    edge = factory("--access", "verified", "--session-redis", redis_server.url)
    yield edge
    factory.stop_all()


def as_user(base: str, sim: Sim, cookie: str | None, path: str) -> httpx.Response:
    cookies = {sim.info["session_cookie"]: cookie} if cookie else None
    return httpx.get(base + path, cookies=cookies, headers={"host": "omero.test"}, timeout=20)


def private_image(sim: Sim, group: str, n: int = 0) -> int:
    return sim.info["private"][group]["images"][n]


def test_user_entries_are_per_user_and_rechecked(sim: Sim, verified: EdgeProc, sessions):
    iid = private_image(sim, "lab-a", 1)
    path = f"/webgateway/render_thumbnail/{iid}/"
    first = as_user(verified.url, sim, sessions["alice"], path)
    second = as_user(verified.url, sim, sessions["alice"], path)
    assert first.status_code == 200 and second.headers["x-edge-cache"] == "HIT"
    assert second.headers["cache-control"].startswith("private")
    assert "set-cookie" not in second.headers
    # bob (other group) and the public never get it, whether cached by its owner or not
    for cookie in (sessions["bob"], None):
        r = as_user(verified.url, sim, cookie, path)
        direct = as_user(sim.url, sim, cookie, path)
        assert r.status_code == direct.status_code != 200
        assert r.content != first.content
    # carol (same group, read-annotate) reads it, fetched with her own cookie
    carol = as_user(verified.url, sim, sessions["carol"], path)
    assert carol.status_code == 200


def test_rendering_settings_are_per_user(sim: Sim, verified: EdgeProc, sessions):
    seeded = next(r for r in sim.info["rdefs"] if r["user"] == "bob")
    path = f"/webgateway/render_thumbnail/{seeded['image']}/"
    public = as_user(verified.url, sim, None, path)
    bob = as_user(verified.url, sim, sessions["bob"], path)
    alice = as_user(verified.url, sim, sessions["alice"], path)
    assert bob.content != public.content  # bob's own settings
    assert alice.content == public.content  # the owner's settings, but her own entry
    assert as_user(verified.url, sim, sessions["bob"], path).content == bob.content
    assert as_user(verified.url, sim, None, path).content == public.content


def test_shared_full_rdef_render_is_checked_for_every_audience(sim: Sim, verified: EdgeProc, sessions):
    iid = private_image(sim, "lab-a", 2)
    # A viewer loads imgData first: the edge learns the channel count a fully specified render must cover.
    channels = len(as_user(verified.url, sim, sessions["alice"], f"/webgateway/imgData/{iid}/").json()["channels"])
    maps = ",".join(['{"inverted":{"enabled":false},"quantization":{"family":"linear","coefficient":1}}'] * channels)
    c = ",".join(f"{n}|0:255$FF0000" for n in range(1, channels + 1))
    path = f"/webgateway/render_image_region/{iid}/0/0/?region=0,0,64,64&c={c}&m=c&maps=[{maps}]"
    owner = as_user(verified.url, sim, sessions["alice"], path)
    assert owner.status_code == 200
    carol = as_user(verified.url, sim, sessions["carol"], path)
    assert carol.status_code == 200 and carol.headers["x-edge-cache"] == "HIT" and carol.content == owner.content
    # Alone, an anonymous browser reaches the microservice with the public session OMERO.web gave it;
    # through the edge it is fetched with the edge's public session, hit or miss alike.
    for cookie, direct_cookie in ((sessions["bob"], sessions["bob"]), (None, sessions["public"])):
        r = as_user(verified.url, sim, cookie, path)
        assert r.status_code == as_user(sim.ms_url, sim, direct_cookie, path).status_code != 200
        assert r.headers["x-edge-cache"] == "MISS"  # as before anyone cached it: no cache-state side channel


def test_private_plate_grid_and_batch(sim: Sim, verified: EdgeProc, sessions):
    plate = sim.info["private"]["lab-b"]["plates"][0]
    grid_path = f"/webgateway/plate/{plate}/"
    grid = as_user(verified.url, sim, sessions["bob"], grid_path)
    assert grid.status_code == 200
    ids = [c["id"] for row in grid.json()["grid"] for c in row if c][:5]
    batch = "/webgateway/get_thumbnails/?" + "&".join(f"id={i}" for i in ids)
    assert as_user(verified.url, sim, sessions["bob"], batch).json() == as_user(sim.url, sim, sessions["bob"], batch).json()
    for cookie in (sessions["alice"], None):
        r = as_user(verified.url, sim, cookie, grid_path)
        assert r.status_code == as_user(sim.url, sim, cookie, grid_path).status_code != 200
        b = as_user(verified.url, sim, cookie, batch)
        assert b.json() == as_user(sim.url, sim, cookie, batch).json()
        assert all(v is None for v in b.json().values())


def test_revoked_session_loses_access_at_once_with_ttl_zero(sim: Sim, edges, redis_server):
    edge = edges("--access", "verified", "--session-redis", redis_server.url, env={"EDGE_ACCESS_TTL": "0"})
    with closing(sim.login("alice")) as client:
        cookie = client.cookies[sim.info["session_cookie"]]
    path = f"/webgateway/render_thumbnail/{private_image(sim, 'lab-a', 3)}/"
    assert as_user(edge.url, sim, cookie, path).status_code == 200
    assert as_user(edge.url, sim, cookie, path).headers["x-edge-cache"] == "HIT"
    redis.Redis.from_url(redis_server.url).delete(SESSION_PREFIX + cookie)  # logout / expiry
    after = as_user(edge.url, sim, cookie, path)
    assert after.status_code != 200 and after.headers["x-edge-cache"] == "BYPASS"


class _Evil:
    def __reduce__(self):
        return (exec, ("open('/tmp/omero-edge-pwned', 'w').write('x')",))


@pytest.mark.parametrize("value", [pickle.dumps(_Evil()), b"\x80\x04garbage", pickle.dumps(["not", "a", "dict"]),
                                   pickle.dumps({"connector": {"omero_session_key": "", "user_id": 4}})])
def test_tampered_sessions_are_unknown_never_executed(sim: Sim, verified: EdgeProc, redis_server, value):
    import os

    redis.Redis.from_url(redis_server.url).set(SESSION_PREFIX + "tampered", value)
    path = f"/webgateway/render_thumbnail/{private_image(sim, 'lab-a', 4)}/"
    r = as_user(verified.url, sim, "tampered", path)
    assert r.status_code < 500 and r.status_code != 200
    assert r.headers["x-edge-cache"] == "BYPASS"
    assert not os.path.exists("/tmp/omero-edge-pwned")


def test_public_only_shares_the_public_sessions_cache(sim: Sim, edges, redis_server):
    edge = edges("--session-redis", redis_server.url)
    iid = sim.info["public_images"][2]
    anon = httpx.get(f"{sim.url}/webgateway/render_thumbnail/{iid}/")
    public_cookie = anon.cookies[sim.info["session_cookie"]]  # OMERO.web's new public session
    path = f"/webgateway/render_thumbnail/{iid}/"
    assert as_user(edge.url, sim, None, path).headers["x-edge-cache"] == "MISS"
    hit = as_user(edge.url, sim, public_cookie, path)
    assert hit.headers["x-edge-cache"] == "HIT" and "set-cookie" not in hit.headers
    with closing(sim.login("alice")) as client:
        alice = client.cookies[sim.info["session_cookie"]]
    assert as_user(edge.url, sim, alice, path).headers["x-edge-cache"] == "BYPASS"


# --- property: through the edge, every requester sees exactly what the backend alone shows them ---------

def _urls(sim: Sim) -> list[str]:
    a, b = sim.info["private"]["lab-a"], sim.info["private"]["lab-b"]
    pub = sim.info["public_images"][:2]
    imgs = pub + a["images"][5:7] + b["images"][:2] + [next(r["image"] for r in sim.info["rdefs"] if r["user"] == "bob")]
    urls = []
    for i in imgs:
        urls += [f"/webgateway/render_thumbnail/{i}/", f"/webgateway/render_thumbnail/{i}/64/",
                 f"/webgateway/imgData/{i}/", f"/webgateway/render_image/{i}/0/0/?c=1|0:255$FF0000&m=c",
                 f"/webgateway/render_image_region/{i}/0/0/?region=0,0,32,32", f"/api/v0/m/images/{i}/",
                 f"/webclient/render_thumbnail/{i}/"]
    urls += [f"/webgateway/get_thumbnails/?id={imgs[0]}&id={imgs[2]}&id={imgs[4]}&id={imgs[6]}",
             f"/webgateway/get_thumbnails/?id={imgs[3]}", f"/webgateway/plate/{a['plates'][0]}/",
             f"/webgateway/plate/{b['plates'][0]}/", f"/webgateway/plate/{sim.info['plates'][1]['id']}/",
             "/api/v0/m/screens/", f"/api/v0/m/datasets/{a['datasets'][0]}/images/"]
    return urls


def _comparable(r: httpx.Response) -> tuple:
    body = r.content
    if r.headers.get("content-type", "").startswith("application/json") and r.status_code == 200:
        body = r.json()
    return r.status_code, body


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_property_edge_answers_like_the_backend(sim: Sim, verified: EdgeProc, sessions, data):
    urls = _urls(sim)
    who = st.sampled_from([None, *USERS])
    steps = data.draw(st.lists(st.tuples(who, st.sampled_from(urls), st.integers(1, 2)), min_size=3, max_size=8))
    for user, path, repeat in steps:
        cookie = sessions[user] if user else None
        upstream = sim.ms_url if "/render_image" in path and "/0/0/" in path else sim.url
        # Alone, an anonymous browser reaches the microservice with the public session OMERO.web gave it.
        direct_cookie = cookie or (sessions["public"] if upstream == sim.ms_url else None)
        expected = _comparable(as_user(upstream, sim, direct_cookie, path))
        for _ in range(repeat):
            got = as_user(verified.url, sim, cookie, path)
            assert _comparable(got) == expected, (user, path, got.headers.get("x-edge-cache"))


def test_negative_entries_are_never_served_to_users(sim: Sim, verified: EdgeProc, sessions):
    """A 404 the public got for a private tile must not answer its owner (the key is shared)."""
    iid = private_image(sim, "lab-a", 8)
    path = f"/webgateway/render_image/{iid}/0/0/?c=1|0:255$00FF00&m=c"
    assert as_user(verified.url, sim, None, path).status_code != 200
    owner = as_user(verified.url, sim, sessions["alice"], path)
    assert owner.status_code == 200 and owner.content.startswith(b"\xff\xd8")


def test_a_render_without_maps_is_per_reader(sim: Sim, verified: EdgeProc, sessions):
    """Full `c` + `m` but no `maps`: each reader's saved family, coefficient and inversion still apply
    (clients.md §6), so bob's render must never answer the public, nor the public's bob."""
    seeded = next(r for r in sim.info["rdefs"] if r["user"] == "bob"
                  and any(ch["family"] != "linear" or ch["inverted"] for ch in r["channels"]))
    iid, n = seeded["image"], len(seeded["channels"])
    as_user(verified.url, sim, sessions["bob"], f"/webgateway/imgData/{iid}/")  # the channel count is known
    c = ",".join(f"{i}|0:255$FF0000" for i in range(1, n + 1))
    path = f"/webgateway/render_image/{iid}/0/0/?c={c}&m=c"
    for who in ("bob", None, "bob", None):
        got = as_user(verified.url, sim, sessions[who] if who else None, path)
        want = as_user(sim.ms_url, sim, sessions[who] if who else sessions["public"], path)
        assert (got.status_code, got.content) == (want.status_code, want.content), who
    bob = as_user(sim.ms_url, sim, sessions["bob"], path).content
    assert bob != as_user(sim.ms_url, sim, sessions["public"], path).content
