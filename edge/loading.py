"""OMERO's in-progress thumbnail: a real JPEG that must never be stored (clients.md §7).

While an image's pyramid is being generated, OMERO.server answers its thumbnail with a rasterised
"loading" picture (ThumbnailBean.java:528-545, `image-loading.xml`), served as `image/jpeg` with
nothing in the answer to mark it. Its bytes are the same for every image at one size, so the edge
learns them as fingerprints:

- an imgData / iviewer image_data answer `{"ConcurrencyException": …}` (gw/marshal.py:172-176)
  says the image's pyramid is in progress: its thumbnails seen meanwhile are the loading picture;
- two different images answering byte-identical thumbnails are suspicious (an empty well looks
  like another empty well, but so does the loading picture): the edge asks imgData of one of them,
  once per distinct body, and learns the body if the pyramid is in progress.

A learned fingerprint is never stored again, and the copies stored before it was learned go
with a purge of their body tag (`body:<etag>`, which every thumbnail entry carries).
Operators may pin fingerprints (`loading_thumbnails`, the ETags without quotes).
"""
from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace

from .entry import Entry
from .origin import Origin
from .policy import body_tag
from .request import Request
from .routes import BY_NAME
from .upstream import UpstreamError

_RECENT = 4096  # thumbnail bodies remembered to spot a second image with the same bytes
_MARK_SECONDS = 300.0  # how long an imgData ConcurrencyException marks an image as in progress


def says_in_progress(body: bytes) -> bool:
    """An imgData / image_data answer for an image whose pyramid is being generated."""
    if b"ConcurrencyException" not in body[:200]:
        return False
    try:
        return "ConcurrencyException" in json.loads(body)
    except (ValueError, TypeError):
        return False


Purge = Callable[[list[str]], None]  # records a purge of tags (in the background)
METADATA_ROUTES = frozenset({"gw.imgData", "iv.image_data"})  # answer ConcurrencyException while a pyramid builds


class LoadingThumbnails:
    def __init__(self, pinned: list[str], purge: Purge, origin: Origin,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.fingerprints: set[str] = {f"body:{p}" for p in pinned}
        self.purge = purge
        self.origin = origin
        self.clock = clock
        self._cleared: set[str] = set()  # duplicated bodies imgData showed to be real thumbnails
        self._recent: OrderedDict[str, int] = OrderedDict()  # body tag → the first image seen with it
        self._marked: dict[int, float] = {}  # image id → until when its pyramid is in progress

    def observe(self, req: Request, entry: Entry) -> None:
        """An imgData / image_data answer: whether the image's pyramid is in progress now."""
        image_id = req.image_id
        if not says_in_progress(entry.body):
            self._marked.pop(image_id, None)
            return
        if len(self._marked) > 100_000:
            self._marked.clear()
        self._marked[image_id] = self.clock() + _MARK_SECONDS

    async def _in_progress(self, req: Request, image_id: int) -> bool:
        """Ask imgData, with the requester's own credentials, whether the image's pyramid is in progress."""
        probe = replace(req, route=BY_NAME["gw.imgData"], callback=None)
        try:
            resp = await self.origin.fetch(probe, f"/webgateway/imgData/{image_id}/")
        except UpstreamError:
            return False
        return says_in_progress(resp.content)

    async def final(self, req: Request, items: list[tuple[int, Entry]]) -> list[bool]:
        """Per (image id, thumbnail entry): False for the loading picture (answer it, never store it)."""
        verdicts = []
        for image_id, entry in items:
            tag = body_tag(entry.etag)
            if tag in self.fingerprints:
                verdicts.append(False)
                continue
            if self._marked.get(image_id, 0.0) > self.clock():
                self._learn(tag)
                verdicts.append(False)
                continue
            other = self._recent.get(tag)
            if other is None or other == image_id or tag in self._cleared:
                self._remember(tag, image_id)
                verdicts.append(True)
                continue
            if await self._in_progress(req, image_id):
                self._learn(tag)
                verdicts.append(False)
            else:
                self._cleared.add(tag)
                verdicts.append(True)
        return verdicts

    def _remember(self, tag: str, image_id: int) -> None:
        self._recent[tag] = image_id
        self._recent.move_to_end(tag)
        while len(self._recent) > _RECENT:
            self._recent.popitem(last=False)

    def _learn(self, tag: str) -> None:
        if tag not in self.fingerprints:
            self.fingerprints.add(tag)
            self.purge([tag])  # copies stored before the fingerprint was known
