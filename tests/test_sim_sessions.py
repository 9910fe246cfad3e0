"""Sessions, the public user, private groups and per-user rendering settings in the sim."""
from __future__ import annotations

import io
import os
import pickle
import tempfile
from contextlib import closing
from urllib.parse import unquote

import httpx
import pytest
import redis

from tests.helpers import RedisServer, sim_fixtures, start_sim

pytestmark = pytest.mark.process

COOKIE = "sessionid_idr"
PREFIX = ":1:django.contrib.sessions.cache"


class PlainTypesOnly(pickle.Unpickler):
    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"{module}.{name}")


def load_session(raw: bytes) -> dict:
    return PlainTypesOnly(io.BytesIO(raw)).load()


@pytest.fixture(scope="module")
def redis_server():
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def sim(redis_server):
    s = start_sim("--redis", redis_server.url, "--session-cookie", COOKIE, "--cookie-age", "3600")
    yield s
    s.stop()


private_sim, _ = sim_fixtures("--no-public")


@pytest.fixture(scope="module")
def r(redis_server) -> redis.Redis:
    return redis.Redis.from_url(redis_server.url)


def thumb(client: httpx.Client, image_id: int) -> httpx.Response:
    return client.get(f"/webgateway/render_thumbnail/{image_id}/")


def test_public_user_gets_a_new_session_and_vary_cookie(sim, r):
    with sim.client() as c:
        first = thumb(c, sim.info["public_images"][0])
        assert first.status_code == 200 and first.headers["vary"] == "Cookie"
        cookie = first.cookies[COOKIE]
        assert "httponly" in first.headers["set-cookie"].lower()
        again = thumb(c, sim.info["public_images"][0])
        assert COOKIE not in again.cookies and again.headers["vary"] == "Cookie"
    session = load_session(r.get(PREFIX + cookie))
    connector = session["connector"]
    assert connector["is_public"] is True and connector["user_id"] == 2
    assert set(connector) == {"server_id", "is_secure", "is_public", "omero_session_key", "user_id"}
    assert "server_settings" in session and "can_create" in session
    assert 3500 < r.ttl(PREFIX + cookie) <= 3600


def test_private_groups(sim):
    alice_img = sim.info["private"]["lab-a"]["images"][0]
    with closing(sim.login("alice")) as alice, closing(sim.login("carol")) as carol, \
            closing(sim.login("bob")) as bob, sim.client() as anon:
        assert thumb(alice, alice_img).status_code == 200
        assert thumb(carol, alice_img).status_code == 200          # lab-a is read-only: members see each other
        assert thumb(bob, alice_img).status_code == 404
        assert thumb(anon, alice_img).status_code == 404            # _render_thumbnail's Http404, public or not
        hidden = anon.get(f"/webgateway/imgData/{alice_img}/")      # imgData: 403, empty, for the public user
        assert (hidden.status_code, hidden.content) == (403, b"")
        assert bob.get(f"/webgateway/imgData/{alice_img}/").text == f"Image:{alice_img} not found"
        assert bob.get(f"/api/v0/m/images/{alice_img}/").status_code == 404
        assert alice.get(f"/api/v0/m/images/{alice_img}/").status_code == 200
        batch = bob.get(f"/webgateway/get_thumbnails/?id={alice_img}&id={sim.info['public_images'][0]}").json()
        assert batch[str(alice_img)] is None
        bob_img = sim.info["private"]["lab-b"]["images"][0]
        assert thumb(alice, bob_img).status_code == 404


def test_per_user_rendering_settings(sim):
    seeded = next(s for s in sim.info["rdefs"] if s["user"] == "bob")
    with closing(sim.login("bob")) as bob, sim.client() as anon:
        assert thumb(bob, seeded["image"]).content != thumb(anon, seeded["image"]).content
        assert thumb(bob, seeded["image"] + 1).content == thumb(anon, seeded["image"] + 1).content


def test_save_img_rdef_changes_only_that_users_bytes(sim):
    image = sim.info["public_images"][3]
    explicit = f"/webgateway/render_image_region/{image}/0/0/?region=0,0,128,128&c=1|0:2000$FF0000,2|0:900$00FF00&m=c"
    with closing(sim.login("alice")) as alice, sim.client() as anon, closing(sim.login("bob")) as bob:
        before = thumb(alice, image).content
        assert before == thumb(anon, image).content
        r = alice.post(f"/webgateway/saveImgRDef/{image}/?c=1|0:500$FFFF00,-2|0:900$00FF00,3|0:3000$FF00FF&m=c")
        assert (r.status_code, r.headers["content-type"], r.text) == (200, "application/javascript", "true")
        assert thumb(alice, image).content != before
        assert thumb(anon, image).content == before
        assert alice.get(f"/webgateway/imgData/{image}/").json()["channels"][0]["color"] == "FFFF00"
        same = {c.get(explicit).content for c in (alice, anon, bob)}
        assert len(same) == 1
        no_csrf = httpx.post(f"{sim.url}/webgateway/saveImgRDef/{image}/", data={"m": "g"},
                             cookies=alice.cookies)
        assert no_csrf.status_code == 403


def test_revoking_or_tampering_the_redis_session(sim, r):
    alice_img = sim.info["private"]["lab-a"]["images"][0]
    url = f"{sim.url}/webgateway/render_thumbnail/{alice_img}/"
    with closing(sim.login("alice")) as alice:
        cookie = alice.cookies[COOKIE]
    key = load_session(r.get(PREFIX + cookie))["connector"]["omero_session_key"]
    assert httpx.get(url, cookies={COOKIE: cookie}).status_code == 200
    assert httpx.get(f"{url}?bsession={key}").status_code == 200    # the OMERO session key alone works too
    marker = os.path.join(tempfile.gettempdir(), f"sim-pwned-{os.getpid()}")
    r.set(PREFIX + cookie, b"cos\nsystem\n(S'touch " + marker.encode() + b"'\ntR.")
    tampered = httpx.get(url, cookies={COOKIE: cookie})
    assert tampered.status_code == 404 and COOKIE in tampered.cookies    # no valid session: a new public one
    assert not os.path.exists(marker)
    r.set(PREFIX + cookie, pickle.dumps({"connector": {"omero_session_key": key, "user_id": 4}}))
    assert httpx.get(url, cookies={COOKIE: cookie}).status_code == 200
    r.delete(PREFIX + cookie)
    revoked = httpx.get(url, cookies={COOKIE: cookie})
    assert revoked.status_code == 404 and COOKIE in revoked.cookies


def test_logout_deletes_the_session(sim, r):
    with closing(sim.login("carol")) as carol:
        cookie = carol.cookies[COOKIE]
        assert r.exists(PREFIX + cookie)
        out = carol.post("/webclient/logout/", data={})
        assert out.status_code == 302
        assert not r.exists(PREFIX + cookie)


def test_webclient_login_form(sim):
    with sim.client() as c:
        form = c.get("/webclient/login/")
        token = form.cookies["csrftoken"]
        assert 'name="csrfmiddlewaretoken"' in form.text
        bad = c.post("/webclient/login/", data={"username": "alice", "password": "nope", "csrfmiddlewaretoken": token})
        assert bad.status_code == 200 and "check your user name" in bad.text
        ok = c.post("/webclient/login/?url=/webclient/", data={"username": "alice", "password": "alice-pw",
                                                               "server": "1", "csrfmiddlewaretoken": token})
        assert ok.status_code == 302 and ok.headers["location"] == "/webclient/" and COOKIE in ok.cookies
        assert thumb(c, sim.info["private"]["lab-a"]["images"][0]).status_code == 200


def test_not_logged_in_without_public_user(private_sim):
    img = private_sim.info["public_images"][0]
    with private_sim.client() as c:
        r = c.get(f"/webgateway/render_thumbnail/{img}/?z=0")
        assert r.status_code == 302 and r.headers["vary"] == "Cookie"
        location = r.headers["location"]
        assert location.startswith("/webclient/login/?url=")
        assert unquote(location.split("url=", 1)[1]) == f"/webgateway/render_thumbnail/{img}/?z=0"
        xhr = c.get(f"/webgateway/render_thumbnail/{img}/", headers={"X-Requested-With": "XMLHttpRequest"})
        assert xhr.status_code == 403 and xhr.content == b""
        api = c.get("/api/v0/m/screens/")
        assert api.status_code == 403 and api.json() == {"message": "Not logged in"}
        assert api.headers["X-OMERO-ApiVersion"] == "0.2"
        assert "sessionid" not in r.cookies
    with closing(private_sim.login("bob")) as bob:
        assert thumb(bob, img).status_code == 200
