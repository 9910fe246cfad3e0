"""`warm metadata`: the webclient's browsing URLs (docs/browse.md, clients.md §10, warm/browse.py).

Unit tests of the plan (exact URL lists per object, the options, the active group read from the page),
then end to end through the CLI against the session's simulator behind a real edge: after warming,
the webclient's own requests (each with a fresh jQuery `_=`) are all hits and the backend is not asked.
"""
from __future__ import annotations

import itertools
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import httpx
import pytest

from edge.keys import key_for
from warm.browse import NoGroup, active_group
from warm.cli import Run, UsageError, parser
from warm.model import (ANNOTS, API, BROWSE, CENTER, DETAILS, GRID, IMGPANEL, IMGTAB, THUMB, TREE, WELLPANEL,
                        ImageList, PlateLayout, Ref)
from warm.plan import Planner
from tests.helpers.warm import journal_rows, public, warm

GID = 3
WC = "/webclient"


def planner(*argv: str) -> Planner:
    """The planner a command line builds, with the active group learnt."""
    args = list(argv) + ["--dry-run"]
    p = Run(parser().parse_args(args), args).planner
    p.group(GID)
    return p


def browse_urls(p: Planner, ref: Ref, detail=None) -> list[str]:
    return [i.url for i in p.plan(ref, detail) if i.kind in BROWSE | {IMGPANEL, IMGTAB}]


def key(url: str) -> str | None:
    parts = urlsplit(url)
    return key_for(parts.path, parts.query.encode())


# --- the plan -----------------------------------------------------------------------------------------
def test_metadata_kinds_and_options():
    assert planner("metadata", "--all").kinds == {API, GRID, *BROWSE}
    assert planner("all").kinds == {API, GRID, THUMB, *BROWSE}
    assert planner("screen", "1", "--only", "metadata").kinds == {API, GRID, *BROWSE}
    assert planner("screen", "1", "--only", "thumbnails").kinds == {THUMB}
    assert not planner("thumbnails", "--all").browsing
    opts = planner("metadata", "--all", "--image-panels", "--image-tabs")
    assert {IMGPANEL, IMGTAB} <= opts.kinds
    assert planner("metadata", "--all", "--page-size", "50").page_size == 50
    with pytest.raises(UsageError, match="--page-size must be at least 1"):
        planner("metadata", "--all", "--page-size", "0")


def test_the_page_once_per_run():
    assert browse_urls(planner("metadata", "--all"), Ref("webclient", "page")) == [
        "/webgateway/open_with/",
        f"{WC}/api/experimenters/-1/?page=1&group={GID}",
        f"{WC}/api/containers/?id=-1&experimenter_id=-1&page=0&group={GID}",
    ]


def test_screen_and_project_in_click_order():
    p = planner("metadata", "--all")
    assert browse_urls(p, Ref("screen", 1, 2)) == [
        f"{WC}/api/plates/?id=1&page=0&group={GID}",
        f"{WC}/metadata_details/screen/1/",
        f"{WC}/api/annotations/?type=map&parents=true&screen=1",
    ]
    assert browse_urls(p, Ref("project", 101, 3)) == [
        f"{WC}/api/datasets/?id=101&page=0&group={GID}",
        f"{WC}/metadata_details/project/101/",
        f"{WC}/api/annotations/?type=map&parents=true&project=101",
    ]


def test_plate_pages_every_field_and_run_then_the_wells():
    layout = PlateLayout(wells=4, fields=[[1, 2], [3, 4]], acquisitions=[(5001, 1), (5002, 1)],
                         well_ids=[10001, 10002])
    p = planner("metadata", "--all")
    assert browse_urls(p, Ref("plate", 1001), layout) == [
        f"{WC}/api/plate_acquisitions/?id=1001&page=0&group={GID}",
        f"{WC}/load_plate/plate/1001/?index=0",
        f"{WC}/load_plate/plate/1001/?index=1",
        f"{WC}/load_plate/acquisition/5001/?index=0",
        f"{WC}/load_plate/acquisition/5002/?index=0",
        f"{WC}/metadata_details/plate/1001/",
        f"{WC}/api/annotations/?type=map&parents=true&plate=1001",
        f"{WC}/metadata_details/well/10001/?index=0",
        f"{WC}/api/annotations/?type=map&parents=true&well=10001",
        f"{WC}/metadata_details/well/10002/?index=0",
        f"{WC}/api/annotations/?type=map&parents=true&well=10002",
    ]
    kinds = [i.kind for i in p.plan(Ref("plate", 1001), layout)]
    assert kinds.count(CENTER) == 4 and kinds.count(WELLPANEL) == 4 and kinds.count(DETAILS) == 1
    # a plate without runs has no children in the tree: no plate_acquisitions request
    plain = PlateLayout(wells=1, fields=[[7]], well_ids=[10009])
    assert not any("plate_acquisitions" in u for u in browse_urls(p, Ref("plate", 1002), plain))
    # the API v0 pages and grids stay part of metadata
    assert {i.kind for i in p.plan(Ref("plate", 1001), layout)} >= {API, GRID}


def test_dataset_every_tree_page():
    p = planner("metadata", "--all")
    tree = f"{WC}/api/images/?id=201&page={{}}&sizeXYZ=true&date=true&group={GID}"
    assert browse_urls(p, Ref("dataset", 201), ImageList(list(range(450)), 450)) == [
        tree.format(1), tree.format(2), tree.format(3),
        f"{WC}/metadata_details/dataset/201/",
        f"{WC}/api/annotations/?type=map&parents=true&dataset=201",
    ]
    assert browse_urls(p, Ref("dataset", 201), ImageList([], 0))[0] == tree.format(1)  # the tree still asks
    small = planner("metadata", "--all", "--page-size", "100")
    assert sum("api/images/" in u for u in browse_urls(small, Ref("dataset", 201), ImageList([], 450))) == 5


def test_image_panels_and_tabs_only_on_request():
    layout = PlateLayout(wells=1, fields=[[7, 8], [9]], well_ids=[10009])
    assert not any(i.kind in (IMGPANEL, IMGTAB) for i in planner("metadata", "--all").plan(Ref("plate", 1), layout))
    p = planner("metadata", "--all", "--image-panels", "--image-tabs")
    images = [i.url for i in p.plan(Ref("plate", 1), layout) if i.kind in (IMGPANEL, IMGTAB)]
    assert images[:5] == [
        f"{WC}/metadata_details/image/7/",
        f"{WC}/api/annotations/?type=map&parents=true&image=7",
        f"{WC}/metadata_acquisition/image/7/",
        f"{WC}/metadata_preview/image/7/",
        f"{WC}/metadata_hierarchy/image/7/",
    ]
    assert len(images) == 3 * 5
    only_panels = planner("dataset", "1", "--image-panels")
    assert [i.kind for i in only_panels.plan(Ref("dataset", 1), ImageList([5], 1)) if i.kind in (IMGPANEL, IMGTAB)] \
        == [IMGPANEL, IMGPANEL]
    assert {i.kind for i in planner("images", "--ids", "-", "--image-tabs").images([5], "images:5")} == {THUMB, IMGTAB}


def test_warmed_urls_share_keys_with_the_webclients_requests():
    """jQuery's `$.ajaxSetup({cache: false})` adds `_=<counter>` last (ome.csrf.js:66-67); the key drops it."""
    layout = PlateLayout(wells=1, fields=[[7]], acquisitions=[(5001, 1)], well_ids=[10009])
    p = planner("metadata", "--all", "--image-panels", "--image-tabs")
    refs = [(Ref("webclient", "page"), None), (Ref("screen", 1), None), (Ref("plate", 1001), layout),
            (Ref("project", 101), None), (Ref("dataset", 201), ImageList([7], 1))]
    urls = [u for ref, detail in refs for u in browse_urls(p, ref, detail)]
    stamp = itertools.count(1700000000000)
    for url in urls:
        warmed = key(url)
        assert warmed is not None, f"the edge does not cache {url}"
        assert key(f"{url}{'&' if '?' in url else '?'}_={next(stamp)}") == warmed, url


def test_active_group_from_the_webclient_page():
    page = "<script>\n        var WEBCLIENT = {};\n\n        WEBCLIENT.active_group_id = 53;\n</script>"
    assert active_group(page) == 53
    with pytest.raises(NoGroup, match="WEBCLIENT.active_group_id"):
        active_group("<html><h1>OMERO.web login</h1></html>")


# --- end to end: the CLI, the session's simulator, a real edge ---------------------------------------
def public_gid(sim) -> int:
    """The public user's active group, from the catalog (independent of the page the warmer parses)."""
    return next(g["id"] for g in sim.info["groups"] if g["name"] == "public")


def wells_with_images(sim, plate: dict) -> list[int]:
    """A plate's wells that hold an image in some field, read from the backend's grids, row-major."""
    wells: dict[int, None] = {}
    with httpx.Client(base_url=sim.url, timeout=30) as c:
        for f in range(plate["fields"]):
            grid = c.get(f"/webgateway/plate/{plate['id']}/{f}/").json()["grid"]
            wells.update((cell["wellId"], None) for row in grid for cell in row if cell)
    return list(wells)


def webclient_urls(sim, screens: list[dict] | None = None, projects: list[dict] | None = None,
                   orphaned: bool = True) -> dict[str, list[str]]:
    """kind → the URLs the webclient requests while a visitor clicks through (clients.md §10), without `_=`.
    Defaults to every public screen, project and orphaned dataset; a scoped run passes its own."""
    gid = public_gid(sim)
    screens = public(sim, "screens") if screens is None else screens
    projects = public(sim, "projects") if projects is None else projects
    plates = {p["id"]: p for p in public(sim, "plates")}
    datasets = {d["id"]: d for d in public(sim, "datasets")}
    urls: dict[str, list[str]] = {k: [] for k in (TREE, CENTER, DETAILS, ANNOTS, WELLPANEL)}
    urls[TREE] += ["/webgateway/open_with/", f"{WC}/api/experimenters/-1/?page=1&group={gid}",
                   f"{WC}/api/containers/?id=-1&experimenter_id=-1&page=0&group={gid}"]

    def panel(ctype: str, oid: int) -> None:
        urls[DETAILS].append(f"{WC}/metadata_details/{ctype}/{oid}/")
        urls[ANNOTS].append(f"{WC}/api/annotations/?type=map&parents=true&{ctype}={oid}")

    for s in screens:
        urls[TREE].append(f"{WC}/api/plates/?id={s['id']}&page=0&group={gid}")
        panel("screen", s["id"])
        for pid in s["plates"]:
            if pid not in plates:
                continue
            p = plates[pid]
            if p["acquisitions"]:
                urls[TREE].append(f"{WC}/api/plate_acquisitions/?id={pid}&page=0&group={gid}")
            urls[CENTER] += [f"{WC}/load_plate/plate/{pid}/?index={f}" for f in range(p["fields"])]
            for acq in p["acquisitions"]:
                urls[CENTER] += [f"{WC}/load_plate/acquisition/{acq['id']}/?index={f}"
                                 for f in range(len(acq["fields"]))]
            panel("plate", pid)
            for wid in wells_with_images(sim, p):
                urls[WELLPANEL] += [f"{WC}/metadata_details/well/{wid}/?index=0",
                                    f"{WC}/api/annotations/?type=map&parents=true&well={wid}"]
    for pr in projects:
        urls[TREE].append(f"{WC}/api/datasets/?id={pr['id']}&page=0&group={gid}")
        panel("project", pr["id"])
        for did in pr["datasets"]:
            if did not in datasets:
                continue
            pages = max(1, math.ceil(datasets[did]["images"] / 200))
            urls[TREE] += [f"{WC}/api/images/?id={did}&page={n}&sizeXYZ=true&date=true&group={gid}"
                           for n in range(1, pages + 1)]
            panel("dataset", did)
    if orphaned:
        for did, d in datasets.items():  # orphaned datasets: in the containers listing, clicked like the others
            if d["project"] is None:
                urls[TREE] += [f"{WC}/api/images/?id={did}&page={n}&sizeXYZ=true&date=true&group={gid}"
                               for n in range(1, max(1, math.ceil(d["images"] / 200)) + 1)]
                panel("dataset", did)
    return urls


def replay(edge, urls: list[str]) -> dict[str, str]:
    """Each URL as the webclient sends it (jQuery's `_=<counter>` last) → the edge's X-Edge-Cache."""
    stamp = itertools.count(1700000000000)
    out = {}
    with edge.client() as c:
        for url in urls:
            r = c.get(f"{url}{'&' if '?' in url else '?'}_={next(stamp)}")
            assert r.status_code == 200, (url, r.status_code, r.text[:200])
            out[url] = r.headers.get("x-edge-cache", "")
    return out


def test_warm_metadata_makes_every_browsing_click_a_hit(sim, warm_edges, tmp_path):
    edge = warm_edges(10)
    journal = str(tmp_path / "j.sqlite")
    done = warm("metadata", "--all", "--edge", edge.url, "--journal", journal, "--progress", "none")
    assert done.returncode == 0, done.stderr
    expected = webclient_urls(sim)
    rows = journal_rows(journal)
    for kind, urls in expected.items():
        for url in urls:
            assert url in rows and rows[url][1] == kind and rows[url][0] == "ok", (url, rows.get(url))

    sim.reset()
    everything = [u for urls in expected.values() for u in urls]
    answers = replay(edge, everything)
    assert {u: a for u, a in answers.items() if a != "HIT"} == {}
    stats = sim.stats()
    assert stats["total"]["requests"] == 0, stats["requests"]


def test_warm_screen_fills_that_screen_and_the_page(sim, warm_edges, tmp_path):
    edge = warm_edges(11)
    screen, other = public(sim, "screens")[:2]
    done = warm("screen", str(screen["id"]), "--edge", edge.url, "--journal", str(tmp_path / "j.sqlite"),
                "--progress", "none")
    assert done.returncode == 0, done.stderr
    expected = webclient_urls(sim, screens=[screen], projects=[], orphaned=False)
    sim.reset()
    answers = replay(edge, [u for urls in expected.values() for u in urls])
    assert {u: a for u, a in answers.items() if a != "HIT"} == {}
    assert sim.stats()["total"]["requests"] == 0
    gid = public_gid(sim)
    unwarmed = [f"{WC}/api/plates/?id={other['id']}&page=0&group={gid}", f"{WC}/metadata_details/screen/{other['id']}/"]
    assert set(replay(edge, unwarmed).values()) == {"MISS"}  # another screen is not this run's


def test_direct_mode_writes_the_browsing_entries(sim, warm_edges, redis_server, tmp_path):
    edge = warm_edges(12)  # cold: what it serves next comes from what --direct wrote to Redis
    screen = public(sim, "screens")[0]
    result = warm("screen", str(screen["id"]), "--direct", "--redis", f"redis://127.0.0.1:{redis_server.port}/12",
                  "--backend", sim.url, "--edge", edge.url, "--journal", str(tmp_path / "j.sqlite"),
                  "--progress", "none")
    status = warm("status", "--journal", str(tmp_path / "j.sqlite"))
    # API v0 pages of the largest plates' wells exceed the Redis tier's redis_max_body: refused there as
    # the edge itself would; the browsing entries must all be written
    failures = [line for line in status.stdout.splitlines() if " — " in line and "status  url" not in line]
    assert result.returncode == 0 or all("/api/v0/" in f and "redis_max_body" in f for f in failures), \
        (result.stderr, status.stdout)
    urls = [u for urls in webclient_urls(sim, screens=[screen], projects=[], orphaned=False).values() for u in urls]
    sim.reset()  # after webclient_urls, which reads the plates' grids from the backend
    assert {u: a for u, a in replay(edge, urls).items() if a != "HIT"} == {}
    assert sim.stats()["total"]["requests"] == 0, sim.stats()


def test_image_panels_and_tabs_on_request(sim, warm_edges, tmp_path):
    edge = warm_edges(13)
    dataset = next(d for d in public(sim, "datasets") if d["project"] is not None)
    done = warm("dataset", str(dataset["id"]), "--only", "metadata", "--image-panels", "--image-tabs",
                "--edge", edge.url, "--journal", str(tmp_path / "j.sqlite"), "--progress", "none")
    assert done.returncode == 0, done.stderr
    images = range(dataset["first_image"], dataset["first_image"] + dataset["images"])
    urls = [u for i in images for u in (f"{WC}/metadata_details/image/{i}/",
                                        f"{WC}/api/annotations/?type=map&parents=true&image={i}",
                                        *(f"{WC}/metadata_{tab}/image/{i}/" for tab in ("acquisition", "preview",
                                                                                        "hierarchy")))]
    sim.reset()
    assert {u: a for u, a in replay(edge, urls).items() if a != "HIT"} == {}
    assert sim.stats()["total"]["requests"] == 0


def dry_counts(stdout: str) -> dict[str, int]:
    rows = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            rows[parts[0]] = int(parts[1])
    return rows


def test_dry_run_counts_per_kind(sim):
    plan = warm("metadata", "--all", "--api", sim.url, "--dry-run", "--image-panels", "--image-tabs")
    assert plan.returncode == 0, plan.stderr
    counts = dry_counts(plan.stdout)
    expected = webclient_urls(sim)
    for kind, urls in expected.items():
        assert counts.get(kind) == len(urls), (kind, counts, len(urls))
    images = set()
    with httpx.Client(base_url=sim.url, timeout=30) as c:
        for p in public(sim, "plates"):
            for f in range(p["fields"]):
                images |= {cell["id"] for row in c.get(f"/webgateway/plate/{p['id']}/{f}/").json()["grid"]
                           for cell in row if cell}
        for d in public(sim, "datasets"):
            images |= {i["@id"] for i in c.get(f"/api/v0/m/datasets/{d['id']}/images/?limit=500").json()["data"]}
        images |= {i["@id"] for i in c.get("/api/v0/m/images/?orphaned=true&limit=500").json()["data"]}
    assert counts[IMGPANEL] == 2 * len(images) and counts[IMGTAB] == 3 * len(images)
    assert counts["api"] > 0 and counts["grid"] > 0  # API v0 pages and grids stay part of metadata
    assert "thumb" not in counts
    default = dry_counts(warm("metadata", "--all", "--api", sim.url, "--dry-run").stdout)
    assert IMGPANEL not in default and IMGTAB not in default and default[WELLPANEL] == counts[WELLPANEL]


class _NoGroupPage(BaseHTTPRequestHandler):
    """A server whose /webclient/ is a login page (no active group): what a misconfigured site answers."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = b"<html><h1>OMERO.web login</h1></html>" if self.path.startswith("/webclient/") else b"{}"
        self.send_response(200 if self.path.startswith("/webclient/") else 404)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.mark.process
def test_no_active_group_is_a_clear_error():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NoGroupPage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        result = warm("metadata", "--all", "--api", base, "--dry-run")
        assert result.returncode == 1, result.stderr
        assert "warm: error: cannot learn the webclient's active group" in result.stderr
        assert "WEBCLIENT.active_group_id" in result.stderr and "Traceback" not in result.stderr
        server.RequestHandlerClass = type("Gone", (_NoGroupPage,), {"do_GET": lambda self: self.send_error(404)})
        gone = warm("screen", "1", "--api", base, "--dry-run")
        assert gone.returncode == 1 and "/webclient/?experimenter=-1 failed" in gone.stderr, gone.stderr
    finally:
        server.shutdown()
        server.server_close()
