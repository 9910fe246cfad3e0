"""OMERO.web's writes the edge sees pass by, and what each one changes: purged before the answer.

OMERO emits no purge calls, but every write a browser makes goes through the edge (it proxies what it
does not cache). When one succeeds, the objects it changed are purged on every tier and node before
the client reads the answer, so the client's next request (iviewer reloading its thumbnail, the
webclient's `refreshThumbnails`) already misses. The table is data, one row per write, with the
view it comes from; `docs/invalidation.md` explains when which purge applies.

- Rendering settings (saveImgRDef, copyImgRDef's paste, resetRDef, applyOwnersRDef): OMERO's answer
  names the images it changed (`applySettingsToSet` → `{"true": [ids], "false": [...]}`,
  `resetDefaultsInSet` → `[ids]`); those images and the containers named in the request are purged.
- Moves and deletes (chgrp, chown, action/delete, action/deletemany) run as OMERO jobs after the
  answer. Containers are expanded to their images *before* the write is forwarded (afterwards the
  requester may no longer read them), with the requester's own cookie; the purge runs when the job is
  accepted and again after `REPURGE_AFTER`, so an entry refilled while the job ran does not stay.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from .keys import BadQuery, Params, parse_query
from .kinds import ALL, tag
from .routes import OBJECT_TYPES
from .upstream import Upstream, UpstreamError

log = logging.getLogger("edge.writes")

BODY_LIMIT = 1 << 20  # a write's form is a few ids; a larger body is forwarded and purges everything
REPURGE_AFTER = (5.0, 30.0, 120.0)  # seconds after an accepted job (chgrp, chown, delete) to purge again
EXPAND_LIMIT = 200  # backend listings one write may read to find a container's images; beyond: purge all
_CALLBACK = re.compile(rb"^\s*[A-Za-z_$][0-9A-Za-z_$.]*\((.*)\)\s*;?\s*$", re.S)


@dataclass(frozen=True)
class Write:
    name: str
    pattern: str  # regex over the path, named groups
    answer: str  # how success reads and which images it names: true | applied | ids | job | channels
    path_object: tuple[str, str] = ()  # (group, kind) or (type group, id group) when `typed`
    typed: bool = False
    form_ids: tuple[tuple[str, str], ...] = ()  # (form field, kind): ids, repeated or comma-separated
    typed_ids: tuple[str, str, str] = ()  # (ids field, type field, default type): `toids` + `to_type`
    expand: bool = False  # containers → their images before forwarding (moves and deletes)
    source: str = ""
    regex: re.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "regex", re.compile(self.pattern))


_RDEF_IDS = ("toids", "to_type", "image")  # rss.*InSet / applySettingsToSet: to_type dataset|plate|acquisition
_MOVED = tuple((t, t.lower()) for t in ("Project", "Dataset", "Image", "Screen", "Plate"))
_DELETED = tuple((f, OBJECT_TYPES[f]) for f in ("image", "dataset", "project", "screen", "plate", "well",
                                               "acquisition"))

WRITES: tuple[Write, ...] = (
    Write("saveImgRDef", r"^/(?:webgateway|webclient)/saveImgRDef/(?P<iid>[0-9]+)/$", "true",
          path_object=("iid", "image"),
          source="gw/urls.py:481-485, views.py:2037-2063 (POST; 'true' once saved and the thumbnail redone); "
                 "wc/urls.py saveImgRDef → the same view"),
    Write("copyImgRDef", r"^/webgateway/copyImgRDef/$", "applied", typed_ids=_RDEF_IDS,
          form_ids=(("imageId", "image"),),
          source="gw/urls.py:531-535, views.py:2352-2466 (POST with toids pastes; imageId is saved and reverted)"),
    Write("resetRDef", r"^/webgateway/resetRDef/$", "ids", typed_ids=_RDEF_IDS,
          source="gw/urls.py:541-547, views.py:2260-2300 (resetDefaultsInSet → the image ids)"),
    Write("applyOwnersRDef", r"^/webgateway/applyOwnersRDef/$", "ids", typed_ids=_RDEF_IDS,
          source="gw/urls.py:550-555, views.py:2260-2300 (toOwners: resetDefaultsByOwnerInSet)"),
    Write("edit_channel_names", r"^/webclient/edit_channel_names/(?P<iid>[0-9]+)/$", "channels",
          path_object=("iid", "image"), form_ids=(("parentId", ""),), expand=True,
          source="wc/urls.py edit_channel_names, views.py:2843-2878 (confirm_apply + parentId 'dataset-234' "
                 "renames the whole container: conn.setChannelNames renames its images, whose imgData carry "
                 "only their own tag, so the container is expanded; the answer names no image)"),
    Write("chgrp", r"^/webclient/chgrp/$", "job", form_ids=_MOVED, expand=True,
          source="wc/views.py:4672-4785 (POST Project|Dataset|Image|Screen|Plate = '1,2'; a chgrp job)"),
    Write("chown", r"^/webclient/chown/$", "job", form_ids=_MOVED, expand=True,
          source="wc/views.py:4788-4825 (POST as chgrp; {'jobIds': [...]})"),
    Write("delete", r"^/webclient/action/delete/(?P<type>[a-zA-Z]+)/(?P<oid>[0-9]+)/$", "job",
          path_object=("type", "oid"), typed=True, expand=True,
          source="wc/views.py:3128-3151 (manage_action_containers 'delete': {'bad': 'false'}, a delete job)"),
    Write("deletemany", r"^/webclient/action/deletemany/$", "job", form_ids=_DELETED, expand=True,
          source="wc/views.py:3152-3196 (POST image|dataset|project|screen|plate|well|acquisition lists)"),
)


def match(method: str, path: str) -> Write | None:
    """The write a request is, if it is one OMERO.web answers as a change (all of them are POSTs)."""
    if method != "POST":
        return None
    return next((w for w in WRITES if w.regex.match(path)), None)


def _ids(value: str) -> list[int]:
    return [int(v) for v in value.split(",") if v.strip().isascii() and v.strip().isdigit()]


def named(write: Write, path: str, form: Params) -> list[tuple[str, int]]:
    """(kind, id) of the objects the request names: its path, its form fields, its typed id lists."""
    out: list[tuple[str, int]] = []
    if write.path_object:
        groups = write.regex.match(path).groupdict()
        first, second = write.path_object
        kind = OBJECT_TYPES.get(groups[first].lower()) if write.typed else second
        if kind:
            out.append((kind, int(groups[second if write.typed else first])))
    for name, kind in write.form_ids:
        for _, value in (p for p in form if p[0] == name):
            if not kind:  # "dataset-234"
                ctype, _, ident = value.partition("-")
                if ctype.lower() in OBJECT_TYPES and ident.isascii() and ident.isdigit():
                    out.append((OBJECT_TYPES[ctype.lower()], int(ident)))
                continue
            out += [(kind, i) for i in _ids(value)]
    if write.typed_ids:
        ids_field, type_field, default = write.typed_ids
        ctype = dict(form).get(type_field, default).lower()
        kind = OBJECT_TYPES.get(ctype, "image")
        out += [(kind, i) for name, value in form if name == ids_field for i in _ids(value)]
    return out


def succeeded(write: Write, status: int, body: bytes) -> tuple[bool, list[int]]:
    """Whether OMERO made the change, and the images its answer says it changed."""
    if status != 200:
        return False, []
    m = _CALLBACK.match(body)
    text = m.group(1) if m else body
    if write.answer == "true":
        return text.strip() == b"true", []
    try:
        doc = json.loads(text)
    except ValueError:
        return False, []
    if write.answer == "applied":  # {"true": [...], "false": [...]}
        ok = doc.get("true", []) if isinstance(doc, dict) else []
        return bool(ok), [i for i in ok if isinstance(i, int)]
    if write.answer == "ids":
        ids = doc if isinstance(doc, list) else []
        return True, [i for i in ids if isinstance(i, int)]
    if write.answer == "channels":
        return isinstance(doc, dict) and "channelNames" in doc and "error" not in doc, []
    # a job: OMERO answers {"bad": "false"} or {"jobIds": [...]}, an error with "Error" or bad: true
    return isinstance(doc, dict) and doc.get("bad") != "true" and "Error" not in doc, []


class ListingFailed(Exception):
    """A listing the expansion needs did not answer: what the write changes is not known."""


Fetch = Callable[[str], Awaitable[object | None]]  # GET as the requester → its JSON; None when not found


async def images_of(objects: Iterable[tuple[str, int]], get: Fetch) -> tuple[list[tuple[str, int]], bool]:
    """The objects with the images (and plates, wells) inside the containers among them, as the webclient's
    own listings show them to the requester; False when more than EXPAND_LIMIT listings were needed."""
    found: dict[tuple[str, int], None] = dict.fromkeys(objects)
    queue, asked = [o for o in found if o[0] != "image"], 0
    while queue:
        kind, ident = queue.pop()
        asked += 1
        if asked > EXPAND_LIMIT:
            return list(found), False
        try:
            children = await _children(kind, ident, get)
        except ListingFailed:
            return list(found), False
        for child in children:
            if child not in found:
                found[child] = None
                if child[0] != "image":
                    queue.append(child)
    return list(found), True


async def _children(kind: str, ident: int, get: Fetch) -> list[tuple[str, int]]:
    """One container's children: the tree listings (wc/tree.py, `page=0` is unpaged), a plate's grid per field."""
    listing = {"project": ("/webclient/api/datasets/?id={}&page=0", "datasets", "dataset"),
               "dataset": ("/webclient/api/images/?id={}&page=0", "images", "image"),
               "screen": ("/webclient/api/plates/?id={}&page=0", "plates", "plate")}.get(kind)
    if listing is not None:
        doc = await get(listing[0].format(ident))
        rows = doc.get(listing[1], []) if isinstance(doc, dict) else []
        return [(listing[2], r["id"]) for r in rows if isinstance(r, dict) and isinstance(r.get("id"), int)]
    if kind == "well":
        doc = await get(f"/webgateway/well/{ident}/children/")
        return [("image", r["id"]) for r in doc or [] if isinstance(r, dict) and isinstance(r.get("id"), int)]
    if kind in ("plate", "plateacquisition"):
        out: list[tuple[str, int]] = []
        base = f"/webgateway/plate/{ident}/" if kind == "plate" else None
        for field_index in range(100 if base else 0):  # fields until the grid says there is none
            doc = await get(f"{base}{field_index}/")
            if not isinstance(doc, dict) or "grid" not in doc:
                break
            for row in doc["grid"]:
                for cell in row or []:
                    if isinstance(cell, dict) and isinstance(cell.get("id"), int):
                        out += [("image", cell["id"])] + ([("well", cell["wellId"])]
                                                          if isinstance(cell.get("wellId"), int) else [])
        return out
    return []


class WriteEffects:
    """Purges what a successful write changed; the pass-through calls it around each write it forwards."""

    def __init__(self, purge: Callable[[list[str]], Awaitable[int]], upstream: Upstream,
                 spawn: Callable[[Awaitable[None]], None], count: Callable[[str, int], None]) -> None:
        self.purge = purge
        self.upstream = upstream
        self.spawn = spawn
        self.count = count  # (write name, tags purged) → metrics

    async def before(self, write: Write, path: str, query: bytes, body: bytes | None,
                     headers: list[tuple[str, str]]) -> list[str] | None:
        """The tags this write will change, as far as the request tells (None: purge everything)."""
        if body is None:
            return None
        try:
            form = parse_query(query) + parse_query(body)
        except BadQuery:
            return None
        objects = named(write, path, form)
        if write.expand:
            objects, complete = await images_of(objects, self._getter(headers))
            if not complete:
                return None
        return [tag(kind, ident) for kind, ident in objects]

    async def after(self, write: Write, tags: list[str] | None, status: int, body: bytes) -> None:
        """The write's answer is in: purge (before the client sees it) when OMERO made the change."""
        ok, images = succeeded(write, status, body)
        if not ok:
            return
        purged = [ALL] if tags is None else list(dict.fromkeys(tags + [tag("image", i) for i in images]))
        await self.purge(purged)
        self.count(write.name, len(purged))
        if write.answer == "job":
            self.spawn(self._again(purged))

    async def _again(self, tags: list[str]) -> None:
        waited = 0.0
        for at in REPURGE_AFTER:
            await asyncio.sleep(at - waited)
            waited = at
            await self.purge(tags)

    def _getter(self, headers: list[tuple[str, str]]) -> Fetch:
        """GETs with the write's own cookie and host: what the requester may read, before it changes."""
        keep = [(k, v) for k, v in headers if k.lower() in ("cookie", "host")] + [("accept", "application/json")]

        async def get(path_qs: str) -> object | None:
            try:
                resp = await self.upstream.request("GET", path_qs, keep)
            except UpstreamError as exc:
                log.warning("write expansion: %s failed: %s", path_qs, exc)
                raise ListingFailed(path_qs) from None
            if resp.status_code in (403, 404):
                return None
            try:
                if resp.status_code == 200:
                    return resp.json()
            except ValueError:
                pass
            raise ListingFailed(path_qs)
        return get
