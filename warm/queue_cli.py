"""The queue's command line: `warm … --queue URL` (plan and enqueue), `warm worker`, `warm status --queue`.

Kept apart from cli.py, which only hands over: the enqueuer plans exactly like a local run (same
walk, planner and feeder), then appends the items instead of running them.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
import time
from urllib.parse import urlsplit

from edge.settings import safe_url

from .journal import scrub
from .model import Fatal, Item, Outcome
from .pipeline import Feeder
from .progress import _duration
from .queue import ENQUEUE_BATCH, FLUSH_SECONDS, NoRun, QueueDown, RunOptions, WarmQueue
from .worker import Worker, WorkerOptions

REDIS_SCHEMES = ("redis", "rediss", "unix")


class QueueUsage(ValueError):
    pass


def queue_url(value: str) -> str:
    if urlsplit(value).scheme not in REDIS_SCHEMES:
        raise QueueUsage(f"--queue must be a redis:// URL (got {value!r})")
    return value


def add_options(p: argparse.ArgumentParser) -> None:
    """The enqueuing flags of every warming command."""
    q = p.add_argument_group("distributed queue")
    q.add_argument("--queue", metavar="URL",
                   help="plan the run and put its items on this Redis (redis://host:6379/0) for `warm worker`s "
                        "instead of warming them here")
    q.add_argument("--max-deliveries", type=int, default=3, metavar="N",
                   help="with --queue: an item whose workers died N times is recorded as failed (default 3)")


def add_worker_parser(sub: argparse._SubParsersAction) -> None:
    w = sub.add_parser("worker", help="Warm the items of queued runs (any number of workers, on any host).",
                       description="Consume queued runs (warm … --queue URL) through the `workers` consumer group, "
                                   "through the edge with its warm token; take over the items of workers that "
                                   "died. Leaves when every run is complete, unless --follow.")
    w.add_argument("--queue", required=True, metavar="URL", help="the queue's Redis (redis://host:6379/0)")
    w.add_argument("--run", metavar="RUN", help="only this run (id or unique prefix; default: every incomplete run)")
    w.add_argument("--name", default=f"{socket.gethostname()}-{os.getpid()}",
                   help="this worker's consumer name (default host-pid)")
    w.add_argument("--edge", metavar="URL", help="the edge to warm through (default: the run's --edge)")
    w.add_argument("--token", default=os.environ.get("EDGE_WARM_TOKEN", ""),
                   help="the edge's warm_token (default: $EDGE_WARM_TOKEN); never in the queue")
    w.add_argument("--jobs", type=int, metavar="N", help="requests in flight (default: the run's --jobs)")
    w.add_argument("--rate", type=float, metavar="R", help="at most R requests a second (default: the run's)")
    w.add_argument("--idle-timeout", type=float, default=60.0, metavar="S",
                   help="take over items another worker has held this long without an answer (default 60)")
    w.add_argument("--follow", action="store_true", help="keep waiting for new runs instead of leaving")
    w.add_argument("--poll", type=float, default=2.0, metavar="S", help="with --follow: seconds between looks")
    w.add_argument("--progress-interval", type=float, default=10.0, metavar="S",
                   help="seconds between this worker's progress lines (default 10; 0: none)")
    w.add_argument("--redis-patience", type=float, default=120.0, metavar="S",
                   help="how long to wait out an unreachable Redis before giving up (default 120)")


def add_status_options(s: argparse.ArgumentParser) -> None:
    s.add_argument("--queue", metavar="URL", help="a queued run's status from this Redis instead of the journal")
    s.add_argument("--json", action="store_true", help="with --queue: the status as JSON")


def failed(exc: Exception) -> int:
    """One line; an unknown run is a usage error (2, as `warm status RUN` of the journal), the rest fatal (1)."""
    print(f"warm: error: {exc.args[0] if isinstance(exc, NoRun) else exc}", file=sys.stderr)
    return 2 if isinstance(exc, NoRun) else 1


# --- enqueue ------------------------------------------------------------------------------------------
async def enqueue(run, source, api) -> int:
    """Plan `run` (a cli.Run) and append its items in batches; items the planning settled count as done."""
    a = run.args
    q = WarmQueue(queue_url(a.queue))
    early: list[tuple[Item, Outcome]] = []
    try:
        run_id = await q.create(RunOptions(run.edge, run.host, a.jobs, a.rate, a.retries, a.timeout,
                                           run.refresh_before, a.max_deliveries,
                                           [safe_url(arg) for arg in scrub(run.argv)]))
        feeder = Feeder(source, api, run.planner, run.counters, record=lambda item, outcome, *_: early.append(
            (item, outcome)), refresh=bool(run.refresh_before), limit=a.limit)
        refs = await run.refs(source, feeder)
        batch: list[Item] = []
        queued = settled = 0

        async def flush() -> None:
            nonlocal queued, settled
            queued += await q.add(run_id, batch)
            batch.clear()
            await q.record_early(run_id, early)
            settled += len(early)
            early.clear()

        last = time.monotonic()
        async for item in feeder.items(refs):
            batch.append(item)
            if len(batch) >= ENQUEUE_BATCH or time.monotonic() - last > FLUSH_SECONDS:
                await flush()
                last = time.monotonic()
        await flush()
        await q.planned(run_id)
    finally:
        await q.close()
    where = safe_url(a.queue)
    print(f"warm: run {run_id}: {len(refs)} objects, {queued} items queued on {where} ({settled} settled while "
          f"planning). Warm them with: warm worker --queue {where}; watch: warm status --queue {where} {run_id}",
          file=sys.stderr)
    return 0


# --- worker -------------------------------------------------------------------------------------------
def worker_main(args: argparse.Namespace) -> int:
    queue_url(args.queue)
    for flag in ("jobs", "rate", "idle_timeout", "poll"):
        value = getattr(args, flag)
        if value is not None and value <= 0:
            raise QueueUsage(f"--{flag.replace('_', '-')} must be positive")
    if args.progress_interval < 0 or args.redis_patience < 0:
        raise QueueUsage("--progress-interval and --redis-patience must not be negative")
    if not args.token:
        raise QueueUsage("a worker warms through the edge and needs its warm token: --token or EDGE_WARM_TOKEN")
    if args.edge and urlsplit(args.edge).scheme not in ("http", "https"):
        raise QueueUsage(f"--edge must be an http(s):// URL (got {args.edge!r})")
    options = WorkerOptions(args.name, args.token, args.edge and args.edge.rstrip("/"), args.jobs, args.rate,
                            args.idle_timeout, args.follow, args.run, args.poll, args.progress_interval)

    async def main() -> int:
        q = WarmQueue(args.queue, args.redis_patience)
        worker = Worker(q, options)
        loop, task = asyncio.get_running_loop(), asyncio.current_task()
        signals: list[int] = []

        def on_signal(sig: int) -> None:
            signals.append(sig)
            if len(signals) == 1:
                worker.stop()
            else:
                task.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)
        try:
            await worker.run()
        except (QueueDown, Fatal, NoRun) as exc:
            return failed(exc)
        finally:
            await q.close()
        return 0

    try:
        return asyncio.run(main())
    except asyncio.CancelledError:
        return 130


# --- status -------------------------------------------------------------------------------------------
def status_main(args: argparse.Namespace) -> int:
    queue_url(args.queue)

    async def read() -> dict:
        q = WarmQueue(args.queue, patience=10)
        try:
            return await q.status(await q.find(None if args.run == "last" else args.run), args.failures)
        finally:
            await q.close()

    try:
        status = asyncio.run(read())
    except (QueueDown, NoRun) as exc:
        return failed(exc)
    print(json.dumps(status, indent=1) if args.json else "\n".join(status_lines(status)))
    return 0


def status_lines(s: dict) -> list[str]:
    """`warm status --queue` as text: the run, its totals, its workers and its failures."""
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s["created"]))
    eta = _duration(s["eta"]) if s["eta"] is not None else "-"
    lines = [f"run {s['run']}  state {s['state']}  created {created}",
             "command: warm " + " ".join(s["options"].get("argv", [])),
             f"total {s['total']}  done {s['done']} (ok {s['ok']}  skip {s['skip']}  fail {s['fail']})  "
             f"pending {s['pending']}  waiting {s['waiting']}",
             f"reclaimed {s['reclaimed']}  duplicates {s['duplicates']}  rate {s['rate']:.1f} items/s  ETA {eta}",
             f"{'worker':<28} {'ok':>7} {'skip':>7} {'fail':>7} {'pending':>8} {'reclaimed':>9}  seen"]
    now = time.time()
    for name, w in sorted(s["workers"].items()):
        seen = f"{now - w['seen']:.0f}s ago" if w.get("seen") else "-"
        lines.append(f"{name:<28} {w['ok']:>7} {w['skip']:>7} {w['fail']:>7} {w['pending']:>8} "
                     f"{w['reclaimed']:>9}  {seen}")
    if s["failed"]:
        lines.append(f"failures ({len(s['failed'])} of {s['failed_total']} shown):")
        lines += [f"  {f['obj']:<16} {f['status']:>6}  {f['url']}  — {f['reason']} ({f['attempts']} attempts, "
                  f"{f['worker']})" for f in s["failed"]]
    return lines


def check_run(args: argparse.Namespace) -> None:
    """A warming command with --queue: what it cannot combine with."""
    queue_url(args.queue)
    for flag, why in (("direct", "workers warm through an edge"), ("resume", "a queued run is resumed by its workers"),
                      ("retry_failed", "a queued run's failures are in its `failed` stream")):
        if getattr(args, flag, None):
            raise QueueUsage(f"--queue and --{flag.replace('_', '-')} do not combine: {why}")
    if args.max_deliveries < 1:
        raise QueueUsage("--max-deliveries must be at least 1")

