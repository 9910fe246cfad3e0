"""A clock the test moves: stands in for a module's `time` so time-based states need no sleeping."""
from __future__ import annotations

import pytest


class FakeTime:
    """`monotonic()` and `time()` that only move on `advance()`; install with `install(monkeypatch, module)`."""

    WALL = 1_700_000_000.0

    def __init__(self) -> None:
        self.elapsed = 0.0

    def monotonic(self) -> float:
        return 1000.0 + self.elapsed

    def time(self) -> float:
        return self.WALL + self.elapsed

    def advance(self, seconds: float) -> None:
        self.elapsed += seconds

    def install(self, monkeypatch: pytest.MonkeyPatch, module: object) -> FakeTime:
        """Replaces `module.time` (the module's own reference, never the global time module)."""
        monkeypatch.setattr(module, "time", self)
        return self
