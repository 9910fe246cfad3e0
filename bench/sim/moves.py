"""OMERO's object graph for the writes: which objects a container holds, and what chgrp, chown and delete
do to them (the Chgrp2 / Chown2 / Delete2 jobs omero-py submits, applied to the catalog's overlay).

Each job is all or nothing per type, as OMERO's one handle per `conn.chgrpObjects(dtype, ids, ...)` is:
it fails (and changes nothing) when the requester may not do it, or when it would split a fileset
(a plate's images are one fileset: one image, a well or a run alone cannot move or go).
"""
from __future__ import annotations

from typing import Callable, Iterator

from bench.sim.catalog import Catalog, Dataset, Image, Owned, Plate, Project, Screen, User, Well
from bench.sim.permissions import perms

Obj = Owned | Well | Image
KINDS = ("project", "dataset", "image", "screen", "plate", "well", "acquisition")


def lookup(cat: Catalog, kind: str, ident: int) -> Obj | None:
    """conn.getObject(kind, id) before the read check (orphan runs are no dataset)."""
    if kind == "image":
        return cat.image(ident)
    if kind == "well":
        return cat.well(ident)
    table = {"project": cat.projects, "dataset": cat.datasets, "screen": cat.screens, "plate": cat.plates,
             "acquisition": cat.acquisitions}.get(kind, {})
    found = table.get(ident) if ident > 0 else None
    return None if isinstance(found, Dataset) and found.orphan else found


def readable(cat: Catalog, user: User, kind: str, ident: int) -> Obj | None:
    obj = lookup(cat, kind, ident)
    return obj if cat.can_read(user, obj) else None


# ---- what a container holds ------------------------------------------------------------------------
def children(cat: Catalog, kind: str, obj: Obj) -> list[tuple[str, Obj]]:
    """The direct children a chgrp, chown or delete with children takes along (images are leaves)."""
    if isinstance(obj, Project):
        return [("dataset", cat.datasets[d]) for d in obj.dataset_ids if d in cat.datasets]
    if isinstance(obj, Screen):
        return [("plate", cat.plates[p]) for p in obj.plate_ids if p in cat.plates]
    if isinstance(obj, (Dataset, Plate)):
        return [("image", img) for img in cat.images_of(obj)]
    if isinstance(obj, Well):
        return [("image", img) for img in cat.well_images(obj)]
    if kind == "acquisition":
        plate = cat.plates.get(obj.plate_id)
        return [("image", img) for img in cat.images_of(plate) if img.acquisition_id == obj.id] if plate else []
    return []


def images_in(cat: Catalog, kind: str, obj: Obj) -> Iterator[Image]:
    """Every image under an object (the rendering settings services' `*InSet` over a container)."""
    if isinstance(obj, Image):
        yield obj
        return
    for child_kind, child in children(cat, kind, obj):
        yield from images_in(cat, child_kind, child)


def _splits_fileset(kind: str, obj: Obj) -> bool:
    """A plate's images share one fileset (tree.py fileset_id): OMERO's graph policy refuses to move or
    delete part of it."""
    return kind in ("well", "acquisition") or isinstance(obj, Image) and obj.plate_id is not None


# ---- the jobs ----------------------------------------------------------------------------------------
def _detach(cat: Catalog, kind: str, obj: Obj) -> None:
    """Remove the link to the parent (the parent stays): a moved or deleted dataset leaves its project,
    a plate its screen, an image its dataset (it is an orphan now)."""
    if isinstance(obj, Dataset) and obj.project_id in cat.projects:
        project = cat.projects[obj.project_id]
        cat.restamp(project, dataset_ids=tuple(d for d in project.dataset_ids if d != obj.id))
        if obj.id in cat.datasets:
            cat.restamp(cat.datasets[obj.id], project_id=None)
    elif isinstance(obj, Plate) and obj.screen_id in cat.screens:
        screen = cat.screens[obj.screen_id]
        cat.restamp(screen, plate_ids=tuple(p for p in screen.plate_ids if p != obj.id))
        if obj.id in cat.plates:
            cat.restamp(cat.plates[obj.id], screen_id=None)
    elif isinstance(obj, Image) and obj.dataset_id is not None:
        cat.changes.pin(obj)
        cat.changes.unlinked.add(obj.id)


def _stamp(cat: Catalog, kind: str, obj: Obj, attr: str, value: int) -> None:
    """Set group_id or owner_id on an object and everything under it (images follow their container)."""
    table = cat.changes.groups if attr == "group_id" else cat.changes.owners
    table[(kind, obj.id)] = value
    if isinstance(obj, Image):
        return
    cat.restamp(obj, **{attr: value})
    for child_kind, child in children(cat, kind, obj):
        if not isinstance(child, Image):
            _stamp(cat, child_kind, child, attr, value)
        elif (child_kind, child.id) in table:     # an image with an entry of its own follows too
            table[(child_kind, child.id)] = value


Check = Callable[[Obj], bool]


def _job(cat: Catalog, user: User, kind: str, ids: list[int], allowed: Check,
         apply: Callable[[str, Obj], None], action: str = "UPDATE") -> bool:
    """Run one job over `ids` of `kind`: every object readable, allowed and whole, else nothing changes.
    What it changed is journaled (omerodb.py) as OMERO's graph requests log it: each object, each image."""
    objs = [readable(cat, user, kind, i) for i in ids]
    if not objs or any(o is None or _splits_fileset(kind, o) or not allowed(o) for o in objs):
        return False
    images = [img for obj in objs for img in images_in(cat, kind, obj)]
    for obj in objs:
        apply(kind, obj)
    changed = [(kind, obj.id) for obj in objs if kind != "image"]
    cat.journal.objects(action, changed, images, user.id, objs[0].group_id)
    return True


def chgrp(cat: Catalog, user: User, kind: str, ids: list[int], group_id: int) -> bool:
    """Chgrp2: the owner moves data (and its contents) to a group they and the data's owner are in; links to
    parents left behind are cut (wc/views.py:4672-4785, conn.chgrpObjects)."""
    if group_id not in cat.groups or group_id not in user.groups or user.public:
        return False

    def allowed(obj: Obj) -> bool:
        return perms(cat, user, obj.owner_id, obj.group_id).can_chgrp and obj.group_id != group_id

    def apply(k: str, obj: Obj) -> None:
        _detach(cat, k, obj)
        _stamp(cat, k, lookup(cat, k, obj.id), "group_id", group_id)   # as detached
    return _job(cat, user, kind, ids, allowed, apply)


def chown(cat: Catalog, user: User, kind: str, ids: list[int], owner: User) -> bool:
    """Chown2: a group owner gives data (and its contents) to another member of its group; links stay
    (wc/views.py:4788-4825, conn.chownObjects)."""
    def allowed(obj: Obj) -> bool:
        return perms(cat, user, obj.owner_id, obj.group_id).can_chown and obj.group_id in owner.groups

    return _job(cat, user, kind, ids, allowed, lambda k, obj: _stamp(cat, k, obj, "owner_id", owner.id))


def delete(cat: Catalog, user: User, kind: str, ids: list[int], child: bool) -> bool:
    """Delete2 (container.py:973-1010 deleteItem / deleteObjects): without `child` a dataset's images,
    a project's datasets and a screen's plates stay, unlinked; a plate always goes with its wells."""
    def allowed(obj: Obj) -> bool:
        return perms(cat, user, obj.owner_id, obj.group_id).can_delete

    def apply(k: str, obj: Obj) -> None:
        _detach(cat, k, obj)
        take = child or isinstance(obj, Plate)
        for child_kind, sub in children(cat, k, obj):
            if not take:
                _detach(cat, child_kind, sub)
            elif not isinstance(sub, Image):     # images go with their deleted plate or dataset
                apply(child_kind, sub)
        cat.changes.deleted.add((k, obj.id))
        if not isinstance(obj, Image):
            cat.remove(cat.containers(obj).get(obj.id, obj))
    return _job(cat, user, kind, ids, allowed, apply, "DELETE")
