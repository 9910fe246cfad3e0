"""From a scope to a stream of items: walk the containers, keep this shard's, skip what the journal
has finished, fetch each object's children, plan its URLs.

Two phases so progress has a denominator and shards never fetch what they do not own: first the
containers (screens → plates, projects → datasets, orphans; a few listing pages even for IDR, held
as small refs), then, one object at a time and only for this shard, the wells or images behind
each, planned and queued as the runner drains the queue. Memory stays at one object's children.
"""
from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Protocol

from .enumerate_api import ApiClient, SourceError
from .journal import Journal
from .model import API, FAIL, OK, SKIP, ImageList, Item, Outcome, PlateLayout, Ref
from .plan import Planner
from .progress import Counters
from .shard import Shard

IMAGES_PER_REF = 500  # `warm images`: ids are grouped into refs of this many (10 batches)
LOOKAHEAD = 4  # objects being listed ahead of the one being planned


class Source(Protocol):
    async def children(self, kind: str, parent: int | None = None) -> tuple[list[int], int]: ...
    async def plate(self, ref: Ref, kinds: frozenset[str]) -> PlateLayout | None: ...
    async def images(self, ref: Ref) -> ImageList | None: ...


async def walk(source: Source, scope: str, ids: list[int]) -> AsyncIterator[Ref]:
    """Phase one: the containers of a scope (site, screen, project, plate, dataset, tiles)."""
    seen: set[str] = set()

    def fresh(ref: Ref) -> bool:
        if ref.name in seen:
            return False  # a plate in two screens, a dataset in two projects: warmed once
        seen.add(ref.name)
        return True

    async def screens(sids: list[int]) -> AsyncIterator[Ref]:
        async for sid, (plates, n) in _listed(source, "plates", sids):
            yield Ref("screen", sid, n)
            for pid in plates:
                if fresh(ref := Ref("plate", pid)):
                    yield ref

    async def projects(pids: list[int | None]) -> AsyncIterator[Ref]:
        async for pid, (datasets, n) in _listed(source, "datasets", pids):
            yield Ref("project", pid, n) if pid is not None else Ref("listing", "orphaned-datasets", n)
            for did in datasets:
                if fresh(ref := Ref("dataset", did)):
                    yield ref

    if scope == "site":
        sids, n = await source.children("screens")
        yield Ref("listing", "screens", n)
        async for ref in screens(sids):
            yield ref
        pids, n = await source.children("projects")
        yield Ref("listing", "projects", n)
        async for ref in projects([*pids, None]):
            yield ref
        yield Ref("orphans", "images")
    elif scope == "screen":
        async for ref in screens(ids):
            yield ref
    elif scope == "project":
        async for ref in projects(list(ids)):
            yield ref
    else:  # plate, dataset, tiles: the objects themselves
        for i in ids:
            yield Ref(scope, i)


async def _listed(source: Source, kind: str, parents: list) -> AsyncIterator[tuple[object, tuple[list[int], int]]]:
    """(parent, its children) in order, LOOKAHEAD listings at a time (a slow backend answers them in parallel)."""
    for start in range(0, len(parents), LOOKAHEAD):
        chunk = parents[start:start + LOOKAHEAD]
        for parent, listed in zip(chunk, await asyncio.gather(*(source.children(kind, p) for p in chunk))):
            yield parent, listed


def image_refs(ids: Iterable[int], shard: Shard) -> Iterable[Ref]:
    """`warm images`: this shard's ids (sharded per image), in refs of IMAGES_PER_REF."""
    chunk: list[int] = []
    for image_id in ids:
        if shard.owns(f"image:{image_id}"):
            chunk.append(image_id)
            if len(chunk) == IMAGES_PER_REF:
                yield Ref("images", chunk[0], ids=tuple(chunk))
                chunk = []
    if chunk:
        yield Ref("images", chunk[0], ids=tuple(chunk))


@dataclass
class Tracker:
    """Records an object in the journal once its plan is complete and all its items are recorded."""

    journal: Journal
    pending: dict[str, int] = field(default_factory=dict)
    complete: set[str] = field(default_factory=set)

    def planned(self, obj: str) -> None:
        self.pending[obj] = self.pending.get(obj, 0) + 1

    def finished(self, obj: str) -> None:
        self.pending[obj] -= 1
        self._check(obj)

    def plan_complete(self, obj: str) -> None:
        self.complete.add(obj)
        self.pending.setdefault(obj, 0)
        self._check(obj)

    def _check(self, obj: str) -> None:
        if obj in self.complete and self.pending[obj] == 0:
            self.journal.record_object(obj)
            self.complete.discard(obj)
            del self.pending[obj]


Record = Callable[[Item, Outcome, int, float], None]


class Feeder:
    """Phase two: expand each ref, plan it, and queue what the journal has not finished.

    `record` (the run's completion callback) receives what needs no request: an enumeration failure,
    and a plate grid the edge answered while listing the plate (its X-Edge-Cache tells OK or Skip),
    unless `refresh` asks for every entry to be fetched again. Without `record` (a dry run) those
    grids are yielded like any other item.
    """

    def __init__(self, source: Source, api: ApiClient, planner: Planner, counters: Counters, *,
                 journal: Journal | None = None, record: Record | None = None, refresh: bool = False,
                 retry_failed: bool = False, limit: int | None = None) -> None:
        self.source, self.api, self.planner, self.c = source, api, planner, counters
        self.journal = journal
        self.record = record
        self.refresh = refresh
        self.tracker = Tracker(journal) if journal is not None else None
        self.retry_failed = retry_failed
        self.limit = limit
        self.queued = 0

    def wanted(self, ref: Ref) -> bool:
        """False for an object a resumed run finished (with no failures to retry)."""
        j = self.journal
        return j is None or not j.object_done(ref.name) or (self.retry_failed and j.has_failures(ref.name))

    async def expand(self, ref: Ref) -> PlateLayout | ImageList | dict | None:
        if not self.planner.needs_children(ref):
            return None
        if ref.kind == "plate":
            return await self.source.plate(ref, self.planner.kinds)
        if ref.kind == "tiles":
            return await self.api.get_json(f"/webgateway/imgData/{ref.id}/")
        return await self.source.images(ref)

    async def expanded(self, refs: Iterable[Ref]) -> AsyncIterator[tuple[Ref, object]]:
        """(ref, detail or SourceError) in order, with up to LOOKAHEAD expansions in flight, so listing
        the next plates overlaps the warming of this one instead of starving the runner."""
        pending: deque[tuple[Ref, asyncio.Future]] = deque()
        upcoming = iter(refs)

        def launch() -> None:
            ref = next(upcoming, None)
            if ref is not None:
                pending.append((ref, asyncio.ensure_future(self.expand(ref))))

        for _ in range(LOOKAHEAD):
            launch()
        try:
            while pending:
                ref, task = pending.popleft()
                launch()
                try:
                    yield ref, await task
                except SourceError as exc:
                    yield ref, exc
        finally:
            for _, task in pending:
                task.cancel()

    async def items(self, refs: Iterable[Ref]) -> AsyncIterator[Item]:
        """Every item to run, in order; records enumeration failures and counts earlier work."""
        async with aclosing(self.expanded(refs)) as stream:
            async for ref, detail in stream:
                self.c.objects_planned += 1
                if self.limit is not None and self.queued >= self.limit:
                    return
                if isinstance(detail, SourceError):
                    self._record(Item(detail.url, API, ref.name),
                                 Outcome(FAIL, detail.status, f"listing: {detail.reason}"))
                    continue
                if self.retry_failed and self.journal is not None:
                    self.journal.clear_listing_failures(ref.name)
                if detail is None and self.planner.needs_children(ref):
                    continue  # nothing new since --since
                answered = detail.fetched if isinstance(detail, PlateLayout) and not self.refresh else {}
                for item in self.planner.plan(ref, detail):
                    self.c.planned += 1
                    if self._earlier(item):
                        continue
                    cache = answered.get(item.url)
                    if cache in ("HIT", "MISS") and self.record is not None:
                        self._record(item, Outcome(SKIP if cache == "HIT" else OK, 200, "", 0, int(cache == "MISS")))
                        continue
                    if self.tracker is not None:
                        self.tracker.planned(item.obj)
                    self.queued += 1
                    yield item
                    if self.limit is not None and self.queued >= self.limit:
                        return
                if self.tracker is not None:
                    self.tracker.plan_complete(ref.name)

    def _earlier(self, item: Item) -> bool:
        if self.journal is None:
            return False
        state = self.journal.state(item.url)
        if state in (OK, SKIP) or (state == FAIL and not self.retry_failed):
            self.c.earlier += 1
            return True
        return False

    def _record(self, item: Item, outcome: Outcome) -> None:
        if self.record is not None:
            if self.tracker is not None:
                self.tracker.planned(item.obj)
            self.record(item, outcome, 1, 0.0)

    async def feed(self, refs: Iterable[Ref], queue: asyncio.Queue) -> None:
        async for item in self.items(refs):
            await queue.put(item)

    def finished(self, item: Item) -> None:
        if self.tracker is not None:
            self.tracker.finished(item.obj)
