"""A PostgreSQL server of the benchmark's own: initdb into a fresh directory, `postgres` in the foreground
as a Child on a free loopback port (stopped by PID with the run), the directory removed afterwards.

initdb refuses root, so as root both run as the `postgres` user, in a directory of theirs (the run's temp
directory is root's alone)."""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time

from bench.procs import HOST, Child, Children, StartError, free_port, which


def _binary(name: str) -> str:
    found = which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise StartError(f"{name} not found: apt-get install postgresql (or `make system-deps`)")
    return found


class Postgres:
    def __init__(self, children: Children) -> None:
        self.children = children
        self.dir = tempfile.mkdtemp(prefix="omero-edge-bench-pg-")
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                raise StartError("running as root and there is no 'postgres' user for initdb") from None
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self.as_user = [which("runuser") or "runuser", "-u", "postgres", "--"]
        self.port = free_port()
        self.dsn = f"postgresql://postgres@{HOST}:{self.port}/postgres"
        self.child: Child | None = None

    def __enter__(self) -> Postgres:
        data = os.path.join(self.dir, "data")
        done = subprocess.run([*self.as_user, _binary("initdb"), "-D", data, "-U", "postgres", "--auth=trust",
                               "-E", "UTF8", "--no-sync"], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise StartError(f"initdb failed: {done.stderr[-1500:]}")
        self.child = self.children.start("postgres", [
            *self.as_user, _binary("postgres"), "-D", data, "-p", str(self.port), "-k", self.dir,
            "-c", f"listen_addresses={HOST}", "-c", "fsync=off", "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off", "-c", "maintenance_work_mem=256MB"])
        self.child.wait_port(self.port)
        self._ready()
        return self

    def _ready(self, timeout: float = 60.0) -> None:
        """Until it accepts a session: it listens while still "starting up" (recovery, first checkpoint)."""
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.dsn, connect_timeout=5).close()
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise StartError(f"PostgreSQL on port {self.port} not ready within {timeout:.0f}s: {exc}") from None
                time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        if self.child is not None:
            self.children.stop(self.child)
        shutil.rmtree(self.dir, ignore_errors=True)
