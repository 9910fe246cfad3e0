"""Coalescing of single-thumbnail misses into `get_thumbnails` batches.

A gallery or a per-well plate view asks for hundreds of `render_thumbnail/<id>/` at once; each
is one request to OMERO.web. Their default-size thumbnails are the same entries a
`get_thumbnails` batch fills (OMERO serves both from its thumbnail service at the default
longest side), so misses that arrive within `coalesce_window_ms` of each other, for the same
audience, are fetched as one batch of up to `thumbnails_batch` ids. An id the batch cannot answer
with a final image (null, a placeholder) is fetched on its own, so its requester gets the backend's
exact answer; a failing backend's answer (5xx, unreachable) goes to every member without a second try.
Which routes coalesce, and into which batch URL, is the route row's `batch`.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from .cache import Background
from .entry import Entry
from .request import Request
from .routes import BY_NAME
from .thumbnails import BatchFailed, Member, Thumbnails
from .upstream import UpstreamError


@dataclass
class _Pending:
    req: Request
    member: Member
    future: asyncio.Future[Entry | None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class ThumbnailCoalescer:
    def __init__(self, thumbnails: Thumbnails, background: Background, window_ms: float, default_size: int,
                 limit: int) -> None:
        self.thumbnails = thumbnails
        self.background = background
        self.window = window_ms / 1000
        self.default_size = default_size
        self.limit = limit
        self._groups: dict[tuple, list[_Pending]] = {}

    def applies(self, req: Request) -> bool:
        """A plain default-size thumbnail on a route that has a batch form, while the upstream is
        saturated: batching only pays when requests would queue anyway (with free slots a single
        render starts now, in parallel with its neighbours)."""
        route = req.route
        return (bool(route.batch) and self.thumbnails.origin.pool(req).limit.locked()
                and int(req.groups.get(route.thumb_size_group, self.default_size)) == self.default_size
                and all(name == "_" for name, _ in req.params))

    async def fill(self, req: Request, alone: Callable[[], Awaitable[Entry]]) -> Entry:
        """The entry for one default-size thumbnail, fetched in a batch with its neighbours in time."""
        group = (req.route.batch, req.requester.audience, req.requester.session)
        pending = _Pending(req, Member(req.image_id, req.key, req.digest))
        members = self._groups.setdefault(group, [])
        members.append(pending)
        if len(members) == 1:
            asyncio.get_running_loop().call_later(self.window, self._flush_later, group, members)
        if len(members) >= self.limit:
            self._flush_later(group, members)
        entry = await pending.future
        return entry if entry is not None else await alone()

    def _flush_later(self, group: tuple, members: list[_Pending]) -> None:
        if self._groups.get(group) is members:
            del self._groups[group]
            self.background.spawn(self._flush(members))

    async def _flush(self, members: list[_Pending]) -> None:
        first = members[0].req
        path = BY_NAME[first.route.batch].base_path
        results: dict[int, Entry | None] = {}
        try:
            # Members hold cross-process fill locks until their entry is shared: wait for the tiers.
            results = (await self.thumbnails.fetch_batch(first, path, [p.member for p in members])).entries
        except UpstreamError as exc:  # unreachable or timed out: every member gets the error (or its stale copy)
            for p in members:
                p.future.set_exception(exc)
                p.future.exception()
        except BatchFailed as failed:
            if failed.entry.status >= 500:  # failing: every member gets the backend's own answer, no second try
                for p in members:
                    p.future.set_result(failed.entry)
        finally:
            for p in members:
                if not p.future.done():
                    p.future.set_result(results.get(p.member.image_id))  # None: the member fetches alone
