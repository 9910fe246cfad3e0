"""JSONP as OMERO.web's @jsonp does it (gw/views.py:1426-1475), and what each JSON view answers for
objects it cannot find (its own 500 `""`, `[]`, or a Python error as JSON 500, never wrapped)."""
from __future__ import annotations

from contextlib import closing

import pytest

from tests.helpers import Sim, plate, sim_fixtures

GW = "/webgateway"
NAME = "jQuery36008219_1700000000000"

sim, anon = sim_fixtures()


@pytest.fixture(scope="module")
def ids(sim: Sim) -> dict:
    p = plate(sim.info, "plate384")
    project = sim.info["projects"][0]
    return {"img": sim.info["public_images"][0], "img2": sim.info["public_images"][2], "plate": p["id"],
            "acq": p["acquisitions"][1]["id"], "well": p["first_well"], "project": project["id"],
            "dataset": project["datasets"][0], "share": 7}


JSONP_URLS = [
    "{gw}/imgData/{img}/", "{gw}/imgData/{img}/meta/", "{gw}/wellData/{well}/", "{gw}/plate/{plate}/",
    "{gw}/plate/{plate}/1/", "{gw}/plate/{plate}/0/{acq}/", "{gw}/get_thumbnails/?id={img}&id={img2}",
    "{gw}/get_thumbnails/64/?id={img}", "{gw}/get_thumbnail/{img}/", "{gw}/get_thumbnail/{img}/64/",
    "{gw}/well/{well}/children/", "{gw}/dataset/{dataset}/children/", "{gw}/dataset/{dataset}/detail/",
    "{gw}/proj/list/", "{gw}/proj/{project}/children/", "{gw}/proj/{project}/detail/",
    "/webclient/imgData/{img}/", "/webclient/{share}/imgData/{img}/", "/webclient/get_thumbnails/?id={img}&id={img2}",
    "/webclient/get_thumbnails/{share}/?id={img}", "/webclient/get_thumbnail/{img}/",
    "/webclient/get_thumbnail/{img}/{share}/", "/webclient/get_thumbnail/999/",
]


def _with(url: str, **params: str) -> str:
    return url + ("&" if "?" in url else "?") + "&".join(f"{k}={v}" for k, v in params.items())


@pytest.mark.parametrize("template", JSONP_URLS)
def test_callback_wraps_the_same_json(anon, ids, template):
    url = template.format(gw=GW, **ids)
    plain = anon.get(url)
    assert plain.status_code == 200 and plain.headers["content-type"] == "application/json"
    wrapped = anon.get(_with(url, callback=NAME, _="1700000000001"))
    assert wrapped.status_code == 200 and wrapped.headers["content-type"] == "application/javascript"
    assert wrapped.text == f"{NAME}({plain.text})"
    bad = anon.get(_with(url, callback="alert(document.cookie)//"))
    assert (bad.status_code, bad.text) == (400, "Invalid callback")
    assert bad.headers["content-type"] == "text/html; charset=utf-8"


@pytest.mark.parametrize("name", ["", "1abc", "a-b", "a.b", "a b"])
def test_invalid_names(anon, ids, name):
    r = anon.get(f"{GW}/proj/list/?callback={name}")
    assert (r.status_code, r.text) == (400, "Invalid callback")


def test_view_errors_stay_json_500_without_the_wrapper(anon, ids):
    over = anon.get(f"{GW}/get_thumbnails/", params=[("id", ids["img"] + k) for k in range(51)] + [("callback", NAME)])
    assert (over.status_code, over.text) == (500, "Max 50 thumbnails at a time.")
    assert over.headers["content-type"] == "text/javascript"
    for query, message in (("id=x", "invalid literal for int() with base 10: 'x'"),
                           ("id=1&id=", "invalid literal for int() with base 10: ''")):
        for callback in ("", f"&callback={NAME}", "&callback=1bad"):   # the view runs before the name is checked
            r = anon.get(f"{GW}/get_thumbnails/?{query}{callback}")
            assert r.status_code == 500 and r.headers["content-type"] == "application/json"
            assert r.json()["message"] == message and "stacktrace" in r.json()


def _empty_well(anon, ids) -> int:
    grid = anon.get(f"{GW}/plate/{ids['plate']}/?layout=trim").json()["grid"]
    row, col = next((r, c) for r, cells in enumerate(grid) for c, cell in enumerate(cells) if cell is None)
    return ids["well"] + row * len(grid[0]) + col


def test_missing_objects_answer_as_each_view_does(anon, sim, ids):
    private_ds = sim.info["private"]["lab-a"]["datasets"][0]
    for url in (f"{GW}/wellData/1/", f"{GW}/well/1/children/", f"{GW}/dataset/99999/children/",
                f"{GW}/dataset/{private_ds}/children/"):
        r = anon.get(_with(url, callback=NAME))
        assert (r.status_code, r.text, r.headers["content-type"]) == (500, '""', "text/javascript"), url
    none = anon.get(f"{GW}/proj/99999/children/?callback={NAME}")
    assert (none.status_code, none.text, none.headers["content-type"]) == (200, "[]", "application/javascript")
    private_plate = sim.info["private"]["lab-b"]["plates"][0]
    errors = {f"{GW}/proj/99999/detail/": "'NoneType' object has no attribute 'simpleMarshal'",
              f"{GW}/dataset/99999/detail/": "'NoneType' object has no attribute 'simpleMarshal'",
              f"{GW}/wellData/{_empty_well(anon, ids)}/": "'NoneType' object has no attribute 'simpleMarshal'",
              f"{GW}/plate/1/": "Object of type type is not JSON serializable",
              f"{GW}/plate/{private_plate}/": "Object of type type is not JSON serializable",
              f"{GW}/get_thumbnail/999/": "Failed to render thumbnail",
              f"{GW}/well/{ids['well']}/children/?run=x": "invalid literal for int() with base 10: 'x'",
              f"{GW}/plate/{ids['plate']}/?size=big": "invalid literal for int() with base 10: 'big'",
              f"{GW}/imgData/{ids['img']}/meta.imageName.x/": "'str' object has no attribute 'get'"}
    for url, message in errors.items():
        r = anon.get(_with(url, callback=NAME))
        assert r.status_code == 500 and r.headers["content-type"] == "application/json", url
        assert r.json()["message"] == message, url
    missing = anon.get(f"{GW}/imgData/999/?callback={NAME}")
    assert (missing.status_code, missing.content) == (403, b"")       # the public user
    assert anon.get(f"{GW}/imgData/{ids['img']}/nokey/?callback=cb").text == "cb(null)"


def test_container_json(anon, sim, ids):
    projects = anon.get(f"{GW}/proj/list/").json()
    assert {"id": ids["project"], "name": sim.info["projects"][0]["name"], "description": ""} in projects
    assert not {p["id"] for p in projects} & {p["id"] for p in sim.info["projects"] if not p["public"]}
    children = anon.get(f"{GW}/proj/{ids['project']}/children/").json()
    assert [d["id"] for d in children] == sim.info["projects"][0]["datasets"]
    assert set(children[0]) == {"type", "id", "name", "description", "child_count"} and children[0]["type"] == "Dataset"
    assert anon.get(f"{GW}/proj/{ids['project']}/detail/").json()["type"] == "Project"
    images = anon.get(f"{GW}/dataset/{ids['dataset']}/children/").json()
    assert images[0]["thumb_url"] == f"{GW}/render_thumbnail/{images[0]['id']}/" and "tiled" not in images[0]
    pyramids = next(d for d in sim.info["datasets"] if "pyramids" in d["name"])["id"]
    tiled = anon.get(f"{GW}/dataset/{pyramids}/children/?tiled=false").json()    # any value switches it on
    assert tiled[0]["tiled"] is True and tiled[0]["size"] == {"width": 8192, "height": 8192}
    well = anon.get(f"{GW}/wellData/{ids['well']}/").json()
    assert well["wellPos"] == "A1" and well["wellId"] == ids["well"] and well["plateId"] == ids["plate"]
    fields = anon.get(f"{GW}/well/{ids['well']}/children/").json()
    assert fields[0]["name"].endswith(" [Run: Run 1]") and fields[0]["position"]["x"]["unit"] == "MICROMETER"


def test_save_img_rdef_echoes_its_callback(sim):
    image = sim.info["public_images"][5]
    with closing(sim.login("carol")) as carol:
        r = carol.post(f"/webgateway/saveImgRDef/{image}/?c=1|0:900$FF0000,2|0:900$00FF00,3|0:900$0000FF&m=c"
                       "&callback=done")
        assert (r.status_code, r.text, r.headers["content-type"]) == (200, "done(true)", "application/javascript")


def test_microservice_callbacks_are_not_checked(sim):
    img = sim.info["public_images"][0]
    with sim.client() as c:
        token = c.get("/api/v0/token/").json()["data"]
        key = c.post("/api/v0/login/", data={"username": "bob", "password": sim.password("bob"), "server": "1"},
                     headers={"X-CSRFToken": token}).json()["eventContext"]["sessionUuid"]
    with sim.ms(headers={"X-OMERO-Session-Key": key}) as ms:
        plain = ms.get(f"/webgateway/imgData/{img}").text
        r = ms.get(f"/webgateway/imgData/{img}?callback=a.b")
        assert (r.text, r.headers["content-type"]) == (f"a.b({plain})", "application/javascript")
        batch = ms.get(f"/webgateway/get_thumbnails_ngff?imageId={img}&callback=cb")
        assert batch.text.startswith("cb({") and batch.text.endswith("});")
