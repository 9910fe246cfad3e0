"""Image views shared by webgateway, webclient and the microservice: thumbnails, batches, regions,
whole planes, imgData, histograms and shape masks.

The apps differ only in what they do with a missing image (404, 403 for the public user, or a
placeholder) and in which parameters are mandatory; those are the flags these functions take.
"""
from __future__ import annotations

import base64
import math

from starlette.responses import Response

from bench.sim import pixels
from bench.sim.capacity import COSTS_MS
from bench.sim.catalog import Image, Pixels
from bench.sim.http import Ctx, error
from bench.sim.rendering import (EMISSION, NAMES, PIXEL_RANGE, RAW_MAX, RDef, default_rdef, require_explicit,
                                 resolve)

MAX_BATCH = 50            # omero.web.thumbnails_batch
MAX_TILE = 2048           # omero.pixeldata.max_tile_length
MAX_REGION = 4096
PREVIEW_MAX = 2048        # render_image of a pyramid renders the largest level up to this size
JPEG = "image/jpeg"


def readable_image(ctx: Ctx, image_id: int, public_403: bool = True) -> Image:
    """The image if this user may read it; else 404 (403, empty, for the public user on webgateway)."""
    image = ctx.catalog.image(image_id)
    if ctx.catalog.can_read(ctx.user, image):
        return image
    if public_403 and ctx.ident is not None and ctx.ident.public:
        raise error(403)
    raise error(404, f"Image {image_id} not found")


def _plane_index(ctx: Ctx, px: Pixels, z: int, t: int) -> tuple[int, int]:
    if not (0 <= z < px.size_z and 0 <= t < px.size_t):
        raise error(404, "plane out of range")
    return z, t


# ---- thumbnails -------------------------------------------------------------------------------
def thumb_size(ctx: Ctx, w: int | None) -> int:
    return w or ctx.sim.config.thumb_size


def thumb_cost(ctx: Ctx, w: int | None, h: int | None) -> str:
    """The default size without z/t/rdefId is OMERO.server's cached thumbnail; the rest are rendered."""
    default = w in (None, ctx.sim.config.thumb_size) and h is None
    return "thumbnail_cached" if default and not {"z", "t", "rdefId"} & set(ctx.q) else "thumbnail"


def _thumb_rdef(ctx: Ctx, image: Image) -> RDef:
    rdef_id = ctx.int_param("rdefId")
    chosen = ctx.sim.rdefs.by_id(image, rdef_id) if rdef_id is not None else None
    return chosen or ctx.sim.rdefs.for_user(image, ctx.user.id)


def thumbnail_bytes(ctx: Ctx, image: Image, w: int | None, h: int | None) -> bytes:
    """JPEG bytes, or the in-progress placeholder PNG while the pyramid is being generated."""
    px = image.pixels
    box = pixels.thumbnail_box(px, thumb_size(ctx, w), h)
    if px.in_progress:
        return pixels.placeholder(box, "in_progress")
    rdef = _thumb_rdef(ctx, image)
    z, t = _plane_index(ctx, px, ctx.int_param("z", rdef.default_z), ctx.int_param("t", rdef.default_t))
    return pixels.render(image, resolve(rdef, {}, image), z, t, (0, 0, px.size_x, px.size_y), box)


def missing_thumbnail(ctx: Ctx, w: int | None, h: int | None) -> bytes:
    """webclient's defaultThumbnail: the placeholder PNG, resized to the requested box."""
    side = thumb_size(ctx, w)
    return pixels.placeholder((side, h or side))


async def thumbnail(ctx: Ctx, image_id: int, w: int | None, h: int | None, placeholder: bool = False,
                    public_403: bool = True) -> Response:
    if placeholder and not ctx.catalog.can_read(ctx.user, ctx.catalog.image(image_id)):
        return Response(missing_thumbnail(ctx, w, h), media_type=JPEG)
    image = readable_image(ctx, image_id, public_403)
    async with ctx.work(thumb_cost(ctx, w, h)):
        data = thumbnail_bytes(ctx, image, w, h)
    return Response(data, media_type=JPEG)


def data_uri(data: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(data).decode()


def batch_ids(ctx: Ctx, names: tuple[str, ...] = ("id",)) -> list[int]:
    """Repeated id params (no comma lists), non-integers skipped, duplicates removed."""
    seen: dict[int, None] = {}
    for name in names:
        for raw in ctx.q.getlist(name):
            if raw.strip().lstrip("-").isdigit():
                seen.setdefault(int(raw), None)
    return list(seen)


async def thumbnail_batch(ctx: Ctx, w: int | None, placeholder: bool = False,
                          id_params: tuple[str, ...] = ("id",)) -> Response:
    """get_thumbnails: {"<id>": data URI | null}; >50 ids → 500; one id → the single-thumbnail path."""
    ids = batch_ids(ctx, id_params)
    if len(ids) > MAX_BATCH:
        return Response(f"Max {MAX_BATCH} thumbnails at a time.", status_code=500, media_type="text/javascript")
    if len(ids) == 1:
        return ctx.json({str(ids[0]): await _single_uri(ctx, ids[0], w, placeholder)})
    readable = {i: img for i in ids if ctx.catalog.can_read(ctx.user, img := ctx.catalog.image(i))}
    result: dict[str, str | None] = {str(i): None for i in ids}
    if ids:
        async with ctx.work("batch", renders=len(readable), cost_ms=_batch_cost(len(ids))):
            for i, image in readable.items():
                result[str(i)] = data_uri(thumbnail_bytes(ctx, image, w, None))
    return ctx.json(result)


def _batch_cost(n: int) -> float:
    return COSTS_MS["batch"] + COSTS_MS["batch_per_id"] * n


async def _single_uri(ctx: Ctx, image_id: int, w: int | None, placeholder: bool) -> str | None:
    image = ctx.catalog.image(image_id)
    if not ctx.catalog.can_read(ctx.user, image):
        return data_uri(missing_thumbnail(ctx, w, None)) if placeholder else None
    async with ctx.work(thumb_cost(ctx, w, None)):
        return data_uri(thumbnail_bytes(ctx, image, w, None))


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
                 formats: tuple[str, ...] = (), public_403: bool = True, cache_control: str | None = None
                 ) -> Response:
    """render_image (whole) / render_image_region, with the user's rdef under the URL's params."""
    image = readable_image(ctx, image_id, public_403)
    px = image.pixels
    if explicit:
        require_explicit(ctx.q)
    rdef = ctx.sim.rdefs.for_user(image, ctx.user.id)
    spec = resolve(rdef, ctx.q, image, formats)
    z, t = _plane_index(ctx, px, rdef.default_z if z is None else z, rdef.default_t if t is None else t)
    region, out = preview_geometry(px) if whole else region_geometry(ctx, px)
    if px.in_progress:
        raise error(404, "pyramid in progress")
    async with ctx.work("image" if whole else "region"):
        data = pixels.render(image, spec, z, t, region, out)
    headers = {"Cache-Control": cache_control} if cache_control else None
    return Response(data, media_type=pixels.MEDIA_TYPES[spec.fmt], headers=headers)


# ---- JSON ---------------------------------------------------------------------------------------
def _split_grid(px: Pixels, n: int, border: int = 2) -> dict:
    gridx = math.ceil(math.sqrt(n))
    gridy = math.ceil(n / gridx)
    return {"width": px.size_x * gridx + border * (gridx + 1),
            "height": px.size_y * gridy + border * (gridy + 1), "border": border, "gridx": gridx, "gridy": gridy}


def image_data(ctx: Ctx, image: Image) -> dict:
    """webgateway imageMarshal, for this user: their rdef (or the defaults with getDefaults=true)."""
    cat, px, user = ctx.catalog, image.pixels, ctx.user
    rdef = default_rdef(image) if ctx.q.get("getDefaults") == "true" else ctx.sim.rdefs.for_user(image, user.id)
    dataset = cat.datasets.get(image.dataset_id) if image.dataset_id else None
    project = cat.projects.get(dataset.project_id) if dataset and dataset.project_id else None
    mine = image.owner_id == user.id
    rv = {
        "id": image.id,
        "meta": {
            "imageName": image.name, "imageDescription": image.description,
            "imageAuthor": cat.users[image.owner_id].full_name, "imageArchived": False,
            "projectName": project.name if project else "Multiple", "projectId": project.id if project else None,
            "projectDescription": project.description if project else "",
            "datasetName": dataset.name if dataset else "Multiple", "datasetId": dataset.id if dataset else None,
            "datasetDescription": dataset.description if dataset else "",
            "wellSampleId": image.ws_id or "", "wellId": image.well_id or "",
            "imageTimestamp": image.created, "imageId": image.id, "pixelsType": "uint16",
        },
        "perms": {"canAnnotate": not user.public, "canEdit": mine, "canDelete": mine, "canLink": mine},
        "tiles": px.pyramid,
    }
    if px.pyramid:
        rv["tile_size"] = {"width": px.tile, "height": px.tile}
        rv["levels"] = px.levels
        rv["resolutions"] = {str(lv): dict(zip(("sizeX", "sizeY"), px.level_size(lv))) for lv in range(px.levels)}
        rv["zoomLevelScaling"] = {str(lv): 1.0 / 2 ** lv for lv in range(px.levels)}
    rv.update({
        "interpolate": True,
        "size": {"width": px.size_x, "height": px.size_y, "z": px.size_z, "t": px.size_t, "c": px.size_c},
        "pixel_size": {"x": px.physical_size, "y": px.physical_size, "z": 1.0 if px.size_z > 1 else None},
        "init_zoom": 0,
        "pixel_range": list(PIXEL_RANGE),
        "channels": [
            {"emissionWave": EMISSION[i % len(EMISSION)], "label": NAMES[i % len(NAMES)], "color": ch.color,
             "inverted": ch.inverted, "reverseIntensity": ch.inverted, "family": ch.family,
             "coefficient": ch.coefficient, "window": {"min": 0.0, "max": float(RAW_MAX), "start": ch.start,
                                                       "end": ch.end}, "active": ch.active}
            for i, ch in enumerate(rdef.channels)],
        "split_channel": {"g": _split_grid(px, px.size_c), "c": _split_grid(px, px.size_c + 1)},
        "rdefs": {"model": rdef.model, "projection": "normal", "defaultZ": rdef.default_z,
                  "defaultT": rdef.default_t, "invertAxis": False},
    })
    if image.dataset_id:
        rv["nominalMagnification"] = 40
    return rv


async def img_data(ctx: Ctx, image_id: int, key: str | None = None, public_403: bool = True) -> Response:
    image = readable_image(ctx, image_id, public_403)
    if image.pixels.in_progress:
        return ctx.json({"ConcurrencyException": {"backOff": 1000}})
    async with ctx.work("imgdata"):
        data: object = image_data(ctx, image)
    for part in (key.split(".") if key else ()):
        if not isinstance(data, dict) or part not in data:
            raise error(404, f"no key {key}")
        data = data[part]
    return ctx.json(data)


async def histogram(ctx: Ctx, image_id: int, channel: int, public_403: bool = True) -> Response:
    image = readable_image(ctx, image_id, public_403)
    px = image.pixels
    bins = ctx.int_param("bins", 256)
    if not 0 <= channel < px.size_c or not 0 < bins <= 65536:
        raise error(400, "invalid channel or bins")
    z, t = _plane_index(ctx, px, ctx.int_param("theZ", 0), ctx.int_param("theT", 0))
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
