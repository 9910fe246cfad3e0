"""`warm metadata`: the webclient's browsing URLs (docs/browse.md, clients.md §10, warm/browse.py).

Unit tests of the plan (exact URL lists per object, the options, the active group read from the page),
then end to end through the CLI against the session's simulator behind a real edge: after warming,
the webclient's own requests (each with a fresh jQuery `_=`) are all hits and the backend is not asked.
"""
from __future__ import annotations

import itertools
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from edge.keys import key_for
from warm.browse import NoGroup, active_group
from warm.cli import Run, UsageError, parser
from warm.model import (ANNOTS, API, BROWSE, CENTER, DETAILS, GRID, IMGPANEL, IMGTAB, THUMB, TREE, WELLPANEL,
                        ImageList, PlateLayout, Ref)
from warm.plan import Planner

GID = 3
WC = "/webclient"


def planner(*argv: str) -> Planner:
    """The planner a command line builds, with the active group learnt."""
    args = list(argv) + ["--dry-run"]
    p = Run(parser().parse_args(args), args).planner
    p.group(GID)
    return p


def browse_urls(p: Planner, ref: Ref, detail=None) -> list[str]:
    return [i.url for i in p.plan(ref, detail) if i.kind in BROWSE | {IMGPANEL, IMGTAB}]


def key(url: str) -> str | None:
    parts = urlsplit(url)
    return key_for(parts.path, parts.query.encode())


# --- the plan -----------------------------------------------------------------------------------------
def test_metadata_kinds_and_options():
    assert planner("metadata", "--all").kinds == {API, GRID, *BROWSE}
    assert planner("all").kinds == {API, GRID, THUMB, *BROWSE}
    assert planner("screen", "1", "--only", "metadata").kinds == {API, GRID, *BROWSE}
    assert planner("screen", "1", "--only", "thumbnails").kinds == {THUMB}
    assert not planner("thumbnails", "--all").browsing
    opts = planner("metadata", "--all", "--image-panels", "--image-tabs")
    assert {IMGPANEL, IMGTAB} <= opts.kinds
    assert planner("metadata", "--all", "--page-size", "50").page_size == 50
    with pytest.raises(UsageError, match="--page-size must be at least 1"):
        planner("metadata", "--all", "--page-size", "0")


def test_the_page_once_per_run():
    assert browse_urls(planner("metadata", "--all"), Ref("webclient", "page")) == [
        "/webgateway/open_with/",
        f"{WC}/api/experimenters/-1/?page=1&group={GID}",
        f"{WC}/api/containers/?id=-1&experimenter_id=-1&page=0&group={GID}",
    ]


def test_screen_and_project_in_click_order():
    p = planner("metadata", "--all")
    assert browse_urls(p, Ref("screen", 1, 2)) == [
        f"{WC}/api/plates/?id=1&page=0&group={GID}",
        f"{WC}/metadata_details/screen/1/",
        f"{WC}/api/annotations/?type=map&parents=true&screen=1",
    ]
    assert browse_urls(p, Ref("project", 101, 3)) == [
        f"{WC}/api/datasets/?id=101&page=0&group={GID}",
        f"{WC}/metadata_details/project/101/",
        f"{WC}/api/annotations/?type=map&parents=true&project=101",
    ]


def test_plate_pages_every_field_and_run_then_the_wells():
    layout = PlateLayout(wells=4, fields=[[1, 2], [3, 4]], acquisitions=[(5001, 1), (5002, 1)],
                         well_ids=[10001, 10002])
    p = planner("metadata", "--all")
    assert browse_urls(p, Ref("plate", 1001), layout) == [
        f"{WC}/api/plate_acquisitions/?id=1001&page=0&group={GID}",
        f"{WC}/load_plate/plate/1001/?index=0",
        f"{WC}/load_plate/plate/1001/?index=1",
        f"{WC}/load_plate/acquisition/5001/?index=0",
        f"{WC}/load_plate/acquisition/5002/?index=0",
        f"{WC}/metadata_details/plate/1001/",
        f"{WC}/api/annotations/?type=map&parents=true&plate=1001",
        f"{WC}/metadata_details/well/10001/?index=0",
        f"{WC}/api/annotations/?type=map&parents=true&well=10001",
        f"{WC}/metadata_details/well/10002/?index=0",
        f"{WC}/api/annotations/?type=map&parents=true&well=10002",
    ]
    kinds = [i.kind for i in p.plan(Ref("plate", 1001), layout)]
    assert kinds.count(CENTER) == 4 and kinds.count(WELLPANEL) == 4 and kinds.count(DETAILS) == 1
    # a plate without runs has no children in the tree: no plate_acquisitions request
    plain = PlateLayout(wells=1, fields=[[7]], well_ids=[10009])
    assert not any("plate_acquisitions" in u for u in browse_urls(p, Ref("plate", 1002), plain))
    # the API v0 pages and grids stay part of metadata
    assert {i.kind for i in p.plan(Ref("plate", 1001), layout)} >= {API, GRID}


def test_dataset_every_tree_page():
    p = planner("metadata", "--all")
    tree = f"{WC}/api/images/?id=201&page={{}}&sizeXYZ=true&date=true&group={GID}"
    assert browse_urls(p, Ref("dataset", 201), ImageList(list(range(450)), 450)) == [
        tree.format(1), tree.format(2), tree.format(3),
        f"{WC}/metadata_details/dataset/201/",
        f"{WC}/api/annotations/?type=map&parents=true&dataset=201",
    ]
    assert browse_urls(p, Ref("dataset", 201), ImageList([], 0))[0] == tree.format(1)  # the tree still asks
    small = planner("metadata", "--all", "--page-size", "100")
    assert sum("api/images/" in u for u in browse_urls(small, Ref("dataset", 201), ImageList([], 450))) == 5


def test_image_panels_and_tabs_only_on_request():
    layout = PlateLayout(wells=1, fields=[[7, 8], [9]], well_ids=[10009])
    assert not any(i.kind in (IMGPANEL, IMGTAB) for i in planner("metadata", "--all").plan(Ref("plate", 1), layout))
    p = planner("metadata", "--all", "--image-panels", "--image-tabs")
    images = [i.url for i in p.plan(Ref("plate", 1), layout) if i.kind in (IMGPANEL, IMGTAB)]
    assert images[:5] == [
        f"{WC}/metadata_details/image/7/",
        f"{WC}/api/annotations/?type=map&parents=true&image=7",
        f"{WC}/metadata_acquisition/image/7/",
        f"{WC}/metadata_preview/image/7/",
        f"{WC}/metadata_hierarchy/image/7/",
    ]
    assert len(images) == 3 * 5
    only_panels = planner("dataset", "1", "--image-panels")
    assert [i.kind for i in only_panels.plan(Ref("dataset", 1), ImageList([5], 1)) if i.kind in (IMGPANEL, IMGTAB)] \
        == [IMGPANEL, IMGPANEL]
    assert {i.kind for i in planner("images", "--ids", "-", "--image-tabs").images([5], "images:5")} == {THUMB, IMGTAB}


def test_warmed_urls_share_keys_with_the_webclients_requests():
    """jQuery's `$.ajaxSetup({cache: false})` adds `_=<counter>` last (ome.csrf.js:66-67); the key drops it."""
    layout = PlateLayout(wells=1, fields=[[7]], acquisitions=[(5001, 1)], well_ids=[10009])
    p = planner("metadata", "--all", "--image-panels", "--image-tabs")
    refs = [(Ref("webclient", "page"), None), (Ref("screen", 1), None), (Ref("plate", 1001), layout),
            (Ref("project", 101), None), (Ref("dataset", 201), ImageList([7], 1))]
    urls = [u for ref, detail in refs for u in browse_urls(p, ref, detail)]
    stamp = itertools.count(1700000000000)
    for url in urls:
        warmed = key(url)
        assert warmed is not None, f"the edge does not cache {url}"
        assert key(f"{url}{'&' if '?' in url else '?'}_={next(stamp)}") == warmed, url


def test_active_group_from_the_webclient_page():
    page = "<script>\n        var WEBCLIENT = {};\n\n        WEBCLIENT.active_group_id = 53;\n</script>"
    assert active_group(page) == 53
    with pytest.raises(NoGroup, match="WEBCLIENT.active_group_id"):
        active_group("<html><h1>OMERO.web login</h1></html>")
