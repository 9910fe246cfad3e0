"""Delivery (Varnish's deliver): an entry on the wire — headers, 304, gzip, HEAD — and the edge's
own answers (upstream errors, warm mode). The only module that writes cache answers.
"""
from __future__ import annotations

import gzip
from collections.abc import Awaitable, Callable

from . import jsonp
from .activity import WarmActivity
from .entry import Entry
from .metrics import Metrics
from .protocol import WarmAnswer
from .request import Request
from .status import CacheStatus
from .upstream import UpstreamError

Send = Callable[[dict], Awaitable[None]]
Clock = Callable[[], float]


class Delivery:
    def __init__(self, metrics: Metrics, clock: Clock) -> None:
        self.metrics = metrics
        self.clock = clock
        self.warm_seen = WarmActivity(clock)  # the status page's warm runs in progress

    async def respond(self, req: Request, send: Send, entry: Entry, status: CacheStatus, tier: str,
                      max_age: int | None = None) -> None:
        if req.callback is not None and jsonp.wraps(entry):
            entry = jsonp.wrapped(entry, req.callback)
        public_view = entry.public and req.public
        await self.send_entry(req.scope, req.headers, send, entry,
                              self.headers(entry, status, tier, public_view, max_age))

    def headers(self, entry: Entry, status: CacheStatus, tier: str, public_view: bool,
                max_age: int | None = None) -> list[tuple[bytes, bytes]]:
        """The entry's stored headers plus Cache-Control and X-Edge-*; for hits, built once a second."""
        now = self.clock()
        memoise = status is CacheStatus.HIT and max_age is None
        if memoise:
            memo = entry.prepared
            if memo is not None and memo[0] == int(now) and memo[1] == tier and memo[2] == public_view:
                return memo[3]
        headers = list(entry.headers)
        if entry.status == 200 and (status is not CacheStatus.MISS or entry.stored_ok or max_age is not None):
            age = entry.max_age(now) if max_age is None else max_age
            headers.append((b"cache-control", f"{'public' if public_view else 'private'}, max-age={age}".encode()))
        else:
            headers.append((b"cache-control", b"no-cache"))  # not final (placeholder, error): always ask again
        if not public_view:
            # Someone's own answer: a browser or proxy must not give it to another session (the backend
            # says the same with Django's Vary: Cookie).
            headers.append((b"vary", b"Cookie"))
        headers += [(b"x-edge-cache", status.value.encode()), (b"x-edge-tier", tier.encode())]
        if memoise:
            entry.prepared = (int(now), tier, public_view, headers)
        return headers

    async def send_entry(self, scope: dict, request_headers: dict[bytes, bytes], send: Send, entry: Entry,
                         headers: list[tuple[bytes, bytes]]) -> None:
        status, headers, body = self.answer(scope["method"], request_headers.get(b"if-none-match"),
                                            b"gzip" in request_headers.get(b"accept-encoding", b""), entry, headers)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def answer(self, method: str, inm: bytes | None, gzip_ok: bool, entry: Entry,
               headers: list[tuple[bytes, bytes]]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """(status, headers, body) on the wire, whatever the server interface: 304 on a matching If-None-Match,
        gzip for JSON and HTML when accepted, no body for HEAD."""
        if inm and entry.status == 200 and entry.etag.encode() in _etags(inm):
            return 304, [h for h in headers if h[0] not in (b"content-length", b"content-type")], b""
        body = entry.body
        if entry.compressible and gzip_ok:
            if entry.gzipped is None:
                entry.gzipped = gzip.compress(body, compresslevel=5)
            body = entry.gzipped
            vary = b"Cookie, Accept-Encoding" if (b"vary", b"Cookie") in headers else b"Accept-Encoding"
            headers = [h for h in headers if h[0] not in (b"content-length", b"vary")]
            headers += [(b"content-encoding", b"gzip"), (b"content-length", str(len(body)).encode()),
                        (b"vary", vary)]
        if method == "HEAD":
            return entry.status, headers, b""
        self.metrics.hot.bytes_served += len(body)
        return entry.status, headers, body

    async def error(self, req: Request, send: Send, exc: Exception) -> None:
        """The upstream could not answer (502/504), or another process's fill took too long (504)."""
        if isinstance(exc, UpstreamError):
            status, body = exc.status, exc.body()
        else:
            status, body = 504, b"omero-edge: timed out waiting for another request's fill\n"
        if req.warm is not None:
            self.metrics.warm_requests.labels("error").inc()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(body)).encode()), (b"x-edge-cache", b"MISS"),
                                (b"x-edge-tier", b"")]})
        await send({"type": "http.response.body", "body": b"" if req.scope["method"] == "HEAD" else body})

    async def warm(self, send: Send, status: CacheStatus, entry: Entry, tier: str, **batch: int) -> None:
        """Warm mode answers with the cache status, not the body."""
        self.warm_seen.add()
        self.metrics.warm_requests.labels(status.value.lower()).inc()
        body = WarmAnswer(status.value, entry.status, entry.stored_ok or status is CacheStatus.HIT, tier,
                          len(entry.body), entry.stored, **batch).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"x-edge-cache", status.value.encode())]})
        await send({"type": "http.response.body", "body": body})


def _etags(header: bytes) -> set[bytes]:
    return {part.strip().removeprefix(b"W/") for part in header.split(b",")}
