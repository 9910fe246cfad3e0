"""The webclient's never-cacheable answers: the page and its siblings, the active group switch,
keepalive, activities, the rendering-settings clipboard, and the "open with" list the page loads.

The page (`load_template`, wc/views.py:430-574, base_container.html:164-172) names the viewer's active
group and user in its script (`WEBCLIENT.active_group_id = <gid>;`, `WEBCLIENT.USER = {'id': …}`),
carries the logout form's CSRF token (so Django re-sends `csrftoken`) and marks the Django session
modified (so the session cookie is sent again). What the clipboard holds is per Django session.
"""
from __future__ import annotations

import html
import json

from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from bench.sim.catalog import User
from bench.sim.http import AUTH_NONE, Ctx, Endpoint
from bench.sim.jsonp import JSONP_WEB
from bench.sim.sessions import Identity, csrf_token_for, use_csrf
from bench.sim.tree import EVERYONE
from bench.sim.webparams import PAGE

WC, GW = "/webclient", "/webgateway"
MENUS = ("userdata", "public", "history", "search", "help", "usertags")     # wc/urls.py:40-43
# omero.web.open_with: the default viewer (settings.py:736-741) and OMERO.iviewer as IDR configures it
OPEN_WITH = [
    {"id": "Image viewer", "url": f"{GW}/", "supported_objects": ["image"],
     "script_url": "/static/webclient/javascript/ome.openwith_viewer.js"},
    {"id": "omero_iviewer", "url": "/iviewer/", "supported_objects": ["images", "dataset", "well"],
     "script_url": "/static/omero_iviewer/openwith.js", "label": "OMERO.iviewer"},
]


def _active_user(ctx: Ctx, gid: int) -> int:
    """`?experimenter=`: -1 (all members) or a member of the active group, else the viewer (wc/views.py:507-532)."""
    raw = ctx.q.get("experimenter")
    try:
        uid = int(raw) if raw is not None else None
    except ValueError:
        uid = None
    members = {u.id for u in ctx.catalog.users.values() if gid in u.groups}
    return uid if uid is not None and (uid == -1 or uid in members) else ctx.user.id


def _full_name(user: User | None) -> str:
    return user.full_name if user is not None else EVERYONE


def _page(ctx: Ctx, menu: str, token: str) -> str:
    user, cat = ctx.user, ctx.catalog
    gid = ctx.ident.active_group
    active = _active_user(ctx, gid)
    groups = sorted((cat.groups[g] for g in user.groups), key=lambda g: g.name.lower())
    current = ' class="current"'
    group_menu = "".join(f'<li><a href="{WC}/active_group/?active_group={g.id}&amp;url={WC}/{menu}/"'
                         f'{current if g.id == gid else ""}>{html.escape(g.name)}</a></li>' for g in groups)
    urls = {"webindex": f"{WC}/", "api_containers": f"{WC}/api/containers/", "api_datasets": f"{WC}/api/datasets/",
            "api_images": f"{WC}/api/images/", "api_plates": f"{WC}/api/plates/",
            "api_plate_acquisitions": f"{WC}/api/plate_acquisitions/", "api_base": "/api/v0/",
            "static_webclient": "/static/webclient/", "static_webgateway": "/static/webgateway/",
            "api_experimenter": f"{WC}/api/experimenters/{active}/"}
    url_lines = "\n".join(f'        WEBCLIENT.URLS.{k} = "{v}";' for k, v in urls.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>OMERO webclient</title>
<link rel="stylesheet" href="/static/webclient/css/layout.css" type="text/css" />
<link rel="stylesheet" href="/static/webgateway/css/ome.plateview.css" type="text/css" />
<script type="text/javascript" src="/static/jquery.min.js"></script>
<script>
        var WEBCLIENT = {{}};

        WEBCLIENT.active_group_id = {gid};
        WEBCLIENT.USER = {{'id': {user.id}, 'fullName': "{html.escape(user.full_name)}"}};
        WEBCLIENT.active_user = {{'id': {active}, 'fullName': "{html.escape(_full_name(cat.users.get(active)))}"}};
        WEBCLIENT.member_of_groups = {json.dumps(list(user.groups))};
        WEBCLIENT.isAdmin = false;
        WEBCLIENT.CAN_CREATE = {json.dumps(not user.public)};
        WEBCLIENT.leader_of_groups = [];
        WEBCLIENT.URLS = {{}};
{url_lines}
        WEBCLIENT.URLS.tree_top_level = WEBCLIENT.URLS.api_containers;
        WEBCLIENT.UI = {{TREE: {{pagination_nodes: ["experimenter", "screen", "plate", "acquisition", "project", "tagset", "image"]}}}};
        var PAGE_SIZE = {PAGE};
        WEBCLIENT.HAS_RDEF = false;
        $.getJSON("{GW}/getImgRDef/", function(data) {{ WEBCLIENT.HAS_RDEF = !!(data && data.rdef); }});
        WEBCLIENT.OPEN_WITH = [];
        $.getJSON("{GW}/open_with/", function(data) {{
            if (data && data.open_with_options) {{ WEBCLIENT.OPEN_WITH = data.open_with_options; }}
        }});
</script></head>
<body id="{menu}">
<div id="header"><h1>OMERO.web (sim)</h1>
  <ul id="group_menu" class="dropdown">{group_menu}</ul>
  <div id="user_menu"><span>{html.escape(user.full_name)}</span>
    <form action="{WC}/logout/" method="post"><input type="hidden" name="csrfmiddlewaretoken" value="{token}">
    <input type="submit" value="Logout"></form></div>
</div>
<div id="left_panel"><div id="dataTree" data-menu="{menu}"></div></div>
<div id="center_panel"><div id="content_details"></div></div>
<div id="right_panel"><div id="metadata_general"></div></div>
</body></html>"""


async def load_template(ctx: Ctx) -> Response:
    """`/webclient/` and `/webclient/<menu>/`: the page; it modifies the session (its cookie is re-sent)."""
    menu = ctx.request.url.path.rstrip("/").rsplit("/", 1)[-1]
    menu = menu if menu in MENUS else "userdata"
    token = csrf_token_for(ctx.request)
    async with ctx.work("page", renders=0):
        response = HTMLResponse(_page(ctx, menu, token))
    _resend_session(ctx, response)
    return use_csrf(response, token)


def _resend_session(ctx: Ctx, response: Response) -> None:
    """`request.session.modified = True`: SessionMiddleware sends the cookie again (the pipeline sets a new one)."""
    ident: Identity = ctx.ident
    if ident.cookie and not ident.created:
        response.set_cookie(ctx.sim.config.session_cookie, ident.cookie, path="/", httponly=True, samesite="lax")


def _safe_url(url: str | None) -> str:
    """validate_redirect_url: only same-site paths; never back to active_group itself (wc/views.py:352-357)."""
    if not url or not url.startswith("/") or url.startswith("//") or url.startswith(f"{WC}/active_group/"):
        return f"{WC}/"
    return url


async def active_group(ctx: Ctx) -> Response:
    """change_active_group (wc/views.py:345-386): a group the viewer is a member of becomes the session's."""
    raw = ctx.q.get("active_group")
    try:
        gid = int(raw) if raw is not None else None
    except ValueError:
        gid = None
    if gid is not None and gid in ctx.user.groups and gid != ctx.ident.extra.get("active_group"):
        await ctx.sim.sessions.update(ctx.ident, active_group=gid)
    response = RedirectResponse(_safe_url(ctx.q.get("url")), status_code=302)
    _resend_session(ctx, response)
    return response


async def keepalive_ping(ctx: Ctx) -> Response:
    """keepalive_ping (wc/views.py:335-341)."""
    return PlainTextResponse("OK")


async def activities(ctx: Ctx) -> Response:
    """activities (wc/views.py:3596-3989) with no jobs in the session: activitiesContent.html."""
    return HTMLResponse('<body><div id="activities_content"><div id="sizeOfJobs" style="display:none">0</div>'
                        '<div id="inprogress" style="display:none">0</div><div id="new_results" '
                        'style="display:none">0</div><div id="failure" style="display:none">0</div>'
                        '<table id="jobsTable" width="100%" cellpadding="6" cellspacing="0" border="0"><tbody>'
                        '<tr><td><span>No Activities</span></td></tr></tbody></table></div></body>')


async def activities_json(ctx: Ctx) -> Response:
    """activities with template "json" (wc/views.py:3949-3958)."""
    return ctx.json({"inprogress": 0, "failure": 0, "jobs": 0})


async def get_img_rdef(ctx: Ctx) -> Response:
    """get_image_rdef_json (gw/views.py:2465-2506): the session's copied image as an rdef, else null."""
    fromid = ctx.ident.extra.get("fromid")
    image = ctx.catalog.image(fromid) if fromid is not None else None
    if image is None or not ctx.catalog.can_read(ctx.user, image):
        return ctx.json({"rdef": None})
    r = ctx.sim.rdefs.for_user(image, ctx.user.id)
    return ctx.json({"rdef": {
        "c": ",".join(f"{i + 1 if c.active else f'-{i + 1}'}|{c.start:g}:{c.end:g}${c.color}"
                      for i, c in enumerate(r.channels)),
        "m": "g" if r.model == "greyscale" else "c", "pixel_range": "0:65535",
        "maps": [{"inverted": {"enabled": c.inverted}, "quantization": {"coefficient": c.coefficient,
                                                                        "family": c.family}}
                 for c in r.channels]}})


async def open_with(ctx: Ctx) -> Response:
    """open_with_options (gw/views.py:1881-1918): not login_required, the session is never read."""
    return ctx.json({"open_with_options": OPEN_WITH})


ENDPOINTS = [
    Endpoint("webclient:index", (f"{WC}/",), load_template),
    Endpoint("webclient:load_template", tuple(f"{WC}/{m}/" for m in MENUS), load_template),
    Endpoint("webclient:active_group", (f"{WC}/active_group/",), active_group),
    Endpoint("webclient:keepalive_ping", (f"{WC}/keepalive_ping/",), keepalive_ping),
    # wc/urls.py:55-60 have no `$`: anything may follow
    Endpoint("webclient:activities", (f"{WC}/activities/", f"{WC}/activities/{{_rest:path}}"), activities),
    Endpoint("webclient:activities_json", (f"{WC}/activities_json/", f"{WC}/activities_json/{{_rest:path}}"),
             activities_json),
    Endpoint("getImgRDef", (f"{GW}/getImgRDef/",), get_img_rdef, jsonp=JSONP_WEB),
    Endpoint("open_with", (f"{GW}/open_with/",), open_with, AUTH_NONE, jsonp=JSONP_WEB),
]
