"""The cross-process fill locks behind single-flight (see flight.py): Redis when L2 is on, else disk."""
from __future__ import annotations

import os
import socket
from collections.abc import Awaitable, Callable
from typing import TypeVar

from .entry import CorruptEntry, Entry
from .tiers import DiskTier, RedisTier

RESULT_TTL = 3.0  # seconds a non-storable answer stays readable for remote waiters
LOCK, RESULT = "edge:lock:", "edge:res:"  # key prefixes in L2's Redis
T = TypeVar("T")


class RedisLock:
    """`SET NX PX` leases in L2's Redis, for the nodes (and workers) sharing it. Every call goes through
    the tier (RedisTier.call): bounded by `redis_timeout`, skipped while the tier is down. So a hung Redis
    costs a fill at most one timeout: a lock that cannot be taken means "fill here", a poll that cannot be
    made "nobody holds it", and a lease that cannot be renewed or released lapses on its own. A lock
    records its holder (host, process), so a holder whose lease lapsed cannot free the next one's."""

    # Delete the lock only if this process still holds it.
    _RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"

    def __init__(self, tier: RedisTier, owner: str) -> None:
        self.tier = tier
        self.owner = f"{owner}@{socket.gethostname()}:{os.getpid()}"

    async def _on(self, key: str, command: Callable[[str], Awaitable[T]], default: T) -> T:
        """`command(key)` through the tier (so on a cluster, `key`'s node decides whether it is tried)."""
        return await self.tier.call(lambda: command(key), default, key)

    async def acquire(self, digest: str, ttl: float) -> bool:
        # SET NX answers None when someone holds the lock; without Redis there is no shared lock: fill
        # here rather than wait for nobody.
        client = self.tier.client
        return bool(await self._on(LOCK + digest, lambda k: client.set(k, self.owner, nx=True, px=int(ttl * 1000)),
                                   True))

    async def release(self, digest: str) -> None:
        await self._on(LOCK + digest, lambda k: self.tier.client.eval(self._RELEASE, 1, k, self.owner), None)

    async def renew(self, digest: str, ttl: float) -> None:
        await self._on(LOCK + digest, lambda k: self.tier.client.pexpire(k, int(ttl * 1000)), None)

    async def held(self, digest: str) -> bool:
        return bool(await self._on(LOCK + digest, self.tier.client.exists, 0))

    async def peek(self, digest: str, key: str) -> Entry | None:
        return await self.tier.get(digest, key)

    async def leave_result(self, digest: str, entry: Entry) -> None:
        await self._on(RESULT + digest, lambda k: self.tier.client.set(k, entry.dumps(), px=int(RESULT_TTL * 1000)),
                       None)

    async def result(self, digest: str, key: str) -> Entry | None:
        raw = await self._on(RESULT + digest, self.tier.client.get, None)
        try:
            return Entry.loads(raw, key) if raw else None
        except CorruptEntry:
            return None


class DiskLock:
    """For the workers of one node sharing a cache directory. A lock records its holder (unique per
    process: workers may share an `owner`), so a holder whose lease lapsed cannot free the next one's."""

    def __init__(self, tier: DiskTier, owner: str) -> None:
        self.tier = tier
        self.owner = f"{owner}@{os.getpid()}"

    async def acquire(self, digest: str, ttl: float) -> bool:
        return self.tier.add("lock:" + digest, self.owner, ttl)

    async def release(self, digest: str) -> None:
        name = "lock:" + digest
        try:
            with self.tier.cache.transact():
                if self.tier.cache.get(name) == self.owner:
                    self.tier.cache.delete(name)
        except Exception as exc:  # noqa: BLE001 - the lease lapses on its own
            self.tier._failed(exc)

    async def renew(self, digest: str, ttl: float) -> None:
        try:
            self.tier.cache.touch("lock:" + digest, expire=ttl)
        except Exception:  # noqa: BLE001 - the lease lapses and another worker may fill too
            pass

    async def held(self, digest: str) -> bool:
        try:
            return ("lock:" + digest) in self.tier.cache
        except Exception:  # noqa: BLE001 - a broken disk holds no locks
            return False

    async def peek(self, digest: str, key: str) -> Entry | None:
        return self.tier.get(digest, key)

    async def leave_result(self, digest: str, entry: Entry) -> None:
        try:
            self.tier.cache.set("res:" + digest, entry.dumps(), expire=RESULT_TTL)
        except Exception:  # noqa: BLE001
            pass

    async def result(self, digest: str, key: str) -> Entry | None:
        try:
            raw = self.tier.cache.get("res:" + digest)
            return Entry.loads(raw, key) if raw else None
        except Exception:  # noqa: BLE001
            return None


