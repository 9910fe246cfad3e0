"""`/webclient/api/…`: the JSON the webclient's tree (ome.tree.js) loads, as tree.py marshals it.

Each list runs in the group context of `?group=` (-1: every group of the viewer; wc/views.py:687 answers
403 for a group the viewer is not a member of), sees only what the viewer may read, is ordered by
`lower(name), id` (acquisitions by id) and is paged by `page` (1-based, 0 = all) and `limit`
(default omero.web.page_size 200). Fields and their order are tree.py's `_marshal_*`.
"""
from __future__ import annotations

import re
from typing import Iterable, Iterator

from starlette.responses import Response

from bench.sim.catalog import Dataset, Image, Owned, Plate, name_key
from bench.sim.http import Ctx, Endpoint, error, json_response
from bench.sim.permissions import perms
from bench.sim.webparams import PAGE, get_bool, marshal_date, page_of, tree_params

WC = "/webclient"
FILESET_BASE = 3_000_000          # fileset id = base + plate id (one per plate) or + image id (one per image)
ORPHANS_NAME = "Orphaned Images"  # server_settings ui.tree.orphans.name default (wc/views.py:738-741)
EVERYONE = "All members"          # fake_experimenter default label (wc/views.py:390-407)
_LONG = re.compile(r"^-?\d+$")


def _perms_css(ctx: Ctx, obj: Owned | Image) -> str:
    return perms(ctx.catalog, ctx.user, obj.owner_id, obj.group_id).css()


def _check_group(ctx: Ctx, group_id: int) -> None:
    """conn.isValidGroup (webclient_gateway.py:135-137): -1 or a group the viewer is a member of."""
    if group_id != -1 and group_id not in ctx.user.groups:
        raise error(403, f"Not a member of Group: {group_id}", "text/html; charset=utf-8")


def _visible(ctx: Ctx, obj: Owned | Image, group_id: int | None, owner: int | None = -1) -> bool:
    """In the query's group context (`setOmeroGroup(group_id)`), readable, and owned by `owner` unless -1."""
    return (ctx.catalog.can_read(ctx.user, obj) and (group_id in (None, -1) or obj.group_id == group_id)
            and (owner in (None, -1) or obj.owner_id == owner))


def _sorted(objs: Iterable[Owned]) -> list:
    return sorted(objs, key=name_key)


def _container(ctx: Ctx, obj: Owned, child_count: int) -> dict:
    """_marshal_project / _dataset / _screen / _plate (tree.py:292-313, 845-867, 932-954)."""
    return {"id": obj.id, "name": obj.name, "ownerId": obj.owner_id, "childCount": child_count,
            "permsCss": _perms_css(ctx, obj)}


def fileset_id(image: Image) -> int:
    return FILESET_BASE + (image.plate_id if image.plate_id is not None else image.id)


def image_json(ctx: Ctx, image: Image, sizes: bool, dates: bool, thumb_version: bool) -> dict:
    """_marshal_image_map (tree.py:568-620): dates are the import (creation event) and acquisition times."""
    rv: dict = {"id": image.id, "archived": False, "name": image.name, "ownerId": image.owner_id,
                "permsCss": _perms_css(ctx, image), "filesetId": fileset_id(image)}
    if sizes:
        px = image.pixels
        rv.update(sizeX=px.size_x, sizeY=px.size_y, sizeZ=px.size_z, sizeT=px.size_t)
    if dates:
        rv.update(date=marshal_date(image.created + 86400), acqDate=marshal_date(image.created))
    if thumb_version and image.owner_id == ctx.user.id:   # only thumbnails the viewer owns (tree.py:813-834)
        rv["thumbVersion"] = 1
    return rv


# ---- the listings ---------------------------------------------------------------------------------
def _projects(ctx: Ctx, group: int, owner: int) -> list:
    return [(p, len(p.dataset_ids)) for p in _sorted(ctx.catalog.projects.values()) if _visible(ctx, p, group, owner)]


def _datasets(ctx: Ctx, group: int, owner: int, project: int | None = None, orphaned: bool = False) -> list:
    def wanted(d: Dataset) -> bool:
        if d.orphan or not _visible(ctx, d, group, owner):
            return False
        if project:
            return d.project_id == project
        return d.project_id is None if orphaned else True
    return [(d, ctx.catalog.image_count(d)) for d in _sorted(ctx.catalog.datasets.values()) if wanted(d)]


def _screens(ctx: Ctx, group: int, owner: int) -> list:
    return [(s, len(s.plate_ids)) for s in _sorted(ctx.catalog.screens.values()) if _visible(ctx, s, group, owner)]


def _plates(ctx: Ctx, group: int, owner: int, screen: int | None = None, orphaned: bool = False) -> list:
    def wanted(p: Plate) -> bool:
        if not _visible(ctx, p, group, owner):
            return False
        if screen is not None:
            return p.screen_id == screen
        return p.screen_id is None if orphaned else True
    return [(p, len(p.acquisitions)) for p in _sorted(ctx.catalog.plates.values()) if wanted(p)]


def _orphan_images(ctx: Ctx, group: int, owner: int) -> list[Image]:
    """Images in no dataset and no well (tree.py:744-760), in name order."""
    return sorted((img for img in ctx.catalog.orphan_images() if _visible(ctx, img, group, owner)), key=name_key)


def _images(ctx: Ctx, group: int, owner: int, dataset: int | None, orphaned: bool) -> Iterator[Image] | list[Image]:
    cat = ctx.catalog
    if dataset is not None:
        ds = cat.datasets.get(dataset) if dataset > 0 else None
        if ds is None or ds.orphan or not _visible(ctx, ds, group):
            return []
        return (img for img in cat.images_of(ds) if owner == -1 or img.owner_id == owner)
    if orphaned:
        return _orphan_images(ctx, group, owner)
    return (img for block in cat.blocks_by_name if cat.changes or _visible(ctx, block, group)
            for img in cat.images_of(block) if (owner == -1 or img.owner_id == owner)
            and (not cat.changes or _visible(ctx, img, group)))


def _paged(pairs: list, page: int | None, limit: int, ctx: Ctx) -> list[dict]:
    return [_container(ctx, obj, n) for obj, n in page_of(pairs, page, limit)]


# ---- views ------------------------------------------------------------------------------------------
async def experimenter(ctx: Ctx) -> Response:
    """api_experimenter_detail (wc/views.py:642-668): -1 is the fake "All members"; others only if they
    share a group with the viewer (tree.py:247-289)."""
    raw = ctx.request.path_params["eid"]
    if not _LONG.match(raw):
        raise error(404, "Not Found", "text/html")
    eid = int(raw)
    async with ctx.work("tree_object"):
        if eid < 0:
            return json_response({"experimenter": {"id": -1, "omeName": EVERYONE, "firstName": EVERYONE,
                                                   "lastName": ""}})
        user = ctx.catalog.users.get(eid)
        if user is None or not set(user.groups) & set(ctx.user.groups):
            raise error(404, f"No Experimenter found with ID {eid}", "text/html")
        return json_response({"experimenter": {"id": user.id, "omeName": user.name, "firstName": user.first,
                                               "lastName": user.last}})


async def containers(ctx: Ctx) -> Response:
    """api_container_list (wc/views.py:671-757): `id` is the experimenter; each kind is paged on its own."""
    p = tree_params(ctx, page=1, limit=PAGE, group=-1, id=-1)
    _check_group(ctx, p["group"])
    group, owner, page, limit = p["group"], p["id"], p["page"], p["limit"]
    async with ctx.work("tree_list"):
        orphans = _orphan_images(ctx, group, owner)
        return json_response({
            "projects": _paged(_projects(ctx, group, owner), page, limit, ctx),
            "datasets": _paged(_datasets(ctx, group, owner, orphaned=True), page, limit, ctx),
            "screens": _paged(_screens(ctx, group, owner), page, limit, ctx),
            "plates": _paged(_plates(ctx, group, owner, orphaned=True), page, limit, ctx),
            "orphaned": {"id": owner or -1, "childCount": len(orphans), "name": ORPHANS_NAME},
        })


async def datasets(ctx: Ctx) -> Response:
    """api_dataset_list (wc/views.py:760-786): `id` is the project (none or 0: every dataset)."""
    p = tree_params(ctx, page=1, limit=PAGE, group=-1, id=None)
    _check_group(ctx, p["group"])
    async with ctx.work("tree_list"):
        return json_response({"datasets": _paged(_datasets(ctx, p["group"], -1, project=p["id"]),
                                                 p["page"], p["limit"], ctx)})


async def plates(ctx: Ctx) -> Response:
    """api_plate_list (wc/views.py:848-874): `id` is the screen."""
    p = tree_params(ctx, page=1, limit=PAGE, group=-1, id=None)
    _check_group(ctx, p["group"])
    async with ctx.work("tree_list"):
        return json_response({"plates": _paged(_plates(ctx, p["group"], -1, screen=p["id"]),
                                               p["page"], p["limit"], ctx)})


async def plate_acquisitions(ctx: Ctx) -> Response:
    """api_plate_acquisition_list (wc/views.py:877-904): no group check, group -1 (tree.py:1107)."""
    p = tree_params(ctx, page=1, limit=PAGE, id=None)
    if p["id"] is None:
        raise error(400, "id (plate) must be specified", "text/html; charset=utf-8")
    async with ctx.work("tree_list"):
        plate = ctx.catalog.plates.get(p["id"])
        acqs = list(plate.acquisitions) if plate is not None and ctx.catalog.can_read(ctx.user, plate) else []
        return json_response({"acquisitions": [
            {"id": a.id, "name": a.name, "ownerId": a.owner_id, "permsCss": _perms_css(ctx, a)}
            for a in page_of(acqs, p["page"], p["limit"])]})


async def images(ctx: Ctx) -> Response:
    """api_image_list (wc/views.py:789-845): `id` is the dataset, else `orphaned`; `sizeXYZ`, `date`,
    `thumbVersion` add fields; `experimenter_id` filters the owner."""
    p = tree_params(ctx, page=1, limit=PAGE, group=-1, id=None, experimenter_id=-1)
    sizes, dates, versions = get_bool(ctx, "sizeXYZ"), get_bool(ctx, "date"), get_bool(ctx, "thumbVersion")
    orphaned = get_bool(ctx, "orphaned")
    _check_group(ctx, p["group"])
    async with ctx.work("tree_list"):
        found = _images(ctx, p["group"], p["experimenter_id"], p["id"], orphaned)
        return json_response({"images": [image_json(ctx, img, sizes, dates, versions)
                                         for img in page_of(found, p["page"], p["limit"])]})


ENDPOINTS = [
    Endpoint("webclient:api_experimenter", (f"{WC}/api/experimenters/{{eid}}/",), experimenter),
    Endpoint("webclient:api_containers", (f"{WC}/api/containers/",), containers),
    Endpoint("webclient:api_datasets", (f"{WC}/api/datasets/",), datasets),
    Endpoint("webclient:api_images", (f"{WC}/api/images/",), images),
    Endpoint("webclient:api_plates", (f"{WC}/api/plates/",), plates),
    Endpoint("webclient:api_plate_acquisitions", (f"{WC}/api/plate_acquisitions/",), plate_acquisitions),
]
