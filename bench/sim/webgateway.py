"""`/webgateway/`: OMERO.web's rendering and JSON URLs (all login_required), incl. the plate grid.

The JSON views are OMERO.web's `@jsonp` ones (their endpoints say so, `jsonp.py` does the rest);
what they answer for missing objects is each view's own (a 500 `""`, `[]`, or a Python error)."""
from __future__ import annotations

from typing import TypeVar

from starlette.responses import Response

from bench.sim import imageviews as iv
from bench.sim.catalog import Dataset, Image, Plate, Project, Well, row_label
from bench.sim.http import AUTH_WEB, Ctx, Endpoint, error
from bench.sim.imgdata import img_data as img_data_view
from bench.sim.jsonp import JSONP_WEB, ViewError, javascript, javascript_error, not_marshallable
from bench.sim.rendering import rdef_query_error

GW = "/webgateway"
IID = "{iid:int}"
MAX_PLANE = 3192 * 3192             # omero.pixeldata.max_plane_width × height: bigger images are "tiled"
T = TypeVar("T")


def sizes(prefix: str) -> tuple[str, ...]:
    """`<prefix>/<iid>/[<w>/[<h>/]]`"""
    return (f"{prefix}/{IID}/", f"{prefix}/{IID}/{{w:int}}/", f"{prefix}/{IID}/{{w:int}}/{{h:int}}/")


def planes(prefix: str) -> tuple[str, ...]:
    """`<prefix>/<iid>/[<z>/[<t>/]]`"""
    return (f"{prefix}/{IID}/", f"{prefix}/{IID}/{{z:int}}/", f"{prefix}/{IID}/{{z:int}}/{{t:int}}/")


async def render_thumbnail(ctx: Ctx) -> Response:
    return await iv.thumbnail(ctx, ctx.path_int("iid"), ctx.path_opt("w"), ctx.path_opt("h"))


async def get_thumbnail(ctx: Ctx) -> Response:
    """get_thumbnail_json (gw/views.py:1714-1731): its Http404 is answered by @jsonp as JSON 500."""
    data = await iv.thumbnail_data(ctx, ctx.path_int("iid"), ctx.path_opt("w"), ctx.path_opt("h"), iv.raise_view_404)
    return ctx.json(iv.data_uri(data))


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
    return await img_data_view(ctx, ctx.path_int("iid"), ctx.request.path_params.get("key"))


# ---- simpleMarshal and the container JSON -------------------------------------------------------
def thumb_url(image_id: int, size: int | None = None) -> str:
    return f"{GW}/render_thumbnail/{image_id}/" + (f"{size}/" if size else "")


def image_item(ctx: Ctx, image: Image, thumb_size: int | None = None) -> dict:
    """ImageWrapper.simpleMarshal with a thumbUrlPrefix (omero-py gateway, `date` from time.mktime)."""
    return {"type": "Image", "id": image.id, "name": image.name, "description": image.description,
            "author": ctx.catalog.users[image.owner_id].full_name, "date": float(image.created),
            "thumb_url": thumb_url(image.id, thumb_size)}


def _container(kind: str, obj: Project | Dataset) -> dict:
    """BlitzObjectWrapper.simpleMarshal."""
    return {"type": kind, "id": obj.id, "name": obj.name, "description": obj.description}


def _readable(ctx: Ctx, obj: T | None) -> T | None:
    """What `conn.getObject` finds: the object if this user may read it."""
    return obj if ctx.catalog.can_read(ctx.user, obj) else None


def _dataset(ctx: Ctx) -> Dataset | None:
    did = ctx.path_int("did")
    return _readable(ctx, ctx.catalog.datasets.get(did) if did > 0 else None)


def _project(ctx: Ctx) -> Project | None:
    return _readable(ctx, ctx.catalog.projects.get(ctx.path_int("pid")))


async def dataset_children(ctx: Ctx) -> Response:
    """listImages_json (gw/views.py:1734-1759): `?tiled` (any value) adds the size and whether it is tiled."""
    dataset = _dataset(ctx)
    if dataset is None:
        return javascript_error('""')
    async with ctx.work("children"):
        items = []
        for image in ctx.catalog.images_of(dataset):
            item = image_item(ctx, image)
            if ctx.q.get("tiled"):
                px = image.pixels
                item.update(size={"width": px.size_x, "height": px.size_y}, tiled=px.size_x * px.size_y > MAX_PLANE)
            items.append(item)
    return ctx.json(items)


async def _detail(ctx: Ctx, kind: str, container) -> Response:
    """A container's detail JSON; a missing one fails as `None.simpleMarshal()` does."""
    if container is None:
        raise not_marshallable()
    async with ctx.work("container"):
        return ctx.json(_container(kind, container))


async def dataset_detail(ctx: Ctx) -> Response:
    """datasetDetail_json (gw/views.py:1835-1843)."""
    return await _detail(ctx, "Dataset", _dataset(ctx))


async def project_list(ctx: Ctx) -> Response:
    """listProjects_json (gw/views.py:1846-1861)."""
    async with ctx.work("container"):
        return ctx.json([{"id": p.id, "name": p.name, "description": p.description}
                         for p in sorted(ctx.catalog.projects.values(), key=lambda p: p.id)
                         if ctx.catalog.can_read(ctx.user, p)])


async def project_children(ctx: Ctx) -> Response:
    """listDatasets_json (gw/views.py:1816-1832): a missing project is `[]` as application/javascript."""
    project = _project(ctx)
    if project is None:
        return javascript("[]")
    async with ctx.work("container"):
        datasets = [ctx.catalog.datasets[d] for d in project.dataset_ids]
        return ctx.json([{**_container("Dataset", d), "child_count": ctx.catalog.image_count(d)} for d in datasets])


async def project_detail(ctx: Ctx) -> Response:
    """projectDetail_json (gw/views.py:1864-1878)."""
    return await _detail(ctx, "Project", _project(ctx))


# ---- plates and wells ---------------------------------------------------------------------------
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
    """plateGrid_json (gw/views.py:1612-1660, plategrid.py); a plate it cannot read is a JSON 500."""
    size = ctx.int_param("size")
    plate = _readable(ctx, ctx.catalog.plates.get(ctx.path_int("pid")))
    if plate is None:
        # gw/views.py:1656 `return Http404` (the class): JSON-encoding it fails inside @jsonp
        raise ViewError("TypeError", "Object of type type is not JSON serializable")
    fld, acq_id = ctx.path_opt("field") or 0, ctx.path_opt("acq")
    index = fld
    if acq_id is not None:
        acq = ctx.catalog.acquisitions.get(acq_id)
        index = acq.first_field + fld if acq and acq.plate_id == plate.id and fld < acq.n_fields else -1
    layout = ctx.q.get("layout", "expand")
    async with ctx.work("grid"):
        cells = []
        if 0 <= index < plate.fields:
            for well_index in range(plate.n_wells):
                image = ctx.catalog.image_at(plate, well_index * plate.fields + index)
                if image is not None:
                    cell = {**image_item(ctx, image, size), "date": image.created, "wellId": image.well_id,
                            "field": fld}
                    cells.append((image.row, image.col, cell))
        r0, c0, nrows, ncols = _grid_shape(plate, layout, cells)
        grid: list[list[dict | None]] = [[None] * ncols for _ in range(nrows)]
        for r, c, cell in cells:
            grid[r - r0][c - c0] = cell
        px = plate.pixels
        sizes_seen = [{"x": px.size_x, "y": px.size_y, "image_id": cells[0][2]["id"]}] if cells else []
        return ctx.json({"grid": grid, "collabels": list(range(c0 + 1, c0 + ncols + 1)),
                         "rowlabels": [row_label(r) for r in range(r0, r0 + nrows)], "image_sizes": sizes_seen})


def _well(ctx: Ctx) -> Well | None:
    return _readable(ctx, ctx.catalog.well(ctx.path_int("wid")))


async def well_data(ctx: Ctx) -> Response:
    """wellData_json (gw/views.py:1585-1609): the first image's simpleMarshal with the well's position
    (WellWrapper.simpleMarshal); an empty well is `None.simpleMarshal()`."""
    well = _well(ctx)
    if well is None:
        return javascript_error('""')
    images = ctx.catalog.well_images(well)
    if not images:
        raise not_marshallable()
    async with ctx.work("container"):
        return ctx.json({**image_item(ctx, images[0]), "wellPos": f"{row_label(well.row)}{well.col + 1}",
                         "plateId": well.plate.id, "wellId": well.id})


async def well_children(ctx: Ctx) -> Response:
    """listWellImages_json (gw/views.py:1762-1813): `?run` keeps that acquisition's samples (and those
    without one); names get ` [Run: <name>]`; positions in their stored unit."""
    run = ctx.int_param("run")
    well = _well(ctx)
    if well is None:
        return javascript_error('""')
    async with ctx.work("children"):
        items = []
        for image in ctx.catalog.well_images(well):
            acq = ctx.catalog.acquisitions.get(image.acquisition_id) if image.acquisition_id else None
            if run is not None and acq is not None and acq.id != run:
                continue
            pos = {"value": 100.0 * image.field, "unit": "MICROMETER"}
            item = {**image_item(ctx, image), "position": {"x": pos, "y": pos}}
            if acq is not None:
                item["name"] += f" [Run: {acq.name}]"
            items.append(item)
    return ctx.json(items)


async def save_img_rdef(ctx: Ctx) -> Response:
    """save_image_rdef_json (gw/views.py:2037-2064): settings from the query string only, validated as the
    `_rdef` views are; answers `true`/`false` as JavaScript, wrapped in any `callback` unchecked."""
    await ctx.post()
    if problem := rdef_query_error(ctx.q):
        raise error(400, problem, "text/html; charset=utf-8")
    image = ctx.catalog.image(ctx.path_int("iid"))
    saved = ctx.catalog.can_read(ctx.user, image) and not ctx.ident.public
    if saved:
        async with ctx.work("save_rdef"):
            ctx.sim.rdefs.save(image, ctx.user.id, ctx.q)
    body = "true" if saved else "false"
    callback = ctx.q.get("callback")
    return javascript(f"{callback}({body})" if callback else body)


def jsonp(name: str, paths: tuple[str, ...], handler) -> Endpoint:  # noqa: ANN001 - a view
    """An OMERO.web `@jsonp` view."""
    return Endpoint(name, paths, handler, jsonp=JSONP_WEB)


ENDPOINTS = [
    Endpoint("render_thumbnail", sizes(f"{GW}/render_thumbnail"), render_thumbnail),
    Endpoint("render_birds_eye_view",
             (f"{GW}/render_birds_eye_view/{IID}/", f"{GW}/render_birds_eye_view/{IID}/{{w:int}}/"), render_thumbnail),
    jsonp("get_thumbnail", sizes(f"{GW}/get_thumbnail"), get_thumbnail),
    jsonp("get_thumbnails", (f"{GW}/get_thumbnails/", f"{GW}/get_thumbnails/{{w:int}}/"), get_thumbnails),
    Endpoint("render_image", planes(f"{GW}/render_image"), render_image),
    Endpoint("render_image_rdef", planes(f"{GW}/render_image_rdef"), render_image_rdef),
    Endpoint("render_image_region", (f"{GW}/render_image_region/{IID}/{{z:int}}/{{t:int}}/",), render_image_region),
    Endpoint("render_image_region_rdef", (f"{GW}/render_image_region_rdef/{IID}/{{z:int}}/{{t:int}}/",),
             render_image_region_rdef),
    Endpoint("render_shape_mask", (f"{GW}/render_shape_mask/{{sid:int}}/",), render_shape_mask),
    # gw/urls.py:461 has no `$`: anything may follow the slash; without it, APPEND_SLASH redirects
    Endpoint("histogram_json", (f"{GW}/histogram_json/{IID}/channel/{{c:int}}/",
                                f"{GW}/histogram_json/{IID}/channel/{{c:int}}/{{_rest:path}}"), histogram_json),
    jsonp("imgData", (f"{GW}/imgData/{IID}/", f"{GW}/imgData/{IID}/{{key}}/"), img_data),
    jsonp("wellData", (f"{GW}/wellData/{{wid:int}}/",), well_data),
    jsonp("plate", (f"{GW}/plate/{{pid:int}}/", f"{GW}/plate/{{pid:int}}/{{field:int}}/",
                    f"{GW}/plate/{{pid:int}}/{{field:int}}/{{acq:int}}/"), plate_grid),
    jsonp("well_children", (f"{GW}/well/{{wid:int}}/children/",), well_children),
    jsonp("dataset_children", (f"{GW}/dataset/{{did:int}}/children/",), dataset_children),
    jsonp("dataset_detail", (f"{GW}/dataset/{{did:int}}/detail/",), dataset_detail),
    jsonp("proj_list", (f"{GW}/proj/list/",), project_list),
    jsonp("proj_children", (f"{GW}/proj/{{pid:int}}/children/",), project_children),
    jsonp("proj_detail", (f"{GW}/proj/{{pid:int}}/detail/",), project_detail),
    Endpoint("saveImgRDef", (f"{GW}/saveImgRDef/{IID}/",), save_img_rdef, AUTH_WEB, ("POST",)),
]
