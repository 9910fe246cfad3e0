"""The warmer plans exactly the URLs the real clients request (issue 12.3; /work/shared/clients.md).

Unit tests, no processes: iviewer's tile / region / plane rule and parameters (§4), the classic viewer's
(§5), iviewer's image_data next to imgData, the IDR gallery's `?childCount=true` listings (§8), the
site's `omero.web.thumbnails_batch` (§2), the well panel and iviewer's thumbnail slider pages. Every
planned URL must share its cache key with the request the client sends (cache-busters, order, encoding).
"""
from __future__ import annotations

import asyncio
import json
from urllib.parse import parse_qsl, urlsplit

import pytest

from edge.keys import key_for
from edge.protocol import DEFAULT_THUMBNAILS_BATCH
from warm.cli import UsageError, parser, Run
from warm.enumerate_api import ApiSource
from warm.model import API, GRID, IMGDATA, THUMB, TILE, WELL, ImageList, PlateLayout, Ref
from warm.plan import GALLERY, Planner, batches, slider_pages
from warm.tiles import (browser_query, classic_params, classic_urls, js_json, js_number, parse_levels,
                        render_params, scales, tile_urls, uses_tiles, viewer_urls)


def channel(active=True, color="FF0000", start=0.0, end=4095.0, family="linear", coefficient=1.0, inverted=False,
            **extra) -> dict:
    return {"active": active, "color": color, "window": {"min": 0.0, "max": 4095.0, "start": start, "end": end},
            "family": family, "coefficient": coefficient, "inverted": inverted, **extra}


def image(width=672, height=512, z=5, t=1, pyramid=False, channels=None, **rdefs) -> dict:
    img = {"tiles": pyramid, "size": {"width": width, "height": height, "z": z, "t": t, "c": 3},
           "rdefs": {"model": "color", "projection": "normal", "defaultZ": 2, "defaultT": 0, "invertAxis": False,
                     **rdefs},
           "channels": channels if channels is not None else [channel(), channel(color="00FF00"),
                                                              channel(color="0000FF")]}
    if pyramid:
        levels = 5
        img.update({"tile_size": {"width": 256, "height": 256}, "levels": levels,
                    "zoomLevelScaling": {str(lv): 1 / 2 ** lv for lv in range(levels)}})
    return img


def query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def key(url: str) -> str | None:
    parts = urlsplit(url)
    return key_for(parts.path, parts.query.encode())


# --- iviewer: which URLs (clients.md §4; Image.js:192-200, Viewer.js:395-528) ---------------------------

def test_a_plane_is_one_render_image_at_the_default_plane():
    urls = tile_urls(7, image(), parse_levels("2"))
    assert len(urls) == 1
    assert urls[0].startswith("/webgateway/render_image/7/2/0/?c=")  # defaultZ 2, T 0; `c` first
    clamped = tile_urls(7, image(z=1, t=1, defaultZ=4, defaultT=3), parse_levels("2"))
    assert urlsplit(clamped[0]).path == "/webgateway/render_image/7/0/0/"


@pytest.mark.parametrize("width,height,t,tiled", [
    (2048, 2048, 1, False),  # exactly 2048 × 2048: still one image
    (2049, 2048, 1, True),  # larger, one timepoint: regions
    (4096, 4096, 2, False),  # larger but a movie: planes (no async tiles while playing)
])
def test_big_plain_images_use_regions_only_with_one_timepoint(width, height, t, tiled):
    img = image(width=width, height=height, t=t)
    assert uses_tiles(img) is tiled
    urls = tile_urls(9, img, parse_levels("2"))
    if not tiled:
        assert [urlsplit(u).path for u in urls] == ["/webgateway/render_image/9/2/0/"]
        return
    assert len(urls) == 5 * 4  # 2049 px → 5 columns of 512, 2048 → 4 rows
    assert all(urlsplit(u).path == "/webgateway/render_image_region/9/2/0/" for u in urls)
    assert urls[0].split("&")[0] == "/webgateway/render_image_region/9/2/0/?region=0,0,512,512"
    assert urls[-1].split("&")[0].endswith("?region=2048,1536,512,512")


def test_pyramid_tiles_count_levels_from_full_resolution_lowest_first():
    img = image(width=8192, height=6000, pyramid=True)  # levels 0..4: 8192, 4096, 2048, 1024, 512 px wide
    urls = tile_urls(42, img, parse_levels("2"))
    tiles = [query(u)["tile"] for u in urls]
    # level 4: 512 × 375 → 1 tile; level 3: 1024 × 750 → 2 × 2; tile size 512 whatever imgData's tile_size
    assert tiles == ["4,0,0,512,512", "3,0,0,512,512", "3,1,0,512,512", "3,0,1,512,512", "3,1,1,512,512"]
    assert urls[0].startswith("/webgateway/render_image_region/42/2/0/?tile=4,0,0,512,512&c=")
    assert len(tile_urls(42, img, parse_levels("1-2"))) == 8 * 6 + 4 * 3  # levels 1 (4096 × 3000) and 2
    assert [query(u)["tile"].split(",")[0] for u in tile_urls(42, img, parse_levels("3,4"))] == ["4"] + ["3"] * 4


def test_levels_stop_where_zoom_level_scaling_stops_shrinking():
    img = image(width=4096, height=4096, pyramid=True)
    img["zoomLevelScaling"] = {"0": 1.0, "1": 0.5, "2": 0.5, "3": 0.125}  # omero-iviewer#358: not descending
    assert scales(img) == [1.0, 0.5]
    assert [query(u)["tile"] for u in tile_urls(1, img, parse_levels("1"))] == \
        [f"1,{x},{y},512,512" for y in range(4) for x in range(4)]
    single = {**img, "zoomLevelScaling": {"0": 1.0}}  # one level: resolutions [1], level 0
    assert {query(u)["tile"].split(",")[0] for u in tile_urls(1, single, parse_levels("2"))} == {"0"}


# --- iviewer: the parameters ---------------------------------------------------------------------------

def test_c_and_maps_list_only_the_active_channels():
    img = image(channels=[
        channel(active=False, color="0000FF", start=60.0, end=1800.0),
        channel(color="00FF00", start=85.0, end=2200.5, family="exponential", coefficient=1.5, inverted=True),
        channel(color="FF0000", lut="cool.lut", start=110.0, end=2600.0, family="logarithmic", coefficient=1.0),
        channel(active=False, color="FFFFFF", family="polynomial", coefficient=0.6),
    ])
    params = render_params(img)
    assert [n for n, _ in params] == ["c", "maps", "m", "p", "q"]
    p = dict(params)
    assert p["c"] == "2|85:2200.5$00FF00,3|110:2600$cool.lut"  # 1-based, the LUT name where set, no "-n"
    assert json.loads(p["maps"]) == [
        {"inverted": {"enabled": True}, "quantization": {"family": "exponential", "coefficient": 1.5}},
        {"inverted": {"enabled": False}, "quantization": {"family": "logarithmic"}},  # no coefficient
    ]
    assert p["maps"] == ('[{"inverted":{"enabled":true},"quantization":{"family":"exponential","coefficient":1.5}},'
                         '{"inverted":{"enabled":false},"quantization":{"family":"logarithmic"}}]')  # JSON.stringify
    assert (p["m"], p["p"], p["q"]) == ("c", "normal", "0.9")


def test_linear_channels_carry_the_inversion_only():
    p = dict(render_params(image()))
    assert p["c"] == "1|0:4095$FF0000,2|0:4095$00FF00,3|0:4095$0000FF"
    assert p["maps"] == '[{"inverted":{"enabled":false}},{"inverted":{"enabled":false}},{"inverted":{"enabled":false}}]'
    broken = image(channels=[channel(family="exponential", coefficient=float("nan")), channel(inverted=None)])
    assert json.loads(dict(render_params(broken))["maps"]) == [{"inverted": {"enabled": False}}] * 2
    nothing = dict(render_params(image(channels=[channel(active=False)])))
    assert (nothing["c"], nothing["maps"]) == ("", "[]")


def test_model_and_projection_as_iviewer_derives_them():
    assert dict(render_params(image(model="greyscale")))["m"] == "g"
    assert dict(render_params(image(model="bogus")))["m"] == "c"
    assert dict(render_params(image(projection="intmax|0:4")))["p"] == "intmax|0:4"
    assert dict(render_params(image(projection="INTMAX")))["p"] == "intmax"
    assert dict(render_params(image(projection="split")))["p"] == "normal"


def test_numbers_and_json_as_javascript_writes_them():
    cases = {60.0: "60", 1800.5: "1800.5", 0.25: "0.25", -0.0: "0", 1e-7: "1e-7", 0.000001: "0.000001",
             1e21: "1e+21", 1e20: "100000000000000000000", 0.1 + 0.2: "0.30000000000000004", 7: "7"}
    assert {v: js_number(v) for v in cases} == cases
    assert js_json([{"a": {"b": 2.0, "c": None}}, None, 1.5, "x"]) == '[{"a":{"b":2}},null,1.5,"x"]'


def test_the_exact_url_as_the_browser_sends_it():
    img = image(channels=[channel(start=60.0, end=1800.0, color="0000FF"), channel(active=False)], defaultZ=0)
    url = tile_urls(5, img, parse_levels("1"))[0]
    assert url == ('/webgateway/render_image/5/0/0/?c=1|60:1800$0000FF'
                   '&maps=[{%22inverted%22:{%22enabled%22:false}}]&m=c&p=normal&q=0.9')
    assert browser_query([("x", 'a "b"#<>\'é')]) == "x=a%20%22b%22%23%3C%3E%27%C3%A9"


def test_warmed_urls_share_keys_with_the_clients_requests():
    img = image(width=8192, height=8192, pyramid=True, channels=[channel(), channel(active=False)])
    for url in tile_urls(42, img, parse_levels("2")) + classic_urls(43, image()):
        path, q = url.split("?")
        # what jQuery / the browser sends: other encodings, other order, a cache-buster
        reordered = "&".join(reversed(q.split("&"))).replace("%22", '"').replace("|", "%7C")
        assert key(url) is not None
        assert key(url) == key(f"{path}?{reordered}&_=1700000000123")


# --- the classic webgateway viewer (clients.md §5; ome.viewport.js) -----------------------------------

def test_classic_viewer_lists_every_channel_then_drops_inactive_ones_after_the_first():
    img = image(channels=[channel(active=False, color="0000FF", lut="fire.lut"), channel(color="#00FF00"),
                          channel(active=False, family="logarithmic", inverted=True)],
                defaultZ=4, defaultT=2)
    params = classic_params(img)
    assert [n for n, _ in params] == ["c", "m", "p", "ia", "q", "maps"]
    p = dict(params)
    assert p["c"] == "-1|0:4095$fire.lut,2|0:4095$00FF00"  # the first is kept even when inactive
    assert p["maps"] == '[{"inverted":{"enabled":false}},{"inverted":{"enabled":false}}]'  # never a quantization
    assert (p["m"], p["p"], p["ia"], p["q"]) == ("c", "normal", "0", "0.9")
    assert "q" not in dict(classic_params(img, None))  # the webclient's preview panel
    url, = classic_urls(3, img)
    assert urlsplit(url).path == "/webgateway/render_image/3/4/2/"  # the default Z/T, as loaded
    assert classic_urls(3, image(pyramid=True)) == []  # PanoJS tiles: not planned
    assert dict(classic_params(image(invertAxis=True)))["ia"] == "1"


def test_viewers_are_chosen_and_never_duplicated():
    img = image()
    both = viewer_urls(3, img, parse_levels("2"), ("iviewer", "classic", "preview", "classic"))
    assert len(both) == 3 and len(set(map(key, both))) == 3  # three URLs, three keys
    assert viewer_urls(3, img, parse_levels("2")) == tile_urls(3, img, parse_levels("2"))


# --- metadata, listings and batches -------------------------------------------------------------------

def test_imgdata_comes_with_iviewers_image_data():
    planner = Planner(frozenset({THUMB, IMGDATA}))
    urls = [i.url for i in planner.plan(Ref("dataset", 201), ImageList([11, 12], 2))]
    assert urls == ["/webgateway/get_thumbnails/?id=11&id=12", "/webgateway/imgData/11/", "/iviewer/image_data/11/",
                    "/webgateway/imgData/12/", "/iviewer/image_data/12/"]
    tiles = Planner(frozenset({TILE, IMGDATA}))
    items = list(tiles.plan(Ref("tiles", 5), image()))
    assert [(i.kind, urlsplit(i.url).path) for i in items] == [
        (IMGDATA, "/webgateway/imgData/5/"), (IMGDATA, "/iviewer/image_data/5/"),
        (TILE, "/webgateway/render_image/5/2/0/")]
    assert [i.kind for i in Planner(frozenset({TILE})).plan(Ref("tiles", 5), image())] == [TILE]


def test_site_listings_include_the_gallerys_child_counts():
    planner = Planner(frozenset({API}))
    screens = [i.url for i in planner.plan(Ref("listing", "screens", 450))]
    assert screens == ["/api/v0/m/screens/", "/api/v0/m/screens/?limit=200&offset=200",
                       "/api/v0/m/screens/?limit=200&offset=400", "/api/v0/m/screens/?childCount=true"]
    assert [i.url for i in planner.plan(Ref("listing", "projects", 3))][-1] == "/api/v0/m/projects/?childCount=true"
    assert GALLERY == {"screens": "/api/v0/m/screens/?childCount=true",
                       "projects": "/api/v0/m/projects/?childCount=true"}
    assert all("childCount" not in i.url for i in planner.plan(Ref("listing", "orphaned-datasets", 3)))
    assert key(GALLERY["screens"]) != key("/api/v0/m/screens/")  # its own entry (omero:childCount in the JSON)


def test_batches_follow_the_sites_thumbnails_batch():
    assert DEFAULT_THUMBNAILS_BATCH == 50
    assert [len(b.ids) for b in batches(range(120), "x")] == [50, 50, 20]
    assert [b.ids for b in batches(range(5), "x", 2)] == [(0, 1), (2, 3), (4,)]
    layout = PlateLayout(wells=96, fields=[list(range(1, 71))])
    plan = Planner(frozenset({THUMB}), thumbnails_batch=32).plan(Ref("plate", 1003), layout)
    assert [len(i.ids) for i in plan] == [32, 32, 6]
    assert [len(i.ids) for i in Planner(frozenset({THUMB})).plan(Ref("dataset", 1), ImageList(list(range(70)), 70))
            if i.kind == THUMB] == [50, 20]


def test_thumbnails_batch_and_viewer_options():
    def run(*argv: str) -> Run:
        return Run(parser().parse_args(list(argv)), list(argv))

    assert run("plate", "1", "--dry-run").planner.thumbnails_batch == DEFAULT_THUMBNAILS_BATCH
    assert run("plate", "1", "--dry-run", "--thumbnails-batch", "20").planner.thumbnails_batch == 20
    with pytest.raises(UsageError, match="--thumbnails-batch must be at least 1"):
        run("all", "--dry-run", "--thumbnails-batch", "0")
    assert run("tiles", "--image", "1", "--dry-run").planner.viewers == ("iviewer",)
    chosen = run("tiles", "--image", "1", "--dry-run", "--viewer", "classic", "--viewer", "preview", "--imgdata")
    assert chosen.planner.viewers == ("classic", "preview") and chosen.planner.kinds == {TILE, IMGDATA}
    assert WELL in run("plate", "1", "--dry-run", "--wells").planner.kinds
    assert WELL not in run("plate", "1", "--dry-run").planner.kinds


def test_well_panel_children_per_well_and_run():
    layout = PlateLayout(wells=96, fields=[[1, 2, 3], [4, 5, 6]], acquisitions=[(5003, 2)], well_ids=[10385, 10386])
    wells = [i.url for i in Planner(frozenset({WELL})).plan(Ref("plate", 1002), layout) if i.kind == WELL]
    assert wells == ["/webgateway/well/10385/children/", "/webgateway/well/10386/children/",
                     "/webgateway/well/10385/children/?run=5003", "/webgateway/well/10386/children/?run=5003"]
    assert not any(i.kind == WELL for i in Planner(frozenset({API, GRID, THUMB})).plan(Ref("plate", 1002), layout))
    assert key(wells[0]) == key("/webgateway/well/10385/children/?_=1700000000001")  # jQuery's cache:false


def test_iviewers_thumbnail_slider_pages_of_a_dataset():
    assert list(slider_pages(201, 12)) == ["/api/v0/m/datasets/201/images/?offset=0&limit=10",
                                           "/api/v0/m/datasets/201/images/?offset=10&limit=10"]
    assert list(slider_pages(5, 0)) == ["/api/v0/m/datasets/5/images/?offset=0&limit=10"]
    urls = [i.url for i in Planner(frozenset({API})).plan(Ref("dataset", 201), ImageList(list(range(12)), 12))]
    assert urls == ["/api/v0/m/datasets/201/images/", *slider_pages(201, 12)]
    assert not any("limit=10" in i.url for i in Planner(frozenset({API})).plan(Ref("orphans", "images"),
                                                                                ImageList([1], 1)))
    assert key(urls[1]) == key("/api/v0/m/datasets/201/images/?offset=0&limit=10&_=1700000000002")


def test_the_api_source_lists_wells_and_runs_for_the_well_panel():
    def cell(image: int, well: int) -> dict:
        return {"id": image, "wellId": well, "date": 1602976060}

    docs = {
        "/api/v0/m/plates/7/": {"data": {"omero:wellsampleIndex": [0, 1]}},
        "/webgateway/plate/7/0/": {"grid": [[cell(1, 70), None], [cell(3, 72), cell(4, 73)]]},
        "/webgateway/plate/7/1/": {"grid": [[cell(5, 70), None], [None, cell(8, 73)]]},
        "/api/v0/m/plates/7/plateacquisitions/": {"data": [{"@id": 9, "omero:wellsampleIndex": [0, 1]}],
                                                  "meta": {"totalCount": 1}},
    }

    class Api:
        async def get(self, url, params=None):
            return docs[url], "MISS"

        async def get_json(self, url, params=None):
            return docs[url]

    layout = asyncio.run(ApiSource(Api()).plate(Ref("plate", 7), frozenset({WELL})))
    assert layout.fields == [[1, 3, 4], [5, 8]] and layout.well_ids == [70, 72, 73]
    assert layout.acquisitions == [(9, 2)]  # runs are listed for their wells' ?run= children
    urls = [i.url for i in Planner(frozenset({WELL})).plan(Ref("plate", 7), layout)]
    assert urls == [f"/webgateway/well/{w}/children/{q}" for q in ("", "?run=9") for w in (70, 72, 73)]
