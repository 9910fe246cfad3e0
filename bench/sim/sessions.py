"""Users, OMERO sessions and Django sessions, stored like OMERO.web with django-redis.

An OMERO session key (what `bsession` and `X-OMERO-Session-Key` carry) maps to a user. A Django
session (the cookie) holds the connector with that key. With `--redis` every Django session is
written as django-redis does (key `:1:django.contrib.sessions.cache<cookie>`, `pickle.dumps(dict)`,
TTL = cookie age) and read back from Redis on every request, so deleting or corrupting the key
revokes the session; values are unpickled with a loader that refuses every global.
"""
from __future__ import annotations

import io
import pickle
import re
import secrets
import string
from collections import OrderedDict
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from starlette.requests import Request

from bench.sim.catalog import Catalog, User

REDIS_PREFIX = ":1:django.contrib.sessions.cache"
# IDR's omero.web.public.url_filter, reduced to the apps the sim serves (IDR opens OMERO.iviewer to the public)
PUBLIC_URL_FILTER = re.compile(
    r"^/(api/|iviewer/|webclient/(?!(action|annotate|login|logout|render_image_download))"
    r"|webgateway/(?!(archived_files|download_as)))")
MEMORY_SESSIONS = 200_000
_COOKIE_CHARS = string.ascii_lowercase + string.digits


class _NoGlobals(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's signature
        raise pickle.UnpicklingError(f"global {module}.{name} refused")


def safe_loads(data: bytes) -> dict | None:
    """A Django session dict of plain types, or None for anything else (never runs code)."""
    try:
        value = _NoGlobals(io.BytesIO(data)).load()
    except Exception:  # any malformed or hostile pickle is "no session"
        return None
    return value if isinstance(value, dict) else None


@dataclass(frozen=True)
class Identity:
    """Who a request runs as, and the Django session (cookie) it came from or created.

    `extra` holds what views keep in the Django session besides the connector: `active_group`
    (wc/views.py:382-386) and the rendering-settings clipboard `fromid` (gw/views.py:2474-2478)."""
    user: User
    omero_key: str
    cookie: str | None = None
    created: bool = False
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def public(self) -> bool:
        return self.user.public

    @property
    def active_group(self) -> int:
        """`request.session.get("active_group") or conn.getEventContext().groupId` (wc/views.py:501)."""
        return self.extra.get("active_group") or self.user.default_group


Loaded = tuple[int, str, dict]    # user id, OMERO session key, the session's extra keys (EXTRA_KEYS)
EXTRA_KEYS = ("active_group", "fromid")


class _MemoryStore:
    """Django sessions in process memory (the default file backend's stand-in): cookie → (user, key, extra).

    Only the connector's two ids are kept (200,000 anonymous sessions stay small); `extra` is
    usually empty."""

    def __init__(self) -> None:
        self._data: OrderedDict[str, Loaded] = OrderedDict()

    async def load(self, cookie: str) -> Loaded | None:
        return self._data.get(cookie)

    async def save(self, cookie: str, user_id: int, omero_key: str, session: dict) -> None:
        self._data[cookie] = (user_id, omero_key, {k: session[k] for k in EXTRA_KEYS if k in session})
        if len(self._data) > MEMORY_SESSIONS:
            self._data.popitem(last=False)

    async def delete(self, cookie: str) -> None:
        self._data.pop(cookie, None)


class _RedisStore:
    def __init__(self, url: str, ttl: int) -> None:
        self.client = aioredis.from_url(url)
        self.ttl = ttl

    async def load(self, cookie: str) -> Loaded | None:
        raw = await self.client.get(REDIS_PREFIX + cookie)
        session = safe_loads(raw) if raw else None
        connector = session.get("connector") if session else None
        if not isinstance(connector, dict):
            return None
        user_id, key = connector.get("user_id"), connector.get("omero_session_key")
        extra = {k: session[k] for k in EXTRA_KEYS if isinstance(session.get(k), int)}
        return (user_id, key, extra) if isinstance(user_id, int) and isinstance(key, str) else None

    async def save(self, cookie: str, user_id: int, omero_key: str, session: dict) -> None:
        await self.client.set(REDIS_PREFIX + cookie, pickle.dumps(session, pickle.DEFAULT_PROTOCOL), ex=self.ttl)

    async def delete(self, cookie: str) -> None:
        await self.client.delete(REDIS_PREFIX + cookie)


class Sessions:
    def __init__(self, catalog: Catalog, cookie_name: str, cookie_age: int, thumb_size: int,
                 redis_url: str | None) -> None:
        self.catalog = catalog
        self.cookie_name = cookie_name
        self.cookie_age = cookie_age
        self.thumb_size = thumb_size
        self.store = _RedisStore(redis_url, cookie_age) if redis_url else _MemoryStore()
        self.omero: dict[str, int] = {}     # OMERO session key → user id
        self._url_logins: dict[int, str] = {}  # ?username&password: one OMERO session per user
        self.public_user = next((u for u in catalog.users.values() if u.public), None)
        # omero.web.public.cache: one OMERO session shared by every public Django session
        self.public_key = self._open(self.public_user) if self.public_user else ""

    def _open(self, user: User) -> str:
        key = secrets.token_hex(16)
        key = f"{key[:8]}-{key[8:12]}-{key[12:16]}-{key[16:20]}-{key[20:]}"
        self.omero[key] = user.id
        return key

    def authenticate(self, username: str | None, password: str | None) -> User | None:
        user = self.catalog.users_by_name.get(username or "")
        return user if user is not None and secrets.compare_digest(user.password, password or "") else None

    def from_key(self, key: str | None) -> Identity | None:
        user_id = self.omero.get(key or "")
        return Identity(self.catalog.users[user_id], key) if user_id is not None else None

    def session_dict(self, user: User, omero_key: str) -> dict:
        """The Django session OMERO.web keeps: connector, server_settings, can_create."""
        return {
            "connector": {"server_id": "1", "is_secure": False, "is_public": user.public,
                          "omero_session_key": omero_key, "user_id": user.id},
            "server_settings": {"browser": {"thumb_default_size": self.thumb_size},
                                "viewer": {"interpolate_pixels": True, "initial_zoom_level": 0},
                                "ui": {"orphans": {"name": "Orphaned Images"}}},
            "can_create": not user.public,
        }

    async def create(self, user: User) -> Identity:
        """A new Django session (new cookie) for `user`; the public user shares one OMERO session."""
        omero_key = self.public_key if user.public else self._open(user)
        cookie = "".join(secrets.choice(_COOKIE_CHARS) for _ in range(32))
        await self.store.save(cookie, user.id, omero_key, self.session_dict(user, omero_key))
        return Identity(user, omero_key, cookie, created=True)

    async def from_cookie(self, cookie: str | None) -> Identity | None:
        if not cookie:
            return None
        found = await self.store.load(cookie)
        if found is None:
            return None
        ident = self.from_key(found[1])
        if ident is None or ident.user.id != found[0]:
            return None
        return Identity(ident.user, ident.omero_key, cookie, extra=dict(found[2]))

    async def update(self, ident: Identity, **extra: int | None) -> None:
        """Set (None: drop) keys of the Django session, as `request.session[k] = v` does; a request
        without a session cookie (bsession, ?username) has nowhere to keep them."""
        if ident.cookie is None:
            return
        ident.extra.update(extra)
        for k in [k for k, v in ident.extra.items() if v is None]:
            del ident.extra[k]
        session = {**self.session_dict(ident.user, ident.omero_key), **ident.extra}
        await self.store.save(ident.cookie, ident.user.id, ident.omero_key, session)

    async def logout(self, ident: Identity | None) -> None:
        if ident is None:
            return
        if ident.cookie:
            await self.store.delete(ident.cookie)
        if not ident.public:
            self.omero.pop(ident.omero_key, None)

    async def resolve(self, request: Request) -> Identity | None:
        """OMERO.web's login_required order: ?bsession, ?username&password, then the session cookie."""
        q = request.query_params
        if "bsession" in q:
            return self.from_key(q["bsession"])
        if "username" in q and "password" in q:
            user = self.authenticate(q["username"], q["password"])
            if user is None:
                return None
            if user.id not in self._url_logins or self._url_logins[user.id] not in self.omero:
                self._url_logins[user.id] = self._open(user)
            return Identity(user, self._url_logins[user.id])
        return await self.from_cookie(request.cookies.get(self.cookie_name))

    async def resolve_ms(self, request: Request) -> Identity | None:
        """omero-ms-core's order: X-OMERO-Session-Key header, ?bsession, then the cookie via the store."""
        key = request.headers.get("x-omero-session-key") or request.query_params.get("bsession")
        if key:
            return self.from_key(key)
        return await self.from_cookie(request.cookies.get(self.cookie_name))

    def public_allowed(self, request: Request, enabled: bool) -> bool:
        return (enabled and self.public_user is not None and request.method in ("GET", "HEAD")
                and PUBLIC_URL_FILTER.search(request.url.path) is not None)


def csrf_ok(request: Request, form_token: str | None) -> bool:
    """Django's CsrfViewMiddleware for unsafe methods: the csrftoken cookie must match."""
    cookie = request.cookies.get("csrftoken")
    token = request.headers.get("x-csrftoken") or form_token
    return bool(cookie) and bool(token) and secrets.compare_digest(cookie, token)


def new_csrf_token() -> str:
    return secrets.token_urlsafe(48)[:64]


def csrf_token_for(request: Request) -> str:
    """Django's get_token: the request's csrftoken cookie, else a new one."""
    return request.cookies.get("csrftoken") or new_csrf_token()


def use_csrf(response, token: str):  # noqa: ANN001, ANN201 - a Starlette Response
    """What CsrfViewMiddleware does once a view used the token: (re)send the cookie to renew it
    (CSRF_COOKIE_NEEDS_UPDATE) and add `Vary: Cookie`."""
    response.set_cookie("csrftoken", token, path="/", samesite="lax")
    vary = response.headers.get("vary")
    if not vary or "cookie" not in vary.lower():
        response.headers["Vary"] = f"{vary}, Cookie" if vary else "Cookie"
    return response
