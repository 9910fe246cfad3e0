"""The names a request's outcome is reported by (`X-Edge-Cache`, metrics labels), as enums."""
from __future__ import annotations

from enum import Enum


class CacheStatus(str, Enum):
    HIT = "HIT"
    MISS = "MISS"
    STALE = "STALE"
    BYPASS = "BYPASS"


class Bypass(str, Enum):
    """Why a request was proxied without the cache (the `reason` label of edge_bypass_total)."""

    METHOD = "method"  # not GET or HEAD
    UNCACHEABLE = "uncacheable"  # no route
    BAD_QUERY = "bad-query"  # not valid UTF-8
    CREDENTIALS = "credentials"  # bsession / username / password in the query
    SESSION_KEY = "session-key"  # X-OMERO-Session-Key or Authorization
    SESSION = "session"  # a session cookie, and no session store to tell users from the public user
    UNKNOWN_SESSION = "unknown-session"  # unknown, expired or tampered session
    USER = "user"  # a logged-in user, in public-only mode
    COOKIES = "cookies"  # several Cookie lines over HTTP/1.1: ambiguous, the backend decides
    BATCH_IDS = "batch-ids"  # a get_thumbnails batch without valid ids
