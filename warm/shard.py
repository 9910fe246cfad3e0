"""`--shard K/N`: a deterministic split of the objects across hosts.

The hash is of the object's name (`plate:51`), not of a URL, so every URL of a plate (grids, batches,
API pages) lands on the same host, and the same split comes out of the API and the database alike.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass


class BadShard(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Shard:
    index: int  # 1-based, as written on the command line
    count: int

    @classmethod
    def parse(cls, spec: str) -> Shard:
        k, sep, n = spec.partition("/")
        if not sep or not k.isdigit() or not n.isdigit() or not 1 <= int(k) <= int(n):
            raise BadShard(f"--shard must be K/N with 1 <= K <= N (got {spec!r})")
        return cls(int(k), int(n))

    def owns(self, name: str) -> bool:
        return self.count == 1 or zlib.crc32(name.encode()) % self.count == self.index - 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


ALL = Shard(1, 1)
