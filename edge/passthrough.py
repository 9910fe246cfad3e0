"""Everything the edge does not cache is proxied untouched: method, target, body, headers, streaming."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import quote

from . import writes
from .metrics import Metrics
from .routes import Upstream, match
from .status import Bypass, CacheStatus
from .upstream import HOP_BY_HOP, Upstream as Pool, UpstreamError
from .writes import WriteEffects

Send = Callable[[dict], Awaitable[None]]
Receive = Callable[[], Awaitable[dict]]
_BYPASS = (b"x-edge-cache", CacheStatus.BYPASS.value.encode())


class Passthrough:
    def __init__(self, upstreams: dict[Upstream, Pool], metrics: Metrics, effects: WriteEffects | None = None) -> None:
        self.upstreams = upstreams
        self.metrics = metrics
        self.effects = effects  # purges what OMERO.web's writes change (writes.py)

    async def __call__(self, scope: dict, receive: Receive | None, send: Send, reason: Bypass) -> None:
        self.metrics.bypass.labels(reason.value).inc()
        found = match(scope["path"])
        pool = self.upstreams[found[0].upstream if found else Upstream.WEB]
        write = writes.match(scope["method"], scope["path"]) if self.effects is not None else None
        # The client's Host goes along (OMERO.web builds absolute links and redirects from it).
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]
                   if (k == b"host" or k.decode("latin-1") not in HOP_BY_HOP) and not k.startswith(b"x-forwarded-")]
        headers += forwarded(scope, dict(scope["headers"]))
        # The request target exactly as received: ASGI's raw_path carries no query string.
        target = scope.get("raw_path") or quote(scope["path"]).encode()
        if scope["query_string"]:
            target += b"?" + scope["query_string"]
        content = _request_body(receive) if receive is not None and scope["method"] not in ("GET", "HEAD") else None
        if write is not None:
            return await self._write(scope, send, pool, write, target.decode("latin-1"), headers, content)
        try:
            resp = await pool.request(scope["method"], target.decode("latin-1"), headers, content, stream=True)
        except UpstreamError as exc:
            return await _plain(send, exc.status, exc.body())
        try:
            out = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in resp.headers.multi_items()
                   if k not in HOP_BY_HOP]
            out.append(_BYPASS)
            await send({"type": "http.response.start", "status": resp.status_code, "headers": out})
            if scope["method"] == "HEAD":
                await send({"type": "http.response.body", "body": b""})
                return
            async for chunk in resp.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await resp.aclose()

    async def _write(self, scope: dict, send: Send, pool: Pool, write: writes.Write, target: str,
                     headers: list[tuple[str, str]], content) -> None:
        """A write: its form read whole (to know what it names), forwarded, and when OMERO answers that
        it made the change, the objects purged before the answer goes out."""
        body = b""
        async for chunk in content or ():
            body += chunk
            if len(body) > writes.BODY_LIMIT:
                return await _plain(send, 413, b"Request body too large for an OMERO.web write")
        tags = await self.effects.before(write, scope["path"], scope["query_string"], body, headers)
        try:
            resp = await pool.request(scope["method"], target, headers, body)
        except UpstreamError as exc:
            return await _plain(send, exc.status, exc.body())
        await self.effects.after(write, tags, resp.status_code, resp.content)
        out = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in resp.headers.multi_items()
               if k not in HOP_BY_HOP and k != "content-encoding"]
        out = [h for h in out if h[0] != b"content-length"] + [(b"content-length", str(len(resp.content)).encode()),
                                                                _BYPASS]
        await send({"type": "http.response.start", "status": resp.status_code, "headers": out})
        await send({"type": "http.response.body", "body": resp.content})


async def _plain(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), _BYPASS]})
    await send({"type": "http.response.body", "body": body})


def forwarded(scope: dict, headers: dict[bytes, bytes]) -> list[tuple[str, str]]:
    """X-Forwarded-* of a passed-through request: extend what a proxy in front (nginx) said, or say it
    ourselves (nothing passed through is cached, so the client's own headers poison nothing)."""
    client = (scope.get("client") or ("",))[0]
    chain = headers.get(b"x-forwarded-for", b"").decode("latin-1")
    return [("x-forwarded-for", f"{chain}, {client}" if chain else client),
            ("x-forwarded-proto", headers.get(b"x-forwarded-proto", scope.get("scheme", "http").encode()).decode("latin-1")),
            ("x-forwarded-host", headers.get(b"x-forwarded-host", headers.get(b"host", b"")).decode("latin-1"))]


async def _request_body(receive: Receive):
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return
        yield message.get("body", b"")
        if not message.get("more_body"):
            return
