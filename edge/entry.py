"""The cache entry: what every tier stores, its wire format, and the checks that make it final.

An entry is written whole or not at all and verified on read: a magic, a JSON head (status,
the response headers worth replaying, ETag, times, purge epoch, tags, the full key) and the
body with its length and CRC-32. A truncated or corrupted record reads as a miss.
Response headers are prepared at store time, so a hit is one lookup and one send.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import time
import zlib
from dataclasses import dataclass, field

from .protocol import JSON_TYPES

_TEXT_TYPES = JSON_TYPES + ("text/html",)  # the webclient's panels are HTML (docs/browse.md)

# The record's format version, in its first bytes: bump it whenever the layout or the meaning of a field
# changes. A record of another version (an older or newer edge sharing the disk or Redis tier, across an
# upgrade or a rollback) reads as a miss and is replaced by the next fill: never an error, never its bytes.
FORMAT_VERSION = 1
MAGIC = b"OE%d\n" % FORMAT_VERSION
_ANY_MAGIC = re.compile(rb"OE(\d{1,4})\n")

# Headers from the backend worth replaying. Never Set-Cookie, never Vary (Django's Vary: Cookie).
KEPT_HEADERS = frozenset({b"content-type", b"content-disposition", b"x-omero-apiversion", b"content-language"})

_MAGIC_NUMBERS = {
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/tiff": (b"II*\x00", b"MM\x00*"),
    "image/gif": (b"GIF87a", b"GIF89a"),
}


# How a complete file of the type ends (JPEG's EOI marker, PNG's IEND chunk).
_END_MARKERS = {"image/jpeg": b"\xff\xd9", "image/png": b"IEND\xaeB`\x82"}


class CorruptEntry(ValueError):
    """A stored record that fails its checks: treat as a miss and remove it."""

    level = logging.WARNING  # how the tiers log its removal
    what = "corrupt"


class OtherVersion(CorruptEntry):
    """A record of another FORMAT_VERSION, or a value no version writes (pickled): expected after an upgrade
    or a rollback, so logged quietly."""

    level = logging.INFO
    what = "other-format"


def body_matches_type(content_type: str, body: bytes) -> bool:
    """False for OMERO's placeholders: a PNG (missing image, thumbnail in progress) labelled image/jpeg."""
    media = content_type.split(";", 1)[0].strip().lower()
    magics = _MAGIC_NUMBERS.get(media)
    if magics is not None:
        # The last bytes too: a body that ended with its connection mid-image (no length to tell) is cut.
        return body.startswith(magics) and body.endswith(_END_MARKERS.get(media, b""))
    if media in JSON_TYPES:
        return True
    return media != ""


def strong_etag(body: bytes) -> str:
    return '"' + base64.urlsafe_b64encode(hashlib.blake2b(body, digest_size=12).digest()).decode() + '"'


@dataclass(slots=True)
class Entry:
    key: str
    status: int
    headers: list[tuple[bytes, bytes]]  # replayed as they are (content-type, etag, length …)
    body: bytes
    etag: str
    stored: float  # wall-clock time the fill started
    fresh_until: float
    stale_until: float  # last moment it may be served stale (max of the SWR and SIE windows)
    epoch: int = 0  # purge epoch when the fill started (see purge.py)
    tags: tuple[str, ...] = ()  # objects the bytes concern: "image:12", "plate:3" …
    public: bool = True
    stored_ok: bool = False  # set when the entry went to the tiers (not part of the record)
    size: int = field(init=False)
    compressible: bool = field(init=False)  # JSON or HTML worth gzipping for clients that accept it
    gzipped: bytes | None = None  # text bodies compressed once, on the first client that accepts gzip
    prepared: tuple | None = None  # (second, tier, public, headers) of the last hit answer, reused within a second
    uri_json: str | None = None  # '"data:<type>;base64,…"', as a get_thumbnails value, made once

    def __post_init__(self) -> None:
        self.size = len(self.body) + 256
        self.compressible = len(self.body) > 1024 and self.content_type().startswith(_TEXT_TYPES)

    @classmethod
    def build(cls, key: str, status: int, content_type: str, body: bytes, *, ttl: float, stale: float,
              epoch: int, tags: tuple[str, ...], public: bool, extra: list[tuple[bytes, bytes]] = (),
              now: float | None = None, etag: str | None = None) -> Entry:
        now = time.time() if now is None else now
        etag = etag or strong_etag(body)
        headers = [(b"content-type", content_type.encode("latin-1")), (b"etag", etag.encode()),
                   (b"content-length", str(len(body)).encode()), *extra]
        return cls(key, status, headers, body, etag, now, now + ttl, now + ttl + stale, epoch, tags, public)

    def content_type(self) -> str:
        return next((v.decode("latin-1") for k, v in self.headers if k == b"content-type"), "")

    def is_fresh(self, now: float) -> bool:
        return now < self.fresh_until

    def max_age(self, now: float) -> int:
        return max(0, int(self.fresh_until - now))

    # --- wire format ---------------------------------------------------------------------------
    def dumps(self) -> bytes:
        head = {
            "k": self.key, "s": self.status, "h": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in self.headers],
            "e": self.etag, "t": [self.stored, self.fresh_until, self.stale_until], "p": self.epoch,
            "g": list(self.tags), "u": self.public, "n": len(self.body), "c": zlib.crc32(self.body),
        }
        raw = json.dumps(head, separators=(",", ":")).encode()
        return MAGIC + len(raw).to_bytes(4, "big") + raw + self.body

    @classmethod
    def loads(cls, data: bytes, key: str | None = None) -> Entry:
        """Parse and verify; raises CorruptEntry for anything short, altered or for another key."""
        if not isinstance(data, bytes):
            raise OtherVersion(f"not an entry record ({type(data).__name__})")
        if not data.startswith(MAGIC):
            other = _ANY_MAGIC.match(data)
            if other:
                raise OtherVersion(f"format version {other[1].decode()}, this edge reads {FORMAT_VERSION}")
            raise CorruptEntry("bad magic")
        try:
            start = len(MAGIC) + 4
            n = int.from_bytes(data[len(MAGIC):start], "big")
            head = json.loads(data[start:start + n])
            body = data[start + n:]
            if len(body) != head["n"] or zlib.crc32(body) != head["c"]:
                raise CorruptEntry("body length or checksum mismatch")
            if key is not None and head["k"] != key:
                raise CorruptEntry("key mismatch")
            stored, fresh, stale = head["t"]
            return cls(head["k"], head["s"], [(k.encode("latin-1"), v.encode("latin-1")) for k, v in head["h"]],
                       body, head["e"], stored, fresh, stale, head["p"], tuple(head["g"]), head["u"])
        except CorruptEntry:
            raise
        except (ValueError, KeyError, TypeError, IndexError, UnicodeError) as exc:
            raise CorruptEntry(str(exc)) from None
