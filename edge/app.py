"""The edge as an ASGI app: `edge.app:app` (configured from EDGE_* / EDGE_CONFIG) or `create_app(settings)`.

The request path is a bare ASGI callable, so a hit is one route lookup, one tier lookup and one
send with headers prepared at store time. Only `/_edge/*` goes through Starlette.
"""
from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from .access import AccessChecker
from .admin import admin_app
from .coalesce import COALESCED_ROUTES, ThumbnailCoalescer
from .entry import Entry, body_matches_type
from .flight import FillTimeout, Flights
from .identity import Identity, Requester, SessionResolver
from .keys import PUBLIC, BadQuery, digest, has_credentials, key_text, parse_query, thumbnail_key
from .locks import DiskLock, RedisLock
from .metrics import Metrics
from .public_session import PublicSession
from .purge import PurgeRegistry
from .routes import Kind, Route, Upstream, match
from .settings import Settings
from .tiers import DiskTier, MemoryTier, RedisTier
from .upstream import HOP_BY_HOP, Upstream as UpstreamPool, UpstreamError

log = logging.getLogger("edge")
Send = Callable[[dict], Awaitable[None]]
Receive = Callable[[], Awaitable[dict]]

MAX_BATCH = 50  # omero.web.thumbnails_batch
BATCH_TOO_BIG = b"Max 50 thumbnails at a time."
_DATA_URI = re.compile(r"^data:(image/[a-z]+);base64,(.*)$", re.S)
_JSON_TYPES = ("application/json", "text/javascript", "application/javascript")


class Edge:
    def __init__(self, settings: Settings | None) -> None:
        self.settings = settings  # None: read EDGE_* / EDGE_CONFIG at start-up (`edge.app:app`)
        self.metrics = Metrics()
        self.admin = admin_app(self)
        self.started = False

    # --- lifecycle --------------------------------------------------------------------------------
    async def startup(self) -> None:
        if self.settings is None:
            self.settings = Settings.load()
        s = self.settings
        self.memory = MemoryTier(s.memory_size) if s.memory_size else None
        self.disk = None
        if s.cache_dir:
            try:
                self.disk = DiskTier(s.cache_dir, s.disk_size)
            except Exception as exc:  # noqa: BLE001 - a full or broken directory must not stop the edge
                log.warning("disk tier %s unavailable at start-up, running without L1: %s", s.cache_dir, exc)
        self.redis = RedisTier(s.redis_url, s.redis_max_body) if s.redis_url else None
        if self.redis is not None and not await self.redis.ping():
            log.warning("Redis tier %s is not reachable at start-up; running without it until it is",
                        _safe_url(s.redis_url))
        try:
            self.registry = PurgeRegistry(s.cache_dir or None, s.redis_url)
        except OSError as exc:
            log.warning("purge log in %s unavailable at start-up, purges stay in this process: %s", s.cache_dir, exc)
            self.registry = PurgeRegistry(None, s.redis_url)
        await self.registry.start()
        self.upstreams = {Upstream.WEB: UpstreamPool("omero-web", s.backend, s)}
        self.upstreams[Upstream.MS] = UpstreamPool("omero-ms", s.ms, s) if s.ms else self.upstreams[Upstream.WEB]
        owner = f"{id(self)}"
        # A single worker needs no cross-process lock on its own directory (two SQLite writes per miss).
        shared = RedisLock(self.redis, owner) if self.redis else \
            DiskLock(self.disk, owner) if self.disk and s.workers > 1 else None
        self.flights = Flights(shared, s.fill_timeout)
        resolver = SessionResolver(s.session_redis_url, memo_ttl=min(5.0, s.access_ttl)) \
            if s.session_redis_url else None
        self.identity = Identity(s.session_cookie, resolver, per_user=s.access == "verified")
        self.access = AccessChecker(self.upstreams[Upstream.WEB], s, self.metrics)
        self.coalescer = ThumbnailCoalescer(self, s.coalesce_window_ms) if s.coalesce_window_ms > 0 else None
        self.public_session = PublicSession(self.upstreams[Upstream.WEB], s.session_cookie, s.public_session_path)
        self._background: set[asyncio.Task] = set()
        self._hot: dict[tuple, tuple[str, str]] = {}
        self._thumb_memo: dict[tuple, tuple[str, str]] = {}  # batch members' (key, digest)  # (path, query, host) of anonymous GETs → (key, digest)
        self.started = True

    async def shutdown(self) -> None:
        for task in list(self._background):
            task.cancel()
        for pool in {id(p): p for p in self.upstreams.values()}.values():
            await pool.close()
        await self.registry.close()
        if self.redis is not None:
            await self.redis.close()
        if self.identity.resolver is not None:
            await self.identity.resolver.close()
        if self.disk is not None:
            self.disk.close()

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            if scope["path"].startswith("/_edge/"):
                await self.admin(scope, receive, send)
            else:
                await self.handle(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:  # noqa: BLE001 - reported to the server, which exits
                    await send({"type": "lifespan.startup.failed", "message": f"edge: error: {exc}"})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # --- the request path ----------------------------------------------------------------------
    async def handle(self, scope: dict, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if method != "GET" and method != "HEAD":
            return await self.passthrough(scope, receive, send, "method")
        path = scope["path"]
        headers = dict(scope["headers"])
        anonymous = not (_IDENTITY_HEADERS & headers.keys())
        if anonymous:
            # The hot path: a URL seen before, answered from memory with no parsing and no key building.
            hot = self._hot.get((path, scope["query_string"], headers.get(b"host")))
            if hot is not None and self.memory is not None:
                entry = self.memory.get(hot[1])
                if entry is not None and entry.key == hot[0] and entry.public and entry.fresh_until > time.time():
                    self.registry.refresh()
                    if self.registry.valid(entry.tags, entry.epoch):
                        self.metrics.hot.hits["memory"] += 1
                        return await self.send_entry(scope, headers, send, entry,
                                                     self.response_headers(entry, "HIT", "memory", True))
        found = match(path)
        if found is None:
            return await self.passthrough(scope, receive, send, "uncacheable")
        route, groups = found
        try:
            params = parse_query(scope["query_string"])
        except BadQuery:
            return await self.passthrough(scope, receive, send, "bad-query")
        if has_credentials(params):
            return await self.passthrough(scope, receive, send, "credentials")
        requester = await self.identity.requester(headers)
        if requester.audience is None:
            return await self.passthrough(scope, receive, send, requester.reason)
        host = self.settings.public_base_url or headers.get(b"host", b"-").decode("latin-1")
        req = Request(scope, route, groups, params, requester, headers, host)
        if route.kind is Kind.BATCH:
            return await self.batch(req, send)
        key = key_text(route, path, groups, params, audience=requester.audience, host=host,
                       default_size=self.settings.thumb_default_size)
        if anonymous:
            if len(self._hot) >= _HOT_SIZE:
                self._hot.clear()
            self._hot[(path, scope["query_string"], headers.get(b"host"))] = (key, digest(key))
        await self.cached(req, key, send)

    async def cached(self, req: Request, key: str, send: Send) -> None:
        d = digest(key)
        warm = self._warm_mode(req.headers)
        refresh_before = warm[1] if warm else 0.0
        entry, tier = await self.lookup(d, key)
        if entry is not None and (entry.stored < refresh_before
                                  or entry.status != 200 and req.requester.audience != PUBLIC):
            entry = None  # negative entries are the public's answer only (see storable)
        now = time.time()
        if entry is not None and not await self.access.allowed(req.requester, entry, req.objects()):
            # Not readable by this requester: answered exactly as a miss would be (same credentials, same
            # status, same X-Edge-Cache), so the answer never tells whether someone else cached the URL,
            # and never stored (it must not replace the reader's entry under a shared key).
            self.metrics.misses.inc()
            try:
                fresh = await self.fill(req, key, d, store=False)
            except UpstreamError as exc:
                return await self.respond_error(req, send, exc)
            return await (self.warm_answer(send, "MISS", fresh, "") if warm else self.respond(req, send, fresh, "MISS", ""))
        if entry is not None and entry.is_fresh(now):
            self.metrics.hot.hits[tier] += 1
            return await (self.warm_answer(send, "HIT", entry, tier) if warm else self.respond(req, send, entry, "HIT", tier))
        # Warm mode never answers stale: it fills, so the warmer learns whether the entry is fresh now.
        if (entry is not None and not warm and now < entry.stale_until
                and now < entry.fresh_until + self.settings.stale_while_revalidate):
            self.metrics.stale.inc()
            self._refresh_in_background(req, key, d)
            return await self.respond(req, send, entry, "STALE", tier)
        self.metrics.misses.inc()
        try:
            fresh, coalesced = await self.flights.run(d, key, self._filler(req, key, d))
        except (UpstreamError, FillTimeout) as exc:
            if entry is not None and now < entry.stale_until and not warm:
                self.metrics.stale.inc()
                return await self.respond(req, send, entry, "STALE", tier)
            return await self.respond_error(req, send, exc)
        if coalesced:
            self.metrics.coalesced.inc()
        if fresh.status >= 500 and entry is not None and now < entry.stale_until and not warm:
            self.metrics.stale.inc()
            return await self.respond(req, send, entry, "STALE", tier)
        if warm:
            return await self.warm_answer(send, "MISS", fresh, "")
        await self.respond(req, send, fresh, "MISS", "")

    async def lookup(self, d: str, key: str) -> tuple[Entry | None, str]:
        """L0 → L1 → L2, copying a hit up; an entry invalidated by a purge is a miss."""
        self.registry.refresh()
        entry, tier = self._lookup_local(d, key)
        if entry is None and self.redis is not None:
            entry = await self.redis.get(d, key)
            if entry is not None and self.registry.valid(entry.tags, entry.epoch):
                self._copy_up([(d, entry)])
                return entry, "redis"
            return None, ""
        return entry, tier

    def _copy_up(self, items: list[tuple[str, Entry]]) -> None:
        """A Redis hit goes to memory now and to disk in the background (the answer does not wait)."""
        if self.memory is not None:
            for d, entry in items:
                self.memory.set(d, entry)
        if self.disk is not None:
            self._spawn(asyncio.to_thread(self.disk.set_many, items))

    async def store(self, items: list[tuple[str, Entry]], *, wait: bool = True) -> None:
        """Write through every tier: memory at once, disk in a thread (one transaction), Redis pipelined.
        `wait=False` answers first and finishes disk and Redis in the background (batches, which no
        other process waits on through the shared tiers)."""
        if self.memory is not None:
            for d, entry in items:
                self.memory.set(d, entry)
        for _, entry in items:
            entry.stored_ok = True
        if wait:
            await self._store_shared(items)
        elif items:
            self._spawn(self._store_shared(items))

    async def _store_shared(self, items: list[tuple[str, Entry]]) -> None:
        if self.disk is not None:
            await asyncio.to_thread(self.disk.set_many, items)
        if self.redis is not None:
            await self.redis.set_many(items)

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _filler(self, req: Request, key: str, d: str) -> Callable[[], Awaitable[Entry]]:
        """How this miss is fetched: alone, or (a plain default-size thumbnail) in a coalesced batch."""
        alone = lambda: self.fill(req, key, d)  # noqa: E731
        # Batching only pays when requests would queue for the upstream anyway: with free slots, a
        # single render starts now and in parallel with its neighbours.
        if (self.coalescer is None or req.route.name not in COALESCED_ROUTES
                or not self.upstreams[req.route.upstream].limit.locked()
                or int(req.groups.get("w", self.settings.thumb_default_size)) != self.settings.thumb_default_size
                or any(name != "_" for name, _ in req.params)):
            return alone
        return lambda: self.coalescer.fill(req, int(req.groups["iid"]), key, d, alone)

    async def fill(self, req: Request, key: str, d: str, store: bool = True) -> Entry:
        """Fetch from the route's upstream and store what is safe and final (unless `store` is False)."""
        epoch = self.registry.epoch()
        started = time.time()
        qs = req.scope["query_string"]
        resp = await self.fetch(req, req.scope["path"] + ("?" + qs.decode("latin-1") if qs else ""))
        content_type = resp.headers.get("content-type", "")
        body = resp.content
        entry = self.make_entry(req, key, resp.status_code, content_type, body, epoch, started,
                                [(b"x-omero-apiversion", v.encode()) for v in resp.headers.get_list("x-omero-apiversion")])
        if store and self.storable(req.route, entry, content_type):
            await self.store([(d, entry)])
        return entry

    def make_entry(self, req: Request, key: str, status: int, content_type: str, body: bytes, epoch: int,
                   started: float, extra: list[tuple[bytes, bytes]] = ()) -> Entry:
        s = self.settings
        ttl = getattr(s, "ttl_" + req.route.ttl) if status == 200 else s.ttl_negative
        stale = max(s.stale_while_revalidate, s.stale_if_error) if status == 200 else 0
        tags = req.objects() + (_body_tags(body) if req.route.kind is Kind.JSON and status == 200 else ())
        return Entry.build(key, status, content_type, body, ttl=ttl, stale=stale, epoch=epoch, tags=tags,
                           public=req.requester.audience == PUBLIC, extra=list(extra), now=started)

    def storable(self, route: Route, entry: Entry, content_type: str) -> bool:
        if entry.status == 404:
            return bool(self.settings.ttl_negative) and entry.public
        if entry.status != 200 or not body_matches_type(content_type, entry.body):
            return False
        media = content_type.split(";")[0].strip()
        if route.kind is Kind.IMAGE:
            return media.startswith("image/")
        return media in _JSON_TYPES and b"ConcurrencyException" not in entry.body[:200]

    async def fetch(self, req: Request, path_qs: str):
        """A GET for the cache. The public audience is fetched with the edge's own public session,
        never with the requester's cookie; a user audience with the user's own cookie."""
        pool = self.upstreams[req.route.upstream]
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in req.scope["headers"]
                   if k.decode("latin-1") in _FORWARDED_FOR_CACHE]
        headers += _forwarded(req.scope, req.headers)
        public = req.requester.audience == PUBLIC
        if not public:
            headers += [("cookie", v.decode("latin-1")) for k, v in req.scope["headers"] if k == b"cookie"]
        elif pool is not self.upstreams[Upstream.WEB] and self.public_session.value is None:
            await self.public_session.renew(None)  # the microservice refuses requests without a session
        for attempt in (1, 2):
            session = self.public_session.value if public else None
            sent = headers + [self.public_session.header()] if session else headers
            resp = await self._timed(pool, path_qs, sent)
            if public:
                self.public_session.learn(resp)
                if resp.status_code == 403 and attempt == 1 and pool is not self.upstreams[Upstream.WEB]:
                    await self.public_session.renew(session)
                    continue
            return resp
        return resp

    async def _timed(self, pool: UpstreamPool, path_qs: str, headers: list[tuple[str, str]]):
        started = time.perf_counter()
        try:
            resp = await pool.request("GET", path_qs, headers)
        except UpstreamError:
            self.metrics.upstream_errors.labels(pool.name).inc()
            raise
        self.metrics.upstream_seconds.labels(pool.name).observe(time.perf_counter() - started)
        self.metrics.upstream_requests.labels(pool.name, str(resp.status_code)).inc()
        return resp

    def _refresh_in_background(self, req: Request, key: str, d: str) -> None:
        if self.flights.running(d):
            return

        async def refresh() -> None:
            try:
                await self.flights.run(d, key, lambda: self.fill(req, key, d))
            except (UpstreamError, FillTimeout) as exc:
                log.info("background refresh failed: %s", exc)

        self._spawn(refresh())

    # --- get_thumbnails: per-image entries ---------------------------------------------------------
    async def batch(self, req: Request, send: Send) -> None:
        ids: list[int] = []
        for name, value in req.params:
            if name == "id":
                if not (value.isascii() and value.isdigit()):  # "²".isdigit() is True, int("²") raises
                    return await self.passthrough(req.scope, None, send, "batch-ids")
                if int(value) not in ids:
                    ids.append(int(value))
        if not ids:
            return await self.passthrough(req.scope, None, send, "batch-ids")
        if len(ids) > MAX_BATCH:
            return await self.respond(req, send, Entry.build("", 500, "text/javascript", BATCH_TOO_BIG, ttl=0,
                                                             stale=0, epoch=0, tags=(), public=False), "BYPASS", "")
        s = self.settings
        size = int(req.groups.get("w", s.thumb_default_size))
        # One id takes the single-thumbnail path (z/t/rdefId honoured); several ids ignore them.
        extra = [(n, v) for n, v in req.params if n in ("z", "t", "rdefId")] if len(ids) == 1 else []
        keys, digests = self._thumb_keys(req, ids, size, extra)
        found: dict[int, Entry] = {}
        tier_used = set()
        self.registry.refresh()  # purges made by the node's other workers
        for image_id, d, key in zip(ids, digests, keys):
            entry, tier = self._lookup_local(d, key)
            if entry is not None:
                found[image_id] = entry
                tier_used.add(tier)
        missing = [(i, d, k) for i, d, k in zip(ids, digests, keys) if i not in found]
        if missing and self.redis is not None:
            remote = await self.redis.get_many([(d, k) for _, d, k in missing])
            copied = []
            for (image_id, d, _), entry in zip(missing, remote):
                if entry is not None and self.registry.valid(entry.tags, entry.epoch):
                    copied.append((d, entry))
                    found[image_id] = entry
                    tier_used.add("redis")
            if copied:
                self._copy_up(copied)
            missing = [m for m in missing if m[0] not in found]
        now = time.time()
        warm = self._warm_mode(req.headers)
        refresh_before = warm[1] if warm else 0.0
        fresh_found = {i: e for i, e in found.items() if e.is_fresh(now) and e.stored >= refresh_before}
        verdicts = await self.access.each_allowed(req.requester, [f"image:{i}" for i in fresh_found])
        for image_id, ok in zip(list(fresh_found), verdicts):
            if not ok:  # the backend decides for this requester: fetched with their own cookie
                del fresh_found[image_id]
        missing += [(i, digest(k), k) for i, k in zip(ids, keys) if i in found and i not in fresh_found]
        results: dict[int, str] = {i: _uri_json(e) for i, e in fresh_found.items()}
        status = "HIT"
        if missing:
            status = "MISS"
            try:
                results.update(await self._fill_batch(req, size, missing, extra))
            except UpstreamError as exc:
                stale = {i: e for i, e in found.items() if now < e.stale_until}
                if len(stale) + len(fresh_found) < len(ids):
                    return await self.respond_error(req, send, exc)
                results.update({i: _uri_json(e) for i, e in stale.items()})
                status = "STALE"
            except _BatchFailed as failed:
                return await self.respond(req, send, failed.entry, "MISS", "")
            self.metrics.misses.inc()
        else:
            for tier in tier_used:
                self.metrics.hot.hits[tier] += 1
        # OMERO's shape, {"<id>": "data:…" | null}, joined from each entry's ready-made value; the ETag
        # comes from the members' ETags (hashing the ~200 KB body again would cost more than the answer).
        body = ("{" + ", ".join(f'"{i}": {results.get(i, "null")}' for i in ids) + "}").encode()
        tag = hashlib.blake2b("".join(f"{i}{results.get(i, 'null')[-24:]}" for i in ids).encode(),
                              digest_size=12).hexdigest() if status == "HIT" else None
        entry = Entry.build("", 200, "application/json", body, ttl=0, stale=0, epoch=0, tags=(),
                            public=req.requester.audience == PUBLIC, now=now,
                            etag=f'"b{tag}-{len(body)}"' if tag else None)
        entry.compressible = False  # base64 JPEG gains ~25% from gzip, for milliseconds of CPU per batch
        if warm:
            return await self.warm_answer(send, status, entry, ",".join(sorted(tier_used)),
                                          {"ids": len(ids), "missing": len(missing)})
        await self.respond(req, send, entry, status, ",".join(sorted(tier_used)) if status == "HIT" else "",
                           max_age=min((e.max_age(now) for e in fresh_found.values()), default=0))

    def _thumb_keys(self, req: Request, ids: list[int], size: int, extra: list[tuple[str, str]]
                    ) -> tuple[list[str], list[str]]:
        """Per-image keys and digests of a batch, remembered per (route, audience, size, id)."""
        memo = self._thumb_memo
        audience = req.requester.audience
        keys, digests = [], []
        for image_id in ids:
            ident = (req.route.name, audience, size, image_id)
            found = memo.get(ident) if not extra else None
            if found is None:
                key = thumbnail_key(req.route, image_id, size, audience=audience,
                                    default_size=self.settings.thumb_default_size, params=extra)
                found = (key, digest(key))
                if not extra:
                    if len(memo) >= _HOT_SIZE:
                        memo.clear()
                    memo[ident] = found
            keys.append(found[0])
            digests.append(found[1])
        return keys, digests

    def _lookup_local(self, d: str, key: str) -> tuple[Entry | None, str]:
        """L0 then L1 (a disk hit is copied to memory); purged entries are dropped on the way."""
        registry = self.registry
        if self.memory is not None:
            entry = self.memory.get(d)
            if entry is not None and entry.key == key:
                if registry.valid(entry.tags, entry.epoch):
                    return entry, "memory"
                self.memory.delete(d)
        if self.disk is not None:
            entry = self.disk.get(d, key)
            if entry is not None:
                if registry.valid(entry.tags, entry.epoch):
                    if self.memory is not None:
                        self.memory.set(d, entry)
                    return entry, "disk"
                self.disk.delete(d)
        return None, ""

    async def _fill_batch(self, req: Request, size: int, missing: list[tuple[int, str, str]],
                          extra: list[tuple[str, str]]) -> dict[int, str]:
        """Fetch only the missing ids as one smaller batch; ids already being fetched join that flight.
        Values come back as JSON literals, ready for the batch answer."""
        out: dict[int, str] = {}
        waits = [(i, self.flights._local[d]) for i, d, _ in missing if d in self.flights._local]
        to_fetch = [(i, d, k) for i, d, k in missing if d not in self.flights._local]
        futures: dict[str, asyncio.Future] = {}
        loop = asyncio.get_running_loop()
        for _, d, _ in to_fetch:
            futures[d] = self.flights._local[d] = loop.create_future()
        try:
            if to_fetch:
                epoch = self.registry.epoch()
                started = time.time()
                query = "&".join([f"id={i}" for i, _, _ in to_fetch] +
                                 [f"{quote(n, safe='')}={quote(v, safe='')}" for n, v in extra])
                path = req.scope["path"]
                resp = await self.fetch(req, f"{path}?{query}")
                if resp.status_code != 200:
                    failed = self.make_entry(req, "", resp.status_code, resp.headers.get("content-type", ""),
                                             resp.content, epoch, started)
                    raise _BatchFailed(failed)
                try:
                    data = resp.json()
                except ValueError:
                    raise UpstreamError(self.upstreams[req.route.upstream].name, 502, "sent an invalid batch")
                entries = []
                for image_id, d, key in to_fetch:
                    value = data.get(str(image_id)) if isinstance(data, dict) else None
                    out[image_id] = json.dumps(value)
                    entry = self._thumb_entry(req, key, image_id, value, epoch, started)
                    if entry is not None:
                        entries.append((d, entry))
                    futures[d].set_result(entry)
                await self.store(entries, wait=False)
        except BaseException as exc:
            for future in futures.values():
                if not future.done():
                    future.set_exception(exc)
                    future.exception()
            raise
        finally:
            for d in futures:
                self.flights._local.pop(d, None)
        for image_id, future in waits:
            try:
                entry = await asyncio.shield(future)
            except Exception:  # noqa: BLE001 - the other request's failure: this id stays null
                entry = None
            out[image_id] = _uri_json(entry) if isinstance(entry, Entry) and entry.status == 200 else "null"
        return out

    def _thumb_entry(self, req: Request, key: str, image_id: int, value, epoch: int, started: float) -> Entry | None:
        """A batch value as the thumbnail entry `render_thumbnail` would have stored; None if not final."""
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
            return None  # a placeholder (PNG labelled JPEG): pass it on, never store it
        s = self.settings
        return Entry.build(key, 200, content_type, body, ttl=s.ttl_thumbnail,
                           stale=max(s.stale_while_revalidate, s.stale_if_error), epoch=epoch,
                           tags=(f"image:{image_id}",), public=req.requester.audience == PUBLIC, now=started)

    # --- answers -------------------------------------------------------------------------------------
    async def respond(self, req: Request, send: Send, entry: Entry, status: str, tier: str,
                      max_age: int | None = None) -> None:
        public_view = entry.public and req.requester.audience == PUBLIC
        await self.send_entry(req.scope, req.headers, send, entry,
                              self.response_headers(entry, status, tier, public_view, max_age))

    def response_headers(self, entry: Entry, status: str, tier: str, public_view: bool,
                         max_age: int | None = None) -> list[tuple[bytes, bytes]]:
        """The entry's stored headers plus Cache-Control and X-Edge-*; for hits, built once a second."""
        now = time.time()
        memoise = status == "HIT" and max_age is None
        if memoise:
            memo = entry.prepared
            if memo is not None and memo[0] == int(now) and memo[1] == tier and memo[2] == public_view:
                return memo[3]
        headers = list(entry.headers)
        if entry.status == 200 and (status != "MISS" or entry.stored_ok or max_age is not None):
            age = entry.max_age(now) if max_age is None else max_age
            headers.append((b"cache-control", f"{'public' if public_view else 'private'}, max-age={age}".encode()))
        else:
            headers.append((b"cache-control", b"no-cache"))  # not final (placeholder, error): always ask again
        headers += [(b"x-edge-cache", status.encode()), (b"x-edge-tier", tier.encode())]
        if memoise:
            entry.prepared = (int(now), tier, public_view, headers)
        return headers

    async def send_entry(self, scope: dict, request_headers: dict[bytes, bytes], send: Send, entry: Entry,
                         headers: list[tuple[bytes, bytes]]) -> None:
        """304 on a matching If-None-Match, gzip for JSON when accepted, no body for HEAD."""
        inm = request_headers.get(b"if-none-match")
        if inm and entry.status == 200 and entry.etag.encode() in _etags(inm):
            headers = [h for h in headers if h[0] not in (b"content-length", b"content-type")]
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        body = entry.body
        if entry.compressible and b"gzip" in request_headers.get(b"accept-encoding", b""):
            if entry.gzipped is None:
                entry.gzipped = gzip.compress(body, compresslevel=5)
            body = entry.gzipped
            headers = [h for h in headers if h[0] != b"content-length"]
            headers += [(b"content-encoding", b"gzip"), (b"content-length", str(len(body)).encode()),
                        (b"vary", b"Accept-Encoding")]
        await send({"type": "http.response.start", "status": entry.status, "headers": headers})
        if scope["method"] == "HEAD":
            await send({"type": "http.response.body", "body": b""})
            return
        self.metrics.hot.bytes_served += len(body)
        await send({"type": "http.response.body", "body": body})

    async def respond_error(self, req: Request, send: Send, exc: Exception) -> None:
        if isinstance(exc, UpstreamError):
            status, body = exc.status, exc.body()
        else:
            status, body = 504, b"omero-edge: timed out waiting for another request's fill\n"
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(body)).encode()), (b"x-edge-cache", b"MISS"),
                                (b"x-edge-tier", b"")]})
        await send({"type": "http.response.body", "body": b"" if req.scope["method"] == "HEAD" else body})

    def _warm_mode(self, headers: dict[bytes, bytes]) -> tuple[bool, float] | None:
        """(True, refresh-before) when the request carries the warm token."""
        token = self.settings.warm_token
        if not token or headers.get(b"x-edge-warm", b"").decode("latin-1") != token:
            return None
        refresh = headers.get(b"x-edge-warm-refresh-before", b"")
        try:
            return True, float(refresh) if refresh else 0.0
        except ValueError:
            return True, 0.0

    async def warm_answer(self, send: Send, status: str, entry: Entry, tier: str, extra: dict | None = None) -> None:
        """Warm mode answers with the cache status, not the body."""
        body = json.dumps({"cache": status, "status": entry.status, "stored": entry.stored_ok or status == "HIT",
                           "tier": tier, "bytes": len(entry.body), "stored_at": entry.stored, **(extra or {})}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"x-edge-cache", status.encode())]})
        await send({"type": "http.response.body", "body": body})

    # --- everything else: proxied untouched ---------------------------------------------------------
    async def passthrough(self, scope: dict, receive: Receive | None, send: Send, reason: str) -> None:
        self.metrics.bypass.labels(reason).inc()
        found = match(scope["path"])
        pool = self.upstreams[found[0].upstream if found else Upstream.WEB]
        # The client's Host goes along (OMERO.web builds absolute links and redirects from it).
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]
                   if (k == b"host" or k.decode("latin-1") not in HOP_BY_HOP) and not k.startswith(b"x-forwarded-")]
        headers += _forwarded(scope, dict(scope["headers"]))
        # The request target exactly as received: ASGI's raw_path carries no query string.
        target = scope.get("raw_path") or quote(scope["path"]).encode()
        if scope["query_string"]:
            target += b"?" + scope["query_string"]
        content = _request_body(receive) if receive is not None and scope["method"] not in ("GET", "HEAD") else None
        try:
            resp = await pool.request(scope["method"], target.decode("latin-1"), headers, content, stream=True)
        except UpstreamError as exc:
            body = exc.body()
            await send({"type": "http.response.start", "status": exc.status,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                    (b"content-length", str(len(body)).encode()), (b"x-edge-cache", b"BYPASS")]})
            await send({"type": "http.response.body", "body": body})
            return
        try:
            out = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in resp.headers.multi_items()
                   if k not in HOP_BY_HOP]
            out.append((b"x-edge-cache", b"BYPASS"))
            await send({"type": "http.response.start", "status": resp.status_code, "headers": out})
            if scope["method"] == "HEAD":
                await send({"type": "http.response.body", "body": b""})
                return
            async for chunk in resp.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await resp.aclose()


class _BatchFailed(Exception):
    def __init__(self, entry: Entry) -> None:
        self.entry = entry


class Request:
    """What the cache path needs of one request."""

    __slots__ = ("scope", "route", "groups", "params", "requester", "headers", "host")

    def __init__(self, scope: dict, route: Route, groups: dict[str, str], params, requester: Requester,
                 headers: dict[bytes, bytes], host: str) -> None:
        self.scope, self.route, self.groups, self.params = scope, route, groups, params
        self.requester, self.headers, self.host = requester, headers, host

    def objects(self) -> tuple[str, ...]:
        return tuple(f"{kind}:{self.groups[group]}" for group, kind in self.route.objects if group in self.groups)


_IDENTITY_HEADERS = frozenset({b"cookie", b"authorization", b"x-omero-session-key", b"x-edge-warm"})
_HOT_SIZE = 200_000
_FORWARDED_FOR_CACHE = frozenset({"accept", "x-requested-with", "user-agent", "host"})


def _forwarded(scope: dict, headers: dict[bytes, bytes]) -> list[tuple[str, str]]:
    """X-Forwarded-*: extend what a proxy in front (nginx) said, or say it ourselves."""
    client = (scope.get("client") or ("",))[0]
    chain = headers.get(b"x-forwarded-for", b"").decode("latin-1")
    return [("x-forwarded-for", f"{chain}, {client}" if chain else client),
            ("x-forwarded-proto", headers.get(b"x-forwarded-proto", scope.get("scheme", "http").encode()).decode("latin-1")),
            ("x-forwarded-host", headers.get(b"x-forwarded-host", headers.get(b"host", b"")).decode("latin-1"))]


async def _request_body(receive: Receive):
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return
        yield message.get("body", b"")
        if not message.get("more_body"):
            return


def _etags(header: bytes) -> set[bytes]:
    return {part.strip().removeprefix(b"W/") for part in header.split(b",")}


def _uri_json(entry: Entry) -> str:
    """An entry as a get_thumbnails value (a JSON string literal), built once per entry."""
    if entry.uri_json is None:
        entry.uri_json = f'"data:{entry.content_type()};base64,{base64.b64encode(entry.body).decode()}"'
    return entry.uri_json


def _body_tags(body: bytes) -> tuple[str, ...]:
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
    return tuple(f"image:{i}" for i in sorted(ids))


def _safe_url(url: str) -> str:
    return re.sub(r"//[^@/]*@", "//***@", url)


def create_app(settings: Settings | None = None) -> Edge:
    """An edge app from code (tests, embedding); `edge.app:app` builds one from the environment."""
    return Edge(settings or Settings.load())


# `edge.app:app`: configured from EDGE_* / EDGE_CONFIG when the server starts it (lifespan), so
# importing this module reads no environment and a bad setting fails start-up with one line.
app = Edge(None)
