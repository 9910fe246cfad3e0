"""One way to open the L2 Redis, plain or a Redis Cluster (`redis_cluster`), for the tier, the fill locks
and the purge registry: redis-py's clients, no slot logic of our own."""
from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

Client = aioredis.Redis | RedisCluster
# What a call to Redis may raise when Redis is down, hung or (a cluster) partly unreachable: redis-py's cluster
# errors (no node reachable, a slot not served) are not RedisErrors.
ERRORS = (RedisError, RedisClusterException, OSError)


def connect(url: str, cluster: bool, **options: Any) -> Client:
    """A client of the Redis at `url`, or (`cluster`) of the cluster its node belongs to: redis-py finds
    the other nodes and routes each key to its slot's master. It does not insist that every slot is
    served, so one dead master leaves the others usable."""
    if cluster:
        return RedisCluster.from_url(url, require_full_coverage=False, **options)
    return aioredis.Redis.from_url(url, **options)


def same_slot(prefix: str, cluster: bool) -> str:
    """`prefix` as a hash tag on a cluster: keys that start with it share one slot (multi-key scripts)."""
    return "{" + prefix + "}" if cluster else prefix


async def subscriber(client: Client, attempt: int) -> PubSub:
    """A pub/sub connection for the `attempt`-th try: on a cluster each try takes the next node, as a
    classic PUBLISH reaches every node over the cluster bus and any live node will do."""
    if not isinstance(client, RedisCluster):
        return client.pubsub()
    await client.initialize()
    nodes = client.get_nodes()
    return client.pubsub(node=nodes[attempt % len(nodes)])
