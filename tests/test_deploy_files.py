"""The deployment files in deploy/ (issue 17.3) are checked as far as this machine allows.

- systemd units: `systemd-analyze verify` passes with no warning, after the units' /opt/omero-edge/bin/ is
  replaced by this venv's scripts. Every option in an ExecStart parses with the real CLI's argparse
  parser, and every EDGE_* variable is a setting.
- docker-compose example: Docker's engine does not run here. So the compose file is parsed as YAML and
  its services, ports, volumes and environment are checked against the settings and the nginx config.
  The nginx config is byte-identical to what its `edge nginx-conf` command renders today, and a real
  `nginx -t` accepts it. Compose's service names are resolved the way Docker's DNS does it, with a
  private /etc/hosts in a mount namespace. The redis.conf, run by a real redis-server, evicts cache
  entries and keeps the purge state. The Dockerfile's COPY sources exist and the wheel builds from them.
  And the stack itself runs without Docker in a private network and mount namespace, with the compose
  file's names, ports, edge environment, redis.conf and nginx config (tests/helpers/compose_stack.py).
- deploy/edge.toml is `edge config --toml`, and it loads: as written and with every setting uncommented.
- The units' commands run for real (no systemd here): the edge with the sample config serves, the warm
  and follow commands go through it, SIGHUP (reload) and SIGTERM (stop) behave as the unit says.
- The README's "Run it for real": its `edge`/`warm` commands parse, in the operator's order.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from dataclasses import fields
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import redis
import yaml

from edge.cli import build_parser, main
from edge.entry import Entry
from edge.settings import Settings
from edge.tiers import RedisTier
from edge.tomlconf import sample_toml
from tests.helpers import ROOT, Proc, find_binary, free_port, start_sim, wait_until
from tests.helpers.compose_stack import interpolate
from warm.cli import parser as warm_parser

DEPLOY = ROOT / "deploy"
UNITS = sorted((DEPLOY / "systemd").iterdir())
INSTALLED_BIN = "/opt/omero-edge/bin/"
VENV_BIN = Path(sys.executable).parent
SYSTEMD_ANALYZE = find_binary("systemd-analyze")
NGINX = find_binary("nginx")
COMPOSE_DIR = DEPLOY / "compose"
SETTINGS = {f.name for f in fields(Settings)}
PARSERS = {"edge": build_parser, "warm": warm_parser}
EXPOSURE_MAX = 35  # `systemd-analyze security --threshold` counts tenths: 3.5, the top of its "OK" band


# --- systemd units ---------------------------------------------------------------------------------

def unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A unit file's sections as (key, value) lists, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
        else:
            key, _, value = line.partition("=")
            current.append((key, value))
    return sections


def values(path: Path, section: str, key: str) -> list[str]:
    return [v for k, v in unit(path).get(section, []) if k == key]


def verify(directory: Path, name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SYSTEMD_ANALYZE, "verify", str(directory / name)], capture_output=True, text=True,
                          timeout=60)


@pytest.fixture
def rendered(tmp_path: Path) -> Path:
    """The units with their scripts at this venv's path: verify refuses an ExecStart that does not exist."""
    for path in UNITS:
        (tmp_path / path.name).write_text(path.read_text().replace(INSTALLED_BIN, f"{VENV_BIN}/"))
    return tmp_path


def test_the_units_are_there() -> None:
    assert [p.name for p in UNITS] == ["omero-edge-follow.service", "omero-edge-warm.service",
                                       "omero-edge-warm.timer", "omero-edge-watch.service", "omero-edge.service"]


@pytest.mark.process
@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (Debian package systemd)")
@pytest.mark.parametrize("name", [p.name for p in UNITS])
def test_unit_verifies_without_a_warning(rendered: Path, name: str) -> None:
    result = verify(rendered, name)
    assert result.returncode == 0 and result.stderr == "", result.stderr


@pytest.mark.process
@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (Debian package systemd)")
@pytest.mark.parametrize("name", [p.name for p in UNITS if p.suffix == ".service"])
def test_service_exposure_stays_ok(rendered: Path, name: str) -> None:
    """systemd's own sandbox score (0 = locked down, 10 = none): at most 3.5, so no hardening line is lost."""
    result = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=true", f"--threshold={EXPOSURE_MAX}",
                             "--no-pager", str(rendered / name)], capture_output=True, text=True, timeout=60)
    print(result.stdout.strip().splitlines()[-1])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr


@pytest.mark.process
@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (Debian package systemd)")
def test_verify_reports_a_broken_unit(rendered: Path) -> None:
    """A wrong value or key is only a warning (exit 0): the check above must read stderr."""
    path = rendered / "omero-edge.service"
    path.write_text(path.read_text().replace("Restart=on-failure", "Restart=sometimes\nRestartSecs=2"))
    assert "sometimes" in verify(rendered, path.name).stderr
    assert "RestartSecs" in verify(rendered, path.name).stderr


def named_settings(text: str) -> set[str]:
    """The settings an `EDGE_*` variable in `text` names (EDGE_CONFIG is the config file's path)."""
    return {name.lower() for name in re.findall(r"\bEDGE_([A-Z0-9_]+)", text)} - {"config"}


def exec_argv(path: Path) -> list[str]:
    (line,) = values(path, "Service", "ExecStart")
    return shlex.split(line)


def assert_parses(argv: list[str]) -> None:
    """`argv` (an `edge` or `warm` command line) is accepted by that CLI's own argparse parser. A
    subcommand another branch adds (`edge watch`, `edge doctor`) is skipped until it is merged."""
    program = Path(argv[0]).name
    parser = PARSERS[program]()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    if argv[1] not in commands:
        pytest.skip(f"`{program} {argv[1]}` is not in this branch yet")
    try:
        parser.parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"{program} does not accept {shlex.join(argv[1:])}")


SERVICES = [p for p in UNITS if p.suffix == ".service"]


@pytest.mark.parametrize("path", SERVICES, ids=lambda p: p.name)
def test_unit_names_only_options_and_settings_that_exist(path: Path) -> None:
    argv = exec_argv(path)
    assert argv[0].startswith(INSTALLED_BIN)
    assert named_settings(path.read_text()) <= SETTINGS  # comments included
    assert_parses(argv)


@pytest.mark.parametrize("path", SERVICES, ids=lambda p: p.name)
def test_unit_writes_only_where_the_sandbox_lets_it(path: Path) -> None:
    """ProtectSystem=strict: the cache dir is a CacheDirectory= and ReadWritePaths=, the warmer's
    files lie under its StateDirectory=, and nothing is written to the home dir (ProtectHome=)."""
    argv = exec_argv(path)
    assert values(path, "Service", "ProtectSystem") == ["strict"]
    assert values(path, "Service", "NoNewPrivileges") == ["yes"]
    assert values(path, "Service", "User") == ["omero-edge"]
    if "--cache-dir" in argv:
        cache = argv[argv.index("--cache-dir") + 1]
        assert values(path, "Service", "ReadWritePaths") == [cache]
        assert [f"/var/cache/{d}" for d in values(path, "Service", "CacheDirectory")] == [cache]
    if Path(argv[0]).name == "warm":
        state = [f"/var/lib/{d}/" for d in values(path, "Service", "StateDirectory")]
        files = [argv[i + 1] for i, a in enumerate(argv) if a in ("--journal", "--state")]
        assert files and all(f.startswith(tuple(state)) for f in files), (files, state)


def test_timer_runs_the_oneshot_warm() -> None:
    timer = DEPLOY / "systemd" / "omero-edge-warm.timer"
    service = timer.with_suffix(".service")
    assert values(timer, "Timer", "Unit") == [] and service.exists()  # a timer starts its namesake
    assert values(service, "Service", "Type") == ["oneshot"] and not values(service, "Install", "WantedBy")
    assert values(timer, "Install", "WantedBy") == ["timers.target"]
    assert "--since" in exec_argv(service)


# --- the sample config -----------------------------------------------------------------------------

SAMPLE = DEPLOY / "edge.toml"
SETTING_LINE = re.compile(r"(?m)^# (\w+) = ")


def test_sample_config_is_what_edge_config_toml_writes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "--toml"]) == 0
    assert capsys.readouterr().out == SAMPLE.read_text() == sample_toml(Settings()), \
        "deploy/edge.toml is stale: run `edge config --toml > deploy/edge.toml`"


def test_sample_config_shows_every_setting_once_and_loads(tmp_path: Path) -> None:
    text = SAMPLE.read_text()
    assert SETTING_LINE.findall(text) == [f.name for f in fields(Settings)]
    assert Settings.load(str(SAMPLE), env={}) == Settings()
    uncommented = tmp_path / "edge.toml"
    uncommented.write_text(SETTING_LINE.sub(r"\1 = ", text))
    assert Settings.load(str(uncommented), env={}) == Settings()  # every default shown is the default, in TOML


# --- docker compose ----------------------------------------------------------------------------------

COMPOSE = yaml.safe_load((COMPOSE_DIR / "docker-compose.yml").read_text())
SERVICE = COMPOSE["services"]
NGINX_CONF = COMPOSE_DIR / "nginx" / "omero-edge.conf"
(RENDER,) = [shlex.split(line) for line in (COMPOSE_DIR / "README.md").read_text().splitlines()
             if line.startswith("edge nginx-conf ")]


def option(name: str) -> str:
    return RENDER[RENDER.index(name) + 1]


def test_compose_has_edge_redis_and_nginx_in_front() -> None:
    assert set(SERVICE) == {"edge", "redis", "nginx"}
    assert SERVICE["nginx"]["ports"] == ["${HTTP_PORT:-80}:80"] and option("--listen") == "80"
    assert all(p.startswith("127.0.0.1:") for p in SERVICE["edge"]["ports"])  # only nginx faces users
    assert "ports" not in SERVICE["redis"]
    for name in ("edge", "nginx"):  # OMERO.web is the site's, named by $OMERO_WEB_IP
        assert SERVICE[name]["extra_hosts"] == ["omero-web:${OMERO_WEB_IP:-host-gateway}"]
    for name, svc in SERVICE.items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            assert source in COMPOSE["volumes"] or (COMPOSE_DIR / source).is_file(), (name, volume)


def test_compose_edge_environment_is_settings_that_agree_with_nginx_and_redis() -> None:
    env = {k: interpolate(str(v)) for k, v in SERVICE["edge"]["environment"].items()}
    assert all(k.startswith("EDGE_") for k in env) and named_settings(" ".join(env)) <= SETTINGS, sorted(env)
    assert named_settings((COMPOSE_DIR / "docker-compose.yml").read_text() + (COMPOSE_DIR / "README.md").read_text()) \
        <= SETTINGS
    settings = Settings.load(env=env)  # valid values, not only valid names
    backend = urlsplit(settings.backend[0])
    assert option("--omero-web") == backend.netloc == "omero-web:4080"
    assert option("--edge") == f"edge:{settings.bind.rpartition(':')[2]}"
    assert urlsplit(settings.redis_url).hostname == "redis"
    assert f"edge-cache:{settings.cache_dir}" in SERVICE["edge"]["volumes"]
    assert any(p.endswith(f":{settings.bind.rpartition(':')[2]}") for p in SERVICE["edge"]["ports"])


def test_compose_nginx_conf_is_what_its_command_renders(tmp_path: Path) -> None:
    assert RENDER[-2:] == ["-o", "deploy/compose/nginx/omero-edge.conf"]
    out = tmp_path / "out.conf"
    assert main([*RENDER[1:-1], str(out)]) == 0
    assert out.read_text() == NGINX_CONF.read_text(), "deploy/compose/nginx/omero-edge.conf is stale: " \
                                                     "run `make nginx-examples`"
    mounted = [v for v in SERVICE["nginx"]["volumes"] if v.startswith("./nginx/")]
    assert mounted == ["./nginx/omero-edge.conf:/etc/nginx/conf.d/default.conf:ro"]


@pytest.mark.process
@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (make system-deps)")
def test_compose_nginx_conf_passes_nginx_t(tmp_path: Path) -> None:
    """As in the nginx image: conf.d/*.conf included in the http context, compose's names resolvable."""
    (tmp_path / "hosts").write_text("127.0.0.1 localhost edge omero-web\n")
    (tmp_path / "log").mkdir()
    (tmp_path / "nginx.conf").write_text(f"pid {tmp_path}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
                                         f"http {{\n    include {NGINX_CONF};\n}}\n")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, text=True, timeout=10)
    if probe.returncode != 0:
        pytest.skip(f"no private mount namespace for compose's names (unshare -m: {probe.stderr.strip()})")
    # /var/log/nginx: the image's log dir, where the config's access log goes (a private one here).
    script = (f"mount --bind {tmp_path}/hosts /etc/hosts && "
              f"mount --bind {tmp_path}/log /var/log/nginx && "
              f"exec {NGINX} -t -p {tmp_path} -c {tmp_path}/nginx.conf -e stderr")
    result = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "test is successful" in result.stderr, result.stderr


@pytest.mark.process
@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (make system-deps)")
def test_compose_stack_serves_through_nginx_and_falls_through(tmp_path: Path) -> None:
    """The compose stack without Docker (tests/helpers/compose_stack.py) in a private network and mount
    namespace, with the compose file's own names and ports: nginx on :80 sends a thumbnail to the edge
    (MISS, then HIT, stored in Redis); with the edge stopped nginx answers the same bytes from OMERO.web."""
    (tmp_path / "hosts").write_text("127.0.0.1 localhost edge redis omero-web\n")
    (tmp_path / "log").mkdir()
    probe = subprocess.run(["unshare", "-n", "-m", "ip", "link", "set", "lo", "up"], capture_output=True, text=True,
                           timeout=10)
    if probe.returncode != 0:
        pytest.skip(f"no private network namespace (unshare -n -m, ip link: {probe.stderr.strip()})")
    stack = (f"ip link set lo up && mount --bind {tmp_path}/hosts /etc/hosts && "
             f"mount --bind {tmp_path}/log /var/log/nginx && "
             f"exec {shlex.quote(sys.executable)} -m tests.helpers.compose_stack {tmp_path}")
    result = subprocess.run(["unshare", "-n", "-m", "sh", "-c", stack], capture_output=True, text=True, timeout=120,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.splitlines()[-1])
    print(seen)
    assert seen["status"] == [200, 200] and seen["cache"] == ["MISS", "HIT"]
    assert seen["redis_entries"] > 0
    assert seen["fallthrough_status"] == 200 and seen["fallthrough_cache"] is None and seen["same_bytes"]
    # nginx's log: the edge refused (502), then OMERO.web answered the same request
    assert len(seen["access_log"]) == 3 and "up=127.0.0.1:8080 : 127.0.0.1:4080 ups=502 : 200" in seen["access_log"][-1]


@pytest.mark.process
def test_dockerfile_copies_what_the_wheel_needs_and_runs_edge_serve(tmp_path: Path) -> None:
    """Its COPY sources exist, and the wheel builds from them alone, laid out as the build stage does
    (pip wheel as in its RUN, without build isolation: no index here), package data included."""
    build = SERVICE["edge"]["build"]
    context = (COMPOSE_DIR / build["context"]).resolve()
    dockerfile = context / build["dockerfile"]
    assert context == ROOT and dockerfile.is_file() and dockerfile.with_name("Dockerfile.dockerignore").is_file()
    lines = dockerfile.read_text().splitlines()
    copies = [shlex.split(line)[1:] for line in lines if line.startswith("COPY ") and "--from=" not in line]
    src = tmp_path / "src"
    for *sources, dest in copies:
        for source in sources:
            assert (context / source).exists(), source
            target = src / dest / (Path(source).name if dest.endswith("/") else "")
            if (context / source).is_dir():
                shutil.copytree(context / source, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(context / source, target)
    assert any("pip wheel" in line and "--no-deps" in line for line in lines)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--wheel-dir",
                    str(tmp_path / "wheels"), str(src)], check=True, capture_output=True, timeout=120)
    (wheel,) = (tmp_path / "wheels").glob("omero_edge-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "edge/cli.py" in names and any(n.startswith("edge/nginx/") and n.endswith(".conf.tmpl") for n in names)
    (cmd,) = [line for line in lines if line.startswith("CMD ")]
    assert cmd == 'CMD ["edge", "serve"]'
    assert any("pip install" in line and "/wheels/*.whl" in line for line in lines)


@pytest.mark.process
@pytest.mark.parametrize("policy,kept", [("volatile-lru", True), ("allkeys-lru", False)])
def test_redis_conf_evicts_entries_and_keeps_the_purge_state(tmp_path: Path, policy: str, kept: bool) -> None:
    """Under memory pressure the real redis-server, run with deploy/compose/redis.conf (its memory cut
    to 4 MB), evicts cache entries and keeps every purge key: they carry no TTL. The same run with
    allkeys-lru instead shows why the file does not use it: the purge state goes first."""
    binary = find_binary("redis-server")
    assert binary, "redis-server not found: make system-deps"
    port = free_port()
    override = [] if policy == "volatile-lru" else ["--maxmemory-policy", policy]
    proc = Proc.up([binary, str(COMPOSE_DIR / "redis.conf"), "--port", str(port), "--bind", "127.0.0.1",
                    "--dir", str(tmp_path), "--save", "", "--maxmemory", "4mb", *override], name="redis",
                   ports=[port])
    try:
        url = f"redis://127.0.0.1:{port}/1"
        client = redis.Redis.from_url(url)
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": policy}
        assert main(["purge", "--image", "12", "--redis", url, "--cache-dir", str(tmp_path / "cache")]) == 0
        purge_keys = sorted(client.keys("edge:1:purge:*"))
        assert purge_keys and all(client.ttl(k) == -1 for k in purge_keys)

        async def fill() -> None:
            tier = RedisTier(url, max_body=1 << 20, timeout=2.0)
            body = b"x" * 50_000
            for i in range(40):  # 40 x 5 entries x 50 KB = 10 MB into 4 MB
                await tier.set_many([(f"d{i}-{j}", Entry.build(f"k{i}-{j}", 200, "image/jpeg", body, ttl=60,
                                                                stale=60, epoch=0, tags=(), public=True))
                                     for j in range(5)])
            await tier.close()

        asyncio.run(fill())
        evicted, left = client.info("stats")["evicted_keys"], sorted(client.keys("edge:1:purge:*"))
        print(f"{policy}: {evicted} keys evicted, {len(client.keys('edge:e:*'))} entries kept, "
              f"purge keys {len(left)} of {len(purge_keys)} kept")
        assert evicted > 0
        assert (left == purge_keys) is kept
        client.close()
    finally:
        proc.stop()


# --- the units' commands, run for real (without systemd: PID 1 here is not systemd) ---------------------

def environment_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))


@pytest.mark.process
def test_units_commands_serve_warm_follow_and_stop_on_sigterm(tmp_path: Path) -> None:
    """The edge unit's ExecStart with the sample config (backend and bind uncommented, as an operator
    does), the secrets file as EnvironmentFile=, then the warm and follow units' ExecStart against it;
    SIGTERM (KillSignal=) stops the edge well within TimeoutStopSec=. Paths and the port are this test's."""
    sim = start_sim()
    port = free_port()
    places = {INSTALLED_BIN: f"{VENV_BIN}/", "/etc/omero-edge/": f"{tmp_path}/etc/",
              "/var/cache/omero-edge": f"{tmp_path}/cache", "/var/lib/omero-edge/": f"{tmp_path}/lib/",
              "127.0.0.1:8080": f"127.0.0.1:{port}"}

    def argv(name: str) -> list[str]:
        words = exec_argv(DEPLOY / "systemd" / name)
        for old, new in places.items():
            words = [w.replace(old, new) for w in words]
        return words

    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "edge.toml").write_text(SAMPLE.read_text().replace(
        '# backend = ["http://127.0.0.1:4080"]', f'backend = ["{sim.url}"]').replace(
        '# bind = "127.0.0.1:8080"', f'bind = "127.0.0.1:{port}"'))
    (tmp_path / "etc" / "secrets.env").write_text("EDGE_WARM_TOKEN=warm-secret\nEDGE_PURGE_TOKEN=purge-secret\n")
    env = {**os.environ, **environment_file(tmp_path / "etc" / "secrets.env")}
    edge = Proc.up(argv("omero-edge.service"), env=env, name="edge", health=f"http://127.0.0.1:{port}/_edge/health")
    try:
        (stop,) = values(DEPLOY / "systemd" / "omero-edge.service", "Service", "TimeoutStopSec")
        warm = subprocess.run(argv("omero-edge-warm.service"), env=env, capture_output=True, text=True, timeout=120)
        assert warm.returncode == 0, warm.stderr
        follow = subprocess.run([*argv("omero-edge-follow.service"), "--once"], env=env, capture_output=True,
                                text=True, timeout=60)
        assert follow.returncode == 0, follow.stderr
        assert (tmp_path / "lib" / "warm" / "journal.sqlite").is_file()
        (reload,) = values(DEPLOY / "systemd" / "omero-edge.service", "Service", "ExecReload")
        assert reload == "/bin/kill -HUP $MAINPID"
        edge.popen.send_signal(signal.SIGHUP)  # `systemctl reload`: the workers respawn, the edge keeps serving
        wait_until(lambda: "Stopped old worker" in edge.log_tail(), timeout=20, message="granian did not respawn")
        assert edge.alive() and httpx.get(f"http://127.0.0.1:{port}/_edge/health", timeout=5).status_code == 200
        started = time.monotonic()
        assert values(DEPLOY / "systemd" / "omero-edge.service", "Service", "KillMode") == ["mixed"]
        edge.popen.send_signal(signal.SIGTERM)  # KillMode=mixed: the main process only
        edge.popen.wait(int(stop))
        assert time.monotonic() - started < int(stop)
        assert edge.popen.returncode in (0, -signal.SIGTERM)  # what systemd counts as a clean stop
        print(f"warm: {warm.stderr.strip().splitlines()[-1]}\nfollow: {follow.stderr.strip()[-200:]}\n"
              f"edge stopped by SIGTERM in {time.monotonic() - started:.2f} s, exit {edge.popen.returncode}")
    finally:
        edge.stop()
        sim.stop()


# --- the README's walk-through ---------------------------------------------------------------------------

def walkthrough() -> str:
    return (ROOT / "README.md").read_text().split("## Run it for real\n")[1].split("\n## ")[0]


def shell_commands(markdown: str) -> list[list[str]]:
    """Every `edge …` and `warm …` command in the ```sh blocks of `markdown`, as argv."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", markdown, re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            segments: list[list[str]] = [[]]
            for word in shlex.split(line, comments=True):
                if word in ("&&", "||", "|", ";"):
                    segments.append([])
                else:
                    segments[-1].append(word)
            for segment in segments:
                if "--" in segment and segment[0] == "runuser":
                    segment = segment[segment.index("--") + 1:]
                if segment and Path(segment[0]).name in PARSERS:
                    cut = next((i for i, w in enumerate(segment) if w.startswith((">", "<"))), len(segment))
                    commands.append(segment[:cut])
    return commands


def readme_commands() -> list[list[str]]:
    return shell_commands(walkthrough())


@pytest.mark.parametrize("argv", readme_commands() + shell_commands((COMPOSE_DIR / "README.md").read_text()),
                         ids=shlex.join)
def test_readme_walkthrough_commands_parse(argv: list[str]) -> None:
    assert_parses(argv)


def test_readme_walkthrough_covers_the_operator_steps() -> None:
    """In order: the config, edge doctor before the edge starts, nginx, a warm run; every unit; monitoring."""
    argvs = [shlex.join([Path(a[0]).name, *a[1:]]) for a in readme_commands()]
    steps = ["edge config --toml", "edge doctor", "edge nginx-conf", "warm all", "warm status"]
    found = [next((i for i, a in enumerate(argvs) if a.startswith(step)), -1) for step in steps]
    assert -1 not in found and found == sorted(found), argvs
    section = walkthrough()
    assert section.index("edge doctor") < section.index("systemctl enable --now omero-edge")
    enabled = {w for line in section.splitlines() if line.startswith("systemctl") for w in line.split()}
    assert [p.name for p in UNITS if not {p.name, p.stem} & enabled] == ["omero-edge-warm.service"]  # timer's
    for needle in ("/_edge/health", "/_edge/metrics", "access_log", "omero-edge.access.log"):
        assert needle in section
    assert named_settings(section) <= SETTINGS
