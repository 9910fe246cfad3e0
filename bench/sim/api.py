"""JSON API v0 (`/api/`): the unversioned index, token/servers/login, and `/api/v0/m/` objects.

List routes are one table: a child route's path parameter has the name of the query filter it
stands for (`screens/{screen}/plates/` ≡ `plates/?screen=`), so every list goes through one view.
Large lists (images, wells) are chunks computed on demand, never materialised, so pagination
over the `idr` preset costs only the page.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from starlette.responses import Response

from bench.sim.catalog import ROI_BASE, SHAPE_BASE, SHAPES_PER_IMAGE, Catalog, Plate, User, name_key
from bench.sim.http import AUTH_API, AUTH_NONE, Ctx, Endpoint, json_error, json_response
from bench.sim.marshal import Marshal, experimenter, experimenter_group
from bench.sim.sessions import csrf_ok, csrf_token_for, use_csrf

DEFAULT_LIMIT, MAX_LIMIT = 200, 500           # omero.web.api.limit / max_limit
FILTERS = ("screen", "plate", "plateacquisition", "well", "project", "dataset", "image", "owner", "group", "index")
LOGIN_FAILED = "Connection not available, please check your user name and password."


@dataclass
class Listing:
    """A lazily sliced sequence: chunks of (count, fetch(start, stop) -> items)."""
    chunks: list[tuple[int, Callable[[int, int], list]]]

    @classmethod
    def of(cls, items: Sequence) -> Listing:
        return cls([(len(items), lambda a, b: list(items[a:b]))])

    def total(self) -> int:
        return sum(n for n, _ in self.chunks)

    def page(self, offset: int, limit: int) -> list:
        out: list = []
        for n, fetch in self.chunks:
            if len(out) >= limit:
                break
            if offset >= n:
                offset -= n
                continue
            out += fetch(offset, min(n, offset + limit - len(out)))
            offset = 0
        return out


# ---- sources: what a user may see, filtered, in the API's order ----------------------------------
Source = Callable[[Catalog, User, dict], Listing]


def _visible(cat: Catalog, user: User, items: Iterable, f: dict) -> list:
    return sorted((o for o in items if cat.can_read(user, o) and f.get("owner", o.owner_id) == o.owner_id
                   and f.get("group", o.group_id) == o.group_id), key=name_key)


def _containers(kind: str, child_filter: str, children: str, parent_attr: str) -> Source:
    """Screens or projects: all of them, or (`?plate=` / `?dataset=`) the one holding that child."""
    def source(cat: Catalog, user: User, f: dict) -> Listing:
        items = getattr(cat, kind).values()
        if child_filter in f:
            child = getattr(cat, children).get(f[child_filter])
            parent_id = getattr(child, parent_attr, None)
            items = [getattr(cat, kind)[parent_id]] if parent_id else []
        return Listing.of(_visible(cat, user, items, f))
    return source


_screens = _containers("screens", "plate", "plates", "screen_id")
_projects = _containers("projects", "dataset", "datasets", "project_id")


def _plates(cat: Catalog, user: User, f: dict) -> Listing:
    items = cat.plates.values()
    if "screen" in f:
        screen = cat.screens.get(f["screen"])
        items = [cat.plates[p] for p in screen.plate_ids] if screen else []
    if "well" in f:
        well = cat.well(f["well"])
        items = [p for p in items if well and p is well.plate]
    return Listing.of(_visible(cat, user, items, f))


def _acquisitions(cat: Catalog, user: User, f: dict) -> Listing:
    plate = cat.plates.get(f.get("plate", -1))
    return Listing.of(_visible(cat, user, plate.acquisitions if plate else (), f))


def _plate_wells(cat: Catalog, plate: Plate, fields: range | None, occupied: bool) -> Listing:
    wells = [(w, fields) for w in cat.wells(plate) if not (occupied and w.empty)]
    return Listing.of(wells)


def _wells(cat: Catalog, user: User, f: dict) -> Listing:
    if "plateacquisition" in f:
        acq = cat.acquisitions.get(f["plateacquisition"])
        plate = cat.plates.get(acq.plate_id) if acq else None
        if acq is None or not _visible(cat, user, [plate], f):
            return Listing([])
        fields = acq.fields if "index" not in f else range(acq.first_field + f["index"],
                                                             acq.first_field + f["index"] + 1)
        return _plate_wells(cat, plate, fields, occupied=True)
    if "plate" in f:
        plate = cat.plates.get(f["plate"])
        if plate is None or not _visible(cat, user, [plate], f):
            return Listing([])
        fields = range(f["index"], f["index"] + 1) if "index" in f else None
        return _plate_wells(cat, plate, fields, occupied="index" in f)
    # every well the user can see, ordered by column, row (then plate id)
    plates = sorted(_visible(cat, user, cat.plates.values(), f), key=lambda p: p.id)
    chunks = []
    for col in range(max((p.cols for p in plates), default=0)):
        for row in range(max((p.rows for p in plates), default=0)):
            group = [p for p in plates if p.cols > col and p.rows > row]
            if group:
                chunks.append((len(group), lambda a, b, g=group, r=row, c=col:
                               [(cat.well_at(p, r, c), None) for p in g[a:b]]))
    return Listing(chunks)


def _datasets(cat: Catalog, user: User, f: dict) -> Listing:
    items = [d for d in cat.datasets.values() if not d.orphan]
    if "project" in f:
        items = [d for d in items if d.project_id == f["project"]]
    if "image" in f:
        image = cat.image(f["image"])
        items = [d for d in items if image and d.id == image.dataset_id]
    if f.get("orphaned"):
        items = [d for d in items if d.project_id is None]
    return Listing.of(_visible(cat, user, items, f))


def _images(cat: Catalog, user: User, f: dict) -> Listing:
    if cat.changes:     # writes moved, gave away or deleted images: each one is checked (changes.py)
        return _changed_images(cat, user, f)
    blocks = [b for b in cat.blocks_by_name if _visible(cat, user, [b], f)]
    if "dataset" in f:
        blocks = [b for b in blocks if getattr(b, "orphan", True) is False and b.id == f["dataset"]]
    if f.get("orphaned"):
        blocks = [b for b in blocks if getattr(b, "orphan", False)]
    return Listing([(len(b.present), lambda a, c, b=b: [cat.image_at(b, o) for o in b.present[a:c]])
                    for b in blocks])


def _changed_images(cat: Catalog, user: User, f: dict) -> Listing:
    """The listing in the same order (blocks by name, then id) over the images as writes left them."""
    if "dataset" in f:
        dataset = cat.datasets.get(f["dataset"])
        found = cat.images_of(dataset) if dataset is not None and not dataset.orphan else ()
    elif f.get("orphaned"):
        found = cat.orphan_images()
    else:
        found = (img for b in cat.blocks_by_name for img in cat.images_of(b))
    return Listing.of([img for img in found if _visible(cat, user, [img], f)])


def _rois(cat: Catalog, user: User, f: dict) -> Listing:
    image = cat.image(f.get("image", -1))
    return Listing.of([image] if cat.can_read(user, image) else [])


def _everyone(items: Callable[[Catalog], Iterable]) -> Source:
    return lambda cat, user, f: Listing.of(sorted(items(cat), key=lambda o: o.id))


def _members(cat: Catalog, group_id: int) -> int:
    return sum(group_id in u.groups for u in cat.users.values())


def _roi_json(m: Marshal, image) -> dict:
    return m.roi(image, ROI_BASE + image.id,
                 [SHAPE_BASE + SHAPES_PER_IMAGE * image.id + k for k in range(SHAPES_PER_IMAGE)])


@dataclass(frozen=True)
class Kind:
    """One API object type: its list source, how to find one, and its list / single encoders."""
    type_name: str
    source: Source
    get: Callable[[Catalog, int], object]
    encode: Callable[[Marshal, object], dict]
    encode_one: Callable[[Marshal, object], dict] | None = None
    child_count: Callable[[Catalog, object], int] | None = None   # wrappers with a LINK_CLASS
    public: bool = False     # readable by every logged-in user (experimenters, groups)


KINDS: dict[str, Kind] = {
    "screens": Kind("Screen", _screens, lambda c, i: c.screens.get(i), lambda m, o: m.screen(o),
                    child_count=lambda c, o: len(o.plate_ids)),
    "plates": Kind("Plate", _plates, lambda c, i: c.plates.get(i), lambda m, o: m.plate(o),
                   lambda m, o: m.plate(o, single=True)),
    "plateacquisitions": Kind("PlateAcquisition", _acquisitions, lambda c, i: c.acquisitions.get(i),
                              lambda m, o: m.acquisition(o)),
    "wells": Kind("Well", _wells, lambda c, i: c.well(i), lambda m, o: m.well(*o),
                  lambda m, o: m.well(o, pixels=True)),
    "projects": Kind("Project", _projects, lambda c, i: c.projects.get(i), lambda m, o: m.project(o),
                     child_count=lambda c, o: len(o.dataset_ids)),
    "datasets": Kind("Dataset", _datasets, lambda c, i: c.datasets.get(i) if i > 0 else None,
                     lambda m, o: m.dataset(o), child_count=lambda c, o: o.n_images),
    "images": Kind("Image", _images, lambda c, i: c.image(i), lambda m, o: m.image(o),
                   lambda m, o: m.image(o, channels=True)),
    "rois": Kind("ROI", _rois, lambda c, i: c.roi_image(i), _roi_json),
    # GroupExperimenterMap links: a group's members; for an experimenter the same query counts the
    # members of the group whose id is the experimenter's (get_child_counts, api/api_query.py:59-81)
    "experimenters": Kind("Experimenter", _everyone(lambda c: c.users.values()), lambda c, i: c.users.get(i),
                          lambda m, o: experimenter(o), child_count=lambda c, o: _members(c, o.id), public=True),
    "experimentergroups": Kind("ExperimenterGroup", _everyone(lambda c: c.groups.values()),
                               lambda c, i: c.groups.get(i), lambda m, o: experimenter_group(o),
                               child_count=lambda c, o: _members(c, o.id), public=True),
}


# ---- views -------------------------------------------------------------------------------------
def api_base(ctx: Ctx) -> str:
    """`request.build_absolute_uri` (omeroweb/api/views.py:45-64) as Django builds it: the host from
    X-Forwarded-Host only with USE_X_FORWARDED_HOST, else Host; https when the SECURE_PROXY_SSL_HEADER
    header (its first value) equals its value, http when it is sent with another, else the connection's."""
    cfg, headers, url = ctx.sim.config, ctx.request.headers, ctx.request.url
    host = (cfg.use_x_forwarded_host and headers.get("x-forwarded-host")) or headers.get("host") or url.netloc
    scheme = url.scheme
    if cfg.secure_proxy_ssl_header and (sent := headers.get(cfg.secure_proxy_ssl_header[0])) is not None:
        scheme = "https" if sent.split(",", 1)[0].strip() == cfg.secure_proxy_ssl_header[1] else "http"
    return f"{scheme}://{host}/api/v0/"


def _int(ctx: Ctx, name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise json_error(400, f"invalid literal for int() with base 10: '{raw}'") from None


def _filters(ctx: Ctx) -> dict:
    f = {k: _int(ctx, k, v) for k, v in ctx.q.items() if k in FILTERS}
    f.update({k: int(v) for k, v in ctx.request.path_params.items() if k in FILTERS})
    if ctx.q.get("orphaned", "").lower() == "true":
        f["orphaned"] = True
    return f


def _paging(ctx: Ctx) -> tuple[int, int]:
    offset = _int(ctx, "offset", ctx.q.get("offset", "0"))
    limit = _int(ctx, "limit", ctx.q.get("limit", str(DEFAULT_LIMIT)))
    return max(0, offset), DEFAULT_LIMIT if limit < 0 else min(limit, MAX_LIMIT)


def _counted(ctx: Ctx, kind: Kind, obj: object, item: dict) -> dict:
    """`?childCount=true` adds `omero:childCount` on lists and objects (api/views.py:178-183, api_query.py:131-137)."""
    if kind.child_count and ctx.q.get("childCount") == "true":
        item["omero:childCount"] = kind.child_count(ctx.catalog, obj)
    return item


async def list_view(ctx: Ctx, kind: Kind) -> Response:
    f = _filters(ctx)
    offset, limit = _paging(ctx)
    async with ctx.work("api_page"):
        listing = kind.source(ctx.catalog, ctx.user, f)
        m = Marshal(ctx.catalog, ctx.user, api_base(ctx))
        data = [_counted(ctx, kind, obj, kind.encode(m, obj)) for obj in (listing.page(offset, limit) if limit else [])]
        total = listing.total()
    return json_response({"data": data, "meta": {"offset": offset, "limit": limit, "maxLimit": MAX_LIMIT,
                                                 "totalCount": total}})


async def object_view(ctx: Ctx, kind: Kind) -> Response:
    obj_id = ctx.path_int("id")
    obj = kind.get(ctx.catalog, obj_id)
    if obj is None or not (kind.public or ctx.catalog.can_read(ctx.user, obj)):
        raise json_error(404, f"{kind.type_name} {obj_id} not found")
    async with ctx.work("api_object"):
        m = Marshal(ctx.catalog, ctx.user, api_base(ctx))
        data = _counted(ctx, kind, obj, (kind.encode_one or kind.encode)(m, obj))
    return json_response({"data": data})


async def versions(ctx: Ctx) -> Response:
    return json_response({"data": [{"version": "0", "url:base": api_base(ctx)}]})


async def base(ctx: Ctx) -> Response:
    b = api_base(ctx)
    urls = {f"url:{k}": f"{b}m/{k}/" for k in ("experimenters", "experimentergroups", "projects", "datasets",
                                               "images", "screens", "plates", "rois")}
    urls.update({"url:token": f"{b}token/", "url:servers": f"{b}servers/", "url:login": f"{b}login/",
                 "url:save": f"{b}m/save/", "url:schema": "https://www.openmicroscopy.org/Schemas/OME/2016-06"})
    return json_response(urls)


async def token(ctx: Ctx) -> Response:
    """api_token (api/views.py): get_token, so CsrfViewMiddleware re-sends the cookie with `Vary: Cookie`."""
    value = csrf_token_for(ctx.request)
    return use_csrf(json_response({"data": value}), value)


async def servers(ctx: Ctx) -> Response:
    return json_response({"data": [{"id": 1, "host": "localhost", "port": 4064, "server": "omero"}]})


async def login(ctx: Ctx) -> Response:
    if ctx.request.method != "POST":
        return json_response({"message": "POST only with username, password, server and csrftoken"}, 405)
    form = await ctx.form()
    if not csrf_ok(ctx.request, form.get("csrfmiddlewaretoken")):
        return Response("CSRF verification failed. Request aborted.", status_code=403, media_type="text/html")
    async with ctx.work("login", renders=0):
        user = ctx.sim.sessions.authenticate(form.get("username"), form.get("password"))
    if user is None or str(form.get("server", "1")) != "1":
        return json_response({"message": LOGIN_FAILED}, 403)
    ident = await ctx.sim.sessions.create(user)
    group = ctx.catalog.groups[user.default_group]
    response = json_response({"success": True, "eventContext": {
        "userId": user.id, "userName": user.name, "groupId": group.id, "groupName": group.name,
        "sessionUuid": ident.omero_key, "isAdmin": False, "memberOfGroups": list(user.groups),
        "leaderOfGroups": [], "eventId": -1}})
    response.set_cookie(ctx.sim.config.session_cookie, ident.cookie, path="/", httponly=True, samesite="lax")
    return response


M = "/api/v0/m"
_CHILD_LISTS = (
    "screens/{screen:int}/plates/", "plates/{plate:int}/wells/", "plates/{plate:int}/plateacquisitions/",
    "plates/{plate:int}/screens/", "plates/{plate:int}/wellsampleindex/{index:int}/wells/",
    "plateacquisitions/{plateacquisition:int}/wells/",
    "plateacquisitions/{plateacquisition:int}/wellsampleindex/{index:int}/wells/",
    "wells/{well:int}/plates/", "projects/{project:int}/datasets/", "datasets/{dataset:int}/images/",
    "datasets/{dataset:int}/projects/", "images/{image:int}/datasets/", "images/{image:int}/rois/",
)


def _kind_endpoints(name: str, kind: Kind) -> list[Endpoint]:
    """`api:list:<kind>` (top-level unless only nested, plus child routes ending in it), `api:object:<kind>`."""
    lists = tuple(p for p in _CHILD_LISTS if p.endswith(f"/{name}/"))
    if name != "plateacquisitions":
        lists = (f"{name}/", *lists)
    return [Endpoint(f"api:list:{name}", tuple(f"{M}/{p}" for p in lists), lambda ctx: list_view(ctx, kind), AUTH_API),
            Endpoint(f"api:object:{name}", (f"{M}/{name}/{{id:int}}/",), lambda ctx: object_view(ctx, kind), AUTH_API)]


ENDPOINTS = [
    Endpoint("api:versions", ("/api/",), versions, AUTH_NONE),
    Endpoint("api:base", ("/api/v0/",), base, AUTH_NONE),
    Endpoint("api:token", ("/api/v0/token/",), token, AUTH_NONE),
    Endpoint("api:servers", ("/api/v0/servers/",), servers, AUTH_NONE),
    Endpoint("api:login", ("/api/v0/login/",), login, AUTH_NONE, ("GET", "POST")),
    *(ep for name, kind in KINDS.items() for ep in _kind_endpoints(name, kind)),
]
