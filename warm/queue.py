"""The distributed warm queue on Redis Streams (issue 16.2): its keys, its records and every Redis call.

A run is planned once (`warm … --queue URL`) and its items, one planned request each (a `get_thumbnails`
batch, a grid, an API page …), are appended to the run's stream as JSON; any number of `warm worker`s
on any host consume it through one consumer group, so each entry is delivered to one worker, and an
entry stays in the group's pending list until a worker acknowledges it. A worker that dies leaves its
entries pending: after `--idle-timeout` another worker takes them over (`XAUTOCLAIM`), and an entry
delivered more than the run's `max_deliveries` times (its workers keep dying on it) is recorded as
failed instead of being tried forever. Nothing is ever dropped: every entry ends acknowledged, as
done or as a failure record in the run's `failed` stream.

Keys, all in one cluster slot per run (the `{run}` hash tag):
  warm:runs                 sorted set: run id → created (Unix seconds)
  warm:{RUN}:meta           hash: options (JSON: edge, host, jobs, rate, retries, timeout, refresh_before,
                            max_deliveries, argv; never the token), created, state (planning | queued),
                            beat (the planner's last batch), total, done, ok, skip, fail, early (items
                            recorded while planning), started
                            (a worker's first read), last (the last acknowledgement), reclaimed, duplicates
  warm:{RUN}:items          the stream of items not yet acknowledged; group `workers`
  warm:{RUN}:failed         stream of failure records (JSON: url, kind, obj, status, reason, attempts, worker)
  warm:{RUN}:workers        hash: `<worker>:ok|skip|fail|reclaimed` counters and `<worker>:seen` (Unix seconds)
  warm:{RUN}:starts         hash: entry id in flight → executions started (more than one: a duplicate)

Acknowledging and counting happen in one Lua script, and only when `XACK` removed the entry from the
pending list, so the counters are exact even when a slow worker and the one that reclaimed its entry
both finish it. The script also deletes the entry and its start count: Redis holds only the work not
yet done (IDR's 2 M browsing URLs would otherwise stay there), the failures and the counters.
"""
from __future__ import annotations

import asyncio
import json
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import TypeVar

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError, ResponseError, TimeoutError as RedisTimeout

from edge.settings import safe_url

from .model import FAIL, OK, SKIP, Item, Outcome

RUNS = "warm:runs"
GROUP = "workers"
ENQUEUE_BATCH = 500  # XADDs per pipelined transaction
FLUSH_SECONDS = 2.0  # …or fewer, when planning has been this long without a batch (its heartbeat)
STALLED = 300.0  # seconds without a planning batch after which a run still "planning" counts as abandoned
STATES = (OK, SKIP, FAIL)
T = TypeVar("T")

# KEYS: items, meta, workers, failed, starts. ARGV: group, entry id, worker, state, now, failure record or "".
_COMPLETE = """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[5], ARGV[2])
redis.call('HINCRBY', KEYS[2], ARGV[4], 1)
redis.call('HINCRBY', KEYS[2], 'done', 1)
redis.call('HSET', KEYS[2], 'last', ARGV[5])
redis.call('HINCRBY', KEYS[3], ARGV[3] .. ':' .. ARGV[4], 1)
if ARGV[6] ~= '' then redis.call('XADD', KEYS[4], '*', 'entry', ARGV[2], 'record', ARGV[6]) end
return 1
"""
# KEYS: starts, meta. ARGV: entry id, now. An entry started a second time counts one duplicate.
_START = """
redis.call('HSETNX', KEYS[2], 'started', ARGV[2])
if redis.call('HINCRBY', KEYS[1], ARGV[1], 1) > 1 then redis.call('HINCRBY', KEYS[2], 'duplicates', 1) end
return 1
"""


def run_state(meta: dict, now: float) -> str:
    """done (planned, every item acknowledged) | queued | planning | stalled (the planner stopped sending
    batches long ago and every item it sent is acknowledged: its host died; workers leave such a run)."""
    settled = int(meta.get("done") or 0) >= int(meta.get("total") or 0)
    if meta.get("state") == "queued":
        return "done" if settled else "queued"
    return "stalled" if settled and now - float(meta.get("beat") or 0) > STALLED else "planning"


class QueueDown(Exception):
    """Redis stayed unreachable for longer than the caller's patience."""


class NoRun(KeyError):
    pass


@dataclass(frozen=True, slots=True)
class RunOptions:
    """What a worker needs to execute a run's items, stored once per run (never the token)."""

    edge: str
    host: str | None = None
    jobs: int = 6
    rate: float | None = None
    retries: int = 3
    timeout: float = 120.0
    refresh_before: float = 0.0
    max_deliveries: int = 3
    argv: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Keys:
    """A run's keys (see the module's docstring)."""

    meta: str
    items: str
    failed: str
    workers: str
    starts: str

    def __init__(self, run: str) -> None:
        for part in Keys.__slots__:
            object.__setattr__(self, part, f"warm:{{{run}}}:{part}")


def encode(item: Item) -> str:
    return json.dumps({"url": item.url, "kind": item.kind, "obj": item.obj, "ids": list(item.ids)},
                      separators=(",", ":"))


def decode(text: str) -> Item:
    d = json.loads(text)
    return Item(d["url"], d["kind"], d["obj"], tuple(d["ids"]))


def failure(item: Item, outcome: Outcome, attempts: int, worker: str) -> str:
    return json.dumps({"url": item.url, "kind": item.kind, "obj": item.obj, "status": outcome.status,
                       "reason": outcome.reason, "attempts": attempts, "worker": worker})


class WarmQueue:
    """One Redis connection pool and the queue's operations; every call waits out a Redis outage for at
    most `patience` seconds (backoff 0.5 s doubling to 10 s, one message when it starts), then QueueDown."""

    def __init__(self, url: str, patience: float = 120.0, say: Callable[[str], None] | None = None) -> None:
        self.url = url
        self.redis = aioredis.Redis.from_url(url, decode_responses=True, socket_timeout=10,
                                             socket_connect_timeout=5)
        self.patience = patience
        self.say = say or (lambda text: print(text, file=sys.stderr, flush=True))
        self._complete = self.redis.register_script(_COMPLETE)
        self._start = self.redis.register_script(_START)
        self.down = False  # said that Redis is unreachable (once for every call waiting on it)

    async def call(self, op: Callable[[], Awaitable[T]]) -> T:
        deadline, pause = time.monotonic() + self.patience, 0.5
        while True:
            try:
                result = await op()
            except (RedisConnectionError, RedisTimeout, OSError) as exc:
                if time.monotonic() + pause > deadline:
                    raise QueueDown(f"cannot reach the queue's Redis at {safe_url(self.url)}: {exc}") from None
                if not self.down:
                    self.say(f"warm: the queue's Redis at {safe_url(self.url)} is unreachable ({exc}); "
                             f"retrying for up to {self.patience:.0f}s")
                    self.down = True
                await asyncio.sleep(pause)
                pause = min(pause * 2, 10.0)
                continue
            if self.down:
                self.say(f"warm: the queue's Redis at {safe_url(self.url)} answers again")
                self.down = False
            return result

    async def close(self) -> None:
        await self.redis.aclose()

    # --- planning ------------------------------------------------------------------------------------
    async def create(self, options: RunOptions) -> str:
        now = time.time()
        run = time.strftime("%Y%m%d-%H%M%S", time.localtime(now)) + "-" + secrets.token_hex(2)
        k = Keys(run)

        async def op() -> None:
            async with self.redis.pipeline(transaction=True) as p:
                p.hset(k.meta, mapping={"options": json.dumps(asdict(options)), "created": now, "beat": now,
                                        "state": "planning",
                                        "total": 0, "done": 0, "early": 0, **{s: 0 for s in STATES}})
                p.xgroup_create(k.items, GROUP, id="0", mkstream=True)
                p.zadd(RUNS, {run: now})
                await p.execute()
        await self.call(op)
        return run

    async def add(self, run: str, items: Iterable[Item]) -> int:
        """Append items (one transaction: the stream and `total` never disagree)."""
        k, batch = Keys(run), [encode(i) for i in items]
        if not batch:
            return 0

        async def op() -> None:
            async with self.redis.pipeline(transaction=True) as p:
                for text in batch:
                    p.xadd(k.items, {"item": text})
                p.hincrby(k.meta, "total", len(batch))
                p.hset(k.meta, "beat", time.time())
                await p.execute()
        await self.call(op)
        return len(batch)

    async def record_early(self, run: str, records: list[tuple[Item, Outcome]]) -> None:
        """Items the planning itself settled (a grid read while listing, a listing that failed): counted in
        the run as done without a stream entry; a failure is recorded like a worker's."""
        k = Keys(run)
        if not records:
            return

        async def op() -> None:
            async with self.redis.pipeline(transaction=True) as p:
                for item, outcome in records:
                    for name in ("total", "done", "early", outcome.state):
                        p.hincrby(k.meta, name, 1)
                    p.hincrby(k.workers, f"planner:{outcome.state}", 1)
                    if outcome.state == FAIL:
                        p.xadd(k.failed, {"entry": "", "record": failure(item, outcome, 1, "planner")})
                await p.execute()
        await self.call(op)

    async def planned(self, run: str) -> None:
        await self.call(lambda: self.redis.hset(Keys(run).meta, "state", "queued"))

    # --- working -------------------------------------------------------------------------------------
    async def options(self, run: str) -> RunOptions:
        text = await self.call(lambda: self.redis.hget(Keys(run).meta, "options"))
        if text is None:
            raise NoRun(f"no run {run!r} in the queue at {safe_url(self.url)}")
        return RunOptions(**json.loads(text))

    async def runs(self) -> list[str]:
        """Every run in the queue, oldest first."""
        return await self.call(lambda: self.redis.zrange(RUNS, 0, -1))

    async def find(self, run: str | None) -> str:
        """A run id from an id, a unique prefix, or None/"last" (the newest)."""
        runs = await self.runs()
        if not run or run == "last":
            if not runs:
                raise NoRun(f"no runs in the queue at {safe_url(self.url)}")
            return runs[-1]
        matches = [r for r in runs if r == run] or [r for r in runs if r.startswith(run)]
        if len(matches) != 1:
            raise NoRun(f"no run {run!r} in the queue at {safe_url(self.url)}" if not matches
                        else f"run {run!r} is ambiguous: {', '.join(matches)}")
        return matches[0]

    async def state(self, run: str) -> str:
        """`run_state` of a run: a worker works on it while it is queued or planning."""
        names = ("state", "total", "done", "beat")
        values = await self.call(lambda: self.redis.hmget(Keys(run).meta, *names))
        return run_state(dict(zip(names, values)), time.time())

    async def read(self, run: str, worker: str, count: int, block_ms: int) -> list[tuple[str, Item]]:
        """New entries for `worker` (at most `count`, waiting up to `block_ms` for the first)."""
        k = Keys(run)
        got = await self.call(lambda: self.redis.xreadgroup(GROUP, worker, {k.items: ">"}, count=count,
                                                            block=block_ms or None))
        return [(entry, decode(fields["item"])) for _, entries in got or [] for entry, fields in entries]

    async def reclaim(self, run: str, worker: str, idle_ms: int, count: int
                      ) -> tuple[list[tuple[str, Item]], list[tuple[str, Item, int]]]:
        """Entries idle longer than `idle_ms` (their worker died) taken over by `worker`: (to execute,
        (entry, item, deliveries) of those delivered more than the run's max_deliveries)."""
        k = Keys(run)
        answer = await self.call(lambda: self.redis.xautoclaim(k.items, GROUP, worker, idle_ms, "0-0", count=count))
        claimed = [(entry, decode(fields["item"])) for entry, fields in answer[1] if fields]
        if not claimed:
            return [], []
        bound = (await self.options(run)).max_deliveries
        # The range also holds this worker's own entries in flight (at most its --jobs): room for them.
        pending = await self.call(lambda: self.redis.xpending_range(
            k.items, GROUP, min=claimed[0][0], max=claimed[-1][0], count=len(claimed) + 1000, consumername=worker))
        delivered = {p["message_id"]: p["times_delivered"] for p in pending}

        async def op() -> None:
            async with self.redis.pipeline(transaction=True) as p:
                p.hincrby(k.meta, "reclaimed", len(claimed))
                p.hincrby(k.workers, f"{worker}:reclaimed", len(claimed))
                await p.execute()
        await self.call(op)
        over = [(e, i, delivered.get(e, 0)) for e, i in claimed if delivered.get(e, 0) > bound]
        return [(e, i) for e, i in claimed if delivered.get(e, 0) <= bound], over

    async def started(self, run: str, entry: str) -> None:
        k = Keys(run)
        await self.call(lambda: self._start(keys=[k.starts, k.meta], args=[entry, time.time()]))

    async def finish(self, run: str, entry: str, worker: str, item: Item, outcome: Outcome, attempts: int) -> bool:
        """Acknowledge and count; False when another worker acknowledged the entry first (a duplicate)."""
        k = Keys(run)
        record = failure(item, outcome, attempts, worker) if outcome.state == FAIL else ""
        return bool(await self.call(lambda: self._complete(keys=[k.items, k.meta, k.workers, k.failed, k.starts],
                                                            args=[GROUP, entry, worker, outcome.state, time.time(),
                                                                  record])))

    async def heartbeat(self, run: str, worker: str, entries: list[str]) -> None:
        """Reset the idle time of the entries `worker` is executing (XCLAIM JUSTID, not a delivery), so a
        live worker's long request is not reclaimed; and say when the worker was last seen."""
        k = Keys(run)
        if entries:
            await self.call(lambda: self.redis.xclaim(k.items, GROUP, worker, 0, entries, justid=True))
        await self.call(lambda: self.redis.hset(k.workers, f"{worker}:seen", time.time()))

    # --- status --------------------------------------------------------------------------------------
    async def status(self, run: str, failures: int = 50) -> dict:
        """The whole run: totals, pending per worker, failures, duplicates, rate and ETA."""
        k = Keys(run)

        meta, workers_hash, failed, n_failed = await self.call(lambda: self._status_reads(k, failures))
        if not meta:
            raise NoRun(f"no run {run!r} in the queue at {safe_url(self.url)}")
        try:
            summary = await self.call(lambda: self.redis.xpending(k.items, GROUP))
        except ResponseError:
            summary = {"pending": 0, "consumers": []}
        n = {name: int(meta.get(name, 0) or 0) for name in ("total", "done", "early", "reclaimed", "duplicates",
                                                              *STATES)}
        pending = int(summary["pending"])
        now = time.time()
        state = run_state(meta, now)
        complete = state in ("done", "stalled")
        started = float(meta.get("started", 0) or 0)
        end = float(meta.get("last", now)) if complete else now
        worked = n["done"] - n["early"]
        rate = worked / (end - started) if started and end > started else 0.0
        remaining = n["total"] - n["done"]
        workers: dict[str, dict] = {}
        for key, value in workers_hash.items():
            name, _, what = key.rpartition(":")
            workers.setdefault(name, {s: 0 for s in (*STATES, "reclaimed")} | {"pending": 0, "seen": None})
            workers[name][what] = float(value) if what == "seen" else int(value)
        for c in summary["consumers"]:
            workers.setdefault(c["name"], {s: 0 for s in (*STATES, "reclaimed")} | {"seen": None})
            workers[c["name"]]["pending"] = int(c["pending"])
        return {"run": run, "state": state,
                "created": float(meta.get("created", 0)), "options": json.loads(meta.get("options", "{}")),
                **n, "pending": pending, "waiting": max(remaining - pending, 0), "failed_total": n_failed,
                "rate": round(rate, 2), "eta": round(remaining / rate, 1) if rate and not complete else None,
                "workers": workers, "failed": [json.loads(fields["record"]) for _, fields in failed]}

    async def _status_reads(self, k: Keys, failures: int) -> list:
        async with self.redis.pipeline(transaction=False) as p:
            p.hgetall(k.meta)
            p.hgetall(k.workers)
            p.xrange(k.failed, count=failures)
            p.xlen(k.failed)
            return await p.execute()
