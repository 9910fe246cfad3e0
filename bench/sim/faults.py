"""Injected faults (`POST /_sim/faults`): a down backend, random 500s, added latency; on every endpoint or on some."""
from __future__ import annotations

import asyncio
import random
from dataclasses import asdict, dataclass, field

from starlette.responses import HTMLResponse, Response


@dataclass
class Faults:
    error_rate: float = 0.0
    latency_ms: float = 0.0
    down: bool = False
    endpoints: list[str] = field(default_factory=list)  # only these endpoints (stats names) fail; [] = all

    def update(self, payload: object) -> None:
        """Replace all settings from a JSON object; `{}` clears. Raises ValueError on bad input."""
        if not isinstance(payload, dict) or set(payload) - {"error_rate", "latency_ms", "down", "endpoints"}:
            raise ValueError("expected an object with error_rate, latency_ms, down, endpoints")
        error_rate = float(payload.get("error_rate", 0.0))
        latency_ms = float(payload.get("latency_ms", 0.0))
        down = payload.get("down", False)
        endpoints = payload.get("endpoints", [])
        if not 0.0 <= error_rate <= 1.0 or latency_ms < 0 or not isinstance(down, bool) \
                or not isinstance(endpoints, list) or not all(isinstance(e, str) for e in endpoints):
            raise ValueError("error_rate in [0,1], latency_ms >= 0, down a boolean, endpoints a list of names")
        self.error_rate, self.latency_ms, self.down, self.endpoints = error_rate, latency_ms, down, endpoints

    def snapshot(self) -> dict:
        return asdict(self)

    async def apply(self, endpoint: str) -> Response | None:
        """The response a faulty backend gives instead of the real one, after any added latency (for `endpoint`,
        the name /_sim/stats counts it under, when `endpoints` names it or is empty)."""
        if self.endpoints and endpoint not in self.endpoints:
            return None
        if self.down:
            return HTMLResponse("<h1>503 Service Unavailable</h1>", status_code=503)
        if self.latency_ms:
            await asyncio.sleep(self.latency_ms / 1000)
        if self.error_rate and random.random() < self.error_rate:
            return HTMLResponse("<h1>Server Error (500)</h1>", status_code=500)
        return None
