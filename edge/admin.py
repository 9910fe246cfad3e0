"""`/_edge/*`: health, metrics, purge, the status page and the demo page (Starlette; never on the hot path)."""
from __future__ import annotations

import asyncio
import hmac
import json
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import pages, statuspage
from .activity import WarmActivity
from .kinds import ALL, KINDS, tag
from .metrics import Metrics
from .nodemetrics import NodeMetrics
from .protocol import WARM_HEADER
from .purge import SOFT, PurgeRegistry
from .settings import Settings
from .tiers import DiskTier, MemoryTier, RedisTier
from .upstream import Upstream

PURGE_KINDS = tuple(kind.name for kind in KINDS)
PURGES_PAGE = 5000  # most purges one GET /_edge/purges lists
BREAKER_STATES = {"closed": 0, "half-open": 1, "open": 2}  # edge_upstream_breaker_state's values


def purge_tags(spec: dict) -> list[str]:
    """{"image": [1, 2], "plate": 3, "all": true} → ["image:1", "image:2", "plate:3"] or ["*"] ("soft" aside)."""
    if spec.get("all") is True:
        return [ALL]
    tags = []
    for kind in PURGE_KINDS:
        value = spec.get(kind)
        if value is None:
            continue
        for ident in value if isinstance(value, list) else [value]:
            if isinstance(ident, bool) or not isinstance(ident, int) or ident < 0:
                raise ValueError(f"{kind} ids must be non-negative integers")
            tags.append(tag(kind, ident))
    unknown = set(spec) - set(PURGE_KINDS) - {"all", "soft"}
    if unknown:
        raise ValueError(f"unknown purge keys: {', '.join(sorted(unknown))}")
    if not tags:
        raise ValueError(f"name something to purge: one of {', '.join(PURGE_KINDS)} or all")
    return tags


def purge_soft(spec: dict) -> bool:
    """`"soft": true`: stale while refreshed (at most soft_purge_seconds), not gone (purge.py)."""
    soft = spec.get("soft", False)
    if not isinstance(soft, bool):
        raise ValueError("soft must be true or false")
    return soft


@dataclass
class Shown:
    """What the admin endpoints show and act on (not the whole edge)."""

    settings: Settings
    memory: MemoryTier | None
    disk: DiskTier | None
    redis: RedisTier | None
    upstreams: list[Upstream]
    registry: PurgeRegistry
    metrics: Metrics
    warm: WarmActivity | None = None  # warm-mode requests seen (the status page's warm runs)
    node: NodeMetrics | None = None  # set when the workers of a node add their metrics up (metrics_dir)

    def read_gauges(self) -> None:
        """The gauges that are read from the tiers and breakers, not counted: set before every snapshot."""
        m = self.metrics
        if self.memory is not None:
            m.tier_entries.labels("memory").set(len(self.memory))
            m.tier_bytes.labels("memory").set(self.memory.bytes)
            m.tier_up.labels("memory").set(1)
        if self.disk is not None:
            count, volume = self.disk.stats()
            m.tier_entries.labels("disk").set(count)
            m.tier_bytes.labels("disk").set(volume)
            m.tier_up.labels("disk").set(int(self.disk.up))
        if self.redis is not None:
            m.tier_up.labels("redis").set(int(self.redis.up))
        for pool in self.upstreams:
            m.breaker_state.labels(pool.name).set(BREAKER_STATES[pool.breaker.state])


def admin_app(edge: Shown) -> Starlette:
    async def health(request: Request) -> Response:
        return JSONResponse(await statuspage.health(edge))

    async def metrics(request: Request) -> Response:
        """This process's metrics, or with metrics_dir the node's: every worker's, added up."""
        if edge.node is not None:
            body = await asyncio.to_thread(edge.node.render)
        else:
            edge.read_gauges()
            body = edge.metrics.render()
        return Response(body, media_type="text/plain; version=0.0.4")

    async def purge(request: Request) -> Response:
        token = edge.settings.purge_token
        if not token:
            return JSONResponse({"error": "purge is disabled: set purge_token"}, status_code=404)
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return JSONResponse({"error": "bad or missing bearer token"}, status_code=401)
        try:
            spec = json.loads(await request.body())
            if not isinstance(spec, dict):
                raise ValueError("the body must be a JSON object")
            tags, soft = purge_tags(spec), purge_soft(spec)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        seq = await edge.registry.purge(tags, soft=soft)
        edge.metrics.purges.labels("operator", "soft" if soft else "hard").inc(len(tags))
        return JSONResponse({"purged": tags, "soft": soft, "seq": seq})

    async def purges(request: Request) -> Response:
        """The purges after `?after=SEQ` (oldest first, `limit` at most): what `warm follow` re-warms.
        For the warmer: its warm token in the warm header."""
        token = edge.settings.warm_token
        if not token or not hmac.compare_digest(request.headers.get(WARM_HEADER, "").encode(), token.encode()):
            return JSONResponse({"error": f"send the warm token in {WARM_HEADER}"}, status_code=401)
        try:
            after = int(request.query_params.get("after", "0"))
            limit = min(int(request.query_params.get("limit", str(PURGES_PAGE))), PURGES_PAGE)
        except ValueError:
            return JSONResponse({"error": "after and limit must be integers"}, status_code=400)
        found = edge.registry.since(after, limit + 1)
        rows = [{"seq": seq, "tag": tag.removeprefix(SOFT), "soft": tag.startswith(SOFT)}
                for seq, tag in found[:limit]]
        return JSONResponse({"seq": edge.registry.known, "purges": rows, "more": len(found) > limit})

    return Starlette(routes=[
        Route("/_edge/health", health),
        Route("/_edge/metrics", metrics),
        Route("/_edge/purge", purge, methods=["POST"]),
        Route("/_edge/purges", purges),
        *statuspage.routes(edge), *pages.routes(edge.settings),
    ])
