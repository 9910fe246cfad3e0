"""Thumbnails in batches: OMERO's `get_thumbnails` split into per-image entries, and back.

A batch's members are the entries `render_thumbnail/<id>/` uses (the route row's `item`), so a
plate's batch and a gallery's single thumbnails share one cache. Hits come from each tier in one
round trip; only the missing ids go upstream, as one smaller batch (`fetch_batch`, also what the
coalescer sends); the answer is assembled in OMERO's shape, `{"<id>": "data:…" | null}`.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote

from .access import AccessChecker
from .cache import Background, TieredCache
from .decision import Action, Freshness, stale_on_error
from .entry import Entry
from .flight import Flights
from .keys import digest, thumbnail_key
from .metrics import Metrics
from .origin import Origin
from .policy import EntryPolicy, uri_json
from .protocol import batch_too_big
from .purge import PurgeRegistry
from .request import Request
from .settings import Settings
from .status import Bypass, CacheStatus
from .upstream import UpstreamError

_MEMO_SIZE = 200_000
Clock = Callable[[], float]
Final = Callable[[Request, list[tuple[int, Entry]]], Awaitable[list[bool]]]


@dataclass(frozen=True, slots=True)
class Member:
    """One image of a batch: its id and the key of its thumbnail entry."""

    image_id: int
    key: str
    digest: str


@dataclass(slots=True)
class Fetched:
    """What one upstream batch gave: per id, the entry stored (None: not final) and the raw value."""

    entries: dict[int, Entry | None]
    values: dict[int, object]


class BatchFailed(Exception):
    """The backend answered the batch with something other than 200: `entry` is that answer."""

    def __init__(self, entry: Entry) -> None:
        self.entry = entry


class Thumbnails:
    def __init__(self, settings: Settings, cache: TieredCache, flights: Flights, origin: Origin,
                 policy: EntryPolicy, access: AccessChecker, registry: PurgeRegistry, metrics: Metrics,
                 background: Background, clock: Clock, final: Final, freshness: Freshness) -> None:
        """`final` vets fetched thumbnails (False: OMERO's loading picture, see loading.py)."""
        self.settings, self.cache, self.flights, self.origin = settings, cache, flights, origin
        self.policy, self.access, self.registry, self.metrics = policy, access, registry, metrics
        self.background, self.clock, self.final, self.freshness = background, clock, final, freshness
        self._memo: dict[tuple, tuple[str, str]] = {}  # (route, audience, size, id) → (key, digest)
        self.seen: Callable[[str, bool], None] | None = None  # told each member a client looks up (prefetch.py)

    async def fetch_batch(self, req: Request, path: str, members: list[Member],
                          extra: list[tuple[str, str]] = (), *, wait: bool = True) -> Fetched:
        """One upstream `get_thumbnails` for `members`; each final image is stored as its thumbnail
        entry. Raises UpstreamError, or BatchFailed with the backend's non-200 answer."""
        epoch, started = self.registry.epoch(), self.clock()
        query = "&".join([f"id={m.image_id}" for m in members] +
                         [f"{quote(n, safe='')}={quote(v, safe='')}" for n, v in extra])
        resp = await self.origin.fetch(req, f"{path}?{query}")
        if resp.status_code != 200:
            raise BatchFailed(self.policy.entry(req, resp.status_code, resp.headers.get("content-type", ""),
                                                resp.content, epoch=epoch, started=started, key=""))
        try:
            data = resp.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise UpstreamError(self.origin.pool(req).name, 502, "sent an invalid batch")
        fetched = Fetched({}, {})
        for m in members:
            value = fetched.values[m.image_id] = data.get(str(m.image_id))
            fetched.entries[m.image_id] = self.policy.thumbnail(m.key, m.image_id, value, public=req.public,
                                                                epoch=epoch, started=started)
        self.access.granted(req.requester, [f"image:{i}" for i, v in fetched.values.items() if v is not None])
        candidates = [(i, e) for i, e in fetched.entries.items() if e is not None]
        for (image_id, _), ok in zip(candidates, await self.final(req, candidates)):
            if not ok:  # OMERO's loading picture: answered as sent, never stored
                fetched.entries[image_id] = None
        await self.cache.put_many([(m.digest, e) for m in members if (e := fetched.entries[m.image_id])], wait=wait)
        return fetched

    async def serve(self, req: Request, send, delivery, passthrough) -> None:
        """A client's get_thumbnails: members from the cache, the rest fetched as one smaller batch."""
        ids = _ids(req.params)
        if not ids:
            return await passthrough(req.scope, None, send, Bypass.BATCH_IDS)
        limit = self.settings.thumbnails_batch
        if len(ids) > limit:
            too_big = Entry.build("", 500, "text/javascript", batch_too_big(limit), ttl=0, stale=0, epoch=0,
                                  tags=(), public=False)
            return await delivery.respond(req, send, too_big, CacheStatus.BYPASS, "")
        size = int(req.groups.get(req.route.thumb_size_group, self.settings.thumb_default_size))
        # One id takes the single-thumbnail path (z/t/rdefId honoured); several ids ignore them.
        extra = [(n, v) for n, v in req.params if n in ("z", "t", "rdefId")] if len(ids) == 1 else []
        members = self._members(req, ids, size, extra)
        found = await self.cache.get_many([(m.digest, m.key) for m in members])
        now = self.clock()
        served: dict[int, Entry] = {}  # from the cache: fresh, or stale while one refresh runs
        stale: dict[int, Entry] = {}  # may answer if the upstream fails
        refresh: list[Member] = []
        missing: list[Member] = []
        tiers: set[str] = set()
        warm = req.warm is not None
        for m, (entry, tier) in zip(members, found):
            action = self.freshness.decide(entry, now, req.warm)
            if action is Action.MISS:
                missing.append(m)
                if stale_on_error(entry, now, warm=warm):
                    stale[m.image_id] = entry
                continue
            served[m.image_id] = entry
            tiers.add(tier)
            if action is Action.REVALIDATE:
                refresh.append(m)
        verdicts = await self.access.each_allowed(req.requester, [f"image:{i}" for i in served])
        for (image_id, _), ok in zip(list(served.items()), verdicts):
            if not ok:  # the backend decides for this requester: fetched with their own cookie
                del served[image_id]
                missing.append(next(m for m in members if m.image_id == image_id))
        refresh = [m for m in refresh if m.image_id in served]
        if self.seen is not None and not warm:
            for m in members:
                self.seen(m.digest, m.image_id in served)
        results: dict[int, str] = {i: uri_json(e) for i, e in served.items()}
        status = CacheStatus.STALE if refresh else CacheStatus.HIT
        path = req.scope["path"]
        if missing:
            status = CacheStatus.MISS
            self.metrics.misses.inc()
            try:
                results.update(await self._fill(req, path, missing, extra))
            except (UpstreamError, BatchFailed) as exc:
                # Failing (unreachable, timed out, 5xx): stale copies answer if every member has one.
                failing = isinstance(exc, UpstreamError) or exc.entry.status >= 500
                if not failing or len(stale) + len(served) < len(ids):
                    if isinstance(exc, BatchFailed):
                        return await delivery.respond(req, send, exc.entry, CacheStatus.MISS, "")
                    return await delivery.error(req, send, exc)
                results.update({i: uri_json(e) for i, e in stale.items()})
                status = CacheStatus.STALE
                self.metrics.stale.inc()
        elif status is CacheStatus.HIT:
            for tier in tiers:
                self.metrics.hot.hits[tier] += 1
        if refresh:
            self.metrics.stale.inc()
            self.background.spawn(self._refresh(req, path, refresh, extra))
        # OMERO's shape, joined from each entry's ready-made value; the ETag comes from the members'
        # (hashing the ~200 KB body again would cost more than the answer).
        body = ("{" + ", ".join(f'"{i}": {results.get(i, "null")}' for i in ids) + "}").encode()
        tag = hashlib.blake2b("".join(f"{i}{results.get(i, 'null')[-24:]}" for i in ids).encode(),
                              digest_size=12).hexdigest() if status is CacheStatus.HIT else None
        answer = Entry.build("", 200, "application/json", body, ttl=0, stale=0, epoch=0, tags=(), public=req.public,
                             now=now, etag=f'"b{tag}-{len(body)}"' if tag else None)
        answer.compressible = False  # base64 JPEG gains ~25% from gzip, for milliseconds of CPU per batch
        tier = ",".join(sorted(tiers))
        if warm:
            return await delivery.warm(send, status, answer, tier, ids=len(ids), missing=len(missing))
        await delivery.respond(req, send, answer, status, tier if status is not CacheStatus.MISS else "",
                               max_age=min((e.max_age(now) for e in served.values()), default=0))

    async def _fill(self, req: Request, path: str, missing: list[Member], extra) -> dict[int, str]:
        """The missing members as JSON literals: fetched once, or joined where another request is
        already fetching them in this process."""
        claimed, others = self.flights.claim(m.digest for m in missing)
        out: dict[int, str] = {}
        try:
            mine = [m for m in missing if m.digest in claimed]
            if mine:
                fetched = await self.fetch_batch(req, path, mine, extra, wait=False)
                self.flights.settle(claimed, {m.digest: fetched.entries[m.image_id] for m in mine})
                # The backend's own values, placeholders and nulls included (never stored).
                out.update({i: json.dumps(v) for i, v in fetched.values.items()})
        except BaseException as exc:
            self.flights.settle(claimed, error=exc)
            raise
        for m in missing:
            if m.digest in others:
                try:
                    entry = await others[m.digest]
                except Exception:  # noqa: BLE001 - the other request's failure: this id stays null
                    entry = None
                out[m.image_id] = uri_json(entry) if isinstance(entry, Entry) and entry.status == 200 else "null"
        return out

    async def _refresh(self, req: Request, path: str, members: list[Member], extra) -> None:
        try:
            await self._fill(req, path, members, extra)
        except (UpstreamError, BatchFailed):
            pass  # the stale copies stay until stale_while_revalidate ends

    def _members(self, req: Request, ids: list[int], size: int, extra: list[tuple[str, str]]) -> list[Member]:
        """Per-image keys of a batch, remembered per (route, audience, size, id)."""
        memo = self._memo
        audience = req.requester.audience
        out = []
        for image_id in ids:
            ident = (req.route.name, audience, size, image_id)
            found = memo.get(ident) if not extra else None
            if found is None:
                key = thumbnail_key(req.route, image_id, size, audience=audience,
                                    default_size=self.settings.thumb_default_size, params=extra)
                found = (key, digest(key))
                if not extra:
                    if len(memo) >= _MEMO_SIZE:
                        memo.clear()
                    memo[ident] = found
            out.append(Member(image_id, *found))
        return out


def _ids(params) -> list[int]:
    """The batch's distinct ids in order; [] when one is not a plain decimal ("²".isdigit() is True)."""
    ids: list[int] = []
    for name, value in params:
        if name == "id":
            if not (value.isascii() and value.isdigit()):
                return []
            if int(value) not in ids:
                ids.append(int(value))
    return ids

