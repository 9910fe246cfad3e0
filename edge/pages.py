"""The edge's own pages' files: `/_edge/demo` (a plate through the edge, each request's answer next to it)
and `/_edge/static/jquery.min.js`, the jQuery of the xstatic-jquery package that the status page and
the demo page load — served by the edge itself, so neither page needs anything from outside.
"""
from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from .settings import Settings

DEMO_PAGE = Path(__file__).parent / "static" / "demo.html"
JQUERY_URL = "/_edge/static/jquery.min.js"


def jquery_file() -> Path:
    """jquery.min.js of the installed xstatic-jquery package (never copied into the project)."""
    import xstatic.pkg.jquery as xjq
    return Path(xjq.BASE_DIR) / "jquery.min.js"


def routes(settings: Settings) -> list[Route]:
    """The demo page batches thumbnails as OMERO's plate view does, by the site's thumbnails_batch.
    Its `?backend=` must be one of the edge's own backends: the page loads scripts (JSONP) from it, so
    a link naming any other origin would run that origin's code on the edge's. The page never says
    which backends there are; whoever opens it names one (`edge demo` prints the link)."""
    page = DEMO_PAGE.read_text().replace("{{thumbnails_batch}}", str(settings.thumbnails_batch))
    backends = {url.rstrip("/") for url in settings.backend}

    async def demo(request: Request) -> Response:
        backend = request.query_params.get("backend")
        if backend is not None and backend.rstrip("/") not in backends:
            return PlainTextResponse("backend must be the URL of one of this edge's backends (setting backend)\n",
                                     status_code=400)
        return HTMLResponse(page)

    async def jquery(request: Request) -> Response:
        return FileResponse(jquery_file(), media_type="application/javascript")

    return [Route("/_edge/demo", demo), Route(JQUERY_URL, jquery)]
