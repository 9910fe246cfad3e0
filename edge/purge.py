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

Redis may lose its state (a restart without persistence, FLUSHDB, eviction under allkeys-lru):
then INCR would start again from 1 and purges would be numbered below the epochs cached entries
carry — answered 200 and silently ignored. The rules that keep a purge a purge:
- a new number is never below the highest this node has seen (a Lua INCR with a floor), and a
  node that receives a number not above what it has seen applies it at its own next number and
  raises the shared counter to that;
- the purge state has a generation (a random token, kept in Redis and in the node's cache
  directory); a node that finds it gone or changed treats everything cached before now as purged
  (an `all` purge at its next number), so a loss costs misses, never a stale answer;
- keys and the channel carry a per-deployment prefix (`redis_prefix`, by default `edge:<db>:`,
  as pub/sub channels are shared by every database of a Redis server).
- a purge Redis cannot take (down or hung) is applied here and kept; the watch loop shares it, at
  a new number, once Redis answers.

On a Redis Cluster (`redis_cluster`) the prefix is a hash tag (`{edge:0:}`): the purge state is in one
slot, as the scripts read and write several of its keys; the channel is a classic one, which the
cluster bus carries to every node, so a listener may subscribe on any node (docs/deploy.md).

A soft purge is the same record under the tag `~<tag>`: it invalidates nothing, but an entry older
than it is stale from the moment this process saw it (`soft_since`), answered while one refresh
runs for at most `soft_purge_seconds` (decision.py), then a miss. It travels, numbered and re-based,
exactly as a hard purge does.
"""
from __future__ import annotations

import asyncio
import fcntl
import logging
import mmap
import os
import random
import secrets
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit


from .entry import Entry
from .kinds import ALL
from .redisclient import ERRORS as REDIS_ERRORS, connect, same_slot, subscriber

if TYPE_CHECKING:
    from .settings import Settings

log = logging.getLogger("edge.purge")
WATCH_INTERVAL = 1.0  # seconds between checks that Redis still holds this deployment's purge state
SHARE_TIMEOUT = 3.0  # most seconds a purge waits for Redis (a cluster client retries through other nodes)
SOFT = "~"  # the prefix of a soft purge's tag

# KEYS: seq, tags. ARGV: floor, channel, the tags joined by tabs. Takes the next purge number, never at or
# below `floor`, records it for each tag and publishes it: one round trip, atomic (on a cluster the two keys
# share a slot: same_slot), and a classic PUBLISH from a script reaches every node of a cluster.
_PURGE = """
local s = redis.call('INCR', KEYS[1])
local floor = tonumber(ARGV[1])
if s <= floor then s = floor + 1; redis.call('SET', KEYS[1], s) end
for tag in string.gmatch(ARGV[3], '[^\t]+') do redis.call('HSET', KEYS[2], tag, s) end
redis.call('PUBLISH', ARGV[2], s .. ' ' .. ARGV[3])
return s
"""
# KEYS: seq, gen. ARGV: floor, a new token. Raises seq to `floor`; returns the generation (made if absent).
_WATCH = """
local s = tonumber(redis.call('GET', KEYS[1]) or '0')
if s < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
local g = redis.call('GET', KEYS[2])
if not g then redis.call('SET', KEYS[2], ARGV[2]); g = ARGV[2] end
return g
"""


def default_prefix(redis_url: str) -> str:
    """`edge:<db>:`: one namespace per Redis database, whose pub/sub channels are server-wide."""
    path = urlsplit(redis_url).path.strip("/") if redis_url else ""
    return f"edge:{path if path.isdigit() else '0'}:"


class PurgeRegistry:
    def __init__(self, directory: str | None, redis_url: str = "", prefix: str = "",
                 clock: Callable[[], float] = time.time, cluster: bool = False) -> None:
        self.purged: dict[str, int] = {}
        self.clock = clock
        self.softened: dict[str, tuple[int, float]] = {}  # tag → (its newest soft purge, when seen here)
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
        self.redis = connect(redis_url, cluster, socket_connect_timeout=0.5, socket_timeout=2.0) if redis_url else None
        # On a cluster the purge state is one slot's (a hash tag): the scripts read and write several keys.
        prefix = same_slot(prefix or default_prefix(redis_url), cluster)
        self.channel, self.seq_key = prefix + "purge", prefix + "purge:seq"
        self.hash_key, self.gen_key = prefix + "purge:tags", prefix + "purge:gen"
        self._gen_path = os.path.join(directory, "purge.gen") if directory else None
        self.generation = self._read_generation()
        self._tasks: list[asyncio.Task] = []
        self.unshared: list[list[str]] = []  # purges Redis could not take: _watch shares them once it answers


    @classmethod
    def of(cls, settings: Settings) -> PurgeRegistry:
        """The purge state `settings` name (cache_dir, Redis), for a process beside the edges: `edge purge`
        without --edge, `edge watch`."""
        return cls(settings.cache_dir or None, settings.redis_url, settings.redis_prefix, cluster=settings.redis_cluster)

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

    def soft_since(self, entry: Entry | None) -> float | None:
        """When the newest soft purge of one of `entry`'s tags made it stale (None: not soft-purged)."""
        softened = self.softened
        if not softened or entry is None:
            return None
        seen = [mark[1] for tag in (*entry.tags, ALL)
                if (mark := softened.get(SOFT + tag)) is not None and mark[0] > entry.epoch]
        return max(seen) if seen else None

    def since(self, after: int, limit: int) -> list[tuple[int, str]]:
        """Purges newer than `after`, oldest first, at most `limit` (each tag at its newest number): what
        a re-warmer following the edge has not seen yet."""
        self.refresh()
        return sorted((seq, tag) for tag, seq in self.purged.items() if seq > after)[:limit]

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
            if tag.startswith(SOFT):
                self.softened[tag] = (seq, self.clock())
        self.known = max(self.known, seq)

    # --- writing -----------------------------------------------------------------------------------
    async def purge(self, tags: list[str], soft: bool = False) -> int:
        """Record a purge of `tags`; when it returns, no worker of this node serves an older copy (or,
        `soft`, serves one only as stale while it is refreshed)."""
        if soft:
            tags = [SOFT + tag for tag in tags]
        seq = None
        if self.redis is not None:
            try:
                async with asyncio.timeout(SHARE_TIMEOUT):
                    seq = await self._share(tags)
            except REDIS_ERRORS as exc:
                log.warning("purge of %s not shared with other nodes yet (Redis unavailable; retried every %.0f s "
                            "until it answers): %s", " ".join(tags), WATCH_INTERVAL, exc)
                self.unshared.append(tags)
        return self._record(tags, seq)

    async def _share(self, tags: list[str]) -> int:
        """Number, record and publish a purge in Redis (one script, on a cluster in the purge state's slot)."""
        await self._check_generation()
        return int(await self.redis.eval(_PURGE, 2, self.seq_key, self.hash_key, self.epoch(), self.channel,
                                         "\t".join(tags)))

    async def _share_unshared(self) -> None:
        """The purges made here while Redis (on a cluster: the purge state's master) was unreachable, shared
        now that it answers: at new numbers, so the other nodes apply them (and this one again: a few misses)."""
        while self.unshared:
            await self._share(self.unshared[0])
            log.warning("purge of %s shared with the other nodes after Redis came back", " ".join(self.unshared[0]))
            self.unshared.pop(0)

    async def _received(self, seq: int, tags: list[str]) -> None:
        """Another node's purge (or our own, echoed). A number not above what this node has seen
        means the shared counter went backwards: apply it at our next number and raise the counter."""
        if all(self.purged.get(tag, 0) >= seq for tag in tags):
            return  # already applied (our own purge)
        if seq > self.epoch():
            self._record(tags, seq)
            return
        self._record(tags, None)
        await self.redis.eval(_WATCH, 2, self.seq_key, self.gen_key, self.known, _token())

    async def _check_generation(self) -> None:
        """Raise the shared counter to what this node has seen; a lost or changed generation is a loss
        of the purge state: everything cached before now is purged here."""
        current = (await self.redis.eval(_WATCH, 2, self.seq_key, self.gen_key, self.epoch(), _token())).decode()
        if self.generation is not None and current != self.generation:
            log.warning("Redis lost the purge state (generation %s, now %s): everything cached before now "
                        "is treated as purged", self.generation, current)
            self._record([ALL], None)
            await self.redis.eval(_WATCH, 2, self.seq_key, self.gen_key, self.known, current)
        if current != self.generation:
            self.generation = current
            self._write_generation(current)

    def _read_generation(self) -> str | None:
        try:
            with open(self._gen_path) as fh:
                return fh.read().strip() or None
        except (OSError, TypeError):
            return None

    def _write_generation(self, token: str) -> None:
        if self._gen_path is not None:
            try:
                with open(self._gen_path + ".tmp", "w") as fh:
                    fh.write(token)
                os.replace(self._gen_path + ".tmp", self._gen_path)
            except OSError as exc:
                log.warning("could not keep the purge generation in %s: %s", self._gen_path, exc)

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
            await self._load()
        except REDIS_ERRORS as exc:
            log.warning("could not load purges from Redis: %s", exc)
        self._tasks = [asyncio.create_task(self._listen()), asyncio.create_task(self._watch())]

    async def _load(self) -> None:
        """Every purge Redis holds that this node has not applied (its newest number per tag)."""
        await self._check_generation()
        for tag, seq in (await self.redis.hgetall(self.hash_key)).items():
            if int(seq) > self.purged.get(tag.decode(), 0):
                self._record([tag.decode()], int(seq))

    async def _listen(self) -> None:
        """Follow the channel; after each (re)subscription catch up from Redis on what was published while
        this listener was away (on a cluster, its node died: the next try takes another node)."""
        backoff, attempt = 0.1, 0
        while True:
            try:
                pubsub = await subscriber(self.redis, attempt)
                await pubsub.subscribe(self.channel)
                if attempt:
                    await self._load()
                backoff = 0.1
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    seq_text, _, tags = message["data"].decode().partition(" ")
                    await self._received(int(seq_text), [t for t in tags.split("\t") if t])
            except asyncio.CancelledError:
                raise
            except (*REDIS_ERRORS, ValueError) as exc:
                log.debug("purge listener reconnecting: %s", exc)
                attempt += 1
                await asyncio.sleep(backoff * (0.8 + 0.4 * random.random()))
                backoff = min(backoff * 2, 5.0)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            try:
                await self._check_generation()
                await self._share_unshared()
            except REDIS_ERRORS as exc:
                log.debug("purge state check skipped (Redis unavailable): %s", exc)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.redis is not None:
            await self.redis.aclose()


def _token() -> str:
    return secrets.token_hex(8)
