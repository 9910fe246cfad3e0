"""OMERO.web's writes end to end: a logged-in user posts each write through a real edge as the webclient does
(form-encoded, jQuery's traditional arrays, X-CSRFToken), the simulator makes OMERO's change, and what the
edge had cached for the changed objects is a miss showing the new answer, while the rest stay hits.

Every test has a simulator and an edge of its own (writes change the sim's state). Each can fail: with
EDGE_PURGE_WRITES=off in the environment the edge keeps serving the old entries and every edge test fails.
The last tests check the simulator's job rules alone (what OMERO refuses changes nothing; delays).
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass

import httpx
import pytest

from tests.helpers import EdgeProc, Launcher, Sim, start_sim

pytestmark = pytest.mark.process

# the small data set's fixed ids (docs/sim.md)
DS_MAIN, DS_ORPHANED, DS_PYRAMIDS, DS_ALICE = 201, 203, 202, 204
ZSTACK = 1001849                       # dataset 201's first image: bob's own settings (quantized)
OWNER_SAVED = 1001850                  # the owner's (curator's) own saved settings
ORPHANED_DS_IMAGE = 1001865            # dataset 203's first image
PYRAMID = 1001861                      # dataset 202's first image
ALICE_IMAGE = 1001970                  # dataset 204's first image: carol has her own settings on it
PLATE_IMAGE = 1000001
PUBLIC_GROUP, LAB_A, CAROL = 3, 4, 6


@dataclass
class Stack:
    sim: Sim
    edge: EdgeProc

    def user(self, name: str) -> httpx.Client:
        """`name`'s browser in front of the edge: the session and csrftoken cookies, X-CSRFToken sent."""
        with closing(self.sim.login(name)) as session:
            cookies, token = session.cookies, session.headers["X-CSRFToken"]
        return httpx.Client(base_url=self.edge.url, cookies=cookies, timeout=20,
                            headers={"X-CSRFToken": token, "Referer": self.edge.url + "/"})

    def anon(self) -> httpx.Client:
        return self.edge.client()

    def direct(self, reader: httpx.Client, path: str) -> httpx.Response:
        """What OMERO answers this reader now, without the edge."""
        return httpx.get(self.sim.url + path, cookies=reader.cookies, timeout=20)

    def purges(self, write: str) -> float:
        found = re.search(rf'^edge_write_purges_total{{write="{write}"}} ([0-9.e+]+)$',
                          self.edge.get("/_edge/metrics").text, re.M)
        return float(found.group(1)) if found else 0.0


@pytest.fixture
def stack(redis_server) -> Iterator[Stack]:
    """A sim of its own and an edge checking every user's session in the sim's Redis."""
    sim = start_sim(redis_url=redis_server.url)
    launcher = Launcher(sim)
    try:
        yield Stack(sim, launcher.edge("--access", "verified", "--session-redis", redis_server.url))
    finally:
        launcher.stop_all()
        sim.stop()


def thumb(iid: int) -> str:
    return f"/webgateway/render_thumbnail/{iid}/"


def img_data(iid: int) -> str:
    return f"/webgateway/imgData/{iid}/"


def batch(*ids: int) -> str:
    return "/webgateway/get_thumbnails/?" + "&".join(f"id={i}" for i in ids)


def warm(reader: httpx.Client, urls: list[str]) -> dict[str, httpx.Response]:
    """Each URL fetched once, then a hit."""
    first = {u: reader.get(u) for u in urls}
    assert {u: reader.get(u).headers["x-edge-cache"] for u in urls} == dict.fromkeys(urls, "HIT")
    return first


def same(a: httpx.Response, b: httpx.Response) -> bool:
    return (a.status_code, a.content) == (b.status_code, b.content)


def check_write(stack: Stack, name: str, write: Callable[[], httpx.Response], changed: list[str], kept: list[str],
                reader: httpx.Client | None = None, refused: Callable[[], httpx.Response] | None = None
                ) -> tuple[httpx.Response, dict[str, httpx.Response], dict[str, httpx.Response]]:
    """Warm `changed` and `kept` for `reader` (anonymous by default); a `refused` write changes and purges
    nothing; then `write` answers past the cache, and `changed` are misses with OMERO's new answer while
    `kept` stay hits with the bytes they had; the edge counts the write's purge."""
    reader = reader or stack.anon()
    before = warm(reader, changed + kept)
    if refused is not None:
        no = refused()
        assert no.headers["x-edge-cache"] == "BYPASS"
        assert {u: reader.get(u).headers["x-edge-cache"] for u in changed + kept} == dict.fromkeys(changed + kept, "HIT")
    purged = stack.purges(name)
    answer = write()
    assert (answer.status_code, answer.headers["x-edge-cache"]) == (200, "BYPASS"), answer.text
    # batches first: a batch may be answered from its members' entries, which a single GET refills
    after = {u: reader.get(u) for u in sorted(changed + kept, key=lambda u: "get_thumbnails" not in u)}
    assert {u: after[u].headers["x-edge-cache"] for u in changed} == dict.fromkeys(changed, "MISS")
    assert {u: after[u].headers["x-edge-cache"] for u in kept} == dict.fromkeys(kept, "HIT")
    assert all(same(after[u], before[u]) for u in kept)
    for u in changed:
        now = stack.direct(reader, u)
        if u.startswith("/webgateway/get_thumbnails/") or "/api/" in u:
            assert after[u].json() == now.json()
        else:
            assert same(after[u], now), u
    assert stack.purges(name) > purged
    return answer, before, after


# ---- rendering settings -------------------------------------------------------------------------------
def test_copy_paste_onto_images(stack: Stack):
    curator = stack.user("curator")
    assert curator.get(f"/webgateway/copyImgRDef/?fromid={OWNER_SAVED}").json() is True  # the clipboard
    targets = [OWNER_SAVED + 1, OWNER_SAVED + 2]
    other = OWNER_SAVED + 3
    answer, before, after = check_write(
        stack, "copyImgRDef",
        lambda: curator.post("/webgateway/copyImgRDef/", data={"toids": [str(i) for i in targets]}),
        # the batch's members are thumbnail entries: its fetch refills targets[1]'s, so that one is not asked alone
        changed=[thumb(targets[0]), img_data(targets[0]), batch(targets[1], other)],
        kept=[thumb(other), img_data(other)],
        refused=lambda: curator.post("/webgateway/copyImgRDef/", data={"toids": "x"}))  # int('x'): false
    assert answer.json() == {"true": targets, "false": []}
    assert after[thumb(targets[0])].content != before[thumb(targets[0])].content
    assert after[img_data(targets[0])].json()["channels"] == stack.direct(curator, img_data(OWNER_SAVED)).json()["channels"]


def test_copy_paste_of_a_request_rdef_onto_a_dataset(stack: Stack):
    curator = stack.user("curator")
    form = {"toids": str(DS_MAIN), "to_type": "dataset", "imageId": str(ORPHANED_DS_IMAGE),
            "c": "1|0:300$FF00FF,2|0:900$00FFFF", "m": "c"}
    images = [ZSTACK + 3, ZSTACK + 11]
    answer, before, after = check_write(
        stack, "copyImgRDef", lambda: curator.post("/webgateway/copyImgRDef/", data=form),
        changed=[thumb(images[0]), thumb(images[1]), thumb(ORPHANED_DS_IMAGE)],  # a dataset: the source keeps it
        kept=[thumb(ORPHANED_DS_IMAGE + 1), thumb(PLATE_IMAGE + 1)])
    assert answer.json()["true"] == list(range(ZSTACK, ZSTACK + 12)) and answer.json()["false"] == []
    assert all(after[thumb(i)].content != before[thumb(i)].content for i in images)


def test_reset_to_import_defaults(stack: Stack):
    curator = stack.user("curator")
    answer, before, after = check_write(
        stack, "resetRDef",
        lambda: curator.post("/webgateway/resetRDef/", data={"toids": str(DS_MAIN), "to_type": "dataset"}),
        changed=[thumb(OWNER_SAVED), img_data(OWNER_SAVED), thumb(OWNER_SAVED + 1)],
        kept=[thumb(PYRAMID), img_data(ORPHANED_DS_IMAGE)],
        refused=lambda: curator.post("/webgateway/resetRDef/", data={}))  # no toids: Http404 under @jsonp
    assert answer.json() == list(range(ZSTACK, ZSTACK + 12))
    assert after[thumb(OWNER_SAVED)].content != before[thumb(OWNER_SAVED)].content      # the owner's were saved
    assert after[img_data(OWNER_SAVED)].json()["rdefs"]["defaultZ"] == 2                 # the import default
    assert after[thumb(OWNER_SAVED + 1)].content == before[thumb(OWNER_SAVED + 1)].content  # was the default


def test_apply_owners_settings(stack: Stack):
    bob = stack.user("bob")
    answer, before, after = check_write(
        stack, "applyOwnersRDef", lambda: bob.post("/webgateway/applyOwnersRDef/", data={"toids": str(ZSTACK)}),
        changed=[thumb(ZSTACK), img_data(ZSTACK)], kept=[thumb(PLATE_IMAGE)], reader=bob)
    assert answer.json() == [ZSTACK]
    assert after[thumb(ZSTACK)].content != before[thumb(ZSTACK)].content
    assert after[thumb(ZSTACK)].content == stack.anon().get(thumb(ZSTACK)).content   # the owner's, as the public


# ---- channel names --------------------------------------------------------------------------------------
def test_channel_names_of_a_whole_dataset(stack: Stack):
    curator = stack.user("curator")
    iviewer = f"/iviewer/image_data/{ZSTACK + 5}/"
    answer, _, after = check_write(
        stack, "edit_channel_names",
        lambda: curator.post(f"/webclient/edit_channel_names/{OWNER_SAVED}/",
                             data={"channel0": "Nuclei", "channel1": "Actin", "confirm_apply": "Apply",
                                   "parentId": f"dataset-{DS_MAIN}"}),
        changed=[img_data(OWNER_SAVED), img_data(ZSTACK + 5), iviewer],
        kept=[img_data(ORPHANED_DS_IMAGE), thumb(ORPHANED_DS_IMAGE)],
        refused=lambda: stack.user("bob").post(f"/webclient/edit_channel_names/{OWNER_SAVED}/",
                                               data={"channel0": "Mine"}))  # not bob's: 500
    assert answer.json() == {"channelNames": {"channel0": "Nuclei", "channel1": "Actin"},
                             "imageCount": 12, "updateCount": 12}
    assert [c["label"] for c in after[img_data(ZSTACK + 5)].json()["channels"]] == ["Nuclei", "Actin"]
    assert [c["label"] for c in after[iviewer].json()["channels"]] == ["Nuclei", "Actin"]


# ---- moves ----------------------------------------------------------------------------------------------
def test_chgrp_out_of_the_public_group(stack: Stack):
    """curator is only in `public`: the move goes to lab-a as alice moves hers into public and back."""
    alice = stack.user("alice")
    tree = f"/webclient/api/images/?id={DS_ALICE}"
    containers = "/webclient/api/containers/?id=-1&group=-1"
    answer, before, after = check_write(
        stack, "chgrp",
        lambda: alice.post("/webclient/chgrp/", data={"group_id": str(PUBLIC_GROUP), "Dataset": str(DS_ALICE)}),
        changed=[thumb(ALICE_IMAGE), thumb(ALICE_IMAGE + 1), tree], kept=[thumb(ORPHANED_DS_IMAGE)],
        refused=lambda: alice.post("/webclient/chgrp/", data={"Dataset": str(DS_ALICE)}))  # no group_id
    assert answer.json()["update"]["remove"]["dataset"] == [DS_ALICE]
    assert before[thumb(ALICE_IMAGE)].status_code == 404 and after[thumb(ALICE_IMAGE)].status_code == 200
    anon = stack.anon()
    listed = warm(anon, [containers, thumb(ALICE_IMAGE)])
    assert DS_ALICE in [d["id"] for d in listed[containers].json()["datasets"]]
    moved = alice.post("/webclient/chgrp/", data={"group_id": str(LAB_A), "Dataset": str(DS_ALICE)})
    assert moved.headers["x-edge-cache"] == "BYPASS"
    gone = anon.get(thumb(ALICE_IMAGE))        # right after the answer: not the old bytes
    assert (gone.headers["x-edge-cache"], gone.status_code) == ("MISS", 404)
    assert gone.content != listed[thumb(ALICE_IMAGE)].content
    now = anon.get(containers)
    assert now.headers["x-edge-cache"] == "MISS" and DS_ALICE not in [d["id"] for d in now.json()["datasets"]]
    carol = stack.user("carol")
    assert carol.get(thumb(ALICE_IMAGE)).status_code == 200                    # a member of lab-a reads it


def test_chown_gives_the_owners_settings(stack: Stack):
    """alice owns lab-a: she gives her dataset to carol, whose settings on its first image become the
    owner's, which alice (without settings of her own) now sees."""
    alice = stack.user("alice")
    tree = f"/webclient/api/images/?id={DS_ALICE}"
    answer, before, after = check_write(
        stack, "chown",
        lambda: alice.post("/webclient/chown/", data={"owner_id": str(CAROL), "Dataset": str(DS_ALICE)}),
        changed=[thumb(ALICE_IMAGE), tree, f"/webclient/api/datasets/?id=102"], kept=[thumb(ORPHANED_DS_IMAGE)],
        reader=alice, refused=lambda: alice.post("/webclient/chown/", data={"Dataset": str(DS_ALICE)}))
    assert len(answer.json()["jobIds"]) == 1
    assert after[thumb(ALICE_IMAGE)].content != before[thumb(ALICE_IMAGE)].content
    assert {i["ownerId"] for i in after[tree].json()["images"]} == {CAROL}
    assert after[tree].json()["images"][0]["permsCss"] != before[tree].json()["images"][0]["permsCss"]


# ---- deletes --------------------------------------------------------------------------------------------
def test_delete_a_dataset_keeps_its_images(stack: Stack):
    curator = stack.user("curator")
    containers = "/webclient/api/containers/?id=-1&group=-1"
    answer, _, after = check_write(
        stack, "delete", lambda: curator.post(f"/webclient/action/delete/dataset/{DS_ORPHANED}/", data={}),
        changed=[containers, f"/webgateway/dataset/{DS_ORPHANED}/children/", thumb(ORPHANED_DS_IMAGE)],
        kept=[thumb(ZSTACK)],
        refused=lambda: curator.post("/webclient/action/delete/dataset/204/", data={}))  # unreadable: 404
    assert answer.json() == {"bad": "false"}
    assert [d["id"] for d in after[containers].json()["datasets"]] == []
    assert after[f"/webgateway/dataset/{DS_ORPHANED}/children/"].status_code == 500   # OMERO's answer now
    assert after[thumb(ORPHANED_DS_IMAGE)].status_code == 200                          # an orphan now


def test_deletemany_with_children(stack: Stack):
    curator = stack.user("curator")
    answer, before, after = check_write(
        stack, "deletemany",
        lambda: curator.post("/webclient/action/deletemany/", data={"dataset": str(DS_PYRAMIDS), "child": "on"}),
        # webgateway's and the webclient's thumbnail of one image share an entry: a different image each
        changed=[thumb(PYRAMID), f"/webclient/render_thumbnail/{PYRAMID + 1}/", img_data(PYRAMID + 1),
                 f"/webgateway/proj/101/children/", batch(PYRAMID + 2, ZSTACK)],
        kept=[thumb(ZSTACK), img_data(ZSTACK)])
    assert answer.json() == {"bad": "false"}
    assert after[thumb(PYRAMID)].status_code == 404 and before[thumb(PYRAMID)].status_code == 200
    placeholder = f"/webclient/render_thumbnail/{PYRAMID + 1}/"
    assert after[placeholder].status_code == 200 and after[placeholder].content != before[placeholder].content
    assert after[batch(PYRAMID + 2, ZSTACK)].json()[str(PYRAMID + 2)] is None


# ---- the simulator's job rules on their own --------------------------------------------------------------
@pytest.fixture
def lone_sim() -> Iterator[Sim]:
    sim = start_sim()
    yield sim
    sim.stop()


def _orphans(client: httpx.Client) -> set[int]:
    return {i["id"] for i in client.get("/webclient/api/images/?orphaned=true").json()["images"]}


def test_sim_jobs_change_only_what_omero_lets_them(lone_sim: Sim):
    curator, bob, alice = lone_sim.login("curator"), lone_sim.login("bob"), lone_sim.login("alice")
    anon = lone_sim.client()
    refused = [(bob, "/webclient/action/deletemany/", {"image": str(ZSTACK)}),            # not bob's
               (curator, "/webclient/action/deletemany/", {"image": str(PLATE_IMAGE)}),  # splits the plate's fileset
               (curator, "/webclient/chgrp/", {"group_id": str(LAB_A), "Image": str(ZSTACK)}),  # not a member
               (alice, "/webclient/chgrp/", {"group_id": str(PUBLIC_GROUP), "Dataset": "206"}),  # carol's
               (bob, "/webclient/chown/", {"owner_id": str(CAROL), "Image": str(ZSTACK)})]  # no group owner
    for client, path, form in refused:
        assert client.post(path, data=form).status_code == 200
    assert all(anon.get(thumb(i)).status_code == 200 for i in (ZSTACK, PLATE_IMAGE))
    assert alice.get("/webclient/api/datasets/?id=0").json()["datasets"][-1]["ownerId"] == CAROL
    before = _orphans(anon)
    curator.post(f"/webclient/action/delete/dataset/{DS_ORPHANED}/", data={})
    assert _orphans(anon) == before | set(range(ORPHANED_DS_IMAGE, ORPHANED_DS_IMAGE + 5))
    well = f"/webgateway/well/{lone_sim.info['plates'][3]['first_well']}/children/"
    assert [anon.get(u).status_code for u in ("/webgateway/plate/1004/", well)] == [200, 200]
    curator.post("/webclient/action/deletemany/", data={"plate": "1004"})                  # with its wells
    assert [anon.get(u).status_code for u in ("/webgateway/plate/1004/", well)] == [500, 500]


def test_sim_jobs_can_wait():
    sim = start_sim("--job-delay", "0.5")
    try:
        curator = sim.login("curator")
        assert curator.post("/webclient/action/deletemany/", data={"image": str(ZSTACK)}).json() == {"bad": "false"}
        assert sim.client().get(thumb(ZSTACK)).status_code == 200          # answered, not done yet
        time.sleep(1.0)
        assert sim.client().get(thumb(ZSTACK)).status_code == 404
    finally:
        sim.stop()
