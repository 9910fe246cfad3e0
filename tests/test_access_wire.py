"""Access on the wire: cookies read as the backend reads them, private answers never reusable by another
session, and purges that reach every URL OMERO answers for an object."""
from __future__ import annotations

import socket
from contextlib import closing

import httpx
import pytest

from tests.helpers import EdgeProc, Launcher, Sim


@pytest.fixture(scope="module")
def verified(sim: Sim, redis_server) -> EdgeProc:
    factory = Launcher(sim)
    yield factory("--access", "verified", "--session-redis", redis_server.url)
    factory.stop_all()


@pytest.fixture(scope="module")
def alice(sim: Sim) -> str:
    with closing(sim.login("alice")) as client:
        return client.cookies[sim.info["session_cookie"]]


def private_path(sim: Sim, n: int) -> str:
    return f"/webgateway/render_thumbnail/{sim.info['private']['lab-a']['images'][n]}/"


def test_http2_cookie_crumbs_are_one_cookie_header(sim: Sim, verified: EdgeProc, alice: str):
    """RFC 9113 §8.2.3: the session may arrive in any of several `cookie` fields."""
    name = sim.info["session_cookie"]
    path = private_path(sim, 10)
    with httpx.Client(http1=False, http2=True, timeout=15) as h2:  # h2c by prior knowledge
        for _ in range(2):  # a miss (fetched with alice's cookie), then a hit (read-checked for her)
            r = h2.get(verified.url + path, headers=[("cookie", f"{name}={alice}"), ("cookie", "csrftoken=abc")])
            assert r.http_version == "HTTP/2"
            assert r.status_code == 200 and r.content.startswith(b"\xff\xd8")
        assert r.headers["x-edge-cache"] == "HIT"
        anonymous = h2.get(verified.url + path, headers=[("cookie", "csrftoken=abc")])
        assert anonymous.status_code != 200


def test_two_http1_cookie_lines_bypass(sim: Sim, verified: EdgeProc, alice: str):
    """Two Cookie lines are not HTTP/1.1 (RFC 6265 §5.4) and servers join them differently: the backend decides."""
    host, port = verified.url.removeprefix("http://").split(":")
    request = (f"GET {private_path(sim, 11)} HTTP/1.1\r\nHost: omero.test\r\n"
               f"Cookie: {sim.info['session_cookie']}={alice}\r\nCookie: csrftoken=abc\r\nConnection: close\r\n\r\n")
    with socket.create_connection((host, int(port)), timeout=15) as sock:
        sock.sendall(request.encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head = answer.split(b"\r\n\r\n", 1)[0].lower()
    assert b"x-edge-cache: bypass" in head


def test_private_answers_vary_on_cookie_public_ones_do_not(sim: Sim, verified: EdgeProc, alice: str):
    cookies = {sim.info["session_cookie"]: alice}
    path = private_path(sim, 12)
    with httpx.Client(base_url=verified.url, timeout=15, cookies=cookies) as client:
        for _ in range(2):
            r = client.get(path)
            assert r.status_code == 200
            assert r.headers["cache-control"].startswith("private") and "Cookie" in r.headers["vary"]
        grid = client.get(f"/webgateway/imgData/{sim.info['private']['lab-a']['images'][12]}/",
                          headers={"accept-encoding": "gzip"})
        assert grid.status_code == 200 and {"Cookie", "Accept-Encoding"} <= {
            v.strip() for v in grid.headers["vary"].split(",")}
    public = httpx.get(verified.url + f"/webgateway/render_thumbnail/{sim.info['public_images'][5]}/", timeout=15)
    public = httpx.get(verified.url + f"/webgateway/render_thumbnail/{sim.info['public_images'][5]}/", timeout=15)
    assert public.headers["x-edge-cache"] == "HIT" and public.headers["cache-control"].startswith("public")
    assert "vary" not in public.headers


def test_purge_reaches_padded_ids(sim: Sim, edge: EdgeProc):
    """OMERO answers `…/0<id>/` as `<id>`: tags are canonical ids, so a purge takes every spelling with it."""
    iid = sim.info["public_images"][6]
    plate = sim.info["plates"][1]["id"]
    paths = [f"/webgateway/render_thumbnail/0{iid}/", f"/webgateway/imgData/00{iid}/", f"/webgateway/plate/0{plate}/0/"]
    for path in paths:
        edge.get(path)
        assert edge.get(path).headers["x-edge-cache"] == "HIT", path
    purge = httpx.post(edge.url + "/_edge/purge", json={"image": [iid], "plate": [plate]},
                       headers={"authorization": "Bearer purge-secret"}, timeout=10)
    assert purge.status_code == 200
    for path in paths:
        assert edge.get(path).headers["x-edge-cache"] == "MISS", path
