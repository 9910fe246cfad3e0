"""The webclient's browsing URLs (docs/browse.md, clients.md §10): what a visitor's clicks request.

IDR's "metadata" is what the webclient loads when someone clicks through the tree: the tree's own
listings, the plate page, each object's right-hand panel and its map annotations. Warming exactly
these URLs (same path, same parameters in the webclient's order; the edge's key drops jQuery's `_=`)
makes a visitor's first click a hit. Sources, ome/omero-web at the mirrored HEAD:

- tree listings: `ome.tree.js:442-561` builds the query in this order: `id` (the parent, :469),
  `experimenter_id` (experimenter and orphaned nodes only, :490), `page` (0 for the
  `pagination_nodes` experimenter/screen/plate/acquisition/project, base_container.html:211; else the
  node's page, 1 first, jquery.jstree.pagination_plugin.js:24-31, :506), `sizeXYZ`/`date` (datasets,
  :516-517), `group` = `WEBCLIENT.active_group_id` (:521). The root asks `api_experimenter` (:551,
  base_container.html:207, `ome.active_user` = -1 at IDR); a dataset's images come `omero.web.page_size`
  (200, settings.py:969-977; views.py:801-802 `limit` default PAGE) at a time.
- `/webgateway/open_with/`: base_container.html:227 (`$.getJSON` on every page).
- the plate page: center_plugin.thumbs.js.html:1006-1016, `load_plate/<plate|acquisition>/<id>/?index=<field>`
  (a run's fields are 0-based, views.py:1472-1488).
- right-hand panel: right_plugin.general.js.html:118-130, `metadata_details/<type>/<id>/`; a well's
  `?index=` is the plate page's field (`{{ index }}` in plate.html:161, 0 unless another field is shown).
- map annotations: ome.right_panel_mapanns_pane.js:107-121, `{"type": "map", "parents": "true",
  <type>: [id]}` (jQuery keeps the object's order; IDR's mapr opens this pane on every selection).
- an image's other panes, on opening them: the acquisition and preview tabs
  (right_plugin.acquisition.js.html:31-33, right_plugin.preview.js.html:51-53) and the hierarchy button of
  its panel (metadata_general.html:186, `$panel_div.load`), `metadata_<tab>/image/<id>/`.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterator

from .model import ANNOTS, CENTER, DETAILS, IMGPANEL, IMGTAB, TREE, WELLPANEL, Item, PlateLayout

WC = "/webclient"
UID = -1  # the experimenter the tree shows: every one, as IDR's /webclient/?experimenter=-1
PAGE_SIZE = 200  # omero.web.page_size: images per page of a dataset in the tree
PAGE_URL = f"{WC}/?experimenter={UID}"  # the page whose script names the active group
WELL_FIELD = 0  # the field a well click sends on a freshly opened plate
IMAGE_TABS = ("acquisition", "preview", "hierarchy")
_ACTIVE_GROUP = re.compile(r"WEBCLIENT\.active_group_id\s*=\s*(-?[0-9]+)\s*;")


class NoGroup(Exception):
    """The webclient page did not name its active group (the tree's `group=` cannot be known)."""


def active_group(html: str) -> int:
    """`WEBCLIENT.active_group_id = <gid>;` of the webclient page (base_container.html:166)."""
    found = _ACTIVE_GROUP.search(html)
    if found is None:
        raise NoGroup(f"GET {PAGE_URL} has no `WEBCLIENT.active_group_id = <gid>;`: is this OMERO.web's webclient, "
                      "and does the public user reach it?")
    return int(found.group(1))


def details(ctype: str, oid: int, query: str = "") -> str:
    return f"{WC}/metadata_details/{ctype}/{oid}/{query}"


def annotations(ctype: str, oid: int) -> str:
    return f"{WC}/api/annotations/?type=map&parents=true&{ctype}={oid}"


class BrowsePlan:
    """The webclient's URLs per object for one active group; `kinds` says which of them to plan."""

    def __init__(self, gid: int, kinds: frozenset[str], page_size: int = PAGE_SIZE) -> None:
        self.gid, self.kinds, self.page_size = gid, kinds, page_size

    def _tree(self, listing: str, query: str) -> str:
        return f"{WC}/api/{listing}/?{query}&group={self.gid}"

    def _panel(self, ctype: str, oid: int, obj: str) -> Iterator[Item]:
        """A container's click: its right-hand panel, then its map annotations."""
        if DETAILS in self.kinds:
            yield Item(details(ctype, oid), DETAILS, obj)
        if ANNOTS in self.kinds:
            yield Item(annotations(ctype, oid), ANNOTS, obj)

    def page(self, obj: str) -> Iterator[Item]:
        """Once per run: what every webclient page load asks for besides the page itself."""
        if TREE in self.kinds:
            yield Item("/webgateway/open_with/", TREE, obj)
            yield Item(f"{WC}/api/experimenters/{UID}/?page=1&group={self.gid}", TREE, obj)
            yield Item(self._tree("containers", f"id={UID}&experimenter_id={UID}&page=0"), TREE, obj)

    def screen(self, sid: int, obj: str) -> Iterator[Item]:
        if TREE in self.kinds:
            yield Item(self._tree("plates", f"id={sid}&page=0"), TREE, obj)
        yield from self._panel("screen", sid, obj)

    def project(self, pid: int, obj: str) -> Iterator[Item]:
        if TREE in self.kinds:
            yield Item(self._tree("datasets", f"id={pid}&page=0"), TREE, obj)
        yield from self._panel("project", pid, obj)

    def dataset(self, did: int, count: int, obj: str) -> Iterator[Item]:
        """Every page of the dataset's images in the tree (one even when empty), its panel, its annotations."""
        if TREE in self.kinds:
            for page in range(1, max(1, math.ceil(count / self.page_size)) + 1):
                yield Item(self._tree("images", f"id={did}&page={page}&sizeXYZ=true&date=true"), TREE, obj)
        yield from self._panel("dataset", did, obj)

    def plate(self, pid: int, layout: PlateLayout, obj: str) -> Iterator[Item]:
        """The plate's runs (only a plate with runs has children in the tree), the plate page of every
        field and of every run's fields, the panel and annotations; then each well's click."""
        if TREE in self.kinds and layout.acquisitions:
            yield Item(self._tree("plate_acquisitions", f"id={pid}&page=0"), TREE, obj)
        if CENTER in self.kinds:
            for acq, f in layout.views():
                target = f"plate/{pid}" if acq is None else f"acquisition/{acq}"
                yield Item(f"{WC}/load_plate/{target}/?index={f}", CENTER, obj)
        yield from self._panel("plate", pid, obj)
        if WELLPANEL in self.kinds:
            for wid in layout.well_ids:
                yield Item(details("well", wid, f"?index={WELL_FIELD}"), WELLPANEL, obj)
                yield Item(annotations("well", wid), WELLPANEL, obj)


def image_urls(ids: list[int] | tuple[int, ...], kinds: frozenset[str], obj: str) -> Iterator[Item]:
    """An image's click (panel and annotations, `--image-panels`) and its three tabs (`--image-tabs`)."""
    for iid in ids:
        if IMGPANEL in kinds:
            yield Item(details("image", iid), IMGPANEL, obj)
            yield Item(annotations("image", iid), IMGPANEL, obj)
        if IMGTAB in kinds:
            for tab in IMAGE_TABS:
                yield Item(f"{WC}/metadata_{tab}/image/{iid}/", IMGTAB, obj)
