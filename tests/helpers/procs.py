"""Start and stop the real servers the tests talk to: by PID, on free loopback ports.

Built on the benchmark's child processes (bench/procs.py): output in a log file (shown when a
process fails to start), waited for until it answers, ended by PID (SIGTERM, then SIGKILL).
"""
from __future__ import annotations

import signal
import subprocess
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

    def pause(self, paused: bool = True) -> None:
        """SIGSTOP (or, `paused=False`, SIGCONT), for fault tests: a process that hangs, then answers again."""
        self._signal(signal.SIGSTOP if paused else signal.SIGCONT)


def redis_binary(name: str = "redis-server") -> str:
    binary = find_binary(name)
    if binary is None:
        raise RuntimeError(f"{name} not found: run `make test` (installs it) or apt-get install redis-server")
    return binary


def start_redis(port: int, directory: str, *extra: str, name: str = "redis") -> Proc:
    """redis-server on 127.0.0.1:`port`, nothing persisted, ready when its port listens."""
    return Proc.up([redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                    "--dir", directory, *extra], name=name, ports=[port])


class RedisServer:
    """A private redis-server on a free port, nothing persisted."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="redis-")
        self.proc = start_redis(self.port, self.dir)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.proc.stop()

    def kill(self) -> None:
        self.proc.kill()


class RedisCluster:
    """`masters` redis-servers with --cluster-enabled on free ports, joined by `redis-cli --cluster create`
    with no replicas, and `cluster-require-full-coverage no` (a dead master costs only its own slots).
    Ready when every node reports cluster_state:ok; each node stops (or is killed) by PID."""

    def __init__(self, masters: int = 3, node_timeout_ms: int = 1000) -> None:
        self.dir = tempfile.mkdtemp(prefix="redis-cluster-")
        self.ports = [free_port() for _ in range(masters)]
        self.nodes: list[Proc] = []
        try:
            for port in self.ports:  # the bus port too is a free one (port + 10000 may be taken, or too high)
                self.nodes.append(start_redis(
                    port, self.dir, "--cluster-enabled", "yes", "--cluster-port", str(free_port()),
                    "--cluster-config-file", f"nodes-{port}.conf",
                    "--cluster-node-timeout", str(node_timeout_ms), "--cluster-require-full-coverage", "no",
                    name=f"redis-{port}"))
            out = subprocess.run([redis_binary("redis-cli"), "--cluster", "create",
                                  *(f"127.0.0.1:{p}" for p in self.ports), "--cluster-replicas", "0", "--cluster-yes"],
                                 capture_output=True, text=True, timeout=30)
            if out.returncode != 0:
                raise StartError(f"redis-cli --cluster create failed:\n{out.stdout}{out.stderr}")
            for port in self.ports:
                wait_until(lambda: "cluster_state:ok" in self.cli(port, "cluster", "info"), timeout=20,
                           message=f"cluster node {port} not ok")
        except BaseException:
            self.stop()
            raise

    def cli(self, port: int, *args: str) -> str:
        return subprocess.run([redis_binary("redis-cli"), "-p", str(port), *args], capture_output=True, text=True,
                              timeout=10).stdout

    @property
    def url(self) -> str:
        """Any node names the cluster: the first."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def kill(self, index: int) -> None:
        """SIGKILL one master by PID: no failover (no replicas), its slots go unserved."""
        self.nodes[index].kill()

    def stop(self) -> None:
        for node in self.nodes:
            node.pause(False)  # a paused node would not see its SIGTERM
            node.stop()
