"""The one canonical cache key, shared by the edge, the warmer and the purge path.

A key is readable text: `<audience> <host> <canonical path>?<params>`. Equivalent URLs fold
(`render_thumbnail/<id>/` = `…/<id>/96/`, birds-eye = thumbnail, `plate/<pid>/` = `…/0/`),
cache-busters (`_`) are dropped, the other params are sorted by name (stable, so repeated
params keep their order: Django reads the last one) and quoted, so two URLs share a key only
when the backend would answer them alike. The tiers store under a digest of the text and
keep the text in the entry to rule out collisions.
"""
from __future__ import annotations

import hashlib
import json
import re
from urllib.parse import quote, unquote_to_bytes

from .routes import BY_NAME, CACHE_BUSTERS, CREDENTIAL_PARAMS, JSONP_CALLBACK, Personal, Route

PUBLIC = "public"  # no session, or the OMERO public user: one shared cache
SHARED = "shared"  # bytes the same for every reader (read checks still apply per audience)

Params = list[tuple[str, str]]

# One `c` entry with a window and a colour (or LUT): [-]idx|start:end$RRGGBB
_FULL_CHANNEL = re.compile(r"^-?[0-9]+\|-?[0-9.]+:-?[0-9.]+\$[0-9A-Za-z_.\-]+$")


class BadQuery(ValueError):
    """The query string is not valid percent-encoded UTF-8: proxy it, never cache it."""


def parse_query(raw: bytes) -> Params:
    """Decode a raw query string strictly: an undecodable one must never fold into another's key."""
    pairs: Params = []
    if not raw:
        return pairs
    if b"%" not in raw and b"+" not in raw:  # nothing to unquote (a batch's 50 ids: ~5x faster)
        try:
            return [(name.decode(), value.decode()) for part in raw.split(b"&") if part
                    for name, _, value in (part.partition(b"="),)]
        except UnicodeDecodeError:
            raise BadQuery("query is not UTF-8") from None
    for part in raw.split(b"&"):
        if not part:
            continue
        name, _, value = part.partition(b"=")
        try:
            pairs.append((unquote_to_bytes(name.replace(b"+", b" ")).decode(),
                          unquote_to_bytes(value.replace(b"+", b" ")).decode()))
        except UnicodeDecodeError:
            raise BadQuery("query is not UTF-8") from None
    return pairs


def has_credentials(params: Params) -> bool:
    return any(name in CREDENTIAL_PARAMS for name, _ in params)


def canonical_params(params: Params, drop: frozenset[str] = frozenset()) -> str:
    kept = [(n, v) for n, v in params if n not in CACHE_BUSTERS and n not in drop]
    kept.sort(key=lambda pair: pair[0])
    return "&".join(f"{quote(n, safe='')}={quote(v, safe='')}" for n, v in kept)


def canonical_path(route: Route, path: str, groups: dict[str, str], default_size: int) -> str:
    if not route.canonical:
        return path
    values = {name: value.replace("{default_size}", str(default_size)) for name, value in route.defaults}
    values.update(groups)
    # An explicit size equal to the default is the same request as no size.
    return route.canonical.format(**values)


def is_full_rdef(params: Params, channels: int | None) -> bool:
    """A render the URL fixes for every reader (clients.md §6): `m` given, and each of the image's
    `channels` listed once in `c` with a window and a colour, with a `maps` entry holding both
    `quantization` and `inverted` (else the reader's saved family, coefficient and inversion apply:
    gw/views.py:903-949, ImageRegionCtx.java:444-516). False while the channel count is unknown."""
    last = dict(params)
    if channels is None or last.get("m") not in ("g", "c"):
        return False
    entries = last.get("c", "").split(",")
    if len(entries) != channels or not all(_FULL_CHANNEL.match(entry) for entry in entries):
        return False
    if sorted(abs(int(entry.split("|", 1)[0])) for entry in entries) != list(range(1, channels + 1)):
        return False
    try:
        maps = json.loads(last.get("maps", ""))
    except ValueError:
        return False
    return isinstance(maps, list) and len(maps) == channels and all(
        isinstance(m, dict) and isinstance(m.get("quantization"), dict)
        and isinstance(m.get("inverted", m.get("reverse")), dict) for m in maps)


def key_ignored(route: Route) -> frozenset[str]:
    """Parameters of `route` that never change its bytes (named per route, with their sources)."""
    return frozenset(route.ignored) | ({JSONP_CALLBACK} if route.jsonp else frozenset())


def key_audience(route: Route, params: Params, audience: str, groups: dict[str, str],
                 channels: int | None = None) -> str:
    """The audience part of the key: shared when the bytes cannot depend on the requester. A render
    also needs z and t in the path (else the reader's default Z/T apply) and a full rendering def."""
    if route.personal is Personal.NEVER:
        return SHARED
    if (route.personal is Personal.UNLESS_FULL_RDEF and "z" in groups and "t" in groups
            and is_full_rdef(params, channels)):
        return SHARED
    return audience


def key_text(route: Route, path: str, groups: dict[str, str], params: Params, *, audience: str,
             host: str, default_size: int, channels: int | None = None) -> str:
    """The canonical key of a request already matched to `route`; `channels` is the image's channel
    count where known (a render is shared only when it fixes every channel)."""
    where = host if route.absolute_urls else "-"
    query = canonical_params(params, key_ignored(route))
    return f"{key_audience(route, params, audience, groups, channels)} {where} " \
           f"{canonical_path(route, path, groups, default_size)}?{query}"


def thumbnail_key(batch: Route, image_id: int, size: int, *, audience: str, default_size: int,
                  params: Params = ()) -> str:
    """The per-image entry a `get_thumbnails` batch reads and fills: the single-thumbnail URL's key."""
    item = BY_NAME[batch.item]
    groups = {"iid": str(image_id), "w": str(size)}
    return key_text(item, "", groups, list(params), audience=audience, host="-", default_size=default_size)


def digest(text: str) -> str:
    """Storage name of a key in every tier."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def key_for(path: str, raw_query: bytes = b"", *, audience: str = PUBLIC, host: str = "-",
            default_size: int = 96, channels: int | None = None) -> str | None:
    """The key a GET of `path?raw_query` is stored under, or None when it is never cached
    (no route, credentials in the query, an undecodable query, or a batch, which has per-image keys)."""
    from .routes import Kind, match

    found = match(path)
    if found is None:
        return None
    route, groups = found
    try:
        params = parse_query(raw_query)
    except BadQuery:
        return None
    if route.kind is Kind.BATCH or has_credentials(params):
        return None
    return key_text(route, path, groups, params, audience=audience, host=host, default_size=default_size,
                    channels=channels)
