"""nginx in front of the edge (issue #7): the rendered configs, and the fallthrough for real.

`nginx -t` checks every variant `edge nginx-conf` renders; then a real nginx under a
temporary prefix, real edges and the simulated OMERO show that cacheable requests reach the
edge, everything else reaches OMERO.web untouched, and a dead, hung or failing edge never
shows the user an error: the same request is answered by the backend, at once.
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from edge.cli import build_parser, main
from edge.nginxconf import ms_regex
from edge.routes import Upstream, cacheable_regex, match
from tests.helpers import Proc, find_binary, free_port, wait_until

NGINX = find_binary("nginx")
pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (make system-deps)")
USER = ("--user", "root") if os.geteuid() == 0 else ()  # workers must read the private temp prefix

PUBLIC_IMAGE = "/webgateway/render_thumbnail/{}/"
# The slowest a request may take through nginx while its edge is dead (loopback, speed-0 backend).
DEAD_EDGE_BUDGET = 0.1


def render(path: Path, *options: str) -> Path:
    assert main(["nginx-conf", *options, "-o", str(path)]) == 0
    return path


def nginx_t(prefix: Path, conf: Path) -> None:
    result = subprocess.run([NGINX, "-t", "-p", str(prefix), "-c", str(conf), "-e", "stderr"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr + conf.read_text()


@dataclass
class Nginx:
    proc: Proc
    url: str
    prefix: Path

    def log(self) -> list[str]:
        """The access log once it has settled: nginx writes a line just after the answer leaves."""
        path = self.prefix / "access.log"
        lines: list[str] = []
        for _ in range(50):
            again = path.read_text().splitlines() if path.exists() else []
            if again == lines and lines:
                break
            lines = again
            time.sleep(0.02)
        return lines


class NginxFactory:
    """Renders a standalone config under a fresh prefix, checks it, runs nginx in the foreground."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[Nginx] = []

    def __call__(self, *options: str, scheme: str = "http") -> Nginx:
        prefix = self.tmp_path / f"nginx{len(self.started)}"
        prefix.mkdir()
        port = free_port()
        conf = render(prefix / "nginx.conf", *options, "--listen", f"127.0.0.1:{port}", "--prefix", str(prefix),
                      *USER)
        nginx_t(prefix, conf)
        proc = Proc([NGINX, "-p", str(prefix), "-c", str(conf), "-e", "stderr"], name="nginx")
        proc.wait_port(port)
        server = Nginx(proc, f"{scheme}://127.0.0.1:{port}", prefix)
        self.started.append(server)
        return server

    def stop_all(self) -> None:
        for server in self.started:
            server.proc.stop()


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[NginxFactory]:
    factory = NginxFactory(tmp_path)
    yield factory
    factory.stop_all()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    trustme = pytest.importorskip("trustme")
    directory = tmp_path_factory.mktemp("certs")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = {"ca": directory / "ca.pem", "cert": directory / "chain.pem", "key": directory / "key.pem"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    for i, pem in enumerate(cert.cert_chain_pems):
        pem.write_to_path(str(paths["cert"]), append=i > 0)
    cert.private_key_pem.write_to_path(str(paths["key"]))
    return paths


def public_images(sim, n: int) -> list[int]:
    plate = next(p for p in sim.info["plates"] if p["public"])
    grid = httpx.get(f"{sim.url}/webgateway/plate/{plate['id']}/", timeout=10).json()
    ids = [cell["id"] for row in grid["grid"] for cell in row if cell]
    return ids[:n]


# --- the generator: options, errors, nginx -t ---------------------------------------------------

@pytest.mark.parametrize("options, message", [
    (["--edge", "localhost"], "--edge must be HOST:PORT"),
    (["--edge", "127.0.0.1:70000"], "--edge must be HOST:PORT"),
    (["--omero-web", "http://omero:4080/"], "--omero-web must be HOST:PORT"),
    (["--ms", "ms"], "--ms must be HOST:PORT"),
    (["--listen", "0"], "--listen must be HOST:PORT"),
    (["--tls-cert", "/c.pem"], "--tls-cert and --tls-key go together"),
    (["--static-root", "static"], "--static-root must be an absolute path"),
    (["--session-cookie", "session-id"], "--session-cookie must be letters"),
])
def test_bad_options_are_one_line_errors(options: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["nginx-conf", *options]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith(f"edge: error: {message}")


def test_help_explains_every_option() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["nginx-conf"]
    options = [a for a in sub._actions if a.option_strings and a.dest != "help"]
    assert {a.dest for a in options} >= {"edge", "omero_web", "ms", "listen", "server_name", "tls_cert", "tls_key",
                                         "static_root", "microcache", "session_cookie", "snippet", "prefix", "output"}
    assert all(a.help and len(a.help) > 20 for a in options), [a.dest for a in options if not a.help]


def test_regexes_are_the_route_table() -> None:
    """nginx sends the edge exactly what it caches, and the microservice's share of it by upstream."""
    paths = ["/webgateway/render_thumbnail/1/", "/webgateway/render_thumbnail/1/96/", "/webgateway/get_thumbnails/",
             "/webgateway/render_image/1/", "/webgateway/render_image/1/0/0/", "/webgateway/render_image_region/1/0/0/",
             "/webclient/render_image/1/0/0/", "/webclient/render_image_region/1/0/0/", "/webgateway/imgData/1/",
             "/webgateway/histogram_json/1/channel/0/", "/webgateway/render_shape_mask/7/", "/webgateway/plate/5/0/",
             "/webclient/render_thumbnail_ngff/size/64/1/", "/webgateway/get_thumbnails_ngff/", "/api/v0/m/images/",
             "/api/v0/m/plates/3/wellsampleindex/0/wells/", "/api/v0/token/", "/api/v0/login/", "/webclient/",
             "/webclient/login/", "/webgateway/saveImgRDef/1/", "/static/webgateway/js/ome.plateview.js",
             "/webclient/annotation/3", "/webgateway/render_thumbnail/x/"]
    for path in paths:
        found = match(path)
        assert bool(re.fullmatch(cacheable_regex(), path)) == (found is not None), path
        assert bool(re.fullmatch(ms_regex(), path)) == (found is not None and found[0].upstream == Upstream.MS), path


VARIANTS = {
    "plain": [],
    "several-edges-uri": ["--edge", "127.0.0.1:8081", "--edge", "127.0.0.1:8082", "--edge", "127.0.0.1:8083"],
    "several-edges-least-conn": ["--edge", "127.0.0.1:8081", "--edge", "127.0.0.1:8082", "--balance", "least-conn"],
    "several-edges-round-robin": ["--edge", "127.0.0.1:8081", "--edge", "[::1]:8082", "--balance", "round-robin"],
    "ms": ["--ms", "127.0.0.1:8081"],
    "microcache": ["--microcache", "--microcache-valid", "5", "--microcache-size", "200m",
                   "--session-cookie", "sessionid_idr"],
    "everything": ["--edge", "127.0.0.1:8081", "--edge", "127.0.0.1:8082", "--ms", "127.0.0.1:4081", "--microcache",
                   "--static-root", "/opt/omero/web/OMERO.web/var/static", "--server-name", "omero.example.org",
                   "--edge-timeout", "30"],
}


@pytest.mark.process
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_nginx_accepts_standalone(variant: str, tmp_path: Path) -> None:
    conf = render(tmp_path / "nginx.conf", *VARIANTS[variant], "--listen", "127.0.0.1:18080",
                  "--prefix", str(tmp_path), *USER)
    text = conf.read_text()
    assert cacheable_regex() in text and "error_page 502 503 504 = @omero_edge_web;" in text
    nginx_t(tmp_path, conf)


@pytest.mark.process
def test_nginx_accepts_tls(tmp_path: Path, certs: dict[str, Path]) -> None:
    conf = render(tmp_path / "nginx.conf", "--tls-cert", str(certs["cert"]), "--tls-key", str(certs["key"]),
                  "--listen", "127.0.0.1:18443", "--prefix", str(tmp_path), *USER)
    assert "listen 127.0.0.1:18443 ssl http2;" in conf.read_text()
    nginx_t(tmp_path, conf)


@pytest.mark.process
def test_default_output_is_a_conf_d_file(tmp_path: Path) -> None:
    """Without --prefix: the http-context file a stock nginx.conf includes from conf.d/."""
    render(tmp_path / "omero-edge.conf", "--microcache", "--microcache-dir", str(tmp_path / "micro"))
    (tmp_path / "nginx.conf").write_text(f"pid {tmp_path}/nginx.pid;\nevents {{}}\n"
                                         f"http {{\n    include {tmp_path}/omero-edge.conf;\n}}\n")
    nginx_t(tmp_path, tmp_path / "nginx.conf")


@pytest.mark.process
def test_snippets_fit_an_existing_server_block(tmp_path: Path) -> None:
    """The http part in conf.d, the locations included in the site's own OMERO.web server."""
    render(tmp_path / "http.conf", "--snippet", "http", "--ms", "127.0.0.1:4081")
    render(tmp_path / "locations.conf", "--snippet", "--ms", "127.0.0.1:4081")
    assert not re.search(r"^\s*(upstream|map|proxy_cache_path) ", (tmp_path / "locations.conf").read_text(), re.M)
    (tmp_path / "nginx.conf").write_text(f"""pid {tmp_path}/nginx.pid;
events {{}}
http {{
    include {tmp_path}/http.conf;
    upstream omeroweb_omero {{ server 127.0.0.1:4080 fail_timeout=0; }}
    server {{
        listen 127.0.0.1:18080;
        client_max_body_size 0;
        include {tmp_path}/locations.conf;
        location / {{ proxy_pass http://omeroweb_omero; }}
    }}
}}
""")
    nginx_t(tmp_path, tmp_path / "nginx.conf")


# --- for real: nginx + edges + the simulated OMERO ---------------------------------------------

def restart(edge) -> Proc:
    """The same `edge serve` command line again: same port, same disk tier."""
    proc = Proc(edge.proc.argv, name="edge-restarted")
    proc.wait_http(edge.url + "/_edge/health")
    return proc


def test_routing_through_nginx(sim, edge, nginx: NginxFactory) -> None:
    front = nginx("--edge", edge.url.split("//")[1], "--omero-web", sim.url.split("//")[1],
                  "--ms", sim.ms_url.split("//")[1])
    image = public_images(sim, 1)[0]
    with httpx.Client(base_url=front.url, timeout=10) as client:
        for path in (PUBLIC_IMAGE.format(image), f"/webgateway/imgData/{image}/", "/api/v0/m/screens/",
                     f"/webgateway/get_thumbnails/?id={image}&_=123"):
            resp = client.get(path)
            assert resp.status_code == 200 and "x-edge-cache" in resp.headers, path
        for path in ("/webclient/login/", "/api/v0/token/"):
            resp = client.get(path)
            assert resp.status_code == 200 and "x-edge-cache" not in resp.headers, path
        # Writes on a cacheable path never reach the edge either.
        assert "x-edge-cache" not in client.post(PUBLIC_IMAGE.format(image)).headers


def test_dead_edge_falls_through_at_once_and_comes_back(sim, edge, nginx: NginxFactory) -> None:
    front = nginx("--edge", edge.url.split("//")[1], "--omero-web", sim.url.split("//")[1])
    paths = [PUBLIC_IMAGE.format(i) for i in public_images(sim, 20)]
    with httpx.Client(base_url=front.url, timeout=10) as client:
        live = {path: client.get(path) for path in paths}
        assert all(r.status_code == 200 and "x-edge-cache" in r.headers for r in live.values())

        edge.proc.kill()
        timings = []
        for _ in range(3):
            for path in paths:
                started = time.perf_counter()
                resp = client.get(path)
                timings.append(time.perf_counter() - started)
                assert resp.status_code == 200 and "x-edge-cache" not in resp.headers, path
                assert resp.content == live[path].content
        direct = []
        with httpx.Client(base_url=sim.url, timeout=10) as backend:
            for path in paths:
                started = time.perf_counter()
                backend.get(path)
                direct.append(time.perf_counter() - started)
        print(f"\ndead edge: {len(timings)} requests through nginx, median {statistics.median(timings) * 1000:.1f} ms, "
              f"max {max(timings) * 1000:.1f} ms (the backend directly: median "
              f"{statistics.median(direct) * 1000:.1f} ms, max {max(direct) * 1000:.1f} ms)")
        assert max(timings) < DEAD_EDGE_BUDGET

        # Fresh requests from here: the fallthrough gave this client OMERO.web's public session
        # cookie, and an edge in public-only mode passes session holders through (BYPASS).
        revived = restart(edge)
        try:
            wait_until(lambda: "x-edge-cache" in httpx.get(front.url + paths[0], timeout=10).headers, 5, 0.1,
                       message="traffic did not return to the restarted edge")
            back = {httpx.get(front.url + path, timeout=10).headers.get("x-edge-cache") for path in paths}
            assert back == {"HIT"}, back  # and its disk tier survived the kill
        finally:
            revived.stop()


def test_edge_errors_fall_through(sim, edges, nginx: NginxFactory) -> None:
    """An edge whose own upstream is gone answers 502/503/504: nginx asks OMERO.web itself."""
    broken = edges(backend=f"http://127.0.0.1:{free_port()}")
    front = nginx("--edge", broken.url.split("//")[1], "--omero-web", sim.url.split("//")[1])
    path = PUBLIC_IMAGE.format(public_images(sim, 1)[0])
    assert broken.get(path).status_code in (502, 503, 504)
    resp = httpx.get(front.url + path, timeout=10)
    assert resp.status_code == 200 and resp.headers["content-type"] == "image/jpeg"
    assert re.search(r"ups=5\d\d : 200 ", front.log()[-1]), front.log()[-1]


def test_hung_edge_falls_through_after_edge_timeout(sim, edge, nginx: NginxFactory) -> None:
    front = nginx("--edge", edge.url.split("//")[1], "--omero-web", sim.url.split("//")[1], "--edge-timeout", "1")
    path = PUBLIC_IMAGE.format(public_images(sim, 1)[0])
    os.killpg(edge.proc.pid, signal.SIGSTOP)
    try:
        with httpx.Client(base_url=front.url, timeout=10) as client:
            started = time.perf_counter()
            resp = client.get(path)
            elapsed = time.perf_counter() - started
            assert resp.status_code == 200 and "x-edge-cache" not in resp.headers
            assert 0.9 < elapsed < 3, elapsed
            # Marked down: the next requests do not wait for it.
            started = time.perf_counter()
            assert client.get(path).status_code == 200
            assert time.perf_counter() - started < DEAD_EDGE_BUDGET
    finally:
        os.killpg(edge.proc.pid, signal.SIGCONT)


def test_login_and_writes_pass_through_untouched(sim, edge, nginx: NginxFactory) -> None:
    front = nginx("--edge", edge.url.split("//")[1], "--omero-web", sim.url.split("//")[1],
                  "--ms", sim.ms_url.split("//")[1])
    alice = next(u for u in sim.info["users"] if u["username"] == "alice")
    private = sim.info["private"]["lab-a"]["images"][0]
    with httpx.Client(base_url=front.url, timeout=10) as client:
        token = client.get("/api/v0/token/").json()["data"]
        login = client.post("/api/v0/login/", data={"username": "alice", "password": alice["password"], "server": 1},
                            headers={"X-CSRFToken": token})
        assert login.status_code == 200 and "x-edge-cache" not in login.headers
        assert sim.info["session_cookie"] in client.cookies
        thumb = client.get(PUBLIC_IMAGE.format(private))
        assert thumb.status_code == 200 and "x-edge-cache" in thumb.headers
        # OMERO.web reads the settings from the query string (gw/views.py save_image_rdef_json)
        save = client.post(f"/webgateway/saveImgRDef/{private}/", params={"c": "1|0:255$FF0000", "m": "c"},
                           headers={"X-CSRFToken": client.cookies["csrftoken"]})
        assert save.status_code == 200 and "x-edge-cache" not in save.headers
        # The microservice's routes, logged in, with the edge dead: answered by the microservice.
        edge.proc.kill()
        ngff = client.get(f"/webgateway/render_thumbnail_ngff/{private}/")
        assert ngff.status_code == 200 and ngff.headers["content-type"].startswith("image/")
        assert front.log()[-1].split(" up=")[1].split(" ups=")[0].endswith(sim.ms_url.split("//")[1])


def test_several_edges_cover_for_each_other(sim, edges, nginx: NginxFactory) -> None:
    first, second = edges(), edges()
    front = nginx("--edge", first.url.split("//")[1], "--edge", second.url.split("//")[1],
                  "--omero-web", sim.url.split("//")[1])
    paths = [PUBLIC_IMAGE.format(i) for i in public_images(sim, 20)]
    with httpx.Client(base_url=front.url, timeout=10) as client:
        assert all("x-edge-cache" in client.get(path).headers for path in paths)
        used = {line.split(" up=")[1].split()[0] for line in front.log()}
        assert used == {first.url.split("//")[1], second.url.split("//")[1]}  # the URIs are spread by hash
        first.proc.kill()
        assert all("x-edge-cache" in client.get(path).headers for path in paths)  # the other edge takes them


def test_microcache_serves_public_hits_only(sim, edge, nginx: NginxFactory) -> None:
    front = nginx("--edge", edge.url.split("//")[1], "--omero-web", sim.url.split("//")[1], "--microcache")
    path = PUBLIC_IMAGE.format(public_images(sim, 1)[0])
    for buster in range(3):  # `_=` is not part of the key
        resp = httpx.get(f"{front.url}{path}?_={buster}", timeout=10)
        assert resp.status_code == 200 and "set-cookie" not in resp.headers
    statuses = [line.split("micro=")[1] for line in front.log()]
    assert statuses[-1] == "HIT", front.log()
    httpx.get(front.url + path, cookies={"sessionid": "someone"}, timeout=10)
    assert front.log()[-1].endswith("micro=BYPASS")


def test_http2_over_tls_through_nginx(sim, edge, nginx: NginxFactory, certs: dict[str, Path]) -> None:
    curl = find_binary("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    front = nginx("--edge", edge.url.split("//")[1], "--omero-web", sim.url.split("//")[1],
                  "--tls-cert", str(certs["cert"]), "--tls-key", str(certs["key"]), scheme="https")
    url = front.url + PUBLIC_IMAGE.format(public_images(sim, 1)[0])
    result = subprocess.run([curl, "--http2", "--cacert", str(certs["ca"]), "-sS", "-o", os.devnull, "-D", "-",
                             "-w", "%{http_version} %{http_code}", url], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("2 200") and "x-edge-cache:" in result.stdout.lower()
