"""A PostgreSQL server of the test's own: initdb + pg_ctl on a free port in a temp dir (as the
`postgres` user when run as root, since initdb refuses root), stopped by pg_ctl."""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile

import pytest

from tests.helpers import find_binary, free_port


class Postgres:
    def __init__(self) -> None:
        initdb, pg_ctl = find_binary("initdb"), find_binary("pg_ctl")
        if not initdb or not pg_ctl:
            pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql")
        self.dir = tempfile.mkdtemp(prefix="warm-pg-")
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # initdb refuses to run as root
            runuser = shutil.which("runuser") or shutil.which("runuser", path="/usr/sbin:/sbin")
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and there is no 'postgres' user for initdb")
            if runuser is None:
                pytest.skip("running as root and runuser is missing")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self.as_user = [runuser, "-u", "postgres", "--"]
        self.pg_ctl, self.data = pg_ctl, os.path.join(self.dir, "data")
        self.port = free_port()
        self._run(initdb, "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        self.start()
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str) -> None:
        subprocess.run([*self.as_user, *argv], check=True, capture_output=True, timeout=60)

    def stop(self) -> None:
        self._run(self.pg_ctl, "-D", self.data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)

    def start(self) -> None:
        """Start it again on the same port and data (after `pause`)."""
        self._run(self.pg_ctl, "-D", self.data, "-l", os.path.join(self.dir, "log"), "-w", "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def pause(self) -> None:
        """Stop the server, keeping its data (a database that is down, then restarted)."""
        self._run(self.pg_ctl, "-D", self.data, "-m", "fast", "-w", "stop")
