"""Child processes of a benchmark run: started on loopback ports the run picks, ended by PID.

Each child runs in its own session with its output in a log file (quoted when it fails to
start), and `stop()` signals only that process group: SIGTERM, then SIGKILL after a grace
period. `Children` remembers everything a run started so one `finally` ends it all.
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

HOST = "127.0.0.1"


class StartError(RuntimeError):
    """A child did not come up; the message carries the tail of its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def which(name: str) -> str | None:
    """PATH first, then /usr/sbin (where Debian puts nginx)."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def console_script(name: str) -> list[str]:
    """argv prefix for one of this project's console scripts, from the running interpreter's venv."""
    path = Path(sys.executable).parent / name
    return [str(path)] if path.exists() else [sys.executable, "-m", name]


class Child:
    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        fd, log = tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".log")
        self.log_path = Path(log)
        self._log = os.fdopen(fd, "wb")
        self.popen = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      env={**os.environ, **(env or {})}, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def wait_port(self, port: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise StartError(f"{self.name} exited with {self.popen.returncode}:\n{self.log_tail()}")
            try:
                with socket.create_connection((HOST, port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise StartError(f"{self.name} did not listen on {HOST}:{port} within {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self, grace: float = 5.0) -> None:
        if self.alive():
            self._signal(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.popen.wait(grace)
        self._log.close()
        self.log_path.unlink(missing_ok=True)

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass


class Children:
    """Every child a run started, so that one `close()` stops them all (newest first)."""

    def __init__(self) -> None:
        self._all: list[Child] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        child = Child(name, argv, env)
        self._all.append(child)
        return child

    def stop(self, child: Child) -> None:
        child.stop()
        if child in self._all:
            self._all.remove(child)

    def close(self) -> None:
        while self._all:
            self._all.pop().stop()
