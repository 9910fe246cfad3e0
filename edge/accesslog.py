"""The access log (off by default): one line per answer, as JSON or nginx's combined format plus fields.

Every answer of the cache path and of passthrough goes out through the ASGI `send` the server gave
`Edge.handle`, so the log wraps that one callable (`Recorder`): it sees the status, the bytes sent and
the X-Edge-Cache / X-Edge-Tier headers whatever branch answered. It adds X-Request-ID (the client's
when sane, else a new one). The audience class is public / user / bypass, never a session or a user;
credentials in the query (`bsession`, `username`, `password`, `csrfmiddlewaretoken`) are logged as
`-`, and bodies never are. Lines are buffered and flushed once a second and at shutdown.
Rotation: a server's master respawns its workers on SIGHUP (granian: `_reload` → `_respawn_workers`;
hypercorn: `run.reload`), and a new worker opens the file anew (docs/deploy.md).
"""
from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import secrets
import signal
import sys
import time
from contextvars import ContextVar
from typing import IO, Awaitable, Callable, Iterator
from urllib.parse import unquote_to_bytes

log = logging.getLogger("edge.accesslog")
Send = Callable[[dict], Awaitable[None]]

# Query parameters whose values are never logged (OMERO.web's login and session parameters, Django's CSRF token).
SECRET_PARAMS = frozenset({"bsession", "username", "password", "csrfmiddlewaretoken"})
_MAYBE_SECRET = re.compile(rb"(?i)bsession|username|password|csrfmiddlewaretoken|%")
_SANE_ID = re.compile(rb"[A-Za-z0-9._:@+=/-]{1,128}")
_UNPRINTABLE = re.compile(r'[\x00-\x1f"\\\x7f-\uffff]')

# Seconds the current request's own fetches spent on the upstream (edge/upstream.py adds to it).
_UPSTREAM: ContextVar[list[float] | None] = ContextVar("edge_upstream_seconds", default=None)


class UpstreamTimer:
    """`async with`: the block's seconds count as upstream time of the request being logged (a context
    variable lookup when the log is off; fills run in the requester's task, or a task copying its context)."""

    __slots__ = ("holder", "started")

    async def __aenter__(self) -> None:
        self.holder = _UPSTREAM.get()
        self.started = time.monotonic()

    async def __aexit__(self, *exc: object) -> None:
        if self.holder is not None:
            self.holder[0] += time.monotonic() - self.started


def scrub_query(query: bytes) -> bytes:
    """`query` with the values of SECRET_PARAMS replaced by `-` (names compared decoded and lower-cased,
    as `b%73ession` is still `bsession` to Django)."""
    if not _MAYBE_SECRET.search(query):
        return query
    parts = []
    for part in query.split(b"&"):
        name = part.partition(b"=")[0]
        if unquote_to_bytes(name.replace(b"+", b" ")).decode("latin-1").lower() in SECRET_PARAMS:
            part = name + b"=-"
        parts.append(part)
    return b"&".join(parts)


def scrub_url(url: bytes) -> bytes:
    """A URL (a Referer) with its query scrubbed."""
    base, mark, query = url.partition(b"?")
    return base + mark + scrub_query(query) if mark else url


def request_id(headers: list[tuple[bytes, bytes]], fresh: Iterator[bytes]) -> bytes:
    """The client's X-Request-ID when it is short and of safe characters (so it needs no escaping), else
    the next of `fresh`."""
    for name, value in headers:
        if name == b"x-request-id" and _SANE_ID.fullmatch(value):
            return value
    return next(fresh)


def fresh_ids() -> Iterator[bytes]:
    """Request ids unique across processes and restarts: a random per-process prefix and a counter
    (16 hex digits; no system call per request)."""
    prefix = secrets.token_hex(4)
    return (f"{prefix}{n:08x}".encode() for n in itertools.count())


def _combined_escape(text: str) -> str:
    """nginx's escaping of logged strings: `"`, `\\` and bytes outside printable ASCII as \\xHH."""
    return _UNPRINTABLE.sub(lambda m: "".join(f"\\x{b:02X}" for b in m.group().encode()), text)


class Recorder:
    """The `send` of one logged request: notes status, bytes and cache headers; adds X-Request-ID."""

    __slots__ = ("send", "rid", "status", "bytes", "cache", "tier")

    def __init__(self, send: Send, rid: bytes) -> None:
        self.send, self.rid = send, rid
        self.status, self.bytes, self.cache, self.tier = 0, 0, b"", b""

    async def __call__(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            headers = message["headers"]  # never changed in place: a hit's headers are shared (Entry.prepared)
            theirs = False
            for name, value in headers:
                if name == b"x-edge-cache":
                    self.cache = value
                elif name == b"x-edge-tier":
                    self.tier = value
                elif name == b"x-request-id":
                    theirs = True  # a passed-through answer's own: ours replaces it
            if theirs:
                headers = [h for h in headers if h[0] != b"x-request-id"]
            message = {**message, "headers": [*headers, (b"x-request-id", self.rid)]}
        elif message["type"] == "http.response.body":
            self.bytes += len(message.get("body", b""))
        await self.send(message)


def audience(scope: dict, cache: bytes) -> str:
    """public / user / bypass: the classifier's `edge.audience` note (a Request's), else public (the
    anonymous hot path); BYPASS answers are 'bypass' whoever asked."""
    if cache == b"BYPASS":
        return "bypass"
    return scope.get("edge.audience", "public")


class AccessLog:
    """One file (or stdout) per worker process, written through a buffer flushed every second."""

    def __init__(self, target: str, fmt: str, clock: Callable[[], float] = time.time) -> None:
        self.target = target
        self.format = _FORMATS[fmt]
        self.clock = clock
        self.ids = fresh_ids()  # made in the worker process, at start-up
        self.out: IO[bytes] | None = None
        self.flusher: asyncio.Task | None = None
        self._second = -1
        self._stamps = ("", "")

    def open(self) -> None:
        """Open the target; a worker sent SIGHUP itself reopens it (the servers' workers leave SIGHUP at its
        default, which would end them: only their masters handle it, by respawning the workers)."""
        self.out = sys.stdout.buffer if self.target == "-" else self._file()
        self.flusher = asyncio.ensure_future(self._flush_every_second())
        if self.target != "-":
            try:
                asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reopen)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals here
                pass

    def _file(self) -> IO[bytes]:
        return open(self.target, "ab", buffering=1 << 16)

    def reopen(self) -> None:
        """After a rotation: a new file at the path, then the old one flushed and closed (if the path cannot
        be opened, the old file goes on)."""
        try:
            new = self._file()
        except OSError as exc:
            log.warning("access log %s cannot be reopened, still writing the old file: %s", self.target, exc)
            return
        old, self.out = self.out, new
        if old is not None:
            old.close()

    def close(self) -> None:
        if self.flusher is not None:
            self.flusher.cancel()
            if self.target != "-":
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        if self.out is not None:
            self.out.flush()
            if self.target != "-":
                self.out.close()
            self.out = None

    async def _flush_every_second(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self.out is not None:
                self.out.flush()

    async def serve(self, handle: Callable[[dict, Callable, Send], Awaitable[None]], scope: dict,
                    receive: Callable, send: Send) -> None:
        """`handle` with its answer recorded, then one line written (also when it failed midway)."""
        started = time.monotonic()
        rec = Recorder(send, request_id(scope["headers"], self.ids))
        upstream = [0.0]
        token = _UPSTREAM.set(upstream)
        try:
            await handle(scope, receive, rec)
        finally:
            _UPSTREAM.reset(token)
            if self.out is not None:
                self.out.write(self.format(self, scope, rec, upstream[0], time.monotonic() - started))

    def stamps(self) -> tuple[str, str]:
        """(ISO 8601 UTC, nginx's $time_local) of this second, formatted once a second."""
        now = self.clock()
        if int(now) != self._second:
            self._second = int(now)
            t = time.gmtime(now)
            self._stamps = (time.strftime("%Y-%m-%dT%H:%M:%SZ", t), time.strftime("%d/%b/%Y:%H:%M:%S +0000", t))
        return self._stamps


def _values(scope: dict, rec: Recorder) -> tuple[str, ...]:
    """A line's strings as received (latin-1), secrets scrubbed: remote, method, target (raw_path when the
    server gives it), referer, user agent, cache status, tier, audience class."""
    referer = agent = b""
    for name, value in scope["headers"]:
        if name == b"referer":
            referer = value
        elif name == b"user-agent":
            agent = value
    path = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
    query = scope["query_string"]
    target = path + b"?" + scrub_query(query) if query else path
    return ((scope.get("client") or ("-",))[0], scope["method"], target.decode("latin-1"),
            scrub_url(referer).decode("latin-1"), agent.decode("latin-1"), rec.cache.decode("latin-1") or "-",
            rec.tier.decode("latin-1") or "-", audience(scope, rec.cache))


_q = json.encoder.encode_basestring_ascii  # a JSON string literal, in C (json.dumps of a dict costs µs)


def _json_line(log: AccessLog, scope: dict, rec: Recorder, upstream: float, took: float) -> bytes:
    remote, method, target, referer, agent, cache, tier, aud = _values(scope, rec)
    return (f'{{"time":"{log.stamps()[0]}","remote":{_q(remote)},"method":{_q(method)},"path":{_q(target)},'
            f'"protocol":"HTTP/{scope.get("http_version", "1.1")}","status":{rec.status},"bytes":{rec.bytes},'
            f'"cache":{_q(cache)},"tier":{_q(tier)},"upstream_ms":{upstream * 1000:.1f},'
            f'"duration_ms":{took * 1000:.1f},"audience":"{aud}","request_id":"{rec.rid.decode()}",'
            f'"referer":{_q(referer)},"user_agent":{_q(agent)}}}\n').encode()


def _combined_line(log: AccessLog, scope: dict, rec: Recorder, upstream: float, took: float) -> bytes:
    """nginx's `combined` (the remote user always `-`), then the edge's fields as name=value."""
    remote, method, target, referer, agent, cache, tier, aud = _values(scope, rec)
    e = _combined_escape
    return (f'{remote} - - [{log.stamps()[1]}] "{e(method)} {e(target)} HTTP/{scope.get("http_version", "1.1")}" '
            f'{rec.status} {rec.bytes} "{e(referer) or "-"}" "{e(agent) or "-"}" cache={e(cache)} tier={e(tier)} '
            f'upstream_ms={upstream * 1000:.1f} duration_ms={took * 1000:.1f} audience={aud} '
            f'request_id={rec.rid.decode()}\n').encode()


_FORMATS = {"json": _json_line, "combined": _combined_line}
