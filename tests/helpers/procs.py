"""Start and stop the real servers the tests talk to: by PID, on free loopback ports.

Built on the benchmark's child processes (bench/procs.py): output in a log file (shown when a
process fails to start), waited for until it answers, ended by PID (SIGTERM, then SIGKILL).
"""
from __future__ import annotations

import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import httpx

from bench.procs import Child, StartError, console_script, free_port, which

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, message: str = "") -> T:
    """The first truthy value of `predicate()`, polled every `interval` s; TimeoutError after `timeout` s.
    Exceptions from the predicate propagate (assert inside it to fail fast)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(message or f"{getattr(predicate, '__name__', predicate)} not true within {timeout}s")
        time.sleep(interval)


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

    @classmethod
    def up(cls, argv: list[str], *, env: dict[str, str] | None = None, name: str = "proc",
           ports: Sequence[int] = (), health: str | None = None, timeout: float = 20.0) -> Proc:
        """Started and ready (every port listening, then `health` answering), or stopped and StartError:
        a child that never came up must not outlive the test that wanted it."""
        proc = cls(argv, env=env, name=name)
        try:
            for port in ports:
                proc.wait_port(port, timeout)
            if health is not None:
                proc.wait_http(health, timeout)
        except BaseException:
            proc.stop()
            raise
        return proc

    def log(self) -> str:
        return self.log_tail(10**7)

    def wait_http(self, url: str, timeout: float = 20.0, **kwargs) -> None:
        def answers() -> bool:
            if not self.alive():
                raise StartError(f"{self.name} exited with {self.popen.returncode}:\n{self.log()}")
            try:
                httpx.get(url, timeout=1.0, **kwargs)
                return True
            except httpx.HTTPError:
                return False

        try:
            wait_until(answers, timeout)
        except TimeoutError:
            raise StartError(f"{self.name} did not answer {url} within {timeout}s:\n{self.log()}") from None

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
        self.proc = Proc.up([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", self.dir], name="redis", ports=[self.port])

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.proc.stop()

    def kill(self) -> None:
        self.proc.kill()
