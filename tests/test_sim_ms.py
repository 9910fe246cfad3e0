"""The sim's omero-ms-image-region port: its sessions, mandatory c/m, NGFF thumbnails, shared stats."""
from __future__ import annotations

import httpx
import pytest

from tests.helpers import decode, sim_fixtures

pytestmark = pytest.mark.process

FULL = "c=1|0:2000$FF0000,2|0:1500$00FF00,3|0:1000$0000FF&m=c"


sim, anon = sim_fixtures()


@pytest.fixture(scope="module")
def alice(sim):
    """(OMERO session key, OMERO.web session cookie) of a fresh alice login."""
    c = sim.client()
    token = c.get("/api/v0/token/").json()["data"]
    r = c.post("/api/v0/login/", data={"username": "alice", "password": "alice-pw", "server": "1"},
               headers={"X-CSRFToken": token})
    yield r.json()["eventContext"]["sessionUuid"], r.cookies["sessionid"]
    c.close()


def test_no_session_is_403(sim):
    img = sim.info["public_images"][0]
    with sim.ms() as ms:
        assert ms.get(f"/webgateway/render_image_region/{img}/0/0/?region=0,0,64,64&{FULL}").status_code == 403
        assert ms.get(f"/webgateway/render_thumbnail_ngff/{img}").status_code == 403


def test_session_sources(sim, alice):
    key, cookie = alice
    url = f"/webgateway/render_image_region/{sim.info['public_images'][0]}/0/0/?region=0,0,64,64&{FULL}"
    with sim.ms() as ms:
        by_header = ms.get(url, headers={"X-OMERO-Session-Key": key})
        assert by_header.status_code == 200 and by_header.headers["cache-control"] == "private, max-age=3600"
        assert ms.get(f"{url}&bsession={key}").content == by_header.content
        assert httpx.get(sim.ms_url + url, cookies={"sessionid": cookie}).content == by_header.content
        assert ms.get(url, headers={"X-OMERO-Session-Key": "nope"}).status_code == 403


def test_mandatory_c_and_m(sim, alice):
    img = sim.info["public_images"][0]
    h = {"X-OMERO-Session-Key": alice[0]}
    with sim.ms(headers=h) as ms:
        base = f"/webgateway/render_image_region/{img}/0/0/?region=0,0,64,64"
        assert ms.get(base).status_code == 400
        assert ms.get(base + "&c=1|0:2000$FF0000").status_code == 400
        assert ms.get(base + "&c=1,2&m=c").status_code == 400
        png = ms.get(f"{base}&{FULL}&format=png")
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert ms.get(f"/webclient/render_image/{img}/0/0/?{FULL}").status_code == 200
        assert ms.get(f"/webgateway/render_image_rdef/{img}/0/0?{FULL}").status_code == 200
        assert ms.get(f"/webgateway/render_image/{img}/").status_code == 404


def test_thumbnails_and_json(sim, alice):
    img = sim.info["public_images"][0]
    private_bob = sim.info["private"]["lab-b"]["images"][0]
    with sim.ms(headers={"X-OMERO-Session-Key": alice[0]}) as ms:
        assert max(decode(ms.get(f"/webgateway/render_thumbnail_ngff/{img}").content).size) == 96
        assert max(decode(ms.get(f"/webgateway/render_thumbnail_ngff/{img}/128/").content).size) == 128
        assert max(decode(ms.get(f"/webclient/render_thumbnail_ngff/size/64/{img}").content).size) == 64
        assert ms.get(f"/webgateway/render_birds_eye_view_ngff/{img}").status_code == 200
        batch = ms.get(f"/webgateway/get_thumbnails_ngff?imageId={img}&imageId={img + 2}").json()
        assert set(batch) == {str(img), str(img + 2)}
        assert "cache-control" not in ms.get(f"/webgateway/render_thumbnail_ngff/{img}").headers
        assert ms.get(f"/webgateway/imgData/{img}").json()["id"] == img
        assert len(ms.get(f"/webgateway/histogram_json/{img}/channel/0").json()["data"]) == 256
        assert ms.get(f"/webgateway/render_shape_mask/{10_000_000 + 2 * img}").status_code == 200
        assert ms.get(f"/webgateway/render_thumbnail_ngff/{private_bob}").status_code == 404
        assert ms.get(f"/webgateway/render_image_region/{private_bob}/0/0/?region=0,0,8,8&{FULL}").status_code == 404


def test_ms_stats_are_prefixed(sim, alice):
    img = sim.info["public_images"][0]
    sim.reset()
    httpx.get(f"{sim.ms_url}/webgateway/render_thumbnail_ngff/{img}", headers={"X-OMERO-Session-Key": alice[0]})
    stats = httpx.get(f"{sim.ms_url}/_sim/stats").json()
    assert stats["requests"] == {"ms:render_thumbnail_ngff": 1} and stats["renders"] == {"ms:render_thumbnail_ngff": 1}
    assert sim.stats() == stats
