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

_CSRF_FIELD = b"csrfmiddlewaretoken"  # Django's {% csrf_token %} input (clients.md §10)
_DATA_URI = re.compile(r"^data:(image/[a-z]+);base64,(.*)$", re.S)


class EntryPolicy:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def entry(self, req: Request, status: int, content_type: str, body: bytes, *, epoch: int, started: float,
              extra: list[tuple[bytes, bytes]] = (), key: str | None = None) -> Entry:
        """An answer as an entry: the route's TTL class (or ttl_negative), tags from the URL and the JSON."""
        s = self.settings
        ttl = getattr(s, "ttl_" + req.route.ttl) if status == 200 else s.ttl_negative
        kind = req.route.kind
        found = body_tags(body, kind) if kind in (Kind.JSON, Kind.HTML) and status == 200 else ()
        tags = tuple(dict.fromkeys(req.objects() + found))
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
        if _CSRF_FIELD in entry.body:
            return False  # a form for this viewer (the comment form of one who may annotate): never shared
        if route.kind is Kind.HTML:
            return media == "text/html"
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


# What names an object inside an answer: omero-marshal's `@type` (API v0, "…#Image"), the webclient's
# `class` ("ImageI", wc/tree.py and api_annotations' `link.parent`), or the list a record sits in
# (`{"images": [{"id": …}]}`, wc/tree.py marshal_*; the plate grid's `"type": "Image"` is a @type too).
_TYPE_NAMES = {"image": "image", "well": "well", "plate": "plate", "plateacquisition": "plateacquisition",
               "screen": "screen", "project": "project", "dataset": "dataset"}
_LIST_KINDS = {"images": "image", "wells": "well", "plates": "plate", "acquisitions": "plateacquisition",
               "screens": "screen", "projects": "project", "datasets": "dataset"}
# The webclient's panels link each image they show to its viewer (wc/urls.py:184-187, `img_detail/<iid>/`).
_VIEWER_LINK = re.compile(rb"/img_detail/([0-9]{1,18})/")


def body_tags(body: bytes, kind: Kind = Kind.JSON) -> tuple[str, ...]:
    """Objects named inside an answer (grid cells, listed records, annotated parents, linked images),
    so purging one reaches the lists and panels that show it."""
    if kind is Kind.HTML:
        return tuple(tag("image", i) for i in sorted({int(m) for m in _VIEWER_LINK.findall(body)}))
    try:
        doc = json.loads(body)
    except ValueError:
        return ()
    found: set[tuple[str, int]] = set()
    stack: list[tuple[object, str | None]] = [(doc, None)]
    while stack:
        node, hint = stack.pop()
        if isinstance(node, dict):
            named = node.get("@type") or node.get("type") or node.get("class")
            obj_kind = _object_kind(named) if isinstance(named, str) else hint
            ident = node.get("@id", node.get("id"))
            if obj_kind is not None and isinstance(ident, int) and not isinstance(ident, bool):
                found.add((obj_kind, ident))
            stack.extend((value, _LIST_KINDS.get(name)) for name, value in node.items())
        elif isinstance(node, list):
            stack.extend((item, hint) for item in node)
    return tuple(tag(k, i) for k, i in sorted(found))


def _object_kind(name: str) -> str | None:
    """"…2016-06#Image", "ImageI", "Image" → "image"; annotation and other classes → None."""
    name = name.rpartition("#")[2].lower()
    return _TYPE_NAMES.get(name[:-1] if name.endswith("i") and name[:-1] in _TYPE_NAMES else name)


def uri_json(entry: Entry) -> str:
    """An entry as a get_thumbnails value (a JSON string literal), built once per entry."""
    if entry.uri_json is None:
        entry.uri_json = f'"data:{entry.content_type()};base64,{base64.b64encode(entry.body).decode()}"'
    return entry.uri_json
