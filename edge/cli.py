"""`edge`: serve the edge, run the embedded demo, purge objects, show settings, render nginx config."""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from . import nginxconf, watchcmd, nodemetrics
from .kinds import KINDS
from .settings import ConfigError, Settings
from .tomlconf import sample_toml

EPILOG = "Settings come from defaults < --config TOML (or EDGE_CONFIG) < EDGE_* variables < options; " \
         "`edge config` lists them all."


def _settings_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML file with settings (flat, or under [edge])")
    p.add_argument("--backend", action="append", help="OMERO.web base URL (repeat for several)")
    p.add_argument("--ms", action="append", help="omero-ms-image-region base URL (repeat for several)")
    p.add_argument("--cache-dir", help="L1 disk tier directory ('' turns it off)")
    p.add_argument("--redis", dest="redis_url", help="L2 Redis tier URL, e.g. redis://127.0.0.1:6379/0")
    p.add_argument("--redis-cluster", action="store_true", default=None, help="--redis names a Redis Cluster node")
    p.add_argument("--session-redis", dest="session_redis_url", help="Redis holding OMERO.web's sessions")
    p.add_argument("--access", choices=["public-only", "verified"], help="who the cache serves (see README)")


def _load(args: argparse.Namespace, *names: str) -> Settings:
    overrides = {name: getattr(args, name, None) for name in
                 ("backend", "ms", "cache_dir", "redis_url", "redis_cluster", "session_redis_url", "access", *names)}
    return Settings.load(args.config, **overrides)


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _load(args, "bind", "workers", "server", "certfile", "keyfile", "access_log", "shutdown_timeout")
    temporary = settings.workers > 1 and not settings.metrics_dir
    if temporary:
        settings.metrics_dir = tempfile.mkdtemp(prefix="edge-metrics-")
    if settings.metrics_dir:
        try:
            nodemetrics.wipe(settings.metrics_dir)  # the previous run's workers are not this node's
        except OSError as exc:
            raise ConfigError(f"metrics_dir {settings.metrics_dir}: {exc.strerror}") from None
    try:
        return _serve(settings)
    finally:
        if temporary:
            shutil.rmtree(settings.metrics_dir, ignore_errors=True)


def _serve(settings: Settings) -> int:
    os.environ.update(settings.to_env())
    os.environ.pop("EDGE_CONFIG", None)  # everything is in EDGE_* now
    scheme = "https" if settings.certfile else "http"
    print(f"edge: {settings.server} on {scheme}://{settings.bind} ({settings.workers} worker(s)) "
          f"→ {', '.join(settings.backend)}", file=sys.stderr, flush=True)
    if settings.server == "granian":
        granian_server("edge.app:app", settings, settings.server_interface).serve()
    else:
        from hypercorn.config import Config
        from hypercorn.run import run

        config = Config()
        config.application_path = "edge.app:app"
        config.workers = settings.workers
        config.keep_alive_max_requests = 10**9
        config.backlog = 2048
        if settings.certfile:
            config.bind = [settings.bind]
            config.certfile, config.keyfile = settings.certfile, settings.keyfile
        else:
            config.bind = [settings.bind]
        # h11 checks only a buffer that does not hold a whole request yet, and hypercorn reads 64 KiB at a
        # time: half the limit refuses every header block over max_header_size + 32 KiB, whatever the reads.
        config.h11_max_incomplete_size = settings.max_header_size // 2
        config.h2_max_header_list_size = settings.max_header_size
        # Slow clients: hypercorn has no header read timeout, but its keep-alive timer runs from the moment
        # a connection is idle (opened, or its last answer sent) until a whole request has arrived, and the
        # bytes of a partial request do not restart it. So it is the header timeout (between keep-alive
        # requests too; HTTP/2: while no stream is open). Not `read_timeout`: that one also cuts a client
        # that sends nothing while it downloads a long answer.
        config.keep_alive_timeout = settings.header_timeout
        config.graceful_timeout = settings.shutdown_timeout
        run(config)
    return 0


def granian_server(target: str, settings: Settings, interface: str):
    """granian as `edge serve` runs it (also the benchmark's bare-app ceiling: same options, same worker)."""
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.http import HTTP1Settings, HTTP2Settings

    host, _, port = settings.bind.rpartition(":")
    kwargs = {}
    if settings.certfile:
        kwargs = {"ssl_cert": Path(settings.certfile), "ssl_key": Path(settings.keyfile)}
    # Bounded headers (granian's defaults: 400 KB on HTTP/1.1, 16 MB on HTTP/2) and header read time (30 s).
    # A worker that dies is replaced (granian's default stops the whole server); its counts stay in the
    # node's metrics (edge/nodemetrics.py).
    # uvloop (a dependency) rather than granian's `auto`, which takes rloop whenever it is installed: under rloop a
    # backend resetting its connection mid-body left the next request hanging (issue 14 notes).
    loop = Loops.uvloop if importlib.util.find_spec("uvloop") else Loops.auto
    return Granian(target, address=host.strip("[]"), port=int(port), interface=Interfaces(interface), loop=loop,
                   workers=settings.workers, http=HTTPModes.auto, backlog=2048, log_access=False,
                   workers_kill_timeout=settings.shutdown_timeout,  # SIGTERM: in-flight requests finish, up to this
                   respawn_failed_workers=True,
                   http1_settings=HTTP1Settings(header_read_timeout=int(settings.header_timeout * 1000),
                                                max_buffer_size=settings.max_header_size),
                   http2_settings=HTTP2Settings(max_concurrent_streams=256, max_headers_size=settings.max_header_size),
                   **kwargs)


def cmd_demo(args: argparse.Namespace) -> int:
    """The simulated OMERO, and the edge in front of it on its embedded disk cache."""
    sim_port, edge_port = args.sim_port, args.port
    signal.signal(signal.SIGTERM, _interrupt)  # stop the children on SIGTERM as on Ctrl-C
    sim = subprocess.Popen([sys.executable, "-m", "bench", "sim", "--host", "127.0.0.1", "--port", str(sim_port),
                            "--scale", args.scale, "--workers", "4", "--speed", str(args.speed)])
    env = {**os.environ, "EDGE_BACKEND": f"http://127.0.0.1:{sim_port}", "EDGE_BIND": f"127.0.0.1:{edge_port}",
           "EDGE_CACHE_DIR": args.cache_dir}
    edge = subprocess.Popen([sys.executable, "-m", "edge", "serve"], env=env)
    try:
        _wait_for(f"http://127.0.0.1:{edge_port}/_edge/health", lambda: sim.poll() is None and edge.poll() is None)
        print(f"""
omero-edge demo is running (Ctrl-C stops it):
  plate browser through the edge   http://127.0.0.1:{edge_port}/
  the same, straight from OMERO    http://127.0.0.1:{sim_port}/   (simulated OMERO.web, {args.scale} data set)
  edge health / metrics            http://127.0.0.1:{edge_port}/_edge/health   /_edge/metrics
  the edge's status page           http://127.0.0.1:{edge_port}/_edge/
  each request's answer, live      http://127.0.0.1:{edge_port}/_edge/demo?backend=http://127.0.0.1:{sim_port}
  try: curl -sI http://127.0.0.1:{edge_port}/webgateway/render_thumbnail/1000001/ | grep -i x-edge
""", flush=True)
        while sim.poll() is None and edge.poll() is None:
            time.sleep(0.5)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for proc in (edge, sim):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in (edge, sim):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _wait_for(url: str, alive: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise SystemExit("edge: the demo's servers did not start (see the messages above)")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"edge: {url} did not answer within {timeout:.0f}s")


def cmd_purge(args: argparse.Namespace) -> int:
    spec: dict = {"all": True} if args.all else {}
    for kind in KINDS:
        ids = getattr(args, kind.name)
        if ids:
            spec[kind.name] = ids
    if not spec:
        raise ConfigError(f"name what to purge: {'/'.join('--' + k.name for k in KINDS)} ID or --all")
    if args.soft:
        spec["soft"] = True
    if args.edge:
        token = args.token or os.environ.get("EDGE_PURGE_TOKEN", "")
        resp = httpx.post(args.edge.rstrip("/") + "/_edge/purge", json=spec,
                          headers={"authorization": f"Bearer {token}"}, timeout=10)
        if resp.status_code != 200:
            print(f"edge: purge failed: {resp.status_code} {resp.text.strip()}", file=sys.stderr)
            return 1
        result = resp.json()
    else:
        from .admin import purge_soft, purge_tags
        from .purge import PurgeRegistry

        settings = _load(args)

        async def run() -> dict:
            registry = PurgeRegistry.of(settings)
            try:
                tags, soft = purge_tags(spec), purge_soft(spec)
                return {"purged": tags, "soft": soft, "seq": await registry.purge(tags, soft=soft)}
            finally:
                await registry.close()

        result = asyncio.run(run())
    print(json.dumps(result))
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    settings = _load(args, "watch_db", "watch_edges", "watch_state")
    return watchcmd.run(settings, args.start, args.once, args.metrics_bind)


def cmd_config(args: argparse.Namespace) -> int:
    settings = _load(args)
    if args.markdown:
        print(markdown_table(Settings()))
        return 0
    if args.toml:
        print(sample_toml(Settings()), end="")
        return 0
    for name, value, doc in settings.doc_rows():
        print(f"{name:24} {value:32} {doc}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import as_dicts, render, run_checks

    rows = run_checks(_load(args))
    print(json.dumps(as_dicts(rows), indent=1) if args.json else render(rows))
    return 1 if any(r.status == "fail" for r in rows) else 0


def markdown_table(settings: Settings) -> str:
    """The README's settings table (a test keeps the README equal to it)."""
    rows = ["| setting (`EDGE_…` variable) | default | meaning |", "|---|---|---|"]
    rows += [f"| `{name}` (`EDGE_{name.upper()}`) | `{value}` | {doc} |" for name, value, doc in settings.doc_rows()]
    return "\n".join(rows)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge", description="HTTP/2 caching edge for OMERO image servers.",
                                     epilog=EPILOG)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the edge on an ASGI server", epilog=EPILOG)
    _settings_options(p)
    p.add_argument("--bind", help="host:port to listen on (default 127.0.0.1:8080)")
    p.add_argument("--workers", type=int, help="worker processes (default 1)")
    p.add_argument("--server", choices=["granian", "hypercorn"],
                   help="granian (default: Rust HTTP/1.1+HTTP/2, fastest) or hypercorn (pure Python)")
    p.add_argument("--certfile", help="TLS certificate: HTTP/2 over TLS with ALPN")
    p.add_argument("--keyfile", help="TLS key (PKCS#8 PEM)")
    p.add_argument("--access-log", help="access log: a file path, or - for stdout (default: off)")
    p.add_argument("--shutdown-timeout", type=float, help="seconds in-flight requests have on SIGTERM (default 30)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="simulated OMERO + edge + disk cache, no Redis needed")
    p.add_argument("--port", type=int, default=8080, help="edge port (default 8080)")
    p.add_argument("--sim-port", type=int, default=4080, help="simulated OMERO.web port (default 4080)")
    p.add_argument("--scale", choices=["small", "idr"], default="small", help="simulated data set size")
    p.add_argument("--speed", type=float, default=1.0, help="backend latency scale (0 = instant)")
    p.add_argument("--cache-dir", default=".cache/demo", help="disk tier directory (default .cache/demo)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("purge", help="purge cached objects on every tier and node",
                       description="Without --edge, writes the purge to the cache directory and Redis of the "
                                   "given settings directly; with --edge, asks a running edge.")
    _settings_options(p)
    for kind in KINDS:
        p.add_argument(f"--{kind.name}", type=int, action="append", metavar="ID",
                       help=f"purge {kind.name} ID (repeatable)")
    p.add_argument("--all", action="store_true", help="purge everything")
    p.add_argument("--soft", action="store_true",
                   help="soft purge: entries stay answerable as stale while one refresh runs, for at most "
                        "soft_purge_seconds (default: hard, gone now)")
    p.add_argument("--edge", help="URL of a running edge (uses POST /_edge/purge)")
    p.add_argument("--token", help="purge token (default $EDGE_PURGE_TOKEN)")
    p.set_defaults(func=cmd_purge)

    p = sub.add_parser("config", help="print every setting with its value and meaning")
    _settings_options(p)
    p.add_argument("--markdown", action="store_true", help="as the README's Markdown table (defaults only)")
    p.add_argument("--toml", action="store_true", help="as a sample TOML config, every setting commented with its "
                   "meaning and default (deploy/edge.toml)")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("doctor", help="check the settings against OMERO.web, the microservice, Redis and the disk",
                       description="Exit status 0 when every check passes or is skipped, 1 when one fails.",
                       epilog=EPILOG)
    _settings_options(p)
    p.add_argument("--json", action="store_true", help="the results as JSON")
    p.set_defaults(func=cmd_doctor)

    watchcmd.add_parser(sub, _settings_options, EPILOG).set_defaults(func=cmd_watch)
    nginxconf.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"edge: error: {exc}", file=sys.stderr)
        return 2
    except httpx.HTTPError as exc:
        print(f"edge: error: {exc}", file=sys.stderr)
        return 1
