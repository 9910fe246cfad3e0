"""Classification (Varnish's recv + hash): a request becomes a cacheable `Request` with its key,
or a `Bypass` reason, before anything is looked up.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from .identity import Identity, Requester
from .jsonp import callback_of, upstream_query
from .kinds import tag
from .protocol import WARM_HEADER, WARM_REFRESH_HEADER
from .keys import PUBLIC, BadQuery, Params, digest, has_credentials, key_text, parse_query
from .routes import OBJECT_TYPES, Kind, Route, match
from .settings import Settings
from .status import Bypass

_HOT_SIZE = 200_000


@dataclass(slots=True)
class Request:
    """What the cache path needs of one request."""

    scope: dict
    route: Route
    groups: dict[str, str]
    params: Params
    requester: Requester
    headers: dict[bytes, bytes]
    host: str  # the origin absolute links are built for: public_base_url, else scheme://Host as received
    key: str = ""  # "" for a batch (its members have keys of their own)
    digest: str = field(default="", repr=False)
    warm: float | None = None  # warm mode (protocol.WARM_HEADER): its refresh-before time, else None
    callback: str | None = None  # JSONP: the wrapper's name on a `jsonp` route (see jsonp.py)

    @property
    def public(self) -> bool:
        return self.requester.audience == PUBLIC

    @property
    def image_id(self) -> int | None:
        """The image the URL names, if any (the route row's image group)."""
        ident = self.groups.get(self.route.image_group)
        return int(ident) if ident is not None else None

    def upstream_target(self) -> str:
        """Path and query a fill sends upstream: as received, less the JSONP callback."""
        qs = upstream_query(self.scope["query_string"]) if self.callback is not None else self.scope["query_string"]
        return self.scope["path"] + ("?" + qs.decode("latin-1") if qs else "")

    def objects(self) -> tuple[str, ...]:
        """The canonical tags of the objects the URL names, in its path or its query (for purge and
        read checks)."""
        return url_objects(self.route, self.groups, self.params)


def url_objects(route: Route, groups: dict[str, str], params: Params) -> tuple[str, ...]:
    """Tags of the objects a matched URL names: path groups, typed path segments, query ids."""
    tags = [tag(kind, groups[group]) for group, kind in route.objects if group in groups]
    if route.typed_object:
        type_group, id_group = route.typed_object
        kind = OBJECT_TYPES.get(groups.get(type_group, "").split(".", 1)[0].lower())
        if kind is not None:
            tags.append(tag(kind, groups[id_group]))
    if route.query_objects:
        kinds = dict(route.query_objects)
        tags += [tag(kinds[name], value) for name, value in params
                 if name in kinds and value.isascii() and value.isdigit()]
    return tuple(dict.fromkeys(tags))


def parse(path: str, raw_query: bytes) -> tuple[Route, dict[str, str], Params] | Bypass:
    """The route, path groups and query of a cacheable URL, or why it is not cached."""
    found = match(path)
    if found is None:
        return Bypass.UNCACHEABLE
    try:
        params = parse_query(raw_query)
    except BadQuery:
        return Bypass.BAD_QUERY
    if has_credentials(params):
        return Bypass.CREDENTIALS
    return found[0], found[1], params


def keyed(req: Request, default_size: int, channels: int | None = None) -> Request:
    """`req` with its key and digest (a batch keeps none: its members have their own); `channels` is
    the image's channel count where known (see keys.is_full_rdef)."""
    req.callback = callback_of(req.route, req.params)
    if req.route.kind is not Kind.BATCH:
        req.key = key_text(req.route, req.scope["path"], req.groups, req.params,
                           audience=req.requester.audience or PUBLIC, host=req.host, default_size=default_size,
                           channels=channels)
        req.digest = digest(req.key)
    return req


class Classifier:
    def __init__(self, settings: Settings, identity: Identity) -> None:
        self.settings = settings
        self.identity = identity
        self._hot: dict[tuple, tuple[str, str]] = {}  # (path, query, host) of anonymous GETs → (key, digest)
        # Channel counts seen in imgData / image_data answers: a render is shared across audiences only
        # when it fixes every channel. Only per-user caching needs it (one audience shares everything).
        self.channels: dict[int, int] = {}

    def learn_channels(self, image_id: int, body: bytes) -> None:
        """Note an image's channel count from its imgData / image_data JSON."""
        if not self.identity.per_user:
            return
        try:
            count = len(json.loads(body)["channels"])
        except (ValueError, KeyError, TypeError):
            return
        if len(self.channels) >= _HOT_SIZE:
            self.channels.clear()
        self.channels[image_id] = count

    def hot(self, key: tuple) -> tuple[str, str] | None:
        """The (key, digest) an anonymous URL (its `hot_key`) had before: the hit path skips parsing and key
        building."""
        return self._hot.get(key)

    async def classify(self, scope: dict, headers: dict[bytes, bytes], anonymous: bool) -> Request | Bypass:
        parsed = parse(scope["path"], scope["query_string"])
        if isinstance(parsed, Bypass):
            return parsed
        requester = await self.identity.requester(headers)
        if requester.audience is None:
            return requester.reason
        host = link_origin(self.settings, scope.get("scheme", "http"), headers.get(b"host", b"-").decode("latin-1"))
        req = Request(scope, *parsed, requester, headers, host)
        keyed(req, self.settings.thumb_default_size, self.channels.get(req.image_id))
        req.warm = warm_mode(headers, self.settings.warm_token)
        if anonymous and req.key:
            if len(self._hot) >= _HOT_SIZE:
                self._hot.clear()
            self._hot[asgi_hot_key(scope, headers)] = (req.key, req.digest)
        return req


def asgi_hot_key(scope: dict, headers: dict[bytes, bytes]) -> tuple:
    """What makes two anonymous GETs the same request before any parsing: path, query, Host, scheme (the RSGI
    adapter builds the same tuple from its scope: edge/rsgi.py)."""
    return scope["path"], scope["query_string"], headers.get(b"host"), scope.get("scheme")


def link_origin(settings: Settings, scheme: str, host: str) -> str:
    """Where OMERO.web's absolute links point for this request: `public_base_url`, else the scheme and
    Host it arrived with. A client's own X-Forwarded-* never count (clients.md §8): fills send these
    (origin.forwarded_for_fill), and the key holds them for routes with absolute links."""
    return settings.public_base_url.rstrip("/") or f"{scheme}://{host}"


def warm_mode(headers: dict[bytes, bytes], token: str) -> float | None:
    """The refresh-before time of a request carrying the warm token (0.0: none), else None."""
    if not token or headers.get(WARM_HEADER.encode(), b"").decode("latin-1") != token:
        return None
    try:
        return float(headers.get(WARM_REFRESH_HEADER.encode(), b"") or 0.0)
    except ValueError:
        return 0.0


def request_for(settings: Settings, url: str, requester: Requester, host: str) -> Request | None:
    """A `Request` for a URL outside a server (the warmer's direct mode); None when it is not cached."""
    path, _, query = url.partition("?")
    parsed = parse(path, query.encode())
    if isinstance(parsed, Bypass):
        return None
    scope = {"path": path, "query_string": query.encode(), "headers": [], "method": "GET"}
    return keyed(Request(scope, *parsed, requester, {}, link_origin(settings, "http", host)),
                 settings.thumb_default_size)
