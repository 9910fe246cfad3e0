"""The webclient's HTML fragments: the right-hand panel (`metadata_details`), an image's tabs
(`metadata_acquisition`, `metadata_preview`, `metadata_hierarchy`) and the plate page (`load_plate`).

The markup is the sim's own, shaped like OMERO.web's templates (metadata_general.html,
metadata_acquisition.html, metadata_preview.html, metadata_hierarchy.html, data/plate.html) and of a
similar size (several KB: inline scripts, toolbars, the core-metadata table, the annotation panes).
What matters for a cache is kept exact: the body depends on the object, `index` and the viewer's
permission flags only; the comment form with its `csrfmiddlewaretoken` is there only when the viewer
may annotate the object (metadata_general_comment.html:30-31 `{% if manager.canAnnotate %}`), and then
Django sets the `csrftoken` cookie if the request had none. An object the viewer cannot read is
handlerInternalError's 404 (feedback/views.py:235-251): the message alone for an AJAX request, else a page.
"""
from __future__ import annotations

import html
import json
from dataclasses import dataclass
from typing import Callable

from starlette.responses import HTMLResponse, Response

from bench.sim.annotations import annotations_of, parent_name
from bench.sim.catalog import Catalog, Dataset, Image, Owned, Plate, Project, Screen, User, Well
from bench.sim.http import Ctx, Endpoint, HTTPError, error
from bench.sim.permissions import Perms, perms
from bench.sim.rendering import EMISSION, NAMES
from bench.sim.sessions import csrf_token_for, use_csrf
from bench.sim.tree import fileset_id
from bench.sim.webparams import marshal_date

WC = "/webclient"
CLASSES = {"project": "ProjectI", "dataset": "DatasetI", "image": "ImageI", "screen": "ScreenI",
           "plate": "PlateI", "acquisition": "PlateAcquisitionI", "well": "WellI"}
LABELS = {"project": "Project", "dataset": "Dataset", "image": "Image", "screen": "Screen", "plate": "Plate",
          "acquisition": "Plate Acquisition", "well": "Well"}
MAX_PLANE = 3192 * 3192


def e(value: object) -> str:
    return html.escape(str(value), quote=True)


@dataclass
class Target:
    """The panel's object (BaseContainer's manager) and what the viewer may do with it."""
    c_type: str
    obj: Owned | Well | Image
    perms: Perms
    image: Image | None = None    # the image itself, or the well's image at `index`


def _lookup(cat: Catalog, c_type: str, c_id: int) -> Owned | Well | Image | None:
    if c_type == "image":
        return cat.image(c_id)
    if c_type == "well":
        return cat.well(c_id)
    table: dict = {"project": cat.projects, "screen": cat.screens, "plate": cat.plates,
                   "acquisition": cat.acquisitions,
                   "dataset": {k: d for k, d in cat.datasets.items() if not d.orphan}}.get(c_type, {})
    return table.get(c_id)


def not_found(ctx: Ctx, label: str, c_id: object) -> HTTPError:
    """BaseContainer.assertNotNone's AttributeError answered by handlerInternalError."""
    message = (f"We are sorry, but that {label} (id:{c_id}) does not exist, or if it does, "
               "you have no permission to see it.")
    if ctx.request.headers.get("x-requested-with") == "XMLHttpRequest":
        return HTTPError(HTMLResponse(message, status_code=404))
    page = (f"<!DOCTYPE html><html><head><title>OMERO.web - Error</title></head><body><div class=\"error\">"
            f"<h1>Not Found</h1><p>{e(message)}</p></div></body></html>")
    return HTTPError(HTMLResponse(page, status_code=404))


def target(ctx: Ctx, c_type: str, c_id: int, index: int = 0, types: tuple[str, ...] = tuple(CLASSES)) -> Target:
    """The readable object of the path; a type outside the URL pattern's is Django's 404."""
    if c_type not in types:
        raise error(404, "Not Found", "text/html")
    obj = _lookup(ctx.catalog, c_type, c_id)
    if obj is None or not ctx.catalog.can_read(ctx.user, obj):
        raise not_found(ctx, LABELS.get(c_type, c_type.capitalize()), c_id)
    image = obj if isinstance(obj, Image) else None
    if isinstance(obj, Well):
        found = ctx.catalog.well_images(obj, range(index, index + 1))
        image = found[0] if found else None
    return Target(c_type, obj, perms(ctx.catalog, ctx.user, obj.owner_id, obj.group_id), image)


def _int_index(ctx: Ctx) -> int:
    """getIntOrDefault(request, "index", 0) (a bad value: OMERO's 500; here 400 like the other bad ints)."""
    return ctx.int_param("index", 0) or 0


# ---- pieces ---------------------------------------------------------------------------------------
def _owner(cat: Catalog, obj: Owned | Well | Image) -> User:
    return cat.users[obj.owner_id]


def _toolbar(t: Target, webindex: str) -> str:
    oid = t.obj.id
    links = [f'<li><a href="{webindex}?show={t.c_type}-{oid}" title="Link to this {LABELS[t.c_type]}" '
             f'class="btn_link" data-obj="{t.c_type}-{oid}"><span></span></a></li>']
    if t.image is not None:
        links += [f'<li><a href="{webindex}img_detail/{t.image.id}/" target="_blank" class="btn_view" '
                  f'title="Open full image viewer in new window"><span></span></a></li>',
                  f'<li><a href="/webgateway/render_image/{t.image.id}/" class="btn_download" '
                  f'title="Download as JPEG"><span></span></a></li>']
    links.append('<li class="figure_scripts_menu"><button class="btn_fig silver" title="Figure scripts">'
                 '<span></span></button><ul class="figure_scripts_list menu_options" style="display:none">'
                 '<li><a href="#" data-url="/webclient/figure_script/SplitView/">Split View Figure</a></li>'
                 '<li><a href="#" data-url="/webclient/figure_script/Thumbnail/">Thumbnail Figure</a></li>'
                 '<li><a href="#" data-url="/webclient/figure_script/MakeMovie/">Make Movie</a></li></ul></li>')
    return (f'<div class="toolbar_noborder" id="toolbar_{t.c_type}"><ul class="toolbar">{"".join(links)}'
            f'</ul><div class="clear_float"></div></div>')


def _name_block(t: Target, name: str) -> str:
    edit = (f'<button class="btn_edit" title="Edit Name" data-url="{WC}/action/savename/{t.c_type}/{t.obj.id}/">'
            '<span></span></button>') if t.perms.can_edit else ""
    return (f'<div class="data_heading" id="{t.c_type}_name_container"><h1 id="{t.c_type}name-{t.obj.id}" '
            f'class="can_edit_name">{e(name)}</h1>{edit}<p class="data_heading_id">'
            f'<strong>{LABELS[t.c_type]} ID:</strong> <span>{t.obj.id}</span></p></div>')


def _description(t: Target, text: str) -> str:
    edit = (f'<button class="btn_edit" title="Edit Description" data-url="{WC}/action/savedescription/'
            f'{t.c_type}/{t.obj.id}/"><span></span></button>') if t.perms.can_edit else ""
    return (f'<div class="description"><span id="description-{t.obj.id}" class="can_edit_description">'
            f'{e(text) if text else "<em>no description</em>"}</span>{edit}</div>')


def _row(label: str, value: object, cls: str = "") -> str:
    return f'<tr class="{cls}"><th>{e(label)}:</th><td>{value}</td></tr>'


def _owner_rows(cat: Catalog, obj: Owned | Well | Image, created: int) -> list[str]:
    owner = _owner(cat, obj)
    group = cat.groups[obj.group_id]
    return [_row("Owner", f'<span class="owner" data-id="{owner.id}">{e(owner.full_name)}</span>'),
            _row("Group", f'<span class="group" data-id="{group.id}" data-perms="{group.perm}">{e(group.name)}</span>'),
            _row("Created", marshal_date(created))]


def _image_rows(cat: Catalog, image: Image) -> list[str]:
    px = image.pixels
    physical = f"{px.physical_size} µm" if px.physical_size else "-"
    channels = ", ".join(NAMES[c % len(NAMES)] for c in range(px.size_c))
    rows = [_row("Image ID", image.id), _row("Acquisition Date", marshal_date(image.created)),
            _row("Import Date", marshal_date(image.created + 86400)),
            _row("Dimensions (XY)", f"{px.size_x} x {px.size_y}"), _row("Pixels Type", "uint16"),
            _row("Pixels Size (XYZ)", f"{physical} x {physical} x -"),
            _row("Z-sections/Timepoints", f"{px.size_z} x {px.size_t}"), _row("Channels", e(channels)),
            _row("Fileset", f'<a href="#" class="show_fileset" data-fileset="{fileset_id(image)}">'
                            f'Fileset {fileset_id(image)}</a>')]
    if px.pyramid:
        rows.append(_row("Resolution levels", px.levels))
    if image.well_id is not None:
        well = cat.well(image.well_id)
        rows += [_row("Well", f'{e(parent_name(well))} (field {image.field + 1})'),
                 _row("Position", f"X: {100.0 * image.field} µm, Y: {100.0 * image.field} µm")]
    return rows


def _object_rows(ctx: Ctx, t: Target, index: int) -> list[str]:
    cat, obj = ctx.catalog, t.obj
    if isinstance(obj, Screen):
        return [_row("Plates", len(obj.plate_ids)), _row("Protocol", "-"), _row("Reagent Set", "-")]
    if isinstance(obj, Plate):
        runs = ", ".join(e(a.name) for a in obj.acquisitions) or "-"
        return [_row("Rows x Columns", f"{obj.rows} x {obj.cols}"), _row("Fields", obj.fields),
                _row("Wells", obj.n_wells), _row("Acquisitions", runs),
                _row("Screen", obj.screen_id if obj.screen_id is not None else "-")]
    if isinstance(obj, Project):
        return [_row("Datasets", len(obj.dataset_ids))]
    if isinstance(obj, Dataset):
        return [_row("Images", obj.n_images)]
    if isinstance(obj, Well):
        return [_row("Plate", f'{e(obj.plate.name)} ({obj.plate.id})'), _row("Field", index + 1),
                _row("Images in well", len(cat.well_images(obj)))]
    return []


def _annotation_panes(ctx: Ctx, t: Target, csrf: str | None) -> str:
    cls_ = CLASSES[t.c_type]
    anns = annotations_of(ctx.catalog, cls_, t.obj) if cls_ in ("ScreenI", "PlateI", "WellI", "ImageI") else []
    n_map = sum(a.cls == "MapAnnotationI" for a in anns)
    n_file = len(anns) - n_map
    panes = []
    for name, label, count in (("tags", "Tags", 0), ("mapAnnotations", "Key-Value Pairs", n_map),
                               ("tables", "Tables", n_file), ("files", "Attachments", n_file),
                               ("ratings", "Ratings", 0), ("others", "Others", 0)):
        add = (f'<button class="btn_add" title="Add {label}" data-target="{name}"><span></span></button>'
               if t.perms.can_annotate else "")
        panes.append(f'<div id="{name}Pane"><h1 class="can-collapse closed" data-name="{name}">{label}'
                     f'<span class="annotationCount">{count}</span></h1><div class="annotations_section" '
                     f'style="display: none" data-name="{name}">{add}<div id="{name}_spinner" '
                     f'class="hidden_spinner"><img class="loader" alt="Loading" '
                     f'src="/static/webgateway/img/spinner.gif"> Loading...</div>'
                     f'<div id="{name}_container" class="lnannotations"></div></div></div>')
    form = ""
    if csrf is not None:
        form = (f'<form id="add_comment_form" action="{WC}/annotate_comment/" method="post">'
                f'<input type="hidden" name="csrfmiddlewaretoken" value="{csrf}">'
                f'<input type="hidden" name="{t.c_type}" value="{t.obj.id}"><table><tr><td>'
                '<div id="add_comment_wrapper" style="position: relative"><label class="inline_label" '
                'for="id_comment">Add Comment:</label><textarea cols="39" id="id_comment" name="comment" '
                'rows="2"></textarea></div></td></tr><tr><td><input type="submit" value="Add Comment" '
                'style="display:none" /></td></tr></table></form>')
    panes.append('<div id="commentsPane"><h1 class="can-collapse closed" data-name="comments">Comments'
                 '<span class="annotationCount">0</span></h1><div class="annotations_section" '
                 f'style="display: none" data-name="comments">{form}<div id="comments_spinner" '
                 'class="hidden_spinner">Loading...</div><div id="comments_container" class="lncomments">'
                 '</div></div></div>')
    return "".join(panes)


def _panel_script(t: Target, index: int) -> str:
    setup = {"type": t.c_type, "id": t.obj.id, "index": index, "canAnnotate": t.perms.can_annotate,
             "canEdit": t.perms.can_edit, "permsCss": t.perms.css(),
             "image": t.image.id if t.image is not None else None}
    return f"""<script type="text/javascript">
$(function() {{
    var OBJ = {json.dumps(setup)};
    // the panes load their own JSON: map annotations, files, tags, comments, ratings
    var annPanes = ["tags", "mapAnnotations", "files", "comments", "ratings", "others"];
    var objects = [OBJ.type + "-" + OBJ.id];
    if (OME.setupAnnPane) {{
        annPanes.forEach(function(name) {{
            OME.setupAnnPane(name, {{
                'selected': objects,
                'canAnnotate': OBJ.canAnnotate,
                'url': "{WC}/api/annotations/?type=" + name + "&" + OBJ.type + "=" + OBJ.id
            }});
        }});
    }}
    // collapse and expand sections, remembering their state
    $(".can-collapse").on("click", function() {{
        var $h = $(this), name = $h.attr("data-name");
        $h.toggleClass("closed").next().slideToggle();
        if (OME.setPaneExpanded) {{ OME.setPaneExpanded(name, !$h.hasClass("closed")); }}
    }});
    // name and description editing only when permitted
    if (OBJ.canEdit) {{
        $(".btn_edit").on("click", function() {{
            var url = $(this).attr("data-url");
            OME.editInPlace && OME.editInPlace($(this).prev(), url);
            return false;
        }});
    }}
    // the hierarchy button loads metadata_hierarchy into the panel
    $("#show_hierarchy").on("click", function() {{
        $("#hierarchy_panel").load("{WC}/metadata_hierarchy/" + OBJ.type + "/" + OBJ.id + "/");
        return false;
    }});
    // figure scripts menu
    $(".figure_scripts_menu button").on("click", function(event) {{
        $(this).next().toggle();
        event.stopPropagation();
    }});
    $("body").on("click", function() {{ $(".figure_scripts_list").hide(); }});
}});
</script>"""


# ---- views ------------------------------------------------------------------------------------------
def _csrf_for(ctx: Ctx, t: Target) -> str | None:
    """The form's token, only when the viewer may annotate (`{% csrf_token %}` inside the `{% if %}`)."""
    return csrf_token_for(ctx.request) if t.perms.can_annotate else None


def _created(obj: Owned | Well | Image) -> int:
    return getattr(obj, "created", None) or 1_600_000_000 + (obj.id % 86400) * 60


def _details_body(ctx: Ctx, t: Target, index: int, csrf: str | None) -> str:
    cat, obj = ctx.catalog, t.obj
    name = parent_name(obj)
    description = getattr(obj, "description", "") or ""
    rows = _owner_rows(cat, obj, _created(obj)) + _object_rows(ctx, t, index)
    sections = [_toolbar(t, f"{WC}/"), _name_block(t, name), _description(t, description),
                f'<table class="metadata_general core_metadata" id="general_{t.c_type}">{"".join(rows)}</table>']
    if t.image is not None and t.image is not obj:
        sections += ['<h2 class="well_image_heading">Image</h2>', _name_block(Target("image", t.image, t.perms), t.image.name),
                     f'<table class="metadata_general core_metadata">{"".join(_image_rows(cat, t.image))}</table>']
    elif t.image is not None:
        sections.append(f'<table class="metadata_general core_metadata">{"".join(_image_rows(cat, t.image))}</table>')
    sections.append('<div id="hierarchy_panel"><button id="show_hierarchy" class="btn silver">Show parent '
                    'containers</button></div>')
    return (f'<div class="right_tab_inner" id="metadata_general" data-type="{t.c_type}" data-id="{obj.id}">'
            f'{_panel_script(t, index)}<div class="metadata_details">{"".join(sections)}</div>'
            f'<div class="annotations_panes">{_annotation_panes(ctx, t, csrf)}</div></div>')


async def metadata_details(ctx: Ctx) -> Response:
    """load_metadata_details (wc/views.py:1710-1806): metadata_general.html for one object; a share
    segment would switch to annotations_share.html, and the sim has no shares (OMERO then finds none)."""
    index = _int_index(ctx)
    t = target(ctx, ctx.request.path_params["c_type"], ctx.path_int("c_id"), index)
    csrf = _csrf_for(ctx, t)
    async with ctx.work("metadata_details"):
        response = HTMLResponse(_details_body(ctx, t, index, csrf))
        return use_csrf(response, csrf) if csrf else response


def _channel_section(c: int, image: Image) -> str:
    name = NAMES[c % len(NAMES)]
    em = EMISSION[c % len(EMISSION)]
    fields = [("Name", name), ("Excitation", f"{em - 40} nm"), ("Emission", f"{em} nm"),
              ("Illumination", "Epifluorescence"), ("Contrast Method", "Fluorescence"),
              ("Mode", "WideField"), ("Pinhole Size", "-"), ("ND Filter", "-"), ("Fluor", name)]
    rows = "".join(f'<tr><th>{k}:</th><td><span class="value">{e(v)}</span></td></tr>' for k, v in fields)
    return (f'<div class="channel_metadata" data-channel="{c}"><h2 class="can-collapse">Channel {c + 1}: '
            f'{name}</h2><div><table class="metadata_acquisition">{rows}'
            f'<tr><th>Detector:</th><td>CCD camera (gain 1.0, offset 0, binning 1x1)</td></tr>'
            f'<tr><th>Light source:</th><td>LED {em - 40} nm, power 50%</td></tr></table></div></div>')


async def metadata_acquisition(ctx: Ctx) -> Response:
    """load_metadata_acquisition (wc/views.py:1886-2176): channels, objective, microscope, environment."""
    t = target(ctx, ctx.request.path_params["c_type"], ctx.path_int("c_id"))
    async with ctx.work("metadata_acquisition"):
        parts = ['<div class="right_tab_inner" id="metadata_acquisition">']
        if t.image is not None and t.c_type == "image":
            px = t.image.pixels
            parts.append('<h1>Image</h1><table class="metadata_acquisition">'
                         f'<tr><th>Acquisition Date:</th><td>{marshal_date(t.image.created)}</td></tr>'
                         f'<tr><th>Dimensions:</th><td>{px.size_x} x {px.size_y} x {px.size_z} x {px.size_c} x {px.size_t}</td></tr>'
                         '</table><h1>Channels</h1>')
            parts += [_channel_section(c, t.image) for c in range(px.size_c)]
            parts.append('<h1>Objective</h1><table class="metadata_acquisition"><tr><th>Model:</th><td>Plan Apo</td>'
                         '</tr><tr><th>Nominal Magnification:</th><td>20</td></tr><tr><th>Lens NA:</th><td>0.75</td></tr>'
                         '<tr><th>Immersion:</th><td>Air</td></tr><tr><th>Correction:</th><td>PlanApo</td></tr>'
                         '<tr><th>Working Distance:</th><td>1.0 mm</td></tr></table>'
                         '<h1>Microscope</h1><table class="metadata_acquisition"><tr><th>Manufacturer:</th>'
                         '<td>Simulated Optics</td></tr><tr><th>Model:</th><td>SIM-1000</td></tr><tr><th>Type:</th>'
                         '<td>Inverted</td></tr></table><h1>Environment</h1><table class="metadata_acquisition">'
                         '<tr><th>Temperature:</th><td>37 °C</td></tr><tr><th>CO2:</th><td>5 %</td></tr>'
                         '<tr><th>Humidity:</th><td>-</td></tr><tr><th>Air Pressure:</th><td>-</td></tr></table>'
                         '<h1>Original Metadata</h1><div id="original_metadata"><a href="#" class="btn silver" '
                         f'data-url="{WC}/original_metadata/{t.image.id}/">Show original metadata</a></div>')
        parts.append("</div>")
        return HTMLResponse("".join(parts))


async def metadata_preview(ctx: Ctx) -> Response:
    """load_metadata_preview (wc/views.py:1809-1868): every user's rendering settings on the image (the
    viewer's own marked current), as rdef query strings. An unreadable object is not caught there: 500."""
    c_type = ctx.request.path_params["c_type"]
    if c_type not in ("image", "well"):                      # wc/urls.py:117 `(image|well)`
        raise error(404, "Not Found", "text/html")
    try:
        t = target(ctx, c_type, ctx.path_int("c_id"), _int_index(ctx) if c_type == "well" else 0)
    except HTTPError:
        return HTMLResponse("<h1>Server Error (500)</h1>", status_code=500)
    if t.image is None:
        return HTMLResponse("<h1>Server Error (500)</h1>", status_code=500)
    image = t.image
    async with ctx.work("metadata_preview"):
        rdefs = ctx.sim.rdefs.all_for(image)
        current = ctx.sim.rdefs.for_user(image, ctx.user.id).id
        queries = []
        for r in rdefs:
            chs = ",".join(f"{'' if c.active else '-'}{i + 1}|{c.start:g}:{c.end:g}{'r' if c.inverted else '-r'}${c.color}"
                           for i, c in enumerate(r.channels))
            owner = ctx.catalog.users[r.owner_id]
            queries.append({"id": r.id, "owner": {"id": owner.id, "firstName": owner.first, "lastName": owner.last},
                            "c": chs, "m": "g" if r.model == "greyscale" else "c", "current": r.id == current})
        px = image.pixels
        tiled = px.size_x * px.size_y > MAX_PLANE
        buttons = "".join(f'<li class="rdef{" current" if q["current"] else ""}" data-rdef="{q["id"]}">'
                          f'<img src="/webgateway/render_thumbnail/{image.id}/?rdefId={q["id"]}" />'
                          f'<span>{e(q["owner"]["firstName"])} {e(q["owner"]["lastName"])}</span></li>' for q in queries)
        sliders = "".join(f'<tr class="channel_slider" data-channel="{i}"><td>{NAMES[i % len(NAMES)]}</td>'
                          f'<td><div class="slider" data-start="{c.start:g}" data-end="{c.end:g}" data-color="{c.color}">'
                          f'</div></td></tr>' for i, c in enumerate(rdefs[0].channels))
        body = (f'<div class="right_tab_inner" id="metadata_preview"><script type="text/javascript">'
                f'var PREVIEW = {{"imageId": {image.id}, "tiled": {json.dumps(tiled)}, '
                f'"rdefs": {json.dumps(queries)}, "sizeZ": {px.size_z}, "sizeT": {px.size_t}}};'
                '$(function(){ if (OME.preview_init) { OME.preview_init(PREVIEW); } });</script>'
                f'<div id="viewport" class="preview_viewport" data-image="{image.id}"><img id="preview_image" '
                f'src="/webgateway/render_image/{image.id}/" /></div><table id="channel_sliders">{sliders}</table>'
                f'<h2>Rendering settings</h2><ul id="rdef_thumbs">{buttons}</ul>'
                '<div class="preview_buttons"><button id="rdef-save-all" class="btn silver">Save</button>'
                '<button id="rdef-undo" class="btn silver">Undo</button>'
                '<button id="rdef-copy" class="btn silver">Copy</button>'
                '<button id="rdef-paste" class="btn silver">Paste</button></div></div>')
        return HTMLResponse(body)


def _ancestors(cat: Catalog, obj: Owned | Well | Image) -> list[tuple[str, Owned | Well | Image]]:
    """getAncestry, nearest first: image → dataset → project, or image → well → plate → screen."""
    chain: list[tuple[str, Owned | Well | Image]] = []
    if isinstance(obj, Image):
        if obj.dataset_id is not None:
            ds = cat.datasets[obj.dataset_id]
            chain.append(("dataset", ds))
            if ds.project_id is not None:
                chain.append(("project", cat.projects[ds.project_id]))
        if obj.well_id is not None:
            chain.append(("well", cat.well(obj.well_id)))
            obj = cat.plates[obj.plate_id]
            chain.append(("plate", obj))
    elif isinstance(obj, Well):
        obj = obj.plate
        chain.append(("plate", obj))
    elif isinstance(obj, Dataset) and obj.project_id is not None:
        chain.append(("project", cat.projects[obj.project_id]))
    if isinstance(obj, Plate) and obj.screen_id is not None:
        chain.append(("screen", cat.screens[obj.screen_id]))
    return chain


async def metadata_hierarchy(ctx: Ctx) -> Response:
    """load_metadata_hierarchy (wc/views.py:1871-1883): the ancestors as a static tree (an unreadable
    object is not caught there: 500)."""
    try:
        t = target(ctx, ctx.request.path_params["c_type"], ctx.path_int("c_id"))
    except HTTPError:
        return HTMLResponse("<h1>Server Error (500)</h1>", status_code=500)
    async with ctx.work("metadata_hierarchy"):
        items = "".join(f'<li class="{kind}" data-id="{o.id}"><a href="{WC}/?show={kind}-{o.id}">'
                        f'<span class="icon {kind}"></span>{e(parent_name(o))}</a><ul>'
                        for kind, o in reversed(_ancestors(ctx.catalog, t.obj)))
        depth = items.count("<ul>")
        body = (f'<div id="hierarchy_tree"><h2>Parents of {LABELS[t.c_type]} {t.obj.id}</h2><ul class="hierarchy">'
                f'{items}<li class="{t.c_type} selected" data-id="{t.obj.id}"><span class="icon {t.c_type}"></span>'
                f'{e(parent_name(t.obj))}</li>{"</ul></li>" * depth}</ul></div>')
        return HTMLResponse(body)


def _plate_page(ctx: Ctx, plate: Plate, index: int, fields: tuple[int, int], acquisition: int | None,
                p: Perms) -> str:
    """data/plate.html with its context (wc/views.py:1472-1500): field chooser, grid container, scripts."""
    options = "".join(f'<option value="{i}"{" selected" if i == index else ""}>Field #{i + 1}</option>'
                      for i in range(fields[0], fields[1] + 1))
    run = str(acquisition) if acquisition is not None else "undefined"
    run_query = f"url += '?run={acquisition}';" if acquisition is not None else ""
    batch = ctx.sim.config.thumbnails_batch
    return f"""<link rel="stylesheet" type="text/css" href="/static/webgateway/css/ome.plateview.css" media="all" />
<script type="text/javascript">
$(document).ready(function() {{
    // resize the well images panel by dragging its handle
    $(".verticalDragHandle").draggable({{ axis: "y" }})
    .on("dragstart", function(event, ui) {{
        $(this).data({{'dragstart': ui.offset.top, 'wellImgs_h': $("#wellImagesContainer").height()}});
    }})
    .on("drag", function(event, ui) {{
        var newH = $(this).data('wellImgs_h') - (ui.offset.top - $(this).data('dragstart'));
        $("#wellImagesContainer").css('height', newH + 'px');
        $("#spwContainer").css('bottom', newH + 'px');
    }})
    .on("dragstop", function(event, ui) {{
        var newH = $(this).data('wellImgs_h') - (ui.offset.top - $(this).data('dragstart'));
        $('body').data('well_images_panel_height', newH);
    }});
    var newH = $('body').data('well_images_panel_height') || 150;
    $("#wellImagesContainer").css('height', newH + 'px');
    $("#spwContainer").css('bottom', newH + 'px');
    var spw_thumb_size = $('body').data('spw_thumb_size') || 64;
    $("#thumb_size_slider").slider({{
        max: 130, min: 10, value: spw_thumb_size,
        slide: function(event, ui) {{ wpv.setSpwThumbSize(ui.value); }},
        stop: function(event, ui) {{ $('body').data('spw_thumb_size', ui.value); }}
    }});
    var well_images_size = $('body').data('well_images_size') || 64;
    $("#wellImages").addClass('wellSize' + well_images_size);
    var triggerWellImagesSelection = function() {{
        var selected_ids = [];
        $("#wellImages li.ui-selected").each(function() {{ selected_ids.push(this.getAttribute('data-imageId')); }});
        var selected_objs = selected_ids.map(function(iid) {{ return {{id: 'image-' + iid}}; }});
        $("body").data("selected_objects.ome", selected_objs).trigger("selection_change.ome");
    }};
    $('#wellImages').on("click", "a", function(event) {{
        event.preventDefault();
        OME.handleClickSelection(event, $(event.target).parent(), "#wellImages .wellSize");
        triggerWellImagesSelection();
        return false;
    }});
    var syncTreeSelection = function(selected, idx, perms) {{
        OME.well_selection_changed(selected, idx, perms);
    }};
    var wpv = $.WeblitzPlateview($('#spw'), {{
        baseurl: '/webgateway', width: spw_thumb_size, staticurl: WEBCLIENT.URLS.static_webgateway,
        useParentPrefix: false, thumbnailsBatch: {batch},
        defaultThumb: "/static/webgateway/img/image128.png"
    }});
    $('#spw').on("click", "td.well img", function(event) {{
        OME.handleClickSelection(event, undefined, "#spw td.well img");
        syncTreeSelection($('td.ui-selected', wpv.self), {index}, '{p.css()}');
        showImagesInWell();
    }});
    $('#spw').on("dblclick", "td.well img", function(event) {{
        window.open("{WC}/img_detail/" + $(this).attr('id').split("-")[1] + "/", '_blank');
    }});
    wpv.self.selectable({{
        filter: 'td.well', distance: 2,
        stop: function() {{
            syncTreeSelection($('td.ui-selected', this), {index}, '{p.css()}');
            showImagesInWell();
        }}
    }});
    // kick off loading: the grid JSON, then the thumbnails in batches
    wpv.load({plate.id}, {index}, {run});
    var showImagesInWell = function(selectImageIds) {{
        var $table = $("#wellImages table");
        $table.empty();
        $('td.ui-selected', wpv.self).each(function(i, w) {{
            var wellId = w.id.split('-')[1];
            var label = $(w).children('.wellLabel').text();
            $table.append("<tr id='wellImages-" + wellId + "'><td class='wellImagesLabel'><h1>" + label + "</h1></td></tr>");
            var url = "/webgateway/well/" + wellId + "/children/";
            {run_query}
            $.getJSON(url, function(data) {{
                var html = data.reduce(function(html, w) {{
                    return html + '<li title="' + w.name.escapeHTML() + '" data-imageId="' + w.id + '">' +
                        '<a href="{WC}/img_detail/' + w.id + '/"><div class="wellSize"><img /></div></a></li>';
                }}, "");
                $('#wellImages-' + wellId).append("<td><ul>" + html + "</ul></td>");
                var iids = data.map(function(i) {{ return i.id; }});
                OME.load_thumbnails && OME.load_thumbnails("{WC}/get_thumbnails/", iids, {batch});
            }});
        }});
    }};
    $("#id_index").on("change", function() {{
        var url = "{WC}/load_plate/{"acquisition/" + str(acquisition) if acquisition is not None else "plate/" + str(plate.id)}/?index=" + this.value;
        $("#content_details").load(url);
    }});
}});
</script>
<div id="spwContainer" class="plate_container" data-plate="{plate.id}" data-index="{index}">
  <div class="toolbar" id="plate_toolbar">
    <form class="well_index_form" action="#" method="get"><label for="id_index">Field:</label>
      <select name="index" id="id_index">{options}</select></form>
    <div id="thumb_size_slider" title="Zoom Thumbnails"></div>
    <span class="plate_name">{e(plate.name)} ({plate.rows} x {plate.cols})</span>
  </div>
  <div id="spw" class="spw"><p class="loading">Loading plate...</p></div>
</div>
<div id="wellImagesDragHandle" class="verticalDragHandle"></div>
<div id="wellImagesContainer">
  <div class="toolbar"><label for="imagesPerRow">Images per row:</label>
    <input id="imagesPerRow" type="number" min="1" max="50" /><div id="wellImages_size_slider"></div></div>
  <div id="wellImages"><table></table></div>
  <div id="wellBirdsEye" class="birds_eye"></div>
</div>"""


async def load_plate(ctx: Ctx) -> Response:
    """load_plate (wc/views.py:1444-1500): `plate/<id>/` or `acquisition/<id>/`, `?index=` the field
    (0 means the first field: a run's fields are 0-based, `fields = (0, max - min)`)."""
    o1_type = ctx.request.path_params["o1_type"]
    if o1_type not in ("plate", "acquisition"):
        raise error(404, "Not Found", "text/html")
    index = _int_index(ctx)
    cat = ctx.catalog
    if o1_type == "acquisition":
        acq = cat.acquisitions.get(ctx.path_int("o1_id"))
        if acq is None or not cat.can_read(ctx.user, acq):
            raise not_found(ctx, "Plate Acquisition", ctx.path_int("o1_id"))
        plate, fields, acquisition = cat.plates[acq.plate_id], (0, acq.n_fields - 1), acq.id
    else:
        plate = cat.plates.get(ctx.path_int("o1_id"))
        if plate is None or not cat.can_read(ctx.user, plate):
            raise not_found(ctx, "Plate", ctx.path_int("o1_id"))
        fields, acquisition = (0, plate.fields - 1), None
    if index == 0:
        index = fields[0]
    async with ctx.work("load_plate"):
        return HTMLResponse(_plate_page(ctx, plate, index, fields, acquisition,
                                        perms(cat, ctx.user, plate.owner_id, plate.group_id)))


def _panel(name: str, prefix: str, view: Callable, types: str = "{c_type}") -> Endpoint:
    return Endpoint(f"webclient:{name}", (f"{WC}/{prefix}/{types}/{{c_id:int}}/",), view)


ENDPOINTS = [
    _panel("metadata_details", "metadata_details", metadata_details),
    _panel("metadata_acquisition", "metadata_acquisition", metadata_acquisition),
    _panel("metadata_preview", "metadata_preview", metadata_preview),
    _panel("metadata_hierarchy", "metadata_hierarchy", metadata_hierarchy),
    Endpoint("webclient:load_plate", (f"{WC}/load_plate/{{o1_type}}/{{o1_id:int}}/",), load_plate),
]
