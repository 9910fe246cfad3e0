"""Shared fixtures: a private Redis, the simulated OMERO, and edges in front of it, all real processes."""
from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from tests.procs import Proc, RedisServer, free_port, script

# Fixtures that start real processes themselves (here and in test modules). A test whose fixture
# closure holds any of them is marked `process`; tests that start processes in their own body
# carry the mark explicitly (module `pytestmark` or a decorator).
PROCESS_FIXTURES = frozenset({
    "redis_server", "sim", "edges", "edge",  # this file (test_sim_sessions overrides the first two)
    "verified",  # test_access
    "slow_sim",  # test_access_concurrency
    "nginx",  # test_nginx
    "fuzz_env",  # test_reliability_fuzz
    "private_sim",  # test_sim_sessions (sim_fixtures)
    "warm_edges",  # test_warm_cli
    "postgres",  # test_warm_db
    "installed",  # test_wheel (builds and installs a wheel)
})


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "process: starts real processes (servers, Redis, nginx, PostgreSQL, the simulator, CLIs); "
                   "`-m 'not process'` runs the fast in-process layer alone")


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if PROCESS_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.process)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


@dataclass
class Sim:
    proc: Proc
    url: str
    ms_url: str
    redis_url: str
    info: dict = field(default_factory=dict)

    def stats(self) -> dict:
        return httpx.get(self.url + "/_sim/stats", timeout=5).json()

    def renders(self) -> int:
        return self.stats()["total"]["renders"]

    def reset(self) -> None:
        httpx.post(self.url + "/_sim/reset", timeout=5).raise_for_status()

    def faults(self, **spec) -> None:
        httpx.post(self.url + "/_sim/faults", json=spec, timeout=5).raise_for_status()

    def login(self, user: str) -> httpx.Client:
        """A client logged in to the sim as `user` (cookie jar holds its session)."""
        password = next(u["password"] for u in self.info["users"] if u["username"] == user)
        client = httpx.Client(base_url=self.url, timeout=10)
        token = client.get("/api/v0/token/").json()["data"]
        resp = client.post("/api/v0/login/", data={"username": user, "password": password, "server": 1},
                           headers={"X-CSRFToken": token})
        resp.raise_for_status()
        return client


def start_sim(redis_url: str = "", *extra: str) -> Sim:
    port, ms_port = free_port(), free_port()
    argv = [script("bench"), "sim", "--host", "127.0.0.1", "--port", str(port), "--ms-port", str(ms_port),
            "--speed", "0", *extra]
    if redis_url:
        argv += ["--redis", redis_url]
    proc = Proc(argv, name="sim")
    url = f"http://127.0.0.1:{port}"
    proc.wait_http(url + "/_sim/stats")
    proc.wait_port(ms_port)
    sim = Sim(proc, url, f"http://127.0.0.1:{ms_port}", redis_url)
    sim.info = httpx.get(url + "/_sim/info", timeout=5).json()
    return sim


@pytest.fixture(scope="session")
def sim(redis_server: RedisServer) -> Iterator[Sim]:
    """One simulated OMERO (speed 0) for the session; tests reset its stats as they need."""
    s = start_sim(redis_server.url)
    yield s
    s.proc.stop()


@dataclass
class EdgeProc:
    proc: Proc
    url: str
    cache_dir: str

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=15, **kwargs)

    def get(self, path: str, **kwargs) -> httpx.Response:
        return httpx.get(self.url + path, timeout=15, **kwargs)


class EdgeFactory:
    """Starts edges (`edge serve` subprocesses) and stops them all at the end of the test."""

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.started: list[EdgeProc] = []

    def __call__(self, *args: str, cache_dir: str | None = None, env: dict[str, str] | None = None,
                 backend: str | None = None, server: str = "granian", tls: tuple[str, str] | None = None) -> EdgeProc:
        port = free_port()
        cache_dir = cache_dir if cache_dir is not None else tempfile.mkdtemp(prefix="edge-cache-")
        argv = [script("edge"), "serve", "--bind", f"127.0.0.1:{port}", "--backend", backend or self.sim.url,
                "--ms", self.sim.ms_url, "--cache-dir", cache_dir, "--server", server, *args]
        scheme = "http"
        if tls:
            argv += ["--certfile", tls[0], "--keyfile", tls[1]]
            scheme = "https"
        proc = Proc(argv, env={"EDGE_PURGE_TOKEN": "purge-secret", "EDGE_WARM_TOKEN": "warm-secret",
                               **(env or {})}, name="edge")
        url = f"{scheme}://127.0.0.1:{port}"
        proc.wait_port(port)
        if not tls:
            proc.wait_http(url + "/_edge/health")
        edge = EdgeProc(proc, url, cache_dir)
        self.started.append(edge)
        return edge

    def stop_all(self) -> None:
        for edge in self.started:
            edge.proc.stop()


@pytest.fixture
def edges(sim: Sim) -> Iterator[EdgeFactory]:
    factory = EdgeFactory(sim)
    yield factory
    factory.stop_all()


@pytest.fixture
def edge(edges: EdgeFactory) -> EdgeProc:
    """A default edge: disk tier only, public-only access."""
    return edges()
