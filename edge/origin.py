"""The origin fetch: a GET for the cache, sent with the right credentials for the audience.

The public audience is fetched with the edge's own public-user session (never a requester's
cookie); a user audience with the user's own cookie, so the backend decides what they may read.
"""
from __future__ import annotations

import time

import httpx

from .metrics import Metrics
from .public_session import PublicSession
from .request import Request
from .routes import Upstream
from .upstream import Upstream as Pool, UpstreamError

# Request headers a cache fill passes on (they can change the answer's form, never its owner).
_FORWARDED_FOR_CACHE = frozenset({"accept", "x-requested-with", "user-agent", "host"})


def forwarded_for_fill(req: Request) -> list[tuple[str, str]]:
    """A fill's X-Forwarded-*: the scheme and host the key was built for, never the client's own
    (OMERO.web may build links from them: `use_x_forwarded_host`, `secure_proxy_ssl_header`)."""
    scheme, _, host = req.host.partition("://")
    client = (req.scope.get("client") or ("",))[0]
    return [("x-forwarded-for", client), ("x-forwarded-proto", scheme), ("x-forwarded-host", host)]


class Origin:
    def __init__(self, upstreams: dict[Upstream, Pool], public_session: PublicSession, metrics: Metrics) -> None:
        self.upstreams = upstreams
        self.public_session = public_session
        self.metrics = metrics

    def pool(self, req: Request) -> Pool:
        return self.upstreams[req.route.upstream]

    async def fetch(self, req: Request, path_qs: str) -> httpx.Response:
        """One GET of `path_qs` from the route's upstream, for `req`'s audience."""
        pool = self.pool(req)
        web = self.upstreams[Upstream.WEB]
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in req.scope["headers"]
                   if k.decode("latin-1") in _FORWARDED_FOR_CACHE]
        headers += forwarded_for_fill(req)
        if not req.public:
            headers.append(("cookie", req.headers[b"cookie"].decode("latin-1")))  # as the edge read it: one header
            return await self._timed(pool, path_qs, headers)
        if pool is not web and self.public_session.value is None:
            await self.public_session.renew(None)  # the microservice refuses requests without a session
        for attempt in (1, 2):
            session = self.public_session.value
            resp = await self._timed(pool, path_qs, headers + [self.public_session.header()] if session else headers)
            self.public_session.learn(resp)
            if resp.status_code == 403 and attempt == 1 and pool is not web:
                await self.public_session.renew(session)  # expired: one retry with a new public session
                continue
            return resp
        return resp

    async def _timed(self, pool: Pool, path_qs: str, headers: list[tuple[str, str]]) -> httpx.Response:
        started = time.perf_counter()
        try:
            resp = await pool.request("GET", path_qs, headers)
        except UpstreamError:
            self.metrics.upstream_errors.labels(pool.name).inc()
            raise
        self.metrics.upstream_seconds.labels(pool.name).observe(time.perf_counter() - started)
        self.metrics.upstream_requests.labels(pool.name, str(resp.status_code)).inc()
        return resp
