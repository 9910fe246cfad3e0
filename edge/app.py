"""The edge as an ASGI app: `edge.app:app` (configured from EDGE_* / EDGE_CONFIG) or `create_app(settings)`.

The request state machine, after Varnish's: recv (classify: route, key, audience — or bypass)
→ lookup (the tiers) → decide (hit / stale-revalidate / miss) → fill (single-flight, coalesced or
alone) → deliver. Each stage is its own module; this one wires them and holds the one decision
path, so a hit is one route lookup, one tier lookup and one send with headers prepared at store
time. Only `/_edge/*` goes through Starlette.
"""
from __future__ import annotations

import asyncio
import logging
import subprocess
import time
from collections.abc import Awaitable, Callable

import httpx

from . import pagecache
from .access import AccessChecker
from .accesslog import AccessLog
from .admin import Shown, admin_app
from .cache import Background, TieredCache
from .cluster import redis_tier
from .coalesce import ThumbnailCoalescer
from .decision import Action, Freshness, stale_on_error
from .deliver import Delivery
from .entry import Entry
from .flight import FillTimeout, Flights
from .hotpath import HotAnswer, HotAnswers, freeze_heap
from .identity import Identity, SessionResolver, joined_cookies
from .loading import METADATA_ROUTES, LoadingThumbnails
from .locks import DiskLock, RedisLock
from .metrics import Metrics
from .nodemetrics import NodeMetrics
from .origin import Origin
from .passthrough import Passthrough
from .policy import EntryPolicy, is_thumbnail
from .prefetch import Prefetcher
from .public_session import PublicSession
from .purge import PurgeRegistry
from .request import Classifier, Request, asgi_hot_key
from .routes import Kind, Upstream
from .rsgi import RsgiEdge
from .settings import Settings, safe_url
from .status import Bypass, CacheStatus
from .thumbnails import Thumbnails
from .tiers import DiskTier, MemoryTier
from .upstream import Upstream as UpstreamPool, UpstreamError, preload
from .writes import WriteEffects

log = logging.getLogger("edge")
Send = Callable[[dict], Awaitable[None]]
Receive = Callable[[], Awaitable[dict]]
Clock = Callable[[], float]
HIT, MISS, STALE = CacheStatus.HIT, CacheStatus.MISS, CacheStatus.STALE

# Headers that make a request someone's (or the warmer's): such requests skip the anonymous hot path.
_IDENTITY_HEADERS = frozenset({b"cookie", b"authorization", b"x-omero-session-key", b"x-edge-warm"})
_AUDIENCE = {True: "public", False: "user"}
FLUSH_SECONDS = 5.0  # at shutdown, the longest wait for the disk and Redis writes answers went ahead of


class Edge(RsgiEdge):
    def __init__(self, settings: Settings | None, *, clock: Clock = time.time,
                 transports: dict[Upstream, httpx.AsyncBaseTransport] | None = None) -> None:
        """`clock` and `transports` are for tests: a controllable time and an in-process backend."""
        self.settings = settings  # None: read EDGE_* / EDGE_CONFIG at start-up (`edge.app:app`)
        self.clock = clock
        self.transports = transports or {}
        self.metrics = Metrics()
        self.started = False
        self.access_log: AccessLog | None = None  # the one check a request pays when the log is off
        self.readahead: subprocess.Popen | None = None  # the disk tier's page-cache read-ahead (pagecache.py)

    # --- lifecycle --------------------------------------------------------------------------------
    async def startup(self) -> None:
        if self.settings is None:
            self.settings = Settings.load()
        s, m = self.settings, self.metrics
        memory = MemoryTier(s.memory_size) if s.memory_size else None
        disk = None
        if s.cache_dir:
            try:
                disk = DiskTier(s.cache_dir, s.disk_size)
            except Exception as exc:  # noqa: BLE001 - a full or broken directory must not stop the edge
                log.warning("disk tier %s unavailable at start-up, running without L1: %s", s.cache_dir, exc)
        redis = redis_tier(s.redis_url, s.redis_max_body, s.redis_timeout, s.redis_cluster) if s.redis_url else None
        if redis is not None and not await redis.ping():
            log.warning("Redis tier %s is not reachable at start-up; running without it until it is",
                        safe_url(s.redis_url))
        try:
            self.registry = PurgeRegistry(s.cache_dir or None, s.redis_url, s.redis_prefix, self.clock, s.redis_cluster)
        except OSError as exc:
            log.warning("purge log in %s unavailable at start-up, purges stay in this process: %s", s.cache_dir, exc)
            self.registry = PurgeRegistry(None, s.redis_url, s.redis_prefix, self.clock, s.redis_cluster)
        await self.registry.start()
        web = UpstreamPool("omero-web", s.backend, s, self.transports.get(Upstream.WEB))
        ms = UpstreamPool("omero-ms", s.ms, s, self.transports.get(Upstream.MS)) if s.ms else web
        self.upstreams = {Upstream.WEB: web, Upstream.MS: ms}
        preload()
        owner = f"{id(self)}"
        # A single worker needs no cross-process lock on its own directory (two SQLite writes per miss).
        shared = RedisLock(redis, owner) if redis else DiskLock(disk, owner) if disk and s.workers > 1 else None
        # A waiter takes another process's entry only while no purge has invalidated it.
        self.flights = Flights(shared, s.fill_timeout, lambda e: self.registry.valid(e.tags, e.epoch))
        resolver = SessionResolver(s.session_redis_url, memo_ttl=min(5.0, s.access_ttl)) \
            if s.session_redis_url else None
        self.identity = Identity(s.session_cookie, resolver, per_user=s.access == "verified")
        self.background = Background()
        self._refreshing: set[str] = set()  # digests with a background refresh spawned
        self.cache = TieredCache(memory, disk, redis, self.registry, self.background)
        self.hot = HotAnswers(memory, self.registry, self.clock) if memory is not None else None
        await self.cache.preload()
        if disk is not None and s.disk_readahead:
            self.readahead = pagecache.start(disk.files())
            self.background.spawn(asyncio.to_thread(self.readahead.wait))  # reaped when it ends
        self.classifier = Classifier(s, self.identity)
        self.access = AccessChecker(web, s, m)
        self.origin = Origin(self.upstreams, PublicSession(web, s.session_cookie, s.public_session_path), m)
        self.policy = EntryPolicy(s)
        self.delivery = Delivery(m, self.clock)
        effects = WriteEffects(self.registry.purge, web, self.background.spawn, self._count_write_purge) \
            if s.purge_writes else None
        self.passthrough = Passthrough(self.upstreams, m, effects)
        self.loading = LoadingThumbnails(s.loading_thumbnails, self._purge_loading, self.origin)
        self.freshness = Freshness(s.stale_while_revalidate, s.soft_purge_seconds, self.registry.soft_since)
        self.thumbnails = Thumbnails(s, self.cache, self.flights, self.origin, self.policy, self.access,
                                     self.registry, m, self.background, self.clock, self.loading.final,
                                     self.freshness)
        self.coalescer = ThumbnailCoalescer(self.thumbnails, self.background, s.coalesce_window_ms,
                                            s.thumb_default_size, s.thumbnails_batch) \
            if s.coalesce_window_ms > 0 else None
        self.prefetch = Prefetcher(s, self.cache, self.flights, self.origin, self.thumbnails, self.fill,
                                   self.classifier.channels.get, m, self.background, self.clock) \
            if s.prefetch else None
        if self.prefetch is not None:
            self.thumbnails.seen = self.prefetch.ledger.seen
        pools = list({id(p): p for p in self.upstreams.values()}.values())
        if s.access_log:
            self.access_log = AccessLog(s.access_log, s.access_log_format, self.clock)
            self.access_log.open()
        shown = Shown(s, memory, disk, redis, pools, self.registry, m, self.delivery.warm_seen)
        if s.metrics_dir:
            shown.node = NodeMetrics(s.metrics_dir, m.registry, shown.read_gauges)
            shown.node.start()
        self.node_metrics = shown.node
        self.admin = admin_app(shown)
        self.started = True

    async def shutdown(self) -> None:
        if self.readahead is not None and self.readahead.poll() is None:
            self.readahead.terminate()  # still reading a large file: the next start asks again
        await self.cache.flush(FLUSH_SECONDS)
        self.background.cancel()
        if self.access_log is not None:
            self.access_log.close()
        if self.node_metrics is not None:
            self.node_metrics.stop()
        for pool in {id(p): p for p in self.upstreams.values()}.values():
            await pool.close()
        await self.registry.close()
        if self.cache.redis is not None:
            await self.cache.redis.close()
        if self.identity.resolver is not None:
            await self.identity.resolver.close()
        if self.cache.disk is not None:
            self.cache.disk.close()

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            if scope["path"].startswith("/_edge/"):
                await self.admin(scope, receive, send)
            elif self.access_log is None:
                await self.handle(scope, receive, send)
            else:
                await self.access_log.serve(self.handle, scope, receive, send)
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
                freeze_heap()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # --- recv ------------------------------------------------------------------------------------------
    async def handle(self, scope: dict, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if method != "GET" and method != "HEAD":
            return await self.passthrough(scope, receive, send, Bypass.METHOD)
        headers = dict(scope["headers"])
        if b"cookie" in headers:
            cookie = joined_cookies(scope)
            if isinstance(cookie, Bypass):
                return await self.passthrough(scope, receive, send, cookie)
            headers[b"cookie"] = cookie
        anonymous = not (_IDENTITY_HEADERS & headers.keys())
        if anonymous and await self._hot_hit(scope, headers, send):
            return
        req = await self.classifier.classify(scope, headers, anonymous)
        if isinstance(req, Bypass):
            return await self.passthrough(scope, receive, send, req)
        scope["edge.audience"] = _AUDIENCE[req.public]  # for the access log: a class, never who
        if req.route.kind is Kind.BATCH:
            return await self.thumbnails.serve(req, send, self.delivery, self.passthrough)
        await self.cached(req, send)

    async def _hot_hit(self, scope: dict, headers: dict[bytes, bytes], send: Send) -> bool:
        hit = self.hot_answer(asgi_hot_key(scope, headers))
        if hit is None:
            return False
        await self.delivery.send_entry(scope, headers, send, hit.entry, hit.headers)
        return True

    def hot_answer(self, key: tuple) -> HotAnswer | None:
        """A URL seen before, fresh in memory for the public: its entry and HIT headers, with no parsing and no
        key building (`key`: request.asgi_hot_key, or the RSGI adapter's); counted as a memory hit."""
        answer = self.hot.get(key) if self.hot is not None else None
        if answer is None:
            answer = self._hot_checked(key)
            if answer is None:
                return None
        self.metrics.hot.hits["memory"] += 1
        if self.prefetch is not None:
            self.prefetch.ledger.seen(answer.digest, True)
        return answer

    def _hot_checked(self, key: tuple) -> HotAnswer | None:
        hot = self.classifier.hot(key)
        memory = self.cache.memory
        if hot is None or memory is None:
            return None
        entry = memory.get(hot[1])
        now = self.clock()
        # 200s only: a negative entry is not every route's answer (the webclient's thumbnail forms answer a
        # placeholder where the webgateway's, sharing their key, answer 404)
        if entry is None or entry.status != 200 or entry.key != hot[0] or not entry.public \
                or entry.fresh_until <= now:
            return None
        self.registry.refresh()
        if not self.registry.valid(entry.tags, entry.epoch) or self.registry.soft_since(entry) is not None:
            return None
        answer = HotAnswer(entry, hot[1], int(now), self.registry.known,
                           self.delivery.headers(entry, HIT, "memory", True))
        self.hot.put(key, answer)
        return answer

    # --- lookup → decide → fill → deliver ------------------------------------------------------------
    async def cached(self, req: Request, send: Send) -> None:
        warm = req.warm is not None
        entry, tier = await self.cache.get(req.digest, req.key)
        if entry is not None and entry.status != 200 and (not req.public or req.route.placeholder):
            # Negative entries are the public's answer only (see EntryPolicy.storable), and never the
            # answer of a route that shows a placeholder where the webgateway says 404.
            entry = None
        if entry is not None and not await self.access.allowed(req.requester, entry, req.objects()):
            # Not readable by this requester: answered exactly as a miss would be (same credentials, same
            # status, same X-Edge-Cache), so the answer never tells whether someone else cached the URL,
            # and never stored (it must not replace the reader's entry under a shared key).
            return await self._answer_miss(req, send, lambda: self._unshared(req), None, "")
        now = self.clock()
        action = self.freshness.decide(entry, now, req.warm)
        if self.prefetch is not None and not warm:
            self.prefetch.ledger.seen(req.digest, action is not Action.MISS)
        if action is Action.HIT:
            self.metrics.hot.hits[tier] += 1
            return await self._deliver(req, send, entry, HIT, tier)
        if action is Action.REVALIDATE:
            self.metrics.stale.inc()
            if self.registry.soft_since(entry) is not None:
                self.metrics.soft_refreshes.inc()
            self._refresh_in_background(req)
            return await self._deliver(req, send, entry, STALE, tier)
        fallback = entry if stale_on_error(entry, now, warm=warm) else None
        await self._answer_miss(req, send, lambda: self.flights.run(req.digest, req.key, self._filler(req)),
                                fallback, tier)

    async def _answer_miss(self, req: Request, send: Send, fetch: Callable[[], Awaitable[tuple[Entry, bool]]],
                           fallback: Entry | None, tier: str) -> None:
        """A miss, answered with the fill's result — or with `fallback` (stale-if-error) when it failed."""
        self.metrics.misses.inc()
        try:
            fresh, coalesced = await fetch()
        except (UpstreamError, FillTimeout) as exc:
            if fallback is not None:
                self.metrics.stale.inc()
                return await self._deliver(req, send, fallback, STALE, tier)
            return await self.delivery.error(req, send, exc)
        if coalesced:
            self.metrics.coalesced.inc()
            if not await self._may_share(req, fresh):
                # Another audience's fill (in this process, another worker's or another node's): its
                # answer is not this requester's. They go their own way, with their own credentials.
                fresh, _ = await self._unshared(req)
        if fresh.status >= 500 and fallback is not None:
            self.metrics.stale.inc()
            return await self._deliver(req, send, fallback, STALE, tier)
        await self._deliver(req, send, fresh, MISS, "")

    async def _deliver(self, req: Request, send: Send, entry: Entry, status: CacheStatus, tier: str) -> None:
        if req.warm is not None:
            return await self.delivery.warm(send, status, entry, tier)
        await self.delivery.respond(req, send, entry, status, tier)

    async def _may_share(self, req: Request, entry: Entry) -> bool:
        """Whether someone else's fill may answer this requester: a 200 only after their read check; a
        negative answer only within the public audience (it may be 'not found' for them alone)."""
        if entry.status == 200:
            return await self.access.allowed(req.requester, entry, req.objects())
        return req.public and entry.public

    async def _unshared(self, req: Request) -> tuple[Entry, bool]:
        """This requester's own answer, outside single-flight (it is nobody else's) and never stored."""
        return await self.fill(req, store=False), False

    def _filler(self, req: Request) -> Callable[[], Awaitable[Entry]]:
        """How this miss is fetched: alone, or (a plain default-size thumbnail) in a coalesced batch."""
        alone = lambda: self.fill(req)  # noqa: E731
        if self.coalescer is not None and self.coalescer.applies(req):
            return lambda: self.coalescer.fill(req, alone)
        return alone

    async def fill(self, req: Request, store: bool = True) -> Entry:
        """Fetch from the route's upstream and store what is safe and final (unless `store` is False)."""
        epoch, started = self.registry.epoch(), self.clock()
        resp = await self.origin.fetch(req, req.upstream_target())
        content_type = resp.headers.get("content-type", "")
        extra = [(b"x-omero-apiversion", v.encode()) for v in resp.headers.get_list("x-omero-apiversion")]
        entry = self.policy.entry(req, resp.status_code, content_type, resp.content, epoch=epoch, started=started,
                                  extra=extra)
        route = req.route
        if entry.status == 200:
            self.access.granted(req.requester, req.objects())
        if route.name in METADATA_ROUTES:
            self.loading.observe(req, entry)
            if entry.status == 200:
                self.classifier.learn_channels(req.image_id, entry.body)
        if store and self.policy.storable(route, entry, content_type) and (
                not is_thumbnail(route)
                or (await self.loading.final(req, [(req.image_id, entry)]))[0]):
            # Another process waits on the shared tiers only through a shared fill lock (flight.py): without
            # one, the answer goes before the disk write (~0.7 ms of a miss, issue 14).
            await self.cache.put_many([(req.digest, entry)], wait=self.flights.shared is not None)
        if store and self.prefetch is not None:
            self.prefetch.after_fill(req, entry)
        return entry

    def _count_write_purge(self, write: str, tags: int) -> None:
        self.metrics.write_purges.labels(write).inc(tags)
        self.metrics.purges.labels("write", "hard").inc(tags)

    def _purge_loading(self, tags: list[str]) -> None:
        """A learnt loading picture's stored copies go, in the background: the answer never waits on Redis."""
        self.metrics.purges.labels("loading", "hard").inc(len(tags))
        self.background.spawn(self.registry.purge(tags))

    def _refresh_in_background(self, req: Request) -> None:
        """One refresh per stale entry: marked when spawned, not when its task first runs, so stale hits in the
        same turn of the loop do not each spawn one (a refresh that ends before the next starts is not joined)."""
        digest = req.digest
        if digest in self._refreshing or self.flights.running(digest):
            return
        self._refreshing.add(digest)

        async def refresh() -> None:
            try:
                await self.flights.run(digest, req.key, lambda: self.fill(req))
            except (UpstreamError, FillTimeout) as exc:
                log.info("background refresh failed: %s", exc)
            finally:
                self._refreshing.discard(digest)

        self.background.spawn(refresh())


def create_app(settings: Settings | None = None, **options) -> Edge:
    """An edge app from code (tests, embedding); `edge.app:app` builds one from the environment."""
    return Edge(settings or Settings.load(), **options)


# `edge.app:app`: configured from EDGE_* / EDGE_CONFIG when the server starts it (lifespan), so
# importing this module reads no environment and a bad setting fails start-up with one line.
app = Edge(None)
