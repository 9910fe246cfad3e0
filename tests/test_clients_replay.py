"""The real clients' request sequences replayed through the edge (issue 12.10; /work/shared/clients.md).

Each flow of clients.md — the webclient's plate view, dataset icons and well panel, iviewer opening an
image, zooming and panning, its thumbnail slider, the classic viewer, the IDR gallery — is replayed as
its client sends it (fresh jQuery callbacks and cache-busters per page load, the viewers' URLs derived
from the answers by ports of their JavaScript in tests/helpers/clients.py) through a public-only edge
and a verified one, as the public user and as two ordinary users. Every answer must equal the
backend's own answer to that requester for the same URL (status, content type, body; JSON compared
as JSON inside its JSONP wrapper, the wrapper's name exactly). After `warm` of the flow's containers
on a fresh edge, the public user's replay is all HIT and the backend sees no request at all.

One simulator for the module (it saves the owner's rendering settings with inactive channels, which
the shared one must not see), its sessions in the session's Redis for the verified edge.
"""
from __future__ import annotations

import dataclasses
import random
import re
import time
from contextlib import closing
from urllib.parse import parse_qsl
from dataclasses import dataclass

import httpx
import pytest

from tests.helpers import EdgeProc, Launcher, Sim, start_sim
from edge.routes import match
from tests.helpers.clients import (AJAX, BROWSE_PAGE, FETCH, GETJSON_CALLBACK, HOST, JSONP_AJAX, PAGE, Exchange,
                                   Page, Step, Steps, backend_base, classic_render, fetch, icon_batches, iviewer_open,
                                   iviewer_zoom_pan, plate_batches, replay, slider_thumbnails, webclient_page,
                                   well_batches)
from tests.helpers.warm import TOKEN, warm

pytestmark = pytest.mark.process

USERS = ("anonymous", "alice", "bob")
EDGES = {"public-only": (), "verified": ("--access", "verified", "--session-redis", "{redis}")}


@dataclass(frozen=True)
class Flow:
    steps: Steps  # the client's requests (formatted with DATA), each maybe deriving more from its answer
    warm: tuple[tuple[str, ...], ...]  # `warm` commands covering it; `@ids=a,b` is a file of DATA's a and b


# The data: plate 1003 (70 images, no run), plate 1002's first well in its run, dataset 201 (12 plain
# images; 1001850 has the owner's logarithmic/exponential settings, an inverted channel and Z 4 / T 2),
# pyramid 1001862 (8192², 5 levels). The owner saves inactive channels on 1001862 and 1001851 (setup).
DATA = {"plate": 1003, "wplate": 1002, "well": 10385, "run": 5003, "dataset": 201, "pyramid": 1001862,
        "plane": 1001850, "inactive": 1001851}
FLOWS = {
    "plate-view": Flow((Step(JSONP_AJAX, "/webgateway/plate/{plate}/0/", plate_batches),),
                       (("plate", "{plate}"),)),
    "dataset-icons": Flow(icon_batches, (("dataset", "{dataset}"),)),
    "well-panel": Flow((Step(AJAX, "/webgateway/well/{well}/children/?run={run}", well_batches),),
                       (("plate", "{wplate}", "--wells"),)),
    "iviewer-open": Flow((Step(AJAX, "/iviewer/image_data/{pyramid}/", iviewer_open),
                          Step(AJAX, "/iviewer/image_data/{plane}/", iviewer_open)),
                         (("images", "--ids", "@ids=pyramid,plane"),
                          ("tiles", "--image", "{pyramid}", "--image", "{plane}", "--levels", "1", "--imgdata"))),
    "zoom-pan": Flow((Step(AJAX, "/iviewer/image_data/{pyramid}/", iviewer_zoom_pan),),
                     (("images", "--ids", "@ids=pyramid"),
                      ("tiles", "--image", "{pyramid}", "--levels", "3", "--imgdata"))),
    "thumbnail-slider": Flow((Step(AJAX, "/api/v0/m/datasets/{dataset}/images/?offset=0&limit=10", slider_thumbnails),),
                             (("dataset", "{dataset}"),)),
    "classic-viewer": Flow((Step(GETJSON_CALLBACK, "/webgateway/imgData/{plane}/?callback=?", classic_render),
                            Step(GETJSON_CALLBACK, "/webgateway/imgData/{inactive}/?callback=?", classic_render)),
                           (("tiles", "--image", "{plane}", "--image", "{inactive}", "--viewer", "classic",
                             "--imgdata"),)),
    "gallery": Flow((Step(FETCH, "/api/v0/m/projects/?childCount=true"),
                     Step(FETCH, "/api/v0/m/screens/?childCount=true")),
                    (("metadata", "--all"),)),
}
# Saved settings (saveImgRDef). The owner's, with inactive channels: iviewer must leave them out of c and
# maps, the classic viewer keep the first as -1. Bob's on 1001850: the owner's windows, colours, inversion
# and plane with linear families, so his classic-viewer URL is the public's to the byte while OMERO renders
# it otherwise for him (maps without quantization: clients.md §6): the edge must not share that entry.
_LINEAR = '{"family":"linear","coefficient":1}'
RDEFS = {("curator", "pyramid"): {"c": "1|60:1800$0000FF,-2|85:2200$00FF00,3|110:2600$FF0000", "m": "c"},
         ("curator", "inactive"): {"c": "-1|60:1800$0000FF,2|85:2200$00FF00", "m": "c"},
         ("bob", "plane"): {"c": "1|60:1800$0000FF,2|85:2200$00FF00", "m": "c", "z": "5", "t": "3",
                            "maps": f'[{{"inverted":{{"enabled":false}},"quantization":{_LINEAR}}},'
                                    f'{{"inverted":{{"enabled":true}},"quantization":{_LINEAR}}}]'}}


@pytest.fixture(scope="module")
def replay_sim(redis_server) -> Sim:
    sim = start_sim(redis_url=redis_server.url)
    try:
        for (user, name), params in RDEFS.items():
            with closing(sim.login(user)) as client:
                saved = client.post(f"/webgateway/saveImgRDef/{DATA[name]}/", params=params)
                assert saved.text == "true", saved.text
        yield sim
    finally:
        sim.stop()


@pytest.fixture(scope="module")
def data(replay_sim: Sim) -> dict:
    images = httpx.get(f"{replay_sim.url}/api/v0/m/datasets/{DATA['dataset']}/images/", timeout=10).json()["data"]
    return {**DATA, "batch": replay_sim.info["thumbnails_batch"], "dataset_images": [i["@id"] for i in images]}


@pytest.fixture(scope="module")
def cookies(replay_sim: Sim) -> dict[str, str | None]:
    """Each requester's session cookie (none for the anonymous browser) and OMERO.web's public session,
    which an anonymous browser carries to the microservice."""
    name = replay_sim.info["session_cookie"]
    out: dict[str, str | None] = {"anonymous": None}
    for user in USERS[1:]:
        with closing(replay_sim.login(user)) as client:
            out[user] = client.cookies[name]
    out["public"] = httpx.get(f"{replay_sim.url}/webgateway/render_thumbnail/{DATA['plane']}/").cookies[name]
    return out


def start_edge(launcher: Launcher, kind: str, redis_url: str) -> EdgeProc:
    return launcher.edge(*(a.format(redis=redis_url) for a in EDGES[kind]), env={"EDGE_WARM_TOKEN": TOKEN})


@pytest.fixture(scope="module")
def cold_edges(replay_sim: Sim, redis_server) -> dict[str, EdgeProc]:
    launcher = Launcher(replay_sim)
    yield {kind: start_edge(launcher, kind, redis_server.url) for kind in EDGES}
    launcher.stop_all()


_clock = [int(time.time() * 1000)]


def page() -> Page:
    """A new page load: its own jQuery expando, its nonce after every earlier page's."""
    _clock[0] += 100_000
    return Page(random.Random(_clock[0]), _clock[0])


def browse(sim: Sim, base: str, flow: Flow, data: dict, cookie: str | None) -> list[Exchange]:
    jar = {sim.info["session_cookie"]: cookie} if cookie else None
    with httpx.Client(base_url=base, headers={"host": HOST}, cookies=jar, timeout=20) as client:
        return replay(client, flow.steps, page(), data)


_BACKEND: dict[tuple[str, str], Exchange] = {}  # (requester, exact URL) → the backend's answer (data never changes)


def backend(sim: Sim, cookies: dict, user: str, url: str) -> Exchange:
    """The backend's own answer to this requester (an anonymous browser carries OMERO.web's public
    session to the microservice), asked once per exact URL: a URL with a callback or `_` is new each time."""
    if (user, url) not in _BACKEND:
        base = backend_base(sim, url)
        cookie = cookies[user] or (cookies["public"] if base == sim.ms_url else None)
        jar = {sim.info["session_cookie"]: cookie} if cookie else None
        with httpx.Client(base_url=base, headers={"host": HOST}, cookies=jar, timeout=20) as direct:
            _BACKEND[(user, url)] = fetch(direct, url)
    return _BACKEND[(user, url)]


def assert_like_the_backend(sim: Sim, got: list[Exchange], cookies: dict, user: str, where: str) -> None:
    """Each answer equals the backend's to this requester for the same URL (callback and `_` included)."""
    for exchange in got:
        expected = backend(sim, cookies, user, exchange.url)
        assert exchange.comparable() == expected.comparable(), (where, user, exchange.url, exchange.cache,
                                                               exchange.status, expected.status,
                                                               exchange.body[:300], expected.body[:300])
        jsonp, _ = exchange.unwrapped()
        if "callback=" in exchange.url:
            assert jsonp is not None and f"callback={jsonp}&" in exchange.url + "&", (where, exchange.url)


def warm_argv(argv: tuple[str, ...], data: dict, tmp_path) -> list[str]:
    out = []
    for arg in argv:
        if arg.startswith("@ids="):
            path = tmp_path / f"ids-{len(list(tmp_path.iterdir()))}.txt"
            path.write_text("".join(f"{data[k]}\n" for k in arg[5:].split(",")))
            arg = str(path)
        out.append(arg.format(**data))
    return out


@pytest.mark.parametrize("flow_name", FLOWS)
@pytest.mark.parametrize("edge_kind", EDGES)
def test_replayed_flow_answers_like_the_backend(replay_sim, cold_edges, data, cookies, edge_kind, flow_name):
    """Cold and again with fresh callbacks, for every requester: the backend's answers; the second replay
    of a requester the edge caches for is all HIT without a backend request."""
    sim, edge, flow = replay_sim, cold_edges[edge_kind], FLOWS[flow_name]
    for user in USERS:
        where = f"{edge_kind} {flow_name}"
        first = browse(sim, edge.url, flow, data, cookies[user])
        assert_like_the_backend(sim, first, cookies, user, f"{where} first")
        if user == "anonymous":  # never handed a session that would take it out of the public cache
            assert not any(e.set_cookie or e.cache == "BYPASS" for e in first), where
        if user != "anonymous" and edge_kind == "public-only":  # a logged-in user: passed through, never cached
            assert {e.cache for e in first} == {"BYPASS"}, (user, {e.cache for e in first})
            continue
        sim.reset()
        again = browse(sim, edge.url, flow, data, cookies[user])
        stats = sim.stats()
        assert [e.url.split("?")[0] for e in again] == [e.url.split("?")[0] for e in first]
        assert [(e.url, e.cache) for e in again if e.cache != "HIT"] == [], (where, user)
        assert not any(e.set_cookie for e in again)
        if user == "anonymous":
            assert stats["total"]["requests"] == 0, (where, stats["requests"])
        else:
            # a user's hit is served after a read check (API v0 object, remembered access_ttl seconds): a
            # third replay asks the backend nothing
            assert {name.rsplit(":", 1)[0] for name in stats["requests"]} <= {"api:object"}, (where, stats["requests"])
            sim.reset()
            third = browse(sim, edge.url, flow, data, cookies[user])
            assert {e.cache for e in third} == {"HIT"} and sim.stats()["total"]["requests"] == 0, \
                (where, user, sim.stats()["requests"])
        assert_like_the_backend(sim, again, cookies, user, f"{where} again")


@pytest.mark.parametrize("flow_name", FLOWS)
@pytest.mark.parametrize("edge_kind", EDGES)
def test_after_warm_the_public_replay_is_all_hits(replay_sim, redis_server, data, cookies, edge_kind, flow_name,
                                                   tmp_path):
    sim, flow = replay_sim, FLOWS[flow_name]
    launcher = Launcher(sim)
    try:
        edge = start_edge(launcher, edge_kind, redis_server.url)
        journal = str(tmp_path / "journal.sqlite")
        for argv in flow.warm:
            done = warm(*warm_argv(argv, data, tmp_path), "--edge", edge.url, "--host", HOST, "--journal", journal,
                        "--progress", "none")
            assert done.returncode == 0, (argv, done.stderr)
        sim.reset()
        got = browse(sim, edge.url, flow, data, None)
        stats = sim.stats()
        assert [(e.url, e.cache) for e in got if e.cache != "HIT"] == []
        assert stats["total"]["requests"] == 0, stats["requests"]
        assert_like_the_backend(sim, got, cookies, "anonymous", f"{edge_kind} {flow_name} warmed")
    finally:
        launcher.stop_all()


# --- webclient browsing (issue 18.5; clients.md §10): the page, then screen → plate → well → image and
# project → dataset → image, each GET with a fresh `_`. The page sets the visitor's session cookie (OMERO.web
# logs the public user in), which the browser sends from then on: the edge tells a public session from a
# user's by OMERO.web's session store, so both edges here read it. ---
# Warmed: the tree and panels of the screen and the project the visitor opens (the first of each in the
# containers listing), the clicked plate's and dataset's images with their panels and tabs.
BROWSE = Flow((Step(PAGE, BROWSE_PAGE, webclient_page),),
              (("screen", "{bscreen}", "--only", "metadata"), ("project", "{bproject}", "--only", "metadata"),
               ("plate", "{bplate}", "--wells", "--image-panels", "--image-tabs"),
               ("dataset", "{bdataset}", "--image-panels", "--image-tabs")))
BROWSE_EDGES = {"public-only": ("--session-redis", "{redis}"), **{k: v for k, v in EDGES.items() if k == "verified"}}
_CSRF = re.compile(rb'(name="csrfmiddlewaretoken" value=")[^"]*(")')


def browsed(sim: Sim) -> dict[str, int]:
    """The screen, plate, project and dataset the public visitor's flow opens (the first of each listing)."""
    gid = sim.info["public_user"]["active_group"]
    with httpx.Client(base_url=sim.url, timeout=20) as c:
        top = c.get(f"/webclient/api/containers/?id=-1&experimenter_id=-1&page=0&group={gid}").json()
        screen, project = top["screens"][0]["id"], top["projects"][0]["id"]
        plate = c.get(f"/webclient/api/plates/?id={screen}&page=0&group={gid}").json()["plates"][0]["id"]
        dataset = c.get(f"/webclient/api/datasets/?id={project}&page=0&group={gid}").json()["datasets"][0]["id"]
    return {"bscreen": screen, "bplate": plate, "bproject": project, "bdataset": dataset}


def never_cached(exchange: Exchange) -> bool:
    """The session's own pages and clipboard (docs/browse.md): passed through, new at every request."""
    return match(exchange.url.split("?", 1)[0]) is None


def assert_browse_like_the_backend(sim: Sim, got: list[Exchange], cookies: dict, user: str, where: str) -> None:
    """Cached answers equal the backend's to this requester, the comment form's per-render CSRF token aside."""
    for exchange in got:
        if never_cached(exchange):
            assert exchange.cache == "BYPASS" and exchange.status == 200, (where, exchange.url, exchange.cache)
            continue
        expected = backend(sim, cookies, user, exchange.url)
        mine, theirs = (dataclasses.replace(e, body=_CSRF.sub(rb"\1-\2", e.body)) for e in (exchange, expected))
        assert mine.comparable() == theirs.comparable(), (where, user, exchange.url, exchange.cache,
                                                           exchange.status, expected.status, exchange.body[:300])


@pytest.mark.parametrize("edge_kind", BROWSE_EDGES)
def test_browsing_answers_like_the_backend_then_hits(replay_sim, redis_server, data, cookies, edge_kind):
    """Every requester gets their own answers; the second visit's cacheable requests are hits (a user's
    panel with a comment form aside: it holds a CSRF token, never stored)."""
    sim, launcher = replay_sim, Launcher(replay_sim)
    try:
        edge = launcher.edge(*(a.format(redis=redis_server.url) for a in BROWSE_EDGES[edge_kind]))
        for user in USERS:
            where = f"{edge_kind} browse"
            first = browse(sim, edge.url, BROWSE, data, cookies[user])
            assert_browse_like_the_backend(sim, first, cookies, user, f"{where} first")
            assert any(e.url.startswith("/webclient/metadata_details/well/") for e in first), [e.url for e in first]
            assert any(e.url.startswith("/webclient/api/images/") for e in first), [e.url for e in first]
            cached = [e for e in first if not never_cached(e)]
            # what the edge answers from its cache or a fill never sets a cookie (a bypass passes OMERO's on)
            assert not any(e.set_cookie for e in cached if e.cache != "BYPASS"), \
                [e.url for e in cached if e.set_cookie and e.cache != "BYPASS"]
            if user != "anonymous" and edge_kind == "public-only":
                assert {e.cache for e in cached} == {"BYPASS"}, (user, {e.cache for e in cached})
                continue
            again = browse(sim, edge.url, BROWSE, data, cookies[user])
            forms = {e.url for e in again if b"csrfmiddlewaretoken" in e.body and not never_cached(e)}
            assert [(e.url, e.cache) for e in again if not never_cached(e) and e.cache != "HIT"
                    and e.url not in forms] == [], (where, user)
            assert user != "anonymous" or not forms, forms  # the public user may not annotate
            assert_browse_like_the_backend(sim, again, cookies, user, f"{where} again")
    finally:
        launcher.stop_all()


@pytest.mark.parametrize("edge_kind", BROWSE_EDGES)
def test_after_warm_a_visitor_browsing_is_all_hits(replay_sim, redis_server, data, cookies, edge_kind, tmp_path):
    """`warm metadata` + `warm thumbnails` on a fresh edge: the visitor's every cacheable request is a HIT and
    the backend sees only the never-cacheable page and clipboard."""
    sim, launcher = replay_sim, Launcher(replay_sim)
    try:
        edge = launcher.edge(*(a.format(redis=redis_server.url) for a in BROWSE_EDGES[edge_kind]),
                             env={"EDGE_WARM_TOKEN": TOKEN})
        journal = str(tmp_path / "journal.sqlite")
        for argv in BROWSE.warm:
            done = warm(*warm_argv(argv, {**data, **browsed(sim)}, tmp_path), "--edge", edge.url, "--host", HOST,
                        "--journal", journal, "--progress", "none", timeout=240)
            assert done.returncode == 0, (argv, done.stderr[-2000:])
        sim.reset()
        got = browse(sim, edge.url, BROWSE, data, None)
        stats = sim.stats()
        # a batch holding an image whose pyramid is still being built answers OMERO's "in progress"
        # picture for it, which is never stored: that member alone is fetched again
        building = {str(i) for i in sim.info["in_progress_images"]}
        refetched = [e for e in got if e.url.startswith("/webgateway/get_thumbnails/")
                     and building & {v for n, v in parse_qsl(e.url.split("?", 1)[1]) if n == "id"}]
        assert [(e.url, e.cache) for e in got if not never_cached(e) and e.cache != "HIT"
                and e not in refetched] == []
        assert len([e for e in got if not never_cached(e)]) >= 20, [e.url for e in got]
        passed = {e.url.split("?", 1)[0] for e in got if never_cached(e)}
        assert passed == {"/webclient/", "/webgateway/getImgRDef/"}, passed
        assert stats["total"]["requests"] == len(passed) + len(refetched), stats["requests"]
        print(f"\n{edge_kind} warmed browse: {len(got)} requests, {sum(e.cache == 'HIT' for e in got)} HIT, "
              f"{len(passed)} passed through, {len(refetched)} batch(es) with an in-progress image; "
              f"backend requests {stats['total']['requests']}")
        assert_browse_like_the_backend(sim, got, cookies, "anonymous", f"{edge_kind} browse warmed")
    finally:
        launcher.stop_all()
