"""The edge's own public-user session, used for every fetch made for the public audience.

OMERO.web creates a new Django session (and Set-Cookie) for every anonymous request inside its
public URL filter, and omero-ms-image-region answers 403 to a request without a session. So the
edge keeps one public session: learnt from any anonymous answer's Set-Cookie, or asked for at
`public_session_path`, and renewed when the backend answers with a new one or the microservice
refuses it. It is only ever sent on requests made for the public audience.
"""
from __future__ import annotations

import asyncio
from http.cookies import CookieError, SimpleCookie

import httpx

from .upstream import Upstream, UpstreamError


class PublicSession:
    def __init__(self, web: Upstream, cookie_name: str, path: str) -> None:
        self.web = web
        self.cookie_name = cookie_name
        self.path = path
        self.value: str | None = None
        self._lock = asyncio.Lock()

    def header(self) -> tuple[str, str] | None:
        return ("cookie", f"{self.cookie_name}={self.value}") if self.value else None

    def learn(self, response: httpx.Response) -> None:
        """Adopt the session a public-audience answer handed out (a new or renewed public session)."""
        for raw in response.headers.get_list("set-cookie"):
            jar = SimpleCookie()
            try:
                jar.load(raw)
            except CookieError:
                continue
            morsel = jar.get(self.cookie_name)
            if morsel is not None:
                self.value = morsel.value or None

    async def renew(self, stale: str | None) -> None:
        """Get a fresh public session, once for all concurrent callers that saw `stale` fail."""
        async with self._lock:
            if self.value != stale:
                return  # someone renewed it meanwhile
            self.value = None
            try:
                resp = await self.web.request("GET", self.path, [("accept", "application/json")])
            except UpstreamError:
                return
            await resp.aclose()
            self.learn(resp)
