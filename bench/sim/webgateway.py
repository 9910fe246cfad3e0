"""`/webgateway/`: OMERO.web's rendering and JSON URLs (all login_required), incl. the plate grid."""
from __future__ import annotations

from starlette.responses import Response

from bench.sim import imageviews as iv
from bench.sim.catalog import Image, Plate, row_label
from bench.sim.http import AUTH_WEB, Ctx, Endpoint, error
from bench.sim.sessions import csrf_ok

GW = "/webgateway"
IID = "{iid:int}"



def sizes(prefix: str) -> tuple[str, ...]:
    """`<prefix>/<iid>/[<w>/[<h>/]]`"""
    return (f"{prefix}/{IID}/", f"{prefix}/{IID}/{{w:int}}/", f"{prefix}/{IID}/{{w:int}}/{{h:int}}/")


def planes(prefix: str) -> tuple[str, ...]:
    """`<prefix>/<iid>/[<z>/[<t>/]]`"""
    return (f"{prefix}/{IID}/", f"{prefix}/{IID}/{{z:int}}/", f"{prefix}/{IID}/{{z:int}}/{{t:int}}/")


async def render_thumbnail(ctx: Ctx) -> Response:
    return await iv.thumbnail(ctx, ctx.path_int("iid"), ctx.path_opt("w"), ctx.path_opt("h"))


async def get_thumbnail(ctx: Ctx) -> Response:
    image = iv.readable_image(ctx, ctx.path_int("iid"))
    w, h = ctx.path_opt("w"), ctx.path_opt("h")
    async with ctx.work(iv.thumb_cost(ctx, w, h)):
        return ctx.json(iv.data_uri(iv.thumbnail_bytes(ctx, image, w, h)))


async def get_thumbnails(ctx: Ctx) -> Response:
    return await iv.thumbnail_batch(ctx, ctx.path_opt("w"))


async def render_image(ctx: Ctx) -> Response:
    return await iv.render(ctx, ctx.path_int("iid"), ctx.path_opt("z"), ctx.path_opt("t"), whole=True)


async def render_image_rdef(ctx: Ctx) -> Response:
    return await iv.render(ctx, ctx.path_int("iid"), ctx.path_opt("z"), ctx.path_opt("t"), whole=True, explicit=True)


async def render_image_region(ctx: Ctx) -> Response:
    return await iv.render(ctx, ctx.path_int("iid"), ctx.path_int("z"), ctx.path_int("t"), whole=False)


async def render_image_region_rdef(ctx: Ctx) -> Response:
    return await iv.render(ctx, ctx.path_int("iid"), ctx.path_int("z"), ctx.path_int("t"), whole=False,
                           explicit=True)


async def render_shape_mask(ctx: Ctx) -> Response:
    return await iv.shape_mask(ctx, ctx.path_int("sid"))


async def histogram_json(ctx: Ctx) -> Response:
    return await iv.histogram(ctx, ctx.path_int("iid"), ctx.path_int("c"))


async def img_data(ctx: Ctx) -> Response:
    return await iv.img_data(ctx, ctx.path_int("iid"), ctx.request.path_params.get("key"))


# ---- plates and wells ---------------------------------------------------------------------------
def image_item(ctx: Ctx, image: Image, thumb_size: int | None = None) -> dict:
    """webgateway's simpleMarshal of an image (the plate grid adds wellId and field)."""
    suffix = f"{thumb_size}/" if thumb_size else ""
    return {"type": "Image", "id": image.id, "name": image.name, "description": image.description,
            "author": ctx.catalog.users[image.owner_id].full_name, "date": image.created,
            "thumb_url": f"{GW}/render_thumbnail/{image.id}/{suffix}"}


def readable_plate(ctx: Ctx, plate_id: int) -> Plate:
    plate = ctx.catalog.plates.get(plate_id)
    if ctx.catalog.can_read(ctx.user, plate):
        return plate
    raise error(403) if ctx.ident.public else error(404, f"Plate {plate_id} not found")


def _grid_shape(plate: Plate, layout: str, cells: list[tuple[int, int, dict]]) -> tuple[int, int, int, int]:
    """(first row, first col, rows, cols) of the grid for layout expand | shrink | trim."""
    if layout == "shrink" and cells:
        r0, c0 = min(r for r, _, _ in cells), min(c for _, c, _ in cells)
        return r0, c0, plate.rows - r0, plate.cols - c0
    if layout == "expand":
        n = 1
        while plate.rows > 8 * n or plate.cols > 12 * n:
            n *= 2
        return 0, 0, 8 * n, 12 * n
    return 0, 0, plate.rows, plate.cols


async def plate_grid(ctx: Ctx) -> Response:
    plate = readable_plate(ctx, ctx.path_int("pid"))
    fld, acq_id = ctx.path_opt("field") or 0, ctx.path_opt("acq")
    index = fld
    if acq_id is not None:
        acq = ctx.catalog.acquisitions.get(acq_id)
        index = acq.first_field + fld if acq and acq.plate_id == plate.id and fld < acq.n_fields else -1
    layout = ctx.q.get("layout", "expand")
    size = ctx.int_param("size")
    async with ctx.work("grid"):
        cells = []
        if 0 <= index < plate.fields:
            for well_index in range(plate.n_wells):
                image = ctx.catalog.image_at(plate, well_index * plate.fields + index)
                if image is not None:
                    cell = {**image_item(ctx, image, size), "wellId": image.well_id, "field": fld}
                    cells.append((image.row, image.col, cell))
        r0, c0, nrows, ncols = _grid_shape(plate, layout, cells)
        grid: list[list[dict | None]] = [[None] * ncols for _ in range(nrows)]
        for r, c, cell in cells:
            grid[r - r0][c - c0] = cell
        px = plate.pixels
        sizes_seen = [{"x": px.size_x, "y": px.size_y, "image_id": cells[0][2]["id"]}] if cells else []
        return ctx.json({"grid": grid, "collabels": list(range(c0 + 1, c0 + ncols + 1)),
                         "rowlabels": [row_label(r) for r in range(r0, r0 + nrows)], "image_sizes": sizes_seen})


async def well_children(ctx: Ctx) -> Response:
    well = ctx.catalog.well(ctx.path_int("wid"))
    if not ctx.catalog.can_read(ctx.user, well):
        raise error(403) if ctx.ident.public else error(404, "Well not found")
    run = ctx.int_param("run")
    acq = ctx.catalog.acquisitions.get(run) if run is not None else None
    fields = acq.fields if acq else (range(0) if run is not None else None)
    async with ctx.work("well_children"):
        items = []
        for image in ctx.catalog.well_images(well, fields):
            pos = {"value": 100.0 * image.field, "unit": "µm"}
            items.append({**image_item(ctx, image), "position": {"x": pos, "y": pos}})
    return ctx.json(items)


async def save_img_rdef(ctx: Ctx) -> Response:
    form = await ctx.form()
    if not csrf_ok(ctx.request, form.get("csrfmiddlewaretoken")):
        raise error(403, "CSRF verification failed. Request aborted.", "text/html")
    image = iv.readable_image(ctx, ctx.path_int("iid"))
    if ctx.ident.public:
        return ctx.json(False)
    params = {**ctx.q, **form}
    async with ctx.work("save_rdef"):
        ctx.sim.rdefs.save(image, ctx.user.id, params)
    return ctx.json(True)


ENDPOINTS = [
    Endpoint("render_thumbnail", sizes(f"{GW}/render_thumbnail"), render_thumbnail),
    Endpoint("render_birds_eye_view", (f"{GW}/render_birds_eye_view/{IID}/", f"{GW}/render_birds_eye_view/{IID}/{{w:int}}/"),
             render_thumbnail),
    Endpoint("get_thumbnail", sizes(f"{GW}/get_thumbnail"), get_thumbnail),
    Endpoint("get_thumbnails", (f"{GW}/get_thumbnails/", f"{GW}/get_thumbnails/{{w:int}}/"), get_thumbnails),
    Endpoint("render_image", planes(f"{GW}/render_image"), render_image),
    Endpoint("render_image_rdef", planes(f"{GW}/render_image_rdef"), render_image_rdef),
    Endpoint("render_image_region", (f"{GW}/render_image_region/{IID}/{{z:int}}/{{t:int}}/",), render_image_region),
    Endpoint("render_image_region_rdef", (f"{GW}/render_image_region_rdef/{IID}/{{z:int}}/{{t:int}}/",),
             render_image_region_rdef),
    Endpoint("render_shape_mask", (f"{GW}/render_shape_mask/{{sid:int}}/", f"{GW}/render_shape_mask/{{sid:int}}"),
             render_shape_mask),
    Endpoint("histogram_json", (f"{GW}/histogram_json/{IID}/channel/{{c:int}}/",
                                f"{GW}/histogram_json/{IID}/channel/{{c:int}}"), histogram_json),
    Endpoint("imgData", (f"{GW}/imgData/{IID}/", f"{GW}/imgData/{IID}/{{key}}/"), img_data),
    Endpoint("plate", (f"{GW}/plate/{{pid:int}}/", f"{GW}/plate/{{pid:int}}/{{field:int}}/",
                       f"{GW}/plate/{{pid:int}}/{{field:int}}/{{acq:int}}/"), plate_grid),
    Endpoint("well_children", (f"{GW}/well/{{wid:int}}/children/",), well_children),
    Endpoint("saveImgRDef", (f"{GW}/saveImgRDef/{IID}/",), save_img_rdef, AUTH_WEB, ("POST",)),
]
