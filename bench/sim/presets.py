"""Scale presets: `small` (every case the tests need, starts instantly) and `idr` (IDR-like volume).

Both are built by the same Builder, which hands out ids from a per-type base so the data set is
identical on every run.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from bench.sim.catalog import (IMAGE_BASE, Acquisition, Catalog, Dataset, Group, Pixels, Plate,
                               Project, Screen, User)

PUBLIC, LAB_A, LAB_B = 3, 4, 5
PUBLIC_USER, CURATOR, ALICE, BOB, CAROL = 2, 3, 4, 5, 6

GROUPS = {
    PUBLIC: Group(PUBLIC, "public", "rwr---"),
    LAB_A: Group(LAB_A, "lab-a", "rwr---", owners=(ALICE,)),
    LAB_B: Group(LAB_B, "lab-b", "rw----"),
}
USERS = {
    PUBLIC_USER: User(PUBLIC_USER, "public", "Public", "User", "public-pw", (PUBLIC,), public=True),
    CURATOR: User(CURATOR, "curator", "Ida", "Curator", "curator-pw", (PUBLIC,)),
    ALICE: User(ALICE, "alice", "Alice", "Adams", "alice-pw", (LAB_A, PUBLIC)),
    BOB: User(BOB, "bob", "Bob", "Brown", "bob-pw", (LAB_B, PUBLIC)),
    CAROL: User(CAROL, "carol", "Carol", "Clark", "carol-pw", (LAB_A, PUBLIC)),
}

PLATE_PIXELS = Pixels(672, 512, size_c=3)
DATASET_PIXELS = Pixels(1024, 768, size_c=2, size_z=5, size_t=3)
PYRAMID = Pixels(8192, 8192, size_c=3, levels=5, tile=512)
IN_PROGRESS = Pixels(8192, 8192, size_c=3, levels=5, tile=512, in_progress=True)


@dataclass
class Builder:
    """Allocates deterministic ids and collects containers."""
    screens: dict[int, Screen] = field(default_factory=dict)
    plates: dict[int, Plate] = field(default_factory=dict)
    projects: dict[int, Project] = field(default_factory=dict)
    datasets: dict[int, Dataset] = field(default_factory=dict)
    rdef_seeds: list[tuple[int, int, str]] = field(default_factory=list)
    next_id: dict[str, int] = field(default_factory=lambda: {
        "screen": 1, "project": 101, "dataset": 201, "plate": 1001, "acquisition": 5001,
        "well": 10001, "ws": 500001, "image": IMAGE_BASE})

    def _take(self, kind: str, n: int = 1) -> int:
        first = self.next_id[kind]
        self.next_id[kind] = first + n
        return first

    def plate(self, name: str, owner: int, group: int, rows: int, cols: int, fields: int = 1,
              runs: tuple[int, ...] = (), screen_id: int | None = None, **extra) -> Plate:
        """`runs` are the numbers of fields in each plate acquisition (their sum is `fields`)."""
        pid = self._take("plate")
        acqs, first = [], 0
        for i, n in enumerate(runs):
            acqs.append(Acquisition(self._take("acquisition"), f"Run {i + 1}", owner, group, plate_id=pid,
                                    first_field=first, n_fields=n))
            first += n
        span = rows * cols * fields
        plate = Plate(pid, name, owner, group, rows=rows, cols=cols, fields=fields, screen_id=screen_id,
                      acquisitions=tuple(acqs), image_base=self._take("image", span),
                      well_base=self._take("well", rows * cols), ws_base=self._take("ws", span),
                      pixels=extra.pop("pixels", PLATE_PIXELS), **extra)
        self.plates[pid] = plate
        return plate

    def screen(self, name: str, owner: int, group: int, plates: list[dict]) -> Screen:
        sid = self._take("screen")
        ids = tuple(self.plate(owner=owner, group=group, screen_id=sid, **p).id for p in plates)
        self.screens[sid] = Screen(sid, name, owner, group, description=f"Simulated screen {name}",
                                   plate_ids=ids)
        return self.screens[sid]

    def dataset(self, name: str, owner: int, group: int, n: int, pixels: tuple[Pixels, ...] = (DATASET_PIXELS,),
                project_id: int | None = None, orphan: bool = False) -> Dataset:
        did = 0 if orphan else self._take("dataset")
        ds = Dataset(did, name, owner, group, project_id=project_id, image_base=self._take("image", n),
                     n_images=n, pixels=pixels, orphan=orphan)
        key = -ds.image_base if orphan else did
        self.datasets[key] = ds
        return ds

    def project(self, name: str, owner: int, group: int, datasets: list[dict]) -> Project:
        pid = self._take("project")
        ids = tuple(self.dataset(owner=owner, group=group, project_id=pid, **d).id for d in datasets)
        self.projects[pid] = Project(pid, name, owner, group, dataset_ids=ids)
        return self.projects[pid]

    def orphans(self, owner: int, group: int, n: int) -> Dataset:
        return self.dataset(f"orphan-{USERS[owner].name}", owner, group, n, orphan=True)

    def build(self, scale: str) -> Catalog:
        return Catalog(scale, GROUPS, USERS, self.screens, self.plates, self.projects, self.datasets,
                       self.rdef_seeds)


def _small_into(b: Builder) -> None:
    b.screen("idr0001-sim/screenA", CURATOR, PUBLIC, [
        dict(name="idr0001-plate384-001", rows=16, cols=24, fields=4, runs=(2, 2)),
        dict(name="idr0001-plate096-002", rows=8, cols=12, fields=2, runs=(2,),
             in_progress_wells=frozenset({5, 17})),
    ])
    b.screen("idr0002-sim/screenB", CURATOR, PUBLIC, [
        dict(name="idr0002-plate096-001", rows=8, cols=12, empty_edges=True),
        dict(name="idr0002-plate024-002", rows=4, cols=6),
    ])
    b.project("idr0003-sim/experimentA", CURATOR, PUBLIC, [
        dict(name="idr0003-ds-001", n=12),
        dict(name="idr0003-ds-002-pyramids", n=4, pixels=(PYRAMID, PYRAMID, IN_PROGRESS, IN_PROGRESS)),
    ])
    b.dataset("idr0004-ds-orphaned", CURATOR, PUBLIC, 5)
    b.orphans(CURATOR, PUBLIC, 4)
    for owner, group, lab in ((ALICE, LAB_A, "lab-a"), (BOB, LAB_B, "lab-b")):
        b.screen(f"{lab}-screen", owner, group, [dict(name=f"{lab}-plate096", rows=8, cols=12)])
        b.project(f"{lab}-project", owner, group, [dict(name=f"{lab}-ds-{USERS[owner].name}", n=6)])
        b.orphans(owner, group, 2)
    b.dataset("lab-a-ds-carol", CAROL, LAB_A, 3)
    first_public = min(b.plates.values(), key=lambda p: p.id)
    alice_ds = next(d for d in b.datasets.values() if d.name == "lab-a-ds-alice")
    zstack = next(d for d in b.datasets.values() if d.name == "idr0003-ds-001")
    # bob's own settings on a public plate image; carol's on alice's image (same group); non-linear
    # families, an inversion and the last Z/T as default: bob's own on a public z-stack, and the
    # owner's (which every reader without settings of their own sees) on the next one
    b.rdef_seeds += [(first_public.image_base, BOB, "narrow"), (alice_ds.image_base, CAROL, "narrow"),
                     (zstack.image_base, BOB, "quantized"), (zstack.image_base + 1, CURATOR, "quantized")]


def _idr_into(b: Builder) -> None:
    for s in range(25):
        b.screen(f"idr{1001 + s:04d}-sim/screen", CURATOR, PUBLIC, [
            dict(name=f"idr{1001 + s:04d}-plate384-{k + 1:03d}", rows=16, cols=24, fields=1 + (k % 3),
                 runs=(1, k % 3) if k % 3 else ())
            for k in range(13)])
    for p in range(40):
        b.project(f"idr{2001 + p:04d}-sim/experiment", CURATOR, PUBLIC, [
            dict(name=f"idr{2001 + p:04d}-ds-{k + 1:03d}", n=50,
                 pixels=(DATASET_PIXELS,) * 24 + (PYRAMID,) if k == 0 else (DATASET_PIXELS,))
            for k in range(5)])


def build(scale: str) -> Catalog:
    if scale not in PRESETS:
        raise ValueError(f"unknown scale {scale!r}; choose from {', '.join(PRESETS)}")
    b = Builder()
    for step in PRESETS[scale]:
        step(b)
    return b.build(scale)


PRESETS = {"small": (_small_into,), "idr": (_small_into, _idr_into)}
