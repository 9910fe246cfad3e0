"""Helpers for the sim's tests (no tests here): `bench sim` as a real process on free loopback ports."""
from __future__ import annotations

import io
from dataclasses import dataclass, field

import httpx
import pytest
from PIL import Image

from tests.procs import Proc, free_port, script


@dataclass
class SimProc:
    proc: Proc
    url: str
    ms_url: str
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

    def stats(self) -> dict:
        return httpx.get(self.url + "/_sim/stats", timeout=5).json()

    def reset(self) -> None:
        httpx.post(self.url + "/_sim/reset", timeout=5).raise_for_status()

    def stop(self) -> None:
        self.proc.stop()


def start_sim(*flags: str, timeout: float = 20.0) -> SimProc:
    port, ms_port = free_port(), free_port()
    proc = Proc([script("bench"), "sim", "--port", str(port), "--ms-port", str(ms_port), "--speed", "0", *flags],
                name="sim")
    url = f"http://127.0.0.1:{port}"
    try:
        proc.wait_http(url + "/_sim/stats", timeout=timeout)
        proc.wait_port(ms_port, timeout=timeout)
        info = httpx.get(url + "/_sim/info", timeout=10).json()
    except Exception:
        proc.stop()
        raise
    return SimProc(proc, url, f"http://127.0.0.1:{ms_port}", info)


def plate(info: dict, name_part: str) -> dict:
    return next(p for p in info["plates"] if name_part in p["name"])


def decode(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def sim_fixtures(*flags: str):
    """Module-scoped fixtures: `sim` (one `bench sim` with `flags`) and `anon` (its public user, one
    session in the cookie jar). Use as `sim, anon = sim_fixtures()` at module level."""
    @pytest.fixture(scope="module")
    def sim():
        s = start_sim(*flags)
        yield s
        s.stop()

    @pytest.fixture(scope="module")
    def anon(sim: SimProc):
        with sim.client() as c:
            yield c
    return sim, anon
