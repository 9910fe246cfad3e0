"""The edge over granian's RSGI interface (`server_interface: rsgi`): the same pipeline as ASGI, fewer calls.

A hot hit (an anonymous GET/HEAD of a URL fresh in memory, access log off) is answered from the RSGI
scope with one `protocol.response_bytes` call: no ASGI scope dict, no header dict, no two awaited send
messages. Everything else — misses, passthrough, batches, `/_edge/*`, the access log — runs the ASGI
app itself (`Edge.__call__`) through `asgi_scope`, `Receive` and `Send` below, so there is one request
pipeline and `edge.app:app` keeps working on any ASGI server.

RSGI gives a percent-decoded path and no raw one, like ASGI's `path` (granian/rsgi.py `Scope`), so the
passthrough forwards the path re-quoted (an escaped `/`, `%2F`, reaches the backend as `/`).
"""
from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any
from urllib.parse import quote

from .hotpath import freeze_heap, text_headers

log = logging.getLogger("edge")



def hot_key(scope: Any, headers: Any) -> tuple:
    """request.asgi_hot_key of the ASGI scope `asgi_scope` would build from this RSGI scope (`headers`: its
    headers, fetched once)."""
    host = headers.get("host") or scope.authority
    return (scope.path, scope.query_string.encode("latin-1"), host.encode("latin-1") if host else None,
            scope.scheme)


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port or 0)


def asgi_scope(scope: Any) -> dict:
    """The ASGI HTTP scope of an RSGI request (HTTP/2's :authority becomes Host, as granian's ASGI does)."""
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in scope.headers.items()]
    if scope.authority and "host" not in scope.headers:
        headers.insert(0, (b"host", scope.authority.encode("latin-1")))
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": scope.http_version,
            "method": scope.method, "scheme": scope.scheme, "path": scope.path,
            "raw_path": quote(scope.path).encode("ascii"), "query_string": scope.query_string.encode("latin-1"),
            "root_path": "", "headers": headers, "client": _address(scope.client), "server": _address(scope.server)}


class Receive:
    """ASGI `receive` over RSGI: the body in chunks as they arrive, then (when asked again) the disconnect."""

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        self.chunks: Any = None
        self.done = False

    async def __call__(self) -> dict:
        if self.done:
            await self.protocol.client_disconnect()
            return {"type": "http.disconnect"}
        if self.chunks is None:
            self.chunks = self.protocol.__aiter__()
        try:
            chunk = await self.chunks.__anext__()
        except StopAsyncIteration:
            self.done = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.request", "body": chunk, "more_body": True}


class Send:
    """ASGI `send` over RSGI: a one-message body is one `response_bytes`; a longer one streams."""

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        self.start: dict | None = None
        self.stream: Any = None
        self.sent = False

    async def __call__(self, message: dict) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.start = message
        elif kind == "http.response.body" and self.start is not None:
            body, more = message.get("body", b""), message.get("more_body", False)
            if self.stream is None and not more and not self.sent:
                self.sent = True
                self.protocol.response_bytes(self.start["status"], text_headers(self.start["headers"]), body)
                return
            if self.stream is None:
                self.sent = True
                self.stream = self.protocol.response_stream(self.start["status"],
                                                            text_headers(self.start["headers"]))
            if body:
                await self.stream.send_bytes(body)

    def finish(self) -> None:
        """After the app returned: an answer it started but never ended, or never started (500), goes out."""
        if not self.sent:
            self.sent = True
            if self.start is None:
                self.protocol.response_empty(500, [])
            else:
                self.protocol.response_empty(self.start["status"], text_headers(self.start["headers"]))


class RsgiEdge:
    """`__rsgi__`, `__rsgi_init__` and `__rsgi_del__` of an Edge (app.Edge inherits them)."""

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            loop.run_until_complete(self.startup())
        except Exception as exc:  # noqa: BLE001 - one line, then the worker exits, as with ASGI's lifespan
            log.error("edge: error: %s", exc)
            sys.exit(1)
        freeze_heap()

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.run_until_complete(self.shutdown())

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        if scope.proto != "http":
            return
        method, headers = scope.method, scope.headers
        # app._IDENTITY_HEADERS (someone's requests skip the hot path) spelled out: a loop costs more than the rest
        if (method == "GET" or method == "HEAD") and self.access_log is None and "cookie" not in headers \
                and "authorization" not in headers and "x-omero-session-key" not in headers \
                and "x-edge-warm" not in headers:
            hit = self.hot_answer(hot_key(scope, headers))
            if hit is not None:
                inm = headers.get("if-none-match")
                status, out, body = self.delivery.answer(method, inm.encode("latin-1") if inm else None,
                                                         "gzip" in headers.get("accept-encoding", ""),
                                                         hit.entry, hit.headers)
                protocol.response_bytes(status, hit.text_headers() if out is hit.headers else text_headers(out),
                                        body)
                return
        send = Send(protocol)
        try:
            await self(asgi_scope(scope), Receive(protocol), send)
        finally:
            send.finish()
