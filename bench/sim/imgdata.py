"""Image metadata JSON: webgateway's imgData (also the webclient's and the microservice's) and
OMERO.iviewer's `image_data`, which builds on it (omero-iviewer views.py:534-589). Per user: the
requester's rendering settings and permission flags."""
from __future__ import annotations

import math
import time

from starlette.responses import HTMLResponse, Response

from bench.sim.catalog import Image, Pixels
from bench.sim.http import Ctx, HTTPError
from bench.sim.jsonp import ViewError
from bench.sim.rendering import EMISSION, FAMILIES, NAMES, PIXEL_RANGE, RAW_MAX, default_rdef

IN_PROGRESS = {"ConcurrencyException": {"backOff": 1000}}    # gw/marshal.py:172-176
ROIS_PER_IMAGE = 1                                           # the API's images/<id>/rois/ has one
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"                            # iviewer views.py:575


def _split_grid(px: Pixels, n: int, border: int = 2) -> dict:
    gridx = math.ceil(math.sqrt(n))
    gridy = math.ceil(n / gridx)
    return {"width": px.size_x * gridx + border * (gridx + 1),
            "height": px.size_y * gridy + border * (gridy + 1), "border": border, "gridx": gridx, "gridy": gridy}


def _physical_z(px: Pixels) -> float | None:
    return 1.0 if px.size_z > 1 else None


def image_marshal(ctx: Ctx, image: Image) -> dict:
    """imageMarshal (gw/marshal.py:106-281) for this user: their rdef, or the defaults with getDefaults=true;
    the ConcurrencyException stand-in while the pyramid is generated."""
    if ctx.sim.pyramids.generating(image):
        return dict(IN_PROGRESS)
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
            "imageTimestamp": float(image.created), "imageId": image.id, "pixelsType": "uint16",
        },
        "perms": {"canAnnotate": not user.public, "canEdit": mine, "canDelete": mine, "canLink": mine},
        "tiles": px.pyramid,
    }
    if px.pyramid:
        rv["tile_size"] = {"width": px.tile, "height": px.tile}
        rv["levels"] = px.levels
        rv["resolutions"] = {str(lv): dict(zip(("sizeX", "sizeY"), px.level_size(lv))) for lv in range(px.levels)}
        rv["zoomLevelScaling"] = {str(lv): px.level_size(lv)[0] / px.size_x for lv in range(px.levels)}
    rv.update({
        "interpolate": True,
        "size": {"width": px.size_x, "height": px.size_y, "z": px.size_z, "t": px.size_t, "c": px.size_c},
        "pixel_size": {"x": px.physical_size, "y": px.physical_size, "z": _physical_z(px)},
        "init_zoom": 0,
        "pixel_range": list(PIXEL_RANGE),
        "channels": [
            {"emissionWave": EMISSION[i % len(EMISSION)], "label": cat.changes.channel_name(image.id, i, NAMES[i % len(NAMES)]), "color": ch.color,
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


def _select(data: dict, key: str) -> object:
    """imgData/<iid>/<key>/ (gw/marshal.py:276-280): `rv.get(k, {})` per dotted part; {} becomes null."""
    value: object = data
    for part in key.split("."):
        if not isinstance(value, dict):
            raise ViewError("AttributeError", f"'{type(value).__name__}' object has no attribute 'get'")
        value = value.get(part, {})
    return None if value == {} else value


def _select_ms(data: dict, key: str) -> object:
    """The microservice's `:keys` (ImageRegionMicroserviceVerticle.java:784-796): null when a part is missing."""
    value: object = data
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


async def img_data(ctx: Ctx, image_id: int, key: str | None = None, ms: bool = False) -> Response:
    """imageData_json (gw/views.py:1557-1582): 403 empty for the public user, else 404 text, when the
    image cannot be read (the microservice: 404); the ConcurrencyException answer ignores the key."""
    image = ctx.catalog.image(image_id)
    if not ctx.catalog.can_read(ctx.user, image):
        if ms:
            raise HTTPError(Response(status_code=404))
        if ctx.ident.public:
            raise HTTPError(HTMLResponse("", status_code=403))
        raise HTTPError(HTMLResponse(f"Image:{image_id} not found", status_code=404))
    async with ctx.work("imgdata"):
        data = image_marshal(ctx, image)
    if key and "ConcurrencyException" not in data:
        return ctx.json((_select_ms if ms else _select)(data, key))
    return ctx.json(data)


_LENGTHS = ((0.001, 1e4, "\u212b"), (0.01, 1e3, "nm"), (1e3, 1.0, "\u00b5m"), (1e5, 1e-3, "mm"),
            (1e6, 1e-5, "cm"), (1e8, 1e-6, "m"), (math.inf, 1e-9, "km"))


def _length(microns: float) -> tuple[float, str]:
    """common_filters lengthformat / lengthunit (gw/templatetags/common_filters.py:190-238)."""
    if microns == 0:
        return microns, "\u00b5m"
    return next((microns * factor, symbol) for bound, factor, symbol in _LENGTHS if microns < bound)


def _date(seconds: int) -> str:
    return time.strftime(DATE_FORMAT, time.gmtime(seconds))


async def iviewer_image_data(ctx: Ctx) -> Response:
    """/iviewer/image_data/<iid>/: imageMarshal without request settings, plus ROI count, pixel size units,
    dates and the families iviewer offers (omero-iviewer views.py:534-589; not @jsonp)."""
    image = ctx.catalog.image(ctx.path_int("iid"))
    if not ctx.catalog.can_read(ctx.user, image):
        return ctx.json({"error": "Image not found"}, 404)
    async with ctx.work("imgdata"):
        rv = image_marshal(ctx, image)
    rv["roi_count"] = ROIS_PER_IMAGE
    px = image.pixels
    for axis, size in (("x", px.physical_size), ("y", px.physical_size), ("z", _physical_z(px))):
        if size is not None and "pixel_size" in rv:
            value, symbol = _length(size)
            rv["pixel_size"].update({f"unit_{axis}": value, f"symbol_{axis}": symbol, f"unit_id_{axis}": "MICROMETER"})
    rv["delta_t_unit_symbol"] = None
    rv["import_date"] = rv["acquisition_date"] = _date(image.created)
    rv["families"] = list(FAMILIES)
    return ctx.json(rv)
