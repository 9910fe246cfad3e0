"""Image views shared by webgateway, webclient and the microservice: thumbnails, batches, regions,
whole planes, histograms and shape masks (imgData is `imgdata.py`).

The apps differ only in what they do with a missing image (404 or the webclient's placeholder) and
in which parameters are mandatory; those are the flags these functions take.
"""
from __future__ import annotations

import base64
from typing import Callable

from starlette.responses import Response

from bench.sim import pixels
from bench.sim.capacity import COSTS_MS
from bench.sim.catalog import Image, Pixels
from bench.sim.http import Ctx, HTTPError, error
from bench.sim.jsonp import ViewError, javascript_error, py_int
from bench.sim.rendering import rdef_query_error, require_explicit, resolve

MAX_TILE = 2048           # omero.pixeldata.max_tile_length
MAX_REGION = 4096
PREVIEW_MAX = 2048        # render_image of a pyramid renders the largest level up to this size
JPEG = "image/jpeg"
MS_FORMATS = ("png", "tif")   # the microservice's `format=` besides jpeg
NOT_RENDERED = "Failed to render thumbnail"     # _render_thumbnail's Http404 (gw/views.py:399-411)


def readable_image(ctx: Ctx, image_id: int) -> Image:
    """The image if this user may read it; else 404 (`conn.getObject` is None → Http404)."""
    image = ctx.catalog.image(image_id)
    if ctx.catalog.can_read(ctx.user, image):
        return image
    raise error(404, f"Image {image_id} not found")


def _plane_index(px: Pixels, z: int, t: int) -> tuple[int, int]:
    if not (0 <= z < px.size_z and 0 <= t < px.size_t):
        raise error(404, "plane out of range")
    return z, t


# ---- thumbnails -------------------------------------------------------------------------------
def thumb_box(ctx: Ctx, image: Image | None, w: int | None, h: int | None) -> tuple[int, int]:
    side = w or ctx.sim.config.thumb_size
    if image is None:                       # defaultThumbnail: the square placeholder
        return side, h or side
    return pixels.thumbnail_box(image.pixels, side, h)


# the query parameters a thumbnail path reads, in the order it parses them
Reads = tuple[str, ...]
SINGLE_READS: Reads = ("z", "t", "rdefId")      # _render_thumbnail (gw/views.py:394-396)
SET_READS: Reads = ()                           # conn.getThumbnailSet(ids, w) (gw/views.py:1695)
MS_READS: Reads = ("rdefId",)                   # the microservice's ThumbnailCtx (ThumbnailCtx.java:62-81)


def thumb_cost(ctx: Ctx, w: int | None, h: int | None, reads: Reads) -> str:
    """The default size without z/t/rdefId is OMERO.server's cached thumbnail; the rest are rendered."""
    default = w in (None, ctx.sim.config.thumb_size) and h is None
    return "thumbnail_cached" if default and not any(name in ctx.q for name in reads) else "thumbnail"


def thumbnail_bytes(ctx: Ctx, image: Image, w: int | None, h: int | None, reads: Reads) -> bytes:
    """One thumbnail with this user's settings (or `rdefId`'s, and the `z`/`t` plane, when the path reads
    them), or the loading JPEG while the pyramid is generated. Raises HTTPError(404) for a plane
    outside the image (omero-py getThumbnail answers None)."""
    box = thumb_box(ctx, image, w, h)
    if ctx.sim.pyramids.generating(image):
        return pixels.loading(box)
    rdef_id = ctx.int_param("rdefId") if "rdefId" in reads else None
    rdef = (ctx.sim.rdefs.by_id(image, rdef_id) if rdef_id is not None else None) \
        or ctx.sim.rdefs.for_user(image, ctx.user.id)
    z = ctx.int_param("z", rdef.default_z) if "z" in reads else rdef.default_z
    t = ctx.int_param("t", rdef.default_t) if "t" in reads else rdef.default_t
    px = image.pixels
    z, t = _plane_index(px, z, t)
    return pixels.render(image, resolve(rdef, {}, image), z, t, (0, 0, px.size_x, px.size_y), box)


Missing = Callable[[Ctx, int | None, int | None], bytes]   # no thumbnail: raise, or the _defcb placeholder


async def thumbnail_data(ctx: Ctx, image_id: int, w: int | None, h: int | None, missing: Missing,
                         reads: Reads = SINGLE_READS) -> bytes:
    """_render_thumbnail (gw/views.py:376-411): the bytes, or `missing(ctx, w, h)` for an unreadable image
    or a plane it does not have."""
    for name in reads:              # parsed before the image is looked up: a bad value raises first
        ctx.int_param(name)
    image = ctx.catalog.image(image_id)
    if not ctx.catalog.can_read(ctx.user, image):
        return missing(ctx, w, h)
    try:
        async with ctx.work(thumb_cost(ctx, w, h, reads)):
            return thumbnail_bytes(ctx, image, w, h, reads)
    except HTTPError:
        return missing(ctx, w, h)


def raise_404(ctx: Ctx, w: int | None, h: int | None) -> bytes:
    raise error(404, NOT_RENDERED)


def raise_view_404(ctx: Ctx, w: int | None, h: int | None) -> bytes:
    """Http404 inside a @jsonp view: the decorator answers it as JSON 500."""
    raise ViewError("Http404", NOT_RENDERED)


def default_thumbnail(ctx: Ctx, w: int | None, h: int | None) -> bytes:
    """The webclient's `_defcb` (wc/urls.py:133-149): the placeholder PNG at the requested box."""
    return pixels.placeholder(thumb_box(ctx, None, w, h))


async def thumbnail(ctx: Ctx, image_id: int, w: int | None, h: int | None, missing: Missing = raise_404,
                    reads: Reads = SINGLE_READS) -> Response:
    return Response(await thumbnail_data(ctx, image_id, w, h, missing, reads), media_type=JPEG)


def data_uri(data: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(data).decode()


async def thumbnail_set(ctx: Ctx, ids: list[int], w: int | None, reads: Reads) -> Response:
    """{"<id>": data URI | null} for several images in one backend call (null: unreadable)."""
    readable = {i: img for i in ids if ctx.catalog.can_read(ctx.user, img := ctx.catalog.image(i))}
    result: dict[str, str | None] = {str(i): None for i in ids}
    if ids:
        async with ctx.work("batch", renders=len(readable), cost_ms=_batch_cost(len(ids))):
            for i, image in readable.items():
                result[str(i)] = data_uri(thumbnail_bytes(ctx, image, w, None, reads))
    return ctx.json(result)


async def thumbnail_batch(ctx: Ctx, w: int | None) -> Response:
    """get_thumbnails_json (gw/views.py:1663-1711). The ids are get_longs (gw/util.py:83-96: `int()` of
    each, a bad one is a ViewError), duplicates dropped. One id takes the single-thumbnail path (z/t/rdefId
    honoured, any error → null); more than omero.web.thumbnails_batch is OMERO's own 500."""
    ids = list({py_int(raw) for raw in ctx.q.getlist("id")})      # `list(set(image_ids))`: the same order
    if len(ids) == 1:
        return ctx.json({str(ids[0]): await _single_uri(ctx, ids[0], w)})
    limit = ctx.sim.config.thumbnails_batch
    if len(ids) > limit:
        return javascript_error(f"Max {limit} thumbnails at a time.")
    return await thumbnail_set(ctx, ids, w, SET_READS)


def _batch_cost(n: int) -> float:
    return COSTS_MS["batch"] + COSTS_MS["batch_per_id"] * n


async def _single_uri(ctx: Ctx, image_id: int, w: int | None) -> str | None:
    try:
        return data_uri(await thumbnail_data(ctx, image_id, w, None, raise_404))
    except (HTTPError, ViewError):
        return None


# ---- regions and planes -------------------------------------------------------------------------
def _ints(value: str, counts: tuple[int, ...], name: str) -> list[int]:
    try:
        parts = [int(float(v)) for v in value.split(",")]
    except ValueError:
        raise error(400, f"invalid {name} argument") from None
    if len(parts) not in counts:
        raise error(400, f"invalid {name} argument")
    return parts


def region_geometry(ctx: Ctx, px: Pixels) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
    """(region at full resolution, output size) from `tile=v,x,y[,w,h]` or `region=x,y,w,h`."""
    if ctx.q.get("tile"):
        level, tx, ty, *wh = _ints(ctx.q["tile"], (3, 5), "tile")
        tw, th = [v if v > 0 else px.tile for v in wh] or [px.tile, px.tile]
        tw, th = min(tw, MAX_TILE), min(th, MAX_TILE)
        if not 0 <= level < px.levels:
            raise error(400, "invalid resolution level")
        lw, lh = px.level_size(level)
        x0, y0 = tx * tw, ty * th
        if tx < 0 or ty < 0 or x0 >= lw or y0 >= lh:
            raise error(400, "tile out of bounds")
        w, h = min(tw, lw - x0), min(th, lh - y0)
        f = 2 ** level
        return (x0 * f, y0 * f, min(w * f, px.size_x - x0 * f), min(h * f, px.size_y - y0 * f)), (w, h)
    if ctx.q.get("region"):
        x, y, w, h = _ints(ctx.q["region"], (4,), "region")
        if x < 0 or y < 0 or w <= 0 or h <= 0 or x >= px.size_x or y >= px.size_y:
            raise error(400, "region out of bounds")
        w, h = min(w, px.size_x - x), min(h, px.size_y - y)
        if w > MAX_REGION or h > MAX_REGION:
            raise error(400, "region too large")
        return (x, y, w, h), (w, h)
    raise error(400, "tile or region argument required")


def preview_geometry(px: Pixels) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
    level = next((lv for lv in range(px.levels) if max(px.level_size(lv)) <= PREVIEW_MAX), px.levels - 1)
    return (0, 0, px.size_x, px.size_y), px.level_size(level)


async def render(ctx: Ctx, image_id: int, z: int | None, t: int | None, whole: bool, explicit: bool = False,
                 ms: bool = False, cache_control: str | None = None) -> Response:
    """render_image (whole) / render_image_region with the user's rdef under the URL's params; without
    z/t, the user's default plane. `explicit`: the `_rdef` views (validate_rdef_query, 400 as text/html)
    and every microservice render; `ms`: the microservice's formats and `maps` rules."""
    if explicit and ms:
        require_explicit(ctx.q)
    elif explicit and (problem := rdef_query_error(ctx.q)):
        raise error(400, problem, "text/html; charset=utf-8")
    image = readable_image(ctx, image_id)
    px = image.pixels
    rdef = ctx.sim.rdefs.for_user(image, ctx.user.id)
    spec = resolve(rdef, ctx.q, image, MS_FORMATS if ms else (), ms=ms)
    z, t = _plane_index(px, rdef.default_z if z is None else z, rdef.default_t if t is None else t)
    region, out = preview_geometry(px) if whole else region_geometry(ctx, px)
    if ctx.sim.pyramids.generating(image):
        raise error(404, "pyramid in progress")
    async with ctx.work("image" if whole else "region"):
        data = pixels.render(image, spec, z, t, region, out)
    headers = {"Cache-Control": cache_control} if cache_control else None
    return Response(data, media_type=pixels.MEDIA_TYPES[spec.fmt], headers=headers)


async def histogram(ctx: Ctx, image_id: int, channel: int) -> Response:
    """histogram_json (gw/views.py:2881-2910; not @jsonp)."""
    image = readable_image(ctx, image_id)
    px = image.pixels
    bins = ctx.int_param("bins", 256)
    if not 0 <= channel < px.size_c or not 0 < bins <= 65536:
        raise error(400, "invalid channel or bins")
    z, t = _plane_index(px, ctx.int_param("theZ", 0), ctx.int_param("theT", 0))
    async with ctx.work("histogram"):
        data = pixels.histogram(image, channel, z, t, bins)
    return ctx.json({"data": data})


SHAPE_FILL = ((255, 0, 0, 128), (255, 255, 0, 255))   # shape k=0 has a FillColor; k=1 gets yellow


async def shape_mask(ctx: Ctx, shape_id: int) -> Response:
    found = ctx.catalog.shape_image(shape_id)
    if found is None or not ctx.catalog.can_read(ctx.user, found[0]):
        raise error(404, f"Shape {shape_id} not found")
    async with ctx.work("shape_mask"):
        data = pixels.shape_mask(shape_id, SHAPE_FILL[found[1]])
    return Response(data, media_type="image/png")
