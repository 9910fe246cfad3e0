"""The webclient's browsing URLs (docs/browse.md): which are cached, their keys, their tags, and which
answers may be stored. Pure functions, no processes; the end-to-end cases are in test_browse_edge.py."""
from __future__ import annotations

import json

import pytest

from edge.entry import Entry
from edge.keys import PUBLIC, key_for, parse_query
from edge.policy import EntryPolicy, body_tags
from edge.request import url_objects
from edge.routes import BY_NAME, Kind, match
from edge.settings import Settings

GID = 3
# Every cached GET of docs/browse.md, as the webclient sends it (jQuery's `_=` last), and its route.
CACHED = [
    ("/webgateway/open_with/?_=1", "gw.open_with"),
    (f"/webclient/api/experimenters/-1/?page=1&group={GID}&_=2", "wc.api_experimenter"),
    (f"/webclient/api/containers/?id=-1&experimenter_id=-1&page=0&group={GID}&_=3", "wc.api_containers"),
    (f"/webclient/api/plates/?id=5&page=0&group={GID}&_=4", "wc.api_plates"),
    ("/webclient/metadata_details/screen/5/?_=5", "wc.metadata_details"),
    ("/webclient/api/annotations/?type=map&parents=true&screen=5&_=6", "wc.api_annotations"),
    (f"/webclient/api/plate_acquisitions/?id=7&page=0&group={GID}&_=7", "wc.api_plate_acquisitions"),
    ("/webclient/load_plate/plate/7/?index=1&_=8", "wc.load_plate"),
    ("/webclient/load_plate/acquisition/9/?index=0&_=9", "wc.load_plate"),
    ("/webclient/metadata_details/well/11/?index=0&_=10", "wc.metadata_details"),
    ("/webclient/metadata_details/image/13/?_=11", "wc.metadata_details"),
    ("/webclient/metadata_acquisition/image/13/?_=12", "wc.metadata_acquisition"),
    ("/webclient/metadata_preview/image/13/?_=13", "wc.metadata_preview"),
    ("/webclient/metadata_hierarchy/image/13/?_=14", "wc.metadata_hierarchy"),
    (f"/webclient/api/datasets/?id=15&page=0&group={GID}&_=15", "wc.api_datasets"),
    (f"/webclient/api/images/?id=17&page=1&sizeXYZ=true&date=true&group={GID}&_=16", "wc.api_images"),
    ("/webgateway/annotations/Screen.plateLinks.child/5/?_=17", "gw.annotations"),
    ("/webgateway/table/19/query/?query=*&_=18", "gw.table_query"),
    ("/webgateway/table/Screen.plateLinks.child/5/query/?query=*", "gw.object_table_query"),
]
# Never cached (docs/browse.md): pages with CSRF tokens and session state, session actions, shares.
NEVER = ["/webclient/", "/webclient/userdata/", "/webclient/usertags/", "/webclient/public/",
         "/webclient/history/", "/webclient/search/", "/webclient/help/", "/webclient/login/",
         "/webclient/logout/", "/webclient/active_group/", "/webclient/keepalive_ping/",
         "/webclient/activities/", "/webclient/activities_json/", "/webgateway/getImgRDef/",
         "/webclient/getImgRDef/", "/api/v0/token/", "/webclient/metadata_details/image/13/4/",
         "/webclient/metadata_preview/image/13/4/", "/webclient/api/share_images/4/",
         "/webclient/batch_annotate/", "/webclient/api/paths_to_object/"]


def split(url: str) -> tuple[str, bytes]:
    path, _, query = url.partition("?")
    return path, query.encode()


@pytest.mark.parametrize("url, name", CACHED)
def test_every_browsing_url_is_routed(url: str, name: str):
    found = match(split(url)[0])
    assert found is not None and found[0].name == name
    assert key_for(*split(url)) is not None


@pytest.mark.parametrize("path", NEVER)
def test_session_pages_and_shares_are_not_routed(path: str):
    assert match(path) is None and key_for(path) is None


def test_the_cache_buster_goes_with_its_separator():
    """A browser's `…&screen=5&_=6` and recache.py's `…&screen=5` are one entry (clients.md §10: IDR's key
    keeps the `&`, so its warmed entries miss); so is `_` first."""
    base = "/webclient/api/annotations/"
    keys = {key_for(base, q) for q in (b"type=map&parents=true&screen=5&_=6", b"type=map&parents=true&screen=5",
                                       b"_=9&type=map&parents=true&screen=5", b"type=map&parents=true&screen=5&")}
    assert len(keys) == 1
    assert key_for(base, b"type=map&parents=true&screen=6") not in keys
    assert key_for(base, b"type=map&parents=false&screen=5") not in keys
    assert key_for("/webclient/load_plate/plate/7/", b"index=1") != key_for("/webclient/load_plate/plate/7/",
                                                                             b"index=0")


def test_keys_are_per_audience():
    url = split("/webclient/metadata_details/screen/5/")
    assert key_for(*url) == key_for(*url, audience=PUBLIC)
    assert key_for(*url, audience="user:7") != key_for(*url)


@pytest.mark.parametrize("url, tags", [
    ("/webclient/api/annotations/?type=map&parents=true&image=13&image=14&well=2&_=1",
     ("image:13", "image:14", "well:2")),
    ("/webclient/api/annotations/?type=map&acquisition=09", ("plateacquisition:9",)),
    ("/webclient/api/annotations/?type=map&image=%C2%B2", ()),  # "²".isdigit(): not an id
    ("/webclient/api/images/?id=17&page=1", ("dataset:17",)),
    ("/webclient/api/plates/?id=5", ("screen:5",)),
    ("/webclient/api/containers/?id=-1&experimenter_id=-1", ()),
    ("/webclient/metadata_details/well/11/?index=2", ("well:11",)),
    ("/webclient/metadata_details/tag/11/", ()),
    ("/webclient/load_plate/acquisition/9/", ("plateacquisition:9",)),
    ("/webgateway/annotations/Screen.plateLinks.child/5/", ("screen:5",)),
])
def test_url_objects_come_from_path_and_query(url: str, tags: tuple[str, ...]):
    path, query = split(url)
    route, groups = match(path)
    assert url_objects(route, groups, parse_query(query)) == tags


def test_body_tags_name_listed_records_annotated_parents_and_linked_images():
    images = {"images": [{"id": 21, "name": "a", "ownerId": 2, "permsCss": "isOwned"}, {"id": 22}]}
    assert body_tags(json.dumps(images).encode()) == ("image:21", "image:22")
    annotations = {"annotations": [{"id": 900, "class": "MapAnnotationI", "ns": "x",
                                    "link": {"id": 901, "parent": {"id": 23, "class": "WellI"},
                                             "owner": {"id": 2}}}],
                   "experimenters": [{"id": 2, "firstName": "P"}]}
    assert body_tags(json.dumps(annotations).encode()) == ("well:23",)
    containers = {"projects": [{"id": 4, "childCount": 2}], "screens": [{"id": 5}],
                  "plates": [{"id": 6}], "datasets": [], "orphaned": {"id": -1, "childCount": 0}}
    assert body_tags(json.dumps(containers).encode()) == ("plate:6", "project:4", "screen:5")
    api = {"data": [{"@id": 7, "@type": "http://www.openmicroscopy.org/Schemas/OME/2016-06#Image"}]}
    assert body_tags(json.dumps(api).encode()) == ("image:7",)
    panel = b'<a href="/webclient/img_detail/31/" target="new">Full viewer</a><a href="/webclient/img_detail/31/">'
    assert body_tags(panel, Kind.HTML) == ("image:31",)
    assert body_tags(b"not json") == ()


def entry(body: bytes, content_type: str) -> Entry:
    return Entry.build("k", 200, content_type, body, ttl=1, stale=0, epoch=0, tags=(), public=True, now=0)


@pytest.mark.parametrize("route, content_type, body, ok", [
    ("wc.metadata_details", "text/html; charset=utf-8", b"<div>General</div>", True),
    ("wc.metadata_details", "text/html; charset=utf-8",
     b'<form><input type="hidden" name="csrfmiddlewaretoken" value="abc"></form>', False),
    ("wc.metadata_details", "application/json", b"{}", False),
    ("wc.api_annotations", "application/json", b'{"annotations": []}', True),
    ("wc.api_annotations", "application/json", b'{"csrfmiddlewaretoken": "abc"}', False),
    ("wc.load_plate", "text/html", b"<table></table>", True),
])
def test_a_body_with_a_csrf_token_is_never_stored(route: str, content_type: str, body: bytes, ok: bool):
    assert EntryPolicy(Settings()).storable(BY_NAME[route], entry(body, content_type), content_type) is ok
