"""The sim answers the webclient's browsing requests (docs/browse.md) as OMERO.web does: the tree JSON,
map annotations with parents, the HTML panels and plate page, the never-cacheable pages and their
cookies, per-viewer permission flags, private objects hidden, `Vary: Cookie` (issue 18 item 4).

Most tests drive the Starlette app in-process (Starlette's TestClient); the last ones use the real
`bench sim` process with Redis sessions (stats, a session's active group kept in Redis)."""
from __future__ import annotations

import json
import re
import time
import warnings
from collections.abc import Iterator
from contextlib import closing

import httpx
import pytest
with warnings.catch_warnings():     # Starlette's note that it prefers httpx2
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from bench.sim.app import create_app
from bench.sim.config import SimConfig

WC, GW = "/webclient", "/webgateway"
PUBLIC_GID, LAB_A, LAB_B = 3, 4, 5
CURATOR, ALICE, BOB = 3, 4, 5
SCREEN_A, SCREEN_B, BOB_SCREEN = 1, 2, 4
PLATE_384, BOB_PLATE = 1001, 1006
WELL_A1, IMAGE_A1 = 10001, 1000001
PROJECT, DATASET = 101, 201
OWNER_CSS = "canEdit canAnnotate canLink canDelete canChgrp isOwned"
ACTIVE_GROUP = re.compile(r"WEBCLIENT\.active_group_id = (-?\d+);")
USER = re.compile(r"WEBCLIENT\.USER = \{'id': (\d+), 'fullName': \"([^\"]*)\"\};")

BROWSE_URLS = [
    f"{WC}/api/experimenters/-1/?page=1&group={PUBLIC_GID}",
    f"{WC}/api/containers/?id=-1&experimenter_id=-1&page=0&group={PUBLIC_GID}",
    f"{WC}/api/plates/?id={SCREEN_A}&page=0&group={PUBLIC_GID}",
    f"{WC}/api/plate_acquisitions/?id={PLATE_384}&page=0&group={PUBLIC_GID}",
    f"{WC}/api/datasets/?id={PROJECT}&page=0&group={PUBLIC_GID}",
    f"{WC}/api/images/?id={DATASET}&page=1&sizeXYZ=true&date=true&group={PUBLIC_GID}",
    f"{WC}/api/annotations/?type=map&parents=true&screen={SCREEN_A}",
    f"{WC}/api/annotations/?type=map&parents=true&well={WELL_A1}",
    f"{WC}/metadata_details/screen/{SCREEN_A}/",
    f"{WC}/metadata_details/plate/{PLATE_384}/",
    f"{WC}/metadata_details/well/{WELL_A1}/?index=0",
    f"{WC}/metadata_details/image/{IMAGE_A1}/",
    f"{WC}/metadata_details/project/{PROJECT}/",
    f"{WC}/metadata_details/dataset/{DATASET}/",
    f"{WC}/metadata_acquisition/image/{IMAGE_A1}/",
    f"{WC}/metadata_preview/image/{IMAGE_A1}/",
    f"{WC}/metadata_hierarchy/image/{IMAGE_A1}/",
    f"{WC}/load_plate/plate/{PLATE_384}/?index=0",
    f"{WC}/load_plate/acquisition/5002/?index=0",
    f"{GW}/annotations/Screen/{SCREEN_A}/",
    f"{GW}/table/{7_000_000 + SCREEN_A}/query/?query=*",
]
PAGES = [f"{WC}/?experimenter=-1", *(f"{WC}/{m}/" for m in ("userdata", "usertags", "public", "history", "search",
                                                              "help"))]


@pytest.fixture(scope="module")
def app():
    return create_app(SimConfig(speed=0))


@pytest.fixture
def anon(app) -> Iterator[TestClient]:
    with TestClient(app, base_url="http://sim") as c:
        yield c


def login(app, username: str) -> TestClient:
    c = TestClient(app, base_url="http://sim")
    token = c.get("/api/v0/token/").json()["data"]
    r = c.post("/api/v0/login/", data={"username": username, "password": f"{username}-pw", "server": "1"},
               headers={"X-CSRFToken": token})
    assert r.status_code == 200, r.text
    return c


@pytest.fixture
def curator(app) -> Iterator[TestClient]:
    with login(app, "curator") as c:
        yield c


@pytest.fixture
def bob(app) -> Iterator[TestClient]:
    with login(app, "bob") as c:
        yield c


# ---- tree JSON ------------------------------------------------------------------------------------
def test_containers_shape_for_the_public_user(anon):
    r = anon.get(f"{WC}/api/containers/?id=-1&experimenter_id=-1&page=0&group={PUBLIC_GID}")
    body = r.json()
    assert list(body) == ["projects", "datasets", "screens", "plates", "orphaned"]
    screens = body["screens"]
    assert [s["id"] for s in screens] == [SCREEN_A, SCREEN_B]
    assert screens[0] == {"id": SCREEN_A, "name": "idr0001-sim/screenA", "ownerId": CURATOR, "childCount": 2,
                          "permsCss": ""}
    assert [p["id"] for p in body["projects"]] == [PROJECT] and body["projects"][0]["childCount"] == 2
    assert [d["name"] for d in body["datasets"]] == ["idr0004-ds-orphaned"]        # not in a project
    assert body["plates"] == []                                                      # all plates are in screens
    assert body["orphaned"] == {"id": -1, "childCount": 4, "name": "Orphaned Images"}


def test_tree_children_lists(anon):
    plates = anon.get(f"{WC}/api/plates/?id={SCREEN_A}&page=0&group={PUBLIC_GID}").json()["plates"]
    assert [(p["id"], p["childCount"]) for p in plates] == [(1002, 1), (1001, 2)]   # lower(name): plate096 < plate384
    runs = anon.get(f"{WC}/api/plate_acquisitions/?id={PLATE_384}&page=0&group={PUBLIC_GID}").json()
    assert runs == {"acquisitions": [{"id": 5001, "name": "Run 1", "ownerId": CURATOR, "permsCss": ""},
                                     {"id": 5002, "name": "Run 2", "ownerId": CURATOR, "permsCss": ""}]}
    assert anon.get(f"{WC}/api/plate_acquisitions/").status_code == 400
    datasets = anon.get(f"{WC}/api/datasets/?id={PROJECT}&page=0&group={PUBLIC_GID}").json()["datasets"]
    assert [(d["id"], d["childCount"]) for d in datasets] == [(201, 12), (202, 4)]
    exp = anon.get(f"{WC}/api/experimenters/-1/?page=1&group={PUBLIC_GID}").json()
    assert exp == {"experimenter": {"id": -1, "omeName": "All members", "firstName": "All members", "lastName": ""}}
    assert anon.get(f"{WC}/api/experimenters/{CURATOR}/").json()["experimenter"]["omeName"] == "curator"
    assert anon.get(f"{WC}/api/experimenters/999/").status_code == 404


def test_images_fields_options_and_paging(anon):
    base = f"{WC}/api/images/?id={DATASET}&group={PUBLIC_GID}"
    full = anon.get(f"{base}&page=1&sizeXYZ=true&date=true").json()["images"]
    assert len(full) == 12 and [i["name"] for i in full] == sorted(i["name"] for i in full)
    first = full[0]
    assert list(first) == ["id", "archived", "name", "ownerId", "permsCss", "filesetId", "sizeX", "sizeY", "sizeZ",
                           "sizeT", "date", "acqDate"]
    assert (first["sizeX"], first["sizeY"], first["sizeZ"], first["sizeT"]) == (1024, 768, 5, 3)
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$", first["date"])
    bare = anon.get(f"{base}&page=1").json()["images"][0]
    assert "sizeX" not in bare and "date" not in bare
    pages = [anon.get(f"{base}&page={n}&limit=5").json()["images"] for n in (1, 2, 3, 4)]
    assert [len(p) for p in pages] == [5, 5, 2, 0]
    assert [i["id"] for p in pages for i in p] == [i["id"] for i in full]
    assert len(anon.get(f"{base}&page=0&limit=5").json()["images"]) == 12     # page 0: no paging
    bad = anon.get(f"{base}&page=x")
    assert bad.status_code == 400 and bad.text == "Invalid parameter value"


def test_owner_and_public_flags_differ(anon, curator, app):
    url = f"{WC}/api/plates/?id={SCREEN_A}&page=0&group={PUBLIC_GID}"
    assert {p["permsCss"] for p in curator.get(url).json()["plates"]} == {OWNER_CSS}
    assert {p["permsCss"] for p in anon.get(url).json()["plates"]} == {""}
    with TestClient(app, base_url="http://sim") as other:       # another anonymous visitor: the same bytes
        for u in (url, f"{WC}/metadata_details/screen/{SCREEN_A}/", f"{WC}/api/annotations/?type=map&screen=1"):
            assert other.get(u).content == anon.get(u).content, u
    ann = curator.get(f"{WC}/api/annotations/?type=map&screen={SCREEN_A}").json()["annotations"][0]
    assert ann["permissions"] == {"canDelete": True, "canAnnotate": True, "canLink": True, "canEdit": True}


def test_private_objects_hidden_from_the_public_user_visible_to_members(anon, bob):
    assert anon.get(f"{WC}/api/plates/?id={BOB_SCREEN}&page=0&group={LAB_B}").status_code == 403
    assert anon.get(f"{WC}/api/plates/?id={BOB_SCREEN}&page=0&group={PUBLIC_GID}").json() == {"plates": []}
    assert anon.get(f"{WC}/api/plates/?id={BOB_SCREEN}&page=0&group=-1").json() == {"plates": []}
    assert anon.get(f"{WC}/api/plate_acquisitions/?id={BOB_PLATE}").json() == {"acquisitions": []}
    everything = anon.get(f"{WC}/api/containers/?id=-1&page=0&group=-1").json()
    assert BOB_SCREEN not in [s["id"] for s in everything["screens"]]
    r = anon.get(f"{WC}/metadata_details/screen/{BOB_SCREEN}/")
    assert r.status_code == 404 and "no permission to see it" in r.text
    ajax = anon.get(f"{WC}/metadata_details/screen/{BOB_SCREEN}/", headers={"X-Requested-With": "XMLHttpRequest"})
    assert ajax.status_code == 404 and ajax.text.startswith("We are sorry, but that Screen (id:4)")
    assert anon.get(f"{WC}/load_plate/plate/{BOB_PLATE}/").status_code == 404
    assert anon.get(f"{WC}/api/annotations/?type=map&screen={BOB_SCREEN}").json()["annotations"] == []
    assert anon.get(f"{GW}/annotations/Screen/{BOB_SCREEN}/").json() == {"data": []}
    # bob, a member of lab-b, sees his screen
    mine = bob.get(f"{WC}/api/containers/?id=-1&page=0&group={LAB_B}").json()
    assert [s["id"] for s in mine["screens"]] == [BOB_SCREEN] and mine["screens"][0]["permsCss"] == OWNER_CSS
    assert bob.get(f"{WC}/api/plates/?id={BOB_SCREEN}&page=0&group={LAB_B}").json()["plates"][0]["id"] == BOB_PLATE
    assert bob.get(f"{WC}/metadata_details/screen/{BOB_SCREEN}/").status_code == 200
    assert bob.get(f"{WC}/api/annotations/?type=map&screen={BOB_SCREEN}").json()["annotations"]


# ---- annotations ----------------------------------------------------------------------------------------
def test_map_annotations_with_parents(anon):
    url = f"{WC}/api/annotations/?type=map&parents=true&image={IMAGE_A1}"
    body = anon.get(url).json()
    assert list(body) == ["annotations", "parents", "experimenters"]
    assert {a["link"]["parent"]["class"] for a in body["annotations"]} == {"ImageI"}
    assert all(a["class"] == "MapAnnotationI" and a["values"] for a in body["annotations"])
    parents = body["parents"]
    assert {a["link"]["parent"]["class"] for a in parents["annotations"]} == {"WellI", "PlateI", "ScreenI"}
    assert parents["lineage"]["WellI"] == {str(WELL_A1): [{"id": IMAGE_A1, "class": "ImageI",
                                                            "name": "idr0001-plate384-001 [Well A01, Field 1]"}]}
    assert set(parents["lineage"]) == {"WellI", "PlateI", "ScreenI"}
    assert body["experimenters"] == [{"id": CURATOR, "omeName": "curator", "firstName": "Ida", "lastName": "Curator"}]
    well = next(a for a in parents["annotations"] if a["link"]["parent"]["class"] == "WellI")
    assert well["link"]["parent"]["name"] == "A1"
    # deterministic: the same values on every request, derived from the ids
    assert anon.get(url).json() == body
    flat = anon.get(f"{WC}/api/annotations/?type=map&image={IMAGE_A1}").json()
    assert list(flat) == ["annotations", "experimenters"] and flat["annotations"] == body["annotations"]


def test_annotation_filters_repeated_ids_and_paging(anon):
    two = anon.get(f"{WC}/api/annotations/?type=map&well={WELL_A1}&well={WELL_A1 + 3}").json()["annotations"]
    assert {a["link"]["parent"]["id"] for a in two} == {WELL_A1, WELL_A1 + 3}
    gene = anon.get(f"{WC}/api/annotations/?type=map&ns=openmicroscopy.org/mapr/gene&well={WELL_A1}&well={WELL_A1 + 3}")
    assert {a["ns"] for a in gene.json()["annotations"]} == {"openmicroscopy.org/mapr/gene"}
    assert len(gene.json()["annotations"]) == 2
    page1 = anon.get(f"{WC}/api/annotations/?type=map&screen=1&page=1&limit=1").json()["annotations"]
    page2 = anon.get(f"{WC}/api/annotations/?type=map&screen=1&page=2&limit=1").json()["annotations"]
    assert len(page1) == len(page2) == 1 and page1[0]["id"] != page2[0]["id"]
    files = anon.get(f"{WC}/api/annotations/?type=file&screen={SCREEN_A}").json()["annotations"]
    assert [(a["class"], a["file"]["mimetype"]) for a in files] == [("FileAnnotationI", "OMERO.tables")]
    assert anon.get(f"{WC}/api/annotations/?type=tag&screen={SCREEN_A}").json()["annotations"] == []
    assert anon.get(f"{WC}/api/annotations/?screen=x").status_code == 500


def test_bulk_annotations_and_table_query(anon):
    data = anon.get(f"{GW}/annotations/Screen/{SCREEN_A}/").json()["data"]
    assert len(data) == 1 and data[0]["ns"] == "openmicroscopy.org/omero/bulk_annotations"
    assert data[0]["parentType"] == "Screen" and data[0]["owner"] == "Ida Curator"
    via_well = anon.get(f"{GW}/annotations/Screen.plateLinks.child.wells/{WELL_A1}/").json()["data"]
    assert [d["file"] for d in via_well] == [data[0]["file"]]
    assert "cannot be queried" in anon.get(f"{GW}/annotations/Nonsense/1/").json()["error"]
    table = f"{GW}/table/{data[0]['file']}/query/"
    hit = anon.get(f"{table}?query=Well-{WELL_A1}").json()
    assert hit["data"]["columns"][:3] == ["Screen", "Plate", "Well"]
    assert hit["data"]["rows"] == [[SCREEN_A, PLATE_384, WELL_A1, "idr0001-plate384-001", "A1", hit["data"]["rows"][0][5], 4]]
    everything = anon.get(f"{table}?query=*&limit=10&offset=5").json()
    assert len(everything["data"]["rows"]) == 10 and everything["meta"]["offset"] == 5
    assert everything["meta"]["totalCount"] == everything["meta"]["rowCount"] > 300
    assert anon.get(f"{GW}/table/{7_000_000 + BOB_SCREEN}/query/?query=*").json() == {"error": "Table 7000004 not found"}
    assert "error" in anon.get(table).json()


# ---- HTML panels ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("url", [u for u in BROWSE_URLS if "metadata_details" in u or "load_plate" in u])
def test_panels_are_realistic_html(anon, url):
    r = anon.get(url)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert len(r.content) > 4000, len(r.content)
    assert "csrfmiddlewaretoken" not in r.text


def test_well_panel_follows_index_and_plate_page_fields(anon):
    field0 = anon.get(f"{WC}/metadata_details/well/{WELL_A1}/?index=0").text
    field2 = anon.get(f"{WC}/metadata_details/well/{WELL_A1}/?index=2").text
    assert "Well A01, Field 1]" in field0 and "Well A01, Field 3]" in field2
    page = anon.get(f"{WC}/load_plate/plate/{PLATE_384}/?index=3").text
    assert page.count("<option") == 4 and 'value="3" selected' in page and f"wpv.load({PLATE_384}, 3, undefined)" in page
    run = anon.get(f"{WC}/load_plate/acquisition/5002/?index=1").text
    assert run.count("<option") == 2 and f"wpv.load({PLATE_384}, 1, 5002)" in run and "?run=5002" in run
    assert anon.get(f"{WC}/load_plate/acquisition/9999/").status_code == 404
    tabs = [anon.get(f"{WC}/metadata_{t}/image/{IMAGE_A1}/") for t in ("acquisition", "preview", "hierarchy")]
    assert [t.status_code for t in tabs] == [200, 200, 200]
    hierarchy = tabs[2].text
    assert [n in hierarchy for n in ("idr0001-sim/screenA", "idr0001-plate384-001", ">A1</a>")] == [True] * 3
    assert anon.get(f"{WC}/metadata_preview/dataset/{DATASET}/").status_code == 404   # (image|well) only


def test_comment_form_only_for_a_viewer_who_may_annotate(anon, curator, app):
    url = f"{WC}/metadata_details/screen/{SCREEN_A}/"
    public = anon.get(url)
    assert "csrfmiddlewaretoken" not in public.text and "add_comment_form" not in public.text
    assert "csrftoken" not in public.headers.get("set-cookie", "")
    owner = curator.get(url)
    assert 'name="csrfmiddlewaretoken" value="' in owner.text and "csrftoken=" in owner.headers["set-cookie"]
    with login(app, "alice") as alice:          # a member of the public group, but it is read-only
        assert "csrfmiddlewaretoken" not in alice.get(url).text
        assert "csrfmiddlewaretoken" in alice.get(f"{WC}/metadata_details/project/102/").text   # her own


# ---- headers ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("url", BROWSE_URLS + PAGES + [f"{WC}/keepalive_ping/", f"{WC}/activities/",
                                                        f"{WC}/activities_json/", f"{GW}/getImgRDef/", "/api/v0/token/"])
def test_vary_cookie_and_no_cache_control(anon, url):
    r = anon.get(url)
    assert r.status_code == 200, (url, r.status_code, r.text[:200])
    assert "Cookie" in r.headers["vary"] and "cache-control" not in r.headers


def test_open_with_is_not_login_required(anon):
    r = anon.get(f"{GW}/open_with/")
    assert [o["id"] for o in r.json()["open_with_options"]] == ["Image viewer", "omero_iviewer"]
    assert "vary" not in r.headers and "cache-control" not in r.headers
    assert anon.get(f"{GW}/open_with/?callback=cb").text.startswith("cb({")


@pytest.mark.parametrize("url", BROWSE_URLS)
def test_jquery_counter_changes_nothing(anon, url):
    sep = "&" if "?" in url else "?"
    assert anon.get(f"{url}{sep}_=1700000000123").content == anon.get(url).content


# ---- the never-cacheable pages --------------------------------------------------------------------------------
def test_webclient_page_names_group_and_user_and_sets_cookies(anon):
    r = anon.get(f"{WC}/?experimenter=-1")
    assert ACTIVE_GROUP.search(r.text).group(1) == str(PUBLIC_GID)
    assert USER.search(r.text).groups() == ("2", "Public User")
    assert "WEBCLIENT.active_user = {'id': -1" in r.text
    assert 'name="csrfmiddlewaretoken" value="' in r.text
    cookies = r.headers.get_list("set-cookie")
    assert any(c.startswith("csrftoken=") for c in cookies) and any(c.startswith("sessionid=") for c in cookies)
    again = anon.get(f"{WC}/?experimenter=-1")       # an existing session: both cookies sent again
    assert {c.split("=")[0] for c in again.headers.get_list("set-cookie")} == {"csrftoken", "sessionid"}
    for page in PAGES[1:]:
        assert ACTIVE_GROUP.search(anon.get(page).text), page


def test_active_group_switch_is_per_session(app):
    with login(app, "alice") as alice, login(app, "alice") as other:
        assert ACTIVE_GROUP.search(alice.get(f"{WC}/").text).group(1) == str(LAB_A)   # her default group
        r = alice.get(f"{WC}/active_group/?active_group={PUBLIC_GID}", follow_redirects=False)
        assert r.status_code == 302 and r.headers["location"] == f"{WC}/"
        assert ACTIVE_GROUP.search(alice.get(f"{WC}/").text).group(1) == str(PUBLIC_GID)
        assert ACTIVE_GROUP.search(other.get(f"{WC}/").text).group(1) == str(LAB_A)
        alice.get(f"{WC}/active_group/?active_group={LAB_B}")                           # not hers: ignored
        assert ACTIVE_GROUP.search(alice.get(f"{WC}/").text).group(1) == str(PUBLIC_GID)
        back = alice.get(f"{WC}/active_group/?active_group={LAB_A}&url=/webclient/userdata/", follow_redirects=False)
        assert back.headers["location"] == "/webclient/userdata/"


def test_small_never_cacheable_answers(anon, app):
    assert anon.get(f"{WC}/keepalive_ping/").text == "OK"
    assert anon.get(f"{WC}/activities_json/").json() == {"inprogress": 0, "failure": 0, "jobs": 0}
    assert "No Activities" in anon.get(f"{WC}/activities/").text
    token = anon.get("/api/v0/token/")
    assert token.headers["set-cookie"].startswith(f"csrftoken={token.json()['data']}")
    with TestClient(app, base_url="http://sim") as other:
        assert anon.get(f"{GW}/getImgRDef/").json() == {"rdef": None}
        assert anon.get(f"{GW}/copyImgRDef/?fromid={IMAGE_A1}").json() is True
        rdef = anon.get(f"{GW}/getImgRDef/").json()["rdef"]
        assert rdef["m"] == "c" and rdef["c"].count("|") == 3 and len(rdef["maps"]) == 3
        assert other.get(f"{GW}/getImgRDef/").json() == {"rdef": None}   # another session's clipboard


def test_sim_info_names_the_public_user_and_its_group(anon):
    info = anon.get("/_sim/info").json()
    assert info["public_user"] == {"id": 2, "username": "public", "active_group": PUBLIC_GID}
    page = anon.get(f"{WC}/?experimenter=-1").text
    assert ACTIVE_GROUP.search(page).group(1) == str(info["public_user"]["active_group"])
    plate = next(p for p in info["plates"] if p["id"] == PLATE_384)
    assert plate["fields"] == 4 and [a["fields"] for a in plate["acquisitions"]] == [[0, 1], [2, 3]]
    assert next(s for s in info["screens"] if s["id"] == SCREEN_A)["table_file"] == 7_000_000 + SCREEN_A


def test_panel_costs_scale_with_speed():
    with TestClient(create_app(SimConfig(speed=1.0)), base_url="http://sim") as slow:
        slow.get(f"{WC}/keepalive_ping/")                  # the public session exists
        start = time.monotonic()
        assert slow.get(f"{WC}/metadata_details/screen/{SCREEN_A}/").status_code == 200
        assert time.monotonic() - start >= 0.14
        start = time.monotonic()
        slow.get(f"{WC}/load_plate/plate/{PLATE_384}/")
        assert time.monotonic() - start >= 0.09


# ---- the real process: stats and Redis-kept session state ----------------------------------------------------
def test_browsing_requests_are_counted_by_endpoint(sim):
    sim.reset()
    with sim.client() as c:
        for url in BROWSE_URLS:
            assert c.get(url).status_code == 200, url
    stats = sim.stats()
    names = {"webclient:api_containers", "webclient:api_plates", "webclient:api_images", "webclient:api_annotations",
             "webclient:metadata_details", "webclient:load_plate", "webclient:metadata_preview", "annotations",
             "table_query"}
    assert names <= set(stats["requests"]), stats["requests"]
    assert stats["requests"]["webclient:metadata_details"] == 6 and stats["requests"]["webclient:load_plate"] == 2
    assert stats["renders"]["webclient:metadata_details"] == 6
    assert stats["total"]["requests"] == len(BROWSE_URLS)


def test_active_group_and_clipboard_live_in_the_redis_session(sim):
    with closing(sim.login("alice")) as alice:
        alice.get(f"{WC}/active_group/?active_group={PUBLIC_GID}")
        alice.get(f"{GW}/copyImgRDef/?fromid={IMAGE_A1}")
        cookie = alice.cookies["sessionid"]
        with httpx.Client(base_url=sim.url, cookies={"sessionid": cookie}) as same:   # the session read back
            assert ACTIVE_GROUP.search(same.get(f"{WC}/").text).group(1) == str(PUBLIC_GID)
            assert same.get(f"{GW}/getImgRDef/").json()["rdef"] is not None
        assert json.loads(alice.get(f"{WC}/api/experimenters/{ALICE}/").text)["experimenter"]["id"] == ALICE
