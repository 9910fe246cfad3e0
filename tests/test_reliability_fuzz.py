"""Reliability: bad input. Fuzzed paths and query strings on every cacheable route, oversized headers,
slow clients.

Every fuzzed request goes to the edge twice and straight to the simulated OMERO once (same raw
path, same Host; the public session for the microservice's routes, as the edge does). The edge's
answer must be a 4xx or the backend's own answer (never a 5xx of its own making), the bytes of a
200 must be the backend's both times (nothing stored under a key another URL maps to), and the
backend's bytes for valid URLs must come through unchanged after the fuzz.
"""
from __future__ import annotations

import http.client
import socket
import threading
import time
from urllib.parse import quote, unquote_to_bytes, urlsplit

import httpx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from edge.routes import ROUTES, Upstream, match
from tests.helpers import EdgeProc, Launcher, Sim

pytestmark = pytest.mark.process

HOST = "edge.test"

TEMPLATES = [
    "/webgateway/render_thumbnail/{iid}/", "/webgateway/render_thumbnail/{iid}/{w}/",
    "/webgateway/render_thumbnail/{iid}/{w}/{h}/", "/webgateway/get_thumbnails/", "/webgateway/get_thumbnails/{w}/",
    "/webgateway/render_birds_eye_view/{iid}/", "/webgateway/render_birds_eye_view/{iid}/{w}/",
    "/webgateway/get_thumbnail/{iid}/", "/webgateway/get_thumbnail/{iid}/{w}/{h}/",
    "/webgateway/render_roi_thumbnail/{roi}/", "/webgateway/render_shape_thumbnail/{shape}/",
    "/webgateway/render_image/{iid}/{z}/{t}/", "/webgateway/render_image/{iid}/",
    "/webgateway/render_image_region/{iid}/{z}/{t}/", "/webgateway/render_image_rdef/{iid}/{z}/{t}/",
    "/webgateway/render_image_region_rdef/{iid}/{z}/{t}/", "/webgateway/render_split_channel/{iid}/{z}/{t}/",
    "/webgateway/render_shape_mask/{shape}/", "/webgateway/histogram_json/{iid}/channel/{c}/",
    "/webgateway/imgData/{iid}/", "/webgateway/imgData/{iid}/{key}/", "/webgateway/plate/{plate}/",
    "/webgateway/plate/{plate}/{field}/", "/webgateway/plate/{plate}/{field}/{acq}/",
    "/webgateway/well/{well}/children/", "/webgateway/wellData/{well}/", "/webgateway/proj/list/",
    "/webgateway/proj/{project}/detail/", "/webgateway/dataset/{dataset}/children/",
    "/webclient/render_thumbnail/{iid}/", "/webclient/render_thumbnail/size/{w}/{iid}/",
    "/webclient/get_thumbnails/", "/webclient/get_thumbnails/{w}/", "/webclient/render_image/{iid}/{z}/{t}/",
    "/webclient/render_image/{iid}/", "/webclient/render_image_region/{iid}/{z}/{t}/", "/webclient/imgData/{iid}/",
    "/webgateway/render_thumbnail_ngff/{iid}/", "/webclient/render_thumbnail_ngff/size/{w}/{iid}/",
    "/webgateway/render_birds_eye_view_ngff/{iid}/{w}/", "/webclient/get_thumbnails_ngff/",
    "/webclient/render_birds_eye_view/{iid}/", "/iviewer/image_data/{iid}/", "/webgateway/render_image_rdef/{iid}/",
    "/webclient/render_thumbnail_ngff/{iid}/", "/webgateway/histogram_json/{iid}/channel/{c}",
    "/api/", "/api/v0/", "/api/v0/m/images/", "/api/v0/m/images/{iid}/", "/api/v0/m/plates/{plate}/wells/",
    "/api/v0/m/plates/{plate}/wellsampleindex/{field}/wells/", "/api/v0/m/datasets/{dataset}/images/",
    "/api/v0/m/screens/", "/api/v0/m/rois/{roi}/", "/api/v0/m/plateacquisitions/{acq}/wellsampleindex/{field}/wells/",
    "/api/v0/m/projects/{project}/datasets/", "/api/v0/m/wells/{well}/", "/api/v0/m/shapes/{shape}/",
    "/webgateway/open_with/", "/webclient/api/experimenters/{well}/", "/webclient/api/containers/",
    "/webclient/api/datasets/", "/webclient/api/images/", "/webclient/api/plates/",
    "/webclient/api/plate_acquisitions/", "/webclient/api/annotations/", "/webclient/metadata_details/image/{iid}/",
    "/webclient/metadata_acquisition/image/{iid}/", "/webclient/metadata_preview/image/{iid}/",
    "/webclient/metadata_hierarchy/image/{iid}/", "/webclient/load_plate/plate/{plate}/",
    "/webgateway/annotations/Screen/{plate}/", "/webgateway/table/{field}/query/",
    "/webgateway/table/Plate/{plate}/query/",
]

BAD_VALUES = ["", "0", "-1", "-0", "abc", "1.5", "1e3", "0x10", "%20", "+1", "%2B1", "..", "%2e%2e", "%2E%2E%2F",
              "%00", "%0A", "%0a", "%0D%0A", "%FF", "%C3%28", "%C2%B2", "%EF%BC%91", "%E2%80%AE", "%25", "%",
              "%zz", "null", "[]", "true", "9" * 30, "18446744073709551616", "-9223372036854775809"]
PARAM_NAMES = ["c", "m", "q", "p", "ia", "maps", "flip", "zm", "x", "y", "_", "id", "imageId", "region", "tile",
               "format", "limit", "offset", "childCount", "orphaned", "getDefaults", "dataset", "plate", "owner",
               "group", "rdefId", "callback", "%FF", "", "c%00", "%2e%2e"]


def plate_images(sim: Sim, n: int) -> list[int]:
    grid = httpx.get(f"{sim.url}/webgateway/plate/{sim.info['plates'][2]['id']}/0/", timeout=10).json()["grid"]
    return [cell["id"] for row in grid for cell in row if cell][:n]


class Raw:
    """HTTP/1.1 with the path sent exactly as given (httpx would normalise `..` and escapes)."""

    def __init__(self, base: str, headers: dict[str, str] | None = None) -> None:
        u = urlsplit(base)
        self.host, self.port = u.hostname, u.port
        self.headers = {"Host": HOST, **(headers or {})}
        self.conn: http.client.HTTPConnection | None = None

    def get(self, target: str) -> tuple[int, bytes, dict[str, str]]:
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            try:
                self.conn.request("GET", target, headers=self.headers)
                resp = self.conn.getresponse()
                body = resp.read()
                headers = {k.lower(): v for k, v in resp.getheaders()}
                if resp.will_close:
                    self.close()
                return resp.status, body, headers
            except (http.client.HTTPException, OSError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


@pytest.fixture(scope="module")
def fuzz_env(sim: Sim):
    factory = Launcher(sim)
    edge = factory()
    # the public session the edge uses for the microservice (it refuses anonymous requests)
    cookie_name = sim.info["session_cookie"]
    session = httpx.get(sim.url + "/api/v0/m/screens/?limit=1", timeout=10).cookies[cookie_name]
    env = {
        "edge": edge,
        "edge_raw": Raw(edge.url),
        "web_raw": Raw(sim.url),
        "ms_raw": Raw(sim.ms_url, {"Cookie": f"{cookie_name}={session}"}),
        "ids": _id_pools(sim),
        "stats": {"examples": 0, "edge_status": {}, "backend_5xx": 0},
    }
    yield env
    for key in ("edge_raw", "web_raw", "ms_raw"):
        env[key].close()
    factory.stop_all()


def _id_pools(sim: Sim) -> dict[str, list[str]]:
    images = sim.info["public_images"][:4] + plate_images(sim, 4) + sim.info["pyramid_images"][:1] \
        + sim.info["private"]["lab-a"]["images"][:1] + sim.info["in_progress_images"][:1]
    plate = sim.info["plates"][2]
    return {
        "iid": [str(i) for i in images], "roi": [str(4000000 + i) for i in images[:3]],
        "shape": [str(10000000 + 2 * i) for i in images[:3]], "w": ["96", "64", "0", "1", "256"], "h": ["96", "48"],
        "z": ["0", "1", "4", "99"], "t": ["0", "2"], "c": ["0", "1", "3"], "key": ["rdefs", "channels", "x.y", "_"],
        "plate": [str(p["id"]) for p in sim.info["plates"][:3]], "field": ["0", "1", "7"],
        "acq": [str(a["id"]) for a in plate["acquisitions"]] + ["5001"], "well": [str(plate["first_well"]), "10001"],
        "project": ["101", "102"], "dataset": ["201", "203", "204"],
    }


@st.composite
def fuzzed_target(draw, pools: dict[str, list[str]]) -> str:
    template = draw(st.sampled_from(TEMPLATES))
    values = {}
    for name in pools:
        values[name] = draw(st.one_of(
            st.sampled_from(pools[name]), st.sampled_from(pools[name]), st.sampled_from(BAD_VALUES),
            st.integers(-10, 2**80).map(str), st.text(min_size=1, max_size=12).map(lambda t: quote(t, safe=""))))
    path = template.format(**values)
    mutation = draw(st.sampled_from(["", "", "", "dotdot", "pctdotdot", "double-slash", "no-slash", "trail-nl",
                                     "upper", "encoded-digit"]))
    if mutation == "dotdot":
        path = path.replace("/webgateway/", "/webgateway/x/../", 1).replace("/webclient/", "/webclient/x/../", 1)
    elif mutation == "pctdotdot":
        path = path.rstrip("/") + "/%2e%2e/" + draw(st.sampled_from(["", "1/", "96/", "..%2F"]))
    elif mutation == "double-slash":
        path = path.replace("/", "//", 2)
    elif mutation == "no-slash":
        path = path.rstrip("/")
    elif mutation == "trail-nl":
        path = path + draw(st.sampled_from(["%0A", "%0a", "%0D%0A", "%00", "%20"]))
    elif mutation == "upper":
        path = path.upper()
    elif mutation == "encoded-digit":
        path = path.replace("1", "%31", 1)
    params: list[str] = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(PARAM_NAMES))
        value = draw(st.one_of(
            st.sampled_from(BAD_VALUES), st.sampled_from(["1|0:255$FF0000", "1|0:255$FF0000,2|0:10$00FF00", "c", "g",
                                                          "0.5", "1,2", "90", "true", "2", "0,0,64,64", "0,0,0"]),
            st.integers(-5, 2**70).map(str), st.text(max_size=30).map(lambda t: quote(t, safe="")),
            st.just("x" * 10_000)))
        params += [f"{name}={value}"] * draw(st.sampled_from([1, 1, 1, 2, 5]))
    if "get_thumbnails" in template or draw(st.integers(0, 9)) == 0:
        ids = draw(st.lists(st.sampled_from(pools["iid"] + ["abc", "-1", "%C2%B2", "0", "99999999999"]),
                            min_size=0, max_size=draw(st.sampled_from([3, 50, 60]))))
        if draw(st.booleans()) and len(ids) > 3:
            ids = ids[:3] * 20  # over 50 repeated ids: the same 3 images
        params += [f"id={i}" for i in ids]
    if draw(st.integers(0, 5)) == 0:
        params.append(draw(st.sampled_from(["", "=", "&&", "a", "=x", "id", "%FF%FE=1", "c=%C3"])))
    return path + ("?" + "&".join(params) if params else "")


def _upstream(target: str) -> str:
    raw_path = target.split("?", 1)[0]
    try:
        path = unquote_to_bytes(raw_path).decode()
    except UnicodeDecodeError:
        return "web"
    found = match(path)
    return "ms" if found and found[0].upstream is Upstream.MS else "web"


def check_target(env: dict, target: str) -> None:
    e1, b1, h1 = env["edge_raw"].get(target)
    e2, b2, h2 = env["edge_raw"].get(target)
    direct = env["ms_raw"] if _upstream(target) == "ms" else env["web_raw"]
    d, bd, hd = direct.get(target)
    stats = env["stats"]
    stats["examples"] += 1
    stats["edge_status"][e1] = stats["edge_status"].get(e1, 0) + 1
    stats["backend_5xx"] += d >= 500
    for status, body, headers in ((e1, b1, h1), (e2, b2, h2)):
        if status >= 500:
            assert status == d, (target, status, body[:300], d, bd[:200])
        assert 400 <= status < 500 or status == d, (target, status, body[:200], d, bd[:200], headers)
        if status == d == 200:
            assert body == bd, (target, headers.get("x-edge-cache"), len(body), len(bd))


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
def test_fuzzed_urls_get_4xx_or_the_backends_answer(fuzz_env, data):
    target = data.draw(fuzzed_target(fuzz_env["ids"]), label="target")
    check_target(fuzz_env, target)


def test_templates_cover_every_route(fuzz_env):
    pools = {k: v[0] for k, v in fuzz_env["ids"].items()}
    covered = set()
    for template in TEMPLATES:
        found = match(template.format(**pools))
        if found:
            covered.add(found[0].name)
    missing = {r.name for r in ROUTES} - covered
    # the API children/one routes of every type share shapes with the ones listed
    assert not {m for m in missing if not m.startswith("api.")}, missing


def test_valid_urls_unchanged_after_fuzz(sim: Sim, fuzz_env):
    """Runs after the fuzz (same module edge): valid URLs still get exactly the backend's bytes."""
    ids = fuzz_env["ids"]
    targets = [t.format(**{k: v[0] for k, v in ids.items()}) for t in TEMPLATES]
    targets = [t for t in targets if match(t)]
    stats = fuzz_env["stats"]
    print(f"\nfuzz: {stats['examples']} examples, edge statuses {dict(sorted(stats['edge_status'].items()))}, "
          f"backend 5xx {stats['backend_5xx']}")
    for target in targets:
        check_target(fuzz_env, target)
    log = fuzz_env["edge"].proc.log()
    assert "Traceback" not in log, log[-3000:]


def test_passthrough_sends_the_request_as_received(sim: Sim, fuzz_env):
    """Regressions the fuzz found: a proxied request lost its query string (ASGI raw_path has none),
    its Host (absolute links pointed at the backend) and its `..` segments (httpx normalised them)."""
    iid = fuzz_env["ids"]["iid"][0]
    for target in (f"/webclient/get_thumbnails/?id=-1&id={iid}", "/api/v0/?x=%FF",
                   f"/webgateway/x/../render_thumbnail/{iid}/", f"/webgateway/get_thumbnails/?id=%C2%B2&id={iid}",
                   f"/webgateway/get_thumbnails/?id={iid}&z=0%26id%3D{iid}"):
        e, body, headers = fuzz_env["edge_raw"].get(target)
        d, direct, _ = fuzz_env["web_raw"].get(target)
        assert (e, body) == (d, direct), (target, e, d, headers.get("x-edge-cache"), body[:200], direct[:200])


def test_bad_requests_do_not_open_the_breaker(sim: Sim, edges):
    """Backend 500s answer one request each; only 502/503/504 and transport errors count as the
    backend being unavailable, so a client sending a few bad URLs cannot fail everyone fast."""
    edge = edges(env={"EDGE_BREAKER_FAILURES": "3"})
    ids = [str(i) for i in plate_images(sim, 50)] + ["-1"]  # 51 ids, one the edge will not parse: proxied, 500
    bad = "/webgateway/get_thumbnails/?" + "&".join(f"id={i}" for i in ids)
    with edge.client() as client:
        assert [client.get(bad).status_code for _ in range(6)] == [500] * 6
        ok = client.get(f"/webgateway/render_thumbnail/{ids[0]}/")
    assert ok.status_code == 200
    assert edge.get("/_edge/health").json()["upstreams"]["omero-web"] == "closed"


# --- oversized headers and slow clients ------------------------------------------------------------------


def _raw_exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
                if b"\r\n\r\n" in out:
                    break
        except (ConnectionResetError, socket.timeout):
            pass
        return out


@pytest.mark.parametrize("server", ["granian", "hypercorn"])
def test_oversized_headers_are_refused(sim: Sim, edges, server):
    edge: EdgeProc = edges(server=server)
    port = int(edge.url.rsplit(":", 1)[1])
    iid = sim.info["public_images"][0]
    big = b"x" * 100_000
    answer = _raw_exchange(port, b"GET /webgateway/render_thumbnail/%d/ HTTP/1.1\r\nHost: a\r\nX-Big: %s\r\n\r\n"
                           % (iid, big))
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None
    assert status is None or 400 <= status < 500, answer[:200]
    one_big = status
    many = b"".join(b"X-H%d: %s\r\n" % (n, b"y" * 1000) for n in range(100))
    answer = _raw_exchange(port, b"GET /webgateway/render_thumbnail/%d/ HTTP/1.1\r\nHost: a\r\n%s\r\n" % (iid, many))
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None
    assert status is None or 400 <= status < 500, answer[:200]
    # HTTP/2: a 100 KB header block is refused too, and the server keeps serving
    with httpx.Client(http2=True, http1=False, timeout=10) as client:
        try:
            r = client.get(f"{edge.url}/webgateway/render_thumbnail/{iid}/", headers={"x-big": "z" * 100_000})
            h2_status = r.status_code
        except httpx.HTTPError as exc:
            h2_status = type(exc).__name__
    assert h2_status != 200, h2_status
    ok = edge.get(f"/webgateway/render_thumbnail/{iid}/")
    assert ok.status_code == 200
    print(f"\n{server}: 100 KB header -> {one_big or 'closed'}, 100 x 1 KB headers -> "
          f"{status if status else 'closed'}, h2 100 KB header -> {h2_status}")


class SlowClient(threading.Thread):
    """Sends a request's headers one byte per second; records when the server gave up on it."""

    def __init__(self, port: int, request: bytes, limit: float) -> None:
        super().__init__(daemon=True)
        self.port, self.request, self.limit = port, request, limit
        self.closed_after: float | None = None
        self.answer = b""

    def run(self) -> None:
        import select

        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            started = time.monotonic()
            for byte in self.request:
                try:
                    s.sendall(bytes([byte]))
                except OSError:
                    self.closed_after = time.monotonic() - started
                    return
                readable, _, _ = select.select([s], [], [], 1.0)  # one byte per second
                if readable:
                    try:
                        self.answer = s.recv(4096)
                    except OSError:
                        pass
                    self.closed_after = time.monotonic() - started
                    return
                if time.monotonic() - started > self.limit:
                    return


def test_slow_clients_are_disconnected_and_others_served(sim: Sim, edges):
    """Default config: granian gives a client `header_timeout` (10 s) for its headers; hypercorn closes
    a connection that has not completed a request within its keep-alive timeout (5 s)."""
    servers = {name: edges(server=name) for name in ("granian", "hypercorn")}
    iid = sim.info["public_images"][1]
    request = b"GET /webgateway/render_thumbnail/%d/ HTTP/1.1\r\nHost: a\r\nUser-Agent: slow\r\n" % iid + b"X" * 100
    slow = {name: [SlowClient(int(e.url.rsplit(":", 1)[1]), request, 16.0) for _ in range(2)]
            for name, e in servers.items()}
    for clients in slow.values():
        for c in clients:
            c.start()
    latencies: list[float] = []
    clients_http = {name: e.client() for name, e in servers.items()}
    try:
        deadline = time.monotonic() + 17
        while time.monotonic() < deadline and any(c.is_alive() for cs in slow.values() for c in cs):
            for name, client in clients_http.items():
                started = time.monotonic()
                r = client.get(f"/webgateway/render_thumbnail/{iid}/")
                latencies.append(time.monotonic() - started)
                assert r.status_code == 200, (name, r.status_code)
            time.sleep(0.2)
    finally:
        for client in clients_http.values():
            client.close()
    for clients in slow.values():
        for c in clients:
            c.join(5)
    closed = {name: [c.closed_after for c in cs] for name, cs in slow.items()}
    answers = {name: {c.answer.split(b"\r\n", 1)[0] for c in cs} for name, cs in slow.items()}
    print(f"\nslow clients (1 byte/s): closed after {closed} s, answers {answers}; "
          f"{len(latencies)} other requests meanwhile, slowest {max(latencies) * 1000:.0f} ms")
    assert all(t is not None and t < 13.5 for t in closed["granian"]), closed
    assert all(t is not None and t < 13.5 for t in closed["hypercorn"]), closed
    assert not any(a.startswith(b"HTTP/1.1 200") for a in answers["granian"] | answers["hypercorn"])
    assert max(latencies) < 1.0
