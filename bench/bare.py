"""The ceiling of any Python hit path here: a constant body from memory, on granian as `edge serve` runs it.

`python -m bench.bare --bind HOST:PORT --size N --interface asgi|rsgi [--certfile --keyfile] [--workers N]`
serves `N` bytes (the plate's mean thumbnail size) to every GET with the headers of an edge's hit (`bench hits`
passes those of a real one in BENCH_BARE_HEADERS: content-type, etag, cache-control, X-Edge-Cache, X-Edge-Tier;
default: content-type alone), through `edge.cli.granian_server`: the edge's own granian options, worker count
and TLS. So the only difference from the edge's hits is the edge's code, not what goes on the wire (granian's
cost grows with every header: four more cost ~3 µs of CPU per hit here, issue 14 notes).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from edge.settings import Settings

SIZE_ENV, HEADERS_ENV = "BENCH_BARE_SIZE", "BENCH_BARE_HEADERS"
BODY = b"\xff" * int(os.environ.get(SIZE_ENV, "3000"))
HEADERS = [(str(k), str(v)) for k, v in json.loads(os.environ.get(HEADERS_ENV, '[["content-type", "image/jpeg"]]'))
           if k.lower() != "content-length"] + [("content-length", str(len(BODY)))]
_ASGI_START = {"type": "http.response.start", "status": 200,
               "headers": [(k.encode(), v.encode()) for k, v in HEADERS]}
_ASGI_BODY = {"type": "http.response.body", "body": BODY}


async def app(scope: dict, receive, send) -> None:
    """ASGI: two messages, nothing read, nothing built."""
    if scope["type"] == "http":
        await send(_ASGI_START)
        await send(_ASGI_BODY)


class Rsgi:
    """RSGI: one call."""

    async def __rsgi__(self, scope, protocol) -> None:
        protocol.response_bytes(200, HEADERS, BODY)


rsgi = Rsgi()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bare", description=__doc__.splitlines()[0])
    p.add_argument("--bind", required=True, metavar="HOST:PORT")
    p.add_argument("--size", type=int, required=True, help="body bytes")
    p.add_argument("--headers", default=None, metavar="JSON",
                   help='response headers besides content-length, as [["name", "value"], ...] (default: content-type)')
    p.add_argument("--interface", choices=("asgi", "rsgi"), default="asgi")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--certfile", default="")
    p.add_argument("--keyfile", default="")
    args = p.parse_args(argv)
    from edge.cli import granian_server

    os.environ[SIZE_ENV] = str(args.size)  # read by the workers when they import this module
    if args.headers is not None:
        os.environ[HEADERS_ENV] = args.headers
    # the environment's EDGE_* server settings apply here as they do to the edge beside it
    settings = Settings.load(bind=args.bind, workers=args.workers, certfile=args.certfile, keyfile=args.keyfile)
    target = "bench.bare:app" if args.interface == "asgi" else "bench.bare:rsgi"
    print(f"bare {args.interface} app, {args.size} bytes, on {args.bind}", file=sys.stderr, flush=True)
    granian_server(target, settings, args.interface).serve()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
