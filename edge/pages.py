"""The edge's own pages' files: `/_edge/demo` (a plate through the edge, each request's answer next to it)
and `/_edge/static/jquery.min.js`, the jQuery of the xstatic-jquery package that the status page and
the demo page load — served by the edge itself, so neither page needs anything from outside.
"""
from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route

DEMO_PAGE = Path(__file__).parent / "static" / "demo.html"
JQUERY_URL = "/_edge/static/jquery.min.js"


def jquery_file() -> Path:
    """jquery.min.js of the installed xstatic-jquery package (never copied into the project)."""
    import xstatic.pkg.jquery as xjq
    return Path(xjq.BASE_DIR) / "jquery.min.js"


def routes(thumbnails_batch: int) -> list[Route]:
    """The demo page batches thumbnails as OMERO's plate view does, by the site's thumbnails_batch."""
    page = DEMO_PAGE.read_text().replace("{{thumbnails_batch}}", str(thumbnails_batch))

    async def demo(request: Request) -> Response:
        return HTMLResponse(page)

    async def jquery(request: Request) -> Response:
        return FileResponse(jquery_file(), media_type="application/javascript")

    return [Route("/_edge/demo", demo), Route(JQUERY_URL, jquery)]
