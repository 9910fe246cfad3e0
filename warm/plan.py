"""Object → the URLs a real client requests for it (omero-web-api.md §1, §2, §6).

- A plate: the grid `webgateway/plate/<pid>/<field>/` for every field, and `…/<field>/<acq>/` for every
  field of every plate acquisition (what the webclient loads per run); the images of each field in
  row-major order as `get_thumbnails/?id=…` batches of the site's `omero.web.thumbnails_batch` (50),
  like `ome.plateview.js`. The edge splits a batch into per-image entries that also answer
  `render_thumbnail/<id>/`, so an image already batched for an earlier field or a run's grid is not
  batched again. With `--wells`, the well panel's `webgateway/well/<wid>/children/` of every well with
  images (and `?run=<acq>` per run), as `plate.html:258-261` asks.
- A dataset or the orphaned images: batches too, in listing order. One batch costs the backend
  one `getThumbnailSet` (15 ms + 3 ms an id in the simulator) instead of 50 `render_thumbnail` calls
  (15 ms each), and fills exactly the entries `render_thumbnail/<id>/` (gallery, search) reads.
- API v0 listing pages with the client's page size (`limit`, default 200): the first page as a client
  asks for it, without limit/offset; later pages `?limit=L&offset=…`. A dataset's images also as
  iviewer's thumbnail slider pages them (`?offset=<10k>&limit=10`, thumbnail-slider.js:449-476); the
  site's projects and screens also as the IDR gallery asks (`?childCount=true`, first page only:
  idr_gallery model.js:270-271).
- `imgData/<id>/` and OMERO.iviewer's `iviewer/image_data/<id>/` per image on request (`--imgdata`).
- For `warm tiles`: the URLs the viewers derive from the image's imgData (see tiles.py).
- The webclient's browsing (`metadata`: the tree, plate pages, panels and map annotations of containers
  and wells; images' panels and tabs on request): see browse.py, which needs the viewer's active group.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

from edge.protocol import DEFAULT_THUMBNAILS_BATCH

from .browse import PAGE_SIZE, BrowsePlan, image_urls
from .model import (API, BROWSE, GRID, IMGDATA, IMGPANEL, IMGTAB, THUMB, TILE, TREE, WELL, ImageList, Item,
                    PlateLayout, Ref)
from .tiles import viewer_urls

DEFAULT_API_LIMIT = 200  # omero.web.api.limit
SLIDER_LIMIT = 10  # iviewer thumbnail-slider.js: thumbnails_request_size

# Site listings: ref id → (path, query). The orphaned-images listing belongs to the `orphans` ref.
LISTINGS = {
    "screens": ("/api/v0/m/screens/", ""),
    "projects": ("/api/v0/m/projects/", ""),
    "orphaned-datasets": ("/api/v0/m/datasets/", "orphaned=true"),
}
ORPHANED_IMAGES = ("/api/v0/m/images/", "orphaned=true")
# The IDR gallery's study listings (one request each, no paging): the site listings it belongs to.
GALLERY = {"screens": "/api/v0/m/screens/?childCount=true", "projects": "/api/v0/m/projects/?childCount=true"}


def api_pages(path: str, query: str, count: int, limit: int = DEFAULT_API_LIMIT) -> Iterator[str]:
    """Every page of a listing of `count` rows (one page even when empty: the client still asks)."""
    first = f"{path}?{query}" if query else path
    if limit != DEFAULT_API_LIMIT:
        first = f"{path}?{query + '&' if query else ''}limit={limit}"
    yield first
    for page in range(1, math.ceil(count / limit)):
        yield f"{path}?{query + '&' if query else ''}limit={limit}&offset={page * limit}"


def batches(ids: Iterable[int], obj: str, size: int = DEFAULT_THUMBNAILS_BATCH) -> Iterator[Item]:
    """`get_thumbnails` items of at most `size` ids (the site's omero.web.thumbnails_batch)."""
    chunk: list[int] = []
    for image_id in ids:
        chunk.append(image_id)
        if len(chunk) == size:
            yield _batch(chunk, obj)
            chunk = []
    if chunk:
        yield _batch(chunk, obj)


def _batch(ids: list[int], obj: str) -> Item:
    return Item("/webgateway/get_thumbnails/?" + "&".join(f"id={i}" for i in ids), THUMB, obj, tuple(ids))


def img_data(ids: Iterable[int], obj: str) -> Iterator[Item]:
    """Per-image metadata: webgateway's imgData (classic viewer, webclient) and iviewer's image_data."""
    for i in ids:
        yield Item(f"/webgateway/imgData/{i}/", IMGDATA, obj)
        yield Item(f"/iviewer/image_data/{i}/", IMGDATA, obj)


def slider_pages(dataset: int, count: int, limit: int = SLIDER_LIMIT) -> Iterator[str]:
    """iviewer's thumbnail slider pages of a dataset's images (offset first, as it writes them)."""
    for offset in range(0, max(count, 1), limit):
        yield f"/api/v0/m/datasets/{dataset}/images/?offset={offset}&limit={limit}"


class Planner:
    """Turns refs (and their fetched details) into items of the requested kinds."""

    def __init__(self, kinds: frozenset[str], api_limit: int = DEFAULT_API_LIMIT,
                 levels: tuple[int | None, list[int]] = (2, []), thumbnails_batch: int = DEFAULT_THUMBNAILS_BATCH,
                 viewers: tuple[str, ...] = ("iviewer",), page_size: int = PAGE_SIZE) -> None:
        self.kinds = kinds
        self.api_limit = api_limit
        self.levels = levels
        self.thumbnails_batch = thumbnails_batch
        self.viewers = viewers
        self.page_size = page_size
        self.browse: BrowsePlan | None = None  # set by `group` once the webclient's active group is known

    @property
    def browsing(self) -> bool:
        """Whether the webclient's browsing URLs are planned (they need `group` first)."""
        return bool(self.kinds & BROWSE)

    def group(self, gid: int) -> None:
        """The viewer's active group, which every tree listing carries as `group=`."""
        self.browse = BrowsePlan(gid, self.kinds, self.page_size)

    def needs_children(self, ref: Ref) -> bool:
        """Whether planning `ref` needs its wells/images/imgData fetched (listings and containers of containers don't)."""
        per_image = {THUMB, IMGDATA, API, IMGPANEL, IMGTAB}
        if ref.kind == "tiles":
            return True
        if ref.kind == "plate":
            return bool(self.kinds & (per_image | BROWSE | {GRID, WELL}))
        if ref.kind == "dataset":
            return bool(self.kinds & (per_image | {TREE}))  # the tree pages a dataset's images
        return ref.kind == "orphans" and bool(self.kinds & per_image)

    def _pages(self, path: str, query: str, count: int, obj: str) -> Iterator[Item]:
        if API in self.kinds:
            for url in api_pages(path, query, count, self.api_limit):
                yield Item(url, API, obj)

    def plan(self, ref: Ref, detail: PlateLayout | ImageList | dict | None = None) -> Iterator[Item]:
        obj = ref.name
        browse = self.browse
        assert browse is not None or not self.browsing, "Planner.group() first"
        if ref.kind == "webclient":
            if browse is not None:
                yield from browse.page(obj)
        elif ref.kind == "listing":
            path, query = LISTINGS[str(ref.id)]
            yield from self._pages(path, query, ref.count, obj)
            if API in self.kinds and str(ref.id) in GALLERY:
                yield Item(GALLERY[str(ref.id)], API, obj)
        elif ref.kind == "screen":
            yield from self._pages(f"/api/v0/m/screens/{ref.id}/plates/", "", ref.count, obj)
            if browse is not None:
                yield from browse.screen(int(ref.id), obj)
        elif ref.kind == "project":
            yield from self._pages(f"/api/v0/m/projects/{ref.id}/datasets/", "", ref.count, obj)
            if browse is not None:
                yield from browse.project(int(ref.id), obj)
        elif ref.kind == "plate":
            assert isinstance(detail, PlateLayout)
            yield from self.plate(ref, detail)
        elif ref.kind in ("dataset", "orphans"):
            assert isinstance(detail, ImageList)
            path, query = ORPHANED_IMAGES if ref.kind == "orphans" else (f"/api/v0/m/datasets/{ref.id}/images/", "")
            yield from self._pages(path, query, detail.total, obj)
            if ref.kind == "dataset" and API in self.kinds:
                yield from (Item(url, API, obj) for url in slider_pages(int(ref.id), detail.total))
            if ref.kind == "dataset" and browse is not None:
                yield from browse.dataset(int(ref.id), detail.total, obj)
            yield from self.images(detail.ids, obj)
        elif ref.kind == "images":
            yield from self.images(ref.ids, obj)
        elif ref.kind == "tiles":
            assert isinstance(detail, dict)
            if IMGDATA in self.kinds:
                yield from img_data([int(ref.id)], obj)
            for url in viewer_urls(int(ref.id), detail, self.levels, self.viewers):
                yield Item(url, TILE, obj)

    def images(self, ids: list[int] | tuple[int, ...], obj: str) -> Iterator[Item]:
        if THUMB in self.kinds:
            yield from batches(ids, obj, self.thumbnails_batch)
        if IMGDATA in self.kinds:
            yield from img_data(ids, obj)
        if self.kinds & {IMGPANEL, IMGTAB}:
            yield from image_urls(ids, self.kinds, obj)

    def plate(self, ref: Ref, layout: PlateLayout) -> Iterator[Item]:
        obj, pid = ref.name, ref.id
        yield from self._pages(f"/api/v0/m/plates/{pid}/wells/", "", layout.wells, obj)
        yield from self._pages(f"/api/v0/m/plates/{pid}/plateacquisitions/", "", len(layout.acquisitions), obj)
        if self.browse is not None:
            yield from self.browse.plate(int(pid), layout, obj)
        if GRID in self.kinds:
            for acq, f in layout.views():
                yield Item(f"/webgateway/plate/{pid}/{f}/" + ("" if acq is None else f"{acq}/"), GRID, obj)
        if WELL in self.kinds:
            for suffix in ["", *(f"?run={acq}" for acq, _ in layout.acquisitions)]:
                for wid in layout.well_ids:
                    yield Item(f"/webgateway/well/{wid}/children/{suffix}", WELL, obj)
        seen: set[int] = set()
        for ids in layout.fields:
            fresh = [i for i in ids if i not in seen]
            seen.update(fresh)
            yield from self.images(fresh, obj)
