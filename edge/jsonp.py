"""JSONP, as OMERO.web's `@jsonp` views answer it (gw/views.py:1426-1456, omeroweb/httprsp.py:25-27).

The cache stores the bare JSON; a request with `callback=NAME` gets `NAME(<the JSON>)` as
`application/javascript`, built per request (jQuery makes a new NAME for every request). NAME
must match OMERO's VALID_JS_VARIABLE (gw/views.py:109), else the answer is `400 Invalid callback`
(Django's HttpResponseBadRequest) — checked, like OMERO, only when the view answered JSON: an
error answer goes out unwrapped and unchecked. Django reads the last of repeated parameters.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import replace

from .entry import Entry
from .keys import Params
from .protocol import JSON_TYPES
from .routes import JSONP_CALLBACK, Route

VALID_CALLBACK = re.compile(r"^[a-zA-Z_$][0-9a-zA-Z_$]*$")  # VALID_JS_VARIABLE, gw/views.py:109


def callback_of(route: Route, params: Params) -> str | None:
    """The callback NAME a request asks for (the last one, as Django's QueryDict.get), or None."""
    if not route.jsonp:
        return None
    return next((value for name, value in reversed(params) if name == JSONP_CALLBACK), None)


def upstream_query(raw: bytes) -> bytes:
    """The query a fill sends: without `callback`, so the backend answers the JSON the cache stores."""
    return b"&".join(part for part in raw.split(b"&") if part and part.split(b"=", 1)[0] != b"callback")


def wraps(entry: Entry) -> bool:
    """Only a view's JSON answer is wrapped; errors (and non-JSON answers) go out as they are."""
    return entry.status == 200 and entry.content_type().startswith(JSON_TYPES)


def wrapped(entry: Entry, name: str) -> Entry:
    """`entry` as `name(<json>)`: a per-request answer, never stored. Its ETag differs from the bare
    form's and per name, so a 304 never hands a browser a body with another callback in it."""
    if not VALID_CALLBACK.match(name):
        return INVALID
    body = b"%s(%s)" % (name.encode(), entry.body)
    tag = hashlib.blake2b(name.encode(), digest_size=6).hexdigest()
    etag = f'{entry.etag[:-1]}-j{tag}"'
    headers = [(b"content-type", b"application/javascript"), (b"etag", etag.encode()),
               (b"content-length", str(len(body)).encode())]
    headers += [h for h in entry.headers if h[0] not in (b"content-type", b"etag", b"content-length")]
    out = replace(entry, headers=headers, body=body, etag=etag, gzipped=None, prepared=None, uri_json=None)
    out.compressible = False  # a new body per request: compressing it would cost CPU on every answer
    return out


INVALID = Entry.build("", 400, "text/html; charset=utf-8", b"Invalid callback", ttl=0, stale=0, epoch=0, tags=(),
                      public=False)
