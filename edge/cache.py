"""The tiered cache as one object: L0 memory → L1 disk → L2 Redis, with purge validity applied.

A hit in a lower tier is copied up (Redis → memory now, → disk in the background); a store writes
through. An entry a purge invalidated is a miss (and is dropped from the local tiers on the way).
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine

from .entry import Entry
from .purge import PurgeRegistry
from .tiers import DiskTier, MemoryTier, RedisTier

Found = tuple[Entry | None, str]  # (entry, tier name) or (None, "")


class Background:
    """Tasks the answer does not wait for (disk copy-ups, background refreshes), cancelled at shutdown."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task] = set()

    def spawn(self, coro: Coroutine) -> asyncio.Future:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()


class TieredCache:
    def __init__(self, memory: MemoryTier | None, disk: DiskTier | None, redis: RedisTier | None,
                 registry: PurgeRegistry, background: Background) -> None:
        self.memory, self.disk, self.redis = memory, disk, redis
        self.registry = registry
        self.background = background
        self._landing: dict[str, asyncio.Future] = {}  # digest → the background split that stores it
        self._storing: set[asyncio.Future] = set()  # disk and Redis writes the answers did not wait for

    async def preload(self) -> None:
        """Start the disk writer thread (asyncio's default executor) at start-up: its first use costs ms."""
        if self.disk is not None:
            await asyncio.to_thread(self.disk.preload)

    def landing(self, digests: list[str]) -> Callable[[], None]:
        """Entries a background task is about to store (a cold batch answered before its split): their
        lookups wait for it, and hit, instead of missing and joining the fill. Call the returned
        function once they are stored (or not)."""
        done = asyncio.get_running_loop().create_future()
        for d in digests:
            self._landing[d] = done

        def landed() -> None:
            for d in digests:
                if self._landing.get(d) is done:
                    del self._landing[d]
            done.set_result(None)
        return landed

    def get_local(self, d: str, key: str) -> Found:
        """L0 then L1 (a disk hit is copied to memory); purged entries are dropped on the way."""
        valid = self.registry.valid
        if self.memory is not None:
            entry = self.memory.get(d)
            if entry is not None and entry.key == key:
                if valid(entry.tags, entry.epoch):
                    return entry, "memory"
                self.memory.delete(d)
        if self.disk is not None:
            entry = self.disk.get(d, key)
            if entry is not None:
                if valid(entry.tags, entry.epoch):
                    if self.memory is not None:
                        self.memory.set(d, entry)
                    return entry, "disk"
                self.disk.delete(d)
        return None, ""

    async def get(self, d: str, key: str) -> Found:
        return (await self.get_many([(d, key)]))[0]

    async def get_many(self, pairs: list[tuple[str, str]]) -> list[Found]:
        """Every key through the local tiers, then the rest from Redis in one round trip (MGET)."""
        if self._landing:
            pending = {f for d, _ in pairs if (f := self._landing.get(d)) is not None}
            if pending:
                await asyncio.wait(pending)
        self.registry.refresh()  # purges made by the node's other workers
        found = [self.get_local(d, key) for d, key in pairs]
        missing = [i for i, (entry, _) in enumerate(found) if entry is None]
        if missing and self.redis is not None:
            remote = await self.redis.get_many([pairs[i] for i in missing])
            copied = []
            for i, entry in zip(missing, remote):
                if entry is not None and self.registry.valid(entry.tags, entry.epoch):
                    found[i] = (entry, "redis")
                    copied.append((pairs[i][0], entry))
            if copied:
                self._copy_up(copied)
        return found

    def _copy_up(self, items: list[tuple[str, Entry]]) -> None:
        if self.memory is not None:
            for d, entry in items:
                self.memory.set(d, entry)
        if self.disk is not None:
            self._store_later(asyncio.to_thread(self.disk.set_many, items))

    async def put_many(self, items: list[tuple[str, Entry]], *, wait: bool = True) -> None:
        """Write through every tier: memory at once, disk in a thread (one transaction), Redis pipelined.
        `wait=False` finishes disk and Redis in the background, so the answer does not wait for them: for what
        no other process waits on through the shared tiers (batch members; any fill when no fill lock is
        shared). `flush` (at shutdown) waits for them."""
        if self.memory is not None:
            for d, entry in items:
                self.memory.set(d, entry)
        for _, entry in items:
            entry.stored_ok = True
        if wait:
            await self._put_shared(items)
        elif items:
            self._store_later(self._put_shared(items))

    def _store_later(self, coro: Coroutine) -> None:
        task = self.background.spawn(coro)
        self._storing.add(task)
        task.add_done_callback(self._storing.discard)

    async def flush(self, timeout: float) -> None:
        """Wait, up to `timeout` seconds, for the writes the answers did not wait for: entries a client was
        answered with reach the disk before the tiers close."""
        if self._storing:
            await asyncio.wait(set(self._storing), timeout=timeout)

    async def _put_shared(self, items: list[tuple[str, Entry]]) -> None:
        if self.disk is not None:
            await asyncio.to_thread(self.disk.set_many, items)
        if self.redis is not None:
            await self.redis.set_many(items)
