"""`edge watch`: follow OMERO's change log in PostgreSQL and purge what changed, on every tier and node.

Changes made past the edge (OMERO.insight, scripts, imports, the CLI) reach the cache only this way.
The watcher reads `eventlog` rows after the last id it processed, maps them to tags
(`edge/eventlog.py`), purges them (soft or hard) and then records its position, so a crash
re-purges a batch rather than skipping one. Its position survives restarts: in Redis when the
edge has one, else in a file.

Ids are taken from a sequence when a transaction writes, but become visible when it commits: a
long import may commit id 100 after id 105 was read. An id skipped over is therefore a *gap*,
asked for again on every poll until it appears or `watch_gap_seconds` have passed (a rolled-back
transaction leaves a gap for ever).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .eventlog import ACTIONS, CONTAINERS, ENTITIES, Event, entity_name, readable
from .kinds import tag
from .purge import PurgeRegistry
from .settings import ConfigError, Settings

log = logging.getLogger("edge.watch")
MAX_TRACKED_GAP = 10_000  # a hole wider than this is a sequence jump, not transactions in flight
PURGE_CHUNK = 2_000  # tags per purge call (one Redis pipeline, one pub/sub message)
BACKOFF = (0.5, 30.0)  # seconds: first retry, most between retries (database or purge target down)

# event.time is a timestamp without zone, written in the server's local time: read in the database's TimeZone
_SELECT = """SELECT el.id, el.action, el.entitytype, el.entityid,
                    extract(epoch FROM e.time AT TIME ZONE current_setting('TimeZone'))::float8
             FROM eventlog el LEFT JOIN event e ON e.id = el.event """
FETCH = _SELECT + "WHERE el.id > %(after)s ORDER BY el.id LIMIT %(limit)s"
FETCH_GAPS = _SELECT + "WHERE el.id = ANY(%(ids)s)"
TABLES = "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"


@dataclass
class Position:
    """The last id processed and the ids skipped over that may still commit (id → when first missed)."""

    after: int
    gaps: dict[int, float] = field(default_factory=dict)

    def dumps(self) -> str:
        return json.dumps({"after": self.after, "gaps": {str(k): v for k, v in self.gaps.items()}})

    @classmethod
    def loads(cls, text: str | bytes) -> Position:
        data = json.loads(text)
        return cls(int(data["after"]), {int(k): float(v) for k, v in data.get("gaps", {}).items()})

    def advance(self, ids: list[int], now: float, gap_seconds: float) -> int:
        """Take in the ids read after `after` (ascending) and the gaps that appeared; returns the gaps
        given up (older than `gap_seconds`)."""
        for ident in ids:
            if ident <= self.after:
                self.gaps.pop(ident, None)
                continue
            if ident - self.after - 1 <= MAX_TRACKED_GAP:
                self.gaps.update((missing, now) for missing in range(self.after + 1, ident))
            self.after = ident
        expired = [ident for ident, since in self.gaps.items() if now - since > gap_seconds]
        for ident in expired:
            del self.gaps[ident]
        return len(expired)


class PositionStore(Protocol):
    async def load(self) -> Position | None: ...
    async def save(self, position: Position) -> None: ...
    async def close(self) -> None: ...


class FileStore:
    """The position in a file, replaced atomically (no Redis)."""

    def __init__(self, path: str) -> None:
        self.path = path

    async def load(self) -> Position | None:
        try:
            with open(self.path) as fh:
                return Position.loads(fh.read())
        except FileNotFoundError:
            return None
        except (ValueError, KeyError) as exc:
            raise ConfigError(f"watch_state {self.path} is not a position this watcher wrote: {exc}") from None

    async def save(self, position: Position) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with open(self.path + ".tmp", "w") as fh:
            fh.write(position.dumps())
        os.replace(self.path + ".tmp", self.path)

    async def close(self) -> None:
        return None


class RedisStore:
    """The position in the edge's Redis, beside the purge state it feeds."""

    def __init__(self, url: str, key: str, cluster: bool = False) -> None:
        from .redisclient import connect

        self.key = key
        self.redis = connect(url, cluster, socket_connect_timeout=2.0, socket_timeout=5.0)

    async def load(self) -> Position | None:
        raw = await self.redis.get(self.key)
        return Position.loads(raw) if raw else None

    async def save(self, position: Position) -> None:
        await self.redis.set(self.key, position.dumps())

    async def close(self) -> None:
        await self.redis.aclose()


class Sink(Protocol):
    async def purge(self, tags: list[str], soft: bool) -> None: ...
    async def close(self) -> None: ...


class RegistrySink:
    """Purges written straight into the purge state the edges read (the cache directory, Redis), as
    `edge purge` does without --edge: every worker and node sees them."""

    def __init__(self, settings: Settings) -> None:
        self.registry = PurgeRegistry.of(settings)

    async def purge(self, tags: list[str], soft: bool) -> None:
        await self.registry.purge(tags, soft=soft)

    async def close(self) -> None:
        await self.registry.close()


class EdgeSink:
    """Purges sent to edges by HTTP (POST /_edge/purge): for nodes that share no cache directory or Redis."""

    def __init__(self, urls: list[str], token: str) -> None:
        if not token:
            raise ConfigError("watch_edges needs purge_token (the edges' POST /_edge/purge token)")
        self.urls = [url.rstrip("/") + "/_edge/purge" for url in urls]
        self.client = httpx.AsyncClient(timeout=10, headers={"authorization": f"Bearer {token}"})

    async def purge(self, tags: list[str], soft: bool) -> None:
        spec: dict = defaultdict(list)
        for t in tags:
            kind, _, ident = t.partition(":")
            spec[kind].append(int(ident))
        for url in self.urls:
            resp = await self.client.post(url, json={**spec, "soft": soft})
            if resp.status_code != 200:
                raise OSError(f"{url} answered {resp.status_code}: {resp.text.strip()[:200]}")

    async def close(self) -> None:
        await self.client.aclose()


class WatchMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.events = Counter("edge_watch_events_total", "eventlog rows read, by what became of them (purged, "
                              "ignored: a class the cache does not hold, unresolved: its rows were gone).",
                              ["result"], registry=r)
        self.purged = Counter("edge_watch_purges_total", "Tags purged by the watcher, by mode.", ["mode"], registry=r)
        self.lag = Gauge("edge_watch_lag_seconds", "Age of the newest processed change when its purge was done "
                         "(0 when caught up and idle).", registry=r)
        self.delay = Histogram("edge_watch_delay_seconds", "From a change's event time to its purge.", registry=r,
                               buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300))
        self.behind = Gauge("edge_watch_behind_events", "Newest eventlog id minus the watcher's position.", registry=r)
        self.position = Gauge("edge_watch_position", "The last eventlog id processed.", registry=r)
        self.gaps = Gauge("edge_watch_gaps", "Ids skipped over that may still commit.", registry=r)
        self.db_up = Gauge("edge_watch_db_up", "1 while the OMERO database answers.", registry=r)

    def summary(self) -> dict[str, float]:
        """What the progress lines say, read back from the metrics (0 for a label never counted)."""
        value = self.registry.get_sample_value
        return {**{r: value("edge_watch_events_total", {"result": r}) or 0
                   for r in ("purged", "ignored", "unresolved")},
                **{m: value("edge_watch_purges_total", {"mode": m}) or 0 for m in ("hard", "soft")},
                "behind": value("edge_watch_behind_events") or 0, "lag": value("edge_watch_lag_seconds") or 0.0}


class Watcher:
    def __init__(self, settings: Settings, store: PositionStore, sink: Sink, metrics: WatchMetrics | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.s, self.store, self.sink, self.clock = settings, store, sink, clock
        self.m = metrics or WatchMetrics()
        self.conn = None
        self.tables: set[str] = set()
        self.position: Position | None = None
        self.stopping = asyncio.Event()

    # --- the database ------------------------------------------------------------------------------
    async def connect(self) -> None:
        import psycopg

        self.conn = await psycopg.AsyncConnection.connect(self.s.watch_db, autocommit=True, connect_timeout=5)
        async with self.conn.cursor() as cur:
            await cur.execute(TABLES)
            self.tables = {row[0] for row in await cur.fetchall()}
        if not {"eventlog", "event"} <= self.tables:
            raise ConfigError("watch_db has no eventlog/event tables: is it OMERO's database?")
        self.m.db_up.set(1)

    async def _rows(self, sql: str, **params) -> list[tuple]:
        async with self.conn.cursor() as cur:
            await cur.execute(sql, params)
            return await cur.fetchall()

    async def _newest(self) -> int:
        return int((await self._rows("SELECT coalesce(max(id), 0) FROM eventlog"))[0][0])

    async def start_position(self, start: str) -> Position:
        """The stored position, else `start`: `now` (the newest id: what happened before is not news to a
        cache that starts now) or an id to replay from."""
        stored = await self.store.load()
        if stored is not None:
            return stored
        if start == "now":
            return Position(await self._newest())
        return Position(int(start))

    # --- one poll ----------------------------------------------------------------------------------
    async def poll(self) -> int:
        """Read, purge and record one batch; returns how many rows it held."""
        pos = self.position
        rows = await self._rows(FETCH, after=pos.after, limit=self.s.watch_batch)
        if pos.gaps:
            rows += await self._rows(FETCH_GAPS, ids=list(pos.gaps))
        events = [Event(int(i), a, entity_name(t), int(e), w) for i, a, t, e, w in rows]
        await self.apply(events)
        now = self.clock()
        expired = pos.advance(sorted(e.id for e in events), now, self.s.watch_gap_seconds)
        if expired:
            log.warning("%d eventlog id(s) never committed within %.0f s: given up (rolled back)", expired,
                        self.s.watch_gap_seconds)
        await self.store.save(pos)
        self.m.position.set(pos.after)
        self.m.gaps.set(len(pos.gaps))
        self.m.behind.set(max(0, await self._newest() - pos.after))
        times = [e.time for e in events if e.time is not None]
        self.m.lag.set(max(0.0, now - max(times)) if times else 0.0)
        for when in times:
            self.m.delay.observe(max(0.0, now - when))
        return len(rows)

    async def apply(self, events: Iterable[Event]) -> None:
        """Purge what `events` changed: soft for how objects look, hard for the rest (eventlog.py)."""
        wanted: dict[tuple[str, bool, bool], list[int]] = defaultdict(list)  # (entity, hard, containers) → ids
        for e in events:
            entity = ENTITIES.get(e.entity)
            if e.action not in ACTIONS or entity is None or not readable(entity, self.tables):
                self._count("ignored")
                continue
            hard = e.action == "DELETE" or not entity.soft
            wanted[(e.entity, hard, entity.containers and e.action == "UPDATE")].append(e.entity_id)
        tags = {True: set(), False: set()}
        for (name, hard, containers), ids in wanted.items():
            entity = ENTITIES[name]
            if entity.direct is not None:
                found = {tag(entity.direct, i) for i in ids}
            else:
                found = {tag(kind, i) for kind, i in await self._rows(entity.sql, ids=ids) if i is not None}
            if containers:
                found |= await self._containers(ids)
            self._count("purged" if found else "unresolved", len(ids))
            tags[hard] |= found
        tags[False] -= tags[True]  # a hard purge already covers the soft one
        for hard, names in tags.items():
            ordered = sorted(names)
            for start in range(0, len(ordered), PURGE_CHUNK):
                await self.sink.purge(ordered[start:start + PURGE_CHUNK], soft=not hard)
            self.m.purged.labels("hard" if hard else "soft").inc(len(ordered))

    async def _containers(self, image_ids: list[int]) -> set[str]:
        found = set()
        for tables, sql in CONTAINERS:
            if set(tables) <= self.tables:
                found |= {tag(kind, i) for kind, i in await self._rows(sql, ids=image_ids) if i is not None}
        return found

    def _count(self, result: str, n: int = 1) -> None:
        self.m.events.labels(result).inc(n)

    # --- the loop ----------------------------------------------------------------------------------
    async def run(self, start: str = "now", once: bool = False) -> int:
        """Follow the log until stopped (or, `once`, until caught up); the database or the purge target
        being down is waited out with backoff, the position kept."""
        delay, said = BACKOFF[0], False
        while not self.stopping.is_set():
            try:
                if self.conn is None or self.conn.closed:
                    await self.connect()
                    if said:
                        log.warning("the OMERO database answers again")
                if self.position is None:
                    self.position = await self.start_position(start)
                    log.info("following eventlog after id %d", self.position.after)
                n = await self.poll()
                delay, said = BACKOFF[0], False
            except ConfigError:
                raise
            except Exception as exc:  # noqa: BLE001 - any database, network or Redis failure is waited out
                self.m.db_up.set(0 if _is_db_error(exc) else 1)
                if not said:
                    log.warning("watch paused: %s (retrying with backoff; position %s kept)",
                                str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                                self.position.after if self.position else "not yet read")
                    said = True
                await self._close_conn()
                if once and self.position is None:
                    return 1
                await self._sleep(delay)
                delay = min(delay * 2, BACKOFF[1])
                continue
            if n < self.s.watch_batch:
                if once:
                    return 0
                await self._sleep(self.s.watch_interval)
        return 0

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    async def _close_conn(self) -> None:
        if self.conn is not None:
            try:
                await self.conn.close()
            except Exception:  # noqa: BLE001 - a broken connection may fail to close; it is dropped either way
                pass
            self.conn = None

    async def close(self) -> None:
        await self._close_conn()
        await self.sink.close()
        await self.store.close()


def _is_db_error(exc: Exception) -> bool:
    try:
        import psycopg
    except ImportError:
        return False
    return isinstance(exc, psycopg.Error)


def position_store(settings: Settings) -> PositionStore:
    """Redis (beside the purge state) when the edge has one, else a file; `watch_state` names the file."""
    if settings.watch_state:
        return FileStore(settings.watch_state)
    if settings.redis_url:
        from .purge import default_prefix
        from .redisclient import same_slot

        prefix = same_slot(settings.redis_prefix or default_prefix(settings.redis_url), settings.redis_cluster)
        return RedisStore(settings.redis_url, prefix + "watch:position", settings.redis_cluster)
    if settings.cache_dir:
        return FileStore(os.path.join(settings.cache_dir, "watch.position"))
    raise ConfigError("edge watch keeps its position in Redis (redis_url), cache_dir or watch_state: set one")


def sink_for(settings: Settings) -> Sink:
    if settings.watch_edges:
        return EdgeSink(settings.watch_edges, settings.purge_token)
    if not settings.cache_dir and not settings.redis_url:
        raise ConfigError("edge watch purges through the edges' cache_dir or redis_url, or watch_edges: set one")
    return RegistrySink(settings)
