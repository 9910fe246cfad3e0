"""Read checks: a non-public audience is served a hit only after the backend says it may read.

Like omero-ms-image-region's canRead re-check on every hit: the edge asks OMERO.web for the
object's API v0 record with the requester's own cookie (200 = may read; 403/404 = may not),
and remembers the answer per (hashed session, object) for `access_ttl` seconds in a bounded
memo. Concurrent checks of one pair share one request. Errors fail closed and are not
remembered.
"""
from __future__ import annotations

import asyncio
import time
from collections import OrderedDict

from .identity import Requester
from .keys import PUBLIC
from .kinds import BY_NAME
from .metrics import Metrics
from .settings import Settings
from .upstream import Upstream, UpstreamError



class AccessChecker:
    def __init__(self, upstream: Upstream, settings: Settings, metrics: Metrics) -> None:
        self.upstream = upstream
        self.ttl = settings.access_ttl
        self.size = settings.access_cache_size
        self.cookie_name = settings.session_cookie
        self.metrics = metrics
        self._memo: OrderedDict[tuple[str, str], float] = OrderedDict()  # allowed pairs → expiry
        self._pending: dict[tuple[str, str], asyncio.Future[bool]] = {}

    async def allowed(self, requester: Requester, entry, objects: tuple[str, ...]) -> bool:
        if requester.audience == PUBLIC and entry.public:
            return True  # fetched for the public audience: anyone may see it
        return await self.allowed_many(requester, objects, public_entries=False)

    async def allowed_many(self, requester: Requester, objects, *, public_entries: bool = True) -> bool:
        return all(await self.each_allowed(requester, objects, public_entries=public_entries))

    async def each_allowed(self, requester: Requester, objects, *, public_entries: bool = True) -> list[bool]:
        """One verdict per object; entries fetched for the public audience need no check for it."""
        objects = list(objects)
        if requester.audience == PUBLIC and public_entries:
            return [True] * len(objects)
        return list(await asyncio.gather(*(self._check(requester, obj) if obj.split(":")[0] in BY_NAME
                                           else _true() for obj in objects)))

    def granted(self, requester: Requester, objects) -> None:
        """The backend just answered this requester 200 for `objects` with their own cookie: that is a
        passed read check (their next hits need not ask again within access_ttl)."""
        if requester.audience == PUBLIC or self.ttl <= 0:
            return
        expiry = time.monotonic() + self.ttl
        for obj in objects:
            if obj.split(":")[0] in BY_NAME:
                pair = (requester.session or requester.audience or "", obj)
                self._memo[pair] = expiry
                self._memo.move_to_end(pair)
        while len(self._memo) > self.size:
            self._memo.popitem(last=False)

    async def _check(self, requester: Requester, obj: str) -> bool:
        pair = (requester.session or requester.audience or "", obj)
        now = time.monotonic()
        expiry = self._memo.get(pair)
        if expiry is not None and expiry > now:
            return True
        pending = self._pending.get(pair)
        if pending is not None:
            return await asyncio.shield(pending)
        future = asyncio.get_running_loop().create_future()
        self._pending[pair] = future
        try:
            ok = await self._ask(obj, requester.cookie)
            future.set_result(ok)
        finally:
            del self._pending[pair]
        if ok and self.ttl > 0:
            self._memo[pair] = now + self.ttl
            self._memo.move_to_end(pair)
            while len(self._memo) > self.size:
                self._memo.popitem(last=False)
        elif not ok:
            self._memo.pop(pair, None)
        return ok

    async def _ask(self, obj: str, cookie: str) -> bool:
        kind, _, ident = obj.partition(":")
        headers = [("accept", "application/json")]
        if cookie:
            headers.append(("cookie", f"{self.cookie_name}={cookie}"))
        try:
            resp = await self.upstream.request("GET", f"/api/v0/m/{BY_NAME[kind].api}/{ident}/", headers)
        except UpstreamError:
            self.metrics.access_checks.labels("error").inc()
            return False
        await resp.aclose()
        ok = resp.status_code == 200
        self.metrics.access_checks.labels("allowed" if ok else "denied").inc()
        return ok


async def _true() -> bool:
    return True
