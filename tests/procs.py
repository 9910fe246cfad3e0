"""Start and stop the real servers the tests talk to: by PID, on free loopback ports.

Built on the benchmark's child processes (bench/procs.py): output in a log file (shown when a
process fails to start), waited for until it answers, ended by PID (SIGTERM, then SIGKILL).
"""
from __future__ import annotations

import signal
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.procs import Child, StartError, console_script, free_port, which

__all__ = ["Proc", "RedisServer", "find_binary", "free_port", "script", "ROOT"]

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def find_binary(name: str) -> str | None:
    """PATH and /usr/sbin first, then postgresql's libdir (where Debian puts initdb and pg_ctl)."""
    found = which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    return None


def script(name: str) -> str:
    """A console script of this project, from the running interpreter's environment."""
    return console_script(name)[0] if (BIN / name).exists() else name


class Proc(Child):
    """One child process a test owns (bench's Child: own session, log file, stopped by PID)."""

    def __init__(self, argv: list[str], *, env: dict[str, str] | None = None, name: str = "proc") -> None:
        super().__init__(name, argv, env)
        self.argv, self.env = argv, env  # to start it again (restart tests)

    def log(self) -> str:
        return self.log_tail(10**7)

    def wait_http(self, url: str, timeout: float = 20.0, **kwargs) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise StartError(f"{self.name} exited with {self.popen.returncode}:\n{self.log()}")
            try:
                httpx.get(url, timeout=1.0, **kwargs)
                return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise StartError(f"{self.name} did not answer {url} within {timeout}s:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL, for fault tests: no clean shutdown."""
        if self.alive():
            self._signal(signal.SIGKILL)
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
