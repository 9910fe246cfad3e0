"""Serve the sim's apps (OMERO.web port and optional microservice port) on one event loop.

granian (default, fast) or hypercorn; both speak HTTP/1.1 and h2c with prior knowledge.
SIGTERM/SIGINT stop both servers cleanly.
"""
from __future__ import annotations

import asyncio
import signal
import sys
import time

from starlette.applications import Starlette

from bench.sim.app import create_app, create_ms_app
from bench.sim.config import SimConfig
from bench.sim.state import Sim


async def _granian(apps: list[tuple[Starlette, int]], host: str, stop: asyncio.Event) -> None:
    from granian.constants import HTTPModes, Interfaces
    from granian.server.embed import Server

    servers = [Server(app, address=host, port=port, interface=Interfaces.ASGINL, http=HTTPModes.auto,
                      log_enabled=False, backlog=1024) for app, port in apps]
    tasks = [asyncio.create_task(s.serve()) for s in servers]
    await stop.wait()
    for s in servers:
        s.stop()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _hypercorn(apps: list[tuple[Starlette, int]], host: str, stop: asyncio.Event) -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    def config(port: int) -> Config:
        cfg = Config()
        cfg.bind = [f"{host}:{port}"]
        cfg.accesslog = None
        return cfg

    await asyncio.gather(*(serve(app, config(port), shutdown_trigger=stop.wait) for app, port in apps))


SERVERS = {"granian": _granian, "hypercorn": _hypercorn}


async def serve(config: SimConfig) -> None:
    started = time.monotonic()
    sim = Sim.from_config(config)
    apps = [(create_app(config, sim), config.port)]
    if config.ms_port:
        apps.append((create_ms_app(config, sim), config.ms_port))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    counts = sim.catalog.counts()
    ms = f", ms on http://{config.host}:{config.ms_port}" if config.ms_port else ""
    print(f"bench sim ({config.scale}: {counts['images']} images, {counts['plates']} plates) on "
          f"http://{config.host}:{config.port}{ms} via {config.server}, "
          f"catalog built in {time.monotonic() - started:.2f}s", file=sys.stderr, flush=True)
    await SERVERS[config.server]([(a, p) for a, p in apps], config.host, stop)


def run(config: SimConfig) -> int:
    asyncio.run(serve(config))
    return 0
