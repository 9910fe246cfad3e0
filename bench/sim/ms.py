"""omero-ms-image-region: its routes on the second port, with the microservice's rules.

Sessions come from X-OMERO-Session-Key, ?bsession= or the OMERO.web session cookie (read from the
Django session store, Redis when configured); no session → 403, no permission → 404. `c` with
windows and colours and `m` are mandatory on every render; thumbnails are the `_ngff` ones.
"""
from __future__ import annotations

from starlette.responses import Response

from bench.sim import imageviews as iv
from bench.sim.http import AUTH_MS, Ctx, Endpoint
from bench.sim.webgateway import IID

CACHE_CONTROL = "private, max-age=3600"   # cache-control-header, on render_image(_region) only
APPS = ("/webgateway", "/webclient")
FORMATS = ("png", "tif")


def _both(*suffixes: str) -> tuple[str, ...]:
    """Each path with and without the trailing slash (Vert.x `*` takes any suffix)."""
    return tuple(p for s in suffixes for p in (s, s + "/"))


def _in_apps(*suffixes: str) -> tuple[str, ...]:
    return tuple(p for app in APPS for p in _both(*(app + s for s in suffixes)))



async def render_region(ctx: Ctx) -> Response:
    return await iv.render(ctx, ctx.path_int("iid"), ctx.path_int("z"), ctx.path_int("t"), whole=False,
                           explicit=True, formats=FORMATS, public_403=False, cache_control=CACHE_CONTROL)


async def render_image(ctx: Ctx) -> Response:
    return await iv.render(ctx, ctx.path_int("iid"), ctx.path_int("z"), ctx.path_int("t"), whole=True,
                           explicit=True, formats=FORMATS, public_403=False, cache_control=CACHE_CONTROL)


async def thumbnail(ctx: Ctx) -> Response:
    return await iv.thumbnail(ctx, ctx.path_int("iid"), ctx.path_opt("w"), None, public_403=False)


async def thumbnails(ctx: Ctx) -> Response:
    return await iv.thumbnail_batch(ctx, ctx.path_opt("w"), id_params=("id", "imageId"))


async def img_data(ctx: Ctx) -> Response:
    return await iv.img_data(ctx, ctx.path_int("iid"), ctx.request.path_params.get("key"), public_403=False)


async def histogram(ctx: Ctx) -> Response:
    return await iv.histogram(ctx, ctx.path_int("iid"), ctx.path_int("c"), public_403=False)


async def shape_mask(ctx: Ctx) -> Response:
    return await iv.shape_mask(ctx, ctx.path_int("sid"))


def _thumb_paths(name: str) -> tuple[str, ...]:
    return (_in_apps(f"/{name}/{IID}") + _both(f"/webgateway/{name}/{IID}/{{w:int}}")
            + _both(f"/webclient/{name}/size/{{w:int}}/{IID}"))


ENDPOINTS = [
    Endpoint("render_image_region", _in_apps(f"/render_image_region/{IID}/{{z:int}}/{{t:int}}",
                                             f"/render_image_region_rdef/{IID}/{{z:int}}/{{t:int}}"),
             render_region, AUTH_MS),
    Endpoint("render_image", _in_apps(f"/render_image/{IID}/{{z:int}}/{{t:int}}",
                                      f"/render_image_rdef/{IID}/{{z:int}}/{{t:int}}"), render_image, AUTH_MS),
    Endpoint("render_thumbnail_ngff", _thumb_paths("render_thumbnail_ngff"), thumbnail, AUTH_MS),
    Endpoint("render_birds_eye_view_ngff", _thumb_paths("render_birds_eye_view_ngff"), thumbnail, AUTH_MS),
    Endpoint("get_thumbnails_ngff", _in_apps("/get_thumbnails_ngff", "/get_thumbnails_ngff/{w:int}"), thumbnails,
             AUTH_MS),
    Endpoint("imgData", _both(f"/webgateway/imgData/{IID}", f"/webgateway/imgData/{IID}/{{key}}",
                              f"/pathviewer/imgData/{IID}", f"/pathviewer/imgData/{IID}/{{key}}"), img_data, AUTH_MS),
    Endpoint("histogram_json", _both(f"/webgateway/histogram_json/{IID}/channel/{{c:int}}",
                                     f"/pathviewer/histogram_json/{IID}/channel/{{c:int}}"), histogram, AUTH_MS),
    Endpoint("render_shape_mask", _both("/webgateway/render_shape_mask/{sid:int}"), shape_mask, AUTH_MS),
]
