"""`--direct`: fill the shared Redis tier (L2) without an edge in the loop.

For sites where routing millions of warm requests through a serving edge is unwelcome: the warmer
fetches from OMERO.web itself and writes Redis with the edge's own code, so every edge node finds
the entries on its next lookup. Keys come from `edge.keys`; entries are built and vetted by the
edge's entry policy (`edge.policy`) (TTLs, tags, placeholder checks) with the
edge's settings (`--config` or EDGE_* variables); the purge epoch comes from the edge's purge
registry in the same Redis, so a purge issued during the run still wins.
"""
from __future__ import annotations

import json
import time
from urllib.parse import urlsplit

from edge.cluster import redis_tier
from edge.entry import Entry
from edge.identity import Requester
from edge.keys import PUBLIC, digest, thumbnail_key
from edge.policy import EntryPolicy
from edge.purge import PurgeRegistry
from edge.request import Request, request_for
from edge.routes import Kind
from edge.settings import Settings, safe_url

from .http1 import Http1Pool, HttpError, Response
from .model import FAIL, OK, SKIP, Fatal, Item, Outcome, Retryable

_PUBLIC = Requester(PUBLIC)


class DirectTarget:
    def __init__(self, settings: Settings, redis_url: str, backend: str, *, jobs: int, host: str,
                 refresh_before: float = 0.0, timeout: float = 120.0) -> None:
        self.settings = settings
        self.policy = EntryPolicy(settings)
        self.redis = redis_tier(redis_url, settings.redis_max_body, settings.redis_timeout, settings.redis_cluster)
        self.registry = PurgeRegistry(None, redis_url, settings.redis_prefix, cluster=settings.redis_cluster)
        self.host = host
        self.refresh_before = refresh_before
        self.backend = backend.rstrip("/")
        self.http = Http1Pool(self.backend, {"host": host}, size=jobs + 2, timeout=timeout)

    async def check(self) -> None:
        if not await self.redis.ping():
            raise Fatal(f"cannot reach Redis at {safe_url(self.redis.url)}: {self.redis.last_error}")
        try:
            await self.http.get("/api/v0/")
        except HttpError as exc:
            raise Fatal(f"cannot reach the backend at {self.backend}: {exc}") from None
        await self.registry.start()

    def _usable(self, entry: Entry | None) -> bool:
        return (entry is not None and entry.is_fresh(time.time()) and entry.stored >= self.refresh_before
                and self.registry.valid(entry.tags, entry.epoch))


    async def _fetch(self, url: str) -> Response:
        try:
            resp = await self.http.get(url)
        except HttpError as exc:
            raise Retryable(0, f"backend: {exc}") from None
        if resp.status >= 500 or resp.status == 429:
            raise Retryable(resp.status, f"backend answered {resp.status}")
        return resp

    async def _store(self, d: str, entry: Entry) -> None:
        if not await self.redis.set_many([(d, entry)]):
            raise Retryable(0, f"Redis write failed: {self.redis.last_error}")

    async def warm(self, item: Item) -> Outcome:
        req = request_for(self.settings, item.url, _PUBLIC, self.host)
        if req is None:
            return Outcome(FAIL, 0, "the edge does not cache this URL")
        if req.route.kind is Kind.BATCH:
            return await self._batch(req, item)
        key = req.key
        d = digest(key)
        if self._usable(await self.redis.get(d, key)):
            return Outcome(SKIP, 200)
        epoch, started = self.registry.epoch(), time.time()
        resp = await self._fetch(item.url)
        content_type = resp.headers.get("content-type", "")
        version = resp.headers.get("x-omero-apiversion")
        extra = [(b"x-omero-apiversion", version.encode())] if version else []
        entry = self.policy.entry(req, resp.status, content_type, resp.body, epoch=epoch, started=started, extra=extra)
        if resp.status != 200:
            return Outcome(FAIL, resp.status, f"backend answered {resp.status}")
        if not self.policy.storable(req.route, entry, content_type):
            return Outcome(FAIL, 200, "answered but not storable (a placeholder?)")
        if len(entry.body) > self.settings.redis_max_body:
            return Outcome(FAIL, 200, f"{len(entry.body)} bytes: larger than the Redis tier's redis_max_body")
        await self._store(d, entry)
        return Outcome(OK, 200, "", len(entry.body), 1)

    async def _batch(self, req: Request, item: Item) -> Outcome:
        """Like the edge: look the per-image entries up in one MGET, fetch only the missing ids, store each."""
        size = int(req.groups.get("w", self.settings.thumb_default_size))
        keys = [thumbnail_key(req.route, i, size, audience=PUBLIC, default_size=self.settings.thumb_default_size)
                for i in item.ids]
        pairs = [(digest(k), k) for k in keys]
        found = await self.redis.get_many(pairs)
        missing = [(i, d, k) for i, (d, k), e in zip(item.ids, pairs, found) if not self._usable(e)]
        if not missing:
            return Outcome(SKIP, 200)
        epoch, started = self.registry.epoch(), time.time()
        resp = await self._fetch(urlsplit(item.url).path + "?" + "&".join(f"id={i}" for i, _, _ in missing))
        if resp.status != 200:
            return Outcome(FAIL, resp.status, f"backend answered {resp.status}")
        try:
            data = json.loads(resp.body)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise Retryable(200, "backend sent an invalid batch")
        stored = 0
        for image_id, d, key in missing:
            entry = self.policy.thumbnail(key, image_id, data.get(str(image_id)), public=True, epoch=epoch,
                                          started=started)
            if entry is not None:
                await self._store(d, entry)
                stored += len(entry.body)
        return Outcome(OK, 200, "", stored, len(missing))

    async def close(self) -> None:
        await self.http.close()
        await self.redis.close()
        await self.registry.close()

