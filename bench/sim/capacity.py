"""The backend's capacity: N workers (others queue, like a WSGI pool) and a cost per kind of work.

Work runs inside a worker slot and the slot is held until the endpoint's cost (scaled by
`--speed`) has elapsed, counting the real CPU time spent; speed 0 adds no latency.
"""
from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator

COSTS_MS = {
    "thumbnail_cached": 15.0,   # default size: OMERO.server's on-disk thumbnail
    "thumbnail": 60.0,          # any other size or plane: rendered ("direct")
    "batch": 15.0,              # get_thumbnails, plus batch_per_id for each id
    "batch_per_id": 3.0,
    "region": 80.0,
    "image": 120.0,
    "imgdata": 20.0,
    "grid": 50.0,
    "histogram": 20.0,
    "shape_mask": 10.0,
    "children": 20.0,           # well/dataset children: a list of images
    "container": 5.0,           # wellData, project/dataset detail and lists
    "api_page": 30.0,
    "api_object": 5.0,
    "save_rdef": 20.0,
    "login": 10.0,
    # the webclient's browsing (real servers: the panels run many queries and a template)
    "page": 50.0,               # /webclient/ and its sibling pages
    "tree_list": 30.0,          # api/containers, plates, plate_acquisitions, datasets, images
    "tree_object": 20.0,        # api/experimenters/<id>/
    "annotations": 30.0,        # api/annotations, webgateway annotations
    "table": 40.0,              # webgateway table query
    "metadata_details": 150.0,
    "metadata_acquisition": 80.0,
    "metadata_preview": 60.0,
    "metadata_hierarchy": 40.0,
    "load_plate": 100.0,
}


class Pool:
    def __init__(self, workers: int, speed: float) -> None:
        self.speed = speed
        self._slots = asyncio.Semaphore(workers)

    @asynccontextmanager
    async def work(self, cost_ms: float) -> AsyncIterator[None]:
        async with self._slots:
            start = time.monotonic()
            yield
            remaining = cost_ms * self.speed / 1000 - (time.monotonic() - start)
            if remaining > 0:
                await asyncio.sleep(remaining)
