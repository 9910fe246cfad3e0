"""`bench plate-384`: a 384-well plate loaded the way OMERO.web's clients load it.

webclient: what a browser sends for ome.plateview.js through jQuery's JSONP (clients.md §2): the
plate grid `webgateway/plate/<pid>/<field>/?callback=jQuery…_<n>&_=<n+1>`, then the non-empty
wells' image ids in row-major batches of the site's `thumbnails_batch` (the sim's, default 50),
fired concurrently as `get_thumbnails/?id=…&id=…&callback=jQuery…_<n>&_=<n>` — every name and
counter as one page's jQuery makes them (`bench.clients.JQuery`: the first batch reuses the grid's
freed callback name). Each answer must be `NAME(<json>)` served as application/javascript.
per-well: the grid (plain JSON, `?_=<ts>`), then one `render_thumbnail/<id>/` per well (galleries
and older viewers).

Warm targets are filled before timing: the edge by `warm plate <pid>` through its warm mode
(the product's own warmer), nginx by one load before timing, since nginx has no warmer.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable

from bench.clients import JQuery, Response, Session, Tally, Transport, js_param, unwrap_jsonp
from bench.measure import LoadFailed, Meter, Primer
from bench.targets import Edge, Stack, Target
from bench.warmer import run_warm

MODES = ("webclient", "per-well")
BATCH = 50                  # omero.web.thumbnails_batch's default
WELLS = 384


def find_plate(info: dict) -> dict:
    """The first public 384-well plate of the sim's catalog (`/_sim/info`)."""
    for plate in info["plates"]:
        if plate["public"] and plate["rows"] * plate["columns"] == WELLS:
            return plate
    raise LoadFailed("the simulated OMERO has no public 384-well plate")


def batch_size(info: dict) -> int:
    """The site's omero.web.thumbnails_batch (the sim's `/_sim/info`), as the plate page is given it."""
    return int(info.get("thumbnails_batch") or BATCH)


class PlateScenario:
    name = "plate-384"
    modes = MODES

    def __init__(self, stack: Stack, meter: Meter) -> None:
        self.stack = stack
        self.plate = find_plate(stack.sim.info)
        self.batch = batch_size(stack.sim.info)
        self.field = 0
        self.primer = Primer(meter, self.load)

    def describe(self) -> dict:
        p = self.plate
        return {"plate_id": p["id"], "plate": p["name"], "rows": p["rows"], "columns": p["columns"],
                "fields": p["fields"], "field_loaded": self.field, "batch": self.batch}

    async def load(self, session: Session, mode: str) -> Tally:
        """One page visit to the plate's field 0 in `mode`."""
        if mode == "webclient":
            return await self.load_webclient(session)
        tally = Tally()
        grid = await session.get(f"/webgateway/plate/{self.plate['id']}/{self.field}/?_={time.time_ns() // 1_000_000}")
        tally.add(grid)
        if grid.status != 200:
            return tally
        ids = [cell["id"] for row in json.loads(grid.body)["grid"] for cell in row if cell]
        for response in await session.get_many([f"/webgateway/render_thumbnail/{i}/" for i in ids]):
            tally.add(response)
        return tally

    async def load_webclient(self, session: Session) -> Tally:
        tally = Tally()
        await plate_view(session, JQuery(), tally, self.plate["id"], self.field, self.batch)
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
        return ("one load before timing, made like the timed ones (webclient: its own JSONP callbacks, which "
                "IDR's key $request_uri keeps, so nginx never hits them again)")


async def plate_view(session: Session, jq: JQuery, tally: Tally, plate_id: int, field: int, batch: int) -> dict | None:
    """ome.plateview.js: gs_json(grid), then from its success handler gs_json(batch) for every batch.

    Returns the grid's JSON (None if it was not a 200); every answer must be NAME(json)."""
    url, name = jq.jsonp(f"/webgateway/plate/{plate_id}/{field}/")
    grid = await session.get(url)
    tally.add(grid)
    if grid.status != 200:
        return None
    doc = json.loads(_jsonp_body(grid, name, url))
    jq.done(name)
    ids = [cell["id"] for row in doc["grid"] for cell in row if cell]
    sent = [jq.jsonp("/webgateway/get_thumbnails/?" + js_param(("id", i) for i in ids[k:k + batch]))
            for k in range(0, len(ids), batch)]
    for (url, name), response in zip(sent, await session.get_many([url for url, _ in sent])):
        tally.add(response)
        if response.status == 200:
            _jsonp_body(response, name, url)
    return doc


def _jsonp_body(response: Response, name: str, url: str) -> bytes:
    body = unwrap_jsonp(response, name)
    if body is None:
        raise LoadFailed(f"{url}: not {name}(…) as application/javascript but {response.content_type.decode()!r} "
                         f"{response.body[:60]!r}")
    return body


def warm_plate(stack: Stack, edge: Edge, plate_id: int, jobs: int | None = None,
               while_running: Callable[[], None] | None = None) -> None:
    """`warm plate <pid>` through the edge's warm mode (bench.warmer)."""
    run_warm(stack, edge, ["plate", str(plate_id)], jobs, while_running)
