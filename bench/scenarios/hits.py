"""`bench hits`: cache-hit throughput and latency under load, measured with h2load.

Servers answer the same plate's thumbnail URLs from cache: the warm edge, nginx serving the very
same bytes as static files (the ceiling), nginx's proxy cache warmed by one pass, and the bare
app (bench/bare.py: a constant body of the thumbnails' mean size from memory, on granian with the
edge's options: the ceiling of any Python hit path), each edge and bare app once per granian
interface asked for (`edge-asgi`, `bare-rsgi`, ...); over h2-tls also the recommended shape, nginx
terminating TLS in front of each edge (`nginx-tls+edge-rsgi`: `edge nginx-conf`). Ratios: req/s ÷ nginx static, and req/s, CPU
µs/request and p99 ÷ the bare app on the same interface.
For each concurrency (requests in flight), h2load runs untimed warm-up requests, then a fixed number of
requests several times (`Load`), in rounds that time every cell once in turn; reported, each the median of
the timed runs: req/s, mean and p99
latency (h2load's per-request log), and the server's CPU time per request (utime+stime of its whole
process tree from /proc): the figure that carries to other machines. The server under load runs alone
on the last core and h2load on the others (`Cores`; `--pin off` lets the scheduler place them), so
req/s is bound by one server core or by the client, and CPU µs/request by the server's own work.
Concurrency c runs as ⌈c/10⌉ connections × c/⌈c/10⌉ streams (h2) or c connections (HTTP/1.1).
"""
from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from rich.table import Table

from bench.clients import Transport
from bench.measure import LoadFailed, percentile
from bench.nginx import Listeners, Nginx, static_conf
from bench.procs import HOST, Child, console_script, free_port, which
from bench.scenarios.plate import find_plate, warm_plate
from bench.targets import Edge, NginxCache, Stack

H2LOAD_TIMEOUT = 300.0
NOTES = ["Each server answers from its cache (the edge warmed by `warm plate`, nginx's proxy cache by one pass over "
         "the URLs, nginx static from files holding the edge's bytes); backend renders during the runs must be 0.",
         "server CPU µs/request = utime+stime of the server's process tree over the run ÷ requests; 1e6 ÷ it ≈ "
         "req/s per dedicated core."]


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid → (parent pid, utime+stime ticks) of every process, from one pass over /proc."""
    table: dict[int, tuple[int, int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        table[int(stat.parent.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    return table


def tree_pids(root: int, table: dict[int, tuple[int, int]] | None = None) -> set[int]:
    """`root` and all its descendants."""
    table = _proc_table() if table is None else table
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _) in table.items():
            if ppid == parent and pid not in tree:
                tree.add(pid)
                frontier.append(pid)
    return tree


def tree_cpu_seconds(root: int) -> float:
    """utime+stime of `root` and all its descendants, in seconds."""
    table = _proc_table()
    return sum(table[pid][1] for pid in tree_pids(root, table) if pid in table) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Cores:
    """Which CPUs the server under load and h2load run on: the server alone on the last core, h2load on the
    others (issue 14's ceiling is measured "pinned to one core"), so neither steals the other's time slices
    and CPU µs per hit does not swing with the scheduler's placement. One core: nothing pinned."""

    server: frozenset[int]
    client: frozenset[int]

    @classmethod
    def split(cls, pin: bool) -> Cores | None:
        cpus = sorted(os.sched_getaffinity(0))
        if not pin or len(cpus) < 2:
            return None
        return cls(frozenset(cpus[-1:]), frozenset(cpus[:-1]))

    def describe(self) -> str:
        return f"server on CPU {','.join(map(str, sorted(self.server)))}, h2load on {','.join(map(str, sorted(self.client)))}"

    def pin_server(self, roots: tuple[int, ...]) -> None:
        """Every thread of every process of the servers' trees (granian's Rust threads included)."""
        for root in roots:
            for pid in tree_pids(root):
                for task in Path(f"/proc/{pid}/task").glob("[0-9]*"):
                    try:
                        os.sched_setaffinity(int(task.name), self.server)
                    except OSError:
                        pass  # the thread ended meanwhile


class StaticNginx:
    """nginx serving files that hold the bytes the edge returned for each URL."""

    name = "nginx-static"

    def __init__(self, stack: Stack, bodies: dict[str, bytes]) -> None:
        root = stack.fresh_dir("static-root")
        for path, body in bodies.items():
            folder = root / path.strip("/")
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "body").write_bytes(body)
        self.listeners = Listeners(free_port(), free_port(), free_port())
        prefix = stack.fresh_dir("nginx-static")
        self.nginx = Nginx(stack.children, prefix, self.listeners,
                           static_conf(prefix, self.listeners, stack.certs, root, stack.settings.server_workers))

    def ports(self) -> dict[Transport, int]:
        return {Transport.H1: self.listeners.h1, Transport.H2: self.listeners.h2c, Transport.H2_TLS: self.listeners.tls}


class BareApp:
    """bench/bare.py on granian, a plain server (h1, h2c) and a TLS one, like the edge's."""

    def __init__(self, stack: Stack, interface: str, size: int, headers: list[tuple[str, str]]) -> None:
        """`headers`: an edge hit's (granian's own server and date aside), sent on every answer."""
        self.stack, self.interface, self.size, self.headers = stack, interface, size, headers
        self.name = f"bare-{interface}"
        self.plain_port, self.tls_port = free_port(), free_port()
        self.children: dict[bool, Child] = {}

    def start(self) -> None:
        certs = self.stack.certs
        for tls, port in ((False, self.plain_port), (True, self.tls_port)):
            argv = [sys.executable, "-m", "bench.bare", "--bind", f"{HOST}:{port}", "--size", str(self.size),
                    "--interface", self.interface, "--workers", str(self.stack.settings.server_workers),
                    "--headers", json.dumps(self.headers)]
            if tls:
                argv += ["--certfile", str(certs.cert), "--keyfile", str(certs.key)]
            self.children[tls] = self.stack.children.start(self.name, argv)
            self.children[tls].wait_port(port)

    def stop(self) -> None:
        for child in self.children.values():
            self.stack.children.stop(child)
        self.children = {}

    def ports(self) -> dict[Transport, int]:
        return {Transport.H1: self.plain_port, Transport.H2: self.plain_port, Transport.H2_TLS: self.tls_port}

    def roots(self, transport: Transport) -> tuple[int, ...]:
        return (self.children[transport is Transport.H2_TLS].pid,)


class NginxFront:
    """The recommended TLS shape: nginx terminates TLS (h2) in front of an edge's plain listener, with the config
    `edge nginx-conf` renders; one worker and no access log, like every other server here."""

    def __init__(self, stack: Stack, edge: Edge, interface: str) -> None:
        self.stack, self.edge = stack, edge
        self.name = f"nginx-tls+edge-{interface}"
        self.port, self.prefix = free_port(), stack.fresh_dir("nginx-front")
        self.child: Child | None = None
        argv = console_script("edge") + [
            "nginx-conf", "--edge", f"{HOST}:{edge.plain.port}", "--omero-web", f"{HOST}:{stack.sim.port}",
            "--listen", f"{HOST}:{self.port}", "--tls-cert", str(stack.certs.cert),
            "--tls-key", str(stack.certs.key), "--prefix", str(self.prefix)]
        conf = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout
        conf = conf.replace("worker_processes auto;", f"worker_processes {stack.settings.server_workers};")
        # As bench.nginx's servers: nginx's default ends a connection after 1,000 requests, and h2load does not
        # reconnect (the rest of that connection's share fails).
        conf = conf.replace("\nhttp {\n", "\nhttp {\n    keepalive_requests 1000000;\n", 1)
        (self.prefix / "nginx.conf").write_text(re.sub(r"access_log [^;]+;", "access_log off;", conf))

    def start(self) -> None:
        self.child = self.stack.children.start(self.name, [which("nginx") or "nginx", "-p", str(self.prefix),
                                                           "-c", str(self.prefix / "nginx.conf"), "-e", "stderr"])
        self.child.wait_port(self.port)

    def stop(self) -> None:
        if self.child is not None:
            self.stack.children.stop(self.child)
            self.child = None

    def ports(self) -> dict[Transport, int]:
        return {Transport.H2_TLS: self.port}

    def roots(self, transport: Transport) -> tuple[int, ...]:
        """nginx and the edge behind it: the shape's CPU is both."""
        return self.child.pid, self.edge.plain.child.pid


def h2load(urls: list[str], transport: Transport, concurrency: int, requests: int, log: Path,
           cpus: frozenset[int] | None = None) -> dict:
    """One h2load run over `urls` (in turn); `cpus`: the cores h2load may run on (None: any)."""
    binary = which("h2load")
    if binary is None:
        raise LoadFailed("h2load not found: apt-get install nghttp2-client (or `make system-deps`)")
    if transport is Transport.H1:
        shape = ["--h1", "-c", str(concurrency), "-m", "1"]
    else:
        conns = -(-concurrency // 10)
        shape = ["-c", str(conns), "-m", str(concurrency // conns)]
    url_file = log.with_suffix(".urls")
    url_file.write_text("\n".join(urls) + "\n")
    argv = [binary, "-n", str(requests), *shape, "-i", str(url_file), f"--log-file={log}"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as run:
        if cpus:
            os.sched_setaffinity(run.pid, cpus)  # before its first connection: h2load reads the URL file first
        try:
            out, err = run.communicate(timeout=H2LOAD_TIMEOUT)
        except subprocess.TimeoutExpired:
            run.kill()
            run.communicate()
            raise LoadFailed(f"h2load did not finish within {H2LOAD_TIMEOUT:.0f}s (stopped): {' '.join(argv)}") from None
    match = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", out)
    ok = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", out)
    if run.returncode != 0 or match is None or ok is None or int(ok.group(1)) != requests:
        raise LoadFailed(f"h2load failed ({run.returncode}): {' '.join(argv)}\n{out[-1500:]}{err[-1500:]}")
    latencies = [int(line.split("\t")[2]) / 1000 for line in log.read_text().splitlines() if line.count("\t") >= 2]
    return {"req_per_s": float(match.group(3)), "succeeded": int(ok.group(1)),
            "mean_ms": statistics.fmean(latencies), "p50_ms": statistics.median(latencies),
            "p99_ms": percentile(latencies, 99)}


@dataclass(frozen=True)
class Load:
    """How each cell is loaded: `warmup` untimed requests (new connections, the server's first allocations and
    lookups), then `repeat` timed runs of `requests`; a cell reports each figure's median over its runs."""

    requests: int
    warmup: int = 0
    repeat: int = 1
    cores: Cores | None = None


@dataclass
class Cell:
    """One target × transport × concurrency, and its timed runs so far."""

    name: str
    roots: tuple[int, ...]   # the server's process trees, whose CPU time is counted
    urls: list[str]
    transport: Transport
    concurrency: int
    runs: list[dict] = field(default_factory=list)

    def row(self, requests: int) -> dict:
        """Each figure's median over the runs (and the runs themselves when there are several)."""
        runs = self.runs
        row = {"target": self.name, "transport": self.transport.value, "concurrency": self.concurrency,
               "requests": requests, "runs": len(runs), "succeeded": min(r["succeeded"] for r in runs),
               "backend_renders": sum(r["backend_renders"] for r in runs)}
        for figure in ("req_per_s", "mean_ms", "p50_ms", "p99_ms", "cpu_us_per_req"):
            row[figure] = round(statistics.median(r[figure] for r in runs), 3 if figure.endswith("_ms") else 1)
            if len(runs) > 1:
                row[figure + "_runs"] = [round(r[figure], 3) for r in runs]
        return row


def measure_cells(stack: Stack, load: Load, cells: list[Cell], log: Callable[[str], None]) -> list[dict]:
    """Every cell's warm-up, then `load.repeat` rounds that each time every cell once, in turn: a drift of the
    machine's speed over the minutes of a run (a neighbour's load) falls on every target alike, not on the
    ones timed last, so the ratios between targets hold even where the absolute figures swing."""
    client = load.cores.client if load.cores else None
    for cell in cells:
        if load.cores:
            load.cores.pin_server(cell.roots)
        if load.warmup:
            h2load(cell.urls, cell.transport, cell.concurrency, load.warmup, stack.tmp / "h2load-warmup.log", client)
    for round_no in range(1, load.repeat + 1):
        for cell in cells:
            if load.cores:
                load.cores.pin_server(cell.roots)  # threads a server started since
            renders, cpu = stack.sim.totals()["renders"], sum(map(tree_cpu_seconds, cell.roots))
            figures = h2load(cell.urls, cell.transport, cell.concurrency, load.requests,
                             stack.tmp / f"h2load-{cell.name}.log", client)
            cpu = sum(map(tree_cpu_seconds, cell.roots)) - cpu
            cell.runs.append({**figures, "cpu_us_per_req": cpu / load.requests * 1e6,
                              "backend_renders": stack.sim.totals()["renders"] - renders})
            log(f"round {round_no}/{load.repeat} {cell.name:12} {cell.transport.value:6} c={cell.concurrency:<4} "
                f"{figures['req_per_s']:>9,.0f} req/s p99 {figures['p99_ms']:.2f} ms, "
                f"{cell.runs[-1]['cpu_us_per_req']:.1f} µs/req")
    return [cell.row(load.requests) for cell in cells]


def run_hits(stack: Stack, transports: list[Transport], concurrencies: list[int], load: Load,
             log: Callable[[str], None], interfaces: list[str]) -> tuple[list[dict], Table]:
    plate = find_plate(stack.sim.info)
    edges = [Edge(stack, warm=True, interface=interface) for interface in interfaces]
    for edge, interface in zip(edges, interfaces):
        edge.name = f"edge-{interface}"
    cache = NginxCache(stack, warm=True)
    bares: list[BareApp] = []
    fronts: list[NginxFront] = []
    try:
        for edge in edges:
            edge.start()
            warm_plate(stack, edge, plate["id"])
        grid = httpx.get(f"{edges[0].url}/webgateway/plate/{plate['id']}/0/", timeout=60).json()
        paths = [f"/webgateway/render_thumbnail/{cell['id']}/" for row in grid["grid"] for cell in row if cell]
        with httpx.Client(base_url=edges[0].url, timeout=60) as client:
            bodies = {path: client.get(path).content for path in paths}
            hit = client.get(paths[-1])  # from memory now, as every timed hit
        if hit.headers.get("x-edge-cache") != "HIT":
            raise LoadFailed(f"the warm edge did not answer {paths[-1]} from its cache: {dict(hit.headers)}")
        hit_headers = [(k, v) for k, v in hit.headers.items() if k not in ("server", "date", "content-length")]
        static = StaticNginx(stack, bodies)
        cache.start()
        with httpx.Client(base_url=f"http://{HOST}:{cache.listeners.h1}", timeout=60) as client:
            for path in paths:
                client.get(path).raise_for_status()
        static.nginx.start()
        size = round(statistics.fmean(len(body) for body in bodies.values()))
        bares = [BareApp(stack, interface, size, hit_headers) for interface in interfaces]
        if Transport.H2_TLS in transports:
            fronts = [NginxFront(stack, edge, interface) for edge, interface in zip(edges, interfaces)]
        for server in (*bares, *fronts):
            server.start()
        servers: list[tuple[str, dict[Transport, int], Callable[[Transport], tuple[int, ...]]]] = [
            *((e.name, e.ports(), lambda t, e=e: ((e.tls if t is Transport.H2_TLS else e.plain).child.pid,))
              for e in edges),
            *((b.name, b.ports(), b.roots) for b in bares),
            *((f.name, f.ports(), f.roots) for f in fronts),
            (static.name, static.ports(), lambda t: (static.nginx.child.pid,)),
            (cache.name, cache.ports(), lambda t: (cache.nginx.child.pid,))]
        cells = [Cell(name, roots_of(transport),
                      [f"{'https' if transport is Transport.H2_TLS else 'http'}://{HOST}:{ports[transport]}{p}"
                       for p in paths], transport, concurrency)
                 for name, ports, roots_of in servers
                 for transport in transports if transport in ports
                 for concurrency in concurrencies]
        results = measure_cells(stack, load, cells, log)
        static.nginx.stop()
    finally:
        for server in (*edges, *bares, *fronts, cache):
            server.stop()
    _ratios(results)
    return results, hits_table(results)


def _ratios(results: list[dict]) -> None:
    """÷ nginx static (req/s, p99) and ÷ nginx's proxy cache (p99: the competitor doing the edge's job) for every
    row; ÷ the bare app on the same interface for edges and bare apps."""
    cells = {(r["target"], r["transport"], r["concurrency"]): r for r in results}
    for r in results:
        static = cells.get(("nginx-static", r["transport"], r["concurrency"]))
        if static:
            r["req_per_s_vs_static"] = round(r["req_per_s"] / static["req_per_s"], 2)
            r["p99_vs_static"] = round(r["p99_ms"] / static["p99_ms"], 2)
        cache = cells.get(("nginx-warm", r["transport"], r["concurrency"]))
        if cache:
            r["p99_vs_cache"] = round(r["p99_ms"] / cache["p99_ms"], 2)
        kind, _, interface = r["target"].partition("-")
        bare = cells.get((f"bare-{interface}", r["transport"], r["concurrency"])) if kind in ("edge", "bare") else None
        if bare:
            r["req_per_s_vs_bare"] = round(r["req_per_s"] / bare["req_per_s"], 2)
            r["cpu_vs_bare"] = round(r["cpu_us_per_req"] / bare["cpu_us_per_req"], 2) if bare["cpu_us_per_req"] else None
            r["p99_vs_bare"] = round(r["p99_ms"] / bare["p99_ms"], 2)


def hits_table(results: list[dict]) -> Table:
    table = Table(header_style="bold")
    for name in ("target", "transport", "in flight", "req/s", "÷ static", "÷ bare", "mean ms", "p99 ms",
                 "p99 ÷ static", "p99 ÷ cache", "CPU µs/req", "CPU ÷ bare", "renders"):
        table.add_column(name, justify="left" if name in ("target", "transport") else "right")
    for r in sorted(results, key=lambda r: (r["transport"], r["concurrency"], r["target"])):
        table.add_row(r["target"], r["transport"], str(r["concurrency"]), f"{r['req_per_s']:,.0f}",
                      _ratio(r, "req_per_s_vs_static"), _ratio(r, "req_per_s_vs_bare"), f"{r['mean_ms']:.2f}",
                      f"{r['p99_ms']:.2f}", _ratio(r, "p99_vs_static"), _ratio(r, "p99_vs_cache"), f"{r['cpu_us_per_req']:.1f}",
                      _ratio(r, "cpu_vs_bare"), str(r["backend_renders"]))
    return table


def _ratio(row: dict, name: str) -> str:
    return "–" if row.get(name) is None else f"{row[name]:.2f}"
