"""Node-wide metrics (issue 16.3): `edge serve --workers 3` (granian, hypercorn) in front of the simulator
answers every scrape of /_edge/metrics, whichever worker takes it, with the node's totals; counters never go
backwards, not even when a worker dies; labels stay a bounded set."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tempfile
from collections import defaultdict
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge.nodemetrics import DEAD
from edge.prefetch import THUMBNAIL, TILE
from edge.status import Bypass
from edge.writes import WRITES
from tests.helpers import Launcher, Sim
from tests.helpers.launch import PURGE_TOKEN
from tests.helpers.procs import script, wait_until

MISSES, HITS_EACH = 30, 2  # 30 distinct thumbnails fetched once, then asked twice more each: 60 hits
SCRAPES = 10
# Every label the edge exports, and the values it may take: none names a URL, a user or an id.
LABELS = {
    "tier": {"memory", "disk", "redis"}.__contains__,
    "upstream": {"omero-web", "omero-ms"}.__contains__,
    "status": re.compile(r"[1-5]\d\d").fullmatch,
    "reason": {b.value for b in Bypass}.__contains__,
    "result": {"allowed", "denied", "error", "hit", "miss", "stale"}.__contains__,
    "source": {"operator", "write", "loading"}.__contains__,
    "mode": {"hard", "soft"}.__contains__,
    "kind": {THUMBNAIL, TILE}.__contains__,
    "write": {w.name for w in WRITES}.__contains__,
    "le": re.compile(r"[0-9.e+]+|\+Inf").fullmatch,
}


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """One scrape on a fresh connection (so any worker may answer): {(sample, labels): value}."""
    text = httpx.get(url + "/_edge/metrics", timeout=10, headers={"connection": "close"}).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(samples: dict, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and labels.items() <= dict(ls).items())


def counters(samples: dict) -> dict:
    return {k: v for k, v in samples.items() if k[0].endswith(("_total", "_bucket", "_count", "_sum"))}


@pytest.fixture(scope="module", params=["granian", "hypercorn"])
def node(request: pytest.FixtureRequest, sim: Sim, tmp_path_factory: pytest.TempPathFactory):
    """Three workers of either server sharing a metrics directory (with a previous run's snapshot left in
    it), after 30 misses and 60 hits on distinct thumbnails, each request on its own connection."""
    metrics_dir = tmp_path_factory.mktemp("metrics")
    left = [{"name": "edge_misses", "type": "counter", "help": "", "samples": [["edge_misses_total", {}, 1000.0]]}]
    (metrics_dir / f"{os.getpid()}-0000.json").write_text(json.dumps(left))  # a live pid: counted unless wiped
    (metrics_dir / "operator.json").write_text("{}")  # not the edge's: left alone
    launcher = Launcher(sim)
    edge = launcher("--workers", "3", server=request.param, env={"EDGE_METRICS_DIR": str(metrics_dir)})
    paths = [f"/webgateway/render_thumbnail/{i}/64/" for i in sim.plate_images(0, MISSES)]
    sim.reset()
    for _ in range(1 + HITS_EACH):
        for path in paths:
            assert httpx.get(edge.url + path, timeout=10, headers={"connection": "close"}).status_code == 200
    yield edge, metrics_dir
    launcher.stop_all()


def test_every_scrape_shows_the_node_totals(node, sim: Sim):
    edge, metrics_dir = node
    expected = {"edge_misses_total": MISSES, "edge_hits_total": MISSES * HITS_EACH,
                "edge_upstream_requests_total": MISSES, "edge_upstream_seconds_count": MISSES}
    assert sim.stats()["total"]["requests"] == MISSES  # the backend saw each thumbnail once

    def settled() -> dict:  # the other workers' snapshots are at most a second old
        samples = scrape(edge.url)
        return samples if all(total(samples, n) == v for n, v in expected.items()) else {}
    wait_until(settled, timeout=5, message="the node's totals never showed")
    per_worker = [sum(s[2] for f in json.loads(p.read_text()) if f["name"] == "edge_misses" for s in f["samples"])
                  for p in metrics_dir.glob("*-*.json")]
    assert len(per_worker) == 3 and sum(per_worker) == MISSES
    assert max(per_worker) < MISSES  # the requests were spread: no worker alone holds the totals
    previous: dict = {}
    for _ in range(SCRAPES):
        samples = scrape(edge.url)
        assert {n: total(samples, n) for n in expected} == expected
        assert total(samples, "edge_hits_total", tier="memory") + total(samples, "edge_hits_total", tier="disk") \
            == MISSES * HITS_EACH
        assert total(samples, "edge_upstream_requests_total", upstream="omero-web", status="200") == MISSES
        assert all(samples.get(k, 0) >= v for k, v in previous.items())  # monotonic
        previous = counters(samples)


def test_labels_stay_a_bounded_set(node, sim: Sim):
    """20 distinct uncached URLs and purges of 20 images add a few series (a bypass reason, purge source and
    mode), not one per URL or image; every label value is one of a known set."""
    edge, _ = node
    before = set(scrape(edge.url))
    for i in range(20):
        assert httpx.get(f"{edge.url}/webclient/?show=image-{i}", timeout=10).status_code < 500
    auth = {"authorization": f"Bearer {PURGE_TOKEN}"}
    for soft in (False, True):
        ids = list(range(10**6, 10**6 + 20))
        assert httpx.post(edge.url + "/_edge/purge", json={"image": ids, "soft": soft}, headers=auth).status_code == 200
    wait_until(lambda: total(scrape(edge.url), "edge_purges_total", source="operator") == 40, timeout=5,
               message="the purges never showed in the node's totals")
    seen, series = defaultdict(set), set()
    for _ in range(3):
        found = scrape(edge.url)
        series |= set(found)
        for (name, labels), _value in found.items():
            for label, value in labels:
                seen[label].add(value)
    assert len(series - before) <= 4, sorted(series - before)
    assert set(seen) <= set(LABELS), set(seen) - set(LABELS)
    bad = {label: v for label, values in seen.items() for v in values if not LABELS[label](v)}
    assert not bad
    assert seen["tier"] == {"memory", "disk", "redis"} and seen["upstream"] == {"omero-web", "omero-ms"}
    assert {"operator"} <= seen["source"] and seen["mode"] == {"hard", "soft"}


@pytest.mark.parametrize("node", ["granian"], indirect=True)  # hypercorn stops every worker when one dies
def test_a_dead_workers_counts_stay(node):
    """SIGKILL one worker (a child of the edge this module started): granian replaces it, and its last
    snapshot is folded into the directory's dead-workers' totals, so no counter goes backwards."""
    edge, metrics_dir = node
    before = counters(scrape(edge.url))
    snapshots = sorted(metrics_dir.glob("*-*.json"))
    assert len(snapshots) == 3  # one per worker; the previous run's file was wiped at start
    assert (metrics_dir / "operator.json").exists()
    os.kill(int(snapshots[0].name.split("-")[0]), signal.SIGKILL)

    def replaced() -> bool:  # a scrape folds the dead worker's file; its successor writes its own
        scrape(edge.url)
        found = list(metrics_dir.glob("*-*.json"))
        return snapshots[0] not in found and len(found) == 3
    wait_until(replaced, timeout=15, interval=0.5, message="the worker was not replaced")
    for _ in range(SCRAPES):
        after = counters(scrape(edge.url))
        assert all(after.get(k, 0) >= v for k, v in before.items())
        assert total(after, "edge_misses_total") == MISSES and total(after, "edge_hits_total") == MISSES * HITS_EACH
    assert (metrics_dir / DEAD).exists()


@pytest.mark.process
def test_an_unusable_metrics_dir_is_one_line_and_status_2(tmp_path: Path):
    taken = tmp_path / "a-file"
    taken.write_text("")
    out = subprocess.run([script("edge"), "serve", "--workers", "2", "--bind", "127.0.0.1:1"],
                         env={**os.environ, "EDGE_METRICS_DIR": str(taken)}, capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [f"edge: error: metrics_dir {taken}: File exists"]


def node_dirs(pid: int) -> set[Path]:
    """The temporary metrics directories holding snapshots of the server's worker processes."""
    workers = {c for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()}
    return {found.parent for worker in workers
            for found in Path(tempfile.gettempdir()).glob(f"edge-metrics-*/{worker}-*.json")}


def test_workers_without_a_metrics_dir_get_a_temporary_one(edges: Launcher, sim: Sim):
    """`edge serve --workers 2` alone: a fresh directory both workers write to, gone when the edge stops."""
    edge = edges("--workers", "2")
    (directory,) = wait_until(lambda: node_dirs(edge.proc.pid), timeout=5)
    paths = [f"/webgateway/render_thumbnail/{i}/64/" for i in sim.plate_images(1, 6)]
    for path in paths:
        assert httpx.get(edge.url + path, timeout=10, headers={"connection": "close"}).status_code == 200
    wait_until(lambda: total(scrape(edge.url), "edge_misses_total") == len(paths), timeout=5)
    assert len(list(directory.glob("*-*.json"))) == 2
    edges.stop_all()
    assert not directory.exists()
