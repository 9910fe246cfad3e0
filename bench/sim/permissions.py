"""What a viewer may do with an object: OMERO's permission restrictions as the webclient shows them.

The tree's `permsCss` (tree.py:58-80 `parse_permissions_css`), the annotations' `permissions` dicts
(tree.py:1879-1884) and the panels' `manager.canAnnotate`/`canEdit` all come from the same flags. The
sim has no admins, and alice owns group lab-a; so: the owner may do everything but chown; a group
owner may also edit, delete and chown the group's data (not chgrp others'); another member may annotate/link in a read-annotate group (`rwra--`) and also edit/delete in a
read-write one (`rwrw--`); read-only (`rwr---`) and private (`rw----`) groups give others nothing.
The public user owns nothing, so every anonymous visitor gets the same (empty) flags.
"""
from __future__ import annotations

from dataclasses import dataclass

from bench.sim.catalog import Catalog, User

CSS_ORDER = ("canEdit", "canAnnotate", "canLink", "canDelete", "canChgrp", "canChown")   # tree.py:70-77


@dataclass(frozen=True)
class Perms:
    can_edit: bool
    can_annotate: bool
    can_link: bool
    can_delete: bool
    can_chgrp: bool
    can_chown: bool
    owned: bool

    def css(self) -> str:
        """`permsCss`: the allowed restrictions in OMERO's order, then `isOwned`."""
        flags = dict(zip(CSS_ORDER, (self.can_edit, self.can_annotate, self.can_link, self.can_delete,
                                     self.can_chgrp, self.can_chown)))
        return " ".join([name for name in CSS_ORDER if flags[name]] + (["isOwned"] if self.owned else []))

    def annotation_dict(self) -> dict:
        """The `permissions` of an annotation or link in api/annotations (tree.py:1879-1884)."""
        return {"canDelete": self.can_delete, "canAnnotate": self.can_annotate, "canLink": self.can_link,
                "canEdit": self.can_edit}


def perms(catalog: Catalog, viewer: User | None, owner_id: int, group_id: int) -> Perms:
    owned = viewer is not None and viewer.id == owner_id
    group = catalog.groups[group_id]
    perm = group.perm
    member = viewer is not None and group_id in viewer.groups and not viewer.public
    leader = member and viewer.id in group.owners  # a group owner may do all but chgrp others' data
    annotate = owned or leader or (member and perm[3] in "aw")
    write = owned or leader or (member and perm[3] == "w")
    return Perms(can_edit=write, can_annotate=annotate, can_link=annotate, can_delete=write,
                 can_chgrp=owned, can_chown=leader, owned=owned)
