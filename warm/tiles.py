"""The image URLs iviewer requests when it opens an image, derived from imgData the way iviewer does.

iviewer (`viewers/viewer/Viewer.js`, `source/Image.js`) builds every tile URL from imgData: channels
`[-]idx|start:end$COLOR` (the LUT name instead of the colour when set), `maps` with `inverted` for
active channels and `quantization` only when the family is not linear, `m` from rdefs.model, `p` from
rdefs.projection, `q=0.9`, the default Z/T, and for pyramids `tile=<level>,<x>,<y>,512,512`. Numbers
are written as JavaScript prints them (`60`, not `60.0`), so the warmed keys are the viewer's keys.
"""
from __future__ import annotations

import json
import math
from urllib.parse import quote

TILE = 512  # iviewer's DEFAULT_TILE_DIMS for pyramids (OMERO >= 5.4.4)
UNTILED_LIMIT = 4_000_000  # above this many pixels a plain image is fetched in 512 px regions
QUALITY = "0.9"


class BadLevels(ValueError):
    pass


def js_number(value: float | int) -> str:
    """A number as JavaScript's String(x) writes it (integral floats lose their `.0`)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


def _js_json(value: object) -> object:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _js_json(v) for k, v in value.items()}
    return value


def render_params(img: dict) -> list[tuple[str, str]]:
    """c, maps, m, p, q exactly as iviewer sends them for an image's saved settings."""
    channels, maps = [], []
    for i, ch in enumerate(img.get("channels") or []):
        window = ch.get("window") or {}
        color = ch["lut"] if isinstance(ch.get("lut"), str) and ch["lut"] else ch.get("color", "FFFFFF")
        active = bool(ch.get("active"))
        channels.append(f"{'' if active else '-'}{i + 1}|{js_number(window.get('start', 0))}:"
                        f"{js_number(window.get('end', 0))}${color}")
        entry: dict = {}
        if active:
            entry["inverted"] = {"enabled": ch.get("inverted") is True}
            family, coefficient = ch.get("family"), ch.get("coefficient")
            if (isinstance(family, str) and family not in ("", "linear")
                    and isinstance(coefficient, (int, float)) and not math.isnan(coefficient)):
                entry["quantization"] = {"family": family}
                if family not in ("linear", "logarithmic"):
                    entry["quantization"]["coefficient"] = coefficient
        maps.append(_js_json(entry))
    rdefs = img.get("rdefs") or {}
    model = str(rdefs.get("model") or "color")[:1].lower()
    return [("c", ",".join(channels)), ("maps", json.dumps(maps, separators=(",", ":"))),
            ("m", model if model in ("c", "g") else "c"), ("p", str(rdefs.get("projection") or "normal").lower()),
            ("q", QUALITY)]


def parse_levels(spec: str) -> tuple[int | None, list[int]]:
    """`N` → the N lowest-resolution levels; `A-B` or `A,B,…` → those `tile=` levels (0 = full size)."""
    text = spec.strip()
    try:
        if text.isdigit():
            if int(text) < 1:
                raise ValueError
            return int(text), []
        levels: list[int] = []
        for part in text.split(","):
            lo, dash, hi = part.partition("-")
            first, last = int(lo), int(hi) if dash else int(lo)
            if first < 0 or last < first:
                raise ValueError
            levels += range(first, last + 1)
        return None, sorted(set(levels))
    except ValueError:
        raise BadLevels(f"--levels must be N (the N lowest-resolution levels) or levels like 3-4 or 2,4 "
                        f"(got {spec!r})") from None


def _query(params: list[tuple[str, str]]) -> str:
    return "&".join(f"{n}={quote(v, safe=',:')}" for n, v in params)


def tile_urls(image_id: int, img: dict, levels: tuple[int | None, list[int]]) -> list[str]:
    """Every URL of the chosen levels, lowest resolution first (what a viewer draws first)."""
    size = img.get("size") or {}
    width, height = int(size.get("width", 0)), int(size.get("height", 0))
    rdefs = img.get("rdefs") or {}
    z = min(max(int(rdefs.get("defaultZ") or 0), 0), max(int(size.get("z", 1)) - 1, 0))
    t = min(max(int(rdefs.get("defaultT") or 0), 0), max(int(size.get("t", 1)) - 1, 0))
    params = _query(render_params(img))
    if not img.get("tiles"):
        if width * height <= UNTILED_LIMIT:
            return [f"/webgateway/render_image/{image_id}/{z}/{t}/?{params}"]
        return [f"/webgateway/render_image_region/{image_id}/{z}/{t}/?region={x * TILE},{y * TILE},{TILE},{TILE}"
                f"&{params}" for y in range(math.ceil(height / TILE)) for x in range(math.ceil(width / TILE))]
    scaling = img.get("zoomLevelScaling") or {"0": 1.0}
    count = len(scaling)
    lowest, chosen = levels
    wanted = range(count - 1, max(count - lowest, 0) - 1, -1) if lowest else [v for v in reversed(chosen) if v < count]
    urls = []
    for level in wanted:
        scale = float(scaling[str(level)])
        nx, ny = math.ceil(width * scale / TILE), math.ceil(height * scale / TILE)
        urls += [f"/webgateway/render_image_region/{image_id}/{z}/{t}/?tile={level},{x},{y},{TILE},{TILE}&{params}"
                 for y in range(ny) for x in range(nx)]
    return urls
