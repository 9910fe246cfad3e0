"""The real OMERO browser clients' requests (/work/shared/clients.md), replayable through an edge.

A flow is data: `Step`s (how the client sends a request, the path, and what it derives from the
answer), replayed by a `Page` (one page load: jQuery's callback names and cache-busters) for one
requester. The URL derivations are ports of the clients' JavaScript, written here independently of
warm/tiles.py so the replay checks the warmer rather than agreeing with it by construction:

- jQuery 3.x (`dataType: "jsonp"`, `getJSON(url + "?callback=?")`, `cache: false`): the callback is
  `jQuery<digits of version + Math.random()>_<nonce>`, `_=<nonce>`; the nonce starts at `Date.now()`
  and counts every callback and cache-buster of the page.
- OMERO.iviewer `Viewer.js:395-528` and `source/Image.js:199-336` (tiles, regions, planes and their
  query), `BirdsEye.js:313-318` (`rev`), `thumbnail-slider.js:449-476` and its template (`version`).
- The classic viewer `ome.viewport.js:1067-1142, 1214-1217` (webgateway `img_detail`: `q=0.9`).
- `ome.plateview.js:178-222` (grid and JSONP batches), `plate.html:258-294` (the well panel: plain
  `getJSON` of `well/<wid>/children/`, then webclient batches), `center_plugin.thumbs.js.html:300-315`
  and `OME.load_thumbnails` (webclient batches), the IDR gallery's `fetch` (`model.js:270-271`).
"""
from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import quote

import httpx

from edge.routes import Upstream, match

HOST = "omero.test"  # the Host every replay (and the warmer, --host) uses: API v0 links are built from it
JQUERY_VERSION = "3.5.1"
JSONP = re.compile(r"^([a-zA-Z_$][0-9a-zA-Z_$]*)\((.*)\)$", re.S)
_BROWSER_SAFE = "!$&()*+,-./:;=?@[\\]^_`{|}~%"  # a browser leaves these as they are in a query

# How a client sends a request: jQuery JSONP, jQuery JSON with cache:false, getJSON("…?callback=?")
# (JSONP with the name in the URL), an <img src>, window.fetch, or the browser loading a page (whose
# HTML a flow may read, as the webclient's scripts read `WEBCLIENT.*` from it).
JSONP_AJAX, AJAX, GETJSON_CALLBACK, IMG, FETCH, PAGE = "jsonp", "ajax", "getjson-callback", "img", "fetch", "page"
_ACTIVE_GROUP = re.compile(rb"WEBCLIENT\.active_group_id\s*=\s*(-?[0-9]+)\s*;")


def browser_url(url: str) -> str:
    """The URL as a browser puts it on the wire: `"` → %22, `|{}$:` as they are."""
    path, _, query = url.partition("?")
    return f"{path}?{quote(query, safe=_BROWSER_SAFE)}" if query else path


def js(value: float | int) -> str:
    """JavaScript's String(number) for the values OMERO sends (integral floats lose `.0`)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class Page:
    """One page load's jQuery: its expando and its nonce (callback names and `_` cache-busters)."""

    def __init__(self, rng: random.Random, now_ms: int) -> None:
        self.expando = "jQuery" + re.sub(r"\D", "", JQUERY_VERSION + repr(rng.random()))
        self.nonce = now_ms
        self.now_ms = now_ms

    def _next(self) -> int:
        self.nonce += 1
        return self.nonce - 1

    def url(self, how: str, url: str) -> str:
        sep = "&" if "?" in url else "?"
        if how == JSONP_AJAX:  # the jsonp prefilter appends callback, then cache:false appends _
            name = f"{self.expando}_{self._next()}"
            return f"{url}{sep}callback={name}&_={self._next()}"
        if how == GETJSON_CALLBACK:
            name = f"{self.expando}_{self._next()}"
            return url.replace("callback=?", f"callback={name}") + f"&_={self._next()}"
        if how == AJAX:
            return f"{url}{sep}_={self._next()}"
        return url  # <img src>, fetch: sent as written


@dataclass(frozen=True)
class Step:
    """One request of a flow: how it is sent, its path (formatted with the flow's data), and the
    requests the client derives from its answer (`then(doc, ctx)` → more steps)."""

    how: str
    path: str
    then: Callable[[object, dict], Iterable[Step]] | None = None


@dataclass
class Exchange:
    url: str
    status: int
    content_type: str
    body: bytes
    cache: str = ""
    set_cookie: bool = False

    def unwrapped(self) -> tuple[str | None, object]:
        """(JSONP name or None, the JSON inside); raw bytes when the body is not JSON."""
        text = self.body.decode("utf-8", "replace")
        m = JSONP.match(text.strip())
        if m and "javascript" in self.content_type:
            return m.group(1), json.loads(m.group(2))
        if "json" in self.content_type or "javascript" in self.content_type:
            try:
                return None, json.loads(text)
            except ValueError:
                pass
        return None, self.body

    def comparable(self) -> tuple:
        return self.status, self.content_type, *self.unwrapped()


def fetch(client: httpx.Client, url: str) -> Exchange:
    r = client.get(url)
    return Exchange(url, r.status_code, r.headers.get("content-type", ""), r.content,
                    r.headers.get("x-edge-cache", ""), "set-cookie" in r.headers)


Steps = tuple[Step, ...] | Callable[[dict], Iterable[Step]]


def replay(client: httpx.Client, steps: Steps, page: Page, data: dict) -> list[Exchange]:
    """The flow's requests in the client's order, each derived from the answers before it (`steps` may be
    a function of the flow's data, for a flow that starts from ids the page already holds)."""
    out: list[Exchange] = []
    ctx = {**data, "page": page}  # one per replay: what a step learns (the page's group) its followers use
    queue = list(steps(ctx) if callable(steps) else
                 (Step(s.how, s.path.format(**data), s.then) for s in steps))  # derived steps are literal
    while queue:
        step = queue.pop(0)
        url = browser_url(page.url(step.how, step.path))
        exchange = fetch(client, url)
        out.append(exchange)
        if step.then is not None:
            _, doc = exchange.unwrapped()
            assert exchange.status == 200 and (step.how == PAGE or not isinstance(doc, bytes)), \
                (url, exchange.status, exchange.body[:200])
            queue = [*step.then(doc, ctx), *queue]
    return out


def backend_base(sim, path: str) -> str:
    """Where this URL goes without the edge: the image-region microservice for its routes, else OMERO.web."""
    found = match(path.split("?", 1)[0])
    return sim.ms_url if found and found[0].upstream is Upstream.MS else sim.url


# --- what the clients derive from answers ---------------------------------------------------------------

def _batches(how: str, base: str, ids: list[int], size: int) -> list[Step]:
    return [Step(how, base + "?" + "&".join(f"id={i}" for i in ids[k:k + size])) for k in range(0, len(ids), size)]


def plate_batches(grid: dict, ctx: dict) -> list[Step]:
    """ome.plateview.js: the grid's image ids in row-major order, JSONP batches of thumbnails_batch."""
    ids = [cell["id"] for row in grid["grid"] for cell in row if cell]
    return _batches(JSONP_AJAX, "/webgateway/get_thumbnails/", ids, ctx["batch"])


def well_batches(images: list, ctx: dict) -> list[Step]:
    """plate.html's well panel: OME.load_thumbnails of the well's images."""
    return _batches(AJAX, "/webclient/get_thumbnails/", [i["id"] for i in images], ctx["batch"])


def icon_batches(ctx: dict) -> list[Step]:
    """The dataset's icon view: webclient batches of the images its tree listing returned."""
    return _batches(AJAX, "/webclient/get_thumbnails/", ctx["dataset_images"], ctx["batch"])


def slider_thumbnails(page: dict, ctx: dict) -> list[Step]:
    """The thumbnail slider's <img src="/webclient/render_thumbnail/<id>/?version=0">."""
    return [Step(IMG, f"/webclient/render_thumbnail/{row['@id']}/?version=0") for row in page["data"]]


@dataclass
class IviewerSource:
    """OmeroImage as Viewer.js builds it from image_data."""

    image_id: int
    width: int
    height: int
    plane: int
    time: int
    tiled: bool
    use_tiled: bool
    tile: tuple[int, int]
    resolutions: list[float] = field(default_factory=list)
    query: str = ""

    @classmethod
    def of(cls, info: dict) -> IviewerSource:
        dims, rdefs = info["size"], info["rdefs"]
        zoom_scaling = None
        if info.get("zoomLevelScaling"):
            tmp: list[float] = []
            for r in sorted(info["zoomLevelScaling"], key=int):  # for-in over integer keys: ascending
                scale = 1 / info["zoomLevelScaling"][r]
                if tmp and scale <= tmp[-1]:
                    break
                tmp.append(scale)
            zoom_scaling = tmp[::-1]
        zoom = len(zoom_scaling) if zoom_scaling else -1
        t = min(max(rdefs["defaultT"], 0), dims["t"] - 1)
        z = min(max(rdefs["defaultZ"], 0), dims["z"] - 1)
        tiled = info.get("tiles") is True
        use_tiled = tiled or (dims["width"] * dims["height"] > 2048 * 2048 and dims["t"] == 1)
        size = {"width": 512, "height": 512} if tiled else info.get("tile_size")
        tile = (size["width"], size["height"]) if use_tiled and size else (512, 512) if use_tiled \
            else (dims["width"], dims["height"])
        source = cls(info["id"], dims["width"], dims["height"], z, t, tiled, use_tiled, tile,
                     zoom_scaling if zoom > 1 else [1])
        source.query = source._query(info)
        return source

    def _query(self, info: dict) -> str:
        """tileUrlFunction's c, maps, m, p, q (active channels only)."""
        channels, maps = [], []
        for c, ch in enumerate(info["channels"]):
            if not ch["active"]:
                continue
            color = ch["lut"] if isinstance(ch.get("lut"), str) and len(ch["lut"]) > 0 else ch["color"]
            channels.append(f"{c + 1}|{js(ch['window']['start'])}:{js(ch['window']['end'])}${color}")
            m: dict = {"inverted": {"enabled": isinstance(ch.get("inverted"), bool) and ch["inverted"]}}
            family, coefficient = ch.get("family"), ch.get("coefficient")
            if (isinstance(family, str) and family != "" and family != "linear"
                    and isinstance(coefficient, (int, float)) and not math.isnan(coefficient)):
                m["quantization"] = {"family": family}
                if family not in ("linear", "logarithmic"):
                    m["quantization"]["coefficient"] = int(coefficient) if float(coefficient).is_integer() \
                        else coefficient
            maps.append(m)
        rdefs = info["rdefs"]
        model = {"c": "c", "g": "g"}.get(str(rdefs["model"]).lower()[:1], "c")
        projection = str(rdefs["projection"]).lower()
        projection = projection if projection in ("normal", "intmax") else "normal"
        return (f"c={','.join(channels)}&maps={json.dumps(maps, separators=(',', ':'))}&m={model}"
                f"&p={projection}&q=0.9")

    def tiles_at(self, z: int, columns: range | None = None, rows: range | None = None) -> list[str]:
        """The URLs of the tiles of OpenLayers zoom index `z` (0 = lowest resolution) in the given range."""
        res = self.resolutions[z]
        nx = math.ceil(math.floor(self.width / res + 0.5) / self.tile[0])
        ny = math.ceil(math.floor(self.height / res + 0.5) / self.tile[1])
        urls = []
        for y in rows if rows is not None else range(ny):
            for x in columns if columns is not None else range(nx):
                if x < nx and y < ny:
                    urls.append(self.url(z, x, y))
        return urls

    def url(self, z: int = 0, x: int = 0, y: int = 0) -> str:
        base = f"/webgateway/{'render_image_region' if self.use_tiled else 'render_image'}/" \
               f"{self.image_id}/{self.plane}/{self.time}/?"
        if self.tiled:
            base += f"tile={len(self.resolutions) - z - 1},{x},{y},{self.tile[0]},{self.tile[1]}&"
        elif self.use_tiled:
            base += f"region={x * self.tile[0]},{y * self.tile[1]},{self.tile[0]},{self.tile[1]}&"
        return base + self.query


def iviewer_open(info: dict, ctx: dict) -> list[Step]:
    """Opening: the bird's-eye thumbnail and what the view shows at the lowest resolution (all of it)."""
    source = IviewerSource.of(info)
    page: Page = ctx["page"]
    steps = [Step(IMG, f"/webgateway/render_thumbnail/{info['id']}/?rev={page.now_ms}-ol-viewer-1")]
    return steps + [Step(IMG, url) for url in source.tiles_at(0)]


def iviewer_zoom_pan(info: dict, ctx: dict) -> list[Step]:
    """Open, zoom in twice (the second zoom shows 2 × 2 tiles of the centre), then pan one tile right."""
    source = IviewerSource.of(info)
    steps = iviewer_open(info, ctx)
    steps += [Step(IMG, u) for u in source.tiles_at(1)]
    steps += [Step(IMG, u) for u in source.tiles_at(2, range(1, 3), range(1, 3))]
    steps += [Step(IMG, u) for u in source.tiles_at(2, range(3, 4), range(1, 3))]
    return steps


def classic_render(data: dict, ctx: dict) -> list[Step]:
    """ome.viewport.js `_load` → render_image/<getRelUrl()> with img_detail's quality 0.9."""
    channels = [dict(ch, color=ch["lut"]) if ch.get("lut") else ch for ch in data["channels"]]
    chs, maps_json = [], []
    for i, ch in enumerate(channels):
        color = ch["color"][1:] if ch["color"].startswith("#") else ch["color"]
        chs.append(f"{'' if ch['active'] else '-'}{i + 1}|{js(ch['window']['start'])}:{js(ch['window']['end'])}"
                   f"${color}")
        maps_json.append({"inverted": {"enabled": ch["inverted"]}})
    for j in range(len(chs) - 1, 0, -1):  # remove_inactive_channels, always keeping the first
        if chs[j][0] == "-":
            del chs[j], maps_json[j]
    rdefs = data["rdefs"]
    query = [f"c={','.join(chs)}", f"m={rdefs['model'].lower()[:1]}", f"p={rdefs['projection'].lower()}",
             f"ia={1 if rdefs['invertAxis'] else 0}", "q=0.9",
             "maps=" + json.dumps(maps_json, separators=(",", ":")).replace(" ", "")]
    return [Step(IMG, f"/webgateway/render_image/{data['id']}/{rdefs['defaultZ']}/{rdefs['defaultT']}/?"
                      + "&".join(query))]


# --- webclient browsing (clients.md §10; ome.tree.js:442-560 builds each listing's query in this order:
# id, experimenter_id, page, sizeXYZ, date, group; every GET is jQuery with cache:false) -----------------

BROWSE_PAGE = "/webclient/?experimenter=-1"  # IDR's nginx sends /webclient to the whole group's view


def webclient_page(html: bytes, ctx: dict) -> list[Step]:
    """The page's scripts: the rdef clipboard, open-with options, then the tree's root and top level in
    the viewer's active group (base_container.html:166 `WEBCLIENT.active_group_id`)."""
    found = _ACTIVE_GROUP.search(html)
    assert found, html[:300]
    ctx["gid"] = gid = int(found.group(1))
    return [Step(AJAX, "/webgateway/getImgRDef/"), Step(AJAX, "/webgateway/open_with/"),
            Step(AJAX, f"/webclient/api/experimenters/-1/?page=1&group={gid}"),
            Step(AJAX, f"/webclient/api/containers/?id=-1&experimenter_id=-1&page=0&group={gid}", browse_top)]


def _panels(kind: str, ident: int, query: str = "") -> list[Step]:
    """The right-hand panel and the key-value pairs mapr shows for a selected object."""
    return [Step(AJAX, f"/webclient/metadata_details/{kind}/{ident}/{query}"),
            Step(AJAX, f"/webclient/api/annotations/?type=map&parents=true&{kind}={ident}")]


def browse_top(doc: dict, ctx: dict) -> list[Step]:
    """Click the first screen, then (after its plate, well and image) the first project."""
    gid, steps = ctx["gid"], []
    if doc["screens"]:
        sid = doc["screens"][0]["id"]
        steps += [Step(AJAX, f"/webclient/api/plates/?id={sid}&page=0&group={gid}", browse_plates),
                  *_panels("screen", sid)]
    if doc["projects"]:
        pid = doc["projects"][0]["id"]
        steps += [Step(AJAX, f"/webclient/api/datasets/?id={pid}&page=0&group={gid}", browse_datasets),
                  *_panels("project", pid)]
    return steps


def browse_plates(doc: dict, ctx: dict) -> list[Step]:
    """Click the screen's first plate: its runs (if any), the centre panel, the grid, its panels."""
    plate = doc["plates"][0]
    steps = [Step(AJAX, f"/webclient/api/plate_acquisitions/?id={plate['id']}&page=0&group={ctx['gid']}")] \
        if plate.get("childCount") else []
    return [*steps, Step(AJAX, f"/webclient/load_plate/plate/{plate['id']}/?index=0"),
            Step(JSONP_AJAX, f"/webgateway/plate/{plate['id']}/0/", browse_grid), *_panels("plate", plate["id"])]


def browse_grid(grid: dict, ctx: dict) -> list[Step]:
    """The grid's thumbnail batches, then a click on its first well and that well's image."""
    cell = next(cell for row in grid["grid"] for cell in row if cell)
    return [*plate_batches(grid, ctx), *_panels("well", cell["wellId"], "?index=0"),
            Step(AJAX, f"/webgateway/well/{cell['wellId']}/children/", well_batches), *_image_panels(cell["id"])]


def _image_panels(iid: int) -> list[Step]:
    """The image's panels, then its acquisition, preview and hierarchy tabs opened in turn."""
    return [*_panels("image", iid),
            *(Step(AJAX, f"/webclient/metadata_{tab}/image/{iid}/") for tab in ("acquisition", "preview", "hierarchy"))]


def browse_datasets(doc: dict, ctx: dict) -> list[Step]:
    """Click the project's first dataset: its images (the tree's first page), its panels."""
    did = doc["datasets"][0]["id"]
    return [Step(AJAX, f"/webclient/api/images/?id={did}&page=1&sizeXYZ=true&date=true&group={ctx['gid']}",
                 browse_images), *_panels("dataset", did)]


def browse_images(doc: dict, ctx: dict) -> list[Step]:
    """The dataset's icons (webclient batches), then a click on its first image."""
    ids = [image["id"] for image in doc["images"]]
    return [*_batches(AJAX, "/webclient/get_thumbnails/", ids, ctx["batch"]), *_image_panels(ids[0])]
