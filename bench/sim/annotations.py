"""Annotations: deterministic map annotations (key-value pairs derived from ids) on screens, plates,
wells and images, a bulk-annotation table (OMERO.tables FileAnnotation) on every screen, and the views
that answer them: `/webclient/api/annotations/`, `/webgateway/annotations/<objtype>/<objid>/` and
`/webgateway/table/<fileid>/query/`.

Every annotation is owned, linked and dated like its object; ids are per-kind bases plus arithmetic
on the object id, so nothing is stored and the `idr` preset costs nothing extra.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterator

from starlette.responses import HTMLResponse, Response

from bench.sim.catalog import EPOCH, Catalog, Image, Owned, Plate, Screen, User, Well, row_label
from bench.sim.http import Ctx, Endpoint
from bench.sim.jsonp import JSONP_WEB, ViewError
from bench.sim.permissions import perms
from bench.sim.webparams import ANNOTATIONS_LIMIT, BadLong, get_list, get_long, marshal_date, page_of

NS_CLIENT = "openmicroscopy.org/omero/client/mapAnnotation"
NS_STUDY = "idr.openmicroscopy.org/study/info"
NS_GENE = "openmicroscopy.org/mapr/gene"
NS_PHENOTYPE = "openmicroscopy.org/mapr/phenotype"
NS_BULK = "openmicroscopy.org/omero/bulk_annotations"      # omero.constants.namespaces.NSBULKANNOTATIONS
ANN_BASE = {"ScreenI": 60_000_000, "PlateI": 61_000_000, "WellI": 62_000_000, "ImageI": 64_000_000}
BULK_ANN_BASE = 70_000_000          # + screen id
FILE_BASE = 7_000_000               # the table's OriginalFile id: + screen id
MAX_TABLE_DOWNLOAD_ROWS = 10000     # omero.web.max_table_download_rows
GENES = ("CDC42", "RAC1", "PLK1", "AURKB", "KIF11", "TUBB", "ACTB", "MAPK1", "CCNB1", "BUB1")
PHENOTYPES = (("mitotic arrest", "CMPO_0000283"), ("elongated cell", "CMPO_0000077"),
              ("large nucleus", "CMPO_0000140"), ("binucleated", "CMPO_0000212"))
ORGANISMS = ("Homo sapiens", "Mus musculus", "Saccharomyces cerevisiae")
QUERY_TYPES = ("Image", "Dataset", "Project", "Well", "Acquisition", "Plate", "Screen")   # wc/views.py:1346-1354
MARSHAL_ORDER = ("ProjectI", "DatasetI", "ImageI", "ScreenI", "PlateI", "PlateAcquisitionI", "WellI")  # tree.py:2008-2016


@dataclass(frozen=True)
class Ann:
    """One annotation and its link to `parent` (the link has the annotation's id, in its own id space)."""
    id: int
    cls: str                     # "MapAnnotationI" | "FileAnnotationI"
    ns: str
    parent_cls: str
    parent: Owned | Well | Image
    values: tuple[tuple[str, str], ...] = ()
    file_id: int = 0
    file_size: int = 0

    @property
    def owner_id(self) -> int:
        return self.parent.owner_id

    @property
    def group_id(self) -> int:
        return self.parent.group_id

    @property
    def created(self) -> int:
        return EPOCH + 7 * 86400 + (self.id % 86400) * 10


def well_pos(well: Well) -> str:
    """WellWrapper.getWellPos with letter rows and numbered columns: `A1`."""
    return f"{row_label(well.row)}{well.col + 1}"


def parent_name(obj: Owned | Well | Image) -> str:
    return well_pos(obj) if isinstance(obj, Well) else obj.name


def _ann(cls_: str, obj: Owned | Well | Image, k: int, ns: str, values: list[tuple[str, str]]) -> Ann:
    return Ann(ANN_BASE[cls_] + 2 * obj.id + k, "MapAnnotationI", ns, cls_, obj, tuple(values))


def map_annotations(cat: Catalog, cls_: str, obj: Owned | Well | Image) -> list[Ann]:
    """The map annotations of one object, in `order by ch.ns` (tree.py:2036)."""
    if cls_ == "ScreenI":
        rv = [_ann(cls_, obj, 0, NS_CLIENT, [("Study Type", "high content screen"),
                                             ("Organism", ORGANISMS[obj.id % len(ORGANISMS)]),
                                             ("Screen Number", str(obj.id))]),
              _ann(cls_, obj, 1, NS_STUDY, [("Study Title", f"Simulated study {obj.name}"),
                                            ("Imaging Method", "fluorescence microscopy"),
                                            ("Publication DOI", f"10.0000/sim.{obj.id}")])]
    elif cls_ == "PlateI":
        rv = [_ann(cls_, obj, 0, NS_CLIENT, [("Plate Name", obj.name), ("Rows", str(obj.rows)),
                                             ("Columns", str(obj.cols)), ("Fields", str(obj.fields))])]
    elif cls_ == "WellI":
        rv = [_ann(cls_, obj, 0, NS_GENE, [("Gene Identifier", f"ENSG{obj.id:011d}"),
                                           ("Gene Symbol", GENES[obj.id % len(GENES)])])]
        if obj.id % 3 == 0:
            term, acc = PHENOTYPES[obj.id % len(PHENOTYPES)]
            rv.append(_ann(cls_, obj, 1, NS_PHENOTYPE, [("Phenotype", term), ("Phenotype Term Accession", acc)]))
    elif cls_ == "ImageI":
        channels = "DAPI;GFP;Cy5" if obj.plate_id else ";".join(f"Ch{c + 1}" for c in range(obj.pixels.size_c))
        rv = [_ann(cls_, obj, 0, NS_CLIENT, [("Channels", channels), ("Image Id", str(obj.id)),
                                             ("Field", str((obj.field or 0) + 1))])]
    else:
        rv = []
    return sorted(rv, key=lambda a: (a.ns, a.id))


def bulk_annotation(screen: Screen) -> Ann:
    return Ann(BULK_ANN_BASE + screen.id, "FileAnnotationI", NS_BULK, "ScreenI", screen,
               file_id=FILE_BASE + screen.id, file_size=4096 + 97 * len(screen.plate_ids))


def annotations_of(cat: Catalog, cls_: str, obj: Owned | Well | Image) -> list[Ann]:
    rv = map_annotations(cat, cls_, obj)
    if cls_ == "ScreenI":
        rv = sorted(rv + [bulk_annotation(obj)], key=lambda a: (a.ns, a.id))
    return rv


def lookup(cat: Catalog, cls_: str, obj_id: int) -> Owned | Well | Image | None:
    if cls_ == "ImageI":
        return cat.image(obj_id)
    if cls_ == "WellI":
        return cat.well(obj_id)
    table = {"ScreenI": cat.screens, "PlateI": cat.plates, "PlateAcquisitionI": cat.acquisitions,
             "ProjectI": cat.projects, "DatasetI": {k: d for k, d in cat.datasets.items() if not d.orphan}}
    return table[cls_].get(obj_id)


def parents(cat: Catalog, cls_: str, obj: Owned | Well | Image) -> Iterator[tuple[str, int]]:
    """marshal_lineage's rows (tree.py:2139-2200): an image's dataset, project, well, run, plate, screen;
    a well's or run's plate and screen; a plate's screen; a dataset's project."""
    plate: Plate | None = None
    if cls_ == "ImageI":
        if obj.dataset_id is not None:
            yield "DatasetI", obj.dataset_id
            project = cat.datasets[obj.dataset_id].project_id
            if project is not None:
                yield "ProjectI", project
        if obj.well_id is not None:
            yield "WellI", obj.well_id
            if obj.acquisition_id is not None:
                yield "PlateAcquisitionI", obj.acquisition_id
            plate = cat.plates[obj.plate_id]
    elif cls_ == "WellI":
        plate = obj.plate
    elif cls_ == "PlateAcquisitionI":
        plate = cat.plates[obj.plate_id]
    elif cls_ == "PlateI" and obj.screen_id is not None:
        yield "ScreenI", obj.screen_id
    elif cls_ == "DatasetI" and obj.project_id is not None:
        yield "ProjectI", obj.project_id
    if plate is not None:
        yield "PlateI", plate.id
        if plate.screen_id is not None:
            yield "ScreenI", plate.screen_id


# ---- JSON -----------------------------------------------------------------------------------------
def _experimenter(u: User) -> dict:
    """_marshal_exp_obj (tree.py:1956-1962)."""
    return {"id": u.id, "omeName": u.name, "firstName": u.first, "lastName": u.last}


def ann_json(ctx: Ctx, a: Ann) -> dict:
    """_marshal_annotation (tree.py:1863-1940) with its link."""
    p = perms(ctx.catalog, ctx.user, a.owner_id, a.group_id).annotation_dict()
    rv: dict = {"id": a.id, "ns": a.ns, "name": None, "description": None, "owner": {"id": a.owner_id},
                "date": marshal_date(a.created), "permissions": dict(p),
                "link": {"id": a.id, "owner": {"id": a.owner_id},
                         "parent": {"id": a.parent.id, "class": a.parent_cls, "name": parent_name(a.parent)},
                         "date": marshal_date(a.created), "permissions": dict(p)},
                "class": a.cls}
    if a.cls == "MapAnnotationI":
        rv["values"] = [list(kv) for kv in a.values]
    else:
        rv["file"] = {"id": a.file_id, "name": "bulk_annotations", "size": a.file_size, "path": "/",
                      "mimetype": "OMERO.tables"}
        rv["permissions"]["canDownload"] = True
    return rv


def _type_ok(a: Ann, ann_type: str | None, ns: str | None) -> bool:
    """The `type` and `ns` clauses of marshal_annotations (tree.py:1983-2004)."""
    if ns is not None and a.ns != ns:
        return False
    if ann_type == "map":
        return a.cls == "MapAnnotationI"
    if ann_type == "file":
        return a.cls == "FileAnnotationI"
    return ann_type in (None, "") or ann_type not in ("tag", "comment", "rating", "custom")


async def api_annotations(ctx: Ctx) -> Response:
    """api_annotations (wc/views.py:1336-1406): `type`, `ns`, repeated object ids, `page`/`limit` per
    object kind, and with `parents=true` also the parents' annotations with the lineage that links them.
    Bad ints are not caught there: Django's 500."""
    cat = ctx.catalog
    try:
        page = get_long(ctx, "page", 1)
        limit = get_long(ctx, "limit", ANNOTATIONS_LIMIT)
        requested: dict[str, list[int]] = {}
        for t in QUERY_TYPES:
            cls_ = ("PlateAcquisition" if t == "Acquisition" else t) + "I"
            requested[cls_] = [int(v) for v in get_list(ctx, t.lower())]
    except (BadLong, ValueError):
        return HTMLResponse("<h1>Server Error (500)</h1>", status_code=500)
    ann_type, ns = ctx.q.get("type"), ctx.q.get("ns")
    with_parents = ctx.q.get("parents", "false") == "true"
    async with ctx.work("annotations"):
        found = {cls_: {i: obj for i in ids if (obj := lookup(cat, cls_, i)) is not None and cat.can_read(ctx.user, obj)}
                 for cls_, ids in requested.items()}
        to_query = {cls_: dict(objs) for cls_, objs in found.items()}
        lineage: dict[str, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
        if with_parents:
            for cls_, objs in found.items():
                for obj in objs.values():
                    ref = {"id": obj.id, "class": cls_, "name": parent_name(obj)}
                    for pcls, pid in parents(cat, cls_, obj):
                        to_query[pcls].setdefault(pid, lookup(cat, pcls, pid))
                        lineage[pcls][pid].append(ref)
        anns: list[Ann] = []
        for cls_ in MARSHAL_ORDER:
            hits = [a for obj in to_query[cls_].values() for a in annotations_of(cat, cls_, obj) if _type_ok(a, ann_type, ns)]
            anns += page_of(sorted(hits, key=lambda a: (a.ns, a.id)), page, limit or 0)
        users = {u: cat.users[u] for u in sorted({a.owner_id for a in anns})}
        rows = [(a, ann_json(ctx, a)) for a in anns]
        experimenters = [_experimenter(u) for u in users.values()]
        if not with_parents:
            return ctx.json({"annotations": [j for _, j in rows], "experimenters": experimenters})
        mine = [j for a, j in rows if a.parent.id in requested[a.parent_cls]]
        parent_rows = [(a, j) for a, j in rows if a.parent_cls != "ImageI" and lineage[a.parent_cls].get(a.parent.id)]
        lineage_out: dict[str, dict[str, list[dict]]] = {}
        for a, _ in parent_rows:
            lineage_out.setdefault(a.parent_cls, {})[str(a.parent.id)] = lineage[a.parent_cls][a.parent.id]
        return ctx.json({"annotations": mine,
                         "parents": {"annotations": [j for _, j in parent_rows], "lineage": lineage_out},
                         "experimenters": experimenters})


# ---- webgateway: bulk annotations and their tables ----------------------------------------------------
# objtype chains `_bulk_file_annotations` can resolve here (gw/views.py:2951-3037): the class the id names
CHAINS = {("Screen",): "ScreenI", ("Screen", "plateLinks", "child"): "PlateI",
          ("Screen", "plateLinks", "child", "wells"): "WellI", ("Plate",): "PlateI", ("Plate", "wells"): "WellI",
          ("Well",): "WellI", ("Image",): "ImageI", ("Project",): "ProjectI", ("Dataset",): "DatasetI",
          ("PlateAcquisition",): "PlateAcquisitionI"}


def _screen_of(cat: Catalog, cls_: str, obj: Owned | Well | Image) -> Screen | None:
    if cls_ == "ScreenI":
        return obj
    if cls_ in ("PlateI", "WellI"):
        plate = obj if cls_ == "PlateI" else obj.plate
        return cat.screens.get(plate.screen_id) if plate.screen_id is not None else None
    return None


def _hql(chain: list[str]) -> str:
    q = f"select obj0 from {chain[0]} obj0\n"
    for i, prop in enumerate(chain[1:]):
        q += f"join fetch obj{i}.{prop} obj{i + 1}\n"
    return q + f"left outer join fetch obj0.annotationLinks links ... where obj{len(chain) - 1}.id=:id"


async def bulk_annotations(ctx: Ctx) -> Response:
    """`annotations/<objtype>/<objid>/`: the OMERO.tables FileAnnotations on the first object of the chain
    (only screens have one here); a chain HQL cannot resolve is `{"error", "query"}`."""
    chain = ctx.request.path_params["objtype"].split(".")
    cls_ = CHAINS.get(tuple(chain))
    if cls_ is None:
        return ctx.json({"error": f"{chain!r} cannot be queried", "query": _hql(chain)})
    async with ctx.work("annotations"):
        cat = ctx.catalog
        obj = lookup(cat, cls_, ctx.path_int("objid"))
        data = []
        if obj is not None and cat.can_read(ctx.user, obj) and chain[0] == "Screen":
            screen = _screen_of(cat, cls_, obj)
            if screen is not None:
                a = bulk_annotation(screen)
                owner = cat.users[a.owner_id].full_name
                data.append({"id": a.id, "name": "bulk_annotations", "file": a.file_id, "ns": a.ns,
                             "parentType": chain[0], "parentId": screen.id, "owner": owner, "addedBy": owner,
                             "addedOn": a.created * 1000})
        return ctx.json({"data": data})


COLUMNS = (("Screen", "ScreenColumn"), ("Plate", "PlateColumn"), ("Well", "WellColumn"),
           ("Plate Name", "StringColumn"), ("Well Name", "StringColumn"), ("Gene Symbol", "StringColumn"),
           ("Number of Images", "LongColumn"))
_EQ = re.compile(r"^\(?\s*(\w+)\s*==\s*(-?\d+)\s*\)?$")
_WORD_NUMBER = re.compile(r"^(\w+)-(\d+)")


def table_rows(cat: Catalog, screen: Screen) -> list[list]:
    """One row per well holding images, plate by plate (the screen's order), wells by id."""
    rows = []
    for pid in screen.plate_ids:
        plate = cat.plates[pid]
        for index in range(plate.n_wells):
            if plate.is_empty(index):
                continue
            row, col = divmod(index, plate.cols)
            well = cat.well_at(plate, row, col)
            rows.append([screen.id, plate.id, well.id, plate.name, well_pos(well), GENES[well.id % len(GENES)],
                         plate.fields])
    return rows


def _table_screen(cat: Catalog, ctx: Ctx, file_id: int) -> Screen | None:
    screen = cat.screens.get(file_id - FILE_BASE)
    return screen if screen is not None and cat.can_read(ctx.user, screen) else None


async def table_query(ctx: Ctx) -> Response:
    """table_query (gw/views.py:3040-3196): `query` `*`, `(col==n)` or `Col-n`; `col_names`, `offset`, `limit`."""
    file_id = ctx.path_int("fileid")
    query = ctx.q.get("query")
    if not query:
        return ctx.json({"error": "Must specify query parameter, use * to retrieve all"})
    offset = int(ctx.q.get("offset") or 0)
    limit_raw = ctx.q.get("limit")
    limit = int(limit_raw) if limit_raw is not None else None
    async with ctx.work("table"):
        screen = _table_screen(ctx.catalog, ctx, file_id)
        if screen is None:
            return ctx.json({"error": f"Table {file_id} not found"})
        names = [n for n, _ in COLUMNS]
        wanted = [c for c in ctx.q.getlist("col_names") if c in names]
        indices = [names.index(c) for c in wanted] if wanted else list(range(len(COLUMNS)))
        rows = table_rows(ctx.catalog, screen)
        end = min(len(rows), offset + (limit if limit is not None else len(rows)))
        if query == "*":
            hits, total = list(range(offset, end)), len(rows)
        else:
            if m := _WORD_NUMBER.match(query):
                query = f"({m.group(1)}=={m.group(2)})"
            m = _EQ.match(query)
            if m is None or m.group(1) not in names:
                return ctx.json({"error": f"Error executing query: {query}"})
            col, value = names.index(m.group(1)), int(m.group(2))
            matching = [i for i, r in enumerate(rows) if r[col] == value]
            hits, total = matching[offset:end], len(matching)
        if len(hits) > MAX_TABLE_DOWNLOAD_ROWS:
            return ctx.json({"error": f"Trying to download {len(hits)} rows exceeds configured "
                                      f"omero.web.max_table_download_rows of {MAX_TABLE_DOWNLOAD_ROWS}", "status": 404})
        return ctx.json({"data": {"column_types": [COLUMNS[i][1] for i in indices], "columns": [names[i] for i in indices],
                                  "rows": [[rows[h][i] for i in indices] for h in hits]},
                         "meta": {"rowCount": len(rows), "totalCount": total, "limit": limit, "offset": offset}})


def _bad_int(exc: ValueError) -> ViewError:
    return ViewError("ValueError", str(exc))


async def table_query_view(ctx: Ctx) -> Response:
    try:
        return await table_query(ctx)
    except ValueError as exc:     # int(offset) / int(limit) inside @jsonp: its JSON 500
        raise _bad_int(exc) from None


WC, GW = "/webclient", "/webgateway"
ENDPOINTS = [
    Endpoint("webclient:api_annotations", (f"{WC}/api/annotations/",), api_annotations),
    Endpoint("annotations", (f"{GW}/annotations/{{objtype}}/{{objid:int}}/",), bulk_annotations,
             jsonp=JSONP_WEB),
    Endpoint("table_query", (f"{GW}/table/{{fileid:int}}/query/",), table_query_view, jsonp=JSONP_WEB),
]
