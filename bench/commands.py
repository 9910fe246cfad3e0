"""The benchmark subcommands of `bench`: plate-384, tiles, browse, hits, warm and all.

Each run starts everything it measures on loopback ports it picks (the simulated OMERO, the
edge, nginx, delay proxies) and stops it all by PID when it ends, even on errors or Ctrl-C.
"""
from __future__ import annotations

import argparse
import signal
from pathlib import Path
from collections.abc import Callable

from rich.console import Console
from rich.table import Table

from bench.certs import CertsUnavailable
from bench.clients import Transport
from bench.measure import LoadFailed, Meter, Record, run_matrix
from bench.nginx import SKIP_CHOICES, NginxMissing
from bench.procs import StartError
from bench.report import Report, load_report, print_report, write_json
from bench.sim.cli import non_negative_int, positive_int
from bench.targets import PREFETCH, RECACHE, TARGETS, RunSettings, Stack
from edge.settings import Settings

ERR = Console(stderr=True)
TRANSPORTS = tuple(t.value for t in Transport)
SCALE_PARTS = ("memory", "disk", "nginx", "plan")
Runner = Callable[[argparse.Namespace, Stack], Report]


def _csv(choices: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        bad = [item for item in items if item not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)} (comma-separated)")
        return items
    return parse


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("expected comma-separated integers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("expected comma-separated integers ≥ 1")
    return values


def _sizes(text: str) -> list[int]:
    from bench.scenarios.scale import parse_sizes

    try:
        return parse_sizes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _sizes_one(text: str) -> int:
    sizes = _sizes(text)
    if len(sizes) != 1:
        raise argparse.ArgumentTypeError("expected one count like 2.8M")
    return sizes[0]


def scale_memory_size() -> int:
    from edge.settings import Settings

    return Settings().memory_size


def _add_common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("backend and servers (the same for every target)")
    g.add_argument("--workers", type=positive_int, default=4,
                   help="backend worker slots of the simulated OMERO (default 4)")
    g.add_argument("--speed", type=float, default=1.0,
                   help="backend cost multiplier: 1 = default costs (thumbnail 15 ms, grid 50 ms, tile 80 ms), "
                        "0 = no added latency (default 1)")
    g.add_argument("--scale", choices=("small", "idr"), default="small", help="simulated data set (default small)")
    g.add_argument("--server-workers", type=positive_int, default=1,
                   help="worker processes of the edge and of nginx (default 1)")
    g.add_argument("--nginx-skip", choices=SKIP_CHOICES, default="idr",
                   help="nginx proxy_no_cache rule: idr = IDR's list of cacheable URLs (the plate grid and imgData "
                        "are not cached), none = cache every GET (default idr)")
    g.add_argument("--nginx-sendfile", choices=("on", "off"), default="on",
                   help="sendfile of the nginx proxy cache: on (Debian's nginx.conf; sequential HTTP/2 hits then wait "
                        "~40 ms each for a delayed ACK) or off (default on)")
    o = p.add_argument_group("output")
    o.add_argument("--json", metavar="FILE", help="write every figure and the settings as JSON")
    o.add_argument("--plot", metavar="FILE.png", help="write a matplotlib plot comparing the targets")


def _add_loads(p: argparse.ArgumentParser, modes: tuple[str, ...], targets: tuple[str, ...] = TARGETS,
               prefetch: bool = False) -> None:
    g = p.add_argument_group("what to measure")
    g.add_argument("--targets", type=_csv(targets), default=list(targets),
                   help=f"comma-separated subset of {','.join(targets)} (default all)")
    if prefetch:
        g.add_argument("--prefetch", action="store_true",
                       help=f"also {PREFETCH}: edge-cold with the edge's prefetch on, after edge-cold (its "
                            "prefetch counts per cell in the JSON's target_counts)")
    if len(modes) > 1:
        g.add_argument("--modes", type=_csv(modes), default=list(modes),
                       help=f"comma-separated subset of {','.join(modes)} (default all)")
    g.add_argument("--transports", type=_csv(TRANSPORTS), default=list(TRANSPORTS),
                   help="h1 = HTTP/1.1 on 6 connections, h2 = HTTP/2 cleartext (prior knowledge) on one, "
                        "h2-tls = HTTP/2 over TLS (ALPN) on one (default all; the backend speaks no TLS)")
    g.add_argument("--rtt", type=float, action="append", metavar="MS",
                   help="round-trip time added by the delay proxy; repeat for several (default: 0 and 20)")
    g.add_argument("--repeat", type=positive_int, default=5, help="timed loads per cell (default 5)")
    g.add_argument("--load-timeout", type=float, default=120.0, metavar="S",
                   help="a load that has not finished after S seconds fails the run (default 120)")


def _add_hits_options(p: argparse.ArgumentParser, transports: bool = True) -> None:
    g = p.add_argument_group("cache-hit load (h2load)")
    g.add_argument("--concurrency", type=_int_list, default=[1, 10, 100], metavar="N,N,...",
                   help="requests in flight, comma-separated (default 1,10,100)")
    g.add_argument("--requests", type=positive_int, default=50000,
                   help="requests per timed h2load run (default 50000)")
    g.add_argument("--runs", type=positive_int, default=3,
                   help="timed h2load runs per target, transport and concurrency; each figure is their median "
                        "(default 3)")
    g.add_argument("--warmup", type=non_negative_int, default=5000, metavar="N",
                   help="untimed requests before a cell's timed runs, on new connections: the server's first "
                        "lookups and allocations are not timed (default 5000; 0: none)")
    g.add_argument("--pin", choices=("on", "off"), default="on",
                   help="on: the server under load alone on the last CPU, h2load on the others, so CPU µs per hit "
                        "does not swing with where the scheduler puts them (issue 14's ceiling is measured pinned; "
                        "a one-CPU machine pins nothing); off: anywhere (default on)")
    if transports:
        g.add_argument("--transports", type=_csv(TRANSPORTS), default=["h2-tls"],
                       help="comma-separated subset of h1,h2,h2-tls (default h2-tls)")
        g.add_argument("--interfaces", type=_csv(("asgi", "rsgi")), metavar="I,I",
                       help="granian interfaces the edge and the bare app run on, each a target: subset of asgi,rsgi "
                            "(default: the edge's default, server_interface)")


def _add_warm_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("warmer")
    g.add_argument("--jobs", type=_int_list, metavar="N,N,...",
                   help="warmer requests in flight, comma-separated (default 1, workers, 2 × workers)")


def _settings(args: argparse.Namespace) -> RunSettings:
    return RunSettings(workers=args.workers, speed=args.speed, scale=args.scale,
                       server_workers=args.server_workers, nginx_skip=args.nginx_skip,
                       nginx_sendfile=args.nginx_sendfile)


def _targets(args: argparse.Namespace) -> list[str]:
    """--targets, with edge-prefetch after edge-cold (or last) when --prefetch is given."""
    targets = list(args.targets)
    if getattr(args, "prefetch", False) and PREFETCH not in targets:
        at = targets.index("edge-cold") + 1 if "edge-cold" in targets else len(targets)
        targets.insert(at, PREFETCH)
    return targets


def _load_params(args: argparse.Namespace, modes: tuple[str, ...]) -> dict:
    return {"targets": _targets(args), "modes": getattr(args, "modes", None) or list(modes), "transports": args.transports,
            "rtts_ms": args.rtt or [0.0, 20.0], "repeat": args.repeat, "load_timeout_s": args.load_timeout}


def _run_loads(scenario_type: type, modes: tuple[str, ...],
               finish: Callable[[object, list[Record]], None] | None = None,
               table: Callable[[list[Record]], Table] | None = None) -> Runner:
    """A Runner for a load scenario (bench.scenarios.plate / .tiles / .browse) over the full target matrix;
    `finish` adds figures to the records before the report, `table` replaces the default table."""
    def run(args: argparse.Namespace, stack: Stack) -> Report:
        params = _load_params(args, modes)
        meter = Meter(stack, args.load_timeout, _log)
        try:
            scenario = scenario_type(stack, meter)
            records, primed = run_matrix(stack, meter, scenario, params["targets"], params["modes"],
                                         [Transport(t) for t in params["transports"]], params["rtts_ms"],
                                         args.repeat)
        finally:
            meter.close()
        if finish is not None:
            finish(scenario, records)
        return load_report(scenario.name, _settings(args), {**params, **scenario.describe()}, records,
                           [f"{name}: filled by {how}" for name, how in primed.items()], table)
    return run


def run_plate(args: argparse.Namespace, stack: Stack) -> Report:
    """plate-384 with the bench's own clients, or with headless Chromium (--browser)."""
    from bench.scenarios import plate

    if not args.browser:
        return _run_loads(plate.PlateScenario, plate.MODES)(args, stack)
    from bench.browser import NOTES, run_browser

    params = {**_load_params(args, plate.MODES), "modes": ["webclient"], "transports": ["h2-tls"], "browser": True}
    records = run_browser(stack, params["targets"], params["rtts_ms"], args.repeat, args.load_timeout, _log)
    return load_report("plate-384", _settings(args), params, records, NOTES)


def run_browse(args: argparse.Namespace, stack: Stack) -> Report:
    from bench.report import steps_table
    from bench.scenarios import browse

    return _run_loads(browse.BrowseScenario, browse.MODES, browse.BrowseScenario.annotate, steps_table)(args, stack)


def run_hits(args: argparse.Namespace, stack: Stack) -> Report:
    from bench.scenarios import hits

    transports = [Transport(t) for t in args.transports]
    interfaces = getattr(args, "interfaces", None) or [Settings().server_interface]
    cores = hits.Cores.split(args.pin == "on")
    load = hits.Load(args.requests, args.warmup, args.runs, cores)
    if cores:
        _log(f"hits: {cores.describe()}")
    results, table = hits.run_hits(stack, transports, args.concurrency, load, _log, interfaces)
    params = {"transports": args.transports, "concurrency": args.concurrency, "requests": args.requests,
              "runs": args.runs, "warmup": args.warmup, "interfaces": interfaces,
              "pinned": cores.describe() if cores else "no"}
    return Report("hits", _settings(args), params, results, table, hits.NOTES)


def run_warm(args: argparse.Namespace, stack: Stack) -> Report:
    from bench.scenarios import warmrun

    jobs = args.jobs or sorted({1, args.workers, 2 * args.workers})
    results, table = warmrun.run_warm(stack, jobs, _log)
    return Report("warm", _settings(args), {"jobs": jobs}, results, table, warmrun.NOTES)


def run_all(args: argparse.Namespace, stack: Stack) -> Report:
    """plate-384, tiles, browse, hits and warm on one backend; the JSON holds each scenario's report."""
    from bench.scenarios import tiles

    runs: list[tuple[Runner, dict]] = [(run_plate, {"browser": False}),
                                       (_run_loads(tiles.TilesScenario, tiles.MODES), {"modes": None}),
                                       (run_browse, {"modes": None}),
                                       (run_hits, {"transports": ["h2-tls"]}), (run_warm, {})]
    reports = []
    for runner, overrides in runs:
        reports.append(runner(argparse.Namespace(**{**vars(args), **overrides}), stack))
        print_report(reports[-1])         # as each finishes: a later failure keeps the earlier tables

    def plot_all(path: str) -> None:
        stem = path.removesuffix(".png")
        for report in reports:
            if report.plot is not None:
                report.plot(f"{stem}-{report.scenario}.png")
    return Report("all", _settings(args), {}, [r.to_json() for r in reports], plot=plot_all)


def run_scale(args: argparse.Namespace, stack: Stack) -> Report:
    from bench.scenarios import scale, scale_nginx, scale_plan

    runs = {"memory": lambda: scale.run_memory(args.sizes, args.memory_size, args.lookups, _log),
            "disk": lambda: scale.run_disk(args.dir or stack.fresh_dir("scale-disk"), args.sizes, args.lookups, _log),
            "redis": lambda: scale.run_redis(args.redis, args.sizes, args.lookups, _log),
            "nginx": lambda: scale_nginx.run_nginx(stack, args.sizes, args.lookups, _log),
            "plan": lambda: [scale_plan.run_plan(stack, args.plan_images, _log)]}
    tiers = [t for t in args.tiers if t != "redis"] + (["redis"] if args.redis else [])
    rows = [row for tier in tiers for row in runs[tier]()]
    scale.add_ratios(rows)
    params = {"sizes": args.sizes, "tiers": tiers, "memory_size": args.memory_size, "lookups": args.lookups,
              "plan_images": args.plan_images}
    return Report("scale", _settings(args), params, rows, scale.scale_table(rows), scale.NOTES)


def _log(message: str) -> None:
    ERR.print(f"[dim]{message}[/dim]")


def _finish(args: argparse.Namespace, report: Report) -> None:
    print_report(report)
    if args.json:
        write_json(args.json, report.to_json())
    if args.plot and report.plot is not None:
        report.plot(args.plot)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _command(runner: Runner) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        signal.signal(signal.SIGTERM, _interrupt)       # stop what we started on SIGTERM too, not only Ctrl-C
        try:
            with Stack(_settings(args)) as stack:
                report = runner(args, stack)
        except (LoadFailed, StartError, NginxMissing, CertsUnavailable) as exc:
            # Verbatim and unwrapped: log tails and pip extras hold [brackets], a pip command must stay one line.
            ERR.print(f"bench: error: {exc}", markup=False, soft_wrap=True)
            return 1
        except KeyboardInterrupt:
            ERR.print("bench: interrupted; every process it started has been stopped")
            return 130
        _finish(args, report)
        return 0
    return run


def register(sub: argparse._SubParsersAction) -> None:
    from bench.scenarios import browse, plate, tiles

    p = sub.add_parser("plate-384", help="load a 384-well plate: backend direct vs edge vs nginx proxy cache",
                       description="Loads a 384-well plate as OMERO.web clients do: `webclient` (the plate grid, "
                                   "then get_thumbnails batches of 50 in parallel: 1 + 8 requests) and `per-well` "
                                   "(the grid, then one render_thumbnail per well: 1 + 384), over HTTP/1.1 with 6 "
                                   "connections and HTTP/2 on one (h2c and TLS), against the backend direct, the edge "
                                   "and nginx's proxy cache configured like IDR's, each cold and warm.")
    _add_loads(p, plate.MODES, prefetch=True)
    p.add_argument("--browser", action="store_true",
                   help="load the plate with headless Chromium instead (webclient mode, HTTP/2 over TLS, the page's "
                        "own Performance API timing); needs the Debian package chromium")
    _add_common(p)
    p.set_defaults(run=_command(run_plate))

    p = sub.add_parser("tiles", help="a viewer opening a pyramid image, zooming and panning",
                       description="iviewer's tile requests (render_image_region ?tile=…, derived from imgData) for "
                                   "a 1280×800 viewport: the whole image at the lowest level, four zoom steps, two "
                                   "pans; each view's tiles in parallel. Same targets and transports as plate-384.")
    _add_loads(p, tiles.MODES, prefetch=True)
    _add_common(p)
    p.set_defaults(run=_command(_run_loads(tiles.TilesScenario, tiles.MODES)))

    p = sub.add_parser("browse", help="a visitor browsing the webclient: screen → plate → well → image, "
                                      "project → dataset → image",
                       description="The webclient's browsing requests (docs/browse.md) click after click: the page "
                                   "(/webclient/?experimenter=-1, getImgRDef, open_with, the tree's root), a screen, "
                                   "its first plate (grid and thumbnails as JSONP), a well, its image and the image's "
                                   "tabs, then a project, a dataset and its first image. Every jQuery GET has a fresh "
                                   "_=<counter>. Per-click and total time, backend requests per visit (the never-"
                                   f"cached page requests apart). {RECACHE}: nginx filled as IDR's recache.py does "
                                   "(map annotations without _).")
    _add_loads(p, browse.MODES, (*TARGETS, RECACHE))
    _add_common(p)
    p.set_defaults(run=_command(run_browse))

    p = sub.add_parser("hits", help="cache-hit throughput and latency with h2load: edge vs nginx static vs proxy cache",
                       description="h2load against the warm edge, nginx serving the same bytes as static files, and "
                                   "nginx's warm proxy cache, at several concurrencies: req/s, mean and p99 latency, "
                                   "server CPU µs per request (from /proc).")
    _add_hits_options(p)
    _add_common(p)
    p.set_defaults(run=_command(run_hits))

    p = sub.add_parser("warm", help="warmer throughput against the backend's capacity",
                       description="Warms one 384-well plate (all fields) into a fresh edge with `warm plate` at "
                                   "several --jobs and compares thumbnails rendered per second with what the "
                                   "backend's workers can render.")
    _add_warm_options(p)
    _add_common(p)
    p.set_defaults(run=_command(run_warm))

    p = sub.add_parser("scale", help="hit cost, bytes, start-up, eviction and RSS of each tier at 10k, 300k, 3M entries",
                       description="Fills the memory and disk tiers (and Redis with --redis) through their own "
                                   "methods with synthetic thumbnail entries, and nginx's proxy cache with as many "
                                   "URLs, then measures per size: hit latency, bytes per entry, start-up, the cost "
                                   "of an insert that evicts, RSS; and each hit cost ÷ the smallest size's.")
    g = p.add_argument_group("what to measure")
    g.add_argument("--sizes", type=_sizes, default=[10_000, 300_000, 3_000_000], metavar="N,N,...",
                   help="entries per tier, comma-separated, k and M allowed (default 10k,300k,3M: 3M needs ~12 GB "
                        "of disk for the tier and as much for nginx's files)")
    g.add_argument("--memory-size", type=positive_int, default=scale_memory_size(), metavar="BYTES",
                   help="the memory tier's size limit (default the edge's memory_size)")
    g.add_argument("--lookups", type=positive_int, default=20_000, metavar="N",
                   help="timed hits per tier and size (default 20000)")
    g.add_argument("--redis", metavar="URL", help="also measure a Redis tier (redis://127.0.0.1:6379/0); its entries "
                                                  "live under bench-scale:e: and are removed at the end")
    g.add_argument("--dir", type=Path, metavar="DIR",
                   help="an empty directory for the disk tier (default a temporary one, removed at the end)")
    g.add_argument("--tiers", type=_csv(SCALE_PARTS), default=list(SCALE_PARTS),
                   help="comma-separated subset of memory,disk,nginx,plan (nginx = its proxy cache, plan = `warm "
                        "thumbnails --all --dry-run` over --plan-images in a PostgreSQL catalog; default all)")
    g.add_argument("--plan-images", type=_sizes_one, default=2_800_000, metavar="N",
                   help="images in the catalog the planner walks (default 2.8M, IDR's thumbnails)")
    _add_common(p)
    p.set_defaults(run=_command(run_scale))

    p = sub.add_parser("all", help="plate-384, tiles, browse, hits and warm in one run",
                       description="Every scenario with its defaults on one simulated backend; --json writes "
                                   "{\"results\": [one report per scenario]}, --plot FILE.png writes FILE-<scenario>.png.")
    _add_loads(p, plate.MODES)
    _add_hits_options(p, transports=False)
    _add_warm_options(p)
    _add_common(p)
    p.set_defaults(run=_command(run_all))
