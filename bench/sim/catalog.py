"""The simulated OMERO data set: groups, users, containers, and images computed from id ranges.

Containers (screens, plates, acquisitions, projects, datasets) are explicit objects. Wells, well
samples, images, ROIs and shapes inside them are arithmetic on id ranges, so the `idr` preset
holds hundreds of thousands of images in a few MB and starts in a fraction of a second.
Every type has its own id base, so a client that mixes up id kinds finds nothing.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache
from typing import Iterator

from bench.sim.changes import Changes
from bench.sim.omerodb import Journal

IMAGE_BASE = 1_000_001
ROI_BASE = 4_000_000          # roi id = ROI_BASE + image id
SHAPE_BASE = 10_000_000       # shape ids = SHAPE_BASE + 2 * image id + k, k in {0, 1}
SHAPES_PER_IMAGE = 2
EPOCH = 1_600_000_000         # creation times are EPOCH + a deterministic offset (seconds)


@dataclass(frozen=True)
class Group:
    id: int
    name: str
    perm: str  # "rwr---" (read-only: members read each other's data) or "rw----" (private)
    owners: tuple[int, ...] = ()  # group owners ("leaders"): may chown the group's data (no admins here)

    @property
    def group_read(self) -> bool:
        return self.perm[2] == "r"


@dataclass(frozen=True)
class User:
    id: int
    name: str
    first: str
    last: str
    password: str
    groups: tuple[int, ...]
    public: bool = False

    @property
    def default_group(self) -> int:
        return self.groups[0]

    @property
    def full_name(self) -> str:
        return f"{self.first} {self.last}"


@dataclass(frozen=True)
class Pixels:
    """Plane geometry of an image; pyramids have `levels` resolutions halving from full size."""
    size_x: int
    size_y: int
    size_c: int = 3
    size_z: int = 1
    size_t: int = 1
    levels: int = 1
    tile: int = 256
    in_progress: bool = False
    physical_size: float | None = 0.325

    @property
    def pyramid(self) -> bool:
        return self.levels > 1

    def level_size(self, level: int) -> tuple[int, int]:
        """Size at resolution index `level` (0 = full resolution)."""
        return max(1, self.size_x >> level), max(1, self.size_y >> level)


@dataclass(frozen=True)
class Owned:
    id: int
    name: str
    owner_id: int
    group_id: int


@dataclass(frozen=True, eq=False)
class Screen(Owned):
    description: str = ""
    plate_ids: tuple[int, ...] = ()


@dataclass(frozen=True, eq=False)
class Acquisition(Owned):
    plate_id: int = 0
    first_field: int = 0
    n_fields: int = 1

    @property
    def fields(self) -> range:
        return range(self.first_field, self.first_field + self.n_fields)


@dataclass(frozen=True, eq=False)
class Plate(Owned):
    rows: int = 8
    cols: int = 12
    fields: int = 1
    screen_id: int | None = None
    acquisitions: tuple[Acquisition, ...] = ()
    pixels: Pixels = Pixels(672, 512)
    image_base: int = 0
    well_base: int = 0
    ws_base: int = 0
    empty_edges: bool = False                 # row A and column 1 are empty (for layout=shrink)
    in_progress_wells: frozenset[int] = frozenset()
    description: str = ""

    @property
    def n_wells(self) -> int:
        return self.rows * self.cols

    @property
    def span(self) -> int:
        return self.n_wells * self.fields

    def is_empty(self, index: int) -> bool:
        row, col = divmod(index, self.cols)
        if self.empty_edges and (row == 0 or col == 0):
            return True
        return (row * 7 + col * 3 + self.id) % 11 == 5

    def acquisition_of(self, field_index: int) -> Acquisition | None:
        return next((a for a in self.acquisitions if field_index in a.fields), None)

    @cached_property
    def present(self) -> tuple[int, ...]:
        """Offsets (well index * fields + field) of the images that exist, in id order."""
        return tuple(i * self.fields + f for i in range(self.n_wells) if not self.is_empty(i)
                     for f in range(self.fields))


@dataclass(frozen=True, eq=False)
class Project(Owned):
    description: str = ""
    dataset_ids: tuple[int, ...] = ()


@dataclass(frozen=True, eq=False)
class Dataset(Owned):
    """A dataset, or (with `orphan`) a run of orphaned images that is not exposed as a dataset."""
    description: str = ""
    project_id: int | None = None
    image_base: int = 0
    n_images: int = 0
    pixels: tuple[Pixels, ...] = (Pixels(1024, 768, size_c=2, size_z=5, size_t=3),)
    orphan: bool = False

    @property
    def span(self) -> int:
        return self.n_images

    @property
    def present(self) -> range:
        return range(self.n_images)


@dataclass(frozen=True, eq=False)
class Image(Owned):
    pixels: Pixels = Pixels(1, 1)
    created: int = EPOCH
    description: str = ""
    dataset_id: int | None = None
    plate_id: int | None = None
    well_id: int | None = None
    ws_id: int | None = None
    field: int | None = None
    acquisition_id: int | None = None
    row: int | None = None
    col: int | None = None


@dataclass(frozen=True)
class Well:
    id: int
    plate: Plate
    row: int
    col: int

    @property
    def index(self) -> int:
        return self.row * self.plate.cols + self.col

    @property
    def owner_id(self) -> int:
        return self.plate.owner_id

    @property
    def group_id(self) -> int:
        return self.plate.group_id

    @property
    def empty(self) -> bool:
        return self.plate.is_empty(self.index)


def row_label(row: int) -> str:
    return chr(ord("A") + row) if row < 26 else "A" + chr(ord("A") + row - 26)


def name_key(obj: Owned) -> tuple[str, int]:
    """OMERO's API ordering: lower(name), then id."""
    return obj.name.lower(), obj.id


@dataclass
class Catalog:
    """The whole data set and the queries views need; containers are held sorted by lower(name)."""
    scale: str
    groups: dict[int, Group]
    users: dict[int, User]
    screens: dict[int, Screen]
    plates: dict[int, Plate]
    projects: dict[int, Project]
    datasets: dict[int, Dataset]          # includes orphan runs (orphan=True)
    rdef_seeds: list[tuple[int, int, str]] = field(default_factory=list)  # (image id, user id, SEED_STYLES key)
    changes: Changes = field(default_factory=Changes)  # what writes did since start (changes.py)
    journal: Journal = field(default_factory=Journal)  # where writes are recorded as OMERO does (--db)

    def __post_init__(self) -> None:
        self.acquisitions = {a.id: a for p in self.plates.values() for a in p.acquisitions}
        self._blocks: list[Plate | Dataset] = sorted(
            [*self.plates.values(), *self.datasets.values()], key=lambda b: b.image_base)
        self._block_bases = [b.image_base for b in self._blocks]
        self._plates_by_well = sorted(self.plates.values(), key=lambda p: p.well_base)
        self._well_bases = [p.well_base for p in self._plates_by_well]
        # image blocks in global lower(name) order: names are "<container name>…", prefix-free
        self.blocks_by_name = sorted(self._blocks, key=lambda b: (self.image_name(b, b.present[0]).lower()
                                                                   if len(b.present) else b.name.lower()))
        self.users_by_name = {u.name: u for u in self.users.values()}

    # ---- permissions -------------------------------------------------------------------
    def can_read(self, user: User | None, obj: Owned | Well | Image | None) -> bool:
        if user is None or obj is None:
            return False
        if obj.group_id not in user.groups:
            return False
        return obj.owner_id == user.id or self.groups[obj.group_id].group_read

    # ---- images --------------------------------------------------------------------------
    def _block_of(self, image_id: int) -> tuple[Plate | Dataset, int] | None:
        i = bisect.bisect_right(self._block_bases, image_id) - 1
        if i < 0:
            return None
        block = self._blocks[i]
        offset = image_id - block.image_base
        return (block, offset) if offset < block.span else None

    def image(self, image_id: int) -> Image | None:
        found = self._block_of(image_id)
        if found is None:
            return None
        return self.image_at(*found)

    def image_at(self, block: Plate | Dataset, offset: int) -> Image | None:
        return self.changes.image(_image_at(block, offset))

    @staticmethod
    def image_name(block: Plate | Dataset, offset: int) -> str:
        if isinstance(block, Plate):
            index, fld = divmod(offset, block.fields)
            row, col = divmod(index, block.cols)
            return f"{block.name} [Well {row_label(row)}{col + 1:02d}, Field {fld + 1}]"
        return f"{block.name}_{offset + 1:04d}.tif"

    def images_of(self, block: Plate | Dataset) -> Iterator[Image]:
        """The images in a plate or dataset now (an image moved out of its dataset is no longer in it)."""
        linked = isinstance(block, Dataset) and not block.orphan
        for offset in block.present:
            img = self.image_at(block, offset)
            if img is not None and not (linked and img.dataset_id != block.id):
                yield img

    def image_count(self, dataset: Dataset) -> int:
        return sum(1 for _ in self.images_of(dataset)) if self.changes else dataset.n_images

    def orphan_images(self) -> Iterator[Image]:
        """Images in no dataset and no well: the orphan runs, and images writes took out of their dataset."""
        for run in (d for d in self.datasets.values() if d.orphan):
            yield from self.images_of(run)
        for image_id in sorted(self.changes.unlinked):
            img = self.image(image_id)
            if img is not None and img.dataset_id is None and img.plate_id is None:
                yield img

    # ---- what writes change (changes.py, writes.py) ------------------------------------------
    def restamp(self, obj: Owned, **fields: object) -> Owned:
        """Replace an explicit container (and a plate's acquisitions) by a changed copy where views find it."""
        new = replace(obj, **fields)
        table = self.containers(obj)
        table[obj.id] = new
        if isinstance(new, Plate) and ("group_id" in fields or "owner_id" in fields):
            acqs = tuple(replace(a, group_id=new.group_id, owner_id=new.owner_id) for a in new.acquisitions)
            new = table[obj.id] = replace(new, acquisitions=acqs)
            self.acquisitions.update({a.id: a for a in acqs})
        return new

    def remove(self, obj: Owned) -> None:
        self.containers(obj).pop(obj.id, None)
        if isinstance(obj, Plate):
            for a in obj.acquisitions:
                self.acquisitions.pop(a.id, None)

    def containers(self, obj: Owned) -> dict:
        return {Screen: self.screens, Plate: self.plates, Project: self.projects, Dataset: self.datasets,
                Acquisition: self.acquisitions}[type(obj)]

    # ---- plates and wells ------------------------------------------------------------------
    def well(self, well_id: int) -> Well | None:
        i = bisect.bisect_right(self._well_bases, well_id) - 1
        if i < 0:
            return None
        plate = self.plates.get(self._plates_by_well[i].id)   # as writes left it; None once deleted
        if plate is None:
            return None
        index = well_id - plate.well_base
        if index >= plate.n_wells:
            return None
        row, col = divmod(index, plate.cols)
        return Well(well_id, plate, row, col)

    def well_at(self, plate: Plate, row: int, col: int) -> Well:
        return Well(plate.well_base + row * plate.cols + col, plate, row, col)

    def wells(self, plate: Plate) -> Iterator[Well]:
        """All wells of a plate in the API's order: column, then row."""
        for col in range(plate.cols):
            for row in range(plate.rows):
                yield self.well_at(plate, row, col)

    def well_images(self, well: Well, fields: range | None = None) -> list[Image]:
        if well.empty:
            return []
        plate = well.plate
        wanted = fields if fields is not None else range(plate.fields)
        offsets = (well.index * plate.fields + f for f in wanted if 0 <= f < plate.fields)
        return [img for img in (self.image_at(plate, o) for o in offsets) if img is not None]

    # ---- ROIs and shapes -----------------------------------------------------------------
    def roi_image(self, roi_id: int) -> Image | None:
        return self.image(roi_id - ROI_BASE)

    def shape_image(self, shape_id: int) -> tuple[Image, int] | None:
        image_id, k = divmod(shape_id - SHAPE_BASE, SHAPES_PER_IMAGE)
        img = self.image(image_id) if shape_id >= SHAPE_BASE else None
        return (img, k) if img is not None else None

    def in_progress_ids(self) -> list[int]:
        """Images whose pyramid starts out "being generated" (in-progress wells and pixels)."""
        return [block.image_base + offset for block in self._blocks for offset in _in_progress_offsets(block)
                if self.image_at(block, offset) is not None]

    # ---- summaries -------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        return {
            "screens": len(self.screens),
            "plates": len(self.plates),
            "projects": len(self.projects),
            "datasets": sum(1 for d in self.datasets.values() if not d.orphan),
            "wells": sum(p.n_wells for p in self.plates.values()),
            "images": sum(len(b.present) for b in self._blocks),
        }


def _in_progress_offsets(block: Plate | Dataset) -> list[int]:
    if isinstance(block, Plate):
        return [w * block.fields + f for w in sorted(block.in_progress_wells) for f in range(block.fields)]
    return [k for k in block.present if block.pixels[k % len(block.pixels)].in_progress]


@lru_cache(maxsize=65536)
def _image_at(block: Plate | Dataset, offset: int) -> Image | None:
    """The image at `offset` in a plate or dataset block, or None for an empty well."""
    image_id = block.image_base + offset
    name = Catalog.image_name(block, offset)
    created = EPOCH + (image_id % 86400) * 60
    if isinstance(block, Plate):
        index, fld = divmod(offset, block.fields)
        if block.is_empty(index):
            return None
        row, col = divmod(index, block.cols)
        acq = block.acquisition_of(fld)
        pixels = block.pixels
        if index in block.in_progress_wells:
            pixels = Pixels(pixels.size_x, pixels.size_y, pixels.size_c, levels=1, in_progress=True)
        return Image(image_id, name, block.owner_id, block.group_id, pixels=pixels, created=created,
                     plate_id=block.id, well_id=block.well_base + index, ws_id=block.ws_base + offset,
                     field=fld, acquisition_id=acq.id if acq else None, row=row, col=col)
    return Image(image_id, name, block.owner_id, block.group_id,
                 pixels=block.pixels[offset % len(block.pixels)], created=created,
                 dataset_id=None if block.orphan else block.id)
