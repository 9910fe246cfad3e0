"""The fast in-process layer: the edge app and the simulated OMERO's ASGI apps in one event loop.

No ports, no processes, no sleeps: the edge's upstream pools get the sim apps as httpx transports,
the test drives the edge through `httpx.ASGITransport`, and the edge's clock is a `FakeClock` the
test moves. A test module imports the fixtures it uses (`from tests.inprocess import anyio_backend,
edge_app, …`; `pytest_plugins` would work too, but pytest then warns that the module it already
imported cannot be assertion-rewritten) and sets `pytestmark = pytest.mark.anyio`. Fixture names
avoid `sim`, `*_sim` and `edge`, which the conftest marks `process`.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from starlette.applications import Starlette

from bench.sim.app import create_app as create_sim_app, create_ms_app
from bench.sim.config import SimConfig
from bench.sim.state import Sim
from edge.app import Edge, create_app
from edge.routes import Upstream
from edge.settings import Settings

WARM_TOKEN = "warm-secret"


class FakeClock:
    """The edge's `clock`: the real wall time when made, then moved only by `advance`.

    It starts at the real time (not an arbitrary epoch) because the disk tier still derives its
    diskcache expiry from `time.time()`: a clock behind real time would make entries vanish after 1 s."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class TargetTransport(httpx.AsyncBaseTransport):
    """`httpx.ASGITransport` that honours the `target` extension.

    edge/upstream.py sends every request to `<base>/` with the real request target (path and query,
    sent as given) in `extensions["target"]`; a socket transport writes it on the request line, but
    ASGITransport builds the scope from the URL. The scope's path is set from the target instead (not
    via the URL: httpx would drop `..` segments, which a real server passes on). `unreachable` makes
    every request fail as a refused connection would (the edge's UpstreamError path)."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.unreachable = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.unreachable:
            raise httpx.ConnectError("in-process upstream switched off", request=request)
        target = request.extensions.get("target")
        app = self.app if target is None else _at_target(self.app, target)
        return await httpx.ASGITransport(app).handle_async_request(request)


def _at_target(app: Starlette, target: bytes) -> Callable:
    """`app` seeing `target` as the request line's target, as an HTTP server would parse it."""
    raw_path, _, query = target.partition(b"?")
    path = unquote(raw_path.decode("latin-1"))

    async def asgi(scope: dict, receive: Callable, send: Callable) -> None:
        await app({**scope, "path": path, "raw_path": raw_path, "query_string": query}, receive, send)
    return asgi


@dataclass
class SimApps:
    """The simulated OMERO.web and microservice over one shared state, with the transports to them."""

    web: Starlette
    ms: Starlette
    info: dict = field(default_factory=dict)  # /_sim/info: the catalog's ids
    transports: dict[Upstream, TargetTransport] = field(init=False)

    def __post_init__(self) -> None:
        self.transports = {Upstream.WEB: TargetTransport(self.web), Upstream.MS: TargetTransport(self.ms)}

    @property
    def state(self) -> Sim:
        return self.web.state.sim

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        """Straight from the sim's OMERO.web, past the edge: what an edge answer must equal."""
        async with httpx.AsyncClient(transport=httpx.ASGITransport(self.web), base_url="http://sim") as client:
            return await client.get(path, **kwargs)

    def renders(self, endpoint: str) -> int:
        """Backend work done for `endpoint` (a get_thumbnails batch counts one per id)."""
        return self.state.stats.renders[endpoint]

    def requests(self, endpoint: str) -> int:
        return self.state.stats.requests[endpoint]

    def unreachable(self, off: bool = True) -> None:
        """Every upstream refuses connections (True) or answers again (False)."""
        for transport in self.transports.values():
            transport.unreachable = off

    @property
    def public_images(self) -> list[int]:
        return self.info["public_images"]


async def start_sim_apps(config: SimConfig | None = None) -> SimApps:
    """Both sim apps (speed 0: no latency) and their catalog."""
    config = config or SimConfig(speed=0)
    web = create_sim_app(config)
    apps = SimApps(web, create_ms_app(config, web.state.sim))
    apps.info = (await apps.get("/_sim/info")).json()
    return apps


@dataclass
class InprocEdge:
    """A started edge app over `sim`, its fake clock and a client talking to it."""

    app: Edge
    clock: FakeClock
    sim: SimApps
    client: httpx.AsyncClient

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.client.get(path, **kwargs)

    async def messages(self, method: str, path: str, headers: dict[str, str] | None = None) -> list[dict]:
        """The ASGI messages the edge sends for one bodiless request, as sent: httpx.ASGITransport
        drops a HEAD answer's body, so what HEAD puts on the wire is only seen here."""
        sent: list[dict] = []

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        path_part, _, query = path.partition("?")
        raw = [(b"host", b"edge.test")] + [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        scope = {"type": "http", "http_version": "1.1", "method": method, "scheme": "http", "path": path_part,
                 "raw_path": path_part.encode(), "query_string": query.encode(), "headers": raw,
                 "client": ("203.0.113.9", 5000), "server": ("edge.test", 80), "root_path": ""}
        await self.app(scope, receive, send)
        return sent

    async def settle(self) -> None:
        """Wait for what the answer did not (background refreshes, disk copy-ups)."""
        tasks = self.app.background._tasks
        while tasks:
            await asyncio.gather(*list(tasks), return_exceptions=True)

    async def purge(self, *tags: str) -> None:
        await self.app.registry.purge(list(tags))

    async def close(self) -> None:
        await self.client.aclose()
        await self.app.shutdown()


def edge_settings(cache_dir: Path, **overrides: Any) -> Settings:
    """Settings for an in-process edge: the sim's placeholder URLs (the transports answer for them),
    the disk tier in `cache_dir`, warm mode on, and `overrides`."""
    values: dict[str, Any] = dict(backend=["http://sim"], ms=["http://ms"], cache_dir=str(cache_dir),
                                  memory_size=16 * 2**20, warm_token=WARM_TOKEN)
    return Settings(**{**values, **overrides})


async def start_edge(sim: SimApps, cache_dir: Path, **overrides: Any) -> InprocEdge:
    """An edge app over `sim`, started (ASGITransport runs no lifespan) with a fresh fake clock."""
    clock = FakeClock()
    app = create_app(edge_settings(cache_dir, **overrides), clock=clock, transports=dict(sim.transports))
    await app.startup()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app, client=("203.0.113.9", 5000)),
                               base_url="http://edge.test")
    return InprocEdge(app, clock, sim, client)


MakeEdge = Callable[..., Awaitable[InprocEdge]]


# --- fixtures -------------------------------------------------------------------------------------
@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def sim_apps() -> SimApps:
    """A fresh simulated OMERO per test (about 40 ms): stats and faults start clean."""
    return await start_sim_apps()


@pytest.fixture
async def make_edge(sim_apps: SimApps, tmp_path: Path) -> AsyncIterator[MakeEdge]:
    """`await make_edge(**settings)`: an edge over `sim_apps`; all are shut down with the test."""
    started: list[InprocEdge] = []

    async def make(**overrides: Any) -> InprocEdge:
        harness = await start_edge(sim_apps, tmp_path / f"cache{len(started)}", **overrides)
        started.append(harness)
        return harness

    yield make
    for harness in started:
        await harness.close()


@pytest.fixture
async def edge_app(make_edge: MakeEdge) -> InprocEdge:
    """An edge with default settings (disk and memory tiers, public-only)."""
    return await make_edge()


@pytest.fixture
def client(edge_app: InprocEdge) -> httpx.AsyncClient:
    return edge_app.client
