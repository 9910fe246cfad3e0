"""The three cache tiers: L0 memory (per process), L1 disk (per node), L2 Redis (shared).

Each tier keeps entries under the key digest and checks the full key on read. A tier that
fails (a full or unwritable disk, Redis down) degrades to "absent" with one logged warning
and is retried after a backoff: a cache failure never fails a request.
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict

import diskcache
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .entry import CorruptEntry, Entry

log = logging.getLogger("edge.tiers")


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
    """Turns a tier off after a failure and back on after `retry_after` seconds."""

    name = ""
    retry_after = 5.0

    def __init__(self) -> None:
        self.down_since: float | None = None
        self.last_error = ""

    @property
    def up(self) -> bool:
        if self.down_since is None:
            return True
        if time.monotonic() - self.down_since > self.retry_after:
            self.down_since = None  # half-open: the next call tries again
            return True
        return False

    def _failed(self, exc: BaseException) -> None:
        if self.down_since is None:
            log.warning("%s tier unavailable, serving without it: %s", self.name, exc)
        self.down_since = time.monotonic()
        self.last_error = f"{type(exc).__name__}: {exc}"

    def _ok(self) -> None:
        if self.last_error and self.down_since is None:
            log.warning("%s tier is back", self.name)
            self.last_error = ""


class DiskTier(_Degradable):
    """L1: diskcache on a directory shared by the node's workers (SQLite index + files, atomic writes)."""

    name = "disk"

    def __init__(self, directory: str, size_limit: int) -> None:
        super().__init__()
        self.directory = directory
        self.cache = diskcache.Cache(directory, size_limit=size_limit, eviction_policy="least-recently-used",
                                     disk_min_file_size=64 * 1024, statistics=False)

    def get(self, digest: str, key: str) -> Entry | None:
        if not self.up:
            return None
        try:
            raw = self.cache.get(digest)
        except Exception as exc:  # noqa: BLE001 - any storage failure degrades to a miss
            self._failed(exc)
            return None
        if raw is None:
            return None
        try:
            return Entry.loads(raw, key)
        except CorruptEntry as exc:
            log.warning("corrupt disk entry %s removed: %s", digest, exc)
            self.delete(digest)
            return None

    def set_many(self, items: list[tuple[str, Entry]]) -> None:
        """Write entries in one SQLite transaction (one commit for a whole batch). Blocking: callers
        run it in a thread so the event loop never waits on the disk."""
        if not self.up or not items:
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
        self.cache.close()


class RedisTier(_Degradable):
    """L2: Redis shared by every node; entries carry a TTL so `maxmemory-policy allkeys-lru` works."""

    name = "redis"
    prefix = "edge:e:"

    def __init__(self, url: str, max_body: int) -> None:
        super().__init__()
        self.url = url
        self.max_body = max_body
        self.client = aioredis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=1.0,
                                              health_check_interval=0)

    async def get_many(self, pairs: list[tuple[str, str]]) -> list[Entry | None]:
        if not self.up or not pairs:
            return [None] * len(pairs)
        try:
            raws = await self.client.mget([self.prefix + d for d, _ in pairs])
            self._ok()
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return [None] * len(pairs)
        out: list[Entry | None] = []
        for (digest, key), raw in zip(pairs, raws):
            entry = None
            if raw is not None:
                try:
                    entry = Entry.loads(raw, key)
                except CorruptEntry as exc:
                    log.warning("corrupt redis entry %s removed: %s", digest, exc)
                    await self.delete(digest)
            out.append(entry)
        return out

    async def get(self, digest: str, key: str) -> Entry | None:
        return (await self.get_many([(digest, key)]))[0]

    async def set_many(self, items: list[tuple[str, Entry]]) -> None:
        """One pipelined round trip for a whole batch of entries."""
        items = [(d, e) for d, e in items if len(e.body) <= self.max_body]
        if not self.up or not items:
            return
        now = time.time()
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for digest, entry in items:
                    pipe.set(self.prefix + digest, entry.dumps(), px=int(max(1.0, entry.stale_until - now) * 1000))
                await pipe.execute()
            self._ok()
        except (RedisError, OSError) as exc:
            self._failed(exc)

    async def delete(self, digest: str) -> None:
        try:
            await self.client.delete(self.prefix + digest)
        except (RedisError, OSError) as exc:
            self._failed(exc)

    async def ping(self) -> bool:
        try:
            await self.client.ping()
            self.down_since = None
            return True
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return False

    async def close(self) -> None:
        await self.client.aclose()
