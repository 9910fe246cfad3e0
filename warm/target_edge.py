"""Warming through the edge's warm mode: every node's keys and tiers are filled exactly as a client's
request would fill them, and the answer says whether the entry was already there.

A request carries `X-Edge-Warm: <token>` (and `X-Edge-Warm-Refresh-Before` for `--refresh`); the edge
answers `{"cache": HIT|MISS, "status", "stored", …}` instead of the body. HIT → Skip (the backend was
not asked); MISS and stored → OK; 5xx/429/timeouts → retried; other statuses, or a 200 that was not
stored (a placeholder), → Fail, so the journal never claims an entry the cache does not hold.
"""
from __future__ import annotations

from edge.protocol import WARM_HEADER, WARM_REFRESH_HEADER, WarmAnswer

from .http1 import Http1Pool, HttpError
from .model import FAIL, OK, SKIP, THUMB, Fatal, Item, Outcome, Retryable

WARM_MODE_OFF = ("the edge answered without warm mode: --token (or EDGE_WARM_TOKEN) must equal the edge's "
                 "warm_token setting")


class EdgeTarget:
    def __init__(self, base: str, token: str, *, jobs: int, host: str | None = None, refresh_before: float = 0.0,
                 timeout: float = 120.0) -> None:
        headers = {WARM_HEADER: token}
        if refresh_before:
            headers[WARM_REFRESH_HEADER] = repr(refresh_before)
        if host:
            headers["host"] = host
        self.base = base.rstrip("/")
        self.http = Http1Pool(self.base, headers, size=jobs + 2, timeout=timeout)

    async def check(self) -> None:
        """Fail fast with a clear message when the edge is not there."""
        try:
            resp = await self.http.get("/_edge/health")
        except HttpError as exc:
            raise Fatal(f"cannot reach the edge at {self.base}: {exc}") from None
        if resp.status >= 400:
            raise Fatal(f"{self.base}/_edge/health answered {resp.status}: is this an omero-edge?")

    async def warm(self, item: Item) -> Outcome:
        try:
            resp = await self.http.get(item.url)
        except HttpError as exc:
            raise Retryable(0, str(exc)) from None
        if resp.status >= 500 or resp.status == 429:
            raise Retryable(resp.status, resp.text.strip()[:200] or f"HTTP {resp.status}")
        if resp.headers.get("x-edge-cache") == "BYPASS":
            return Outcome(FAIL, resp.status, "the edge does not cache this URL")
        if not resp.headers.get("content-type", "").startswith("application/json"):
            raise Fatal(WARM_MODE_OFF)
        try:
            answer = WarmAnswer.decode(resp.body)
        except ValueError:
            raise Fatal(WARM_MODE_OFF) from None
        status, cache, size = answer.status, answer.cache, answer.bytes
        if cache == "HIT":
            return Outcome(SKIP, status, "", size)
        if cache == "STALE" or status >= 500 or status == 429:
            raise Retryable(status, f"backend answered {status}" if status >= 400 else "served stale: backend failing")
        if status != 200:
            return Outcome(FAIL, status, f"backend answered {status}")
        if item.kind != THUMB and not answer.stored:
            return Outcome(FAIL, status, "answered but not stored (a placeholder, or too large for a tier)")
        fetched = (answer.missing if answer.missing is not None else 1) if item.kind == THUMB else 1
        return Outcome(OK, status, "", size, fetched)

    async def close(self) -> None:
        await self.http.close()
