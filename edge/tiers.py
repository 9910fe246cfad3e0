"""The three cache tiers: L0 memory (per process), L1 disk (per node), L2 Redis (shared).

Each tier keeps entries under the key digest and checks the full key on read. A tier that
fails (a full or unwritable disk, Redis down or hung) degrades to "absent" with one logged warning
and is retried after an exponential backoff with jitter: a cache failure never fails a request,
and a Redis that stops answering costs a request at most `redis_timeout`.
"""
from __future__ import annotations

import asyncio
import codecs
import logging
import os
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TypeVar

import diskcache
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from .entry import CorruptEntry, Entry
from .redisclient import ERRORS as REDIS_ERRORS, connect

log = logging.getLogger("edge.tiers")
T = TypeVar("T")


class MemoryTier:
    """L0: an LRU bounded in bytes. Holds Entry objects, so a hit costs no parsing."""

    name = "memory"

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[str, Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, digest: str) -> Entry | None:
        entry = self._items.get(digest)
        if entry is not None:
            self._items.move_to_end(digest)
        return entry

    def set(self, digest: str, entry: Entry) -> None:
        if entry.size > self.max_bytes // 8:
            self.delete(digest)  # nor may an older copy keep answering for the one the other tiers hold
            return  # one huge body must not flush the hot set
        old = self._items.pop(digest, None)
        if old is not None:
            self.bytes -= old.size
        self._items[digest] = entry
        self.bytes += entry.size
        while self.bytes > self.max_bytes and self._items:
            _, evicted = self._items.popitem(last=False)
            self.bytes -= evicted.size

    def delete(self, digest: str) -> None:
        old = self._items.pop(digest, None)
        if old is not None:
            self.bytes -= old.size

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0


class _Degradable:
    """Turns a tier off after a failure and tries it again after a backoff.

    The first failure takes the tier down; while it is down, calls skip it (`usable()` is False) until
    the retry time, when one call is let through as the trial. A failed trial doubles the interval
    (`backoff_base`, 2×, … up to `backoff_cap`, each ±`backoff_jitter`, so nodes that lost one Redis do not
    retry in step); a success (`_ok`) brings the tier back and resets the schedule. Failures of calls
    that started before the tier went down do not count: one outage under load is one failure.
    `up` only reads the state (health, metrics)."""

    name = ""
    backoff_base = 0.5
    backoff_cap = 30.0
    backoff_jitter = 0.2

    def __init__(self) -> None:
        self.down_since: float | None = None
        self.failures = 0  # consecutive failed tries (the first failure and failed trials)
        self.retry_at = 0.0  # monotonic time of the next trial while down
        self.retry_after = 0.0  # the interval that led to it
        self.trial = False  # a trial is out and has not reported
        self.last_error = ""

    @property
    def up(self) -> bool:
        return self.down_since is None

    def usable(self) -> bool:
        """Whether to call the tier now: it is up, or down and due for a trial (which this caller makes)."""
        if self.down_since is None:
            return True
        now = time.monotonic()
        if now < self.retry_at:
            return False
        # The trial; if it never reports (its request cancelled), the next one comes an interval later.
        self.trial = True
        self.retry_at = now + self.retry_after
        return True

    def backoff(self, failures: int) -> float:
        """Seconds to the next trial after `failures` consecutive failures."""
        nominal = min(self.backoff_cap, self.backoff_base * 2 ** (failures - 1))
        return nominal * random.uniform(1 - self.backoff_jitter, 1 + self.backoff_jitter)

    def _failed(self, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.down_since is None:
            log.warning("%s tier unavailable, serving without it: %s", self.name, exc)
            self.down_since = time.monotonic()
            self.failures = 0
        elif not self.trial:
            return  # a call from before it went down: the outage is already counted
        self.trial = False
        self.failures += 1
        self.retry_after = self.backoff(self.failures)
        self.retry_at = time.monotonic() + self.retry_after

    def _ok(self) -> None:
        if self.down_since is not None:
            log.warning("%s tier is back after %.1f s", self.name, time.monotonic() - self.down_since)
            self.down_since = None
            self.failures = 0
            self.trial = False
            self.last_error = ""


class RecordDisk(diskcache.Disk):
    """diskcache's storage that never unpickles: entries are bytes (and locks strings), so a pickled value
    (another program's or version's, in a shared directory) reads as an empty record, a miss — never code
    run, never an exception that would take the tier down."""

    def fetch(self, mode: int, filename: str, value: object, read: bool) -> object:
        if mode == diskcache.core.MODE_PICKLE:
            return b""
        return super().fetch(mode, filename, value, read)


# diskcache's "least-recently-used" writes access_time in a transaction of its own on every hit (core.py,
# Cache.get: the "slow path" whenever the policy's 'get' is set): 5× the cost of the read and, at p99, a WAL
# checkpoint (`bench scale`, docs/bench.md "Scale"). "edge-lru" evicts by the same access_time index, reads
# on the fast path, and DiskTier writes the access times of its hits in one transaction per `touch_batch`.
EDGE_LRU = "edge-lru"
diskcache.core.EVICTION_POLICY.setdefault(EDGE_LRU, {**diskcache.core.EVICTION_POLICY["least-recently-used"],
                                                     "get": None})


class DiskTier(_Degradable):
    """L1: diskcache on a directory shared by the node's workers (SQLite index + files, atomic writes)."""

    name = "disk"
    eviction_policy = EDGE_LRU
    touch_batch = 256  # hits whose access time is written in one transaction (0: diskcache's own, one per hit)

    def __init__(self, directory: str, size_limit: int) -> None:
        super().__init__()
        self.directory = directory
        self.cache = diskcache.Cache(directory, size_limit=size_limit, eviction_policy=self.eviction_policy,
                                     disk_min_file_size=64 * 1024, statistics=False, disk=RecordDisk)
        self._hits: list[str] = []

    def get(self, digest: str, key: str) -> Entry | None:
        if not self.usable():
            return None
        try:
            raw = self.cache.get(digest)
        except Exception as exc:  # noqa: BLE001 - any storage failure degrades to a miss
            self._failed(exc)
            return None
        self._ok()
        if raw is None:
            return None
        if self.touch_batch:
            self._hits.append(digest)
            if len(self._hits) >= self.touch_batch:
                self._touch()
        try:
            return Entry.loads(raw, key)
        except CorruptEntry as exc:
            log.log(exc.level, "%s disk entry %s removed: %s", exc.what, digest, exc)
            self.delete(digest)
            return None

    def _touch(self) -> None:
        """Mark the recorded hits used now (what diskcache's LRU does per hit), in one transaction. The
        statement is diskcache's own for that policy (Cache.get: `UPDATE Cache SET access_time = …`); str keys
        are stored raw (Disk.put). A failure loses the marks, never the entries: eviction stays approximate."""
        hits, self._hits = self._hits, []
        now = time.time()
        try:
            with self.cache.transact():  # on this thread's connection, which _con is
                self.cache._con.executemany("UPDATE Cache SET access_time = ? WHERE key = ? AND raw = 1",
                                            [(now, digest) for digest in hits])
        except Exception as exc:  # noqa: BLE001
            self._failed(exc)

    def preload(self) -> None:
        """Open this thread's SQLite connection (diskcache keeps one per thread) and load the codec its
        file names use: at start-up, in the writer thread, not inside the first miss's answer."""
        codecs.lookup("hex")
        self.get("", "")

    def files(self) -> list[str]:
        """The SQLite file and its WAL (bodies of ≥ 64 KiB, tiles, are files of their own, left out)."""
        base = os.path.join(self.directory, diskcache.core.DBNAME)
        return [base, base + "-wal"]

    def set_many(self, items: list[tuple[str, Entry]]) -> None:
        """Write entries in one SQLite transaction (one commit for a whole batch). Blocking: callers
        run it in a thread so the event loop never waits on the disk."""
        if not items or not self.usable():
            return
        now = time.time()
        try:
            with self.cache.transact():
                for digest, entry in items:
                    self.cache.set(digest, entry.dumps(), expire=max(1.0, entry.stale_until - now))
            self._ok()
        except Exception as exc:  # noqa: BLE001
            self._failed(exc)

    def delete(self, digest: str) -> None:
        try:
            self.cache.delete(digest)
        except Exception as exc:  # noqa: BLE001
            self._failed(exc)

    def add(self, name: str, value: str, expire: float) -> bool:
        """Atomic create-if-absent (the cross-worker fill lock)."""
        try:
            return bool(self.cache.add(name, value, expire=expire))
        except Exception as exc:  # noqa: BLE001
            self._failed(exc)
            return True  # without a working lock, fill locally rather than wait for nobody

    def stats(self) -> tuple[int, int]:
        try:
            return len(self.cache), self.cache.volume()
        except Exception:  # noqa: BLE001
            return 0, 0

    def clear(self) -> None:
        self.cache.clear()

    def close(self) -> None:
        if self._hits:
            self._touch()
        self.cache.close()


class RedisTier(_Degradable):
    """L2: Redis shared by every node; entries carry a TTL so `maxmemory-policy allkeys-lru` works.

    Every call (connecting included) has `timeout` seconds in all, and none is retried by the client: a
    Redis that accepts connections and never answers costs the request that finds out one `timeout`,
    then the tier is skipped until a trial answers (see _Degradable)."""

    name = "redis"
    prefix = "edge:e:"

    def __init__(self, url: str, max_body: int, timeout: float = 0.25, cluster: bool = False) -> None:
        super().__init__()
        self.url = url
        self.max_body = max_body
        self.timeout = timeout
        self.client = connect(url, cluster, socket_connect_timeout=timeout, socket_timeout=timeout,
                              retry=Retry(NoBackoff(), 0), health_check_interval=0)

    def _gate(self, key: str | None) -> _Degradable:
        """Whose up/down state a call on `key` goes by: the whole tier's (a cluster has one per node)."""
        return self

    async def call(self, command: Callable[[], Awaitable[T]], default: T, key: str | None = None) -> T:
        """`command()` (Redis calls on `client`, about `key` when it names one) within `timeout`, or `default`
        while the tier (or `key`'s node) is down or when it fails. Shared by the fill locks, so they skip a
        hung Redis exactly as the cache does."""
        gate = self._gate(key)
        if not gate.usable():
            return default
        try:
            async with asyncio.timeout(self.timeout):
                value = await command()
        except TimeoutError:
            gate._failed(TimeoutError(f"no answer within {self.timeout} s"))
            self.last_error = gate.last_error
            return default
        except REDIS_ERRORS as exc:
            gate._failed(exc)
            self.last_error = gate.last_error
            return default
        gate._ok()
        return value

    async def _mget(self, keys: list[str]) -> list[bytes | None]:
        """The raw values of `keys` in one round trip; None for each while the tier is down."""
        return await self.call(lambda: self.client.mget(keys), None) or [None] * len(keys)

    async def _write(self, items: list[tuple[str, bytes, int]]) -> bool:
        """(key, value, ttl ms) pipelined in one round trip; whether it was written."""
        async def write() -> bool:
            async with self.client.pipeline(transaction=False) as pipe:
                for key, value, px in items:
                    pipe.set(key, value, px=px)
                await pipe.execute()
            return True

        return await self.call(write, False, items[0][0])

    async def get_many(self, pairs: list[tuple[str, str]]) -> list[Entry | None]:
        if not pairs:
            return []
        raws = await self._mget([self.prefix + d for d, _ in pairs])
        out: list[Entry | None] = []
        for (digest, key), raw in zip(pairs, raws):
            entry = None
            if raw is not None:
                try:
                    entry = Entry.loads(raw, key)
                except CorruptEntry as exc:
                    log.log(exc.level, "%s redis entry %s removed: %s", exc.what, digest, exc)
                    await self.delete(digest)
            out.append(entry)
        return out

    async def get(self, digest: str, key: str) -> Entry | None:
        return (await self.get_many([(digest, key)]))[0]

    async def set_many(self, items: list[tuple[str, Entry]]) -> bool:
        """One pipelined round trip for a whole batch of entries; whether all were written (or none needed)."""
        items = [(d, e) for d, e in items if len(e.body) <= self.max_body]
        if not items:
            return True
        now = time.time()
        return await self._write([(self.prefix + d, e.dumps(), int(max(1.0, e.stale_until - now) * 1000))
                                  for d, e in items])

    async def delete(self, digest: str) -> None:
        await self.call(lambda: self.client.delete(self.prefix + digest), None, self.prefix + digest)

    async def size(self) -> tuple[int | None, int | None]:
        """Keys in the L2 database and Redis's used memory (the whole server's: entries are most of it)."""
        async def ask() -> tuple[int, int]:
            return await self.client.dbsize(), (await self.client.info("memory"))["used_memory"]
        return await self.call(ask, (None, None))

    async def ping(self) -> bool:
        """Asks Redis whatever the backoff says (health checks): an answer brings the tier back."""
        try:
            async with asyncio.timeout(self.timeout):
                await self.client.ping()
        except TimeoutError:
            self._failed(TimeoutError(f"no answer within {self.timeout} s"))
            return False
        except REDIS_ERRORS as exc:
            self._failed(exc)
            return False
        self._ok()
        return True

    async def close(self) -> None:
        await self.client.aclose()
