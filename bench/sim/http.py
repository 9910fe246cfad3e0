"""The request pipeline every sim route goes through, and the response helpers views share.

Routes are data (`Endpoint` rows). `routes()` wraps each handler with: stats, injected faults,
the authentication of its kind (OMERO.web's login_required, the API's, the microservice's, or
none), the cookies and headers OMERO.web adds, and OMERO's answers for view errors.
"""
from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import AsyncIterator, Awaitable, Callable
from urllib.parse import parse_qsl, quote

from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from bench.sim.capacity import COSTS_MS
from bench.sim.jsonp import JSONP_WEB, Jsonp, JsonValue, ViewError, answer, py_int
from bench.sim.rendering import BadParam
from bench.sim.sessions import Identity, csrf_ok
from bench.sim.state import Sim

log = logging.getLogger("bench.sim")

AUTH_WEB = "web"    # OMERO.web login_required: public user, else 302 / 403
AUTH_API = "api"    # JSON API login_required: public user, else 403 {"message": "Not logged in"}
AUTH_MS = "ms"      # omero-ms-core: session header / bsession / cookie, else 403
AUTH_NONE = "none"
API_VERSION = "0.2"


class HTTPError(Exception):
    """Raised by views to answer with `response` (OMERO's 400/403/404 forms)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def error(status: int, body: str = "", media_type: str = "text/plain") -> HTTPError:
    return HTTPError(Response(body, status_code=status, media_type=media_type))


def json_error(status: int, message: str) -> HTTPError:
    return HTTPError(json_response({"message": message}, status))


def json_response(data: object, status: int = 200) -> Response:
    """Django's JsonResponse bytes (default separators)."""
    return JsonValue(data, status)


Handler = Callable[["Ctx"], Awaitable[Response]]


@dataclass(frozen=True)
class Endpoint:
    name: str                      # the stats key
    paths: tuple[str, ...]
    handler: Handler
    auth: str = AUTH_WEB
    methods: tuple[str, ...] = ("GET",)
    jsonp: Jsonp | None = None     # JSONP_WEB for OMERO.web's @jsonp views; the microservice's own modes


class Ctx:
    """One request as a view sees it: params, the identity, and the worker pool."""

    def __init__(self, sim: Sim, request: Request, endpoint: Endpoint, ident: Identity | None) -> None:
        self.sim = sim
        self.request = request
        self.endpoint = endpoint
        self.ident = ident
        self.catalog = sim.catalog
        self.q = request.query_params

    @property
    def user(self):  # noqa: ANN201 - User | None; the catalog's type
        return self.ident.user if self.ident else None

    def path_int(self, name: str) -> int:
        return int(self.request.path_params[name])

    def path_opt(self, name: str) -> int | None:
        """An optional int path segment (`render_thumbnail/<iid>/[<w>/]`)."""
        value = self.request.path_params.get(name)
        return None if value is None else int(value)

    def int_param(self, name: str, default: int | None = None) -> int | None:
        """getIntOrDefault (gw/util.py:76-80): absent → default, else int() (a bad value is a ViewError)."""
        raw = self.q.get(name)
        return default if raw is None else py_int(raw)

    async def form(self) -> dict[str, str]:
        """A urlencoded POST body (what browsers and the tests send; multipart is not needed here)."""
        return dict(await self.form_items())

    async def form_items(self) -> list[tuple[str, str]]:
        """The body's fields in order, repeated ones included (jQuery's `traditional` arrays: toids=1&toids=2)."""
        if not self.request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return []
        return parse_qsl((await self.request.body()).decode("utf-8", "replace"), keep_blank_values=True)

    async def post(self) -> ImmutableMultiDict:
        """Django's request.POST behind CsrfViewMiddleware: on a POST, the csrftoken cookie must match the
        X-CSRFToken header or the csrfmiddlewaretoken field, else 403 (a GET has an empty POST)."""
        if self.request.method != "POST":
            return ImmutableMultiDict()
        form = ImmutableMultiDict(await self.form_items())
        if not csrf_ok(self.request, form.get("csrfmiddlewaretoken")):
            raise error(403, "CSRF verification failed. Request aborted.", "text/html")
        return form

    def json(self, data: object, status: int = 200) -> Response:
        """The view's value; the pipeline wraps it in a callback on JSONP endpoints."""
        return JsonValue(data, status)

    @asynccontextmanager
    async def work(self, kind: str, renders: int = 1, cost_ms: float | None = None) -> AsyncIterator[None]:
        """Hold a backend worker for the cost of `kind`; count `renders` when the work succeeds."""
        async with self.sim.pool.work(COSTS_MS[kind] if cost_ms is None else cost_ms):
            yield
        if renders:
            self.sim.stats.render(self.endpoint.name, renders)


def _not_logged_in(request: Request, auth: str) -> Response:
    if auth == AUTH_API:
        return json_response({"message": "Not logged in"}, 403)
    if auth == AUTH_MS or request.headers.get("x-requested-with") == "XMLHttpRequest":
        return Response(status_code=403)
    full = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/webclient/login/?url={quote(full, safe='/')}", status_code=302)


async def _identify(sim: Sim, request: Request, auth: str) -> Identity | None:
    if auth == AUTH_MS:
        return await sim.sessions.resolve_ms(request)
    ident = await sim.sessions.resolve(request)
    if ident is None and sim.sessions.public_allowed(request, sim.config.public):
        ident = await sim.sessions.create(sim.sessions.public_user)
    return ident


def _finish(sim: Sim, request: Request, endpoint: Endpoint, ident: Identity | None, response: Response) -> Response:
    if endpoint.auth in (AUTH_WEB, AUTH_API):
        response.headers["Vary"] = "Cookie"
    if ident is not None and ident.created:
        response.set_cookie(sim.config.session_cookie, ident.cookie, path="/", httponly=True, samesite="lax")
    if request.url.path.startswith("/api/"):
        response.headers["X-OMERO-ApiVersion"] = API_VERSION
    if endpoint.auth != AUTH_MS:
        response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
    return response


def endpoint_app(sim: Sim, endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    control = endpoint.name.startswith("_sim")

    async def app(request: Request) -> Response:
        if not control:
            sim.stats.request(endpoint.name)
            fault = await sim.faults.apply(endpoint.name)
            if fault is not None:
                return fault
        ident = None
        if endpoint.auth != AUTH_NONE:
            ident = await _identify(sim, request, endpoint.auth)
            if ident is None:
                return _finish(sim, request, endpoint, None, _not_logged_in(request, endpoint.auth))
        try:
            response = await endpoint.handler(Ctx(sim, request, endpoint, ident))
        except HTTPError as exc:
            response = exc.response
        except ViewError as exc:
            response = exc.response(endpoint.jsonp == JSONP_WEB)
        except BadParam as exc:
            response = Response(str(exc), status_code=400, media_type="text/plain")
        except Exception:  # a sim bug must not leak a traceback; log it and answer like Django
            log.exception("error in %s", request.url.path)
            response = HTMLResponse("<h1>Server Error (500)</h1>", status_code=500)
        return _finish(sim, request, endpoint, ident, answer(request, response, endpoint.jsonp))

    return app


def routes(sim: Sim, endpoints: list[Endpoint], stats_prefix: str = "") -> list[Route]:
    out = []
    for ep in endpoints:
        named = replace(ep, name=stats_prefix + ep.name)
        app = endpoint_app(sim, named)
        out += [Route(path, app, methods=list(ep.methods)) for path in ep.paths]
    return out
