"""A small keep-alive HTTP/1.1 GET client: every request the warmer makes goes through it.

Why not httpx: a warm request is a GET of a long URL (a 50-id batch is ~500 characters) answered by
~150 bytes of JSON, and httpx spends ~1.5 ms of CPU on each (URL validation character by character,
anyio locks, and a failed `import sniffio` per request where sniffio is absent); this client spends
a few tens of microseconds, which is what keeps the warmer well under 1 ms of CPU per item. It speaks
only what the edge and OMERO.web answer: status line, headers, then a Content-Length, chunked or
close-delimited body; https through the ssl module.
"""
from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlsplit


class HttpError(Exception):
    """No answer: connection refused or reset, timeout, or a malformed response."""


class Response:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class Http1Pool:
    def __init__(self, base: str, headers: dict[str, str], *, size: int, timeout: float) -> None:
        parts = urlsplit(base)
        self.host = parts.hostname or "127.0.0.1"
        self.tls = ssl.create_default_context() if parts.scheme == "https" else None
        self.port = parts.port or (443 if self.tls else 80)
        self.prefix = parts.path.rstrip("/")
        fixed = {"host": parts.netloc, "user-agent": "omero-edge-warm", **{k.lower(): v for k, v in headers.items()}}
        self._head = "".join(f"{k}: {v}\r\n" for k, v in fixed.items()).encode("latin-1")
        self.timeout = timeout
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._limit = asyncio.Semaphore(size)

    async def get(self, target: str) -> Response:
        """GET `target` (path?query); a kept-alive connection the server closed is retried once."""
        request = b"GET " + (self.prefix + target).encode("latin-1") + b" HTTP/1.1\r\n" + self._head + b"\r\n"
        async with self._limit:
            for attempt in (0, 1):
                reused = bool(self._idle)
                try:
                    async with asyncio.timeout(self.timeout):
                        conn = self._idle.pop() if reused else await asyncio.open_connection(
                            self.host, self.port, ssl=self.tls, limit=2**20)
                        resp, keep = await self._exchange(conn, request)
                except TimeoutError:
                    raise HttpError("timed out") from None
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
                    if reused and attempt == 0:
                        continue  # the server closed an idle connection: try a fresh one
                    raise HttpError(f"{type(exc).__name__}: {exc}".rstrip(": ")) from None
                if keep:
                    self._idle.append(conn)
                else:
                    conn[1].close()
                return resp
        raise AssertionError("unreachable")

    async def _exchange(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                        request: bytes) -> tuple[Response, bool]:
        reader, writer = conn
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            version, status = lines[0].split(" ", 2)[:2]
            headers: dict[str, str] = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
            if "content-length" in headers:
                body = await reader.readexactly(int(headers["content-length"]))
            elif headers.get("transfer-encoding", "").lower() == "chunked":
                body = await _chunked(reader)
            elif status in ("204", "304"):
                body = b""
            else:
                body, keep = await reader.read(), False
            return Response(int(status), headers, body), keep
        except BaseException:
            writer.close()
            raise

    async def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


async def _chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailers
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)
