"""The node at a glance: `/_edge/health` (the short form), `/_edge/status.json` and the page `/_edge/`.

One snapshot feeds all three, so the page a person reads and the JSON a script reads never
disagree. The page is rendered here, on the server, with no external assets; its inline script
(jQuery, served by the edge itself: edge/pages.py) reloads the page's own `#status` block every
few seconds with `jQuery.load`, so there is one renderer and no templates in JavaScript.

Like /_edge/health and /_edge/metrics it is open: it shows counts, states and purged object ids,
never a token, a session, a user or an upstream URL. Counters are this worker process's own
(`edge serve --workers N` has N sets, as /_edge/metrics has); tier sizes are the node's.
"""
from __future__ import annotations

import html
import math
import os
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from .pages import JQUERY_URL
from .purge import SOFT

if TYPE_CHECKING:
    from .admin import Shown

RECENT_PURGES = 10  # purges listed on the page
REFRESH_MS = 2000  # how often the page reloads its #status block
STARTED = time.time()
TIERS = ("memory", "disk", "redis")


async def health(edge: Shown) -> dict:
    """`/_edge/health`: tiers up, breakers, the purge sequence; "degraded" when one of them is not fine."""
    tiers = {"memory": edge.memory is not None}
    if edge.disk is not None:
        tiers["disk"] = edge.disk.up
    if edge.redis is not None:
        tiers["redis"] = await edge.redis.ping()
    upstreams = {pool.name: pool.breaker.state for pool in edge.upstreams}
    ok = all(tiers.values()) and all(state == "closed" for state in upstreams.values())
    purges = {"seq": edge.registry.epoch(), "tags": len(edge.registry.purged)}
    return {"status": "ok" if ok else "degraded", "tiers": tiers, "upstreams": upstreams,
            "access": edge.settings.access, "purges": purges}


def samples(metric, name: str) -> list[tuple[dict[str, str], float]]:
    """A prometheus_client metric's samples called `name`, as (labels, value)."""
    return [(s.labels, s.value) for family in metric.collect() for s in family.samples if s.name == name]


def total(metric, name: str, **labels: str) -> int:
    """The sum of a counter's samples whose labels include `labels`."""
    return int(sum(v for got, v in samples(metric, name) if labels.items() <= got.items()))


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Prometheus's histogram_quantile over cumulative (le, count) buckets: linear within the bucket that
    holds the rank; the highest finite bound when it falls in +Inf; None without observations."""
    total = buckets[-1][1] if buckets else 0
    if not total:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return lower
            return lower + (le - lower) * (rank - below) / (count - below) if count > below else le
        lower, below = le, count
    return lower


async def _tiers(edge: Shown, up: dict[str, bool], lookups: int) -> list[dict]:
    hits = edge.metrics.hot.hits
    sizes: dict[str, tuple[int | None, int | None]] = {}
    if edge.memory is not None:
        sizes["memory"] = (len(edge.memory), edge.memory.bytes)
    if edge.disk is not None:
        sizes["disk"] = edge.disk.stats()
    if edge.redis is not None and up.get("redis"):
        sizes["redis"] = await edge.redis.size()
    rows = []
    for name in TIERS:
        entries, volume = sizes.get(name, (None, None))
        state = "off" if name not in up else "up" if up[name] else "down"
        rows.append({"tier": name, "state": state, "entries": entries, "bytes": volume, "hits": hits[name],
                     "hit_ratio": hits[name] / lookups if lookups and state != "off" else None})
    return rows


def _upstreams(edge: Shown) -> list[dict]:
    m = edge.metrics
    buckets = samples(m.upstream_seconds, "edge_upstream_seconds_bucket")
    now = time.monotonic()
    rows = []
    for pool in edge.upstreams:
        mine = sorted((float(labels["le"]), value) for labels, value in buckets if labels["upstream"] == pool.name)
        p50, p99 = (quantile(mine, q) for q in (0.5, 0.99))
        rows.append({"upstream": pool.name, "breaker": pool.breaker.state, "failures": pool.breaker.failures,
                     "urls": len(pool.targets), "resting": sum(t.resting_until > now for t in pool.targets),
                     "requests": total(m.upstream_requests, "edge_upstream_requests_total", upstream=pool.name),
                     "errors": total(m.upstream_errors, "edge_upstream_errors_total", upstream=pool.name),
                     "p50_ms": None if p50 is None else round(p50 * 1000, 1),
                     "p99_ms": None if p99 is None else round(p99 * 1000, 1)})
    return rows


def _purges(edge: Shown) -> dict:
    registry = edge.registry
    seq = registry.epoch()
    found = registry.since(max(0, seq - RECENT_PURGES), RECENT_PURGES)
    recent = [{"seq": n, "tag": tag.removeprefix(SOFT), "soft": tag.startswith(SOFT)} for n, tag in reversed(found)]
    return {"seq": seq, "tags": len(registry.purged), "recent": recent}


async def snapshot(edge: Shown) -> dict:
    """Everything the page shows, as data (`/_edge/status.json`)."""
    m = edge.metrics
    short = await health(edge)
    hits = sum(m.hot.hits.values())
    misses = total(m.misses, "edge_misses_total")
    counts = {"hits": hits, "misses": misses, "stale": total(m.stale, "edge_stale_total"),
              "coalesced": total(m.coalesced, "edge_coalesced_total"), "bypass": total(m.bypass, "edge_bypass_total"),
              "hit_ratio": hits / (hits + misses) if hits + misses else None,
              "bytes_served": m.hot.bytes_served}
    return {"status": short["status"], "time": time.time(),
            "node": {"pid": os.getpid(), "uptime_s": round(time.time() - STARTED, 1),
                     "workers": edge.settings.workers, "access": edge.settings.access},
            "requests": counts, "tiers": await _tiers(edge, short["tiers"], hits + misses),
            "upstreams": _upstreams(edge), "purges": _purges(edge),
            "warm": edge.warm.snapshot() if edge.warm is not None else None}


# --- the page -----------------------------------------------------------------------------------
def _size(n: int | None) -> str:
    if n is None:
        return "–"
    if n < 1024:
        return f"{n} B"
    power = min(3, (int(n).bit_length() - 1) // 10)
    return f"{n / 1024 ** power:.1f} {('KiB', 'MiB', 'GiB')[power - 1]}"


def _ratio(r: float | None) -> str:
    return "–" if r is None else f"{r * 100:.1f} %"


def _plain(v: object) -> str:
    return "–" if v is None else str(v)


# Each table: (section id, title, its rows in the snapshot, [(column, field, format)]); the state and
# breaker cells get a class so "down" and "open" stand out.
Column = tuple[str, str, Callable[[object], str]]
TABLES: list[tuple[str, str, Callable[[dict], Iterable[dict]], list[Column]]] = [
    ("tiers", "Tiers", lambda s: s["tiers"], [
        ("tier", "tier", _plain), ("state", "state", _plain), ("entries", "entries", _plain),
        ("bytes", "bytes", _size), ("hits", "hits", _plain), ("hit ratio", "hit_ratio", _ratio)]),
    ("upstreams", "Upstreams", lambda s: s["upstreams"], [
        ("upstream", "upstream", _plain), ("breaker", "breaker", _plain), ("failures", "failures", _plain),
        ("URLs resting", "resting", _plain), ("requests", "requests", _plain), ("errors", "errors", _plain),
        ("p50 ms", "p50_ms", _plain), ("p99 ms", "p99_ms", _plain)]),
    ("purges", "Recent purges", lambda s: s["purges"]["recent"], [
        ("seq", "seq", _plain), ("object", "tag", _plain), ("soft", "soft", lambda v: "soft" if v else "hard")]),
]
STATE_CLASS = {"up": "good", "closed": "good", "down": "bad", "open": "bad", "half-open": "warn", "off": "off"}


def _table(key: str, title: str, rows: Iterable[dict], columns: list[Column]) -> str:
    head = "".join(f"<th>{html.escape(name)}</th>" for name, _, _ in columns)
    body = []
    for row in rows:
        cells = []
        for _, field, fmt in columns:
            text = fmt(row.get(field))
            css = STATE_CLASS.get(text, "") if field in ("state", "breaker") else ""
            cells.append(f'<td class="{css}" data-field="{field}">{html.escape(text)}</td>')
        body.append(f'<tr data-row="{html.escape(str(row.get(columns[0][1])))}">{"".join(cells)}</tr>')
    if not body:
        body.append(f'<tr><td colspan="{len(columns)}" class="off">none</td></tr>')
    return f'<section id="{key}"><h2>{title}</h2><table><tr>{head}</tr>{"".join(body)}</table></section>'


def _warm(warm: dict | None) -> str:
    if warm is None or not warm["requests"]:
        text = "no warm-mode requests yet"
    else:
        state = "in progress" if warm["active"] else "idle"
        text = (f"{state}: {warm['requests']} warm-mode requests, {warm['last_minute']} in the last minute "
                f"({warm['per_second']}/s), the last {warm['last_seen_s']} s ago")
    return f'<section id="warm"><h2>Warm runs</h2><p data-field="warm">{html.escape(text)}</p></section>'


def render(snap: dict) -> str:
    r, node = snap["requests"], snap["node"]
    summary = (f"{r['hits']} hits, {r['misses']} misses, {r['stale']} stale, {r['coalesced']} coalesced, "
               f"{r['bypass']} bypassed · hit ratio {_ratio(r['hit_ratio'])} · {_size(r['bytes_served'])} served")
    when = time.strftime("%H:%M:%S", time.gmtime(snap["time"]))
    tables = "".join(_table(key, title, rows(snap), cols) for key, title, rows, cols in TABLES)
    return PAGE.format(refresh=REFRESH_MS, jquery=JQUERY_URL, body=(
        f'<div id="status"><p class="{"good" if snap["status"] == "ok" else "bad"}" id="overall">'
        f'{snap["status"]}</p><p id="summary">{html.escape(summary)}</p>'
        f'<p class="off" id="node">process {node["pid"]} of {node["workers"]} worker(s), up {node["uptime_s"]:.0f} s, '
        f'access {html.escape(node["access"])}, updated <span id="updated">{when}</span> UTC '
        f'(counters are this process\'s)</p>{tables}{_warm(snap["warm"])}</div>'))


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>omero-edge status</title>
<style>
  body {{ font: 14px system-ui, sans-serif; margin: 1em 2em; color: #222; }}
  table {{ border-collapse: collapse; margin-bottom: .5em; }}
  th, td {{ border-bottom: 1px solid #ddd; padding: 3px 10px; text-align: right; }}
  th:first-child, td:first-child {{ text-align: left; }}
  h2 {{ font-size: 1.05em; margin: 1.2em 0 .3em; }}
  .good {{ color: #17813a; font-weight: 600; }} .bad {{ color: #c21d1d; font-weight: 600; }}
  .warn {{ color: #b26a00; font-weight: 600; }} .off {{ color: #888; }}
  #overall {{ font-size: 1.3em; margin: .2em 0; }}
</style></head>
<body><h1>omero-edge</h1>
{body}
<script src="{jquery}"></script>
<script>
// Reloads only the #status block, from this same page (jQuery.load with a selector).
setInterval(function () {{ jQuery("#status").load("/_edge/ #status > *"); }}, {refresh});
</script>
</body></html>
"""


def routes(edge: Shown) -> list[Route]:
    async def status_json(request: Request) -> Response:
        return JSONResponse(await snapshot(edge))

    async def status_page(request: Request) -> Response:
        return HTMLResponse(render(await snapshot(edge)), headers={"cache-control": "no-store"})

    return [Route("/_edge/", status_page), Route("/_edge/status.json", status_json)]
