"""`bench tiles`: a viewer opens a pyramid image, zooms in level by level, then pans.

Like iviewer (OpenLayers): it fetches `imgData`, then for each view the tiles that cover a
1280×800 viewport, all at once, as `render_image_region/<id>/<z>/<t>/?tile=<lvl>,<x>,<y>,<tw>,
<th>&c=…&m=c&p=normal&q=0.9&maps=…` with the rendering settings from imgData. A tile already
fetched in this visit is not fetched again (the viewer's tile cache). Views: the whole image at
the lowest resolution, each finer level down to four levels, then a pan right and a pan down.
Warm targets are filled by one identical visit (nginx has no warmer; the edge's warmer only
covers the first levels a viewer opens).
"""
from __future__ import annotations

import json
import math
from urllib.parse import quote

from bench.clients import Session, Tally, Transport
from bench.measure import LoadFailed, Meter, Primer
from bench.targets import Edge, Stack, Target

VIEWPORT = (1280, 800)
ZOOM_STEPS = 4
MODES = ("viewer",)


def render_params(img: dict) -> str:
    """iviewer's c/m/p/q/maps query from imgData's channels."""
    channels = img["channels"]
    c = ",".join(f"{'' if ch['active'] else '-'}{i + 1}|{ch['window']['start']:g}:{ch['window']['end']:g}"
                 f"${ch['color']}" for i, ch in enumerate(channels))
    maps = json.dumps([{"inverted": {"enabled": bool(ch.get("inverted"))}} for ch in channels], separators=(",", ":"))
    return f"c={quote(c, safe=',|:$')}&m=c&p=normal&q=0.9&maps={quote(maps, safe='')}"


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
        tally = Tally()
        meta = await session.get(f"/webgateway/imgData/{self.image_id}/")
        tally.add(meta)
        if meta.status != 200:
            return tally
        for frame in tile_paths(json.loads(meta.body)):
            for response in await session.get_many(frame):
                tally.add(response)
        return tally

    def prime(self, target: Target, mode: str, transport: Transport) -> str:
        """One untimed visit; the edge's plain and TLS servers have their own memory tiers, so one each."""
        key = "tls" if isinstance(target, Edge) and transport is Transport.H2_TLS else "plain"
        self.primer.load_once(target, mode, transport, key)
        return "one identical viewer visit before timing (per edge server)"
