"""omero-ms-image-region: its routes on the second port, with the microservice's rules.

Sessions come from X-OMERO-Session-Key, ?bsession= or the OMERO.web session cookie (read from the
Django session store, Redis when configured); no session → 403, no permission → 404. `c` with
windows and colours and `m` are mandatory on every render; thumbnails are the `_ngff` ones, 96 px
unless told, with `rdefId` but never `z`/`t`. Routes are Vert.x patterns whose final `*` takes any
suffix (ImageRegionMicroserviceVerticle.java:343-437), registered in the same order.
"""
from __future__ import annotations

import re

from starlette.responses import Response

from bench.sim import imageviews as iv
from bench.sim.http import AUTH_MS, Ctx, Endpoint, error
from bench.sim.imgdata import img_data as img_data_view
from bench.sim.jsonp import JSONP_MS, JSONP_MS_THUMBNAILS
from bench.sim.webgateway import IID

CACHE_CONTROL = "private, max-age=3600"   # cache-control-header, on render_image(_region) only
APPS = ("/webgateway", "/webclient")
LONGEST_SIDE = 96                         # ThumbnailCtx.java:65-67
_JAVA_LONG = re.compile(r"[+-]?[0-9]+")


def vertx(*patterns: str) -> tuple[str, ...]:
    """Vert.x `<pattern>*`: the pattern followed by anything."""
    return tuple(p + "{_rest:path}" for p in patterns)


def in_apps(*suffixes: str) -> tuple[str, ...]:
    return vertx(*(app + s for s in suffixes for app in APPS))


async def render_region(ctx: Ctx) -> Response:
    return await iv.render(ctx, ctx.path_int("iid"), ctx.path_int("z"), ctx.path_int("t"), whole=False,
                           explicit=True, ms=True, cache_control=CACHE_CONTROL)


async def render_image(ctx: Ctx) -> Response:
    return await iv.render(ctx, ctx.path_int("iid"), ctx.path_int("z"), ctx.path_int("t"), whole=True,
                           explicit=True, ms=True, cache_control=CACHE_CONTROL)


async def thumbnail(ctx: Ctx) -> Response:
    return await iv.thumbnail(ctx, ctx.path_int("iid"), ctx.path_opt("w") or LONGEST_SIDE, None,
                              reads=iv.MS_READS)


def _java_long(raw: str) -> int:
    """Long.parseLong; its NumberFormatException is the 400 text (MicroserviceVerticle getThumbnails)."""
    if not _JAVA_LONG.fullmatch(raw):
        raise error(400, f'For input string: "{raw}"')
    return int(raw)


async def thumbnails(ctx: Ctx) -> Response:
    """getThumbnails: `imageId` then `id` values, no batch limit (ThumbnailCtx.java:69-77)."""
    ids = [_java_long(raw) for name in ("imageId", "id") for raw in ctx.q.getlist(name)]
    return await iv.thumbnail_set(ctx, list(dict.fromkeys(ids)), ctx.path_opt("w") or LONGEST_SIDE, iv.MS_READS)


async def img_data(ctx: Ctx) -> Response:
    return await img_data_view(ctx, ctx.path_int("iid"), ctx.request.path_params.get("key"), ms=True)


async def histogram(ctx: Ctx) -> Response:
    return await iv.histogram(ctx, ctx.path_int("iid"), ctx.path_int("c"))


async def shape_mask(ctx: Ctx) -> Response:
    return await iv.shape_mask(ctx, ctx.path_int("sid"))


ENDPOINTS = [
    Endpoint("render_image_region", in_apps(f"/render_image_region/{IID}/{{z:int}}/{{t:int}}",
                                            f"/render_image_region_rdef/{IID}/{{z:int}}/{{t:int}}"),
             render_region, AUTH_MS),
    Endpoint("render_image", in_apps(f"/render_image/{IID}/{{z:int}}/{{t:int}}",
                                     f"/render_image_rdef/{IID}/{{z:int}}/{{t:int}}"), render_image, AUTH_MS),
    # webclient: `size/:longestSide/:imageId*` then `:imageId*` (a trailing segment is ignored)
    Endpoint("render_thumbnail_ngff", vertx(f"/webclient/render_thumbnail_ngff/size/{{w:int}}/{IID}",
                                            f"/webclient/render_thumbnail_ngff/{IID}",
                                            f"/webgateway/render_thumbnail_ngff/{IID}/{{w:int}}",
                                            f"/webgateway/render_thumbnail_ngff/{IID}"), thumbnail, AUTH_MS),
    Endpoint("render_birds_eye_view_ngff", in_apps(f"/render_birds_eye_view_ngff/{IID}/{{w:int}}",
                                                   f"/render_birds_eye_view_ngff/{IID}"), thumbnail, AUTH_MS),
    Endpoint("get_thumbnails_ngff", in_apps("/get_thumbnails_ngff/{w:int}", "/get_thumbnails_ngff"), thumbnails,
             AUTH_MS, jsonp=JSONP_MS_THUMBNAILS),
    Endpoint("imgData", vertx(f"/webgateway/imgData/{IID}/{{key}}", f"/webgateway/imgData/{IID}",
                              f"/pathviewer/imgData/{IID}/{{key}}", f"/pathviewer/imgData/{IID}"), img_data, AUTH_MS,
             jsonp=JSONP_MS),
    Endpoint("histogram_json", vertx(f"/webgateway/histogram_json/{IID}/channel/{{c:int}}",
                                     f"/pathviewer/histogram_json/{IID}/channel/{{c:int}}"), histogram, AUTH_MS),
    Endpoint("render_shape_mask", vertx("/webgateway/render_shape_mask/{sid:int}"), shape_mask, AUTH_MS),
]
