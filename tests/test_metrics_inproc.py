"""/_edge/metrics of an in-process edge (a single process, as `hypercorn edge.app:app` runs it), and the
node aggregation of edge/nodemetrics.py over snapshot files of other (live and dead) workers."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge.metrics import Metrics
from edge.nodemetrics import DEAD, GAUGE_RULES, snapshot
from edge.protocol import WARM_HEADER
from tests.inprocess import WARM_TOKEN, MakeEdge, SimApps
from tests.inprocess import anyio_backend, make_edge, sim_apps  # noqa: F401 - fixtures

pytestmark = pytest.mark.anyio


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def worker_file(directory: Path, pid: int, misses: float, memory_entries: float, disk_up: float) -> Path:
    """Another worker's snapshot, as its NodeMetrics would write it."""
    snap = [{"name": "edge_misses", "type": "counter", "help": "h", "samples": [["edge_misses_total", {}, misses]]},
            {"name": "edge_tier_entries", "type": "gauge", "help": "h",
             "samples": [["edge_tier_entries", {"tier": "memory"}, memory_entries],
                         ["edge_tier_entries", {"tier": "disk"}, 7.0]]},
            {"name": "edge_tier_up", "type": "gauge", "help": "h", "samples": [["edge_tier_up", {"tier": "disk"},
                                                                                disk_up]]}]
    path = directory / f"{pid}-{len(list(directory.iterdir())):04x}.json"
    path.write_text(json.dumps(snap))
    return path


def test_every_gauge_says_how_workers_add_up():
    gauges = {f["name"] for f in snapshot(Metrics().registry) if f["type"] == "gauge"}
    assert gauges <= {name for name, _ in GAUGE_RULES}


async def test_a_single_process_reports_its_own(make_edge: MakeEdge, sim_apps: SimApps):
    edge = await make_edge()
    image = sim_apps.public_images[0]
    path = f"/webgateway/render_thumbnail/{image}/64/"
    warm = {WARM_HEADER: WARM_TOKEN}
    assert (await edge.get(path, headers=warm)).json()["cache"] == "MISS"
    assert (await edge.get(path, headers=warm)).json()["cache"] == "HIT"
    assert (await edge.get(path)).headers["x-edge-cache"] == "HIT"
    found = samples((await edge.get("/_edge/metrics")).text)
    assert found[("edge_misses_total", ())] == 1
    assert found[("edge_hits_total", (("tier", "memory"),))] == 2
    assert found[("edge_warm_requests_total", (("result", "miss"),))] == 1
    assert found[("edge_warm_requests_total", (("result", "hit"),))] == 1
    assert found[("edge_upstream_breaker_state", (("upstream", "omero-web"),))] == 0
    assert ("edge_misses_created", ()) in found  # a single process renders prometheus_client's own output


async def test_the_scraped_worker_adds_up_the_node(make_edge: MakeEdge, sim_apps: SimApps, tmp_path: Path):
    directory = tmp_path / "metrics"
    edge = await make_edge(metrics_dir=str(directory))
    assert (await edge.get(f"/webgateway/render_thumbnail/{sim_apps.public_images[0]}/64/")).status_code == 200
    live = worker_file(directory, os.getpid(), misses=5, memory_entries=10, disk_up=1)  # another live worker
    dead = worker_file(directory, dead_pid(), misses=100, memory_entries=1000, disk_up=0)
    for _ in range(2):  # the dead worker is folded at the first scrape; the second counts it once
        found = samples((await edge.get("/_edge/metrics")).text)
        assert found[("edge_misses_total", ())] == 1 + 5 + 100
        assert found[("edge_tier_entries", (("tier", "memory"),))] == 1 + 10  # per process: summed, dead gone
        assert found[("edge_tier_entries", (("tier", "disk"),))] == 7  # one shared directory: the largest
        assert found[("edge_tier_up", (("tier", "disk"),))] == 1  # the dead worker's view is gone with it
        assert not any(name.endswith("_created") for name, _ in found)
    await edge.settle()  # the snapshot timer is not one of the answers' background tasks
    assert live.exists() and not dead.exists()
    assert json.loads((directory / DEAD).read_text())[0]["samples"] == [["edge_misses_total", {}, 100]]
    own = [p for p in directory.glob(f"{os.getpid()}-*.json") if p != live]
    assert len(own) == 1 and any(f["name"] == "edge_hits" for f in json.loads(own[0].read_text()))


async def test_a_lost_directory_still_answers_the_workers_own(make_edge: MakeEdge, tmp_path: Path):
    directory = tmp_path / "metrics"
    edge = await make_edge(metrics_dir=str(directory))
    directory.rename(tmp_path / "gone")
    directory.write_text("not a directory any more")
    resp = await edge.get("/_edge/metrics")
    assert resp.status_code == 200 and ("edge_misses_total", ()) in samples(resp.text)
