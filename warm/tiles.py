"""The image URLs a viewer requests when it opens an image, derived from imgData the way the viewer does.

OMERO.iviewer's tiles, regions or plane: edge/viewer.py (shared with the edge's prefetch), here at the
levels `--levels` chooses.

The classic webgateway viewer (`ome.viewport.js:1067-1142, 1214-1217`, ome/omero-web @4b7b4ca), which the
webclient's preview panel also uses: `render_image/<id>/<defaultZ>/<defaultT>/?c=…&m=…&p=…&ia=0|1[&q=…]&maps=…`
with every channel in `c` (inactive as `-n`), then the inactive ones after the first dropped
(`remove_inactive_channels`), and `maps` with the inversion only. `img_detail` sets `q=0.9`
(`omero_image.html:1218`), the preview panel no `q`. Its PanoJS tiles of pyramids are not planned.

Numbers, JSON and URL encoding as in edge/viewer.py, so the warmed URLs are the viewer's own and their
keys the viewer's keys.
"""
from __future__ import annotations

from edge.viewer import QUALITY, browser_query, channel_color, js_json, js_number, tile_urls
from edge.viewer import render_params, scales, uses_tiles  # noqa: F401 - part of this module's interface (tests)

VIEWERS = ("iviewer", "classic", "preview")  # iviewer; webgateway img_detail (q=0.9); webclient preview (no q)


class BadLevels(ValueError):
    pass


def classic_params(img: dict, quality: str | None = QUALITY) -> list[tuple[str, str]]:
    """The classic viewer's query (ome.viewport.js getQuery(…, remove_inactive_channels=true))."""
    channels, maps = [], []
    for i, ch in enumerate(img.get("channels") or []):
        window = ch.get("window") or {}
        color = channel_color(ch)
        color = color[1:] if color.startswith("#") else color  # OME.rgbToHex
        channels.append(f"{'' if ch.get('active') else '-'}{i + 1}|{js_number(window.get('start', 0))}:"
                        f"{js_number(window.get('end', 0))}${color}")
        inverted = ch.get("inverted")
        maps.append({"inverted": {"enabled": inverted if isinstance(inverted, bool) else None}})
    kept = [0] + [j for j in range(1, len(channels)) if not channels[j].startswith("-")] if channels else []
    rdefs = img.get("rdefs") or {}
    params = [("c", ",".join(channels[j] for j in kept)), ("m", str(rdefs.get("model") or "")[:1].lower()),
              ("p", str(rdefs.get("projection") or "").lower()), ("ia", "1" if rdefs.get("invertAxis") else "0")]
    if quality:
        params.append(("q", quality))
    params.append(("maps", js_json([maps[j] for j in kept]).replace(" ", "")))
    return params


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


def classic_urls(image_id: int, img: dict, quality: str | None = QUALITY) -> list[str]:
    """The classic viewer's one render of a plain image at the default Z/T (pyramids: PanoJS, not planned)."""
    if img.get("tiles") is True:
        return []
    rdefs = img.get("rdefs") or {}
    z, t = rdefs.get("defaultZ", 0), rdefs.get("defaultT", 0)
    view = "render_split_channel" if str(rdefs.get("projection") or "").lower() == "split" else "render_image"
    return [f"/webgateway/{view}/{image_id}/{z}/{t}/?{browser_query(classic_params(img, quality))}"]


def viewer_urls(image_id: int, img: dict, levels: tuple[int | None, list[int]],
                viewers: tuple[str, ...] = ("iviewer",)) -> list[str]:
    """Every URL the chosen viewers request for the image, each once, in viewer order."""
    urls: list[str] = []
    for viewer in viewers:
        if viewer == "iviewer":
            urls += tile_urls(image_id, img, levels)
        else:
            urls += classic_urls(image_id, img, QUALITY if viewer == "classic" else None)
    return list(dict.fromkeys(urls))
