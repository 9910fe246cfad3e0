"""Coalescing of single-thumbnail misses into `get_thumbnails` batches.

A gallery or a per-well plate view asks for hundreds of `render_thumbnail/<id>/` at once; each
is one request to OMERO.web. Their default-size thumbnails are the same entries a
`get_thumbnails` batch fills (OMERO serves both from its thumbnail service at the default
longest side), so misses that arrive within `coalesce_window_ms` of each other, for the same
audience, are fetched as one batch of up to 50 ids. An id the batch cannot answer with a final
image (null, a placeholder) is fetched on its own, so its requester gets the backend's exact answer;
a failing backend's answer (5xx, unreachable) goes to every member without a second try.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .entry import Entry
from .upstream import UpstreamError

if TYPE_CHECKING:
    from .app import Edge, Request

MAX_BATCH = 50


@dataclass
class _Pending:
    req: Request
    image_id: int
    key: str
    digest: str
    future: asyncio.Future[Entry] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class ThumbnailCoalescer:
    def __init__(self, edge: Edge, window_ms: float) -> None:
        self.edge = edge
        self.window = window_ms / 1000
        self._groups: dict[tuple, list[_Pending]] = {}

    async def fill(self, req: Request, image_id: int, key: str, digest: str,
                   alone: Callable[[], Awaitable[Entry]]) -> Entry:
        """The entry for one default-size thumbnail, fetched in a batch with its neighbours in time."""
        group = (req.requester.audience, req.requester.session)
        pending = _Pending(req, image_id, key, digest)
        members = self._groups.setdefault(group, [])
        members.append(pending)
        if len(members) == 1:
            asyncio.get_running_loop().call_later(self.window, self._flush_later, group, members)
        if len(members) >= MAX_BATCH:
            self._flush_later(group, members)
        entry = await pending.future
        return entry if entry is not None else await alone()

    def _flush_later(self, group: tuple, members: list[_Pending]) -> None:
        if self._groups.get(group) is members:
            del self._groups[group]
            self.edge._spawn(self._flush(members))

    async def _flush(self, members: list[_Pending]) -> None:
        edge = self.edge
        first = members[0].req
        epoch = edge.registry.epoch()
        started = time.time()
        path = _BATCH_PATHS[first.route.name] + "?" + "&".join(f"id={m.image_id}" for m in members)
        try:
            resp = await edge.fetch(first, path)
        except UpstreamError as exc:  # unreachable or timed out: every member gets the error (or its stale copy)
            for m in members:
                m.future.set_exception(exc)
                m.future.exception()
            return
        if resp.status_code >= 500:  # failing: every member gets the backend's own answer, not a second try
            failed = edge.make_entry(first, "", resp.status_code, resp.headers.get("content-type", ""),
                                     resp.content, epoch, started)
            for m in members:
                m.future.set_result(failed)
            return
        try:
            data = resp.json() if resp.status_code == 200 else {}
        except ValueError:
            data = {}
        entries: list[tuple[str, Entry]] = []
        results: list[Entry | None] = []
        for m in members:
            value = data.get(str(m.image_id)) if isinstance(data, dict) else None
            entry = edge._thumb_entry(m.req, m.key, m.image_id, value, epoch, started)
            results.append(entry)
            if entry is not None:
                entries.append((m.digest, entry))
        try:
            await edge.store(entries)  # members hold cross-process fill locks until their entry is shared
        finally:
            for m, entry in zip(members, results):
                if not m.future.done():
                    m.future.set_result(entry)  # None: the member fetches alone


_BATCH_PATHS = {"gw.render_thumbnail": "/webgateway/get_thumbnails/"}
COALESCED_ROUTES = frozenset(_BATCH_PATHS)
