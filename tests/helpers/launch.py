"""The simulated OMERO (`bench sim`) and edges (`edge serve`) as real processes, and the launcher
that stops everything a test started."""
from __future__ import annotations

import io
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx
import pytest
from PIL import Image

from tests.helpers.procs import Proc, free_port, script

PURGE_TOKEN, WARM_TOKEN = "purge-secret", "warm-secret"


@dataclass
class Sim:
    """A running `bench sim`: its OMERO.web and microservice URLs and its catalog (`/_sim/info`)."""

    proc: Proc
    url: str
    ms_url: str
    redis_url: str = ""
    info: dict = field(default_factory=dict)

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10, **kwargs)

    def ms(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.ms_url, timeout=10, **kwargs)

    def password(self, username: str) -> str:
        return next(u["password"] for u in self.info["users"] if u["username"] == username)

    def login(self, username: str) -> httpx.Client:
        """A client whose cookie jar holds a fresh session of `username` (API v0 login with CSRF)."""
        client = self.client()
        token = client.get("/api/v0/token/").json()["data"]
        r = client.post("/api/v0/login/", data={"username": username, "password": self.password(username),
                                                "server": "1"}, headers={"X-CSRFToken": token})
        assert r.status_code == 200, r.text
        client.headers["X-CSRFToken"] = token
        return client

    def plate_images(self, plate_index: int, n: int, first: int = 0) -> list[int]:
        """`n` image ids from a plate's grid, row-major from `first` (`public_images` is a small sample)."""
        plate = self.info["plates"][plate_index]["id"]
        grid = httpx.get(f"{self.url}/webgateway/plate/{plate}/0/", timeout=10).json()["grid"]
        return [cell["id"] for row in grid for cell in row if cell][first:first + n]

    def stats(self) -> dict:
        return httpx.get(self.url + "/_sim/stats", timeout=5).json()

    def renders(self) -> int:
        return self.stats()["total"]["renders"]

    def reset(self) -> None:
        httpx.post(self.url + "/_sim/reset", timeout=5).raise_for_status()

    def faults(self, **spec) -> None:
        httpx.post(self.url + "/_sim/faults", json=spec, timeout=5).raise_for_status()

    def stop(self) -> None:
        self.proc.stop()


def start_sim(*flags: str, redis_url: str = "", timeout: float = 20.0) -> Sim:
    """`bench sim` at speed 0 (later `flags` win) on two free loopback ports, sessions in `redis_url` if given."""
    port, ms_port = free_port(), free_port()
    argv = [script("bench"), "sim", "--host", "127.0.0.1", "--port", str(port), "--ms-port", str(ms_port),
            "--speed", "0", *flags, *(["--redis", redis_url] if redis_url else [])]
    url = f"http://127.0.0.1:{port}"
    proc = Proc.up(argv, name="sim", ports=[ms_port], health=url + "/_sim/stats", timeout=timeout)
    try:
        info = httpx.get(url + "/_sim/info", timeout=10).json()
    except BaseException:
        proc.stop()
        raise
    return Sim(proc, url, f"http://127.0.0.1:{ms_port}", redis_url, info)


def sim_fixtures(*flags: str):
    """Module-scoped fixtures: a sim (one `bench sim` with `flags`) and `anon` (a client of it, one public
    session in its cookie jar). Use as `sim, anon = sim_fixtures()` at module level; name the sim fixture
    `sim` or `<something>_sim`, which conftest marks `process`."""
    @pytest.fixture(scope="module")
    def sim():
        s = start_sim(*flags)
        yield s
        s.stop()

    @pytest.fixture(scope="module")
    def anon(sim: Sim):
        with sim.client() as c:
            yield c
    return sim, anon


def plate(info: dict, name_part: str) -> dict:
    return next(p for p in info["plates"] if name_part in p["name"])


def decode(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


@dataclass
class EdgeProc:
    proc: Proc
    url: str
    cache_dir: str

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=15, **kwargs)

    def get(self, path: str, **kwargs) -> httpx.Response:
        return httpx.get(self.url + path, timeout=15, **kwargs)


class Launcher:
    """Starts a test's (or a module's) processes and stops them all, by PID, when it ends: `stop_all`.
    Called, it starts an edge in front of `sim` (the `edges` fixture)."""

    def __init__(self, sim: Sim | None = None) -> None:
        self.sim = sim
        self.started: list[Proc] = []

    def start(self, argv: list[str], **up) -> Proc:
        """Any child, ready as `Proc.up` waits for it, stopped with the rest."""
        proc = Proc.up(argv, **up)
        self.started.append(proc)
        return proc

    def edge(self, *args: str, cache_dir: str | None = None, env: dict[str, str] | None = None,
             backend: str | None = None, ms: bool = True, server: str = "granian",
             tls: tuple[str, str] | None = None, wrap: Sequence[str] = ()) -> EdgeProc:
        """`edge serve` on a free port with a fresh disk tier (or `cache_dir`), in front of the sim's web and
        microservice ports unless `backend` / `ms=False` say otherwise; `wrap` is an argv prefix that execs it."""
        assert backend or self.sim, "an edge needs a backend"
        port = free_port()
        cache_dir = cache_dir if cache_dir is not None else tempfile.mkdtemp(prefix="edge-cache-")
        argv = [*wrap, script("edge"), "serve", "--bind", f"127.0.0.1:{port}", "--backend", backend or self.sim.url,
                *(["--ms", self.sim.ms_url] if ms and self.sim else []), "--cache-dir", cache_dir,
                "--server", server, *args]
        scheme = "http"
        if tls:
            argv += ["--certfile", tls[0], "--keyfile", tls[1]]
            scheme = "https"
        url = f"{scheme}://127.0.0.1:{port}"
        proc = self.start(argv, env={"EDGE_PURGE_TOKEN": PURGE_TOKEN, "EDGE_WARM_TOKEN": WARM_TOKEN, **(env or {})},
                          name="edge", ports=[port], health=None if tls else url + "/_edge/health")
        return EdgeProc(proc, url, cache_dir)

    __call__ = edge

    def stop_all(self) -> None:
        while self.started:
            self.started.pop().stop()
