"""Redis Cluster as the shared (L2) tier: redis-py's cluster client, with the tier's up/down state per node.

`redis_cluster = true` makes `redis_url` name any node of a cluster; the client finds the others and
routes every key to its slot's master (redis-py: no slot logic here). What must be atomic shares a
slot through a hash tag (the purge state, purge.py); everything else is spread over all slots.

A master that dies with no replica to take over leaves its slots unserved (with
`cluster-require-full-coverage no` the others keep serving theirs): calls on its keys fail with
connection errors. So the tier degrades per node: each master has its own backoff (tiers._Degradable),
a multi-key read or write is split by node (one MGET per slot, pipelined per node, by redis-py's
`mget_nonatomic` and cluster pipelines), and a dead master costs misses for its keys only, while
the other masters' keys keep hitting.
"""
from __future__ import annotations

import asyncio
from collections import defaultdict

from redis.asyncio.cluster import RedisCluster

from .redisclient import ERRORS
from .tiers import RedisTier, _Degradable


class _Node(_Degradable):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = f"redis node {name}"


class ClusterTier(RedisTier):
    """L2 on a Redis Cluster: RedisTier with one backoff per master and reads and writes split by node."""

    def __init__(self, url: str, max_body: int, timeout: float = 0.25) -> None:
        super().__init__(url, max_body, timeout, cluster=True)
        self.nodes: dict[str, _Node] = {}

    @property
    def up(self) -> bool:
        return self.down_since is None and all(node.up for node in self.nodes.values())

    def _node_of(self, key: str) -> str | None:
        """The name of the master serving `key`'s slot, None before the client knows the cluster's layout."""
        try:
            node = self.client.get_node_from_key(key)
        except ERRORS:
            return None
        return node.name if node is not None else None

    def _gate(self, key: str | None) -> _Degradable:
        name = self._node_of(key) if key is not None else None
        if name is None:
            return self  # the layout is unknown yet: the first call (any node) learns it
        if name not in self.nodes:
            self.nodes[name] = _Node(name)
        return self.nodes[name]

    def _by_node(self, keys: list[str]) -> dict[str | None, list[int]]:
        groups: dict[str | None, list[int]] = defaultdict(list)
        for i, key in enumerate(keys):
            groups[self._node_of(key)].append(i)
        return groups

    async def _mget(self, keys: list[str]) -> list[bytes | None]:
        out: list[bytes | None] = [None] * len(keys)

        async def node_read(indexes: list[int]) -> None:
            group = [keys[i] for i in indexes]
            values = await self.call(lambda: self.client.mget_nonatomic(group), None, group[0])
            for i, value in zip(indexes, values or ()):
                out[i] = value

        await asyncio.gather(*(node_read(indexes) for indexes in self._by_node(keys).values()))
        return out

    async def _write(self, items: list[tuple[str, bytes, int]]) -> bool:
        groups = self._by_node([key for key, _, _ in items])
        written = await asyncio.gather(*(super(ClusterTier, self)._write([items[i] for i in indexes])
                                         for indexes in groups.values()))
        return all(written)

    async def size(self) -> tuple[int | None, int | None]:
        """Keys and used memory summed over the masters (None while one does not answer)."""
        async def ask() -> tuple[int, int]:
            memory = await self.client.info("memory", target_nodes=RedisCluster.PRIMARIES)
            return (await self.client.dbsize(target_nodes=RedisCluster.PRIMARIES),
                    sum(node["used_memory"] for node in memory.values()))
        return await self.call(ask, (None, None))

    async def ping(self) -> bool:
        """Every master answers (a dead one makes the tier `degraded` in health, though its peers serve)."""
        answered = await super().ping()
        return answered and all(node.up for node in self.nodes.values())


def redis_tier(url: str, max_body: int, timeout: float, cluster: bool) -> RedisTier:
    return ClusterTier(url, max_body, timeout) if cluster else RedisTier(url, max_body, timeout)
