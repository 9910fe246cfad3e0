"""`edge doctor` against the simulator: every check passes on a good site, and each setting broken in turn
fails its own check, with its fix, and exit status 1."""
from __future__ import annotations

import email.utils
import json
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis

from edge.doctor import CHECKS
from tests.helpers import RedisServer, Sim, start_sim
from tests.helpers.procs import Proc, find_binary, free_port, script

pytestmark = pytest.mark.process
FIXES = {c.name: c.fix for c in CHECKS}
SESSION_DB, L2_DB = 1, 2
# What the site's L2 Redis is told before the run: a bound, a policy that never evicts purge state, snapshots.
SAFE_CONFIG = {"maxmemory": "64mb", "maxmemory-policy": "volatile-lru", "save": "3600 1"}


@pytest.fixture(scope="module")
def doctor_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    client = redis.Redis(port=server.port)
    for name, value in SAFE_CONFIG.items():
        client.config_set(name, value)
    client.close()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def doctor_sim(doctor_redis: RedisServer) -> Iterator[Sim]:
    """The simulator keeping its Django sessions in the Redis database SESSION_DB, as django-redis does."""
    s = start_sim(redis_url=f"redis://127.0.0.1:{doctor_redis.port}/{SESSION_DB}")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def site(doctor_sim: Sim, doctor_redis: RedisServer) -> dict[str, str]:
    """The options of a good site: `edge doctor` / `edge serve` settings, one per option."""
    return {"--backend": doctor_sim.url, "--ms": doctor_sim.ms_url,
            "--cache-dir": tempfile.mkdtemp(prefix="doctor-cache-"),
            "--redis": f"redis://127.0.0.1:{doctor_redis.port}/{L2_DB}",
            "--session-redis": f"redis://127.0.0.1:{doctor_redis.port}/{SESSION_DB}"}


def doctor(options: dict[str, str], env: dict[str, str] | None = None, *extra: str) -> subprocess.CompletedProcess:
    argv = [script("edge"), "doctor", *(x for pair in options.items() for x in pair), *extra]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    return subprocess.run(argv, env={**clean, **(env or {})}, capture_output=True, text=True, timeout=30)


def results(options: dict[str, str], env: dict[str, str] | None = None) -> tuple[int, dict[str, dict]]:
    done = doctor(options, env, "--json")
    assert done.stderr == "", done.stderr
    return done.returncode, {row["name"]: row for row in json.loads(done.stdout)}


def test_a_good_site_passes_every_check(site: dict[str, str]) -> None:
    done = doctor(site)
    print(done.stdout)
    assert done.returncode == 0, done.stdout
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["check", "result", "detail"]
    for check in CHECKS:
        row = next(line for line in lines if line.startswith(check.name + " "))
        assert row[len(check.name):].split()[0] == "PASS", row
    assert "fix:" not in done.stdout
    assert lines[-1] == f"{len(CHECKS)} passed, 0 skipped, 0 failed"


def test_without_optional_servers_their_checks_skip(doctor_sim: Sim) -> None:
    code, rows = results({"--backend": doctor_sim.url, "--cache-dir": ""})
    assert code == 0
    skipped = {name for name, row in rows.items() if row["status"] == "skip"}
    assert skipped == {"session redis", "l2 redis", "l2 eviction", "l2 persistence", "cache dir", "microservice"}
    assert rows["microservice"]["detail"].startswith("no ms")


def test_every_backend_is_checked(site: dict[str, str], doctor_sim: Sim) -> None:
    closed = f"http://{_closed()}"
    others = {k: v for k, v in site.items() if k != "--backend"}
    code, rows = results(others, {"EDGE_BACKEND": f"{doctor_sim.url},{closed}"})
    assert code == 1
    assert rows["omero.web"]["status"] == "fail"
    assert rows["omero.web"]["detail"].startswith(f"ConnectError {closed}/api/")
    assert rows["public session"]["status"] == "skip"  # the first backend answers, but the check needs them all


def _closed() -> str:
    return f"127.0.0.1:{free_port()}"


def _not_a_directory() -> str:
    fd, path = tempfile.mkstemp(prefix="doctor-file-")
    os.close(fd)
    return os.path.join(path, "cache")


@dataclass(frozen=True)
class Broken:
    """One setting broken: the options it changes (from the good site's), EDGE_* variables, Redis CONFIG set
    for the run, and the check that must fail with `detail` in its row."""
    id: str
    check: str
    detail: str
    options: Callable[[dict[str, str]], dict[str, str]] = lambda site: {}
    env: dict[str, str] = field(default_factory=dict)
    config: dict[str, str] = field(default_factory=dict)


BROKEN = [
    Broken("backend-closed", "omero.web", "ConnectError", lambda s: {"--backend": f"http://{_closed()}"}),
    Broken("backend-not-omero", "omero.web", "not OMERO.web's API root", lambda s: {"--backend": s["--ms"]}),
    Broken("session-cookie", "session cookie", "OMERO.web sets sessionid; session_cookie is 'sessionid_idr'",
           env={"EDGE_SESSION_COOKIE": "sessionid_idr"}),
    Broken("public-session-path", "public session", "answered 200 but set no session cookie",
           env={"EDGE_PUBLIC_SESSION_PATH": "/webclient/login/"}),
    Broken("public-session-404", "public session", "answered 404", env={"EDGE_PUBLIC_SESSION_PATH": "/no/such/view/"}),
    Broken("public-session-not-a-path", "public session", "'api/v0/' is not a URL path", env={"EDGE_PUBLIC_SESSION_PATH": "api/v0/"}),
    Broken("session-redis-db", "session redis", "has no :1:django.contrib.sessions.cache",
           lambda s: {"--session-redis": s["--session-redis"].rsplit("/", 1)[0] + "/7"}),
    Broken("session-redis-closed", "session redis", "ConnectionError",
           lambda s: {"--session-redis": f"redis://{_closed()}/1"}),
    Broken("l2-closed", "l2 redis", "ConnectionError", lambda s: {"--redis": f"redis://{_closed()}/0"}),
    Broken("l2-allkeys-lru", "l2 eviction", "maxmemory-policy allkeys-lru: may evict the purge state",
           config={"maxmemory-policy": "allkeys-lru"}),
    Broken("l2-noeviction", "l2 eviction", "refuses every cache write", config={"maxmemory-policy": "noeviction"}),
    Broken("l2-unbounded", "l2 eviction", "maxmemory 0", config={"maxmemory": "0"}),
    Broken("l2-no-persistence", "l2 persistence", "no AOF and no RDB snapshots", config={"save": ""}),
    Broken("cache-dir-unwritable", "cache dir", "is not a directory", lambda s: {"--cache-dir": _not_a_directory()}),
    Broken("disk-size", "cache dir", "disk_size 1.0 EiB >", env={"EDGE_DISK_SIZE": str(2**60)}),
    Broken("ms-closed", "microservice", "ConnectError", lambda s: {"--ms": f"http://{_closed()}"}),
    Broken("ms-wrong-path", "microservice", "answered 404", lambda s: {"--ms": s["--backend"] + "/nowhere"}),
    Broken("thumb-size", "thumbnail size", "is 96 px; thumb_default_size is 64", env={"EDGE_THUMB_DEFAULT_SIZE": "64"}),
    Broken("batch-smaller", "thumbnail batch", "OMERO.web answered 41 ids: its omero.web.thumbnails_batch is above 40",
           env={"EDGE_THUMBNAILS_BATCH": "40"}),
    Broken("batch-larger", "thumbnail batch", "omero.web.thumbnails_batch is 50; thumbnails_batch is 60",
           env={"EDGE_THUMBNAILS_BATCH": "60"}),
]


@pytest.mark.parametrize("case", BROKEN, ids=[case.id for case in BROKEN])
def test_each_broken_setting_fails_its_check(site: dict[str, str], doctor_redis: RedisServer, case: Broken) -> None:
    client = redis.Redis(port=doctor_redis.port)
    before = client.config_get(*case.config) if case.config else {}
    try:
        for name, value in case.config.items():
            client.config_set(name, value)
        code, rows = results({**site, **case.options(site)}, case.env)
    finally:
        for name, value in before.items():
            client.config_set(name, value)
        client.close()
    assert code == 1
    row = rows[case.check]
    assert row["status"] == "fail", row
    assert case.detail in row["detail"]
    assert row["fix"] == FIXES[case.check]
    failing = {name for name, r in rows.items() if r["status"] == "fail"}
    assert failing == {case.check}, {name: rows[name]["detail"] for name in failing}


def test_the_table_shows_the_fix_under_each_failure(site: dict[str, str]) -> None:
    done = doctor(site, {"EDGE_THUMB_DEFAULT_SIZE": "64", "EDGE_THUMBNAILS_BATCH": "60"})
    print(done.stdout)
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    for check in ("thumbnail size", "thumbnail batch"):
        at = next(i for i, line in enumerate(lines) if line.startswith(check + " "))
        assert " FAIL " in lines[at]
        assert lines[at + 1].strip() == f"fix: {FIXES[check]}"
    assert lines[-1].endswith(", 2 failed")


def test_a_redis_without_config_is_said_not_crashed(site: dict[str, str]) -> None:
    """Managed Redis services often disable CONFIG: the checks that need it say so and skip."""
    port = free_port()
    proc = Proc.up([find_binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                    "--rename-command", "CONFIG", ""], name="redis-noconfig", ports=[port])
    try:
        code, rows = results({**site, "--redis": f"redis://127.0.0.1:{port}/0"})
    finally:
        proc.stop()
    assert code == 0
    assert rows["l2 redis"]["status"] == "pass"
    for check in ("l2 eviction", "l2 persistence"):
        assert rows[check]["status"] == "skip"
        assert "refuses CONFIG" in rows[check]["detail"]


class _SkewedOmero(BaseHTTPRequestHandler):
    """OMERO.web's API root, from a host whose clock is SKEW seconds behind."""
    SKEW = -90.0

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = b'{"data": [{"version": "0", "url:base": "/api/v0/"}]}'
        self.send_response(200 if self.path == "/api/" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-OMERO-ApiVersion", "0.2")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The Date header send_response writes."""
        return email.utils.formatdate(time.time() + self.SKEW, usegmt=True)

    def log_message(self, *args) -> None:
        pass


def test_clock_skew_fails_by_how_much() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SkewedOmero)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        code, rows = results({"--backend": f"http://127.0.0.1:{server.server_port}", "--cache-dir": ""})
    finally:
        server.shutdown()
        server.server_close()
    assert code == 1
    assert rows["omero.web"]["status"] == "pass"
    assert rows["clock"]["status"] == "fail"
    assert rows["clock"]["detail"].startswith("the backend's clock is 9")  # 89–91 s, by rounding
    assert "behind this host's (over 5 s)" in rows["clock"]["detail"]
    assert rows["clock"]["fix"] == FIXES["clock"]


@pytest.mark.parametrize("options, message", [
    ({"--backend": "omero.example.org"}, "edge: error: backend must be http(s)://host[:port] URLs"),
    ({"--redis": "http://127.0.0.1:6379"}, "edge: error: redis_url must be a redis:// URL"),
    ({"--access": "everyone"}, "invalid choice: 'everyone'"),
], ids=["backend-url", "redis-url", "access"])
def test_bad_settings_are_a_usage_error(options: dict[str, str], message: str) -> None:
    done = doctor(options)
    assert done.returncode == 2
    assert done.stdout == ""
    assert message in done.stderr
    assert "Traceback" not in done.stderr
