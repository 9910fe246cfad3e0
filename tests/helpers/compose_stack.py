"""deploy/compose's stack without Docker, run by tests/test_deploy_files.py inside a private network
and mount namespace, so the compose file's own names and ports are used as they are.

The namespace has only a loopback interface, and its /etc/hosts maps `edge`, `redis` and `omero-web`
to it, as Docker's DNS and `extra_hosts` would. The services run here are:
- redis-server with deploy/compose/redis.conf;
- `bench sim` as the existing OMERO.web on omero-web:4080;
- `edge serve` with the compose file's edge environment (only the cache dir and the bind host
  changed: a temp dir, and 127.0.0.1);
- nginx with the mounted config included in an http block, as the nginx image does.

Prints one JSON object: what a client on port 80 saw.
Usage: python -m tests.helpers.compose_stack TMPDIR (from the repository root, as root, in the namespace).
"""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import httpx
import redis
import yaml

from tests.helpers.procs import ROOT, Proc, find_binary, script

COMPOSE_DIR = ROOT / "deploy" / "compose"


def interpolate(value: str) -> str:
    """Compose's `${NAME:-default}` and `${NAME:?message}` with NAME unset: the default, or '' for a test."""
    return re.sub(r"\$\{\w+:([-?])([^}]*)\}", lambda m: m.group(2) if m.group(1) == "-" else "", value)


def edge_environment(compose: dict, tmp: Path) -> dict[str, str]:
    """The compose file's edge environment as compose passes it with no variable set; the cache dir and
    bind host are this run's, the tokens set."""
    env = {k: interpolate(str(v)) for k, v in compose["services"]["edge"]["environment"].items()}
    env["EDGE_CACHE_DIR"] = str(tmp / "cache")
    env["EDGE_BIND"] = "127.0.0.1:" + env["EDGE_BIND"].rpartition(":")[2]
    env["EDGE_WARM_TOKEN"] = env["EDGE_PURGE_TOKEN"] = "compose-secret"
    return env


def main(tmp: Path) -> dict:
    compose = yaml.safe_load((COMPOSE_DIR / "docker-compose.yml").read_text())
    user = "user root;\n" if os.geteuid() == 0 else ""
    (tmp / "nginx.conf").write_text(f"{user}pid {tmp}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
                                    f"http {{\n    include {COMPOSE_DIR / 'nginx' / 'omero-edge.conf'};\n}}\n")
    started: list[Proc] = []
    try:
        started.append(Proc.up([find_binary("redis-server"), str(COMPOSE_DIR / "redis.conf"), "--dir", str(tmp),
                                "--save", ""], name="redis", ports=[6379]))
        started.append(Proc.up([script("bench"), "sim", "--host", "127.0.0.1", "--port", "4080", "--ms-port", "4081",
                                "--speed", "0"], name="sim", health="http://omero-web:4080/_sim/stats"))
        image = httpx.get("http://omero-web:4080/_sim/info", timeout=10).json()["public_images"][0]
        edge = Proc.up([script("edge"), "serve"], env=edge_environment(compose, tmp), name="edge",
                       health="http://edge:8080/_edge/health")
        started.append(edge)
        started.append(Proc.up([find_binary("nginx"), "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-e", "stderr",
                                "-g", "daemon off;"], name="nginx", ports=[80]))
        url = f"http://127.0.0.1/webgateway/render_thumbnail/{image}/"
        seen = [httpx.get(url, timeout=10) for _ in range(2)]
        l2 = len(redis.Redis(host="redis", port=6379, db=1).keys("edge:e:*"))
        edge.stop()
        fallthrough = httpx.get(url, timeout=10)
        return {"status": [r.status_code for r in seen], "cache": [r.headers.get("x-edge-cache") for r in seen],
                "redis_entries": l2, "fallthrough_status": fallthrough.status_code,
                "fallthrough_cache": fallthrough.headers.get("x-edge-cache"),
                "same_bytes": fallthrough.content == seen[0].content,
                "access_log": (Path("/var/log/nginx/omero-edge.access.log").read_text().splitlines())}
    finally:
        for proc in reversed(started):
            proc.stop()


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
