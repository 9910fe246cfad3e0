"""Prometheus metrics of one edge process; edge/nodemetrics.py adds up the workers of a node."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily


class HotCounters:
    """Plain integers for the hit path (a prometheus Counter costs microseconds), exported at scrape time."""

    def __init__(self) -> None:
        self.hits = {"memory": 0, "disk": 0, "redis": 0}
        self.bytes_served = 0

    def collect(self):  # noqa: ANN201 - prometheus collector protocol
        hits = CounterMetricFamily("edge_hits", "Requests answered from a tier.", labels=["tier"])
        for tier, value in self.hits.items():
            hits.add_metric([tier], value)
        yield hits
        served = CounterMetricFamily("edge_bytes_served", "Body bytes sent to clients from the cache path.")
        served.add_metric([], self.bytes_served)
        yield served


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.hot = HotCounters()
        r.register(self.hot)
        self.misses = Counter("edge_misses_total", "Requests that needed the upstream.", registry=r)
        self.stale = Counter("edge_stale_total", "Stale entries served (revalidating or upstream failing).",
                             registry=r)
        self.bypass = Counter("edge_bypass_total", "Requests proxied without the cache.", ["reason"], registry=r)
        self.coalesced = Counter("edge_coalesced_total", "Requests that waited on another request's fill.",
                                 registry=r)
        self.upstream_requests = Counter("edge_upstream_requests_total", "Requests sent upstream.",
                                         ["upstream", "status"], registry=r)
        self.upstream_errors = Counter("edge_upstream_errors_total", "Upstream connect errors and timeouts.",
                                       ["upstream"], registry=r)
        self.upstream_seconds = Histogram("edge_upstream_seconds", "Upstream answer time.", ["upstream"],
                                          buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30),
                                          registry=r)
        self.tier_entries = Gauge("edge_tier_entries", "Entries held per tier.", ["tier"], registry=r)
        self.tier_bytes = Gauge("edge_tier_bytes", "Bytes held per tier.", ["tier"], registry=r)
        self.tier_up = Gauge("edge_tier_up", "1 when a tier is usable.", ["tier"], registry=r)
        self.purges = Counter("edge_purges_total", "Objects purged, by source (operator, write, loading) and "
                              "mode (hard, soft).", ["source", "mode"], registry=r)
        self.soft_refreshes = Counter("edge_soft_refreshes_total", "Entries answered stale after a soft purge "
                                      "(each starts or joins one refresh).", registry=r)
        self.write_purges = Counter("edge_write_purges_total", "Tags purged after OMERO.web writes, by write.",
                                    ["write"], registry=r)
        self.prefetch_issued = Counter("edge_prefetch_issued_total", "Entries prefetched (fetched upstream in the "
                                       "background), by kind (thumbnail, tile).", ["kind"], registry=r)
        self.prefetch_used = Counter("edge_prefetch_used_total", "Prefetched entries a client then asked for (its "
                                     "first lookup found or joined them).", ["kind"], registry=r)
        self.prefetch_wasted = Counter("edge_prefetch_wasted_total", "Prefetched entries gone before a client asked "
                                       "(evicted, purged, or no longer fresh; approximate, per process).", ["kind"],
                                       registry=r)
        self.prefetch_skipped = Counter("edge_prefetch_skipped_total", "Entries not prefetched: no spare upstream "
                                        "capacity.", ["kind"], registry=r)
        self.prefetch_in_flight = Gauge("edge_prefetch_in_flight", "Prefetch requests in flight upstream.",
                                        registry=r)
        self.access_checks = Counter("edge_access_checks_total", "Read checks sent to the backend.", ["result"],
                                     registry=r)
        self.breaker_state = Gauge("edge_upstream_breaker_state", "Circuit breaker per upstream: 0 closed, "
                                   "1 half-open, 2 open.", ["upstream"], registry=r)
        self.warm_requests = Counter("edge_warm_requests_total", "Warm-mode requests (the warmer's), by result "
                                     "(hit, miss, stale: the cache status; error: the upstream failed).", ["result"],
                                     registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
