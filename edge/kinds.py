"""The OMERO object kinds the cache knows: one table for tags, purges, read checks and API routes.

A tag names one object by kind and canonical id ("image:12"): the URL's text may pad the id
(`render_thumbnail/012/`), OMERO answers it as the integer, so the tag is built from the integer.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ObjectKind:
    name: str  # the tag prefix, the purge body's key and `edge purge --<name>`
    api: str  # API v0 plural: `/api/v0/m/<api>/<id>/` is the read check and the listing route


KINDS: tuple[ObjectKind, ...] = (
    ObjectKind("image", "images"),
    ObjectKind("plate", "plates"),
    ObjectKind("plateacquisition", "plateacquisitions"),
    ObjectKind("well", "wells"),
    ObjectKind("screen", "screens"),
    ObjectKind("dataset", "datasets"),
    ObjectKind("project", "projects"),
    ObjectKind("roi", "rois"),
    ObjectKind("shape", "shapes"),
)
BY_NAME = {kind.name: kind for kind in KINDS}
BY_API = {kind.api: kind for kind in KINDS}
ALL = "*"  # the tag every entry carries implicitly: `{"all": true}` purges it


def tag(kind: str, ident: int | str) -> str:
    """The canonical tag of one object; `ident` may be the URL's digits (leading zeros fold away)."""
    return f"{kind}:{int(ident)}"
