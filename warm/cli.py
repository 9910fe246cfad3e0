"""`warm`: fill the omero-edge cache before users arrive (see docs/warm.md).

Parses and checks the command line (bad input is a one-line error, never a traceback), builds the
source, target and journal a command needs, and runs the pipeline under the runner with progress;
Ctrl-C or SIGTERM stop cleanly with the journal consistent and say how to resume.
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import os
import signal
import sys
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

from . import follow, queue_cli
from .dates import BadDate, parse_date
from .enumerate_api import ApiClient, ApiSource, SourceError
from .journal import Journal, default_path
from edge.protocol import DEFAULT_THUMBNAILS_BATCH

from .browse import PAGE_SIZE, PAGE_URL, NoGroup, active_group
from .model import (API, BROWSE, GRID, IMGDATA, IMGPANEL, IMGTAB, KINDS, THUMB, TILE, WELL, Fatal, Item, Outcome,
                    Ref)
from .pipeline import Feeder, image_refs, walk
from .plan import DEFAULT_API_LIMIT, Planner
from .progress import Counters, Reporter, _duration
from .runner import Runner
from .shard import BadShard, Shard
from .tiles import VIEWERS, BadLevels, parse_levels

EXIT_FAILURES, EXIT_FATAL, EXIT_USAGE, EXIT_INTERRUPTED = 3, 1, 2, 130
DEFAULT_EDGE = "http://127.0.0.1:8080"
SCOPED = ("screen", "plate", "project", "dataset")
COMMANDS = ("thumbnails", "metadata", "all", *SCOPED, "images", "tiles", "status", "follow", "worker")


class UsageError(Exception):
    pass


# --- the command line ---------------------------------------------------------------------------------
def _common(p: argparse.ArgumentParser) -> None:
    where = p.add_argument_group("where to warm")
    where.add_argument("--edge", default=DEFAULT_EDGE, metavar="URL",
                       help=f"the edge to warm through, using its warm mode (default {DEFAULT_EDGE})")
    where.add_argument("--token", default=os.environ.get("EDGE_WARM_TOKEN", ""),
                       help="the edge's warm_token (default: $EDGE_WARM_TOKEN); never stored in the journal")
    where.add_argument("--host", metavar="NAME",
                       help="Host the clients use to reach the edge, sent to it (API v0 keys contain the host "
                            "unless the edge sets public_base_url); default: the host of --edge")
    where.add_argument("--direct", action="store_true",
                       help="write the shared Redis tier directly (needs --redis and --backend), no edge involved")
    where.add_argument("--redis", metavar="URL", help="with --direct: the edges' L2 Redis, e.g. redis://127.0.0.1:6379/0")
    where.add_argument("--redis-cluster", action="store_true", default=None,
                       help="with --direct: --redis names a node of the edges' Redis Cluster (redis_cluster)")
    where.add_argument("--backend", metavar="URL", help="with --direct: OMERO.web's base URL")
    where.add_argument("--config", metavar="TOML",
                       help="with --direct: the edge's settings file (TTLs, thumbnail size, public_base_url); "
                            "EDGE_* variables apply too, as for the edge")
    source = p.add_argument_group("where the hierarchy comes from")
    source.add_argument("--api", metavar="URL",
                        help="base URL that API v0 listings and imgData are read from (default: --edge, or "
                             "--backend with --direct)")
    source.add_argument("--db", metavar="DSN",
                        help="enumerate from OMERO's PostgreSQL database instead (postgresql://user@host/omero)")
    source.add_argument("--group", type=int, action="append", default=[], metavar="ID",
                        help="with --db: only objects of this group (repeat; e.g. the public user's groups)")
    what = p.add_argument_group("what to warm")
    what.add_argument("--imgdata", action="store_true",
                      help="also warm webgateway/imgData/<id>/ and iviewer/image_data/<id>/ of every image")
    what.add_argument("--wells", action="store_true",
                      help="also warm the well panel's webgateway/well/<id>/children/ of every well with images "
                           "(and ?run=<id> per plate acquisition)")
    what.add_argument("--image-panels", action="store_true",
                      help="also warm every image's right-hand panel and map annotations as a click in the webclient "
                           "asks (webclient/metadata_details/image/<id>/, api/annotations/?…&image=<id>)")
    what.add_argument("--image-tabs", action="store_true",
                      help="also warm every image's acquisition, preview and hierarchy panes "
                           "(webclient/metadata_acquisition|preview|hierarchy/image/<id>/)")
    what.add_argument("--page-size", type=int, default=PAGE_SIZE, metavar="N",
                      help="images per page of a dataset in the webclient's tree: the site's omero.web.page_size "
                           f"(default {PAGE_SIZE})")
    what.add_argument("--thumbnails-batch", type=int, default=DEFAULT_THUMBNAILS_BATCH, metavar="N",
                      help="ids per get_thumbnails batch: the site's omero.web.thumbnails_batch, which the plate "
                           f"view uses and OMERO.web enforces (default {DEFAULT_THUMBNAILS_BATCH})")
    what.add_argument("--api-limit", type=int, default=DEFAULT_API_LIMIT, metavar="N",
                      help=f"page size of warmed API v0 listing pages, as clients ask (default {DEFAULT_API_LIMIT})")
    what.add_argument("--since", metavar="DATE",
                      help="only images acquired after DATE (2024-05-01, 2024-05-01T12:00Z, Unix seconds or an "
                           "age like 7d); objects without new images are left out")
    what.add_argument("--refresh", action="store_true", help="re-fetch even what is cached")
    what.add_argument("--refresh-before", metavar="DATE", help="re-fetch entries stored before DATE")
    what.add_argument("--shard", default="1/1", metavar="K/N",
                      help="warm only shard K of N (objects split by a hash of their id; run N hosts with "
                           "K = 1..N to cover everything exactly once)")
    what.add_argument("--limit", type=int, metavar="N", help="stop after N items (a sample, or a benchmark)")
    how = p.add_argument_group("how hard")
    how.add_argument("--jobs", type=int, default=6, metavar="N",
                     help="requests in flight at most: the backend's workers + 2, so every worker always has the "
                          "next request queued while the edge stores the last answer (default 6, for 4 workers)")
    how.add_argument("--rate", type=float, metavar="R", help="at most R requests a second")
    how.add_argument("--retries", type=int, default=3, metavar="N",
                     help="retries of a failing item (5xx, 429, timeouts) before it is recorded as Fail (default 3)")
    how.add_argument("--timeout", type=float, default=120.0, metavar="S", help="seconds per request (default 120)")
    journal = p.add_argument_group("journal and resume")
    journal.add_argument("--journal", metavar="PATH",
                         help=f"SQLite journal of runs and items (default {default_path()})")
    journal.add_argument("--resume", metavar="RUN",
                         help="continue run RUN (an id, a unique prefix, or 'last') without redoing finished items")
    journal.add_argument("--retry-failed", action="store_true", help="with --resume: try the failed items again")
    out = p.add_argument_group("output")
    out.add_argument("--dry-run", action="store_true",
                     help="list objects and plan URLs without warming: counts per kind and sample URLs "
                          "(listings are still read)")
    out.add_argument("--progress", choices=["auto", "bar", "line", "none"], default="auto",
                     help="auto: a live bar on a terminal, a line every --progress-interval seconds otherwise")
    out.add_argument("--progress-interval", type=float, default=10.0, metavar="S",
                     help="seconds between progress lines (default 10)")
    queue_cli.add_options(p)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="warm", description="Fill the omero-edge cache: thumbnails, plate grids, API pages, imgData and "
                                 "viewer tiles, through the edge's warm mode or straight into Redis.",
        epilog="`warm --resume RUN [options]` continues a run with its stored command line. "
               "Exit status: 0 all warmed, 3 some items failed (see `warm status`), 1 fatal error, 2 bad usage, "
               "130 interrupted.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_text, description=help_text)
        _common(c)
        return c

    for name, text in (("thumbnails", "every image's default thumbnail (as get_thumbnails batches)"),
                       ("metadata", "API v0 listing pages, every plate grid (every field and run) and what the "
                                    "webclient's browsing loads (tree, plate pages, panels, map annotations)")):
        command(name, f"Warm {text}, site-wide.").add_argument(
            "--all", action="store_true", required=True, help="the whole site (required: say it)")
    command("all", "Warm thumbnails and metadata of the whole site.")
    for name in SCOPED:
        c = command(name, f"Warm one or more {name}s and everything in them.")
        c.add_argument("ids", type=int, nargs="+", metavar="ID")
        c.add_argument("--only", choices=["thumbnails", "metadata"], help="one kind of URL only")
    c = command("images", "Warm the thumbnails (and with --imgdata, imgData) of listed images.")
    c.add_argument("--ids", required=True, metavar="FILE|-",
                   help="image ids: one a line, or CSV with an 'id' (or 'image'/'image_id') column; - = stdin")
    c = command("tiles", "Warm the lowest-resolution levels iviewer opens first, with its exact parameters.")
    c.add_argument("--image", type=int, action="append", required=True, metavar="ID", help="image id (repeat)")
    c.add_argument("--levels", default="2", metavar="SPEC",
                   help="N = the N lowest-resolution levels (default 2); A-B or A,B = those levels, 0 = full size")
    c.add_argument("--viewer", action="append", choices=VIEWERS, metavar="NAME",
                   help="whose URLs (repeat): iviewer (default: tiles, or the plane), classic (webgateway "
                        "img_detail: the plane, q=0.9), preview (the webclient's preview panel: the plane)")
    follow.add_parser(sub, _common)
    queue_cli.add_worker_parser(sub)
    s = sub.add_parser("status", help="Totals, failures and duration of a run.",
                       description="Totals and percentages of OK / Skip / Fail, the failures and the duration of a run.")
    s.add_argument("run", nargs="?", default="last", metavar="RUN", help="run id or prefix (default: the newest)")
    s.add_argument("--journal", metavar="PATH", help=f"journal file (default {default_path()})")
    s.add_argument("--failures", type=int, default=50, metavar="N", help="list at most N failures (default 50)")
    queue_cli.add_status_options(s)
    return p


def _url(value: str, flag: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{flag} must be an http(s)://host[:port] URL (got {value!r})")
    try:
        parts.port
    except ValueError:
        raise UsageError(f"{flag} has a bad port (got {value!r})") from None
    return value.rstrip("/")


def kinds_of(args: argparse.Namespace) -> frozenset[str]:
    only = getattr(args, "only", None)
    if args.command == "thumbnails" or only == "thumbnails" or args.command == "images":
        kinds = {THUMB}
    elif args.command == "metadata" or only == "metadata":
        kinds = {API, GRID, *BROWSE}
    elif args.command == "tiles":
        kinds = {TILE}
    else:
        kinds = {API, GRID, THUMB, *BROWSE}
    options = {IMGDATA: args.imgdata, WELL: args.wells, IMGPANEL: args.image_panels, IMGTAB: args.image_tabs}
    return frozenset(kinds | {kind for kind, wanted in options.items() if wanted})


def read_ids(spec: str) -> Iterator[int]:
    """Image ids from a file or stdin: one a line, or CSV with an id column (streamed, never all in memory)."""
    try:
        handle = sys.stdin if spec == "-" else open(spec, newline="")
    except OSError as exc:
        raise UsageError(f"--ids: cannot read {spec}: {exc.strerror}") from None
    with handle:
        first = handle.readline()
        if "," in first or not first.strip().isdigit():
            reader = csv.reader(handle)
            header = [h.strip().lower() for h in next(csv.reader([first]))]
            column = next((header.index(n) for n in ("id", "image", "image_id", "imageid") if n in header), None)
            if column is None:
                raise UsageError(f"--ids {spec}: CSV needs an id column (id, image or image_id); got {header}")
            rows = (row[column] for row in reader if len(row) > column)
        else:
            rows = iter([first, *handle])
        for number, text in enumerate(rows, 2):
            text = text.strip()
            if not text:
                continue
            if not text.isdigit():
                raise UsageError(f"--ids {spec}: {text!r} (entry {number - 1}) is not an image id")
            yield int(text)


# --- running --------------------------------------------------------------------------------------------
class Run:
    """Everything one warming command needs, built from checked arguments."""

    def __init__(self, args: argparse.Namespace, argv: list[str]) -> None:
        self.args, self.argv = args, argv
        self.shard = Shard.parse(args.shard)
        self.since = parse_date(args.since) if args.since else None
        self.refresh_before = time.time() + 10 * 365 * 86400 if args.refresh else \
            parse_date(args.refresh_before) if args.refresh_before else 0.0
        self.levels = parse_levels(args.levels) if args.command == "tiles" else (2, [])
        for flag in ("jobs", "retries", "api_limit", "thumbnails_batch", "page_size"):
            value = getattr(args, flag)
            if value < (0 if flag == "retries" else 1):
                raise UsageError(f"--{flag.replace('_', '-')} must be at least {0 if flag == 'retries' else 1}")
        if args.rate is not None and args.rate <= 0:
            raise UsageError("--rate must be positive")
        self.edge = _url(args.edge, "--edge")
        if args.queue:
            queue_cli.check_run(args)
        if args.direct:
            from edge.settings import ConfigError, Settings
            try:
                self.settings = Settings.load(args.config, redis_url=args.redis, redis_cluster=args.redis_cluster)
            except ConfigError as exc:
                raise UsageError(f"edge settings: {exc}") from None
            self.redis_url = self.settings.redis_url
            self.backend = _url(args.backend or self.settings.backend[0], "--backend")
            if not self.redis_url:
                raise UsageError("--direct needs --redis URL (the edges' L2 Redis)")
        elif not args.token and not (args.dry_run or args.queue):  # a queue's workers bring the token
            raise UsageError("warming through the edge needs its warm token: --token or EDGE_WARM_TOKEN "
                             "(or use --direct)")
        self.api_base = _url(args.api, "--api") if args.api else self.backend if args.direct else self.edge
        if args.db and not args.db.startswith(("postgresql://", "postgres://")):
            raise UsageError("--db must be a postgresql:// URL")
        self.host = args.host or (urlsplit(self.edge).netloc if args.direct else None)
        self.counters = Counters()
        viewers = tuple(dict.fromkeys(getattr(args, "viewer", None) or ["iviewer"]))
        self.planner = Planner(kinds_of(args), args.api_limit, self.levels, args.thumbnails_batch, viewers,
                               args.page_size)

    def target(self):
        a = self.args
        if a.direct:
            from .direct import DirectTarget
            return DirectTarget(self.settings, self.redis_url, self.backend, jobs=a.jobs, host=self.host,
                                refresh_before=self.refresh_before, timeout=a.timeout)
        from .target_edge import EdgeTarget
        return EdgeTarget(self.edge, a.token, jobs=a.jobs, host=self.host, refresh_before=self.refresh_before,
                          timeout=a.timeout)

    async def source(self, api: ApiClient):
        if self.args.db:
            from .enumerate_db import DbSource
            return await DbSource.connect(self.args.db, self.since, self.args.group)
        return ApiSource(api, self.since)

    async def refs(self, source, feeder: Feeder) -> list:
        """Phase one, filtered by shard and by what a resumed run finished."""
        a = self.args
        if a.command == "images":
            return [r for r in image_refs(read_ids(a.ids), self.shard) if feeder.wanted(r)]
        scope = {"thumbnails": "site", "metadata": "site", "all": "site", "tiles": "tiles"}.get(a.command, a.command)
        ids = a.image if a.command == "tiles" else getattr(a, "ids", [])
        page = [Ref("webclient", "page")] if self.planner.browsing else []  # once per run, whatever the scope
        return [r for r in page if self.shard.owns(r.name) and feeder.wanted(r)] + \
            [r async for r in walk(source, scope, ids) if self.shard.owns(r.name) and feeder.wanted(r)]


def _resolve_journal(path: str | None) -> Journal:
    try:
        return Journal(path or default_path())
    except OSError as exc:
        raise UsageError(f"--journal: cannot open {path}: {exc.strerror}") from None


async def _warm(run: Run) -> int:
    a = run.args
    # A listing that fails loses a whole object, so listings get at least 3 retries whatever --retries says.
    api = ApiClient(run.api_base, host=run.host, retries=max(a.retries, 3), timeout=a.timeout)
    local = not (a.dry_run or a.queue)
    journal = _resolve_journal(a.journal) if local else None
    target = run.target() if local else None
    source = None
    state, code = "failed", EXIT_FATAL
    try:
        if target is not None:
            await target.check()
        source = await run.source(api)
        if run.planner.browsing:
            run.planner.group(await learn_group(api))
        if a.queue and not a.dry_run:
            return await queue_cli.enqueue(run, source, api)
        info = journal.start(run.argv, str(run.shard), a.resume) if journal else None
        reporter = Reporter(run.counters, "none" if a.dry_run else a.progress, a.progress_interval)

        def done(item: Item, outcome: Outcome, attempts: int, ms: float) -> None:
            journal.record(item, outcome, attempts, ms)
            run.counters.states[outcome.state] += 1
            run.counters.fetched += outcome.fetched
            feeder.finished(item)
            reporter.tick()

        feeder = Feeder(source, api, run.planner, run.counters, journal=journal, record=None if a.dry_run else done,
                        refresh=bool(run.refresh_before), retry_failed=a.retry_failed, limit=a.limit)
        refs = await run.refs(source, feeder)
        run.counters.objects_total = len(refs)
        if a.dry_run:
            return await _dry_run(feeder, refs)
        print(f"warm: run {info.id}{' (resumed)' if a.resume else ''}, shard {run.shard}, {len(refs)} objects → "
              f"{'Redis ' + run.redis_url if a.direct else run.edge}; journal {journal.path}", file=sys.stderr)
        runner = Runner(target, jobs=a.jobs, retries=a.retries, rate=a.rate, done=done)
        with reporter:
            try:
                await runner.run(lambda queue: feeder.feed(refs, queue))
            except ExceptionGroup as group:  # the first real cause, not the task group's wrapper
                raise group.exceptions[0] from None
        state = "done"
        code = EXIT_FAILURES if run.counters.states["fail"] else 0
        print(f"warm: {state} in {_duration(time.monotonic() - run.counters.started)}: {run.counters.summary()}. "
              f"Details: warm status {info.id}", file=sys.stderr)
        return code
    except asyncio.CancelledError:
        state = "interrupted"
        if journal is not None and journal.run:
            print(f"\nwarm: interrupted; {run.counters.done} items recorded. Resume with: warm --resume "
                  f"{journal.run}{' --journal ' + str(journal.path) if a.journal else ''}", file=sys.stderr)
        raise
    finally:
        if journal is not None:
            if journal.run:
                journal.finish(state)
            journal.close()
        for closable in (target, source, api):
            if hasattr(closable, "close"):
                await closable.close()


async def learn_group(api: ApiClient) -> int:
    """The public user's active group, from the webclient page as a visitor gets it (the tree's `group=`)."""
    try:
        return active_group(await api.text(PAGE_URL))
    except SourceError as exc:
        raise Fatal(f"cannot learn the webclient's active group: GET {PAGE_URL} failed: {exc.reason}") from None
    except NoGroup as exc:
        raise Fatal(f"cannot learn the webclient's active group: {exc}") from None


async def _dry_run(feeder: Feeder, refs: list) -> int:
    counts = {k: 0 for k in KINDS}
    samples: dict[str, list[str]] = {k: [] for k in KINDS}
    async for item in feeder.items(refs):
        counts[item.kind] += 1
        if len(samples[item.kind]) < 3:
            short = "&".join(item.url.split("&")[:3]) + f"&… ({len(item.ids)} ids)" if len(item.ids) > 3 else item.url
            samples[item.kind].append(short)
    objects: dict[str, int] = {}
    for ref in refs:
        objects[ref.kind] = objects.get(ref.kind, 0) + 1
    print("objects: " + ", ".join(f"{k} {n}" for k, n in objects.items()))
    print(f"{'kind':<10} {'items':>9}")
    for kind in KINDS:
        if counts[kind]:
            print(f"{kind:<10} {counts[kind]:>9}")
    print(f"{'total':<10} {sum(counts.values()):>9}")
    for kind in KINDS:
        for url in samples[kind]:
            print(f"  {kind:<9} {url}")
    return 0


def _status(args: argparse.Namespace) -> int:
    journal = _resolve_journal(args.journal)
    try:
        info = journal.find(args.run)
    except KeyError as exc:
        raise UsageError(str(exc.args[0])) from None
    totals = journal.totals(info.id)
    wall = (info.finished or time.time()) - info.started
    print(f"run {info.id}  state {info.state}  shard {info.shard}")
    print(f"started {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(info.started))}  running time "
          f"{_duration(info.active)}  wall {_duration(wall)}")
    print("command: warm " + " ".join(info.argv))
    print(f"{'kind':<10} {'ok':>9} {'skip':>9} {'fail':>9} {'total':>9}")
    sums = {"ok": 0, "skip": 0, "fail": 0}
    for kind in KINDS:
        if kind in totals:
            t = totals[kind]
            print(f"{kind:<10} {t['ok']:>9} {t['skip']:>9} {t['fail']:>9} {sum(t.values()):>9}")
            for k in sums:
                sums[k] += t[k]
    total = sum(sums.values())
    print(f"{'total':<10} {sums['ok']:>9} {sums['skip']:>9} {sums['fail']:>9} {total:>9}")
    if total:
        print("         " + "  ".join(f"{k} {100 * v / total:.1f}%" for k, v in sums.items()))
    failures = journal.failures(info.id, args.failures)
    if failures:
        print(f"failures ({len(failures)} of {sums['fail']} shown):")
        print(f"  {'object':<16} {'status':>6}  url  — reason")
        for obj, url, status, reason in failures:
            print(f"  {obj:<16} {status:>6}  {url}  — {reason}")
    journal.close()
    return 0


def _resume_argv(argv: list[str]) -> list[str]:
    """`warm --resume RUN [options]` → the run's stored command line, then the options given now."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--resume")
    pre.add_argument("--journal")
    known, _ = pre.parse_known_args(argv)
    if not known.resume:
        return argv
    journal = _resolve_journal(known.journal)
    try:
        info = journal.find(known.resume)
    except KeyError as exc:
        raise UsageError(str(exc.args[0])) from None
    finally:
        journal.close()
    extra = [arg for arg in argv if arg != known.resume and not arg.startswith("--resume")]
    return [*info.argv, *extra, "--resume", info.id]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] not in COMMANDS and not argv[0].startswith("-h") and "--resume" in " ".join(argv):
            argv = _resume_argv(argv)
        args = parser().parse_args(argv)
        if args.command == "status":
            return queue_cli.status_main(args) if args.queue else _status(args)
        if args.command == "worker":
            return queue_cli.worker_main(args)
        if args.command == "follow":
            return _follow(args)
        run = Run(args, argv)
    except (UsageError, BadShard, BadDate, BadLevels, queue_cli.QueueUsage) as exc:
        print(f"warm: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return _run_async(run)


# What a follower hands on to the commands it runs (the token travels in the environment, never in argv).
_FOLLOW_PASSED = ("edge", "host", "jobs", "rate", "retries", "timeout", "journal", "thumbnails_batch", "progress")


def _follow(args: argparse.Namespace) -> int:
    if args.direct:
        raise UsageError("follow re-warms through the edge (its purge list is the edge's): drop --direct")
    if not args.token:
        raise UsageError("follow needs the edge's warm token: --token or EDGE_WARM_TOKEN")
    args.edge = _url(args.edge, "--edge")
    if args.start != "now" and not args.start.isdigit():
        raise UsageError(f"--from must be a purge number or now (got {args.start!r})")
    passed = [part for name in _FOLLOW_PASSED if (value := getattr(args, name)) is not None
              for part in (f"--{name.replace('_', '-')}", str(value))]
    passed += ["--imgdata"] if args.imgdata else []
    os.environ["EDGE_WARM_TOKEN"] = args.token
    try:
        return follow.follow(args, passed, main)
    except follow.FollowError as exc:
        print(f"warm: error: {exc}", file=sys.stderr)
        return EXIT_FATAL
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _run_async(run: Run) -> int:
    try:
        import uvloop
        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    received: list[int] = []

    async def guarded() -> int:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda s=sig: (received.append(s), task.cancel()))
        return await _warm(run)

    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(guarded())
    except asyncio.CancelledError:
        return EXIT_INTERRUPTED if not received or received[0] == signal.SIGINT else 128 + signal.SIGTERM
    except (Fatal, SourceError) as exc:
        print(f"warm: error: {exc}", file=sys.stderr)
        return EXIT_FATAL
    except UsageError as exc:
        print(f"warm: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - e.g. a database error: one line, not a traceback
        print(f"warm: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FATAL
