"""What a benchmark talks to: the backend direct, the edge, and nginx's proxy cache, cold or warm.

A `Stack` owns one run's processes: the simulated OMERO (started once, same `--workers` and
`--speed` for every target), one target at a time, and a delay proxy in front of that target
when the run adds RTT. Every port is picked on loopback when the target is built and kept
across restarts, so a delay proxy started once stays valid.

"Cold" means an empty cache before *every* load: the edge process serving that transport, or
nginx, is stopped and started again on a new, empty cache directory (memory tier included),
outside the timed window. "Warm" targets start empty once and are filled by the scenario
(`prime`) before their loads are timed.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.certs import Certs, make_certs
from bench.clients import Transport
from bench.nginx import Listeners, Nginx, proxy_cache_conf
from bench.procs import HOST, Child, Children, console_script, free_port

TARGETS = ("direct", "edge-cold", "edge-warm", "nginx-cold", "nginx-warm")
RECACHE = "nginx-recache"     # nginx filled the way IDR's published scripts fill it (bench browse only)
PREFETCH = "edge-prefetch"    # edge-cold with `prefetch` on (--prefetch: plate-384, tiles)
WARM_TOKEN = "bench-warm-token"
PURGE_TOKEN = "bench-purge-token"


@dataclass(frozen=True)
class RunSettings:
    """What every target of a run shares; recorded in the JSON output."""
    workers: int = 4            # backend (sim) worker slots
    speed: float = 1.0          # backend cost multiplier
    scale: str = "small"
    server_workers: int = 1     # edge and nginx worker processes
    nginx_skip: str = "idr"     # nginx proxy_no_cache rule (bench.nginx.SKIP_CHOICES)
    nginx_sendfile: str = "on"  # the proxy cache's sendfile (on, Debian's default, or off)


class Sim:
    """`bench sim` (OMERO.web + omero-ms-image-region ports) and its control routes."""

    def __init__(self, children: Children, settings: RunSettings) -> None:
        self.port, self.ms_port = free_port(), free_port()
        self.url, self.ms_url = f"http://{HOST}:{self.port}", f"http://{HOST}:{self.ms_port}"
        self.child = children.start("sim", console_script("bench") + [
            "sim", "--host", HOST, "--port", str(self.port), "--ms-port", str(self.ms_port),
            "--scale", settings.scale, "--workers", str(settings.workers), "--speed", str(settings.speed)])
        self.child.wait_port(self.port)
        self.child.wait_port(self.ms_port)
        self.info: dict = httpx.get(self.url + "/_sim/info", timeout=30).json()

    def stats(self) -> dict:
        """`/_sim/stats`: {"requests": {endpoint: N}, "renders": {endpoint: N}, "total": {...}} so far."""
        return httpx.get(self.url + "/_sim/stats", timeout=30).json()

    def totals(self) -> dict[str, int]:
        """{"requests": N, "renders": N} so far (both ports share one state)."""
        return self.stats()["total"]


class Target:
    """One competitor. Subclasses say which transports they speak and what cold/warm means."""

    name: str
    warm: bool = False

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.proxy: Child | None = None
        self.proxied: dict[int, int] = {}

    def transports(self) -> tuple[Transport, ...]:
        return tuple(Transport)

    def ports(self) -> dict[Transport, int]:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def before_load(self, transport: Transport) -> None:
        """Called before every timed load: cold targets empty their cache here."""

    def after_load(self, transport: Transport) -> dict[str, int]:
        """Called after every timed load, before the backend's counters are read (untimed): counts the target
        reports for that load (none by default)."""
        return {}

    def address(self, transport: Transport) -> int:
        """The port a client uses: the target's own, or its delay proxy's."""
        port = self.ports()[transport]
        return self.proxied.get(port, port)

    def start_proxy(self, rtt_ms: float) -> None:
        if rtt_ms <= 0:
            return
        self.proxied = {port: free_port() for port in set(self.ports().values())}
        pairs = [f"{listen}:{port}" for port, listen in self.proxied.items()]
        self.proxy = self.stack.children.start("delayproxy", [sys.executable, "-m", "bench.delayproxy",
                                                              "--delay-ms", str(rtt_ms / 2), *pairs])
        for listen in self.proxied.values():
            self.proxy.wait_port(listen)

    def stop_proxy(self) -> None:
        if self.proxy is not None:
            self.stack.children.stop(self.proxy)
            self.proxy, self.proxied = None, {}


class Direct(Target):
    """The backend itself; like OMERO.web's WSGI server it speaks no TLS (h2c only via granian)."""

    name = "direct"

    def transports(self) -> tuple[Transport, ...]:
        return (Transport.H1, Transport.H2)

    def ports(self) -> dict[Transport, int]:
        return {Transport.H1: self.stack.sim.port, Transport.H2: self.stack.sim.port}

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class _EdgeServer:
    """One `edge serve` process: plain (HTTP/1.1 + h2c) or TLS (h2 via ALPN).

    Every target talks to the same OMERO.web port; the edge gets no `--ms`, since the simulated
    microservice (like the real one) serves no public user and the other targets don't use it."""

    def __init__(self, stack: Stack, tls: bool, env: dict[str, str] | None = None) -> None:
        self.stack, self.tls, self.env = stack, tls, env or {}
        self.port = free_port()
        self.child: Child | None = None

    def start(self, cache_dir: Path) -> None:
        s, sim = self.stack.settings, self.stack.sim
        argv = console_script("edge") + [
            "serve", "--bind", f"{HOST}:{self.port}", "--backend", sim.url, "--cache-dir", str(cache_dir),
            "--workers", str(s.server_workers), "--server", "granian"]
        if self.tls:
            argv += ["--certfile", str(self.stack.certs.cert), "--keyfile", str(self.stack.certs.key)]
        env = {"EDGE_WARM_TOKEN": WARM_TOKEN, "EDGE_PURGE_TOKEN": PURGE_TOKEN, **self.env}
        self.child = self.stack.children.start("edge", argv, env=env)
        self.child.wait_port(self.port)
        if not self.tls:
            _wait_health(self.child, f"http://{HOST}:{self.port}/_edge/health")

    def stop(self) -> None:
        if self.child is not None:
            self.stack.children.stop(self.child)
            self.child = None


def _wait_health(child: Child, url: str) -> None:
    for _ in range(200):
        try:
            httpx.get(url, timeout=1).raise_for_status()
            return
        except httpx.HTTPError:
            if not child.alive():
                break
            time.sleep(0.05)
    raise RuntimeError(f"edge did not become healthy at {url}:\n{child.log_tail()}")


class Edge(Target):
    """The edge: a plain server (h1, h2c) and a TLS one (h2), sharing one disk cache when warm."""

    def __init__(self, stack: Stack, warm: bool, prefetch: bool = False, interface: str | None = None) -> None:
        """`interface`: granian's (asgi, rsgi) instead of the edge's default."""
        super().__init__(stack)
        self.warm, self.prefetch = warm, prefetch
        self.name = "edge-warm" if warm else PREFETCH if prefetch else "edge-cold"
        env = {"EDGE_PREFETCH": "on"} if prefetch else {}
        if interface is not None:
            env["EDGE_SERVER_INTERFACE"] = interface
        self.plain, self.tls = _EdgeServer(stack, tls=False, env=env), _EdgeServer(stack, tls=True, env=env)

    @property
    def url(self) -> str:
        """The plain listener, unproxied: where the warmer goes."""
        return f"http://{HOST}:{self.plain.port}"

    def ports(self) -> dict[Transport, int]:
        return {Transport.H1: self.plain.port, Transport.H2: self.plain.port, Transport.H2_TLS: self.tls.port}

    def start(self) -> None:
        cache = self.stack.fresh_dir("edge-cache")
        self.plain.start(cache)
        self.tls.start(cache)

    def stop(self) -> None:
        self.plain.stop()
        self.tls.stop()

    def before_load(self, transport: Transport) -> None:
        if not self.warm:
            server = self.tls if transport is Transport.H2_TLS else self.plain
            server.stop()
            server.start(self.stack.fresh_dir("edge-cache"))

    def after_load(self, transport: Transport) -> dict[str, int]:
        """With prefetch: waits for its background fetches to end (their backend work is this load's), then
        reports the server's prefetch counters (a cold server starts at zero for every load)."""
        if not self.prefetch:
            return {}
        server = self.tls if transport is Transport.H2_TLS else self.plain
        base = f"{'https' if server.tls else 'http'}://{HOST}:{server.port}"
        for _ in range(400):
            counts = _prefetch_counts(httpx.get(base + "/_edge/metrics", timeout=10,
                                                verify=self.stack.certs.client_context(["http/1.1"]) if server.tls else True).text)
            if counts.pop("in_flight", 0) == 0:
                return counts
            time.sleep(0.025)
        raise RuntimeError(f"{self.name}: prefetches still in flight 10 s after the load")


def _prefetch_counts(metrics: str) -> dict[str, int]:
    """issued, used, wasted, skipped (all kinds) and in_flight from an edge's /_edge/metrics text."""
    counts = {"issued": 0, "used": 0, "wasted": 0, "skipped": 0, "in_flight": 0}
    for line in metrics.splitlines():
        name, _, value = line.partition(" ")
        what = name.removeprefix("edge_prefetch_").split("{", 1)[0].removesuffix("_total")
        if name.startswith("edge_prefetch_") and what in counts:
            counts[what] += int(float(value))
    return counts


class NginxCache(Target):
    """nginx proxy_cache in front of the backend, configured like IDR's (bench.nginx)."""

    def __init__(self, stack: Stack, warm: bool, name: str | None = None) -> None:
        super().__init__(stack)
        self.warm = warm
        self.name = name or ("nginx-warm" if warm else "nginx-cold")
        # Set by a scenario to fill an emptied cache before every load (a fill the loads must not add to).
        self.refill: Callable[[], None] | None = None
        self.listeners = Listeners(free_port(), free_port(), free_port())
        prefix = stack.fresh_dir("nginx")
        conf = proxy_cache_conf(prefix, self.listeners, stack.certs, stack.sim.port, stack.settings.server_workers,
                                stack.settings.nginx_skip, stack.settings.nginx_sendfile == "on")
        self.nginx = Nginx(stack.children, prefix, self.listeners, conf)

    def ports(self) -> dict[Transport, int]:
        return {Transport.H1: self.listeners.h1, Transport.H2: self.listeners.h2c, Transport.H2_TLS: self.listeners.tls}

    def start(self) -> None:
        self.nginx.restart(clear_cache=True)

    def stop(self) -> None:
        self.nginx.stop()

    def before_load(self, transport: Transport) -> None:
        if not self.warm or self.refill is not None:
            self.nginx.restart(clear_cache=True)
        if self.refill is not None:
            self.refill()


class Stack:
    """One run: temp dir, certificate, the sim, and every child process (all stopped by `close`)."""

    def __init__(self, settings: RunSettings) -> None:
        self.settings = settings
        self.tmp = Path(tempfile.mkdtemp(prefix="omero-edge-bench-"))
        self.children = Children()
        self._dirs = 0
        try:
            self.certs: Certs = make_certs(self.tmp / "certs")
            self.sim = Sim(self.children, settings)
        except BaseException:
            self.close()
            raise

    def fresh_dir(self, prefix: str) -> Path:
        self._dirs += 1
        path = self.tmp / f"{prefix}-{self._dirs}"
        path.mkdir()
        return path

    def target(self, name: str) -> Target:
        if name == "direct":
            return Direct(self)
        if name in ("edge-cold", "edge-warm", PREFETCH):
            return Edge(self, warm=name == "edge-warm", prefetch=name == PREFETCH)
        if name in ("nginx-cold", "nginx-warm"):
            return NginxCache(self, warm=name == "nginx-warm")
        if name == RECACHE:
            return NginxCache(self, warm=True, name=RECACHE)
        raise ValueError(f"unknown target {name!r}; choose from {', '.join(TARGETS)}")

    def close(self) -> None:
        self.children.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
