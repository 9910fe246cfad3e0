"""OMERO.web's writes through the edge purge what they change (issue 15.1, edge/writes.py).

The table's parsing on its own (what a write names, what its answer says it changed, containers expanded
with the requester's listings), then end to end: a user saves rendering settings through the edge and
the next anonymous request for that image is a miss with the new bytes, while other images stay hits.
"""
from __future__ import annotations

from contextlib import closing

import anyio
import httpx
import pytest

from edge import writes
from edge.keys import parse_query
from tests.helpers import EdgeProc, Launcher, Sim, start_sim


def write(name: str) -> writes.Write:
    return next(w for w in writes.WRITES if w.name == name)


@pytest.mark.parametrize("method, path, name", [
    ("POST", "/webgateway/saveImgRDef/12/", "saveImgRDef"),
    ("POST", "/webclient/saveImgRDef/12/", "saveImgRDef"),
    ("GET", "/webgateway/saveImgRDef/12/", None),  # require_POST: OMERO refuses it, nothing changes
    ("POST", "/webgateway/copyImgRDef/", "copyImgRDef"),
    ("GET", "/webgateway/copyImgRDef/", None),  # ?fromid= only stores the clipboard in the session
    ("POST", "/webgateway/resetRDef/", "resetRDef"),
    ("POST", "/webgateway/applyOwnersRDef/", "applyOwnersRDef"),
    ("POST", "/webclient/edit_channel_names/12/", "edit_channel_names"),
    ("POST", "/webclient/chgrp/", "chgrp"),
    ("POST", "/webclient/chown/", "chown"),
    ("POST", "/webclient/action/delete/dataset/3/", "delete"),
    ("POST", "/webclient/action/deletemany/", "deletemany"),
    ("POST", "/webclient/action/savename/dataset/3/", None),
])
def test_writes_are_recognised_by_method_and_path(method: str, path: str, name: str | None):
    found = writes.match(method, path)
    assert (found.name if found else None) == name


@pytest.mark.parametrize("name, path, form, objects", [
    ("saveImgRDef", "/webgateway/saveImgRDef/12/", "c=1|0:255$FF0000", [("image", 12)]),
    ("copyImgRDef", "/webgateway/copyImgRDef/", "toids=4&toids=5&imageId=9",
     [("image", 9), ("image", 4), ("image", 5)]),
    ("copyImgRDef", "/webgateway/copyImgRDef/", "toids=4&to_type=dataset&imageId=9", [("image", 9), ("dataset", 4)]),
    ("resetRDef", "/webgateway/resetRDef/", "toids=7&to_type=acquisition", [("plateacquisition", 7)]),
    ("applyOwnersRDef", "/webgateway/applyOwnersRDef/", "toids=7&to_type=plate", [("plate", 7)]),
    ("edit_channel_names", "/webclient/edit_channel_names/12/", "channel0=DAPI&confirm_apply=1&parentId=dataset-234",
     [("image", 12), ("dataset", 234)]),
    ("chgrp", "/webclient/chgrp/", "group_id=5&Image=1,2&Dataset=3", [("dataset", 3), ("image", 1), ("image", 2)]),
    ("delete", "/webclient/action/delete/plate/8/", "child=on", [("plate", 8)]),
    ("deletemany", "/webclient/action/deletemany/", "image=1&image=2&well=4&tag=9",
     [("image", 1), ("image", 2), ("well", 4)]),
])
def test_what_a_write_names(name: str, path: str, form: str, objects: list):
    assert writes.named(write(name), path, parse_query(form.encode())) == objects


@pytest.mark.parametrize("name, status, body, ok, images", [
    ("saveImgRDef", 200, b"true", True, []),
    ("saveImgRDef", 200, b"jQuery1_2(true)", True, []),
    ("saveImgRDef", 200, b"false", False, []),
    ("saveImgRDef", 403, b"true", False, []),
    ("copyImgRDef", 200, b'{"true": [4, 5], "false": [6]}', True, [4, 5]),
    ("copyImgRDef", 200, b'{"true": [], "false": [6]}', False, []),
    ("copyImgRDef", 200, b"true", False, []),  # fromid/rdef stored in the session only
    ("resetRDef", 200, b"[11, 12]", True, [11, 12]),
    ("chgrp", 200, b'{"jobIds": ["a"]}', True, []),
    ("chgrp", 200, b'{"Error": "chgrp: No group_id specified"}', False, []),
    ("delete", 200, b'{"bad": "true", "errs": "x"}', False, []),
    ("edit_channel_names", 200, b'{"channelNames": {"channel0": "DAPI"}}', True, []),
    ("edit_channel_names", 200, b'{"error": "No parent found to apply Channel Names"}', False, []),
])
def test_what_an_answer_says_was_changed(name: str, status: int, body: bytes, ok: bool, images: list):
    assert writes.succeeded(write(name), status, body) == (ok, images)


def test_containers_expand_to_their_images_through_the_listings():
    listings = {"/webclient/api/datasets/?id=1&page=0": {"datasets": [{"id": 2}]},
                "/webclient/api/images/?id=2&page=0": {"images": [{"id": 30}, {"id": 31}]},
                "/webgateway/plate/5/0/": {"grid": [[{"id": 40, "wellId": 50}, None]]},
                "/webgateway/plate/5/1/": {"grid": [[{"id": 41, "wellId": 50}]]}}
    asked = []

    async def get(path: str):
        asked.append(path)
        if path == "/webgateway/never/":
            raise writes.ListingFailed(path)
        return listings.get(path)  # None: not found (the plate's field 2)

    found, complete = anyio.run(writes.images_of, [("project", 1), ("plate", 5)], get)
    assert complete and set(found) == {("project", 1), ("dataset", 2), ("image", 30), ("image", 31), ("plate", 5),
                                       ("image", 40), ("image", 41), ("well", 50)}
    assert "/webgateway/plate/5/2/" in asked and "/webgateway/plate/5/3/" not in asked


def test_a_failed_listing_means_purge_everything():
    async def get(path: str):
        raise writes.ListingFailed(path)

    found, complete = anyio.run(writes.images_of, [("dataset", 2)], get)
    assert not complete


# --- end to end ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def own_sim():
    """A simulator of its own: the saved settings must not leak into other modules' expectations."""
    sim = start_sim()
    yield sim
    sim.stop()


def _save(edge_url: str, owner: httpx.Client, image: int, query: dict) -> httpx.Response:
    token = owner.cookies["csrftoken"]
    return httpx.post(f"{edge_url}/webgateway/saveImgRDef/{image}/", params=query, cookies=owner.cookies,
                      headers={"X-CSRFToken": token, "Referer": edge_url + "/"}, timeout=15)


@pytest.mark.process
def test_saved_rendering_settings_purge_the_image_before_the_answer(own_sim: Sim):
    sim, launcher = own_sim, Launcher(own_sim)
    try:
        check_saved_settings_purge(sim, launcher.edge())
    finally:
        launcher.stop_all()


def check_saved_settings_purge(sim: Sim, edge: EdgeProc) -> None:
    image, other = sim.info["datasets"][0]["first_image"], sim.info["datasets"][0]["first_image"] + 1
    owner = next(u["username"] for u in sim.info["users"] if not u["public"] and "public" in u["groups"])
    urls = [f"/webgateway/render_thumbnail/{image}/", f"/webgateway/imgData/{image}/",
            f"/webgateway/render_thumbnail/{other}/"]
    with edge.client() as c:
        before = {u: c.get(u) for u in urls}
        assert all(c.get(u).headers["x-edge-cache"] == "HIT" for u in urls)
        with closing(sim.login(owner)) as session:
            refused = _save(edge.url, session, image, {"c": "1|0:10$FF0000", "m": "x"})  # bad model: 400
            assert refused.status_code == 400
            assert all(c.get(u).headers["x-edge-cache"] == "HIT" for u in urls)
            saved = _save(edge.url, session, image, {"c": "1|0:40$FF0000,-2|0:255$00FF00", "m": "c"})
        assert (saved.status_code, saved.text, saved.headers["x-edge-cache"]) == (200, "true", "BYPASS")
        after = {u: c.get(u) for u in urls}
        assert [after[u].headers["x-edge-cache"] for u in urls] == ["MISS", "MISS", "HIT"]
        assert after[urls[0]].content != before[urls[0]].content  # the owner's new settings show
        assert after[urls[0]].content == httpx.get(sim.url + urls[0]).content
        assert after[urls[2]].content == before[urls[2]].content
    metrics = edge.get("/_edge/metrics").text
    assert 'edge_write_purges_total{write="saveImgRDef"}' in metrics
