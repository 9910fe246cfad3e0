"""The two ASGI apps: OMERO.web (webgateway, webclient, iviewer, API, plate page) and omero-ms-image-region.

Both are built from route tables over one shared `Sim`, so sessions, stats and faults are common.
"""
from __future__ import annotations

from pathlib import Path
from typing import Awaitable, Callable
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Match, Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from bench.sim import annotations, api, iviewer, ms, pages, panels, simroutes, tree, webclient, webgateway, writes
from bench.sim.config import SimConfig
from bench.sim.http import routes
from bench.sim.state import Sim
from edge.pages import jquery_file

PLATE_PAGE = Path(__file__).parent / "static" / "plate.html"
JQUERY_URL = "/static/jquery.min.js"      # the plate page's <script src>


async def _jquery(_: Request) -> FileResponse:
    return FileResponse(jquery_file(), media_type="application/javascript")


def _plate_page(config: SimConfig) -> Callable[[Request], Awaitable[HTMLResponse]]:
    """The plate page, with the site's batch size as OMERO's plate template has it."""
    page = PLATE_PAGE.read_text().replace("{{thumbnails_batch}}", str(config.thumbnails_batch))

    async def plate_page(_: Request) -> HTMLResponse:
        return HTMLResponse(page)
    return plate_page


def _append_slash(router: Router) -> ASGIApp:
    """Django's APPEND_SLASH (CommonMiddleware is in omero.web's default middleware, settings.py:365): a
    path that matches nothing but does with a final slash is a 301 to it (relative, query kept)."""
    async def default(scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path") or quote(scope["path"]).encode()
        slashed = {**scope, "path": scope["path"] + "/"}
        if scope["type"] == "http" and not raw.endswith(b"/") and \
                any(route.matches(slashed)[0] != Match.NONE for route in router.routes):
            query = scope.get("query_string", b"")
            location = raw.decode("latin-1") + "/" + (f"?{query.decode('latin-1')}" if query else "")
            response = Response(status_code=301, headers={"location": location}, media_type="text/html; charset=utf-8")
            await response(scope, receive, send)
            return
        await router.not_found(scope, receive, send)
    return default


def create_app(config: SimConfig, sim: Sim | None = None) -> Starlette:
    """The OMERO.web app; pass `sim` to share state with `create_ms_app`."""
    sim = sim or Sim.from_config(config)
    table = (webgateway.ENDPOINTS + webclient.ENDPOINTS + pages.ENDPOINTS + tree.ENDPOINTS + panels.ENDPOINTS
             + annotations.ENDPOINTS + iviewer.ENDPOINTS + api.ENDPOINTS + writes.ENDPOINTS
             + simroutes.ENDPOINTS)
    page = _plate_page(config)
    app = Starlette(routes=[Route("/", page), Route("/plates/", page), Route(JQUERY_URL, _jquery),
                            *routes(sim, table)])
    app.router.redirect_slashes = False
    app.router.default = _append_slash(app.router)
    app.state.sim = sim
    return app


def create_ms_app(config: SimConfig, sim: Sim) -> Starlette:
    """The image-region microservice; its endpoints count in the shared stats as `ms:<name>`."""
    app = Starlette(routes=routes(sim, ms.ENDPOINTS, stats_prefix="ms:") + routes(sim, simroutes.ENDPOINTS))
    app.router.redirect_slashes = False       # Vert.x answers 404, it never redirects
    app.state.sim = sim
    return app
