"""Start and stop the real servers the tests talk to: by PID, on free loopback ports.

Every process is started with its output in a log file (shown when it fails to start),
waited for until it answers, and ended by PID (SIGTERM, then SIGKILL after a grace period).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_binary(name: str) -> str | None:
    """PATH first, then the places Debian puts server binaries (/usr/sbin, postgresql's libdir)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    return None


def script(name: str) -> str:
    """A console script of this project, from the running interpreter's environment."""
    path = BIN / name
    return str(path) if path.exists() else name


class Proc:
    """One child process the test owns."""

    def __init__(self, argv: list[str], *, env: dict[str, str] | None = None, cwd: str | None = None,
                 name: str = "proc") -> None:
        self.argv = argv
        self.name = name
        self.log_path = Path(tempfile.mkstemp(prefix=f"{name}-", suffix=".log")[1])
        self._log = open(self.log_path, "wb")
        full_env = {**os.environ, **(env or {})}
        self.popen = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, env=full_env,
                                      cwd=cwd or str(ROOT), start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait_port(self, port: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not listen on {port} within {timeout}s:\n{self.log()}")

    def wait_http(self, url: str, timeout: float = 20.0, **kwargs) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.log()}")
            try:
                httpx.get(url, timeout=1.0, **kwargs)
                return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not answer {url} within {timeout}s:\n{self.log()}")

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the process group we started, SIGKILL what is left after `grace` seconds."""
        if self.alive():
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(grace)
        self._log.close()

    def kill(self) -> None:
        """SIGKILL, for fault tests: no clean shutdown."""
        if self.alive():
            os.killpg(self.pid, signal.SIGKILL)
            self.popen.wait(5)


class RedisServer:
    """A private redis-server on a free port, nothing persisted."""

    def __init__(self, port: int | None = None) -> None:
        binary = find_binary("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found: run `make test` (installs it) or apt-get install redis-server")
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="redis-")
        self.proc = Proc([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no", "--dir", self.dir], name="redis")
        self.proc.wait_port(self.port)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.proc.stop()

    def kill(self) -> None:
        self.proc.kill()
