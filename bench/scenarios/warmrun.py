"""`bench warm`: how close the warmer gets to the backend's capacity.

The warmer fills an empty edge with one plate (every field's grid, every image's thumbnail as
get_thumbnails batches of 50) at several `--jobs`. The backend can render at most
workers × 50 thumbnails per batch cost (15 + 3 × 50 ms at speed 1), so a warmer that keeps
every worker busy reaches a utilisation near 1; beyond `jobs = workers` it can only queue.
"""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

from rich.table import Table

from bench.clients import H1Session
from bench.procs import HOST
from bench.scenarios.plate import BATCH, find_plate, warm_plate
from bench.warmer import WARM_TIMEOUT
from bench.sim.capacity import COSTS_MS
from bench.targets import Edge, Stack

NOTES = ["Each run warms a fresh, empty edge. busy s = from the backend's first request of the run to its last "
         "render (sampled every ~20 ms; the warmer's process start-up excluded); wall s includes it. Capacity = the lower of the model (workers × 50 thumbnails ÷ "
         "the cost of one 50-id get_thumbnails batch × speed) and what the backend measurably renders when the "
         "plate's batches hit it directly, 2 × workers at a time; utilisation = renders per busy second ÷ capacity."]


def capacity_per_s(workers: int, speed: float) -> float | None:
    cost_s = (COSTS_MS["batch"] + COSTS_MS["batch_per_id"] * BATCH) * speed / 1000
    return workers * BATCH / cost_s if cost_s > 0 else None


def measured_capacity(stack: Stack, plate: dict) -> float:
    """Renders per second when the plate's batches hit the backend directly, 2 × workers at a time.

    The sim renders real JPEGs on one core, so on a small machine its CPU, not the cost model,
    can be the real limit; the warmer is judged against what the backend can actually do. The
    first pass fills the sim's own pixel caches (as the warm runs will find them) and is not
    counted."""
    async def blast() -> None:
        session = H1Session(HOST, stack.sim.port, connections=2 * stack.settings.workers)
        try:
            ids = []
            for field in range(plate["fields"]):
                grid = json.loads((await session.get(f"/webgateway/plate/{plate['id']}/{field}/")).body)
                ids += [cell["id"] for row in grid["grid"] for cell in row if cell]
            await session.get_many(["/webgateway/get_thumbnails/?" + "&".join(f"id={i}" for i in ids[k:k + BATCH])
                                    for k in range(0, len(ids), BATCH)])
        finally:
            await session.close()

    asyncio.run(asyncio.wait_for(blast(), WARM_TIMEOUT))
    before = stack.sim.totals()["renders"]
    start = time.perf_counter()
    asyncio.run(asyncio.wait_for(blast(), WARM_TIMEOUT))
    return (stack.sim.totals()["renders"] - before) / (time.perf_counter() - start)


def run_warm(stack: Stack, jobs_list: list[int], log: Callable[[str], None]) -> tuple[list[dict], Table]:
    plate = find_plate(stack.sim.info)
    model = capacity_per_s(stack.settings.workers, stack.settings.speed)
    measured = measured_capacity(stack, plate)
    capacity = min(model, measured) if model else measured
    log(f"backend capacity: model {model or float('inf'):,.0f}/s, measured {measured:,.0f}/s")
    results = []
    for jobs in jobs_list:
        edge = Edge(stack, warm=True)
        try:
            edge.start()
            before = stack.sim.totals()
            window = _BusyWindow(stack, before["requests"])
            start = time.perf_counter()
            warm_plate(stack, edge, plate["id"], jobs, window.sample)
            wall = time.perf_counter() - start
            after = stack.sim.totals()
        finally:
            edge.stop()
        renders = after["renders"] - before["renders"]
        seconds = window.seconds() or wall
        row = {"plate_id": plate["id"], "images": plate["images"], "jobs": jobs, "wall_s": round(wall, 3),
               "seconds": round(seconds, 3),
               "backend_requests": after["requests"] - before["requests"], "backend_renders": renders,
               "renders_per_s": round(renders / seconds, 1),
               "capacity_model_per_s": round(model, 1) if model else None,
               "capacity_measured_per_s": round(measured, 1), "capacity_per_s": round(capacity, 1),
               "utilisation": round(renders / seconds / capacity, 2)}
        results.append(row)
        log(f"warm jobs={jobs}: {seconds:.2f} s, {renders} renders, {row['renders_per_s']:,.0f}/s")
    return results, warm_table(results)


class _BusyWindow:
    """When the backend saw the warmer's first request and its last render (sampled every ~20 ms).

    The warmer's own start-up (a Python process, enumeration) is outside this window."""

    def __init__(self, stack: Stack, requests_before: int) -> None:
        self.stack, self.requests_before = stack, requests_before
        self.first: float | None = None
        self.last: float | None = None
        self.renders = -1

    def sample(self) -> None:
        totals, now = self.stack.sim.totals(), time.perf_counter()
        if self.first is None and totals["requests"] > self.requests_before:
            self.first = now
        if totals["renders"] != self.renders:
            self.renders, self.last = totals["renders"], now

    def seconds(self) -> float | None:
        return self.last - self.first if self.first is not None and self.last and self.last > self.first else None


def warm_table(results: list[dict]) -> Table:
    table = Table(header_style="bold")
    for name in ("jobs", "wall s", "busy s", "backend requests", "renders", "renders/s", "capacity/s", "utilisation"):
        table.add_column(name, justify="right")
    for r in results:
        table.add_row(str(r["jobs"]), f"{r['wall_s']:.2f}", f"{r['seconds']:.2f}", str(r["backend_requests"]), str(r["backend_renders"]),
                      f"{r['renders_per_s']:,.0f}", f"{r['capacity_per_s']:,.0f}", f"{r['utilisation']:.2f}")
    return table
