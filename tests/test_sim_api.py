"""The sim's JSON API v0: envelope, pagination, ordering, links, filters, errors."""
from __future__ import annotations

import pytest

from tests.helpers import plate, sim_fixtures

pytestmark = pytest.mark.process

M = "/api/v0/m"
SCHEMA = "http://www.openmicroscopy.org/Schemas/OME/2016-06#"


sim, anon = sim_fixtures()


def test_index_base_token_servers(anon, sim):
    r = anon.get("/api/")
    assert r.json() == {"data": [{"version": "0", "url:base": f"{sim.url}/api/v0/"}]}
    assert r.headers["X-OMERO-ApiVersion"] == "0.2"
    base = anon.get("/api/v0/").json()
    for key in ("experimenters", "experimentergroups", "projects", "datasets", "images", "screens", "plates",
                "rois", "token", "servers", "login", "save", "schema"):
        assert f"url:{key}" in base
    token = anon.get("/api/v0/token/")
    assert token.json()["data"] == token.cookies["csrftoken"]
    assert anon.get("/api/v0/servers/").json()["data"][0]["id"] == 1


def test_envelope_and_pagination(anon):
    first = anon.get(f"{M}/images/?limit=5")
    body = first.json()
    assert first.headers["X-OMERO-ApiVersion"] == "0.2"
    assert set(body) == {"data", "meta"}
    total = body["meta"]["totalCount"]
    assert body["meta"] == {"offset": 0, "limit": 5, "maxLimit": 500, "totalCount": total} and total > 1000
    second = anon.get(f"{M}/images/?limit=5&offset=5").json()
    assert [i["@id"] for i in second["data"]] != [i["@id"] for i in body["data"]]
    assert len(anon.get(f"{M}/images/").json()["data"]) == 200
    assert anon.get(f"{M}/images/?limit=9999").json()["meta"]["limit"] == 500
    assert anon.get(f"{M}/images/?limit=-3").json()["meta"]["limit"] == 200
    counts = anon.get(f"{M}/images/?limit=0").json()
    assert counts["data"] == [] and counts["meta"]["totalCount"] == total
    for bad in ("limit=abc", "offset=x", "screen=s"):
        r = anon.get(f"{M}/images/?{bad}")
        assert r.status_code == 400 and "message" in r.json()


def test_pages_cover_the_list_in_name_order(anon):
    names, offset = [], 0
    while True:
        page = anon.get(f"{M}/images/?limit=500&offset={offset}").json()
        names += [i["Name"] for i in page["data"]]
        offset += 500
        if offset >= page["meta"]["totalCount"]:
            break
    assert len(names) == page["meta"]["totalCount"] == len(set(names))
    assert names == sorted(names, key=str.lower)
    screens = [s["Name"] for s in anon.get(f"{M}/screens/").json()["data"]]
    assert screens == sorted(screens, key=str.lower)


def test_objects_types_and_absolute_links(anon, sim):
    p = plate(sim.info, "plate384")
    one = anon.get(f"{M}/plates/{p['id']}/", headers={"Host": "example.org:8443"}).json()["data"]
    assert one["@type"] == SCHEMA + "Plate" and one["Rows"] == 16 and one["Columns"] == 24
    assert one["url:wells"] == f"http://example.org:8443/api/v0/m/plates/{p['id']}/wells/"
    assert one["omero:wellsampleIndex"] == [0, 3] and len(one["url:wellsampleindex_wells"]) == 4
    details = one["omero:details"]
    assert details["owner"]["UserName"] == "curator" and details["group"]["Name"] == "public"
    assert details["permissions"]["perm"] == "rwr---"
    screen = anon.get(f"{M}/screens/{p['screen']}/").json()["data"]
    assert screen["@type"] == SCHEMA + "Screen" and screen["url:plates"].startswith(sim.url)


def test_wells_with_samples_and_acquisitions(anon, sim):
    p = plate(sim.info, "plate384")
    wells = anon.get(f"{M}/plates/{p['id']}/wells/?limit=500").json()
    assert wells["meta"]["totalCount"] == 384
    order = [(w["Column"], w["Row"]) for w in wells["data"]]
    assert order == sorted(order)
    full = next(w for w in wells["data"] if "WellSamples" in w)
    sample = full["WellSamples"][0]
    assert sample["@type"] == SCHEMA + "WellSample" and sample["Image"]["@type"] == SCHEMA + "Image"
    assert sample["Image"]["url:image"].endswith(f"/images/{sample['Image']['@id']}/")
    assert sample["PlateAcquisition"]["@id"] == p["acquisitions"][0]["id"]
    assert len(full["WellSamples"]) == 4
    acqs = anon.get(f"{M}/plates/{p['id']}/plateacquisitions/").json()["data"]
    assert [a["@id"] for a in acqs] == [a["id"] for a in p["acquisitions"]]
    assert acqs[1]["omero:wellsampleIndex"] == [2, 3]
    run_wells = anon.get(f"{M}/plateacquisitions/{acqs[1]['@id']}/wells/?limit=1").json()["data"][0]
    assert all(ws["PlateAcquisition"]["@id"] == acqs[1]["@id"] for ws in run_wells["WellSamples"])
    assert len(run_wells["WellSamples"]) == 2
    index = anon.get(f"{M}/plates/{p['id']}/wellsampleindex/1/wells/?limit=1").json()["data"][0]
    assert len(index["WellSamples"]) == 1
    single = anon.get(f"{M}/wells/{full['@id']}/").json()["data"]
    assert "Pixels" in single["WellSamples"][0]["Image"]


def test_child_routes_and_filters(anon, sim):
    p = plate(sim.info, "plate384")
    via_child = anon.get(f"{M}/screens/{p['screen']}/plates/").json()["data"]
    via_filter = anon.get(f"{M}/plates/?screen={p['screen']}").json()["data"]
    assert via_child == via_filter and p["id"] in [x["@id"] for x in via_child]
    assert anon.get(f"{M}/plates/{p['id']}/screens/").json()["data"][0]["@id"] == p["screen"]
    project = sim.info["projects"][0]
    datasets = anon.get(f"{M}/projects/{project['id']}/datasets/").json()["data"]
    assert sorted(d["@id"] for d in datasets) == sorted(project["datasets"])
    ds = datasets[0]["@id"]
    images = anon.get(f"{M}/datasets/{ds}/images/").json()["data"]
    assert images and "Pixels" in images[0] and images[0]["Pixels"]["SizeX"] > 0
    assert anon.get(f"{M}/images/{images[0]['@id']}/datasets/").json()["data"][0]["@id"] == ds
    single = anon.get(f"{M}/images/{images[0]['@id']}/").json()["data"]
    assert "Channels" in single["Pixels"]
    assert anon.get(f"{M}/images/{images[0]['@id']}/rois/").json()["data"][0]["@type"] == SCHEMA + "ROI"
    owned = anon.get(f"{M}/screens/?owner=3").json()["meta"]["totalCount"]
    assert owned == anon.get(f"{M}/screens/").json()["meta"]["totalCount"]
    assert anon.get(f"{M}/screens/?owner=4").json()["meta"]["totalCount"] == 0
    counted = anon.get(f"{M}/projects/?childCount=true").json()["data"][0]
    assert counted["omero:childCount"] == len(project["datasets"])


def test_orphans_are_enumerable(anon, sim):
    orphan_ds = anon.get(f"{M}/datasets/?orphaned=true").json()["data"]
    assert {d["@id"] for d in orphan_ds} == set(sim.info["orphans"]["datasets"]) & {d["@id"] for d in orphan_ds}
    assert orphan_ds
    orphan_imgs = anon.get(f"{M}/images/?orphaned=true").json()["data"]
    assert {i["@id"] for i in orphan_imgs} == set(sim.info["orphans"]["images"]["curator"])


def test_not_found_and_private(anon, sim):
    r = anon.get(f"{M}/screens/9/")
    assert r.status_code == 404 and r.json() == {"message": "Screen 9 not found"}
    private = sim.info["private"]["lab-a"]
    assert anon.get(f"{M}/images/{private['images'][0]}/").status_code == 404
    assert anon.get(f"{M}/plates/{private['plates'][0]}/").status_code == 404
    ids = {s["@id"] for s in anon.get(f"{M}/screens/").json()["data"]}
    assert not ids & set(private["screens"])
    assert anon.get(f"{M}/experimenters/").json()["meta"]["totalCount"] == len(sim.info["users"])
