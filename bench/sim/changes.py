"""What OMERO.web's writes changed since the sim started: an overlay the catalog's lookups consult.

The catalog computes images from id ranges and never changes; this overlay records what a write did
(an object moved to another group, given to another owner, unlinked from its parent, deleted, a
channel renamed) and `image()` applies it to every image the catalog hands out. An image without an
entry of its own follows its container (plate, or the dataset it is still linked to), so moving a
plate of 1,536 images is one entry. Explicit containers are replaced in the catalog's own dicts
(`Catalog.restamp`), which is where every view finds them.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.sim.catalog import Image

Key = tuple[str, int]  # ("image" | "dataset" | "plate" | "project" | "screen" | "well" | "acquisition", id)


@dataclass
class Changes:
    groups: dict[Key, int] = field(default_factory=dict)      # new group of an object (and what follows it)
    owners: dict[Key, int] = field(default_factory=dict)      # new owner
    deleted: set[Key] = field(default_factory=set)
    unlinked: set[int] = field(default_factory=set)           # image ids out of their dataset: orphans now
    channel_names: dict[int, dict[int, str]] = field(default_factory=dict)  # image id → {0-based index: name}

    def __bool__(self) -> bool:
        return bool(self.groups or self.owners or self.deleted or self.unlinked)

    def _container(self, image: Image) -> Key | None:
        if image.plate_id is not None:
            return "plate", image.plate_id
        if image.dataset_id is not None and image.id not in self.unlinked:
            return "dataset", image.dataset_id
        return None

    def image(self, image: Image | None) -> Image | None:
        """The image as the writes left it, or None once deleted (with its plate or dataset)."""
        if image is None or not self:
            return image
        own, parent = ("image", image.id), self._container(image)
        if own in self.deleted or parent in self.deleted:
            return None
        group = self.groups.get(own, self.groups.get(parent, image.group_id))
        owner = self.owners.get(own, self.owners.get(parent, image.owner_id))
        dataset = None if image.id in self.unlinked else image.dataset_id
        if (group, owner, dataset) == (image.group_id, image.owner_id, image.dataset_id):
            return image
        return replace(image, group_id=group, owner_id=owner, dataset_id=dataset)

    def pin(self, image: Image) -> None:
        """Give an image its current group and owner as entries of its own, before it leaves its container."""
        self.groups[("image", image.id)] = image.group_id
        self.owners[("image", image.id)] = image.owner_id

    def channel_name(self, image_id: int, index: int, default: str) -> str:
        return self.channel_names.get(image_id, {}).get(index, default)
