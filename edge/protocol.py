"""Wire conventions shared by the edge, the warmer and the benchmarks, defined once.

- JSON media types OMERO.web answers with (plain JSON, and JSONP's JavaScript).
- The `get_thumbnails` batch limit and OMERO's answer past it (`gw/views.py:1691-1693`,
  `omero.web.thumbnails_batch`, `omeroweb/settings.py:978-986`).
- Warm mode: the request headers that turn it on and the small JSON answer the edge gives
  instead of the body, so a warmer learns whether an entry was already cached.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

JSON_TYPES = ("application/json", "text/javascript", "application/javascript")
DEFAULT_THUMBNAILS_BATCH = 50


def batch_too_big(limit: int) -> bytes:
    """OMERO.web's body for a batch over the limit (answered as 500)."""
    return f"Max {limit} thumbnails at a time.".encode()


WARM_HEADER = "x-edge-warm"  # value: the edge's warm_token
WARM_REFRESH_HEADER = "x-edge-warm-refresh-before"  # value: unix time; entries stored before it are refetched


@dataclass
class WarmAnswer:
    """What a warm-mode request is answered with (as JSON): the cache status, not the body."""

    cache: str  # HIT | MISS | STALE
    status: int  # the backend's (or the entry's) status
    stored: bool  # the cache holds the answer now
    tier: str = ""
    bytes: int = 0
    stored_at: float = 0.0
    ids: int | None = None  # batches: how many ids were asked
    missing: int | None = None  # batches: how many had to be fetched

    def encode(self) -> bytes:
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None}).encode()

    @classmethod
    def decode(cls, body: bytes) -> WarmAnswer:
        """Raises ValueError when the body is not a warm answer (warm mode is off at the edge)."""
        try:
            data = json.loads(body)
            return cls(cache=str(data["cache"]), status=int(data["status"]), stored=bool(data.get("stored")),
                       tier=str(data.get("tier", "")), bytes=int(data.get("bytes", 0)),
                       stored_at=float(data.get("stored_at", 0.0)), ids=data.get("ids"), missing=data.get("missing"))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"not a warm answer: {exc}") from None
