"""Single-flight: one backend fetch per key, in this process, across workers and across nodes.

In the process, waiters share the filler's future. Across processes, the filler holds a lock
(Redis `SET NX PX` when L2 is on, else an atomic diskcache `add` in the node's directory) and
other processes poll the shared tier for the result. A fill that produced nothing storable
leaves its result for a few seconds under a side key, so remote waiters get the same answer
instead of fetching again; the lock is a short lease the holder renews while it fills, so one whose
holder died (or cannot delete it: a full disk) expires within `LEASE` seconds. Nobody waits longer than
`fill_timeout`, and nobody falls back to an uncached fetch on a timer.
"""
from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Protocol

from .entry import Entry


class SharedLock(Protocol):
    async def acquire(self, digest: str, ttl: float) -> bool: ...
    async def release(self, digest: str) -> None: ...
    async def renew(self, digest: str, ttl: float) -> None: ...
    async def peek(self, digest: str, key: str) -> Entry | None: ...
    async def leave_result(self, digest: str, entry: Entry) -> None: ...
    async def result(self, digest: str, key: str) -> Entry | None: ...
    async def held(self, digest: str) -> bool: ...


# Seconds a cross-process fill lock lives unless its holder renews it (every LEASE / 4 while the fill
# runs). A holder that can no longer release it (killed, or a full disk refusing the delete) blocks
# the other processes for this long at most, not for `fill_timeout`.
LEASE = 2.0


class FillTimeout(Exception):
    """Another process held the fill longer than `fill_timeout`."""


class Flights:
    def __init__(self, shared: SharedLock | None, fill_timeout: float,
                 valid: Callable[[Entry], bool] = lambda entry: True) -> None:
        """`valid` rules out an entry a purge invalidated: a waiter polling the shared tier must not take
        the copy a purge just dropped while the holder is still refilling it."""
        self.shared = shared
        self.fill_timeout = fill_timeout
        self.valid = valid
        self._local: dict[str, asyncio.Future[Entry]] = {}
        self.owner = f"{os.getpid()}"

    def running(self, digest: str) -> bool:
        return digest in self._local

    async def run(self, digest: str, key: str, fill: Callable[[], Awaitable[Entry]]) -> tuple[Entry, bool]:
        """The entry for `key`, fetched at most once; the flag says whether this caller waited on another.
        A batch member's claim can settle with nothing (the batch had no final image for it): then
        this caller fills it itself."""
        future = self._local.get(digest)
        if future is not None:
            entry = await asyncio.shield(future)
            if entry is not None:
                return entry, True
        future = asyncio.get_running_loop().create_future()
        self._local[digest] = future
        try:
            entry, coalesced = await self._fill_once(digest, key, fill)
            future.set_result(entry)
            return entry, coalesced
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            if self._local.get(digest) is future:
                del self._local[digest]

    def claim(self, digests: Iterable[str]) -> tuple[dict[str, asyncio.Future], dict[str, asyncio.Future]]:
        """Claims, in this process, every key nobody is filling yet (a batch's missing members).
        Returns (claimed, others): the caller fills the claimed keys and must `settle` them; the
        others' futures give the entries other requests are fetching."""
        loop = asyncio.get_running_loop()
        claimed: dict[str, asyncio.Future] = {}
        others: dict[str, asyncio.Future] = {}
        for digest in digests:
            future = self._local.get(digest)
            if future is not None and digest not in claimed:  # a repeated key is claimed once, not awaited
                others[digest] = future
            elif digest not in claimed:
                claimed[digest] = self._local[digest] = loop.create_future()
        return claimed, others

    def settle(self, claimed: dict[str, asyncio.Future], results: Mapping[str, Entry | None] | None = None,
               error: BaseException | None = None) -> None:
        """Ends the claims: each waiter gets its entry (None: fill it yourself), or `error`."""
        for digest, future in claimed.items():
            if not future.done():
                if error is not None:
                    future.set_exception(error)
                    future.exception()
                else:
                    future.set_result((results or {}).get(digest))
            if self._local.get(digest) is future:
                del self._local[digest]

    async def _fill_once(self, digest: str, key: str, fill: Callable[[], Awaitable[Entry]]) -> tuple[Entry, bool]:
        if self.shared is None:
            return await fill(), False
        deadline = time.monotonic() + self.fill_timeout
        delay = 0.002
        while True:
            if await self.shared.acquire(digest, LEASE):
                renewal = asyncio.create_task(self._renew(digest))
                try:
                    entry = await fill()
                    if not entry.stored_ok:
                        await self.shared.leave_result(digest, entry)
                    return entry, False
                finally:
                    renewal.cancel()
                    await self.shared.release(digest)
            # Someone else is filling: wait for their entry (or their non-storable answer).
            while time.monotonic() < deadline:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)
                entry = await self.shared.peek(digest, key) or await self.shared.result(digest, key)
                if entry is not None and self.valid(entry):
                    return entry, True
                if not await self.shared.held(digest):
                    break  # the holder died or gave up without a result: try to take the fill
            else:
                raise FillTimeout(key)

    async def _renew(self, digest: str) -> None:
        while True:
            await asyncio.sleep(LEASE / 4)
            await self.shared.renew(digest, LEASE)
