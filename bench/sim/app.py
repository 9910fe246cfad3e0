"""The two ASGI apps: OMERO.web (webgateway, webclient, API, plate page) and omero-ms-image-region.

Both are built from route tables over one shared `Sim`, so sessions, stats and faults are common.
"""
from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import Route

from bench.sim import api, ms, simroutes, webclient, webgateway
from bench.sim.config import SimConfig
from bench.sim.http import routes
from bench.sim.state import Sim

PLATE_PAGE = Path(__file__).parent / "static" / "plate.html"


async def plate_page(_: Request) -> FileResponse:
    return FileResponse(PLATE_PAGE, media_type="text/html")


def create_app(config: SimConfig, sim: Sim | None = None) -> Starlette:
    """The OMERO.web app; pass `sim` to share state with `create_ms_app`."""
    sim = sim or Sim.from_config(config)
    table = webgateway.ENDPOINTS + webclient.ENDPOINTS + api.ENDPOINTS + simroutes.ENDPOINTS
    app = Starlette(routes=[Route("/", plate_page), Route("/plates/", plate_page), *routes(sim, table)])
    app.state.sim = sim
    return app


def create_ms_app(config: SimConfig, sim: Sim) -> Starlette:
    """The image-region microservice; its endpoints count in the shared stats as `ms:<name>`."""
    app = Starlette(routes=routes(sim, ms.ENDPOINTS, stats_prefix="ms:") + routes(sim, simroutes.ENDPOINTS))
    app.state.sim = sim
    return app
