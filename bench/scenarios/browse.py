"""`bench browse`: a visitor browsing the webclient, screen → plate → well → image, then project →
dataset → image, with exactly the requests docs/browse.md lists (the webclient's own order).

One visit is one page load of `/webclient/?experimenter=-1` (a navigation: no `_`), whose scripts
read `WEBCLIENT.active_group_id`, then the clicks below, one after the other, each firing its
requests at once as the webclient's handlers do. Every jQuery GET carries a fresh `_=<counter>`
last (`$.ajaxSetup({cache: false})`, one counter per page, `bench.clients.JQuery`); the plate grid
and its thumbnail batches are JSONP (`gs_json`, as `bench plate-384` sends them). Objects are
picked from the answers as a visitor clicks the first of each list: the first screen and project of
`api/containers`, the first plate of `api/plates`, the grid's first well with an image and that
image, the first dataset and its first image. Each click is timed to its last byte (`steps_ms`).

| click | requests |
|---|---|
| page | the page, then `getImgRDef`, `open_with`, `api/experimenters/-1/` → `api/containers/` |
| screen | `api/plates/?id=`, `metadata_details/screen/`, map annotations `&screen=` |
| plate | `api/plate_acquisitions/` (with runs), panel, annotations; `load_plate/…/?index=0` → grid → batches|
| well | `metadata_details/well/<wid>/?index=0`, annotations; `well/<wid>/children/` → webclient batches |
| image, ds-image | `metadata_details/image/<iid>/`, annotations `&image=` |
| tabs, ds-tabs | `metadata_acquisition`, `metadata_preview`, `metadata_hierarchy` of the image, opened in turn |
| project | `api/datasets/?id=`, `metadata_details/project/`, annotations |
| dataset | `api/images/?id=…&page=1&sizeXYZ=true&date=true` → the icons' webclient batches; panel, annotations |

Warm targets: the edge by the product's warmer (`warm screen <sid> --wells --image-panels
--image-tabs`, `warm project <pid> --image-panels --image-tabs`); nginx by one identical visit
before timing (its own `_` and callbacks: a previous visitor; IDR today fills a release's cache by
cloning the previous one's, i.e. by its visitors); `nginx-recache` as IDR's published warming does
(idr-utils recache.py: the map annotations of every object, requested without `_`). IDR's key keeps
the separator before `_=`, so a browser's `…&image=1&_=5` is keyed `…&image=1&`: recache.py's
entries are never hit.
"""
from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager

from bench.clients import JQuery, Response, Session, Tally, Transport, js_param
from bench.measure import LoadFailed, Meter, Primer, Record
from bench.scenarios.plate import batch_size, plate_view
from bench.targets import RECACHE, Edge, NginxCache, Stack, Target
from bench.warmer import run_warm

MODES = ("webclient",)
PAGE = "/webclient/?experimenter=-1"            # IDR's nginx sends /webclient here (the whole group's view)
CLICKS = ("page", "screen", "plate", "well", "image", "tabs", "project", "dataset", "ds-image", "ds-tabs")
NEVER_CACHED = ("webclient:index", "getImgRDef")  # the sim's endpoints of the page and the rdef clipboard
TABS = ("acquisition", "preview", "hierarchy")
ACTIVE_GROUP = re.compile(rb"WEBCLIENT\.active_group_id\s*=\s*(-?[0-9]+)\s*;")
ANNOTATED = ("screen", "plate", "well", "image", "project", "dataset", "ds-image")


class Visit:
    """One page load: its session, its jQuery (callbacks and `_` counter) and what it clicked."""

    def __init__(self, session: Session, batch: int, in_progress: frozenset[int]) -> None:
        self.session, self.batch, self.in_progress = session, batch, in_progress
        self.jq, self.tally = JQuery(), Tally()
        self.picked: dict[str, int] = {}
        self.placeholders = 0           # batches holding an image whose pyramid is being generated
        self.gid = 0

    def batches(self, ids: list[int]) -> list[list[int]]:
        """`ids` in batches of thumbnails_batch, counting those whose answer holds a "loading" placeholder."""
        out = [ids[k:k + self.batch] for k in range(0, len(ids), self.batch)]
        self.placeholders += sum(1 for b in out if self.in_progress.intersection(b))
        return out

    @asynccontextmanager
    async def click(self, name: str) -> AsyncIterator[None]:
        start = time.perf_counter()
        yield
        self.tally.step(name, time.perf_counter() - start)

    async def ajax(self, path: str) -> Response:
        """`$.ajax({url: path, cache: false})`: `_=<counter>` appended last; the answer must be a 200."""
        return (await self.ajax_many([path]))[0]

    async def ajax_many(self, paths: list[str]) -> list[Response]:
        urls = [self.jq.uncached(path) for path in paths]
        answers = await self.session.get_many(urls)
        for url, answer in zip(urls, answers):
            self.tally.add(answer)
            if answer.status != 200:
                raise LoadFailed(f"{url}: {answer.status} {answer.body[:80]!r}")
        return answers

    async def json(self, path: str) -> dict | list:
        return json.loads((await self.ajax(path)).body)

    def panels(self, kind: str, ident: int, query: str = "") -> list[str]:
        """The right-hand panel and the key-value pairs mapr shows for a selected object."""
        return [f"/webclient/metadata_details/{kind}/{ident}/{query}",
                f"/webclient/api/annotations/?type=map&parents=true&{kind}={ident}"]

    async def thumbnails(self, ids: list[int]) -> None:
        """OME.load_thumbnails: `/webclient/get_thumbnails/?id=…` in batches of thumbnails_batch, at once."""
        if ids:
            await self.ajax_many(["/webclient/get_thumbnails/?" + js_param(("id", i) for i in b)
                                  for b in self.batches(ids)])

    def pick(self, name: str, ident: int) -> int:
        self.picked[name] = ident
        return ident


async def _both(*steps: Awaitable[object]) -> list[object]:
    return list(await asyncio.gather(*steps))


async def page(v: Visit) -> dict:
    """The page (a navigation, never cached), then its scripts and the tree's root and top level."""
    answer = await v.session.get(PAGE)
    v.tally.add(answer)
    found = ACTIVE_GROUP.search(answer.body) if answer.status == 200 else None
    if found is None:
        raise LoadFailed(f"{PAGE}: {answer.status}, no WEBCLIENT.active_group_id in {answer.body[:80]!r}")
    v.gid = int(found.group(1))

    async def tree() -> dict:
        await v.ajax(f"/webclient/api/experimenters/-1/?page=1&group={v.gid}")
        return await v.json(f"/webclient/api/containers/?id=-1&experimenter_id=-1&page=0&group={v.gid}")
    return (await _both(v.ajax_many(["/webgateway/getImgRDef/", "/webgateway/open_with/"]), tree()))[1]


async def screen(v: Visit, sid: int) -> dict:
    plates, _ = await _both(v.json(f"/webclient/api/plates/?id={sid}&page=0&group={v.gid}"),
                            v.ajax_many(v.panels("screen", sid)))
    return plates


async def plate(v: Visit, plate_doc: dict) -> dict:
    """The plate's runs (if any) and panels, beside the centre panel's page whose script loads the grid."""
    pid = plate_doc["id"]
    side = v.panels("plate", pid)
    if plate_doc.get("childCount"):
        side.insert(0, f"/webclient/api/plate_acquisitions/?id={pid}&page=0&group={v.gid}")

    async def centre() -> dict:
        await v.ajax(f"/webclient/load_plate/plate/{pid}/?index=0")
        grid = await plate_view(v.session, v.jq, v.tally, pid, 0, v.batch)
        if grid is None:
            raise LoadFailed(f"plate {pid}: the grid was not a 200")
        v.batches([cell["id"] for row in grid["grid"] for cell in row if cell])
        return grid
    return (await _both(v.ajax_many(side), centre()))[1]


async def well(v: Visit, wid: int) -> None:
    async def children() -> None:
        images = await v.json(f"/webgateway/well/{wid}/children/")
        await v.thumbnails([image["id"] for image in images])
    await _both(v.ajax_many(v.panels("well", wid, "?index=0")), children())


async def image(v: Visit, iid: int) -> None:
    await v.ajax_many(v.panels("image", iid))


async def tabs(v: Visit, iid: int) -> None:
    for tab in TABS:
        await v.ajax(f"/webclient/metadata_{tab}/image/{iid}/")


async def project(v: Visit, prj: int) -> dict:
    datasets, _ = await _both(v.json(f"/webclient/api/datasets/?id={prj}&page=0&group={v.gid}"),
                              v.ajax_many(v.panels("project", prj)))
    return datasets


async def dataset(v: Visit, ds: int) -> dict:
    async def icons() -> dict:
        doc = await v.json(f"/webclient/api/images/?id={ds}&page=1&sizeXYZ=true&date=true&group={v.gid}")
        await v.thumbnails([img["id"] for img in doc["images"]])
        return doc
    return (await _both(icons(), v.ajax_many(v.panels("dataset", ds))))[0]


def _first(doc: dict | list, key: str, what: str) -> dict:
    items = doc.get(key) if isinstance(doc, dict) else None
    if not items:
        raise LoadFailed(f"nothing to click: {what} lists no {key}")
    return items[0]


async def visit(session: Session, batch: int, in_progress: frozenset[int]) -> Visit:
    """One visitor's browsing, click after click."""
    v = Visit(session, batch, in_progress)
    async with v.click("page"):
        top = await page(v)
    async with v.click("screen"):
        plates = await screen(v, v.pick("screen", _first(top, "screens", "api/containers")["id"]))
    async with v.click("plate"):
        plate_doc = _first(plates, "plates", "api/plates")
        v.pick("plate", plate_doc["id"])
        grid = await plate(v, plate_doc)
    cell = next((c for row in grid["grid"] for c in row if c), None)
    if cell is None:
        raise LoadFailed(f"plate {plate_doc['id']}: an empty grid")
    async with v.click("well"):
        await well(v, v.pick("well", cell["wellId"]))
    async with v.click("image"):
        await image(v, v.pick("image", cell["id"]))
    async with v.click("tabs"):
        await tabs(v, cell["id"])
    async with v.click("project"):
        datasets = await project(v, v.pick("project", _first(top, "projects", "api/containers")["id"]))
    async with v.click("dataset"):
        images = await dataset(v, v.pick("dataset", _first(datasets, "datasets", "api/datasets")["id"]))
    iid = v.pick("ds-image", _first(images, "images", "api/images")["id"])
    async with v.click("ds-image"):
        await image(v, iid)
    async with v.click("ds-tabs"):
        await tabs(v, iid)
    return v


def recache_urls(picked: dict[str, int]) -> list[str]:
    """What idr-utils recache.py requests for the visited objects: map annotations, without `_`."""
    return [f"/webclient/api/annotations/?type=map&parents=true&{kind.removeprefix('ds-')}={picked[kind]}"
            for kind in ANNOTATED]


class BrowseScenario:
    name = "browse"
    modes = MODES

    def __init__(self, stack: Stack, meter: Meter) -> None:
        self.stack, self.meter = stack, meter
        self.batch = batch_size(stack.sim.info)
        self.in_progress = frozenset(stack.sim.info.get("in_progress_fixed") or ())
        self.picked: dict[str, int] = {}
        self.placeholders = 0
        self.primer = Primer(meter, self.load)

    def describe(self) -> dict:
        return {"clicks": list(CLICKS), "picked": self.picked, "batch": self.batch, "never_cached": list(NEVER_CACHED),
                "placeholder_batches": self.placeholders}

    async def load(self, session: Session, mode: str) -> Tally:
        v = await visit(session, self.batch, self.in_progress)
        if self.picked and v.picked != self.picked:
            raise LoadFailed(f"visits clicked different objects: {self.picked} then {v.picked}")
        self.picked, self.placeholders = v.picked, v.placeholders
        return v.tally

    def path(self, transport: Transport) -> dict[str, int]:
        """The objects a visit clicks; learnt from one visit to the backend direct if none ran yet."""
        if not self.picked:
            self.meter.once(self.load, "webclient", self.stack.target("direct"), Transport.H1, proxied=False)
        return self.picked

    def prime(self, target: Target, mode: str, transport: Transport) -> str:
        """Fill a warm target once; returns how (for the report)."""
        if isinstance(target, Edge):
            if self.primer.first(target, "warmer"):
                picked = self.path(transport)
                run_warm(self.stack, target, ["screen", str(picked["screen"]), "--wells", "--image-panels",
                                              "--image-tabs"])
                run_warm(self.stack, target, ["project", str(picked["project"]), "--image-panels", "--image-tabs"])
            if transport is Transport.H2_TLS:
                self.primer.load_once(target, mode, transport, "tls")
            return ("`warm screen <sid> --wells --image-panels --image-tabs` and `warm project <pid> --image-panels "
                    "--image-tabs` through the edge's warm mode (plain server); the TLS server shares its disk tier "
                    "and one untimed visit through it brings the entries into its memory tier")
        if isinstance(target, NginxCache) and target.name == RECACHE:
            urls = recache_urls(self.path(transport))

            async def fetch(session: Session, _mode: str) -> Tally:
                tally = Tally()
                for answer in await session.get_many(urls):
                    tally.add(answer)
                return tally
            def refill() -> None:
                self.meter.once(fetch, mode, target, Transport.H1, proxied=False)
            target.refill = refill
            return ("as IDR's idr-utils recache.py warms, on an empty cache before every visit (a visit's own entries "
                    "would otherwise warm it): GET /webclient/api/annotations/?type=map&parents=true&<type>=<id> of "
                    "every visited object, without `_`; IDR's key keeps the `&` before a browser's `_=`, so these "
                    "entries are never hit")
        self.primer.load_once(target, mode, transport, mode)
        return ("one identical visit before timing (its own `_` and JSONP callbacks): IDR's key drops `_=<n>`, so "
                "a previous visitor's JSON and panels hit, its JSONP batches never do")


    def annotate(self, records: list[Record]) -> None:
        """Split each record's backend requests: the never-cached page requests, the thumbnail batches holding
        a "loading" placeholder (an image whose pyramid is being generated: the edge never stores it), and
        the cacheable rest."""
        for r in records:
            by = r.extra.get("backend_by_endpoint", {})
            never = sum(n for name, n in by.items() if name in NEVER_CACHED)
            batches = by.get("get_thumbnails", 0) + by.get("webclient:get_thumbnails", 0)
            placeholders = min(self.placeholders, batches)
            r.extra.update(backend_never_cached=never, backend_placeholders=placeholders,
                           backend_cacheable=r.backend_requests - never - placeholders)
