"""Prefetch: after a fill, fetch in the background what that client asks for next, in spare upstream room.

A client's next requests are known from the answer it is about to read (clients.md §2, §4):

- a plate grid (`gw.plate`) → the webclient's `get_thumbnails` batches of its images: their default
  thumbnails are fetched as batches of `thumbnails_batch`, stored as the per-image entries every batch and
  `render_thumbnail/<id>/` read;
- imgData or iviewer's image_data → iviewer's first view (`edge.viewer.first_view`: the lowest-resolution
  tiles of a pyramid, or the plane), with the viewer's exact query, so its requests are the same keys.

Rules: off unless `prefetch` is set; only for the requester's audience, with its credentials (a user's
cookie; the public audience uses the edge's public session, as any fill: origin.py); never a key already
cached (fresh) or in flight (the batch's members are claimed in single-flight, so a client that asks
meanwhile joins the prefetch instead of fetching again); at most `prefetch_share` of `upstream_concurrency`
in flight per upstream, and only while that upstream has a free slot — otherwise the work is skipped and
counted, never queued. Warm-mode fills prefetch nothing (the warmer paces itself). A first view of more than
`MAX_VIEW` URLs (a big plain image's full-resolution regions) is left to the viewer.

Counting (`Ledger`, per process, approximate): a prefetched entry is *used* when a client's lookup first
finds it (or joins it while in flight), *wasted* when a client's first lookup misses it (evicted or purged)
or when its freshness ends before anyone asked (counted as the ledger is swept, or when the ledger's
`LEDGER` marks overflow). A hit served by another worker process is not seen here: it counts as wasted.
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TypeVar

from .cache import Background, TieredCache
from .entry import Entry
from .flight import FillTimeout, Flights
from .keys import digest, thumbnail_key
from .metrics import Metrics
from .origin import Origin
from .request import Request, keyed, parse
from .routes import BY_NAME, Kind
from .settings import Settings
from .status import Bypass
from .thumbnails import BatchFailed, Member, Thumbnails
from .upstream import Upstream as Pool, UpstreamError
from .viewer import first_view

log = logging.getLogger("edge.prefetch")
Clock = Callable[[], float]
Job = TypeVar("Job")

GRID_ROUTES = frozenset({"gw.plate"})
VIEW_ROUTES = frozenset({"iv.image_data", "gw.imgData"})
BATCH_ROUTE = "gw.get_thumbnails"  # the webclient plate view's batches (ome.plateview.js)
THUMBNAIL, TILE = "thumbnail", "tile"  # the `kind` label of the prefetch metrics
MAX_VIEW = 16
LEDGER = 100_000
# Request headers a prefetch keeps from the request it follows (origin.py forwards host and user-agent);
# the cookie travels in Request.headers, as the edge read it.
_KEPT = frozenset({b"host", b"user-agent"})


def grid_images(grid: object) -> list[int]:
    """A plate grid's image ids in row-major order (ome.plateview.js: the order of its batches)."""
    rows = grid.get("grid") if isinstance(grid, dict) else None
    if not isinstance(rows, list):
        return []
    return [cell["id"] for row in rows if isinstance(row, list) for cell in row
            if isinstance(cell, dict) and isinstance(cell.get("id"), int)]


def follow_up(req: Request, url: str, default_size: int, channels: int | None = None) -> Request | None:
    """A request for `url` as `req`'s requester sends it (same identity, Host and client, no JSONP
    callback), keyed as the edge keys it; None when the URL is not cached."""
    path, _, query = url.partition("?")
    parsed = parse(path, query.encode())
    if isinstance(parsed, Bypass):
        return None
    scope = {**req.scope, "path": path, "raw_path": path.encode(), "query_string": query.encode(),
             "headers": [(k, v) for k, v in req.scope["headers"] if k in _KEPT]}
    return keyed(Request(scope, *parsed, req.requester, req.headers, req.host), default_size, channels)


class Capacity:
    """Prefetch's share of each upstream pool: a slot is taken only below the share and while the pool
    has a free slot (users first); otherwise the caller skips."""

    def __init__(self, share: float, concurrency: int, metrics: Metrics) -> None:
        self.limit = max(1, int(share * concurrency))
        self.metrics = metrics
        self._held: dict[int, int] = {}

    def take(self, pool: Pool) -> bool:
        held = self._held.get(id(pool), 0)
        if held >= self.limit or pool.limit.locked():
            return False
        self._held[id(pool)] = held + 1
        self.metrics.prefetch_in_flight.inc()
        return True

    def give(self, pool: Pool) -> None:
        self._held[id(pool)] -= 1
        self.metrics.prefetch_in_flight.dec()


class Ledger:
    """The entries prefetch filled, until a client first asks for one (used) or it is gone (wasted)."""

    def __init__(self, metrics: Metrics, clock: Clock, size: int = LEDGER) -> None:
        self.metrics, self.clock, self.size = metrics, clock, size
        self._marks: OrderedDict[str, tuple[str, float | None]] = OrderedDict()  # digest → (kind, fresh until)

    def pending(self, d: str, kind: str) -> None:
        """A prefetch of `d` is in flight (a client asking now joins it: used)."""
        self._marks[d] = (kind, None)
        self._marks.move_to_end(d)
        self._sweep()

    def stored(self, d: str, entry: Entry | None) -> None:
        """The prefetch of `d` ended: its entry is in the tiers (or nothing storable came: forgotten)."""
        mark = self._marks.pop(d, None)
        if mark is not None and entry is not None and entry.stored_ok:
            self._marks[d] = (mark[0], entry.fresh_until)

    def seen(self, d: str, found: bool) -> None:
        """A client looked `d` up (found: served from the cache). Called on every client lookup."""
        if not self._marks:
            return
        mark = self._marks.pop(d, None)
        if mark is None:
            return
        kind, until = mark
        (self.metrics.prefetch_used if found or until is None else self.metrics.prefetch_wasted).labels(kind).inc()

    def _sweep(self) -> None:
        now = self.clock()
        marks = self._marks
        while marks:
            d, (kind, until) = next(iter(marks.items()))
            if len(marks) <= self.size and (until is None or until > now):
                return
            del marks[d]
            self.metrics.prefetch_wasted.labels(kind).inc()


class Prefetcher:
    def __init__(self, settings: Settings, cache: TieredCache, flights: Flights, origin: Origin,
                 thumbnails: Thumbnails, fill: Callable[[Request], Awaitable[Entry]],
                 channels: Callable[[int | None], int | None], metrics: Metrics, background: Background,
                 clock: Clock) -> None:
        """`fill` is the edge's fill (fetch and store one request); `channels` an image's known channel count
        (the key of a render depends on it: keys.is_full_rdef)."""
        self.settings, self.cache, self.flights, self.origin = settings, cache, flights, origin
        self.thumbnails, self.fill, self.channels = thumbnails, fill, channels
        self.metrics, self.background, self.clock = metrics, background, clock
        self.capacity = Capacity(settings.prefetch_share, settings.upstream_concurrency, metrics)
        self.ledger = Ledger(metrics, clock)

    def after_fill(self, req: Request, entry: Entry) -> None:
        """The edge filled `req` with `entry`: follow a grid or an imgData in the background (else nothing)."""
        name = req.route.name
        if entry.status == 200 and req.warm is None and (name in GRID_ROUTES or name in VIEW_ROUTES):
            self.background.spawn(self._follow(req, entry.body))

    async def _follow(self, req: Request, body: bytes) -> None:
        try:
            doc = json.loads(body)
        except ValueError:
            return
        if req.route.name in GRID_ROUTES:
            await self._thumbnails(req, grid_images(doc))
        elif isinstance(doc, dict) and req.image_id is not None:
            await self._view(req, first_view(req.image_id, doc))

    # --- plate grid → thumbnails --------------------------------------------------------------------
    async def _thumbnails(self, req: Request, ids: list[int]) -> None:
        size = self.settings.thumb_default_size
        batch = follow_up(req, BY_NAME[BATCH_ROUTE].base_path, size)
        keys = [(i, thumbnail_key(batch.route, i, size, audience=req.requester.audience, default_size=size))
                for i in dict.fromkeys(ids)]
        members = [Member(i, k, digest(k)) for i, k in keys]
        wanted = await self._wanted([(m.digest, m.key) for m in members])
        members = [m for m in members if m.digest in wanted]
        n = self.settings.thumbnails_batch
        await self._spread([members[k:k + n] for k in range(0, len(members), n)], self.origin.pool(batch),
                           lambda chunk: self._batch(batch, chunk), THUMBNAIL)

    async def _batch(self, batch: Request, chunk: list[Member]) -> None:
        claimed, _ = self.flights.claim(m.digest for m in chunk)  # members in flight elsewhere stay theirs
        # Claimed first, then looked up: a client that filled one meanwhile is not fetched again, and one
        # asking from now on joins this batch.
        fresh = await self._fresh([(m.digest, m.key) for m in chunk if m.digest in claimed])
        self.flights.settle({d: claimed.pop(d) for d in fresh}, fresh)
        mine = [m for m in chunk if m.digest in claimed]
        if not mine:
            return
        for m in mine:
            self.ledger.pending(m.digest, THUMBNAIL)
        self.metrics.prefetch_issued.labels(THUMBNAIL).inc(len(mine))
        fetched = None
        try:
            fetched = await self.thumbnails.fetch_batch(batch, batch.route.base_path, mine, wait=False)
        except (UpstreamError, BatchFailed) as exc:
            log.info("thumbnail prefetch failed: %s", exc)
        finally:
            # Joiners take the entries; without one (a failure, no final image) they fetch their own.
            entries = {m.digest: fetched.entries[m.image_id] for m in mine} if fetched else {}
            self.flights.settle(claimed, entries)
            for m in mine:
                self.ledger.stored(m.digest, entries.get(m.digest))

    # --- imgData → the viewer's first view -------------------------------------------------------------
    async def _view(self, req: Request, urls: list[str]) -> None:
        if len(urls) > MAX_VIEW:
            return
        channels = self.channels(req.image_id)
        found = [follow_up(req, url, self.settings.thumb_default_size, channels) for url in urls]
        tiles = [r for r in found if r is not None and r.route.kind is not Kind.BATCH]
        wanted = await self._wanted([(r.digest, r.key) for r in tiles])
        tiles = [r for r in tiles if r.digest in wanted]
        if tiles:
            await self._spread([[r] for r in tiles], self.origin.pool(tiles[0]), lambda job: self._tile(job[0]),
                               TILE)

    async def _tile(self, tile: Request) -> None:
        if self.flights.running(tile.digest):
            return

        async def fill() -> Entry:
            """In single-flight: looked up again first (a client may have filled it meanwhile)."""
            fresh = await self._fresh([(tile.digest, tile.key)])
            if fresh:
                return fresh[tile.digest]
            self.ledger.pending(tile.digest, TILE)
            self.metrics.prefetch_issued.labels(TILE).inc()
            return await self.fill(tile)

        entry = None
        try:
            entry, _ = await self.flights.run(tile.digest, tile.key, fill)
        except (UpstreamError, FillTimeout) as exc:
            log.info("tile prefetch failed: %s", exc)
        finally:
            self.ledger.stored(tile.digest, entry)

    # --- shared -------------------------------------------------------------------------------------------
    async def _fresh(self, pairs: list[tuple[str, str]]) -> dict[str, Entry]:
        """The entries of `pairs` (digest, key) fresh in the cache, by digest."""
        found = await self.cache.get_many(pairs) if pairs else []
        now = self.clock()
        return {d: entry for (d, _), (entry, _) in zip(pairs, found) if entry is not None and entry.is_fresh(now)}

    async def _wanted(self, pairs: list[tuple[str, str]]) -> set[str]:
        """The digests of `pairs` neither fresh in the cache nor being filled in this process."""
        fresh = await self._fresh(pairs)
        return {d for d, _ in pairs if d not in fresh and not self.flights.running(d)}

    async def _spread(self, jobs: list[list[Job]], pool: Pool, run: Callable[[list[Job]], Awaitable[None]],
                      kind: str) -> None:
        """`run` each job while prefetch has a slot of `pool`, `capacity.limit` at a time; a job that finds
        no slot is skipped (its items counted), not queued."""
        queue = iter(jobs)

        async def worker() -> None:
            for job in queue:
                if not self.capacity.take(pool):
                    self.metrics.prefetch_skipped.labels(kind).inc(len(job))
                    continue
                try:
                    await run(job)
                finally:
                    self.capacity.give(pool)

        # One worker runs in this task, so the first job is claimed before anything else runs.
        others = [asyncio.ensure_future(worker()) for _ in range(min(self.capacity.limit, len(jobs)) - 1)]
        try:
            await worker()
            await asyncio.gather(*others)
        finally:
            for task in others:
                task.cancel()

