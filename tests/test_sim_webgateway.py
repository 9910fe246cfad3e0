"""The sim's webgateway and webclient: renders, batches, the plate grid, imgData, placeholders."""
from __future__ import annotations

import base64
import json

import pytest

from tests.helpers import Sim, decode, plate, sim_fixtures

pytestmark = pytest.mark.process

GW = "/webgateway"


sim, anon = sim_fixtures()


@pytest.fixture(scope="module")
def ids(sim: Sim) -> dict:
    p384 = plate(sim.info, "plate384")
    return {"img": sim.info["public_images"][0], "p384": p384, "pyramid": sim.info["pyramid_images"][0],
            "in_progress": sim.info["in_progress_images"], "ds_img": next(d for d in sim.info["datasets"]
                                                                          if d["name"] == "idr0003-ds-001")["first_image"]}


def test_thumbnail_is_a_deterministic_jpeg_of_realistic_size(anon, ids):
    url = f"{GW}/render_thumbnail/{ids['img']}/"
    a, b = anon.get(url), anon.get(url)
    assert a.status_code == 200 and a.headers["content-type"] == "image/jpeg"
    assert a.content == b.content
    assert 1500 < len(a.content) < 5000
    im = decode(a.content)
    assert im.format == "JPEG" and max(im.size) == 96
    assert anon.get(f"{GW}/render_thumbnail/{ids['img']}/96/").content == a.content
    assert anon.get(f"{GW}/render_thumbnail/{ids['img'] + 2}/").content != a.content


def test_thumbnail_sizes(anon, ids):
    assert max(decode(anon.get(f"{GW}/render_thumbnail/{ids['img']}/200/").content).size) == 200
    assert decode(anon.get(f"{GW}/render_thumbnail/{ids['img']}/50/40/").content).size == (50, 40)
    assert max(decode(anon.get(f"{GW}/render_birds_eye_view/{ids['img']}/120/").content).size) == 120
    uri = anon.get(f"{GW}/get_thumbnail/{ids['img']}/").json()
    assert uri.startswith("data:image/jpeg;base64,")


def test_get_thumbnails_batch(anon, ids):
    i = ids["img"]
    r = anon.get(f"{GW}/get_thumbnails/", params=[("id", i), ("id", i + 2), ("id", i), ("id", 999)])
    body = r.json()
    assert r.status_code == 200 and set(body) == {str(i), str(i + 2), "999"}
    assert body["999"] is None
    single = anon.get(f"{GW}/render_thumbnail/{i}/").content
    assert base64.b64decode(body[str(i)].split(",", 1)[1]) == single
    over = anon.get(f"{GW}/get_thumbnails/", params=[("id", i + k) for k in range(51)])
    assert over.status_code == 500
    assert over.headers["content-type"] == "text/javascript"
    assert over.text == "Max 50 thumbnails at a time."


def test_single_id_batch_uses_the_single_thumbnail_path(anon, ids):
    pyr_ds = ids["ds_img"]   # 5 z-sections: z changes the bytes
    plain = anon.get(f"{GW}/get_thumbnails/?id={pyr_ds}").json()[str(pyr_ds)]
    z0 = anon.get(f"{GW}/get_thumbnails/?id={pyr_ds}&z=0").json()[str(pyr_ds)]
    assert plain != z0


def test_plate_grid_shape_and_cells(anon, ids):
    p = ids["p384"]
    data = anon.get(f"{GW}/plate/{p['id']}/0/?_=123").json()
    assert set(data) == {"grid", "collabels", "rowlabels", "image_sizes"}
    assert len(data["grid"]) == 16 and all(len(row) == 24 for row in data["grid"])
    assert data["collabels"] == list(range(1, 25))
    assert data["rowlabels"] == [chr(65 + r) for r in range(16)]
    cells = [c for row in data["grid"] for c in row if c]
    assert 300 < len(cells) < 384 and any(c is None for row in data["grid"] for c in row)
    cell = cells[0]
    assert set(cell) == {"type", "id", "name", "description", "author", "date", "wellId", "field", "thumb_url"}
    assert cell["type"] == "Image" and cell["thumb_url"] == f"{GW}/render_thumbnail/{cell['id']}/"
    assert data["image_sizes"][0].keys() == {"x", "y", "image_id"}
    sized = anon.get(f"{GW}/plate/{p['id']}/?size=64").json()
    assert sized["grid"][0][0]["thumb_url"].endswith("/64/")


def test_plate_fields_and_acquisitions(anon, ids):
    p = ids["p384"]
    run2 = p["acquisitions"][1]
    f2 = anon.get(f"{GW}/plate/{p['id']}/2/").json()
    via_run = anon.get(f"{GW}/plate/{p['id']}/0/{run2['id']}/").json()
    assert [c and c["id"] for row in f2["grid"] for c in row] == [c and c["id"] for row in via_run["grid"] for c in row]
    assert via_run["grid"][0][0]["field"] == 0 and f2["grid"][0][0]["field"] == 2


def test_plate_layouts(anon, sim):
    small = plate(sim.info, "plate024")
    expand = anon.get(f"{GW}/plate/{small['id']}/").json()
    trim = anon.get(f"{GW}/plate/{small['id']}/?layout=trim").json()
    assert (len(expand["grid"]), len(expand["grid"][0])) == (8, 12)
    assert (len(trim["grid"]), len(trim["grid"][0])) == (4, 6)
    edges = plate(sim.info, "idr0002-plate096")
    shrink = anon.get(f"{GW}/plate/{edges['id']}/?layout=shrink").json()
    assert shrink["rowlabels"][0] == "B" and shrink["collabels"][0] == 2 and len(shrink["grid"]) == 7


def test_well_children_and_runs(anon, ids):
    p = ids["p384"]
    wid = p["first_well"]
    all_fields = anon.get(f"{GW}/well/{wid}/children/").json()
    run1 = anon.get(f"{GW}/well/{wid}/children/?run={p['acquisitions'][0]['id']}").json()
    assert len(all_fields) == 4 and len(run1) == 2
    assert {"type", "id", "name", "thumb_url", "position"} <= set(run1[0])


def test_img_data_keys(anon, ids):
    plain = anon.get(f"{GW}/imgData/{ids['img']}/").json()
    for key in ("id", "meta", "perms", "tiles", "interpolate", "size", "pixel_size", "init_zoom", "pixel_range",
                "channels", "split_channel", "rdefs"):
        assert key in plain
    assert plain["tiles"] is False and "levels" not in plain
    assert set(plain["channels"][0]) >= {"emissionWave", "label", "color", "inverted", "reverseIntensity", "family",
                                         "coefficient", "window", "active"}
    assert set(plain["meta"]) >= {"imageName", "projectName", "datasetName", "wellId", "wellSampleId", "pixelsType"}
    pyr = anon.get(f"{GW}/imgData/{ids['pyramid']}/").json()
    assert pyr["tiles"] is True and pyr["levels"] == 5 and pyr["tile_size"] == {"width": 512, "height": 512}
    assert pyr["resolutions"]["0"] == {"sizeX": 8192, "sizeY": 8192}
    assert pyr["zoomLevelScaling"] == {"0": 1.0, "1": 0.5, "2": 0.25, "3": 0.125, "4": 0.0625}
    assert anon.get(f"{GW}/imgData/{ids['img']}/rdefs.model/").json() == "color"
    assert anon.get(f"{GW}/imgData/{ids['img']}/meta/").json() == plain["meta"]
    jsonp = anon.get(f"{GW}/imgData/{ids['img']}/meta/?callback=cb")
    assert jsonp.headers["content-type"].startswith("application/javascript") and jsonp.text.startswith("cb(")


RENDER_CHANGES = ["c=1|100:900$FF0000,-2,-3", "m=g", "ia=1", "q=0.5", "flip=h", "c=1,2,3&p=intmax",
                  'c=1,2&maps=[{"inverted":{"enabled":true}},{}]']


@pytest.mark.parametrize("params", RENDER_CHANGES)
def test_rendering_params_change_bytes(anon, ids, params):
    base = f"{GW}/render_image_region/{ids['ds_img']}/0/0/?region=0,0,256,256"
    plain = anon.get(base)
    assert plain.status_code == 200 and 5_000 < len(plain.content)
    changed = anon.get(f"{base}&{params}")
    assert changed.status_code == 200 and changed.content != plain.content


def test_viewer_state_params_do_not_change_bytes(anon, ids):
    base = f"{GW}/render_image_region/{ids['ds_img']}/0/0/?region=0,0,256,256"
    assert anon.get(f"{base}&zm=50&x=10&y=20&_=1").content == anon.get(base).content


def test_tiles_regions_and_required_args(anon, ids):
    tile = anon.get(f"{GW}/render_image_region/{ids['pyramid']}/0/0/?tile=0,1,1,512,512")
    assert tile.status_code == 200 and decode(tile.content).size == (512, 512)
    assert 40_000 < len(tile.content) < 200_000
    low = anon.get(f"{GW}/render_image_region/{ids['pyramid']}/0/0/?tile=4,0,0")
    assert decode(low.content).size == (512, 512)
    missing = anon.get(f"{GW}/render_image_region/{ids['img']}/0/0/")
    assert missing.status_code == 400 and "tile or region argument required" in missing.text
    assert anon.get(f"{GW}/render_image/{ids['img']}/").status_code == 200
    assert anon.get(f"{GW}/render_image/{ids['img']}/0/0/").status_code == 200


def test_rdef_variants_need_full_c_and_m(anon, ids):
    url = f"{GW}/render_image_region_rdef/{ids['img']}/0/0/?region=0,0,100,100"
    assert anon.get(url).status_code == 400
    assert anon.get(url + "&c=1|0:1000$FF0000&m=x").status_code == 400
    assert anon.get(url + "&c=1|0:1000,2|0:1000$00FF00&m=c").status_code == 400
    assert anon.get(url + "&c=1|0:1000$FF0000,2|0:1000$00FF00&m=c").status_code == 200
    assert anon.get(f"{GW}/render_image_rdef/{ids['img']}/0/0/?c=1|0:1000$FF0000&m=g").status_code == 200


def test_histogram_and_shape_mask(anon, ids):
    hist = anon.get(f"{GW}/histogram_json/{ids['img']}/channel/0/").json()
    assert len(hist["data"]) == 256 and all(isinstance(v, int) for v in hist["data"])
    assert len(anon.get(f"{GW}/histogram_json/{ids['img']}/channel/0/?bins=16").json()["data"]) == 16
    shape_id = 10_000_000 + 2 * ids["img"]
    mask = anon.get(f"{GW}/render_shape_mask/{shape_id}/")
    assert mask.status_code == 200 and mask.headers["content-type"] == "image/png"
    assert decode(mask.content).mode == "RGBA"


def test_webclient_placeholders(anon, ids):
    for url in ("/webclient/render_thumbnail/999/", "/webclient/render_thumbnail/size/64/999/"):
        r = anon.get(url)
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        assert r.content.startswith(b"\x89PNG")
    assert anon.get(f"{GW}/render_thumbnail/999/").status_code == 404
    # get_thumbnails has no _defcb, on the webclient either (wc/urls.py:128-131)
    assert anon.get("/webclient/get_thumbnails/?id=999&id=998").json() == {"999": None, "998": None}
    assert anon.get("/webclient/get_thumbnail/999/").json().startswith("data:image/jpeg;base64,iVBORw0KGgo")
    ok = anon.get(f"/webclient/render_thumbnail/{ids['img']}/")
    assert ok.content.startswith(b"\xff\xd8")


BAD = ["/webgateway/render_thumbnail/abc/", "/webgateway/render_image_region/1/0/0/?tile=a,b",
       "/webgateway/render_image_region/{img}/0/0/?tile=9,0,0", "/webgateway/render_image_region/{img}/0/0/?region=-1,0,5,5",
       "/webgateway/render_image_region/{img}/0/0/?region=0,0,10,10&c=x", "/webgateway/render_image_region/{img}/0/0/?region=0,0,10,10&q=zz",
       "/webgateway/render_image_region/{img}/0/0/?region=0,0,10,10&maps=nope", "/webgateway/render_image/{img}/99/0/",
       "/webgateway/histogram_json/{img}/channel/9/", "/webgateway/histogram_json/{img}/channel/0/?bins=x",
       "/webgateway/imgData/{img}/nokey/", "/webgateway/plate/{plate}/99/",
       "/webgateway/render_thumbnail/{img}/?z=99", "/webgateway/render_shape_mask/5/"]


@pytest.mark.parametrize("url", BAD)
def test_bad_input_is_4xx_never_500(anon, ids, url):
    r = anon.get(url.format(img=ids["img"], plate=ids["p384"]["id"]))
    assert r.status_code < 500, r.text
    assert "Traceback" not in r.text
    if r.headers.get("content-type", "").startswith("application/json"):
        json.loads(r.text)
