"""Which images' pyramids are still being generated: fixed ones at start, finished through `/_sim`.

While generating, OMERO.server answers thumbnails with its "loading" JPEG (ThumbnailBean.java,
compressInProgressImageToStream), imgData with `{"ConcurrencyException": {"backOff": …}}`
(gw/marshal.py:172-176) and renders with 404; once finished, the image is an ordinary pyramid.
"""
from __future__ import annotations

from bench.sim.catalog import Catalog, Image


class Pyramids:
    def __init__(self, catalog: Catalog) -> None:
        self.initial = frozenset(catalog.in_progress_ids())
        self._generating = set(self.initial)

    def generating(self, image: Image) -> bool:
        return image.id in self._generating

    def in_progress(self) -> list[int]:
        return sorted(self._generating)

    def set(self, image_id: int, generating: bool) -> bool:
        """Finish (or restart) one of the images that started in progress; False for any other id."""
        if image_id not in self.initial:
            return False
        (self._generating.add if generating else self._generating.discard)(image_id)
        return True
