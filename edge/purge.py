"""Purge by object without scanning the cache: per-object purge sequence numbers.

Every purge takes the next sequence number `s` and records `purged[tag] = s` for the objects
it names ("image:12", "plate:3", or "*" for everything). A fill records the sequence number
current when it *started* (its epoch); an entry is valid only while no tag it carries was
purged after that epoch. So a fill that raced a purge can never store an old copy that
outlives the purge, and a purge costs a few writes whatever the cache size.

Propagation: the workers of a node share a log file and an 8-byte counter (mmap) in the cache
directory, read on every request (sub-microsecond), so a purge is exact for the whole node the
moment it returns. With Redis, the sequence comes from Redis (INCR) and every purge is
published to the other nodes, which append it to their own log.
"""
from __future__ import annotations

import asyncio
import fcntl
import logging
import mmap
import os
import struct

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .kinds import ALL

log = logging.getLogger("edge.purge")
CHANNEL = "edge:purge"
SEQ_KEY = "edge:purge:seq"
HASH_KEY = "edge:purge:tags"


class PurgeRegistry:
    def __init__(self, directory: str | None, redis_url: str = "") -> None:
        self.purged: dict[str, int] = {}
        self.known = 0
        self._offset = 0
        self._log_path = self._seq_map = None
        if directory:
            os.makedirs(directory, exist_ok=True)
            self._log_path = os.path.join(directory, "purge.log")
            seq_path = os.path.join(directory, "purge.seq")
            fd = os.open(seq_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if os.fstat(fd).st_size < 8:
                    os.ftruncate(fd, 8)
                self._seq_map = mmap.mmap(fd, 8)
            finally:
                os.close(fd)
            open(self._log_path, "ab").close()
            self.refresh()
        self.redis = aioredis.Redis.from_url(redis_url, socket_connect_timeout=0.5,
                                             socket_timeout=2.0) if redis_url else None
        self._listener: asyncio.Task | None = None

    # --- reading (hot path) ------------------------------------------------------------------------
    def epoch(self) -> int:
        self.refresh()
        return self.known

    def refresh(self) -> None:
        """Pick up purges made by other workers of this node (one 8-byte read when nothing changed)."""
        if self._seq_map is None:
            return
        seq = struct.unpack_from("<Q", self._seq_map, 0)[0]
        if seq != self.known:
            self._read_log()

    def valid(self, tags: tuple[str, ...], epoch: int) -> bool:
        purged = self.purged
        if not purged:
            return True
        if purged.get(ALL, 0) > epoch:
            return False
        for tag in tags:
            if purged.get(tag, 0) > epoch:
                return False
        return True

    def _read_log(self) -> None:
        with open(self._log_path, "rb") as fh:
            fh.seek(self._offset)
            data = fh.read()
        end = data.rfind(b"\n") + 1
        for line in data[:end].splitlines():
            seq_text, _, tag = line.decode().partition(" ")
            self._apply(int(seq_text), tag)
        self._offset += end
        self.known = max(self.known, struct.unpack_from("<Q", self._seq_map, 0)[0])

    def _apply(self, seq: int, tag: str) -> None:
        if seq > self.purged.get(tag, 0):
            self.purged[tag] = seq
        self.known = max(self.known, seq)

    # --- writing -----------------------------------------------------------------------------------
    async def purge(self, tags: list[str]) -> int:
        """Record a purge of `tags`; when it returns, no worker of this node serves an older copy."""
        seq = None
        if self.redis is not None:
            try:
                seq = await self.redis.incr(SEQ_KEY)
                async with self.redis.pipeline(transaction=False) as pipe:
                    for tag in tags:
                        pipe.hset(HASH_KEY, tag, seq)
                    pipe.publish(CHANNEL, f"{seq} " + "\t".join(tags))
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                log.warning("purge not shared with other nodes (Redis unavailable): %s", exc)
                seq = None
        return self._record(tags, seq)

    def _record(self, tags: list[str], seq: int | None) -> int:
        if self._seq_map is None:
            seq = seq if seq is not None else self.known + 1
            for tag in tags:
                self._apply(seq, tag)
            return seq
        with open(self._log_path, "ab") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                current = struct.unpack_from("<Q", self._seq_map, 0)[0]
                seq = current + 1 if seq is None else seq
                fh.write("".join(f"{seq} {tag}\n" for tag in tags).encode())
                fh.flush()
                struct.pack_into("<Q", self._seq_map, 0, max(seq, current))
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        self._read_log()
        return seq

    # --- other nodes ---------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load purges made while this node was away and follow new ones."""
        if self.redis is None:
            return
        try:
            for tag, seq in (await self.redis.hgetall(HASH_KEY)).items():
                if int(seq) > self.purged.get(tag.decode(), 0):
                    self._record([tag.decode()], int(seq))
        except (RedisError, OSError) as exc:
            log.warning("could not load purges from Redis: %s", exc)
        self._listener = asyncio.create_task(self._listen())

    async def _listen(self) -> None:
        backoff = 0.1
        while True:
            try:
                pubsub = self.redis.pubsub()
                await pubsub.subscribe(CHANNEL)
                backoff = 0.1
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    seq_text, _, tags = message["data"].decode().partition(" ")
                    self._record([t for t in tags.split("\t") if t], int(seq_text))
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, ValueError) as exc:
                log.debug("purge listener reconnecting: %s", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
        if self.redis is not None:
            await self.redis.aclose()
