"""`bench plate-384`: a 384-well plate loaded the way OMERO.web's clients load it.

webclient: the plate grid (`webgateway/plate/<pid>/<field>/?_=<ts>`), then the non-empty
wells' image ids in row-major batches of 50, fired concurrently as
`get_thumbnails/?id=…&_=<ts>` (ome.plateview.js; omero-web-api.md §6).
per-well: the grid, then one `render_thumbnail/<id>/` per well (galleries and older viewers).

Warm targets are filled before timing: the edge by `warm plate <pid>` through its warm mode
(the product's own warmer), nginx by one identical load, since nginx has no warmer.
"""
from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable

from bench.clients import Session, Tally, Transport
from bench.measure import LoadFailed, Meter, Primer
from bench.procs import console_script
from bench.targets import WARM_TOKEN, Edge, Stack, Target

MODES = ("webclient", "per-well")
BATCH = 50                  # omero.web.thumbnails_batch
WELLS = 384
WARM_TIMEOUT = 600.0


def find_plate(info: dict) -> dict:
    """The first public 384-well plate of the sim's catalog (`/_sim/info`)."""
    for plate in info["plates"]:
        if plate["public"] and plate["rows"] * plate["columns"] == WELLS:
            return plate
    raise LoadFailed("the simulated OMERO has no public 384-well plate")


class PlateScenario:
    name = "plate-384"
    modes = MODES

    def __init__(self, stack: Stack, meter: Meter) -> None:
        self.stack = stack
        self.plate = find_plate(stack.sim.info)
        self.field = 0
        self.primer = Primer(meter, self.load)

    def describe(self) -> dict:
        p = self.plate
        return {"plate_id": p["id"], "plate": p["name"], "rows": p["rows"], "columns": p["columns"],
                "fields": p["fields"], "field_loaded": self.field, "batch": BATCH}

    async def load(self, session: Session, mode: str) -> Tally:
        """One page visit to the plate's field 0 in `mode`."""
        stamp = time.time_ns() // 1_000_000
        tally = Tally()
        grid = await session.get(f"/webgateway/plate/{self.plate['id']}/{self.field}/?_={stamp}")
        tally.add(grid)
        if grid.status != 200:
            return tally
        ids = [cell["id"] for row in json.loads(grid.body)["grid"] for cell in row if cell]
        if mode == "webclient":
            batches = [ids[k:k + BATCH] for k in range(0, len(ids), BATCH)]
            paths = ["/webgateway/get_thumbnails/?" + "&".join(f"id={i}" for i in batch) + f"&_={stamp + n + 1}"
                     for n, batch in enumerate(batches)]
        else:
            paths = [f"/webgateway/render_thumbnail/{i}/" for i in ids]
        for response in await session.get_many(paths):
            tally.add(response)
        return tally

    def prime(self, target: Target, mode: str, transport: Transport) -> str:
        """Fill a warm target once; returns how (for the report)."""
        if isinstance(target, Edge):
            if self.primer.first(target, "warmer"):
                warm_plate(self.stack, target, self.plate["id"])
            if transport is Transport.H2_TLS:
                self.primer.load_once(target, mode, transport, "tls")
            return ("`warm plate` through the edge's warm mode (plain server); the TLS server shares its disk tier "
                    "and one untimed load through it brings the entries into its memory tier (no backend work)")
        self.primer.load_once(target, mode, transport, mode)
        return "one identical load before timing"


def warm_plate(stack: Stack, edge: Edge, plate_id: int, jobs: int | None = None,
               while_running: Callable[[], None] | None = None) -> None:
    """`warm plate` through the edge's warm mode, `jobs` requests in flight (default: the backend's workers).

    It goes through the plain server (the warmer has no way to trust the run's private CA); the
    TLS server shares the disk tier. `while_running` is called about every 20 ms until it exits."""
    argv = console_script("warm") + [
        "plate", str(plate_id), "--edge", edge.url, "--token", WARM_TOKEN, "--jobs", str(jobs or stack.settings.workers),
        "--journal", str(stack.tmp / "warm-journal.sqlite"), "--progress", "none"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        deadline = time.monotonic() + WARM_TIMEOUT
        while proc.poll() is None and time.monotonic() < deadline:
            if while_running is not None:
                while_running()
            time.sleep(0.02)
        if proc.poll() is None:
            proc.kill()
        output = proc.communicate()[0]
    if proc.returncode != 0:
        raise LoadFailed(f"warm plate {plate_id} failed ({proc.returncode}):\n{output[-3000:]}")
