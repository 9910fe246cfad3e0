"""`bench tiles`: a viewer opens a pyramid image, zooms in level by level, then pans.

Like OMERO.iviewer (clients.md §4): it fetches `/iviewer/image_data/<id>/?_=<n>` (jQuery with
`cache: false`), then, as the map opens, the bird's-eye thumbnail
`/webgateway/render_thumbnail/<id>/?rev=<Date.now()>-<viewer config id>` together with the first
view's tiles, and for each view the tiles that cover a 1280×800 viewport, all at once, as
`render_image_region/<id>/<z>/<t>/?tile=<lvl>,<x>,<y>,<tw>,<th>&c=…&maps=…&m=…&p=…&q=0.9`
(Image.js's tileUrlFunction: active channels only in `c`, one `maps` entry each, JSON.stringify,
the URL escaped as a browser escapes a query). A tile already fetched in this visit is not
fetched again (the viewer's tile cache). Views: the whole image at
the lowest resolution, each finer level down to four levels, then a pan right and a pan down.
Warm targets are filled by one identical visit (nginx has no warmer; the edge's warmer only
covers the first levels a viewer opens).
"""
from __future__ import annotations

import json
import math
import time
from urllib.parse import quote

from bench.clients import JQuery, Session, Tally, Transport
from bench.measure import LoadFailed, Meter, Primer
from bench.targets import Edge, Stack, Target

VIEWPORT = (1280, 800)
ZOOM_STEPS = 4
MODES = ("viewer",)


# What a browser leaves unescaped in a URL's query (WHATWG URL: the special-query percent-encode set is
# controls, space, ", #, <, >, '), so `maps=[{"inverted":…}]` goes out as `maps=[{%22inverted%22:…}]`.
BROWSER_QUERY_SAFE = "!$%&()*+,-./:;=?@[\\]^_`{|}~"


def js_number(value: float | int) -> str:
    """A number as JavaScript's String() writes it (integers without ".0")."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return repr(value)


def render_params(img: dict) -> str:
    """iviewer's c/maps/m/p/q query from image_data's channels and rdefs (source/Image.js tileUrlFunction,
    on first opening: the saved settings are the current ones)."""
    channels, maps = [], []
    for i, ch in enumerate(img["channels"]):
        if not ch["active"]:
            continue                                # only active channels are listed
        color = ch["lut"] if isinstance(ch.get("lut"), str) and ch["lut"] else ch["color"]
        channels.append(f"{i + 1}|{js_number(ch['window']['start'])}:{js_number(ch['window']['end'])}${color}")
        entry: dict = {"inverted": {"enabled": ch.get("inverted") is True}}
        family, coefficient = ch.get("family"), ch.get("coefficient")
        if isinstance(family, str) and family not in ("", "linear") and isinstance(coefficient, (int, float)) \
                and not math.isnan(coefficient):
            entry["quantization"] = {"family": family}
            if family != "logarithmic":
                entry["quantization"]["coefficient"] = int(coefficient) if float(coefficient).is_integer() \
                    else coefficient                # JSON.stringify(1.0) is "1"
        maps.append(entry)
    model = (img.get("rdefs", {}).get("model") or "color")[0]
    projection = img.get("rdefs", {}).get("projection") or "normal"
    query = (f"c={','.join(channels)}&maps={json.dumps(maps, separators=(',', ':'))}&m={model}&p={projection}"
             "&q=0.9")
    return quote(query, safe=BROWSER_QUERY_SAFE)


def views(img: dict) -> list[tuple[int, float, float]]:
    """(level, centre x, centre y) per view, centres in that level's pixels."""
    levels = img["levels"]
    out = []
    deepest = max(0, levels - ZOOM_STEPS)
    for level in range(levels - 1, deepest - 1, -1):
        size = img["resolutions"][str(level)]
        out.append((level, size["sizeX"] / 2, size["sizeY"] / 2))
    level, cx, cy = out[-1]
    out += [(level, cx + VIEWPORT[0], cy), (level, cx + VIEWPORT[0], cy + VIEWPORT[1])]
    return out


def tiles_in_view(img: dict, level: int, cx: float, cy: float) -> list[tuple[int, int, int]]:
    size, tile = img["resolutions"][str(level)], img["tile_size"]
    tw, th = tile["width"], tile["height"]
    cols, rows = math.ceil(size["sizeX"] / tw), math.ceil(size["sizeY"] / th)
    x0, x1 = max(0, int((cx - VIEWPORT[0] / 2) // tw)), min(cols - 1, int((cx + VIEWPORT[0] / 2 - 1) // tw))
    y0, y1 = max(0, int((cy - VIEWPORT[1] / 2) // th)), min(rows - 1, int((cy + VIEWPORT[1] / 2 - 1) // th))
    return [(level, x, y) for y in range(y0, y1 + 1) for x in range(x0, x1 + 1)]


def tile_paths(img: dict) -> list[list[str]]:
    """The tile URLs of each view, leaving out tiles an earlier view fetched."""
    seen: set[tuple[int, int, int]] = set()
    query = render_params(img)
    z, t = img["rdefs"]["defaultZ"], img["rdefs"]["defaultT"]
    tw, th = img["tile_size"]["width"], img["tile_size"]["height"]
    frames = []
    for level, cx, cy in views(img):
        fresh = [tile for tile in tiles_in_view(img, level, cx, cy) if tile not in seen]
        seen.update(fresh)
        frames.append([f"/webgateway/render_image_region/{img['id']}/{z}/{t}/?tile={lv},{x},{y},{tw},{th}&{query}"
                       for lv, x, y in fresh])
    return frames


class TilesScenario:
    name = "tiles"
    modes = MODES

    def __init__(self, stack: Stack, meter: Meter) -> None:
        self.stack = stack
        images = stack.sim.info.get("pyramid_images") or []
        if not images:
            raise LoadFailed("the simulated OMERO has no pyramid image")
        self.image_id = images[0]
        self.primer = Primer(meter, self.load)

    def describe(self) -> dict:
        return {"image_id": self.image_id, "viewport": list(VIEWPORT), "zoom_steps": ZOOM_STEPS}

    async def load(self, session: Session, mode: str) -> Tally:
        tally, jq = Tally(), JQuery()
        config_id = time.time_ns() // 1_000_000             # ImageConfig.id = new Date().getTime()
        meta = await session.get(jq.uncached(f"/iviewer/image_data/{self.image_id}/"))
        tally.add(meta)
        if meta.status != 200:
            return tally
        frames = tile_paths(json.loads(meta.body))
        birds_eye = f"/webgateway/render_thumbnail/{self.image_id}/?rev={time.time_ns() // 1_000_000}-{config_id}"
        frames[0].insert(0, birds_eye)
        for frame in frames:
            for response in await session.get_many(frame):
                tally.add(response)
        return tally

    def prime(self, target: Target, mode: str, transport: Transport) -> str:
        """One untimed visit; the edge's plain and TLS servers have their own memory tiers, so one each."""
        key = "tls" if isinstance(target, Edge) and transport is Transport.H2_TLS else "plain"
        self.primer.load_once(target, mode, transport, key)
        return "one identical viewer visit before timing (per edge server)"
