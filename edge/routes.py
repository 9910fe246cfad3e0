"""The route table: which OMERO URLs the edge caches, and what it must know about each.

Data, not if-chains: each `Route` names its upstream, the kind of body, its TTL class, the
object ids it concerns (for tags, purge and read checks), whose rendering settings its bytes
depend on, and the canonical path template equivalent URLs fold into. Anything that matches
no route is proxied untouched and never cached. The nginx generator exports the same table
as a regex so the two never disagree.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum

from .kinds import KINDS


class Kind(str, Enum):
    IMAGE = "image"  # bytes whose content type must match their magic number
    JSON = "json"
    HTML = "html"  # the webclient's panels (metadata_details, load_plate): text/html fragments
    BATCH = "batch"  # get_thumbnails: split into per-image thumbnail entries


class Personal(str, Enum):
    """Whose rendering settings / visibility the bytes depend on (omero-web-api.md §3)."""

    ALWAYS = "always"  # thumbnails, imgData, listings: one entry per user
    UNLESS_FULL_RDEF = "unless-full-rdef"  # renders: shared only with a full `c` (windows+colours) and `m`
    NEVER = "never"  # raw-pixel or structural JSON: shared by everyone who may read the object


class Upstream(str, Enum):
    WEB = "web"
    MS = "ms"  # omero-ms-image-region when configured, else OMERO.web


@dataclass(frozen=True)
class Route:
    name: str
    pattern: str  # regex over the path, named groups; ids are [0-9]+
    kind: Kind
    ttl: str  # Settings attribute suffix: thumbnail | render | json | api | metadata
    personal: Personal
    upstream: Upstream = Upstream.WEB
    objects: tuple[tuple[str, str], ...] = ()  # (group, object type): what the URL concerns
    query_objects: tuple[tuple[str, str], ...] = ()  # (query parameter, object type): ids named in the query
    typed_object: tuple[str, str] = ()  # (type group, id group): the type is in the URL (see OBJECT_TYPES)
    canonical: str = ""  # path template equivalent URLs fold into; {default_size} is the thumb size
    defaults: tuple[tuple[str, str], ...] = ()  # group defaults applied before formatting `canonical`
    thumb_size_group: str = ""  # the group holding a thumbnail's longest side (for batch entries)
    absolute_urls: bool = False  # JSON holds links built from Host: the host is part of the key
    item: str = ""  # BATCH only: the route whose entries hold the batch's per-image thumbnails
    batch: str = ""  # a single thumbnail's batch route: default-size misses may be coalesced into it
    jsonp: bool = False  # an OMERO `@jsonp` view (gw/views.py:1426-1456): `callback=NAME` wraps the JSON
    ignored: tuple[str, ...] = ()  # query parameters the view never reads: not part of the key (sources below)
    placeholder: bool = False  # answers OMERO.web's placeholder where the webgateway answers 404 (`_defcb`)
    regex: re.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "regex", re.compile(self.pattern))

    @property
    def image_group(self) -> str:
        """The path group holding the image id ("" when the URL names no image)."""
        return next((group for group, kind in self.objects if kind == "image"), "")

    @property
    def base_path(self) -> str:
        """The literal path before the first placeholder (a batch route's URL at the default size)."""
        return self.canonical.split("{", 1)[0]


IMG = (("iid", "image"),)
# The webclient's object type names (`metadata_details/<c_type>/`, `annotations/<objtype>/`, the
# `api/annotations/` query): lower-cased, up to the first dot ("Screen.plateLinks.child" is a screen).
OBJECT_TYPES = {"screen": "screen", "plate": "plate", "acquisition": "plateacquisition",
                "plateacquisition": "plateacquisition", "well": "well", "image": "image",
                "project": "project", "dataset": "dataset"}
# `api_annotations` reads these object ids, repeated (wc/views.py `api_annotations`: request.GET.getlist)
ANNOTATED = tuple((name, OBJECT_TYPES[name]) for name in
                  ("screen", "plate", "acquisition", "well", "image", "project", "dataset"))
GW = "/webgateway"
WC = "/webclient"
_ID = r"(?P<{}>[0-9]+)"


# `_render_thumbnail` reads only z, t and rdefId (gw/views.py:394-396); the clients add these:
# `rev` (iviewer BirdsEye.js:313-318, `Date.now()-<id>`) and `version` (iviewer thumbnail-slider.js:545-556).
THUMB_IGNORED = ("rev", "version")
THUMB = f"{GW}/render_thumbnail/{{iid}}/{{w}}/"  # every positive default-form thumbnail's one entry


ROUTES: tuple[Route, ...] = (
    # --- thumbnails (gw/urls.py:196-250, 379-400; wc/urls.py:128-150). The webclient forms answer the
    # same bytes as the webgateway's when positive (clients.md §3), so they share its entries; where
    # the webgateway answers 404 they answer a placeholder, which is never stored. A webclient URL's
    # optional last segment is a share id (not routed: shares are passed through). ---
    Route("gw.render_thumbnail", rf"^{GW}/render_thumbnail/{_ID.format('iid')}/(?:{_ID.format('w')}/)?$",
          Kind.IMAGE, "thumbnail", Personal.ALWAYS, objects=IMG, canonical=THUMB,
          defaults=(("w", "{default_size}"),), thumb_size_group="w", batch="gw.get_thumbnails", ignored=THUMB_IGNORED),
    Route("gw.render_thumbnail_box",
          rf"^{GW}/render_thumbnail/{_ID.format('iid')}/{_ID.format('w')}/{_ID.format('h')}/$",
          Kind.IMAGE, "thumbnail", Personal.ALWAYS, objects=IMG,
          canonical=f"{GW}/render_thumbnail/{{iid}}/{{w}}/{{h}}/", ignored=THUMB_IGNORED),
    Route("gw.get_thumbnails", rf"^{GW}/get_thumbnails/(?:{_ID.format('w')}/)?$",
          Kind.BATCH, "thumbnail", Personal.ALWAYS, canonical=f"{GW}/get_thumbnails/{{w}}/",
          defaults=(("w", "{default_size}"),), thumb_size_group="w", item="gw.render_thumbnail", jsonp=True),
    Route("gw.render_birds_eye_view", rf"^{GW}/render_birds_eye_view/{_ID.format('iid')}/(?:{_ID.format('w')}/)?$",
          Kind.IMAGE, "thumbnail", Personal.ALWAYS, objects=IMG, canonical=THUMB,
          defaults=(("w", "{default_size}"),), ignored=THUMB_IGNORED),
    Route("gw.get_thumbnail",
          rf"^{GW}/get_thumbnail/{_ID.format('iid')}/(?:{_ID.format('w')}/(?:{_ID.format('h')}/)?)?$",
          Kind.JSON, "thumbnail", Personal.ALWAYS, objects=IMG,
          canonical=f"{GW}/get_thumbnail/{{iid}}/{{w}}/{{h}}/", defaults=(("w", "{default_size}"), ("h", "-")),
          jsonp=True, ignored=THUMB_IGNORED),
    Route("wc.render_thumbnail", rf"^{WC}/render_thumbnail/{_ID.format('iid')}/$",
          Kind.IMAGE, "thumbnail", Personal.ALWAYS, objects=IMG, canonical=THUMB,
          defaults=(("w", "{default_size}"),), thumb_size_group="w", batch="gw.get_thumbnails",
          ignored=THUMB_IGNORED, placeholder=True),
    Route("wc.render_thumbnail_size", rf"^{WC}/render_thumbnail/size/{_ID.format('w')}/{_ID.format('iid')}/$",
          Kind.IMAGE, "thumbnail", Personal.ALWAYS, objects=IMG, canonical=THUMB, thumb_size_group="w",
          ignored=THUMB_IGNORED, placeholder=True),
    Route("wc.get_thumbnails", rf"^{WC}/get_thumbnails/$",  # webgateway's view, default size (wc/urls.py:128-132)
          Kind.BATCH, "thumbnail", Personal.ALWAYS, canonical=f"{WC}/get_thumbnails/",
          item="gw.render_thumbnail", jsonp=True),
    Route("wc.render_birds_eye_view",  # webgateway's view without `_defcb` (wc/urls.py:164-168)
          rf"^{WC}/render_birds_eye_view/{_ID.format('iid')}/(?:{_ID.format('w')}/)?$",
          Kind.IMAGE, "thumbnail", Personal.ALWAYS, objects=IMG, canonical=THUMB,
          defaults=(("w", "{default_size}"),), ignored=THUMB_IGNORED),
    Route("gw.render_roi_thumbnail", rf"^{GW}/render_roi_thumbnail/{_ID.format('roi')}/?$",
          Kind.IMAGE, "thumbnail", Personal.ALWAYS, objects=(("roi", "roi"),),
          canonical=f"{GW}/render_roi_thumbnail/{{roi}}/"),
    Route("gw.render_shape_thumbnail", rf"^{GW}/render_shape_thumbnail/{_ID.format('shape')}/?$",
          Kind.IMAGE, "thumbnail", Personal.ALWAYS, objects=(("shape", "shape"),),
          canonical=f"{GW}/render_shape_thumbnail/{{shape}}/"),
    # --- webgateway renders ---
    Route("gw.render_image_zt", rf"^{GW}/render_image/{_ID.format('iid')}/{_ID.format('z')}/{_ID.format('t')}/$",
          Kind.IMAGE, "render", Personal.UNLESS_FULL_RDEF, Upstream.MS, objects=IMG),
    Route("gw.render_image",
          rf"^{GW}/render_image/{_ID.format('iid')}/(?:{_ID.format('z')}/(?:{_ID.format('t')}/)?)?$",
          Kind.IMAGE, "render", Personal.UNLESS_FULL_RDEF, objects=IMG),
    Route("gw.render_image_region",
          rf"^{GW}/render_image_region/{_ID.format('iid')}/{_ID.format('z')}/{_ID.format('t')}/$",
          Kind.IMAGE, "render", Personal.UNLESS_FULL_RDEF, Upstream.MS, objects=IMG),
    Route("gw.render_image_rdef",
          rf"^{GW}/render_image_rdef/{_ID.format('iid')}/{_ID.format('z')}/{_ID.format('t')}/$",
          Kind.IMAGE, "render", Personal.UNLESS_FULL_RDEF, Upstream.MS, objects=IMG),
    Route("gw.render_image_rdef_default",  # z and t optional (gw/urls.py:113-116): the user's defaults
          rf"^{GW}/render_image_rdef/{_ID.format('iid')}/(?:{_ID.format('z')}/)?$",
          Kind.IMAGE, "render", Personal.ALWAYS, objects=IMG),
    Route("gw.render_image_region_rdef",
          rf"^{GW}/render_image_region_rdef/{_ID.format('iid')}/{_ID.format('z')}/{_ID.format('t')}/$",
          Kind.IMAGE, "render", Personal.UNLESS_FULL_RDEF, Upstream.MS, objects=IMG),
    Route("gw.render_split_channel",
          rf"^{GW}/render_split_channel/{_ID.format('iid')}/{_ID.format('z')}/{_ID.format('t')}/$",
          Kind.IMAGE, "render", Personal.UNLESS_FULL_RDEF, objects=IMG),
    Route("gw.render_shape_mask", rf"^{GW}/render_shape_mask/{_ID.format('shape')}/$",
          Kind.IMAGE, "render", Personal.NEVER, Upstream.MS, objects=(("shape", "shape"),)),
    # --- webgateway JSON ---
    Route("gw.histogram_json",  # the microservice also answers it without the final slash
          rf"^{GW}/histogram_json/{_ID.format('iid')}/channel/{_ID.format('c')}/?$",
          Kind.JSON, "json", Personal.NEVER, Upstream.MS, objects=IMG,
          canonical=f"{GW}/histogram_json/{{iid}}/channel/{{c}}/"),
    # `@jsonp` views (gw/views.py:1558-1880): imageData, wellData, plateGrid, listWellImages, listDatasets …
    Route("gw.imgData", rf"^{GW}/imgData/{_ID.format('iid')}/(?:(?P<key>[A-Za-z0-9_.]+)/)?$",
          Kind.JSON, "json", Personal.ALWAYS, objects=IMG, jsonp=True),
    Route("gw.plate", rf"^{GW}/plate/{_ID.format('plate')}/(?:{_ID.format('field')}/(?:{_ID.format('acq')}/)?)?$",
          Kind.JSON, "json", Personal.NEVER, objects=(("plate", "plate"), ("acq", "plateacquisition")),
          canonical=f"{GW}/plate/{{plate}}/{{field}}/{{acq}}/", defaults=(("field", "0"), ("acq", "-")), jsonp=True),
    Route("gw.well_children", rf"^{GW}/well/{_ID.format('well')}/children/$",
          Kind.JSON, "json", Personal.NEVER, objects=(("well", "well"),), jsonp=True),
    Route("gw.wellData", rf"^{GW}/wellData/{_ID.format('well')}/$",
          Kind.JSON, "json", Personal.ALWAYS, objects=(("well", "well"),), jsonp=True),
    Route("gw.proj_list", rf"^{GW}/proj/list/$", Kind.JSON, "json", Personal.ALWAYS, jsonp=True),
    Route("gw.proj", rf"^{GW}/proj/{_ID.format('project')}/(?:detail|children)/$",
          Kind.JSON, "json", Personal.ALWAYS, objects=(("project", "project"),), jsonp=True),
    Route("gw.dataset", rf"^{GW}/dataset/{_ID.format('dataset')}/(?:detail|children)/$",
          Kind.JSON, "json", Personal.ALWAYS, objects=(("dataset", "dataset"),), jsonp=True),
    # --- OMERO.iviewer (omero_iviewer/urls.py:27-28): imgData plus the viewer's settings, per user ---
    Route("iv.image_data", rf"^/iviewer/image_data/{_ID.format('iid')}/$",
          Kind.JSON, "json", Personal.ALWAYS, objects=IMG),
    # --- webclient mirrors ---
    Route("wc.render_image_zt", rf"^{WC}/render_image/{_ID.format('iid')}/{_ID.format('z')}/{_ID.format('t')}/$",
          Kind.IMAGE, "render", Personal.UNLESS_FULL_RDEF, Upstream.MS, objects=IMG),
    Route("wc.render_image",
          rf"^{WC}/render_image/{_ID.format('iid')}/(?:{_ID.format('z')}/(?:{_ID.format('t')}/)?)?$",
          Kind.IMAGE, "render", Personal.UNLESS_FULL_RDEF, objects=IMG),
    Route("wc.render_image_region",
          rf"^{WC}/render_image_region/{_ID.format('iid')}/{_ID.format('z')}/{_ID.format('t')}/$",
          Kind.IMAGE, "render", Personal.UNLESS_FULL_RDEF, Upstream.MS, objects=IMG),
    Route("wc.imgData", rf"^{WC}/imgData/{_ID.format('iid')}/(?:(?P<key>[A-Za-z0-9_.]+)/)?$",
          Kind.JSON, "json", Personal.ALWAYS, objects=IMG),
    # --- webclient browsing: the tree, the metadata panels, the annotations (clients.md §10, docs/browse.md).
    # Per viewer (permission flags, the comment form), never with a share segment (wc/urls.py:104-126:
    # a trailing share id switches template; shares are passed through) ---
    Route("wc.api_experimenter", rf"^{WC}/api/experimenters/(?P<uid>-?[0-9]+)/$",  # wc/urls.py:348-352
          Kind.JSON, "metadata", Personal.ALWAYS),
    Route("wc.api_containers", rf"^{WC}/api/containers/$", Kind.JSON, "metadata", Personal.ALWAYS),  # :355
    Route("wc.api_datasets", rf"^{WC}/api/datasets/$", Kind.JSON, "metadata", Personal.ALWAYS,  # :358
          query_objects=(("id", "project"),)),
    Route("wc.api_images", rf"^{WC}/api/images/$", Kind.JSON, "metadata", Personal.ALWAYS,  # :360
          query_objects=(("id", "dataset"),)),
    Route("wc.api_plates", rf"^{WC}/api/plates/$", Kind.JSON, "metadata", Personal.ALWAYS,  # :368
          query_objects=(("id", "screen"),)),
    Route("wc.api_plate_acquisitions", rf"^{WC}/api/plate_acquisitions/$",  # :370-374
          Kind.JSON, "metadata", Personal.ALWAYS, query_objects=(("id", "plate"),)),
    Route("wc.api_annotations", rf"^{WC}/api/annotations/$", Kind.JSON, "metadata", Personal.ALWAYS,  # :389
          query_objects=ANNOTATED),
    *(Route(f"wc.metadata_{panel}",  # details, and the image's tabs (wc/urls.py:104-127, without the share id)
            rf"^{WC}/metadata_{panel}/(?P<ctype>[a-zA-Z]+)/{_ID.format('cid')}/$",
            Kind.HTML, "metadata", Personal.ALWAYS, typed_object=("ctype", "cid"))
      for panel in ("details", "acquisition", "preview", "hierarchy")),
    Route("wc.load_plate",  # wc/urls.py:68-74; `?index=` is the field
          rf"^{WC}/load_plate/(?P<ctype>plate|acquisition)/{_ID.format('cid')}/$",
          Kind.HTML, "metadata", Personal.ALWAYS, typed_object=("ctype", "cid")),
    Route("gw.open_with", rf"^{GW}/open_with/$",  # gw/urls.py:593-595, @jsonp (gw/views.py:1881)
          Kind.JSON, "metadata", Personal.ALWAYS, jsonp=True),
    Route("gw.annotations",  # bulk-annotation files (gw/urls.py:27-31, views.py:3040 login_required+jsonp)
          rf"^{GW}/annotations/(?P<ctype>[A-Za-z0-9_.]+)/{_ID.format('cid')}/$",
          Kind.JSON, "metadata", Personal.ALWAYS, typed_object=("ctype", "cid"), jsonp=True),
    Route("gw.table_query", rf"^{GW}/table/{_ID.format('file')}/query/$",  # gw/urls.py:37-39, views.py:3207
          Kind.JSON, "metadata", Personal.ALWAYS, jsonp=True),
    Route("gw.object_table_query",  # gw/urls.py:72-76, views.py:3358-3361
          rf"^{GW}/table/(?P<ctype>[A-Za-z0-9_.]+)/{_ID.format('cid')}/query/$",
          Kind.JSON, "metadata", Personal.ALWAYS, typed_object=("ctype", "cid"), jsonp=True),
    # --- omero-ms-image-region only (omero-web-api.md §5) ---
    Route("ms.render_thumbnail_ngff",
          rf"^/webgateway/render_thumbnail_ngff/{_ID.format('iid')}/?(?:{_ID.format('w')}/?)?$",
          Kind.IMAGE, "thumbnail", Personal.ALWAYS, Upstream.MS, objects=IMG,
          canonical="/ms/render_thumbnail_ngff/{iid}/{w}/", defaults=(("w", "96"),)),
    Route("ms.render_thumbnail_ngff_wc",  # any trailing segment is ignored: 96 px (clients.md §9)
          rf"^/webclient/render_thumbnail_ngff/{_ID.format('iid')}(?:/[0-9]*)?/?$",
          Kind.IMAGE, "thumbnail", Personal.ALWAYS, Upstream.MS, objects=IMG,
          canonical="/ms/render_thumbnail_ngff/{iid}/96/"),
    Route("ms.render_thumbnail_ngff_size",
          rf"^/webclient/render_thumbnail_ngff/size/{_ID.format('w')}/{_ID.format('iid')}/?$",
          Kind.IMAGE, "thumbnail", Personal.ALWAYS, Upstream.MS, objects=IMG,
          canonical="/ms/render_thumbnail_ngff/{iid}/{w}/"),
    Route("ms.render_birds_eye_view_ngff",
          rf"^/(?:webgateway|webclient)/render_birds_eye_view_ngff/{_ID.format('iid')}/?(?:{_ID.format('w')}/?)?$",
          Kind.IMAGE, "thumbnail", Personal.ALWAYS, Upstream.MS, objects=IMG,
          canonical="/ms/render_birds_eye_view_ngff/{iid}/{w}/", defaults=(("w", "96"),)),
    Route("ms.get_thumbnails_ngff", rf"^/(?:webgateway|webclient)/get_thumbnails_ngff/?(?:{_ID.format('w')}/?)?$",
          Kind.JSON, "thumbnail", Personal.ALWAYS, Upstream.MS,
          canonical="/ms/get_thumbnails_ngff/{w}/", defaults=(("w", "96"),)),
    # --- JSON API v0 (omero-web-api.md §2) ---
    Route("api.root", r"^/api/$", Kind.JSON, "api", Personal.NEVER, absolute_urls=True),
    Route("api.v0", r"^/api/v0/$", Kind.JSON, "api", Personal.NEVER, absolute_urls=True),
)


API_CHILDREN = ("plates", "wells", "plateacquisitions", "screens", "datasets", "images", "projects", "rois")


def _api_routes() -> tuple[Route, ...]:
    routes = []
    for kind in KINDS:
        plural, obj = kind.api, kind.name
        base = rf"^/api/v0/m/{plural}/"
        routes += [
            Route(f"api.{plural}", base + "$", Kind.JSON, "api", Personal.ALWAYS, absolute_urls=True),
            Route(f"api.{plural}.one", base + _ID.format("id") + "/$", Kind.JSON, "api", Personal.ALWAYS,
                  objects=(("id", obj),), absolute_urls=True),
            Route(f"api.{plural}.children", base + _ID.format("id") + f"/(?:{'|'.join(API_CHILDREN)})/$",
                  Kind.JSON, "api", Personal.ALWAYS, objects=(("id", obj),), absolute_urls=True),
        ]
        if plural in ("plates", "plateacquisitions"):
            routes.append(Route(f"api.{plural}.wellsampleindex",
                                base + _ID.format("id") + r"/wellsampleindex/[0-9]+/wells/$",
                                Kind.JSON, "api", Personal.ALWAYS, objects=(("id", obj),), absolute_urls=True))
    return tuple(routes)


ROUTES = ROUTES + _api_routes()
BY_NAME = {route.name: route for route in ROUTES}

# Parameters that carry credentials: such requests are proxied, never cached, never logged with values.
CREDENTIAL_PARAMS = frozenset({"bsession", "username", "password"})
# Pure cache-busters on every route (jQuery `cache:false`, iviewer `ajaxSetup({cache: false})`).
CACHE_BUSTERS = frozenset({"_"})
JSONP_CALLBACK = "callback"  # on `jsonp` routes: the wrapper's name, never part of the key


def _heads(route: Route) -> list[str]:
    """The literal "/a/b" path heads a route can match (its first two segments)."""
    body = route.pattern.lstrip("^")
    alternatives = ["webgateway", "webclient"] if body.startswith("/(?:webgateway|webclient)") else [None]
    heads = []
    for alt in alternatives:
        text = body.replace("(?:webgateway|webclient)", alt) if alt else body
        literal = re.split(r"[(\[?$\\]", text, maxsplit=1)[0]
        heads.append("/".join(literal.split("/")[:3]))
    return heads


def _index(routes: tuple[Route, ...]) -> dict[str, tuple[Route, ...]]:
    """Routes by their first two path segments, so a lookup tries a handful of regexes, not all."""
    out: dict[str, list[Route]] = {}
    for route in routes:
        for head in _heads(route):
            out.setdefault(head, []).append(route)
    return {k: tuple(v) for k, v in out.items()}


_BY_PREFIX = _index(ROUTES)


def match(path: str) -> tuple[Route, dict[str, str]] | None:
    """The route a path belongs to and its groups, or None (proxy untouched)."""
    if "\n" in path:
        return None  # `$` would also match before a final newline: `…/N/%0A` must not share `…/N/`'s key
    parts = path.split("/", 3)
    if len(parts) < 3:
        return None
    for route in _BY_PREFIX.get(f"/{parts[1]}/{parts[2]}", ()):
        m = route.regex.match(path)
        if m:
            return route, {k: v for k, v in m.groupdict().items() if v is not None}
    return None


_LITERAL_HEAD = re.compile(r"^([A-Za-z0-9_.\-]+/)")  # a body's first path segment, when it is literal


def _factored(bodies: list[str], depth: int) -> str:
    """`a/x|a/y|b` as `a/(?:x|y)|b`, `depth` segments deep: the same language, a shorter regex."""
    groups: dict[str, list[str]] = {}
    for body in bodies:
        head = _LITERAL_HEAD.match(body) if depth else None
        prefix = head.group(1) if head else ""
        groups.setdefault(prefix, []).append(body[len(prefix):])
    parts = []
    for prefix, rest in groups.items():
        if prefix and len(rest) > 1:
            parts.append(f"{prefix}(?:{_factored(rest, depth - 1)})")
        else:
            parts += [f"(?:{prefix}{r})" for r in rest]
    return "|".join(parts)


def cacheable_regex(routes: tuple[Route, ...] | list[Route] = ROUTES) -> str:
    """One regex for every path of `routes` (for nginx `location ~`), with no capturing groups. Bodies
    sharing literal leading segments share them once: nginx refuses a parameter over 4 KB."""
    bodies = [re.sub(r"\(\?P<[a-z_]+>", "(?:", r.pattern.lstrip("^").rstrip("$")).removeprefix("/") for r in routes]
    return "^/(?:" + _factored(bodies, 5) + ")$"
