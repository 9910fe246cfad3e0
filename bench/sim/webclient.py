"""`/webclient/`: the thumbnail/render mirrors (placeholders instead of 404), login and logout (the page
itself is in pages.py, the tree in tree.py, the panels in panels.py).

The optional share id of wc/urls.py:128-225 is a path segment, never a width: thumbnails are then
the default size. The sim has no shares, so every share id is one OMERO does not find, and OMERO
then answers with the user's own connection (`prepare_share_connection`, omeroweb/decorators.py:174-190).
"""
from __future__ import annotations

import html
from urllib.parse import urlsplit

from starlette.responses import HTMLResponse, RedirectResponse, Response

from bench.sim import imageviews as iv
from bench.sim import webgateway as gw
from bench.sim.http import AUTH_NONE, AUTH_WEB, Ctx, Endpoint, error
from bench.sim.jsonp import JSONP_WEB
from bench.sim.sessions import csrf_ok, new_csrf_token

WC = "/webclient"
IID = gw.IID
LOGIN_FAILED = "Connection not available, please check your user name and password."
SHARE = "{share_id:int}/"


def share_suffix(*paths: str) -> tuple[str, ...]:
    """`<path>[<share_id>/]`"""
    return tuple(p for path in paths for p in (path, path + SHARE))


def share_prefix(*suffixes: str) -> tuple[str, ...]:
    """`/webclient/[<share_id>/]<suffix>`"""
    return tuple(p for suffix in suffixes for p in (f"{WC}/{suffix}", f"{WC}/{SHARE}{suffix}"))


async def render_thumbnail(ctx: Ctx) -> Response:
    return await iv.thumbnail(ctx, ctx.path_int("iid"), ctx.path_opt("w"), None, iv.default_thumbnail)


async def get_thumbnail(ctx: Ctx) -> Response:
    data = await iv.thumbnail_data(ctx, ctx.path_int("iid"), None, None, iv.default_thumbnail)
    return ctx.json(iv.data_uri(data))


async def get_thumbnails(ctx: Ctx) -> Response:
    """webgateway's get_thumbnails_json without `_defcb`: missing images are null here too."""
    return await iv.thumbnail_batch(ctx, None)


def _login_page(token: str, url: str, message: str = "") -> HTMLResponse:
    note = f'<p class="error">{html.escape(message)}</p>' if message else ""
    body = (f"<html><body><h1>OMERO.web login</h1>{note}"
            f'<form method="post" action="/webclient/login/?url={html.escape(url)}">'
            f'<input type="hidden" name="csrfmiddlewaretoken" value="{token}">'
            '<input name="username"><input name="password" type="password">'
            '<input type="hidden" name="server" value="1"><button type="submit">Login</button>'
            "</form></body></html>")
    response = HTMLResponse(body, status_code=200)
    response.set_cookie("csrftoken", token, path="/", samesite="lax")
    return response


def _safe_next(url: str | None) -> str:
    """Only same-site relative redirects, as Django's url_has_allowed_host_and_scheme."""
    parts = urlsplit(url or "")
    return url if url and not parts.scheme and not parts.netloc and url.startswith("/") else f"{WC}/"


async def login(ctx: Ctx) -> Response:
    url = ctx.q.get("url", "")
    token = ctx.request.cookies.get("csrftoken") or new_csrf_token()
    if ctx.request.method != "POST":
        return _login_page(token, url)
    form = await ctx.form()
    if not csrf_ok(ctx.request, form.get("csrfmiddlewaretoken")):
        raise error(403, "CSRF verification failed. Request aborted.", "text/html")
    async with ctx.work("login", renders=0):
        user = ctx.sim.sessions.authenticate(form.get("username"), form.get("password"))
    if user is None or form.get("server", "1") != "1":
        return _login_page(token, url, LOGIN_FAILED)
    ident = await ctx.sim.sessions.create(user)
    response = RedirectResponse(_safe_next(url), status_code=302)
    response.set_cookie(ctx.sim.config.session_cookie, ident.cookie, path="/", httponly=True, samesite="lax")
    return response


async def logout(ctx: Ctx) -> Response:
    if ctx.request.method == "POST":
        form = await ctx.form()
        if not csrf_ok(ctx.request, form.get("csrfmiddlewaretoken")):
            raise error(403, "CSRF verification failed. Request aborted.", "text/html")
    await ctx.sim.sessions.logout(ctx.ident)
    response = RedirectResponse(f"{WC}/login/", status_code=302)
    response.delete_cookie(ctx.sim.config.session_cookie, path="/")
    return response


ENDPOINTS = [
    Endpoint("webclient:render_thumbnail", share_suffix(f"{WC}/render_thumbnail/{IID}/",
                                                        f"{WC}/render_thumbnail/size/{{w:int}}/{IID}/"),
             render_thumbnail),
    Endpoint("webclient:get_thumbnail", share_suffix(f"{WC}/get_thumbnail/{IID}/"), get_thumbnail, jsonp=JSONP_WEB),
    Endpoint("webclient:get_thumbnails", share_suffix(f"{WC}/get_thumbnails/"), get_thumbnails, jsonp=JSONP_WEB),
    Endpoint("webclient:render_image", share_prefix(*gw.planes("render_image")),
             gw.render_image),
    Endpoint("webclient:render_image_region", share_prefix(f"render_image_region/{IID}/{{z:int}}/{{t:int}}/"),
             gw.render_image_region),
    Endpoint("webclient:render_birds_eye_view",
             share_prefix(f"render_birds_eye_view/{IID}/", f"render_birds_eye_view/{IID}/{{w:int}}/"),
             gw.render_thumbnail),
    Endpoint("webclient:imgData", share_prefix(f"imgData/{IID}/"), gw.img_data, jsonp=JSONP_WEB),
    Endpoint("webclient:saveImgRDef", (f"{WC}/saveImgRDef/{IID}/",), gw.save_img_rdef, AUTH_WEB, ("POST",)),
    Endpoint("webclient:login", (f"{WC}/login/",), login, AUTH_NONE, ("GET", "POST")),
    Endpoint("webclient:logout", (f"{WC}/logout/",), logout, AUTH_WEB, ("GET", "POST")),
]
