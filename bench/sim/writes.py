"""OMERO.web's writes (besides saveImgRDef, webgateway.py): pasting and resetting rendering settings,
renaming channels, moving, giving away and deleting data, with the answers and effects OMERO has.

Every one is a Django POST behind CsrfViewMiddleware (`Ctx.post`); the form's arrays are jQuery's
`traditional` ones (toids=1&toids=2), chgrp/chown's ids comma-separated (Image=1,2). OMERO runs chgrp,
chown and delete as jobs after answering; the sim runs them as the answer is made, or `job_delay`
seconds later (SimConfig).
"""
from __future__ import annotations

import asyncio
import uuid
from typing import Callable

from starlette.datastructures import ImmutableMultiDict
from starlette.responses import Response

from bench.sim import moves
from bench.sim.catalog import Catalog, Image
from bench.sim.http import AUTH_WEB, Ctx, Endpoint, error, json_response
from bench.sim.jsonp import JSONP_WEB, ViewError, py_int
from bench.sim.panels import not_found
from bench.sim.permissions import perms
from bench.sim.rendering import RDef

GW, WC = "/webgateway", "/webclient"
TITLES = {"Image": "image", "Dataset": "dataset", "Plate": "plate", "PlateAcquisition": "acquisition",
          "Project": "project", "Screen": "screen"}                  # RenderingSettingsI's types
MOVED = ("Project", "Dataset", "Image", "Screen", "Plate")           # chgrp / chown dtypes (wc/views.py:4722)
DELETED = {"image": "image", "dataset": "dataset", "project": "project", "screen": "screen",   # deletemany
           "plate": "plate", "well": "well", "acquisition": "acquisition"}                     # (:3155-3163)
DELETE_ITEM = ("image", "dataset", "project", "screen", "plate")    # deleteItem's types (container.py:973-1005)
BASE_TYPES = ("dataset", "project", "image", "screen", "plate", "acquisition", "well", "comment", "file", "tag",
              "tagset")                                              # manage_action_containers (:2900-2912)


def server_error() -> Exception:
    """An exception in a plain Django view: the HTML 500."""
    return error(500, "<h1>Server Error (500)</h1>", "text/html")


def may_render(ctx: Ctx, image: Image | None) -> bool:
    """Who may save rendering settings on an image: anyone who reads it but the public user (as saveImgRDef)."""
    return image is not None and not ctx.ident.public and ctx.catalog.can_read(ctx.user, image)


def run_job(ctx: Ctx, job: Callable[[], object]) -> None:
    """A chgrp/chown/delete job: now, or after SimConfig.job_delay (OMERO answers before the job is done)."""
    delay = ctx.sim.config.job_delay
    if delay > 0:
        asyncio.get_running_loop().call_later(delay, job)
    else:
        job()


def job_id() -> str:
    """str(handle) of a submitted request (an Ice proxy)."""
    return f"{uuid.uuid4()}/IHandle{uuid.uuid4()} -t -e 1.1:tcp -h 127.0.0.1 -p 4064"


def to_boolean(value: str | None) -> bool:
    """omero.gateway.utils.toBoolean."""
    return str(value).lower() in ("true", "yes", "on", "1")


# ---- rendering settings ------------------------------------------------------------------------
def apply_settings_to_set(ctx: Ctx, from_image: Image | None, kind: str, toids: list[int],
                          source: RDef | None = None) -> dict | bool:
    """conn.applySettingsToSet (omero-py gateway): the source image's settings (as the requester sees
    them) become the requester's on every image of the set in its group; `{"true": ids, "false": ids}`,
    the source itself left out; False when the requester may not annotate the source."""
    if from_image is None:
        raise ViewError("AttributeError", "'NoneType' object has no attribute 'getPixelsId'")
    if not may_render(ctx, from_image):
        return False
    cat, user = ctx.catalog, ctx.user
    source = source or ctx.sim.rdefs.for_user(from_image, user.id)
    if kind == "acquisition":      # the plates of the runs (omero-py: pa.listParents()[0])
        kind, toids = "plate", [a.plate_id for a in (cat.acquisitions.get(i) for i in toids) if a]
    done: dict[bool, list[int]] = {True: [], False: []}
    for ident in toids:
        obj = moves.readable(cat, user, kind, ident)
        if obj is None or obj.group_id != from_image.group_id:   # ctx.setOmeroGroup(fromimg's group)
            continue
        for image in moves.images_in(cat, kind, obj):
            done[ctx.sim.rdefs.paste(image, user.id, source)].append(image.id)
    if from_image.id in done[True]:
        done[True].remove(from_image.id)
    return {"true": done[True], "false": done[False]}


async def copy_img_rdef(ctx: Ctx) -> Response:
    """copy_image_rdef_json (gw/views.py:2352-2462): `fromid` alone goes to the session; a POST with `toids`
    pastes the session's (or the request's) image settings onto images or a dataset | plate | acquisition.
    An rdef in the request (`c`, with `imageId`) is saved on that image for the paste, then reverted unless
    the image is among the targets (:2436-2460). Keeping a request rdef in the session is not simulated."""
    form = await ctx.post()
    raw_from = ctx.q.get("fromid")
    toids, to_type = form.getlist("toids"), form.get("to_type", "image")
    kind = to_type if to_type in ("dataset", "plate", "acquisition") else "image"
    if raw_from is not None and not toids:
        if not raw_from.isdigit():
            return ctx.json(False)
        await ctx.sim.sessions.update(ctx.ident, fromid=int(raw_from))
        return ctx.json(True)

    def req(name: str) -> str | None:
        return ctx.q.get(name, form.get(name))

    params = {k: v for k in ("c", "maps", "m", "z", "t") if (v := req(k))}
    if "c" in params and (ctx.request.method == "GET" or req("store")):
        return ctx.json(True)
    if ctx.request.method != "POST":
        return Response(status_code=405, headers={"Allow": "POST"})
    fromid: object = raw_from if raw_from is not None else ctx.ident.extra.get("fromid")
    source, from_image = None, None
    if fromid is None and "c" in params and toids and (raw_image := req("imageId")):
        from_image = ctx.catalog.image(py_int(raw_image))
        if from_image is not None and ctx.catalog.can_read(ctx.user, from_image):
            source, fromid = ctx.sim.rdefs.compose(from_image, ctx.user.id, params), from_image.id
    try:
        from_id, ids = int(fromid), [int(x) for x in toids]
    except (TypeError, ValueError):
        return ctx.json(False)
    if not ids:
        return ctx.json(False)
    result = apply_settings_to_set(ctx, from_image or ctx.catalog.image(from_id), kind, ids, source)
    if source is not None and not (kind == "image" and from_id not in ids):   # not reverted
        ctx.sim.rdefs.paste(from_image, ctx.user.id, source)
    return ctx.json(result)


def _reset_view(to_owners: bool) -> Callable[[Ctx], object]:
    async def reset_rdef(ctx: Ctx) -> Response:
        """reset_rdef_json (gw/views.py:2259-2297): resetDefaultsInSet / resetDefaultsByOwnerInSet over
        `toids` of `to_type` in the first object's group; the images reset, as a list."""
        form = await ctx.post()
        toids = form.getlist("toids")
        to_type = form.get("to_type", "image").title()
        to_type = "PlateAcquisition" if to_type == "Acquisition" else to_type
        if not toids:
            raise ViewError("Http404", "Need to specify objects in request, E.g. ?totype=dataset&toids=1&toids=2")
        ids = [py_int(i) for i in toids]
        kind = TITLES.get(to_type)
        if kind is None:
            raise ViewError("ApiUsageException", f"Unknown type {to_type}")
        cat, user = ctx.catalog, ctx.user
        first = moves.readable(cat, user, kind, ids[0])
        changed: set[int] = set()
        for ident in ids:
            obj = moves.readable(cat, user, kind, ident)
            if obj is None or first is None or obj.group_id != first.group_id:
                continue
            for image in moves.images_in(cat, kind, obj):
                if may_render(ctx, image):
                    (ctx.sim.rdefs.to_owners if to_owners else ctx.sim.rdefs.reset)(image, user.id)
                    changed.add(image.id)
        return ctx.json(sorted(changed))
    return reset_rdef


# ---- channel names -----------------------------------------------------------------------------------
def set_channel_names(ctx: Ctx, ptype: str, pid: int, names: dict[int, str], channel_count: int | None = None
                      ) -> dict[str, int]:
    """conn.setChannelNames (omero-py gateway): an Image, a Dataset's or a Plate's images with at least the
    highest index (and `channel_count` channels, if given); saving another's channels is a SecurityViolation."""
    kind = {"Image": "image", "Dataset": "dataset", "Plate": "plate"}.get(ptype)
    if kind is None or not names:
        raise server_error()      # AttributeError; max() of no names
    obj = moves.readable(ctx.catalog, ctx.user, kind, pid)
    images = list(moves.images_in(ctx.catalog, kind, obj)) if obj is not None else []
    top = max(names)
    updated = [img for img in images if img.pixels.size_c >= top
               and (channel_count is None or img.pixels.size_c == channel_count)]
    if any(not perms(ctx.catalog, ctx.user, img.owner_id, img.group_id).can_edit for img in updated):
        raise server_error()
    for img in updated:
        ctx.catalog.changes.channel_names.setdefault(img.id, {}).update({i - 1: n for i, n in names.items()})
    ctx.catalog.journal.channels(updated, [i - 1 for i in names], ctx.user.id)
    return {"imageCount": len(images) if kind != "image" else 1, "updateCount": len(updated)}


async def edit_channel_names(ctx: Ctx) -> Response:
    """edit_channel_names (wc/views.py:2843-2877): `channel<i>` for i < sizeC; with `confirm_apply`, every
    image of `parentId` ("dataset-234", "plate-123") with as many channels."""
    form = await ctx.post()
    image = moves.readable(ctx.catalog, ctx.user, "image", ctx.path_int("iid"))
    if image is None:
        raise server_error()      # None.getSizeC()
    size_c = image.pixels.size_c
    given = {i: form[f"channel{i}"][:255] for i in range(size_c) if f"channel{i}" in form}
    names = {i + 1: n for i, n in given.items()}
    if form.get("confirm_apply") is not None:
        parent = form.get("parentId")
        ptype, _, pid = (parent or "").partition("-")
        if parent is None or not pid.isdigit():
            raise server_error()  # `counts` unbound; int() of the id
        counts = set_channel_names(ctx, ptype.title(), int(pid), names, channel_count=size_c)
    else:
        counts = set_channel_names(ctx, "Image", image.id, names)
    return json_response({"channelNames": {f"channel{i}": n for i, n in given.items()}, **counts})


# ---- chgrp, chown ----------------------------------------------------------------------------------
def _int_field(ctx: Ctx, form: ImmutableMultiDict, name: str) -> int | None:
    """getIntOrDefault (gw/util.py:76-80): GET, then POST; int() of a bad value is Django's 500."""
    raw = ctx.q.get(name, form.get(name))
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise server_error() from None


def _typed_ids(form: ImmutableMultiDict) -> list[tuple[str, list[int]]]:
    """(kind, ids) per dtype present: `Image=1,2` (wc/views.py:4722-4727)."""
    try:
        return [(dtype.lower(), [int(i) for i in form[dtype].split(",")]) for dtype in MOVED if dtype in form]
    except ValueError:
        raise server_error() from None


def all_objects(cat: Catalog, typed: list[tuple[str, list[int]]]) -> dict:
    """getAllObjects (wc/views.py:4462-4640): what the tree removes, and the containers left empty."""
    given = {k: set(ids) for k, ids in typed}
    projects, screens = given.get("project", set()), given.get("screen", set())
    datasets = given.get("dataset", set()) | {d for p in projects if p in cat.projects
                                              for d in cat.projects[p].dataset_ids}
    plates = given.get("plate", set()) | {p for s in screens if s in cat.screens for p in cat.screens[s].plate_ids}
    images = set(given.get("image", set()))
    images |= {img.id for d in datasets if d in cat.datasets for img in cat.images_of(cat.datasets[d])}
    images |= {img.id for p in plates if p in cat.plates for img in cat.images_of(cat.plates[p])
               if img.acquisition_id is not None}   # `join ws.plateAcquisition` (:4519-4527)
    emptied, orphaned = set(), False
    for img in filter(None, map(cat.image, images)):
        if img.dataset_id is None:
            orphaned = True
        elif img.dataset_id not in datasets and img.dataset_id in cat.datasets and \
                all(i.id in images for i in cat.images_of(cat.datasets[img.dataset_id])):
            emptied.add(img.dataset_id)
    left = {d.project_id for d in map(cat.datasets.get, datasets) if d and d.project_id not in (None, *projects)}
    emptied_projects = {p for p in left if set(cat.projects[p].dataset_ids) <= datasets}
    return {"remove": {"project": sorted(projects), "dataset": sorted(datasets), "screen": sorted(screens),
                       "plate": sorted(plates), "image": sorted(images)},
            "childless": {"project": sorted(emptied_projects), "dataset": sorted(emptied), "orphaned": orphaned}}


def _move_view(name: str, target: str) -> Callable[[Ctx], object]:
    async def move(ctx: Ctx) -> Response:
        """chgrp (wc/views.py:4672-4785) / chown (:4788-4825): one job per dtype."""
        if ctx.request.method != "POST":
            return json_response({"Error": f"Need to POST to {name}"}, 405)
        form = await ctx.post()
        value = _int_field(ctx, form, target)
        if value is None:
            return json_response({"Error": f"{name}: No {target} specified"})
        typed = _typed_ids(form)
        cat, user = ctx.catalog, ctx.user
        if name == "chown":
            owner = cat.users.get(value)
            if owner is None:
                raise server_error()   # "... not found" % owner_id: a TypeError (:4802)
            run_job(ctx, lambda: [moves.chown(cat, user, kind, ids, owner) for kind, ids in typed])
            return json_response({"jobIds": [job_id() for _ in typed]})
        if value not in cat.groups and typed:
            raise server_error()       # group.getName() of None (:4742)
        update = all_objects(cat, typed)
        run_job(ctx, lambda: [moves.chgrp(cat, user, kind, ids, value) for kind, ids in typed])
        return json_response({"update": update})
    return move


# ---- delete ----------------------------------------------------------------------------------------------
async def delete(ctx: Ctx) -> Response:
    """manage_action_containers "delete" (wc/views.py:3128-3151): the path's object (404 when it cannot be
    read, handlerInternalError), `child` and `anns`; a job, answered {"bad": "false"}. Not a require_POST view."""
    form = await ctx.post()
    o_type, o_id = ctx.request.path_params["o_type"], ctx.path_int("o_id")
    if o_type in BASE_TYPES and o_id > 0 and o_type in moves.KINDS:
        if moves.readable(ctx.catalog, ctx.user, o_type, o_id) is None:
            raise not_found(ctx, o_type.title(), o_id)
    if o_type in DELETE_ITEM:
        child = to_boolean(form.get("child"))
        cat, user = ctx.catalog, ctx.user
        run_job(ctx, lambda: moves.delete(cat, user, o_type, [o_id], child))
    return json_response({"bad": "false"})


async def deletemany(ctx: Ctx) -> Response:
    """manage_action_containers "deletemany" (wc/views.py:3152-3196): repeated fields per type, one job each."""
    form = await ctx.post()
    try:
        typed = [(kind, [int(i) for i in form.getlist(field)]) for field, kind in DELETED.items() if form.getlist(field)]
    except ValueError:
        raise server_error() from None
    child = to_boolean(form.get("child"))
    cat, user = ctx.catalog, ctx.user
    run_job(ctx, lambda: [moves.delete(cat, user, kind, ids, child) for kind, ids in typed])
    return json_response({"bad": "false"})


POST = ("POST",)
ENDPOINTS = [
    Endpoint("copyImgRDef", (f"{GW}/copyImgRDef/",), copy_img_rdef, AUTH_WEB, ("GET", "POST"), jsonp=JSONP_WEB),
    Endpoint("resetRDef", (f"{GW}/resetRDef/",), _reset_view(False), AUTH_WEB, POST, jsonp=JSONP_WEB),
    Endpoint("applyOwnersRDef", (f"{GW}/applyOwnersRDef/",), _reset_view(True), AUTH_WEB, POST, jsonp=JSONP_WEB),
    Endpoint("webclient:edit_channel_names", (f"{WC}/edit_channel_names/{{iid:int}}/",), edit_channel_names,
             AUTH_WEB, POST),
    Endpoint("webclient:chgrp", (f"{WC}/chgrp/",), _move_view("chgrp", "group_id"), AUTH_WEB, ("GET", "POST")),
    Endpoint("webclient:chown", (f"{WC}/chown/",), _move_view("chown", "owner_id"), AUTH_WEB, ("GET", "POST")),
    Endpoint("webclient:action_delete", (f"{WC}/action/delete/{{o_type}}/{{o_id:int}}/",), delete, AUTH_WEB,
             ("GET", "POST")),
    Endpoint("webclient:action_deletemany", (f"{WC}/action/deletemany/",), deletemany, AUTH_WEB, ("GET", "POST")),
]
