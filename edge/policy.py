"""Entry policy: what an answer becomes in the cache, and whether it may be stored at all.

Pure functions of the settings (no I/O), shared by the edge's fills, its batch splitting, the
coalescer and the warmer's direct mode, so all of them store exactly the same entries.
"""
from __future__ import annotations

import base64
import json
import re

from .entry import Entry, body_matches_type, strong_etag
from .kinds import tag
from .protocol import JSON_TYPES
from .request import Request
from .routes import Kind, Route
from .settings import Settings

_DATA_URI = re.compile(r"^data:(image/[a-z]+);base64,(.*)$", re.S)


class EntryPolicy:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def entry(self, req: Request, status: int, content_type: str, body: bytes, *, epoch: int, started: float,
              extra: list[tuple[bytes, bytes]] = (), key: str | None = None) -> Entry:
        """An answer as an entry: the route's TTL class (or ttl_negative), tags from the URL and the JSON."""
        s = self.settings
        ttl = getattr(s, "ttl_" + req.route.ttl) if status == 200 else s.ttl_negative
        tags = req.objects() + (body_tags(body) if req.route.kind is Kind.JSON and status == 200 else ())
        etag = strong_etag(body)
        if is_thumbnail(req.route) and status == 200:
            tags += (body_tag(etag),)
        return Entry.build(req.key if key is None else key, status, content_type, body, ttl=ttl,
                           stale=self._stale() if status == 200 else 0, epoch=epoch, tags=tags,
                           public=req.public, extra=list(extra), now=started, etag=etag)

    def storable(self, route: Route, entry: Entry, content_type: str) -> bool:
        """Only final answers: 200s whose body is what their type says (not OMERO's placeholders), JSON
        without a ConcurrencyException, and 404s for the public audience while ttl_negative allows."""
        if entry.status == 404:
            return bool(self.settings.ttl_negative) and entry.public
        if entry.status != 200 or not body_matches_type(content_type, entry.body):
            return False
        media = content_type.split(";")[0].strip()
        if route.kind is Kind.IMAGE:
            return media.startswith("image/")
        # An error reported inside a 200: OMERO's ConcurrencyException, iviewer's `{"error": …}`
        # (omero_iviewer/views.py, image_data's except branch).
        head = entry.body[:200]
        return media in JSON_TYPES and b"ConcurrencyException" not in head and not head.startswith(b'{"error"')

    def thumbnail(self, key: str, image_id: int, value: object, *, public: bool, epoch: int,
                  started: float) -> Entry | None:
        """A get_thumbnails value as the entry render_thumbnail would have stored; None if not final
        (null, not a data URI, or a placeholder: a PNG labelled JPEG is passed on, never stored)."""
        if not isinstance(value, str):
            return None
        m = _DATA_URI.match(value)
        if m is None:
            return None
        try:
            body = base64.b64decode(m.group(2), validate=True)
        except ValueError:
            return None
        content_type = m.group(1)
        if not body_matches_type(content_type, body):
            return None
        etag = strong_etag(body)
        return Entry.build(key, 200, content_type, body, ttl=self.settings.ttl_thumbnail, stale=self._stale(),
                           epoch=epoch, tags=(tag("image", image_id), body_tag(etag)), public=public, now=started,
                           etag=etag)

    def _stale(self) -> float:
        return max(self.settings.stale_while_revalidate, self.settings.stale_if_error)


def is_thumbnail(route: Route) -> bool:
    """A single image's thumbnail (the bytes OMERO may answer with its loading picture)."""
    return route.kind is Kind.IMAGE and route.ttl == "thumbnail" and bool(route.image_group)


def body_tag(etag: str) -> str:
    """The tag every thumbnail entry carries: its body, so a learned loading picture purges its copies."""
    return "body:" + etag.strip('"')


def body_tags(body: bytes) -> tuple[str, ...]:
    """Images named inside JSON (plate grid cells, API objects), so purging an image reaches them."""
    try:
        doc = json.loads(body)
    except ValueError:
        return ()
    ids: set[int] = set()
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            kind = node.get("@type") or node.get("type") or ""
            ident = node.get("@id", node.get("id"))
            if isinstance(kind, str) and kind.rpartition("#")[2] == "Image" and isinstance(ident, int):
                ids.add(ident)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return tuple(tag("image", i) for i in sorted(ids))


def uri_json(entry: Entry) -> str:
    """An entry as a get_thumbnails value (a JSON string literal), built once per entry."""
    if entry.uri_json is None:
        entry.uri_json = f'"data:{entry.content_type()};base64,{base64.b64encode(entry.body).decode()}"'
    return entry.uri_json
