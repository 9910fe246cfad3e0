"""`edge serve` over granian's RSGI interface answers exactly as over ASGI; the benchmark's bare app answers.

One pipeline, two adapters (edge/rsgi.py): a hot hit is one RSGI call, everything else runs the ASGI
app through the adapter. Each test compares an RSGI edge with an ASGI one in front of the same sim.
"""
from __future__ import annotations

import re
import sys

import httpx
import pytest

from tests.helpers import Sim
from tests.helpers.procs import Proc, free_port

pytestmark = pytest.mark.process

# Headers that differ between any two answers (or servers), whatever the interface.
VOLATILE = {"date", "server"}


def answers(url: str, path: str, http2: bool, **kwargs) -> list[httpx.Response]:
    """A miss, then two hits (the second from the hot path), and a HEAD."""
    with httpx.Client(base_url=url, http1=not http2, http2=http2, timeout=10) as client:
        return [client.get(path, **kwargs) for _ in range(3)] + [client.head(path, **kwargs)]


def shown(response: httpx.Response) -> tuple:
    # max-age counts down: two edges filled a moment apart may be a second apart
    headers = sorted((k, re.sub(r"max-age=\d+", "max-age=N", v)) for k, v in response.headers.multi_items()
                     if k not in VOLATILE)
    return response.status_code, response.http_version, headers, response.content


@pytest.fixture
def pair(edges):
    """An ASGI edge and an RSGI edge, each with its own fresh cache."""
    return edges(env={"EDGE_SERVER_INTERFACE": "asgi"}), edges(env={"EDGE_SERVER_INTERFACE": "rsgi"})


@pytest.mark.parametrize("http2", [False, True], ids=["h1", "h2c"])
def test_rsgi_hits_are_the_asgi_bytes_and_headers(sim: Sim, pair, http2):
    image = sim.info["public_images"][0]
    path = f"/webgateway/render_thumbnail/{image}/"
    asgi, rsgi = (answers(edge.url, path, http2) for edge in pair)
    assert [r.headers["x-edge-cache"] for r in rsgi] == ["MISS", "HIT", "HIT", "HIT"]
    assert [shown(r) for r in rsgi] == [shown(r) for r in asgi]
    assert rsgi[3].content == b"" and int(rsgi[3].headers["content-length"]) == len(rsgi[1].content) > 0


def test_rsgi_conditional_gzip_and_metadata_match_asgi(sim: Sim, pair):
    image = sim.info["public_images"][0]
    etag = [answers(edge.url, f"/webgateway/render_thumbnail/{image}/", False)[1].headers["etag"] for edge in pair][0]
    cases = [(f"/webgateway/render_thumbnail/{image}/", {"If-None-Match": etag}),
             (f"/webgateway/imgData/{image}/", {"Accept-Encoding": "gzip"}),
             (f"/webgateway/imgData/{image}/", {"Accept-Encoding": "identity"})]
    for path, headers in cases:
        asgi, rsgi = (answers(edge.url, path, False, headers=headers) for edge in pair)
        assert [shown(r) for r in rsgi] == [shown(r) for r in asgi], path
    assert rsgi[1].headers["x-edge-cache"] == "HIT"
    with httpx.Client(base_url=pair[1].url, timeout=10) as client:
        assert client.get(f"/webgateway/render_thumbnail/{image}/", headers={"If-None-Match": etag}).status_code == 304


def test_rsgi_passthrough_admin_and_errors_run_the_asgi_pipeline(sim: Sim, pair):
    asgi, rsgi = pair
    for edge in pair:
        assert httpx.get(edge.url + "/_edge/health", timeout=10).status_code == 200
    # a request with a cookie (someone's), a POST with a body, a route the edge does not cache, bad input
    requests = [("GET", f"/webgateway/render_thumbnail/{sim.info['public_images'][0]}/", {"Cookie": "a=1"}, None),
                ("POST", "/api/v0/login/", {"Content-Type": "application/x-www-form-urlencoded"}, b"username=x&password=y"),
                ("GET", "/webgateway/render_thumbnail/999999999/", {}, None),
                ("GET", "/webgateway/render_thumbnail/not-a-number/", {}, None)]
    for method, path, headers, body in requests:
        a, r = (httpx.request(method, edge.url + path, headers=headers, content=body, timeout=10) for edge in pair)
        assert shown(r) == shown(a) and r.status_code < 500, (method, path)
    metrics = httpx.get(rsgi.url + "/_edge/metrics", timeout=10).text
    assert "edge_" in metrics


@pytest.mark.parametrize("interface", ["asgi", "rsgi"])
def test_bare_app_answers_a_constant_body(interface):
    port = free_port()
    proc = Proc.up([sys.executable, "-m", "bench.bare", "--bind", f"127.0.0.1:{port}", "--size", "3210",
                    "--interface", interface], name="bare", ports=[port])
    try:
        for http2 in (False, True):
            with httpx.Client(http1=not http2, http2=http2, timeout=10) as client:
                r = client.get(f"http://127.0.0.1:{port}/webgateway/render_thumbnail/1/")
            assert r.status_code == 200 and r.content == b"\xff" * 3210
            assert r.headers["content-type"] == "image/jpeg" and r.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
    finally:
        proc.stop()
