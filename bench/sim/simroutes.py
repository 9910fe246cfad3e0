"""`/_sim/*`: control and discovery routes that exist only in the sim (on both ports, one state)."""
from __future__ import annotations

import json
from itertools import islice
from typing import Awaitable, Callable

from starlette.responses import Response

from bench.sim.annotations import FILE_BASE
from bench.sim.catalog import Catalog, Dataset, Owned, Plate
from bench.sim.http import AUTH_NONE, Ctx, Endpoint, json_response
from bench.sim.presets import PUBLIC

SAMPLE = 10   # public image ids listed in /_sim/info


def _owned(cat: Catalog, obj: Owned) -> dict:
    return {"id": obj.id, "name": obj.name, "owner": cat.users[obj.owner_id].name,
            "group": cat.groups[obj.group_id].name, "public": obj.group_id == PUBLIC}


def _plate(cat: Catalog, p: Plate) -> dict:
    return {**_owned(cat, p), "screen": p.screen_id, "rows": p.rows, "columns": p.cols, "fields": p.fields,
            "acquisitions": [{"id": a.id, "name": a.name, "fields": list(a.fields)} for a in p.acquisitions],
            "wells": p.n_wells, "images": len(p.present), "first_image": p.image_base + p.present[0],
            "first_well": p.well_base}


def _dataset(cat: Catalog, d: Dataset) -> dict:
    return {**_owned(cat, d), "project": d.project_id, "images": d.n_images, "first_image": d.image_base}


def _public_user(ctx: Ctx) -> dict | None:
    """What a warmer needs to build the public user's browsing URLs: its id and active group
    (`WEBCLIENT.active_group_id` of its page)."""
    user = ctx.sim.sessions.public_user if ctx.sim.config.public else None
    return {"id": user.id, "username": user.name, "active_group": user.default_group} if user else None


def info(cat: Catalog, ctx: Ctx) -> dict:
    cfg = ctx.sim.config
    blocks = cat.blocks_by_name
    started = ctx.sim.pyramids.initial
    special = [img for b in blocks if isinstance(b, Dataset) for img in cat.images_of(b) if img.pixels.levels > 1]
    private: dict[str, dict] = {}
    for g in cat.groups.values():
        if g.id == PUBLIC:
            continue
        mine = [b for b in blocks if b.group_id == g.id]
        private[g.name] = {
            "images": [img.id for b in mine for img in cat.images_of(b)],
            "plates": [b.id for b in mine if isinstance(b, Plate)],
            "datasets": [b.id for b in mine if isinstance(b, Dataset) and not b.orphan],
            "screens": [s.id for s in cat.screens.values() if s.group_id == g.id],
        }
    orphan_runs = [d for d in cat.datasets.values() if d.orphan]
    public_images = list(islice((img.id for b in blocks if b.group_id == PUBLIC for img in cat.images_of(b)
                                 if img.id not in started), SAMPLE))
    return {
        "scale": cat.scale,
        "session_cookie": cfg.session_cookie,
        "public_enabled": cfg.public,
        "thumb_size": cfg.thumb_size,
        "thumbnails_batch": cfg.thumbnails_batch,
        "use_x_forwarded_host": cfg.use_x_forwarded_host,
        "secure_proxy_ssl_header": list(cfg.secure_proxy_ssl_header) if cfg.secure_proxy_ssl_header else None,
        "ports": {"web": cfg.port, "ms": cfg.ms_port},
        "users": [{"id": u.id, "username": u.name, "password": u.password, "public": u.public,
                   "groups": [cat.groups[g].name for g in u.groups]} for u in cat.users.values()],
        "groups": [{"id": g.id, "name": g.name, "perm": g.perm} for g in cat.groups.values()],
        "public_user": _public_user(ctx),
        "screens": [{**_owned(cat, s), "plates": list(s.plate_ids), "table_file": FILE_BASE + s.id}
                    for s in cat.screens.values()],
        "plates": [_plate(cat, p) for p in cat.plates.values()],
        "projects": [{**_owned(cat, p), "datasets": list(p.dataset_ids)} for p in cat.projects.values()],
        "datasets": [_dataset(cat, d) for d in cat.datasets.values() if not d.orphan],
        "pyramid_images": [img.id for img in special if img.id not in started],
        "in_progress_images": ctx.sim.pyramids.in_progress(),
        "in_progress_fixed": sorted(started),
        "public_images": public_images,
        "private": private,
        "orphans": {"datasets": [d.id for d in cat.datasets.values() if not d.orphan and d.project_id is None],
                    "images": {cat.users[d.owner_id].name: list(range(d.image_base, d.image_base + d.n_images))
                               for d in orphan_runs}},
        "rdefs": ctx.sim.rdefs.summaries(),
        "counts": cat.counts(),
    }


async def get_info(ctx: Ctx) -> Response:
    return json_response(info(ctx.catalog, ctx))


async def get_stats(ctx: Ctx) -> Response:
    return json_response(ctx.sim.stats.snapshot())


async def reset(ctx: Ctx) -> Response:
    ctx.sim.stats.reset()
    return json_response(ctx.sim.stats.snapshot())


async def faults(ctx: Ctx) -> Response:
    if ctx.request.method == "POST":
        try:
            ctx.sim.faults.update(json.loads(await ctx.request.body() or b"{}"))
        except ValueError as exc:
            return json_response({"message": str(exc)}, 400)
    return json_response(ctx.sim.faults.snapshot())


def _pyramid(generating: bool) -> Callable[[Ctx], Awaitable[Response]]:
    """Finish (or restart) the pyramid of one of the images that started in progress."""
    async def view(ctx: Ctx) -> Response:
        image_id = ctx.path_int("iid")
        if not ctx.sim.pyramids.set(image_id, generating):
            return json_response({"message": f"image {image_id} did not start with a pyramid in progress"}, 404)
        return json_response({"in_progress_images": ctx.sim.pyramids.in_progress()})
    return view


ENDPOINTS = [
    Endpoint("_sim:info", ("/_sim/info",), get_info, AUTH_NONE),
    Endpoint("_sim:stats", ("/_sim/stats",), get_stats, AUTH_NONE),
    Endpoint("_sim:reset", ("/_sim/reset",), reset, AUTH_NONE, ("POST",)),
    Endpoint("_sim:faults", ("/_sim/faults",), faults, AUTH_NONE, ("GET", "POST")),
    Endpoint("_sim:pyramids:finish", ("/_sim/pyramids/{iid:int}/finish",), _pyramid(False), AUTH_NONE, ("POST",)),
    Endpoint("_sim:pyramids:restart", ("/_sim/pyramids/{iid:int}/restart",), _pyramid(True), AUTH_NONE, ("POST",)),
]
