"""Browser-like HTTP clients: HTTP/1.1 on up to 6 connections, HTTP/2 on one (TLS+ALPN or h2c).

They are deliberately thin (asyncio streams, a hand-rolled HTTP/1.1 parser, a minimal
HTTP/2 framer) because a plate load is hundreds of small responses and the client's
own cost per request must stay far below the server's, or every target looks alike (httpx
and the `h2` library cost ~0.6 ms per request here, nginx ~0.03 ms). A `Session` is one page
visit: connections open lazily inside the timed window (as a browser's first load does) and
close with the session. Reads carry no timeouts of their own: callers bound every load as a
whole (`asyncio.timeout`), which costs nothing per request.
"""
from __future__ import annotations

import asyncio
import random
import re
import socket
import ssl
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from urllib.parse import quote

from hpack.huffman_table import decode_huffman
from xstatic.pkg.jquery import VERSION as JQUERY_VERSION     # the jQuery the plate pages load

USER_AGENT = b"omero-edge-bench/1"
H1_CONNECTIONS = 6                    # a browser's per-host limit
H2_STREAM_WINDOW = 6 * 2**20          # Chrome's windows
H2_CONNECTION_WINDOW = 15 * 2**20
H2_STREAMS_BEFORE_SETTINGS = 100      # Chrome's assumption until the server's SETTINGS arrive


class Transport(str, Enum):
    H1 = "h1"           # HTTP/1.1, cleartext, 6 connections
    H2 = "h2"           # HTTP/2 cleartext with prior knowledge, 1 connection
    H2_TLS = "h2-tls"   # HTTP/2 over TLS via ALPN, 1 connection


class ClientError(RuntimeError):
    """The server broke the protocol, closed early, or did not answer in time."""


@dataclass
class Response:
    status: int
    body: bytes
    content_type: bytes = b""          # the header's raw value (b"" when absent)


@dataclass
class Tally:
    requests: int = 0
    bytes: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    steps: dict[str, float] = field(default_factory=dict)     # seconds per named step of a load (a click)

    def add(self, r: Response) -> None:
        self.requests += 1
        self.bytes += len(r.body)
        self.statuses[r.status] = self.statuses.get(r.status, 0) + 1

    def step(self, name: str, seconds: float) -> None:
        self.steps[name] = seconds


async def _open(host: str, port: int, tls: ssl.SSLContext | None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(host, port, ssl=tls, server_hostname=host if tls else None,
                                                   limit=2**20)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return reader, writer


# --- HTTP/1.1 -------------------------------------------------------------------------------------

class _H1Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, authority: bytes) -> None:
        self.reader, self.writer, self.authority = reader, writer, authority
        self.reusable = True

    async def get(self, path: str, headers: dict[str, str]) -> Response:
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode()
        self.writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: " + self.authority +
                          b"\r\nUser-Agent: " + USER_AGENT + b"\r\nAccept: */*\r\n" + extra + b"\r\n")
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head[:-4].split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise ClientError(f"bad status line {lines[0]!r}")
        hdrs: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            hdrs[name.strip().lower()] = value.strip()
        if hdrs.get(b"transfer-encoding", b"").lower() == b"chunked":
            body = await self._chunked()
        else:
            body = await self.reader.readexactly(int(hdrs.get(b"content-length", b"0")))
        if hdrs.get(b"connection", b"").lower() == b"close" or parts[0] == b"HTTP/1.0":
            self.reusable = False
        return Response(int(parts[1]), body, hdrs.get(b"content-type", b""))

    async def _chunked(self) -> bytes:
        out = bytearray()
        while True:
            size = int((await self.reader.readline()).split(b";")[0], 16)
            if size == 0:
                await self._trailers()
                return bytes(out)
            out += await self.reader.readexactly(size + 2)
            del out[-2:]

    async def _trailers(self) -> None:
        while (await self.reader.readline()) not in (b"\r\n", b""):
            pass

    def close(self) -> None:
        self.writer.close()


class H1Session:
    """Up to `connections` keep-alive connections; a burst fans out over them, one request each at a time.

    The limit holds across concurrent `get_many` calls (a page firing several requests at once, as a
    browsing click does): a caller past the limit waits for a connection to be handed back."""

    def __init__(self, host: str, port: int, connections: int = H1_CONNECTIONS) -> None:
        self.host, self.port, self.connections = host, port, connections
        self.authority = f"{host}:{port}".encode()
        self.idle: list[_H1Connection] = []
        self.waiting: deque[asyncio.Future] = deque()
        self.opened = 0
        self.live = 0

    async def _connection(self) -> _H1Connection:
        while True:
            if self.idle:
                return self.idle.pop()
            if self.live < self.connections:
                self.live += 1
                try:
                    reader, writer = await _open(self.host, self.port, None)
                except BaseException:
                    self._release(None)
                    raise
                self.opened += 1
                return _H1Connection(reader, writer, self.authority)
            future = asyncio.get_running_loop().create_future()
            self.waiting.append(future)
            await future

    def _release(self, conn: _H1Connection | None) -> None:
        """Keep `conn` for reuse (None: its connection was closed, the slot is free) and wake one waiter."""
        if conn is None:
            self.live -= 1
        else:
            self.idle.append(conn)
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_result(None)
                return

    async def get(self, path: str, headers: dict[str, str] | None = None) -> Response:
        return (await self.get_many([path], headers))[0]

    async def get_many(self, paths: list[str], headers: dict[str, str] | None = None) -> list[Response]:
        results: list[Response | None] = [None] * len(paths)
        todo = deque(enumerate(paths))

        async def worker() -> None:
            conn: _H1Connection | None = None
            try:
                while todo:
                    if conn is None:
                        conn = await self._connection()
                        if not todo:
                            break
                    i, path = todo.popleft()
                    results[i] = await conn.get(path, headers or {})
                    if not conn.reusable:
                        conn.close()
                        conn = None
                        self._release(None)
            except BaseException:
                if conn is not None:
                    conn.close()
                    self._release(None)
                raise
            if conn is not None:
                self._release(conn)

        await asyncio.gather(*(worker() for _ in range(min(self.connections, len(paths)))))
        return results  # type: ignore[return-value]

    async def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()


# --- HTTP/2 ---------------------------------------------------------------------------------------
# A minimal HTTP/2 client: GETs only, no server push, and an HPACK dynamic table of size 0 (our
# SETTINGS ask for it), so a response header block decodes without Huffman-decoding anything
# but a literal :status. The `h2` library costs ~0.6 ms per request here (mostly HPACK).

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 5, 6, 7, 8, 9
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20
SETTINGS_HEADER_TABLE_SIZE, SETTINGS_ENABLE_PUSH, SETTINGS_MAX_CONCURRENT_STREAMS = 1, 2, 3
SETTINGS_INITIAL_WINDOW_SIZE = 4
STATIC_STATUS = {8: 200, 9: 204, 10: 206, 11: 304, 12: 400, 13: 404, 14: 500}   # RFC 7541 appendix A
STATIC_CONTENT_TYPE = 31
STATIC_ENTRIES = 61


def _frame(ftype: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((ftype, flags)) + stream.to_bytes(4, "big") + payload


def _hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out, value = bytearray((first | limit,)), value - limit
    while value >= 128:
        out.append((value & 127) | 128)
        value >>= 7
    out.append(value)
    return bytes(out)


def _hpack_literal(name_index: int, value: bytes) -> bytes:
    """Literal header field without indexing, static name, raw (not Huffman) value."""
    return _hpack_int(name_index, 4) + _hpack_int(len(value), 7) + value


def _read_int(block: bytes, i: int, prefix_bits: int) -> tuple[int, int]:
    limit = (1 << prefix_bits) - 1
    value = block[i] & limit
    i += 1
    if value < limit:
        return value, i
    shift = 0
    while True:
        byte = block[i]
        i += 1
        value += (byte & 127) << shift
        shift += 7
        if not byte & 128:
            return value, i


def _read_string(block: bytes, i: int) -> tuple[bytes, bool, int]:
    huffman = bool(block[i] & 0x80)
    length, i = _read_int(block, i, 7)
    return block[i:i + length], huffman, i + length


def _plain(raw: bytes, huffman: bool) -> bytes:
    return decode_huffman(raw) if huffman else raw


def response_status(block: bytes) -> int:
    """The :status of a header block encoded without the dynamic table (table size 0)."""
    return response_head(block)[0]


def response_head(block: bytes) -> tuple[int, bytes]:
    """(:status, content-type) of a header block encoded without the dynamic table (table size 0).

    Only these two values are Huffman-decoded; every other field is skipped."""
    status, content_type, i = 0, b"", 0
    while i < len(block):
        byte = block[i]
        if byte & 0x80:                                   # indexed field
            index, i = _read_int(block, i, 7)
            if index > STATIC_ENTRIES:
                raise ClientError("server used the HPACK dynamic table after we set its size to 0")
            status = STATIC_STATUS.get(index, status)
            continue
        if byte & 0xE0 == 0x20:                           # dynamic table size update
            _, i = _read_int(block, i, 5)
            continue
        index, i = _read_int(block, i, 6 if byte & 0xC0 == 0x40 else 4)   # literal field
        if index > STATIC_ENTRIES:
            raise ClientError("server used the HPACK dynamic table after we set its size to 0")
        name = b""
        if index == 0:
            raw, huffman, i = _read_string(block, i)
            name = _plain(raw, huffman)
        raw, huffman, i = _read_string(block, i)
        if index in STATIC_STATUS or name == b":status":
            status = int(_plain(raw, huffman))
        elif index == STATIC_CONTENT_TYPE or name == b"content-type":
            content_type = _plain(raw, huffman)
    if not status:
        raise ClientError("response without :status")
    return status, content_type


@dataclass
class _Stream:
    future: asyncio.Future
    status: int = 0
    content_type: bytes = b""
    block: bytearray = field(default_factory=bytearray)
    chunks: list[bytes] = field(default_factory=list)
    unacked: int = 0


class H2Session:
    """One HTTP/2 connection, opened on first use; requests beyond the stream limit wait their turn."""

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None) -> None:
        self.host, self.port, self.tls = host, port, tls
        self.scheme_field = b"\x87" if tls else b"\x86"     # :scheme https / http (static index 7 / 6)
        self.authority_field = _hpack_literal(1, f"{host}:{port}".encode())
        self.common_fields = _hpack_literal(58, USER_AGENT) + _hpack_literal(19, b"*/*")
        self.writer: asyncio.StreamWriter | None = None
        self.connecting: asyncio.Future | None = None
        self.reader_task: asyncio.Task | None = None
        self.pending: deque[tuple[bytes, asyncio.Future]] = deque()
        self.streams: dict[int, _Stream] = {}
        self.next_stream = 1
        self.max_streams = H2_STREAMS_BEFORE_SETTINGS
        self.unacked = 0
        self.continuing: _Stream | None = None
        self.failure: BaseException | None = None

    async def _connect(self) -> None:
        reader, self.writer = await _open(self.host, self.port, self.tls)
        if self.tls:
            protocol = self.writer.get_extra_info("ssl_object").selected_alpn_protocol()
            if protocol != "h2":
                raise ClientError(f"{self.host}:{self.port} did not negotiate h2 via ALPN (got {protocol})")
        settings = b"".join(key.to_bytes(2, "big") + value.to_bytes(4, "big") for key, value in (
            (SETTINGS_HEADER_TABLE_SIZE, 0), (SETTINGS_ENABLE_PUSH, 0), (SETTINGS_INITIAL_WINDOW_SIZE, H2_STREAM_WINDOW)))
        self.writer.write(PREFACE + _frame(SETTINGS, 0, 0, settings) +
                          _frame(WINDOW_UPDATE, 0, 0, (H2_CONNECTION_WINDOW - 65535).to_bytes(4, "big")))
        self.reader_task = asyncio.create_task(self._read(reader))

    def _start_streams(self, out: list[bytes]) -> None:
        while self.pending and len(self.streams) < self.max_streams:
            fields, future = self.pending.popleft()
            sid, self.next_stream = self.next_stream, self.next_stream + 2
            self.streams[sid] = _Stream(future)
            out.append(_frame(HEADERS, END_STREAM | END_HEADERS, sid, fields))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        assert self.writer is not None
        buf = b""
        try:
            while data := await reader.read(2**20):
                buf += data
                out: list[bytes] = []
                pos, size = 0, len(buf)
                while size - pos >= 9:
                    length = int.from_bytes(buf[pos:pos + 3], "big")
                    end = pos + 9 + length
                    if end > size:
                        break
                    self._on_frame(buf[pos + 3], buf[pos + 4], int.from_bytes(buf[pos + 5:pos + 9], "big") & 0x7FFFFFFF,
                                   buf[pos + 9:end], out)
                    pos = end
                buf = buf[pos:]
                self._start_streams(out)
                if out:
                    self.writer.write(b"".join(out))
            raise ClientError("server closed the HTTP/2 connection")
        except BaseException as exc:  # noqa: BLE001 - handed to every waiter
            self.failure = exc if isinstance(exc, (ClientError, asyncio.CancelledError)) else ClientError(repr(exc))
            for future in [s.future for s in self.streams.values()] + [f for _, f in self.pending]:
                if not future.done():
                    future.set_exception(self.failure)

    def _on_frame(self, ftype: int, flags: int, sid: int, payload: bytes, out: list[bytes]) -> None:
        if ftype in (DATA, HEADERS) and flags & PADDED:
            payload = payload[1:len(payload) - payload[0]]
        if ftype == DATA:
            stream = self.streams[sid]
            stream.chunks.append(payload)
            self._credit(stream, sid, 9 + len(payload), out)
            if flags & END_STREAM:
                self._finish(sid)
        elif ftype == HEADERS or ftype == CONTINUATION:
            stream = self.streams[sid] if ftype == HEADERS else self.continuing
            assert stream is not None
            stream.block += payload[5:] if ftype == HEADERS and flags & PRIORITY else payload
            if not flags & END_HEADERS:
                self.continuing = stream
                return
            self.continuing = None
            status, content_type = response_head(bytes(stream.block))
            stream.block.clear()
            if not stream.status:                       # a second block is trailers
                stream.status, stream.content_type = status, content_type
            if flags & END_STREAM:
                self._finish(sid)
        elif ftype == SETTINGS and not flags & ACK:
            for k in range(0, len(payload), 6):
                if int.from_bytes(payload[k:k + 2], "big") == SETTINGS_MAX_CONCURRENT_STREAMS:
                    self.max_streams = int.from_bytes(payload[k + 2:k + 6], "big")
            out.append(_frame(SETTINGS, ACK, 0))
        elif ftype == PING and not flags & ACK:
            out.append(_frame(PING, ACK, 0, payload))
        elif ftype == RST_STREAM:
            stream = self.streams.pop(sid)
            stream.future.set_exception(ClientError(f"stream reset by the server (error {int.from_bytes(payload, 'big')})"))
        elif ftype == GOAWAY:
            raise ClientError(f"server sent GOAWAY (error {int.from_bytes(payload[4:8], 'big')})")
        elif ftype == PUSH_PROMISE:
            raise ClientError("server push although SETTINGS_ENABLE_PUSH is 0")

    def _credit(self, stream: _Stream, sid: int, length: int, out: list[bytes]) -> None:
        """Return flow-control credit in large steps, as browsers do."""
        stream.unacked += length
        self.unacked += length
        if stream.unacked > H2_STREAM_WINDOW // 2:
            out.append(_frame(WINDOW_UPDATE, 0, sid, stream.unacked.to_bytes(4, "big")))
            stream.unacked = 0
        if self.unacked > H2_CONNECTION_WINDOW // 2:
            out.append(_frame(WINDOW_UPDATE, 0, 0, self.unacked.to_bytes(4, "big")))
            self.unacked = 0

    def _finish(self, sid: int) -> None:
        stream = self.streams.pop(sid)
        stream.future.set_result(Response(stream.status, b"".join(stream.chunks), stream.content_type))

    async def get(self, path: str, headers: dict[str, str] | None = None) -> Response:
        return (await self.get_many([path], headers))[0]

    async def get_many(self, paths: list[str], headers: dict[str, str] | None = None) -> list[Response]:
        if self.failure:
            raise self.failure
        if self.connecting is None:                     # concurrent first calls share one connection
            self.connecting = asyncio.ensure_future(self._connect())
        await asyncio.shield(self.connecting)
        assert self.writer is not None
        loop = asyncio.get_running_loop()
        pseudo = b"\x82" + self.scheme_field + self.authority_field      # :method GET, :scheme, :authority
        regular = self.common_fields + b"".join(
            b"\x00" + _hpack_int(len(k), 7) + k.lower().encode() + _hpack_int(len(v), 7) + v.encode()
            for k, v in (headers or {}).items())
        futures = []
        for path in paths:
            future = loop.create_future()
            self.pending.append((pseudo + _hpack_literal(4, path.encode()) + regular, future))
            futures.append(future)
        out: list[bytes] = []
        self._start_streams(out)
        self.writer.write(b"".join(out))
        return list(await asyncio.gather(*futures))

    async def close(self) -> None:
        if self.connecting is not None:
            self.connecting.cancel()
            await asyncio.gather(self.connecting, return_exceptions=True)
        if self.reader_task is not None:
            self.reader_task.cancel()
            await asyncio.gather(self.reader_task, return_exceptions=True)
        if self.writer is not None:
            self.writer.close()


Session = H1Session | H2Session


def open_session(transport: Transport, host: str, port: int, tls: ssl.SSLContext | None) -> Session:
    """A fresh page visit over `transport` (`tls` is the client context for h2-tls, else None)."""
    if transport is Transport.H1:
        return H1Session(host, port)
    return H2Session(host, port, tls if transport is Transport.H2_TLS else None)


# --- what a page's jQuery adds to its requests --------------------------------------------------

def js_param(pairs: Iterable[tuple[str, object]]) -> str:
    """`jQuery.param(pairs, true)`: encodeURIComponent on names and values, repeated names kept."""
    return "&".join(f"{quote(str(k), safe=_URI_COMPONENT)}={quote(str(v), safe=_URI_COMPONENT)}" for k, v in pairs)


_URI_COMPONENT = "!'()*"            # what encodeURIComponent leaves besides letters, digits and -_.~


class JQuery:
    """One page's jQuery (jquery.js 3.7.1), as far as its URLs go.

    `expando` is "jQuery" + the digits of version and Math.random(); one counter, `nonce.guid`,
    starts at Date.now() and numbers both the JSONP callbacks (`expando_<n>`) and the `_=<n>`
    cache-busters of `cache: false` requests (dataType "jsonp" turns caching off). A callback
    name is handed back when its request completes, before the success handler runs, and the
    next JSONP request reuses it (`oldCallbacks`), so the first request issued from a success
    handler carries the name of the request that just answered."""

    def __init__(self, now_ms: int | None = None, rng: random.Random | None = None) -> None:
        self.expando = "jQuery" + re.sub(r"\D", "", JQUERY_VERSION + repr((rng or random).random()))
        self.guid = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        self.free: list[str] = []

    def _next(self) -> int:
        self.guid += 1
        return self.guid - 1

    def uncached(self, url: str) -> str:
        """`$.ajax({url, cache: false})`: `_=<counter>` appended."""
        return f"{url}{'&' if '?' in url else '?'}_={self._next()}"

    def jsonp(self, url: str) -> tuple[str, str]:
        """`$.ajax({url, dataType: "jsonp"})` (gs_json): (the URL sent, the callback name).

        The callback goes after the URL's own query, `_` last."""
        name = self.free.pop() if self.free else f"{self.expando}_{self._next()}"
        return self.uncached(f"{url}{'&' if '?' in url else '?'}callback={name}"), name

    def done(self, name: str) -> None:
        """The request using `name` completed: the name is free again."""
        self.free.append(name)


JSONP_TYPE = b"application/javascript"


def unwrap_jsonp(response: Response, name: str) -> bytes | None:
    """The JSON inside `NAME(<json>)` served as application/javascript; None if the answer is not that."""
    body = response.body
    if (not response.content_type.split(b";")[0].strip().lower() == JSONP_TYPE
            or not body.startswith(name.encode() + b"(") or not body.endswith(b")")):
        return None
    return body[len(name) + 1:-1]
