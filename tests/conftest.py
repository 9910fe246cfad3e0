"""Shared fixtures (a private Redis, the simulated OMERO, edges in front of it: all real processes) and the
`process` marker. Helpers live in tests/helpers/."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import EdgeProc, Launcher, RedisServer, Sim, start_sim

# Fixtures that start real processes themselves (here and in test modules). A test whose fixture
# closure holds any of them is marked `process`; tests that start processes in their own body
# carry the mark explicitly (module `pytestmark` or a decorator). Sim fixtures are named `sim` or
# `*_sim` (sim_fixtures, test_sim_sessions, test_access_concurrency …) and need no entry here.
PROCESS_FIXTURES = frozenset({
    "redis_server", "sim", "edges", "edge",  # this file (test_sim_sessions overrides the first two)
    "verified",  # test_access, test_access_wire
    "nginx",  # test_nginx
    "fuzz_env",  # test_reliability_fuzz
    "warm_edges",  # this file: test_warm_cli, test_warm_metadata
    "postgres",  # test_warm_db
    "installed",  # test_wheel (builds and installs a wheel)
})


def starts_processes(fixture: str) -> bool:
    return fixture in PROCESS_FIXTURES or fixture.endswith("_sim")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "process: starts real processes (servers, Redis, nginx, PostgreSQL, the simulator, CLIs); "
                   "`-m 'not process'` runs the fast in-process layer alone")


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(starts_processes(name) for name in getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.process)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sim(redis_server: RedisServer) -> Iterator[Sim]:
    """One simulated OMERO (speed 0) for the session; tests reset its stats as they need."""
    s = start_sim(redis_url=redis_server.url)
    yield s
    s.stop()


@pytest.fixture
def edges(sim: Sim) -> Iterator[Launcher]:
    """`edges(*args, **options)` starts an edge in front of the session's sim; all stop with the test."""
    launcher = Launcher(sim)
    yield launcher
    launcher.stop_all()


@pytest.fixture
def edge(edges: Launcher) -> EdgeProc:
    """A default edge: disk tier only, public-only access."""
    return edges()


@pytest.fixture
def warm_edges(sim: Sim, redis_server: RedisServer):
    """`warm_edges(db)`: an edge with the warm token, a fresh disk tier and Redis database `db` (so warm tests
    never share entries), no microservice (see tests/helpers/warm.start_edge); all stop with the test."""
    from tests.helpers.warm import start_edge

    started: list[EdgeProc] = []

    def make(db: int) -> EdgeProc:
        started.append(start_edge(sim, redis_server, db))
        return started[-1]

    yield make
    for e in started:
        e.proc.stop()
