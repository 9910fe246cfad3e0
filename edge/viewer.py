"""OMERO.iviewer's first view of an image, derived from its imgData / image_data exactly as the viewer does.

Shared by the edge's prefetch (edge/prefetch.py: fetch what the viewer asks for next) and the warmer's
`warm tiles` (warm/tiles.py), so both produce the viewer's own URLs, and so its own keys.

OMERO.iviewer (`viewers/viewer/Viewer.js:395-528`, `source/Image.js:199-336`, ome/omero-iviewer @3af5a34):

- Tiled retrieval when the image is a pyramid (`tiles`), or when `width × height > 2048 × 2048` and
  `sizeT == 1`; otherwise one `render_image/<id>/<z>/<t>/` of the plane.
- Pyramids: `render_image_region/<id>/<z>/<t>/?tile=<level>,<x>,<y>,512,512&…`; the levels are imgData's
  `zoomLevelScaling` (0 = full resolution) as far as they shrink strictly, and the viewer opens at the
  lowest resolution. Big plain images: `?region=<x·w>,<y·h>,<w>,<h>&…` at full resolution, 512 px
  (imgData's `tile_size` when it has one).
- `c` lists the ACTIVE channels only, `<n>|<start>:<end>$<color or LUT name>` (1-based); `maps` one entry
  per listed channel, `{"inverted":{"enabled":<bool>}}` and `"quantization":{"family":…}` when the family
  is not linear (`"coefficient"` too unless linear or logarithmic); then `m` (`c`/`g`), `p` (`normal`, or
  `intmax|<start>:<end>`), `q=0.9`, in that order.

Numbers and JSON are written as JavaScript writes them (`String(x)`, `JSON.stringify`: `60`, not `60.0`),
and URLs are percent-encoded as a browser sends them (only `"`, space, `#`, `<`, `>`, `'` and non-ASCII).
"""
from __future__ import annotations

import json
import math
from decimal import Decimal
from urllib.parse import quote

TILE = 512  # iviewer's DEFAULT_TILE_DIMS for pyramids (OMERO >= 5.4.4), and its default tile grid
UNTILED_RETRIEVAL_LIMIT = 2048 * 2048  # iviewer globals.js: above it a single-T image is fetched in regions
QUALITY = "0.9"
_BROWSER_SAFE = "!$&()*+,-./:;=?@[\\]^_`{|}~"  # what a browser leaves unencoded in a query (WHATWG)
LOWEST = (1, [])  # `tile_urls` levels: the lowest resolution only, where the viewer opens


def js_number(value: float | int) -> str:
    """A number as JavaScript's String(x) (and JSON.stringify) writes it: `60`, `0.25`, `1e-7`, `1e+21`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value) or math.isinf(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if value == 0:
        return "0"
    sign, digit_tuple, exponent = Decimal(repr(value)).normalize().as_tuple()
    digits = "".join(map(str, digit_tuple))
    k, n = len(digits), exponent + len(digits)  # ECMA-262 Number::toString: value = 0.digits × 10^n
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        text = "0." + "0" * -n + digits
    else:
        text = digits[0] + ("." + digits[1:] if k > 1 else "") + "e" + ("+" if n - 1 >= 0 else "-") + str(abs(n - 1))
    return ("-" if sign else "") + text


def js_json(value: object) -> str:
    """JSON.stringify(value): no spaces, numbers as JavaScript writes them, undefined (None) members dropped."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{js_json(v)}" for k, v in value.items() if v is not None) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join("null" if v is None else js_json(v) for v in value) + "]"
    if isinstance(value, bool) or isinstance(value, (int, float)):
        return "null" if isinstance(value, float) and (math.isnan(value) or math.isinf(value)) else js_number(value)
    return json.dumps(value)


def browser_query(params: list[tuple[str, str]]) -> str:
    """`name=value&…` percent-encoded as a browser encodes a URL's query (`"` → %22, `|{}$:` kept)."""
    return "&".join(f"{name}={quote(value, safe=_BROWSER_SAFE)}" for name, value in params)


def channel_color(ch: dict) -> str:
    lut = ch.get("lut")
    return lut if isinstance(lut, str) and lut else str(ch.get("color", "FFFFFF"))


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def _projection(rdefs: dict) -> str:
    """iviewer's parseProjectionParameter + setImageProjection: `normal`, `intmax` or `intmax|<s>:<e>`."""
    text = str(rdefs.get("projection") or "").lower()
    name, pipe, span = text.partition("|")
    if name not in ("normal", "intmax"):
        return "normal"
    if name == "intmax" and pipe:
        tokens = span.split(":")
        if len(tokens) == 2 and all(t.strip().lstrip("-").isdigit() for t in tokens):
            start, end = (int(t) for t in tokens)
            if 0 <= start <= end:
                return f"intmax|{start}:{end}"
    return name


def _model(rdefs: dict) -> str:
    """iviewer: the first letter of color/greyscale (anything else is color)."""
    first = str(rdefs.get("model") or "")[:1].lower()
    return first if first in ("c", "g") else "c"


def render_params(img: dict) -> list[tuple[str, str]]:
    """c, maps, m, p, q exactly as iviewer sends them for the settings in imgData (active channels only)."""
    channels, maps = [], []
    for i, ch in enumerate(img.get("channels") or []):
        if not ch.get("active"):
            continue  # "We ONLY include active channels in URL parameters" (Image.js:268)
        window = ch.get("window") or {}
        channels.append(f"{i + 1}|{js_number(window.get('start', 0))}:{js_number(window.get('end', 0))}"
                        f"${channel_color(ch)}")
        entry: dict = {"inverted": {"enabled": ch.get("inverted") is True}}
        family, coefficient = ch.get("family"), ch.get("coefficient")
        # at open the saved family is the current one: quantization only when it is not linear
        if isinstance(family, str) and family not in ("", "linear") and _number(coefficient):
            entry["quantization"] = {"family": family}
            if family != "logarithmic":
                entry["quantization"]["coefficient"] = coefficient
        maps.append(entry)
    rdefs = img.get("rdefs") or {}
    return [("c", ",".join(channels)), ("maps", js_json(maps)), ("m", _model(rdefs)), ("p", _projection(rdefs)),
            ("q", QUALITY)]


def _plane(rdefs: dict, size: dict, axis: str) -> int:
    """iviewer's initial plane/time: the default, clamped into the image."""
    default = rdefs.get("defaultZ" if axis == "z" else "defaultT")
    value = int(default) if _number(default) else 0
    return max(0, min(value, int(size.get(axis, 1)) - 1))


def scales(img: dict) -> list[float]:
    """zoomLevelScaling in key order while it shrinks strictly (Viewer.js:397-409); [1] without it."""
    zls = img.get("zoomLevelScaling") or {}
    out: list[float] = []
    for key in sorted(zls, key=lambda k: (not str(k).isdigit(), int(k) if str(k).isdigit() else 0, str(k))):
        value = float(zls[key])
        if value <= 0 or (out and 1 / value <= 1 / out[-1]):
            break
        out.append(value)
    return out if len(out) > 1 else [1.0]


def _tiles_across(length: int, scale: float, tile: int) -> int:
    """Tiles of one axis at a resolution (OpenLayers' tile range of the whole extent)."""
    return max(1, math.ceil(math.floor(length / (1 / scale) + 0.5) / tile))


def uses_tiles(img: dict) -> bool:
    """iviewer's use_tiled_retrieval_: a pyramid, or a single-T image over 2048 × 2048 pixels."""
    size = img.get("size") or {}
    width, height = int(size.get("width", 0)), int(size.get("height", 0))
    return img.get("tiles") is True or (width * height > UNTILED_RETRIEVAL_LIMIT and int(size.get("t", 1)) == 1)


def tile_urls(image_id: int, img: dict, levels: tuple[int | None, list[int]]) -> list[str]:
    """iviewer's URLs for the chosen levels, lowest resolution first (what it draws first)."""
    size = img.get("size") or {}
    width, height = int(size.get("width", 0)), int(size.get("height", 0))
    rdefs = img.get("rdefs") or {}
    plane = f"{image_id}/{_plane(rdefs, size, 'z')}/{_plane(rdefs, size, 't')}/"
    params = browser_query(render_params(img))
    if not uses_tiles(img):
        return [f"/webgateway/render_image/{plane}?{params}"]
    if img.get("tiles") is not True:  # a big plain image: full-resolution regions
        box = img.get("tile_size") or {}
        tw, th = int(box.get("width") or TILE), int(box.get("height") or TILE)
        return [f"/webgateway/render_image_region/{plane}?region={x * tw},{y * th},{tw},{th}&{params}"
                for y in range(_tiles_across(height, 1.0, th)) for x in range(_tiles_across(width, 1.0, tw))]
    resolutions = scales(img)
    count = len(resolutions)
    lowest, chosen = levels
    wanted = range(count - 1, max(count - lowest, 0) - 1, -1) if lowest else [v for v in reversed(chosen) if v < count]
    urls = []
    for level in wanted:
        scale = resolutions[level]
        nx, ny = _tiles_across(width, scale, TILE), _tiles_across(height, scale, TILE)
        urls += [f"/webgateway/render_image_region/{plane}?tile={level},{x},{y},{TILE},{TILE}&{params}"
                 for y in range(ny) for x in range(nx)]
    return urls


def first_view(image_id: int, img: dict) -> list[str]:
    """What iviewer requests first for the image: its lowest-resolution tiles, its regions, or its plane."""
    return tile_urls(image_id, img, LOWEST)
