"""Upstream pools: one httpx client per upstream, several URLs, and the guards that protect OMERO.

- a concurrency cap per upstream, so a cold 384-well plate queues at the edge, not in OMERO.web;
- connect/read timeouts; idempotent GETs retried on connect errors with backoff, on the next URL;
- passive health: a URL that refused a connection rests for a while;
- a circuit breaker: after N consecutive failures (no connection, timeouts, 502/503/504 answers) the
  upstream is failed fast until a trial succeeds.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from urllib.parse import urlsplit

import anyio
import httpx

from .accesslog import UpstreamTimer
from .settings import Settings

log = logging.getLogger("edge.upstream")

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
    "transfer-encoding", "upgrade", "host", "content-length", "http2-settings",
})


# Answers that say the upstream itself is unavailable (and count towards the circuit breaker). A 500
# is an answer to one request: a client sending a few bad URLs must not open the breaker for everyone.
UNAVAILABLE = frozenset({502, 503, 504})


def preload() -> None:
    """Load at start-up what httpx loads at its first request: anyio's asyncio backend (~50 ms of
    imports, paid otherwise inside the first cold answer of every new process). Call in the event loop."""
    anyio.Event()


def _no_cookie_jar() -> CookieJar:
    """A jar that refuses every cookie: the client is shared by all requesters, so a Set-Cookie from
    one response (a login passing through) must never ride along on another requester's request."""
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


class UpstreamError(Exception):
    """The upstream could not answer: `status` is what the client gets (502 or 504)."""

    def __init__(self, upstream: str, status: int, reason: str) -> None:
        super().__init__(f"upstream {upstream} {reason}")
        self.upstream = upstream
        self.status = status
        self.reason = reason

    def body(self) -> bytes:
        return f"omero-edge: upstream {self.upstream} {self.reason}\n".encode()


@dataclass
class _Target:
    url: str
    resting_until: float = 0.0

    @property
    def prefix(self) -> bytes:
        return urlsplit(self.url).path.rstrip("/").encode()


_UNSAFE_IN_TARGET = re.compile(rb"[^\x21-\x7e]")


def request_target(prefix: bytes, path_qs: str) -> bytes:
    """The request line's target, sent as given: httpx would drop `..` segments and cut at `#`.
    Only bytes a request line cannot carry are percent-encoded."""
    try:
        raw = path_qs.encode("latin-1")
    except UnicodeEncodeError:
        raw = path_qs.encode("utf-8", "surrogateescape")
    return prefix + _UNSAFE_IN_TARGET.sub(lambda m: b"%%%02X" % m.group()[0], raw)


class Breaker:
    """Closed → open after `threshold` consecutive failures → half-open after `reset` seconds: one trial
    per `reset` seconds (a trial that never reports, its request cancelled, must not wedge it open)."""

    def __init__(self, threshold: int, reset: float) -> None:
        self.threshold = threshold
        self.reset = reset
        self.failures = 0
        self.opened_at: float | None = None
        self._trial_at: float | None = None

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if time.monotonic() - self.opened_at >= self.reset else "open"

    def allow(self) -> bool:
        state = self.state
        if state == "closed":
            return True
        now = time.monotonic()
        if state == "half-open" and (self._trial_at is None or now - self._trial_at >= self.reset):
            self._trial_at = now
            return True
        return False

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self._trial_at = None

    def failure(self) -> None:
        self.failures += 1
        self._trial_at = None
        if self.threshold and self.failures >= self.threshold:
            if self.opened_at is None:
                log.warning("circuit breaker open after %d failures", self.failures)
            self.opened_at = time.monotonic()


class Upstream:
    def __init__(self, name: str, urls: list[str], settings: Settings,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        """`transport` replaces the network (tests drive an in-process backend through it)."""
        self.name = name
        self.targets = [_Target(u.rstrip("/")) for u in urls]
        self._cycle = itertools.cycle(range(len(self.targets)))
        self.limit = asyncio.Semaphore(settings.upstream_concurrency)
        self.breaker = Breaker(settings.breaker_failures, settings.breaker_reset)
        self.retries = settings.retries
        http2 = settings.upstream_http2 == "on" or (
            settings.upstream_http2 == "auto" and all(u.startswith("https://") for u in urls))
        prior_knowledge = settings.upstream_http2 == "on" and not any(u.startswith("https://") for u in urls)
        self.client = httpx.AsyncClient(
            http1=not prior_knowledge, http2=http2,
            timeout=httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout),
            # Twice the cap: passed-through bodies still stream after their slot is released.
            limits=httpx.Limits(max_connections=settings.upstream_concurrency * 2,
                                max_keepalive_connections=settings.upstream_concurrency),
            follow_redirects=False, trust_env=False, cookies=_no_cookie_jar(), transport=transport)

    def _pick(self) -> _Target:
        now = time.monotonic()
        for _ in range(len(self.targets)):
            target = self.targets[next(self._cycle)]
            if target.resting_until <= now:
                return target
        return min(self.targets, key=lambda t: t.resting_until)

    async def request(self, method: str, path_qs: str, headers: list[tuple[str, str]],
                      content=None, *, stream: bool = False) -> httpx.Response:
        """One request, with the guards. Raises UpstreamError (502/504) when it cannot be answered."""
        if not self.breaker.allow():
            raise UpstreamError(self.name, 502, "unavailable (circuit open)")
        idempotent = method in ("GET", "HEAD") and content is None
        attempts = 1 + (self.retries if idempotent else 0)
        async with self.limit, UpstreamTimer():  # the access log's upstream time, from here to the answer
            for attempt in range(attempts):
                target = self._pick()
                req = self.client.build_request(method, target.url + "/", headers=headers, content=content,
                                                extensions={"target": request_target(target.prefix, path_qs)})
                try:
                    # Headers first, the body after: a backend that goes away before answering (a refused
                    # connection, a keep-alive connection it had just closed) is tried again; one that dies
                    # mid-response has run the request, so it is not (a render that kills its worker must
                    # not kill three).
                    resp = await self.client.send(req, stream=True)
                except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError) as exc:
                    target.resting_until = time.monotonic() + 2.0
                    if attempt + 1 < attempts:
                        await asyncio.sleep(0.05 * 2 ** attempt)
                        continue
                    self.breaker.failure()
                    raise UpstreamError(self.name, 502, f"unreachable ({type(exc).__name__})") from None
                except httpx.TimeoutException:
                    self.breaker.failure()
                    raise UpstreamError(self.name, 504, "timed out") from None
                except httpx.HTTPError as exc:
                    self.breaker.failure()
                    raise UpstreamError(self.name, 502, f"failed ({type(exc).__name__})") from None
                if not stream:
                    await self._read_body(resp)
                if resp.status_code in UNAVAILABLE:
                    self.breaker.failure()
                else:
                    self.breaker.success()
                return resp
        raise AssertionError("unreachable")

    async def _read_body(self, resp: httpx.Response) -> None:
        """The whole body, or UpstreamError: a body cut short (fewer bytes than its Content-Length, a chunked
        body without its last chunk, a reset) is never an answer."""
        try:
            await resp.aread()
        except httpx.TimeoutException:
            self.breaker.failure()
            raise UpstreamError(self.name, 504, "timed out mid-response") from None
        except httpx.HTTPError as exc:
            self.breaker.failure()
            raise UpstreamError(self.name, 502, f"closed the connection mid-response ({type(exc).__name__})") \
                from None
        finally:
            await resp.aclose()

    async def close(self) -> None:
        await self.client.aclose()
