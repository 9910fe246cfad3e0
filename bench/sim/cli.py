"""`bench sim`: run the simulated OMERO.web (+ omero-ms-image-region) backend."""
from __future__ import annotations

import argparse

from bench.sim.config import SimConfig
from bench.sim.presets import PRESETS


def positive_int(text: str) -> int:
    """argparse type for counts (workers, repeats): a whole number ≥ 1."""
    return _at_least(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type for counts that may be none (warm-up requests): a whole number ≥ 0."""
    return _at_least(text, 0)


def _at_least(text: str, low: int) -> int:
    value = int(text)
    if value < low:
        raise argparse.ArgumentTypeError(f"must be at least {low}")
    return value


def header_value(text: str) -> tuple[str, str]:
    """argparse type for `Header-Name:value` (Django's SECURE_PROXY_SSL_HEADER pair)."""
    name, sep, value = text.partition(":")
    if not sep or not name.strip() or not value.strip():
        raise argparse.ArgumentTypeError("expected HEADER:VALUE, e.g. X-Forwarded-Proto:https")
    return name.strip().lower(), value.strip()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sim", help="run the simulated OMERO backend",
                       description="A Starlette app speaking OMERO.web's URL API (webgateway, webclient, JSON API v0) "
                                   "with sessions, a public user, private groups, per-user rendering settings and a "
                                   "latency/capacity model; optionally omero-ms-image-region on a second port. "
                                   "Control and discovery routes: /_sim/info, /_sim/stats, /_sim/reset, /_sim/faults.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=4080, help="OMERO.web port (webgateway, webclient, api, plate page)")
    p.add_argument("--ms-port", type=int, default=None,
                   help="also serve the omero-ms-image-region routes on this port (same state, stats as ms:<name>)")
    p.add_argument("--scale", choices=sorted(PRESETS), default="small",
                   help="data set: small (every test case, a few thousand images) or idr (230k images, 331 plates)")
    p.add_argument("--workers", type=positive_int, default=4,
                   help="concurrent backend renders; further requests queue, like a WSGI worker pool")
    p.add_argument("--speed", type=float, default=1.0,
                   help="multiplier on per-endpoint costs (thumbnail 15/60 ms, tile 80 ms, ...); 0 adds no latency")
    p.add_argument("--redis", dest="redis_url", default=None, metavar="URL",
                   help="store Django sessions in Redis as django-redis does (and read them back from it)")
    p.add_argument("--no-public", dest="public", action="store_false",
                   help="disable the public user: anonymous requests get 302 to login / 403")
    p.add_argument("--session-cookie", default="sessionid",
                   help="Django session cookie name (omero.web.session_cookie_name; IDR uses sessionid_idr)")
    p.add_argument("--cookie-age", type=positive_int, default=86400, help="session lifetime in seconds (Redis TTL)")
    p.add_argument("--thumb-size", type=positive_int, default=96,
                   help="default thumbnail longest side (omero.client.browser.thumb_default_size)")
    p.add_argument("--thumbnails-batch", type=positive_int, default=50,
                   help="most ids one get_thumbnails answers; more get OMERO's 500 (omero.web.thumbnails_batch)")
    p.add_argument("--use-x-forwarded-host", action="store_true",
                   help="API v0 links use X-Forwarded-Host instead of Host (omero.web.use_x_forwarded_host)")
    p.add_argument("--secure-proxy-ssl-header", type=header_value, default=None, metavar="HEADER:VALUE",
                   help="API v0 links are https when HEADER equals VALUE, e.g. X-Forwarded-Proto:https "
                        "(omero.web.secure_proxy_ssl_header)")
    p.add_argument("--server", choices=("granian", "hypercorn"), default="granian",
                   help="HTTP server; both speak HTTP/1.1 and h2c with prior knowledge")
    p.add_argument("--job-delay", type=float, default=0.0, metavar="SECONDS",
                   help="chgrp/chown/delete jobs take effect this long after their answer (default: at once)")
    p.add_argument("--db", default=None, metavar="DSN",
                   help="record every write in this PostgreSQL as OMERO does (eventlog, event and the rows that "
                        "locate it), for `edge watch` (bench/sim/omerodb.py)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from bench.sim.server import run as serve

    config = SimConfig(host=args.host, port=args.port, ms_port=args.ms_port, scale=args.scale, workers=args.workers,
                       speed=args.speed, redis_url=args.redis_url, public=args.public,
                       session_cookie=args.session_cookie, cookie_age=args.cookie_age, thumb_size=args.thumb_size,
                       thumbnails_batch=args.thumbnails_batch, use_x_forwarded_host=args.use_x_forwarded_host,
                       secure_proxy_ssl_header=args.secure_proxy_ssl_header, server=args.server,
                       job_delay=args.job_delay, db=args.db)
    return serve(config)
