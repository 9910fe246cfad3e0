"""The records that flow through a run: enumeration yields `Ref`s and details, the planner turns them
into `Item`s (one URL each), a target answers each item with an `Outcome`.

Both sources (API v0 and PostgreSQL) produce the same records, so planning, sharding, resume and
the journal never depend on where the hierarchy came from.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# Kinds of URL a run can warm (the journal and `--dry-run` count per kind).
API, GRID, THUMB, IMGDATA, TILE, WELL = "api", "grid", "thumb", "imgdata", "tile", "well"
# The webclient's browsing (docs/browse.md, warm/browse.py): its tree listings (and the page's three
# requests), the plate page (`load_plate`), containers' right-hand panels and map annotations, a well's
# panel and annotations, and on request an image's panel and annotations, and its three tabs.
TREE, CENTER, DETAILS, ANNOTS, WELLPANEL = "tree", "center", "details", "annots", "wellpanel"
IMGPANEL, IMGTAB = "imgpanel", "imgtab"
BROWSE = frozenset({TREE, CENTER, DETAILS, ANNOTS, WELLPANEL})  # part of `metadata`
KINDS = (API, GRID, THUMB, IMGDATA, TILE, WELL, TREE, CENTER, DETAILS, ANNOTS, WELLPANEL, IMGPANEL, IMGTAB)
# Kinds whose plan needs a plate's runs (their grids, listings, well panels' children, plate pages)
RUN_KINDS = frozenset({GRID, API, WELL, TREE, CENTER})

OK, SKIP, FAIL = "ok", "skip", "fail"


@dataclass(frozen=True, slots=True)
class Ref:
    """An object to warm, before its children are fetched.

    kind: webclient (the page's own requests, once per run) | listing | screen | project | plate | dataset |
    orphans | images | tiles.
    `count` is the number of entries in the object's own API listing (plates of a screen, datasets
    of a project, rows of a site listing), known from the parent's walk; `ids` carries the image
    ids of an `images` ref (from `--ids`) and of a `tiles` ref.
    """

    kind: str
    id: int | str
    count: int = 0
    ids: tuple[int, ...] = ()

    @property
    def name(self) -> str:
        """Stable object name: the unit of sharding, of resume and of the journal's `object` column."""
        return f"{self.kind}:{self.id}"


@dataclass(slots=True)
class PlateLayout:
    """What the plate view needs: the image ids of every field in row-major order, and the runs."""

    wells: int  # rows in the plate's wells listing
    fields: list[list[int]]  # fields[f] = image ids of field f, row-major (the grid's order)
    acquisitions: list[tuple[int, int]] = field(default_factory=list)  # (acquisition id, fields in it)
    fetched: dict[str, str] = field(default_factory=dict)  # grid URL → X-Edge-Cache of the read that listed it
    well_ids: list[int] = field(default_factory=list)  # wells with images, row-major (the well panel's children)

    def views(self) -> list[tuple[int | None, int]]:
        """(run or None, field): every field of the plate, then every field of each run (the plate page's
        and the grid's addresses)."""
        return [(None, f) for f in range(len(self.fields))] + \
            [(acq, f) for acq, n_fields in self.acquisitions for f in range(n_fields)]


@dataclass(slots=True)
class ImageList:
    """Images of a dataset or of the orphan set, in listing order; `total` counts before `--since`."""

    ids: list[int]
    total: int


@dataclass(frozen=True, slots=True)
class Item:
    """One URL to warm. `url` is path?query exactly as requested (the journal key); `ids` are the
    image ids of a `get_thumbnails` batch (direct mode stores one entry per id)."""

    url: str
    kind: str
    obj: str
    ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Outcome:
    state: str  # OK | SKIP | FAIL
    status: int = 0  # HTTP status of the entry / backend answer (0: no answer)
    reason: str = ""
    bytes: int = 0
    fetched: int = 0  # images or URLs the backend had to produce (renders on a batch)


class Retryable(Exception):
    """A transient failure (5xx, 429, timeout, connection): retried with backoff, then recorded."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Fatal(Exception):
    """A configuration problem no retry fixes (wrong token, edge unreachable at start): stop the run."""
