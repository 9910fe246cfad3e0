"""Who is asking: the audience a request is cached for, or None to bypass the cache.

OMERO.web identifies a browser by its Django session cookie; the OMERO session key behind it
lives in the Django session (django-redis: `:1:django.contrib.sessions.cache<cookie>`, a
pickled dict). The edge reads it the way omero-ms-image-region does, with an unpickler that
only builds plain built-in types: anything else is an unknown session, never executed.
Session ids are hashed before they go anywhere (keys, logs, metrics).
"""
from __future__ import annotations

import hashlib
import io
import logging
import pickle
import time
from dataclasses import dataclass, field
from http.cookies import _unquote  # the unquoting Django's parse_cookie uses

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .keys import PUBLIC
from .status import Bypass

log = logging.getLogger("edge.identity")
SESSION_PREFIX = ":1:django.contrib.sessions.cache"
_SAFE_BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "str", "bytes", "int", "float", "bool", "NoneType"}


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's signature
        if module == "builtins" and name in _SAFE_BUILTINS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused {module}.{name}")


def load_session(raw: bytes) -> dict | None:
    """A Django session dict of plain types, or None for anything else (never executes code)."""
    try:
        value = _PlainUnpickler(io.BytesIO(raw)).load()
    except Exception:  # noqa: BLE001 - every malformed or hostile value is just "unknown session"
        return None
    return value if isinstance(value, dict) else None


def hashed(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Requester:
    audience: str | None  # PUBLIC, "u:<hash>", or None = bypass the cache
    session: str = ""  # hashed cookie value (for read-check memos); never the cookie itself
    user_id: int | None = None
    reason: Bypass | None = None  # why it bypasses
    cookie: str = field(default="", repr=False)  # sent only to the backend, for read checks


def cookie_value(cookie_header: str, name: str) -> str | None:
    """`name`'s value as Django reads a Cookie header (django/http/cookie.py `parse_cookie`): split on
    ";", the last of repeated names wins, values unquoted. Reading it any other way than the backend
    would let one request be one user to the edge and another to OMERO.web."""
    if name not in cookie_header:
        return None
    found = None
    for chunk in cookie_header.split(";"):
        key, sep, value = chunk.partition("=")
        if not sep:
            key, value = "", chunk
        if key.strip() == name:
            found = _unquote(value.strip())
    return found or None


def joined_cookies(scope: dict) -> bytes | None | Bypass:
    """The request's one Cookie header. HTTP/2 may split it into several `cookie` fields, which are
    one header joined by "; " (RFC 9113 §8.2.3); two Cookie lines over HTTP/1.1 are not allowed
    (RFC 6265 §5.4) and servers read them differently, so such a request bypasses the cache."""
    crumbs = [value for name, value in scope["headers"] if name == b"cookie"]
    if len(crumbs) <= 1:
        return crumbs[0] if crumbs else None
    if scope.get("http_version") == "2":
        return b"; ".join(crumbs)
    return Bypass.COOKIES


class SessionResolver:
    """Cookie → Django session, read from OMERO.web's Redis, remembered for a few seconds."""

    def __init__(self, url: str, memo_ttl: float = 5.0) -> None:
        self.client = aioredis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=1.0)
        self.memo_ttl = memo_ttl
        self._memo: dict[str, tuple[float, dict | None]] = {}

    async def session(self, cookie: str) -> dict | None:
        now = time.monotonic()
        memo = self._memo.get(cookie)
        if memo is not None and now - memo[0] < self.memo_ttl:
            return memo[1]
        try:
            raw = await self.client.get(SESSION_PREFIX + cookie)
        except (RedisError, OSError) as exc:
            log.warning("session store unavailable, bypassing the cache for sessions: %s", exc)
            return None
        value = load_session(raw) if raw else None
        if len(self._memo) > 10_000:
            self._memo.clear()
        self._memo[cookie] = (now, value)
        return value

    async def close(self) -> None:
        await self.client.aclose()


class Identity:
    def __init__(self, cookie_name: str, resolver: SessionResolver | None, per_user: bool) -> None:
        self.cookie_name = cookie_name
        self.resolver = resolver
        self.per_user = per_user

    async def requester(self, headers: dict[bytes, bytes]) -> Requester:
        if b"x-omero-session-key" in headers or b"authorization" in headers:
            return Requester(None, reason=Bypass.SESSION_KEY)
        raw = headers.get(b"cookie")
        cookie = cookie_value(raw.decode("latin-1"), self.cookie_name) if raw else None
        if cookie is None:
            return Requester(PUBLIC)
        if self.resolver is None:
            return Requester(None, reason=Bypass.SESSION)  # cannot tell a user from the public user: stay safe
        session = await self.resolver.session(cookie)
        connector = session.get("connector") if session else None
        if not isinstance(connector, dict) or not connector.get("omero_session_key"):
            # Unknown, expired or tampered session: the backend decides, the cache stays out of it.
            return Requester(None, reason=Bypass.UNKNOWN_SESSION)
        if connector.get("is_public"):
            return Requester(PUBLIC)
        if not self.per_user:
            return Requester(None, reason=Bypass.USER)
        user_id = connector.get("user_id")
        return Requester("u:" + hashed(f"user:{user_id}"), session=hashed(cookie),
                         user_id=user_id if isinstance(user_id, int) else None, cookie=cookie)
