"""`edge watch` as a command: settings, signals, progress lines and the optional metrics listener."""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time

from .settings import ConfigError, Settings, safe_url
from .watch import Watcher, WatchMetrics, position_store, sink_for

PROGRESS_EVERY = 10.0  # seconds between progress lines while changes arrive


def add_parser(sub: argparse._SubParsersAction, settings_options, epilog: str) -> argparse.ArgumentParser:
    p = sub.add_parser("watch", help="follow OMERO's eventlog in PostgreSQL and purge what changed",
                       description="Purges what OMERO.insight, scripts, imports and the CLI change: reads OMERO's "
                                   "eventlog after the last id processed, purges the objects each change touches "
                                   "(soft for rendering settings, thumbnails, channel names and annotations; hard "
                                   "for moves, permission changes and deletes) and keeps its position across "
                                   "restarts (docs/watch.md).", epilog=epilog)
    settings_options(p)
    p.add_argument("--db", dest="watch_db", help="OMERO's database, postgresql://user@host:5432/omero")
    p.add_argument("--edge", dest="watch_edges", action="append",
                   help="send purges to this edge (POST /_edge/purge with purge_token); repeat per node")
    p.add_argument("--state", dest="watch_state", help="file keeping the position (default: Redis, or the cache dir)")
    p.add_argument("--from", dest="start", default="now", metavar="now|ID",
                   help="where a watcher without a stored position starts: now (default) or after eventlog id ID")
    p.add_argument("--once", action="store_true", help="purge what is there, then exit (0 when caught up)")
    p.add_argument("--metrics-bind", metavar="HOST:PORT",
                   help="serve the watcher's Prometheus metrics here (edge_watch_lag_seconds, …)")
    return p


def run(settings: Settings, start: str, once: bool, metrics_bind: str | None) -> int:
    if not settings.watch_db:
        raise ConfigError("edge watch needs watch_db (--db postgresql://…): OMERO's database")
    if start != "now" and not start.isdigit():
        raise ConfigError(f"--from must be now or an eventlog id (got {start!r})")
    logging.basicConfig(level=logging.INFO, format="edge watch: %(message)s", stream=sys.stderr)
    metrics = WatchMetrics()
    if metrics_bind:
        from prometheus_client import start_http_server

        host, _, port = metrics_bind.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"--metrics-bind must be host:port (got {metrics_bind!r})")
        start_http_server(int(port), addr=host.strip("[]"), registry=metrics.registry)
    print(f"edge watch: {safe_url(settings.watch_db)} → "
          f"{', '.join(settings.watch_edges) or 'the purge state of ' + (settings.redis_url or settings.cache_dir)}",
          file=sys.stderr, flush=True)
    return asyncio.run(_main(settings, metrics, start, once))


async def _main(settings: Settings, metrics: WatchMetrics, start: str, once: bool) -> int:
    watcher = Watcher(settings, position_store(settings), sink_for(settings), metrics)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, watcher.stopping.set)  # finish the batch, keep the position, exit 0
    progress = asyncio.create_task(_progress(watcher))
    try:
        status = await watcher.run(start, once)
    finally:
        progress.cancel()
        await watcher.close()
    _say(watcher, "stopped" if not once else "caught up" if status == 0 else "could not reach the database")
    return status


async def _progress(watcher: Watcher) -> None:
    shown: dict[str, float] = {}
    while True:
        await asyncio.sleep(PROGRESS_EVERY)
        if watcher.m.summary() != shown:
            shown = watcher.m.summary()
            _say(watcher, "following")


def _say(watcher: Watcher, state: str) -> None:
    t = watcher.m.summary()
    position = watcher.position.after if watcher.position else "-"
    print(f"edge watch: {state} at eventlog id {position}: {t['purged']:.0f} changes purged "
          f"({t['hard']:.0f} hard, {t['soft']:.0f} soft tags), {t['ignored']:.0f} ignored, "
          f"{t['unresolved']:.0f} unresolved; behind {t['behind']:.0f}, lag {t['lag']:.1f} s  "
          f"[{time.strftime('%H:%M:%S')}]",
          file=sys.stderr, flush=True)
