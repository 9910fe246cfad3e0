"""The sim against OMERO's rules that decide bytes and keys: share-id segments, saved rendering
settings (quantization, inversion, default Z/T), the loading JPEG, batches, iviewer's image_data,
the microservice's routes, APPEND_SLASH and the API's childCount (clients.md, issue 12 point 8)."""
from __future__ import annotations

import base64
import json
from contextlib import closing
from urllib.parse import quote

import httpx
import pytest

from tests.helpers import Sim, decode, plate, sim_fixtures

GW = "/webgateway"
FULL = "c=1|0:2000$FF0000,2|0:1500$00FF00&m=c"        # every channel of a z-stack image, with window and colour

sim, anon = sim_fixtures()


def uri_bytes(uri: str) -> bytes:
    assert uri.startswith("data:image/jpeg;base64,")
    return base64.b64decode(uri.split(",", 1)[1])


def session_key(sim: Sim, username: str) -> str:
    with sim.client() as c:
        token = c.get("/api/v0/token/").json()["data"]
        r = c.post("/api/v0/login/", data={"username": username, "password": sim.password(username), "server": "1"},
                   headers={"X-CSRFToken": token})
        return r.json()["eventContext"]["sessionUuid"]


@pytest.fixture(scope="module")
def quantized(sim: Sim) -> dict[str, dict]:
    """The seeded rdefs with non-linear families, by user (bob's own; the owner's, seen by the public)."""
    rdefs = [r for r in sim.info["rdefs"] if any(c["family"] != "linear" for c in r["channels"])]
    return {r["user"]: r for r in rdefs}


@pytest.fixture(scope="module")
def bob(sim: Sim):
    with closing(sim.login("bob")) as client:
        yield client


# ---- 2. share ids ---------------------------------------------------------------------------------
def test_webclient_share_segment_is_not_a_width(anon, sim):
    img, other = sim.info["public_images"][0], sim.info["public_images"][1]
    default = anon.get(f"{GW}/render_thumbnail/{img}/").content
    for share in (1, 123, 99999):
        assert anon.get(f"/webclient/render_thumbnail/{img}/{share}/").content == default
        assert uri_bytes(anon.get(f"/webclient/get_thumbnail/{img}/{share}/").json()) == default
        batch = anon.get(f"/webclient/get_thumbnails/{share}/?id={img}&id={other}").json()
        assert batch == anon.get(f"/webclient/get_thumbnails/?id={img}&id={other}").json()
        assert uri_bytes(batch[str(img)]) == default
    sized = anon.get(f"/webclient/render_thumbnail/size/123/{img}/")
    assert max(decode(sized.content).size) == 123
    assert anon.get(f"/webclient/render_thumbnail/size/123/{img}/5/").content == sized.content
    assert anon.get(f"/webclient/5/imgData/{img}/").json() == anon.get(f"/webclient/imgData/{img}/").json()
    plane = anon.get(f"/webclient/render_image/{img}/0/0/").content
    assert anon.get(f"/webclient/5/render_image/{img}/0/0/").content == plane
    assert anon.get(f"/webclient/imgData/{img}/meta/").status_code == 404    # the webclient's imgData takes no key
    birds_eye = anon.get(f"/webclient/render_birds_eye_view/{img}/")
    assert birds_eye.content == default
    assert max(decode(anon.get(f"/webclient/7/render_birds_eye_view/{img}/120/").content).size) == 120
    assert anon.get("/webclient/render_birds_eye_view/999/").status_code == 404     # no _defcb there


# ---- 3. saved rendering settings --------------------------------------------------------------------
def test_seeded_rdefs_are_in_info(quantized, sim):
    assert set(quantized) == {"bob", "curator"}
    mine = quantized["bob"]
    assert mine["defaultZ"] == 4 and mine["defaultT"] == 2 and mine["rdefId"] >= 30_000_001
    assert {c["family"] for c in mine["channels"]} == {"logarithmic", "exponential"}
    assert any(c["inverted"] for c in mine["channels"])
    assert set(mine) == {"image", "user", "rdefId", "model", "defaultZ", "defaultT", "channels"}
    assert set(mine["channels"][0]) == {"active", "start", "end", "color", "family", "coefficient", "inverted"}
    assert quantized["curator"]["rdefId"] == 20_000_000 + quantized["curator"]["image"]   # the owner's rdef


def test_saved_family_inversion_and_plane_change_a_full_render(anon, bob, quantized):
    iid = quantized["bob"]["image"]
    region = f"{GW}/render_image_region/{iid}/0/0/?region=0,0,256,256&{FULL}"
    assert bob.get(region).content != anon.get(region).content          # full c + m is not user-independent
    both = ('[{"quantization":{"family":"linear"},"inverted":{"enabled":false}},'
            '{"quantization":{"family":"linear"},"inverted":{"enabled":false}}]')
    assert bob.get(f"{region}&maps={both}").content == anon.get(f"{region}&maps={both}").content
    # OMERO.web sets the inversion from every maps entry (absent = off), the family only when given
    no_flag = '[{"quantization":{"family":"linear"}},{"quantization":{"family":"linear"}}]'
    assert bob.get(f"{region}&maps={no_flag}").content == anon.get(f"{region}&maps={both}").content
    inverted_only = '[{"inverted":{"enabled":false}},{"inverted":{"enabled":false}}]'
    assert bob.get(f"{region}&maps={inverted_only}").content != anon.get(f"{region}&maps={inverted_only}").content
    data = bob.get(f"{GW}/imgData/{iid}/").json()
    assert data["rdefs"]["defaultZ"] == 4 and data["rdefs"]["defaultT"] == 2
    assert [c["family"] for c in data["channels"]] == ["logarithmic", "exponential"]
    assert data["channels"][1]["inverted"] is data["channels"][1]["reverseIntensity"] is True
    assert anon.get(f"{GW}/imgData/{iid}/rdefs/").json()["defaultZ"] == 2


def test_render_image_without_t_uses_the_users_default_plane(anon, bob, quantized):
    iid = quantized["bob"]["image"]

    def get(client: httpx.Client, path: str, query: str = "") -> bytes:
        r = client.get(f"{GW}/{path}/{iid}/{query}")
        assert r.status_code == 200, r.text
        return r.content
    assert get(bob, "render_image") == get(bob, "render_image", "4/2/") != get(bob, "render_image", "2/0/")
    assert get(bob, "render_image", "1/") == get(bob, "render_image", "1/2/")
    assert get(anon, "render_image") == get(anon, "render_image", "2/0/")
    rdef = f"?{FULL}"
    assert get(bob, "render_image_rdef", rdef) == get(bob, "render_image_rdef", f"4/2/{rdef}")
    assert get(bob, "render_image_rdef", f"3/{rdef}") == get(bob, "render_image_rdef", f"3/2/{rdef}")
    assert get(bob, "render_thumbnail") != get(anon, "render_thumbnail")


def test_the_owners_saved_settings_are_what_the_public_sees(anon, bob, quantized):
    iid = quantized["curator"]["image"]
    for client in (anon, bob):
        data = client.get(f"{GW}/imgData/{iid}/").json()
        assert data["channels"][0]["family"] == "logarithmic" and data["rdefs"]["defaultZ"] == 4


def test_rdef_views_validate_like_omero(anon, quantized):
    url = f"{GW}/render_image_region_rdef/{quantized['bob']['image']}/0/0/?region=0,0,64,64"
    answers = {"": "Rendering settings must specify channels as c",
               "&c=1$FF0000&m=c": "Must specify window for each channel",
               "&c=1|0:9&m=c": "Must specify color for each channel",
               "&c=1|0:9$FF0000": 'Query parameter "m" must be present with value either "g" or "c"',
               "&c=1|0:9$FF0000&m=c&maps=[": "Failed to parse maps JSON",
               "&c=1|0:9$FF0000&m=c&maps=[{},{}]": 'Number of "maps" must match number of channels'}
    for query, text in answers.items():
        r = anon.get(url + query)
        assert (r.status_code, r.text, r.headers["content-type"]) == (400, text, "text/html; charset=utf-8")


def test_save_img_rdef_keeps_quantization_inversion_and_plane(sim):
    image = next(d for d in sim.info["datasets"] if d["name"] == "idr0003-ds-001")["first_image"] + 5
    maps = quote('[{"quantization":{"family":"polynomial","coefficient":0.4},"inverted":{"enabled":true}},'
                 '{"inverted":{"enabled":false}}]')
    with closing(sim.login("alice")) as alice, sim.client() as other:
        before = alice.get(f"{GW}/render_thumbnail/{image}/").content
        form_only = alice.post(f"/webgateway/saveImgRDef/{image}/", data={"c": "1|0:900$FF0000", "m": "c"})
        assert form_only.status_code == 400            # OMERO reads the settings from the query string only
        r = alice.post(f"/webgateway/saveImgRDef/{image}/?c=1|0:1500$FF0000,-2|0:900$00FF00&m=g&maps={maps}&z=2&t=3")
        assert (r.status_code, r.text) == (200, "true")
        data = alice.get(f"{GW}/imgData/{image}/").json()
        first = data["channels"][0]
        assert (first["family"], first["coefficient"], first["inverted"]) == ("polynomial", 0.4, True)
        assert data["channels"][1]["active"] is False and data["rdefs"]["model"] == "greyscale"
        assert (data["rdefs"]["defaultZ"], data["rdefs"]["defaultT"]) == (1, 2)        # 1-based in the query
        assert alice.get(f"{GW}/render_thumbnail/{image}/").content != before
        assert other.get(f"{GW}/render_thumbnail/{image}/").content == before
        saved = next(s for s in other.get("/_sim/info").json()["rdefs"] if s["user"] == "alice" and s["image"] == image)
        assert saved["channels"][0]["family"] == "polynomial" and saved["defaultT"] == 2


def test_microservice_keeps_a_saved_inversion_unless_told_to_invert(sim, quantized):
    iid = quantized["bob"]["image"]
    keys = {u: session_key(sim, u) for u in ("bob", "alice")}
    url = f"/webgateway/render_image_region/{iid}/0/0/?region=0,0,128,128&{FULL}&maps="
    linear = '{"quantization":{"family":"linear"},"inverted":{"enabled":%s}}'
    with sim.ms() as ms:
        def get(user: str, flag: str) -> bytes:
            r = ms.get(url + f"[{linear % flag},{linear % flag}]", headers={"X-OMERO-Session-Key": keys[user]})
            assert r.status_code == 200, r.text
            return r.content
        assert get("bob", "false") != get("alice", "false")     # bob's channel 2 stays inverted
        assert get("bob", "true") == get("alice", "true")


# ---- 4. the loading JPEG ---------------------------------------------------------------------------
def test_in_progress_thumbnail_is_a_jpeg_until_finished(anon, sim):
    iid = next(i for i in sim.info["in_progress_images"] if i in sim.info["in_progress_fixed"])
    ok = sim.info["public_images"][0]
    try:
        loading = anon.get(f"{GW}/render_thumbnail/{iid}/")
        assert loading.status_code == 200 and loading.headers["content-type"] == "image/jpeg"
        assert loading.content.startswith(b"\xff\xd8\xff") and decode(loading.content).format == "JPEG"
        batch = anon.get(f"{GW}/get_thumbnails/?id={iid}&id={ok}").json()
        assert uri_bytes(batch[str(iid)]) == loading.content
        assert anon.get(f"/webclient/render_thumbnail/{iid}/").content == loading.content
        assert anon.get(f"{GW}/imgData/{iid}/").json() == {"ConcurrencyException": {"backOff": 1000}}
        assert anon.get(f"{GW}/render_image/{iid}/0/0/").status_code == 404
        done = httpx.post(f"{sim.url}/_sim/pyramids/{iid}/finish")
        assert done.status_code == 200 and iid not in done.json()["in_progress_images"]
        assert iid not in anon.get("/_sim/info").json()["in_progress_images"]
        real = anon.get(f"{GW}/render_thumbnail/{iid}/").content
        assert real != loading.content and decode(real).format == "JPEG"
        assert "ConcurrencyException" not in anon.get(f"{GW}/imgData/{iid}/").json()
    finally:
        assert httpx.post(f"{sim.url}/_sim/pyramids/{iid}/restart").status_code == 200
    assert anon.get(f"{GW}/render_thumbnail/{iid}/").content == loading.content
    assert httpx.post(f"{sim.url}/_sim/pyramids/{ok}/finish").status_code == 404


# ---- 5. batches --------------------------------------------------------------------------------------
def test_batches_ignore_z_t_and_rdef_id(anon, quantized):
    iid = quantized["bob"]["image"]
    other = quantized["curator"]["image"]
    pair = f"{GW}/get_thumbnails/?id={iid}&id={other}"
    plain = anon.get(pair).json()
    for extra in ("&z=0", "&t=1", f"&rdefId={quantized['bob']['rdefId']}", "&z=0&t=2"):
        assert anon.get(pair + extra).json() == plain
        single = f"{GW}/get_thumbnails/?id={iid}"
        assert anon.get(single + extra).json() != anon.get(single).json()      # one id: the single path
    assert uri_bytes(plain[str(iid)]) == anon.get(f"{GW}/render_thumbnail/{iid}/").content
    assert anon.get(f"{GW}/get_thumbnails/?id={iid}&z=99").json() == {str(iid): None}


# ---- 6. iviewer -------------------------------------------------------------------------------------
def test_iviewer_image_data(anon, bob, sim, quantized):
    pyramid = sim.info["pyramid_images"][0]
    data = anon.get(f"/iviewer/image_data/{pyramid}/?_=1").json()
    imgdata = anon.get(f"{GW}/imgData/{pyramid}/").json()
    assert {k: data[k] for k in imgdata if k != "pixel_size"} == {k: v for k, v in imgdata.items() if k != "pixel_size"}
    assert data["tiles"] is True and data["levels"] == 5 and data["zoomLevelScaling"]["4"] == 0.0625
    assert data["init_zoom"] == 0 and data["interpolate"] is True and data["roi_count"] == 1
    assert data["families"] == ["linear", "polynomial", "exponential", "logarithmic"]
    assert data["pixel_size"]["unit_x"] == 0.325 and data["pixel_size"]["symbol_x"] == "\u00b5m"
    assert data["pixel_size"]["unit_id_y"] == "MICROMETER" and "unit_z" not in data["pixel_size"]
    assert len(data["import_date"]) == 19 and data["delta_t_unit_symbol"] is None
    assert set(data["channels"][0]) >= {"active", "window", "color", "family", "coefficient", "inverted",
                                        "reverseIntensity", "label", "emissionWave"}
    assert set(data["rdefs"]) == {"model", "projection", "defaultZ", "defaultT", "invertAxis"}
    assert set(data["meta"]) >= {"imageName", "datasetName", "projectName"} and data["perms"]["canEdit"] is False
    mine = bob.get(f"/iviewer/image_data/{quantized['bob']['image']}/").json()
    assert mine["channels"][0]["family"] == "logarithmic" and mine["rdefs"]["defaultZ"] == 4
    assert mine["pixel_size"]["unit_z"] == 1.0
    private = sim.info["private"]["lab-a"]["images"][0]
    for client in (anon, bob):
        r = client.get(f"/iviewer/image_data/{private}/")
        assert (r.status_code, r.json()) == (404, {"error": "Image not found"})
    with closing(sim.login("alice")) as alice:
        assert alice.get(f"/iviewer/image_data/{private}/").json()["perms"]["canEdit"] is True
    iid = sim.info["in_progress_images"][0]
    assert anon.get(f"/iviewer/image_data/{iid}/").json()["ConcurrencyException"] == {"backOff": 1000}


# ---- 9. routes, slashes, childCount -----------------------------------------------------------------------
def test_final_slashes(anon, sim):
    img = sim.info["public_images"][0]
    r = anon.get(f"{GW}/histogram_json/{img}/channel/0?bins=16")
    assert r.status_code == 301 and r.headers["location"] == f"{GW}/histogram_json/{img}/channel/0/?bins=16"
    assert anon.get(f"{GW}/histogram_json/{img}/channel/0/anything").status_code == 200   # no `$` in its regex
    assert anon.get(f"{GW}/render_thumbnail/{img}").headers["location"] == f"{GW}/render_thumbnail/{img}/"
    assert anon.get(f"{GW}/no_such_view/{img}").status_code == 404
    with sim.ms(headers={"X-OMERO-Session-Key": session_key(sim, "bob")}) as ms:
        assert len(ms.get(f"/webgateway/histogram_json/{img}/channel/0").json()["data"]) == 256
        assert max(decode(ms.get(f"/webclient/render_birds_eye_view_ngff/{img}/120").content).size) == 120
        assert max(decode(ms.get(f"/webclient/render_thumbnail_ngff/{img}/128").content).size) == 96
        assert max(decode(ms.get(f"/webgateway/render_thumbnail_ngff/{img}/128/").content).size) == 128
        assert ms.get(f"/webgateway/render_thumbnail_ngff/{img}/?z=99").status_code == 200   # no z/t there
        assert ms.get(f"/webgateway/render_thumbnail/{img}").status_code == 404


def test_child_count(anon, sim):
    screen = plate(sim.info, "plate384")["screen"]
    screens = anon.get("/api/v0/m/screens/?childCount=true").json()["data"]
    mine = next(s for s in screens if s["@id"] == screen)
    assert mine["omero:childCount"] == len(next(s for s in sim.info["screens"] if s["id"] == screen)["plates"])
    project = sim.info["projects"][0]
    one = anon.get(f"/api/v0/m/projects/{project['id']}/?childCount=true").json()["data"]
    assert one["omero:childCount"] == len(project["datasets"])
    assert "omero:childCount" not in anon.get(f"/api/v0/m/projects/{project['id']}/").json()["data"]
    assert "omero:childCount" not in anon.get("/api/v0/m/plates/?childCount=true").json()["data"][0]
    groups = anon.get("/api/v0/m/experimentergroups/?childCount=true").json()["data"]
    public = next(g for g in groups if g["Name"] == "public")
    assert public["omero:childCount"] == len(sim.info["users"])


def test_info_lists_the_new_settings(sim):
    info = sim.info
    assert info["thumbnails_batch"] == 50 and info["use_x_forwarded_host"] is False
    assert info["secure_proxy_ssl_header"] is None
    assert set(info["in_progress_images"]) <= set(info["in_progress_fixed"])
    json.dumps(info)
