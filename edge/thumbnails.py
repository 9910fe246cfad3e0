"""Thumbnails in batches: OMERO's `get_thumbnails` split into per-image entries, and back.

A batch's members are the entries `render_thumbnail/<id>/` uses (the route row's `item`), so a
plate's batch and a gallery's single thumbnails share one cache. Hits come from each tier in one
round trip; only the missing ids go upstream, as one smaller batch (`fetch_batch`, also what the
coalescer sends); the answer is assembled in OMERO's shape, `{"<id>": "data:…" | null}`.

A client's cold batch is answered from the backend's values as soon as they arrive; splitting them
into entries (base64 decode, hashing, the loading-picture check) and storing them runs after, in the
background (at most `_SPLITS` at once, past that before the answer), so that CPU never delays it.
Entries keep the purge epoch taken before the fetch: a purge meanwhile still wins (purge.py).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote

import orjson

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
_ASSEMBLED = 256  # hit answers kept, least recently used out (~50 MB of 50-thumbnail batches)
_SPLITS = 32  # background splits of cold batches at once (a plate view is 8 batches)
Clock = Callable[[], float]
Final = Callable[[Request, list[tuple[int, Entry]]], Awaitable[list[bool]]]


@dataclass(frozen=True, slots=True)
class Member:
    """One image of a batch: its id and the key of its thumbnail entry."""

    image_id: int
    key: str
    digest: str


@dataclass(frozen=True, slots=True)
class Answer:
    """A backend's 200 batch: the value per id, and the purge epoch and time its entries date from."""

    values: dict[int, object]
    epoch: int
    started: float


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
        self._splitting = 0  # background splits running (_split_later)
        self._assembled: OrderedDict[tuple, tuple[list[Entry], Entry]] = OrderedDict()  # hit answers (_assemble)

    async def fetch_batch(self, req: Request, path: str, members: list[Member],
                          extra: list[tuple[str, str]] = (), *, wait: bool = True) -> Fetched:
        """One upstream `get_thumbnails` for `members`; each final image is stored as its thumbnail
        entry. Raises UpstreamError, or BatchFailed with the backend's non-200 answer."""
        answer = await self._request(req, path, members, extra)
        return Fetched(await self._split(req, members, answer, wait=wait), answer.values)

    async def _request(self, req: Request, path: str, members: list[Member], extra) -> Answer:
        epoch, started = self.registry.epoch(), self.clock()
        query = "&".join([f"id={m.image_id}" for m in members] +
                         [f"{quote(n, safe='')}={quote(v, safe='')}" for n, v in extra])
        resp = await self.origin.fetch(req, f"{path}?{query}")
        if resp.status_code != 200:
            raise BatchFailed(self.policy.entry(req, resp.status_code, resp.headers.get("content-type", ""),
                                                resp.content, epoch=epoch, started=started, key=""))
        data = _decode(resp.content)
        if not isinstance(data, dict):
            raise UpstreamError(self.origin.pool(req).name, 502, "sent an invalid batch")
        return Answer({m.image_id: data.get(str(m.image_id)) for m in members}, epoch, started)

    async def _split(self, req: Request, members: list[Member], answer: Answer, *,
                     wait: bool) -> dict[int, Entry | None]:
        """The batch's values as thumbnail entries (None: not final), the final ones stored."""
        entries = {m.image_id: self.policy.thumbnail(m.key, m.image_id, answer.values[m.image_id], public=req.public,
                                                     epoch=answer.epoch, started=answer.started) for m in members}
        self.access.granted(req.requester, [f"image:{i}" for i, v in answer.values.items() if v is not None])
        candidates = [(i, e) for i, e in entries.items() if e is not None]
        for (image_id, _), ok in zip(candidates, await self.final(req, candidates)):
            if not ok:  # OMERO's loading picture: answered as sent, never stored
                entries[image_id] = None
        await self.cache.put_many([(m.digest, e) for m in members if (e := entries[m.image_id])], wait=wait)
        return entries

    async def _split_later(self, req: Request, members: list[Member], answer: Answer,
                           claimed: dict[str, asyncio.Future]) -> None:
        """Split and store after the answer (lookups of these members wait for it, cache.landing);
        the claims end once the entries are in memory, or with None should the split fail (each
        waiter then fetches its own)."""
        landed = self.cache.landing([m.digest for m in members])
        if self._splitting >= _SPLITS:  # too many behind: this one before its answer, never dropped
            return await self._split_and_settle(req, members, answer, claimed, landed)
        self._splitting += 1
        self.background.spawn(self._split_and_settle(req, members, answer, claimed, landed, counted=True))

    async def _split_and_settle(self, req: Request, members: list[Member], answer: Answer,
                                claimed: dict[str, asyncio.Future], landed: Callable[[], None],
                                counted: bool = False) -> None:
        entries: dict[int, Entry | None] = {}
        try:
            entries = await self._split(req, members, answer, wait=False)
        finally:
            self._splitting -= counted
            self.flights.settle(claimed, {m.digest: entries.get(m.image_id) for m in members})
            landed()

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
        results: dict[int, str] = {}  # the fetched (or stale) members' literals
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
        answer = self._assemble(req, ids, served, results, status, now, remember=not warm)
        tier = ",".join(sorted(tiers))
        if warm:
            return await delivery.warm(send, status, answer, tier, ids=len(ids), missing=len(missing))
        await delivery.respond(req, send, answer, status, tier if status is not CacheStatus.MISS else "",
                               max_age=min((e.max_age(now) for e in served.values()), default=0))

    def _assemble(self, req: Request, ids: list[int], served: dict[int, Entry], results: dict[int, str],
                  status: CacheStatus, now: float, remember: bool) -> Entry:
        """OMERO's shape, joined from each entry's ready-made value; the ETag comes from the members'
        (hashing the ~200 KB body again would cost more than the answer). A hit's answer is kept per
        batch while its members are the same entries (a purged, refreshed or evicted one is not):
        joining and hashing it again was half a warm plate view's CPU."""
        hit = status is CacheStatus.HIT
        ident = (req.public, tuple(ids))
        if hit:
            kept = self._assembled.get(ident)
            if kept is not None and all(a is served[i] for a, i in zip(kept[0], ids)):
                self._assembled.move_to_end(ident)
                return kept[1]
        literals = {i: uri_json(e) for i, e in served.items()} | results
        body = ("{" + ", ".join(f'"{i}": {literals.get(i, "null")}' for i in ids) + "}").encode()
        tag = hashlib.blake2b("".join(f"{i}{literals.get(i, 'null')[-24:]}" for i in ids).encode(),
                              digest_size=12).hexdigest() if hit else None
        answer = Entry.build("", 200, "application/json", body, ttl=0, stale=0, epoch=0, tags=(), public=req.public,
                             now=now, etag=f'"b{tag}-{len(body)}"' if tag else None)
        answer.compressible = False  # base64 JPEG gains ~25% from gzip, for milliseconds of CPU per batch
        if hit and remember:
            self._assembled[ident] = ([served[i] for i in ids], answer)
            while len(self._assembled) > _ASSEMBLED:
                self._assembled.popitem(last=False)
        return answer

    async def _fill(self, req: Request, path: str, missing: list[Member], extra, again: bool = True) -> dict[int, str]:
        """The missing members as JSON literals: fetched once, or joined where another request is
        already fetching them in this process (fetched `again` if a purge came meanwhile)."""
        claimed, others = self.flights.claim(m.digest for m in missing)
        out: dict[int, str] = {}
        mine = [m for m in missing if m.digest in claimed]
        if mine:
            try:
                answer = await self._request(req, path, mine, extra)
            except BaseException as exc:
                self.flights.settle(claimed, error=exc)
                raise
            # The backend's own values, placeholders and nulls included (never stored).
            out.update({i: _literal(v) for i, v in answer.values.items()})
            await self._split_later(req, mine, answer, claimed)
        purged: list[Member] = []
        for m in missing:
            if m.digest in others:
                try:
                    entry = await others[m.digest]
                except Exception:  # noqa: BLE001 - the other request's failure: this id stays null
                    entry = None
                if again and isinstance(entry, Entry) and not self.registry.valid(entry.tags, entry.epoch):
                    purged.append(m)  # fetched before a purge that came while it was being split and stored
                    continue
                out[m.image_id] = uri_json(entry) if isinstance(entry, Entry) and entry.status == 200 else "null"
        if purged:
            out.update(await self._fill(req, path, purged, extra, again=False))
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


def _decode(body: bytes) -> object:
    """The batch's JSON (None if it is not JSON): orjson, ~2× json's speed; json for what orjson
    refuses and json reads (NaN, integers past 64 bits)."""
    try:
        return orjson.loads(body)
    except ValueError:
        try:
            return json.loads(body)
        except ValueError:
            return None


def _literal(value: object) -> str:
    """`json.dumps(value)`, the bytes the answer always had: orjson's are the same for printable
    ASCII (only `"` and `\\` escaped) and cost ~30× less per data URI."""
    if isinstance(value, str) and value.isascii() and value.isprintable():
        return orjson.dumps(value).decode()
    return json.dumps(value)


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

