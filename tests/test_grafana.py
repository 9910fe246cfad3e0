"""deploy/grafana/omero-edge.json (issue 16.3): every query in the dashboard names a metric the edge exports
(read from a running in-process edge's /_edge/metrics), so renaming a metric breaks this test, not the
dashboard; the datasource is the `DS_PROMETHEUS` variable; the issue's panels are there."""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import promql_parser as promql
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from edge.watch import WatchMetrics

from tests.inprocess import MakeEdge
from tests.inprocess import anyio_backend, make_edge, sim_apps  # noqa: F401 - fixtures

pytestmark = pytest.mark.anyio
DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "omero-edge.json"
# The sample names a family of each type exports (prometheus_client strips `_total` from a counter's family name).
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count"),
            "summary": ("", "_sum", "_count"), "info": ("_info",)}
PANELS = ("Hit ratio per tier", "Backend requests saved", "Upstream latency", "Upstream errors", "Circuit breaker",
          "Purges", "Write purges", "Watcher lag", "Watcher events", "Prefetch", "Warm progress")

GRAFANA_RANGES = re.compile(r"\$__(?:rate_interval|interval|range)\b")  # Grafana's macros, in range brackets
# Where a PromQL syntax tree's nodes keep their sub-expressions.
CHILDREN = {promql.BinaryExpr: ("lhs", "rhs"), promql.AggregateExpr: ("expr", "param"), promql.Call: ("args",),
            promql.ParenExpr: ("expr",), promql.UnaryExpr: ("expr",), promql.SubqueryExpr: ("expr",),
            promql.MatrixSelector: ("vector_selector",)}


def metric_names(expr: str) -> set[str]:
    """The metric (sample) names a PromQL expression selects, from its syntax tree (promql-parser, which
    also refuses an expression Prometheus would: bad syntax, or an operator applied to the wrong types)."""
    return set(_selected(promql.parse(GRAFANA_RANGES.sub("5m", expr))))


def _selected(node: object) -> Iterator[str]:
    if isinstance(node, promql.VectorSelector):
        assert node.name, f"select metrics by name, not by matchers on __name__: {node.prettify()}"
        yield node.name
    for attribute in CHILDREN.get(type(node), ()):
        value = getattr(node, attribute)
        for child in value if isinstance(value, list) else [value]:
            yield from _selected(child)


def queries(node: object) -> Iterator[str]:
    """Every `expr` and variable query in the dashboard, nested rows included."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                yield value
            else:
                yield from queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from queries(item)


def label_values_metric(query: str) -> str:
    """`label_values(edge_misses_total, instance)` → `edge_misses_total` (a Grafana variable query)."""
    found = re.fullmatch(r"label_values\((\w+)\s*,\s*\w+\)", query)
    return found.group(1) if found else query


@pytest.fixture
async def exported(make_edge: MakeEdge) -> set[str]:
    """Every sample name the edge's /_edge/metrics and `edge watch`'s metrics listener can export (families
    without samples yet included)."""
    edge = await make_edge()
    text = (await edge.get("/_edge/metrics")).text + generate_latest(WatchMetrics().registry).decode()
    return {family.name + suffix for family in text_string_to_metric_families(text)
            for suffix in SUFFIXES[family.type]}


def test_metric_names_are_read_as_promql_does():
    expr = ('histogram_quantile(0.95, sum by (le, upstream) (rate(edge_upstream_seconds_bucket{instance=~"$i", '
            'status=~"5.."}[$__rate_interval]))) / ignoring(tier) group_left sum(edge_tier_up) and on(x) '
            '-max_over_time(up[1h:$__interval])')
    assert metric_names(expr) == {"edge_upstream_seconds_bucket", "edge_tier_up", "up"}
    with pytest.raises(ValueError):
        metric_names("sum(rate(edge_hits_total[5m])")


async def test_every_query_names_an_exported_metric(exported: set[str]):
    dashboard = json.loads(DASHBOARD.read_text())
    named = set()
    for query in queries(dashboard):
        found = metric_names(label_values_metric(query))
        assert found, query
        named |= found
    unknown = named - exported
    assert not unknown, f"the dashboard names metrics the edge does not export: {sorted(unknown)}"
    assert {"edge_watch_lag_seconds", "edge_watch_events_total"} <= named
    assert {"edge_hits_total", "edge_upstream_seconds_bucket", "edge_upstream_breaker_state",
            "edge_warm_requests_total", "edge_purges_total", "edge_prefetch_issued_total"} <= named


def test_the_dashboard_has_the_issues_panels_on_the_datasource_variable():
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource" and variables["DS_PROMETHEUS"]["query"] == "prometheus"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert set(PANELS) <= {p["title"] for p in panels}
    for panel in panels:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"] and all(t["datasource"]["uid"] == "${DS_PROMETHEUS}" for t in panel["targets"])
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
