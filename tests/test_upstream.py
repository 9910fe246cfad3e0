"""The upstream guards in process: the circuit breaker's states and what counts as a failure, retries on
the next URL, resting URLs, and the request as sent. The network is an httpx.MockTransport and the
breaker's clock is a FakeTime, so nothing sleeps longer than one retry backoff (50 ms)."""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
import pytest

from edge import upstream
from edge.settings import Settings
from edge.upstream import Breaker, Upstream, UpstreamError, request_target
from tests.helpers import FakeTime

Handler = Callable[[httpx.Request], Any]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    return FakeTime().install(monkeypatch, upstream)


def pool(handler: Handler, urls: tuple[str, ...] = ("http://a",), **settings: Any) -> Upstream:
    """An upstream whose network is `handler`; one retry by default (a 50 ms backoff)."""
    return Upstream("omero-web", list(urls), Settings(**{"retries": 1, **settings}), httpx.MockTransport(handler))


def run(scenario: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return asyncio.run(scenario())


def answers(*statuses: int) -> tuple[Handler, list[httpx.Request]]:
    """A handler answering `statuses` in turn (then 200), and the requests it saw."""
    seen: list[httpx.Request] = []
    queue = list(statuses)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(queue.pop(0) if queue else 200)
    return handler, seen


# --- Breaker ------------------------------------------------------------------------------------

def test_breaker_opens_after_threshold_consecutive_failures(clock: FakeTime) -> None:
    breaker = Breaker(threshold=3, reset=5.0)
    for _ in range(2):
        breaker.failure()
    breaker.success()  # consecutive: an answer in between starts the count again
    breaker.failure()
    breaker.failure()
    assert breaker.state == "closed" and breaker.allow()
    breaker.failure()
    assert breaker.state == "open" and not breaker.allow()


def test_breaker_half_open_lets_one_trial_through(clock: FakeTime) -> None:
    breaker = Breaker(threshold=1, reset=5.0)
    breaker.failure()
    clock.advance(4.99)
    assert breaker.state == "open" and not breaker.allow()
    clock.advance(0.01)
    assert breaker.state == "half-open"
    assert breaker.allow() and not breaker.allow()  # one trial, the others still fail fast
    breaker.success()
    assert breaker.state == "closed" and breaker.allow() and breaker.allow()


def test_breaker_failed_trial_opens_for_another_full_reset(clock: FakeTime) -> None:
    breaker = Breaker(threshold=2, reset=5.0)
    breaker.failure()
    breaker.failure()
    clock.advance(5.0)
    assert breaker.allow()
    breaker.failure()
    clock.advance(4.9)
    assert breaker.state == "open" and not breaker.allow()
    clock.advance(0.1)
    assert breaker.allow()


def test_breaker_with_threshold_zero_never_opens(clock: FakeTime) -> None:
    breaker = Breaker(threshold=0, reset=5.0)
    for _ in range(50):
        breaker.failure()
    assert breaker.state == "closed" and breaker.allow()


def test_breaker_trial_that_never_reports_does_not_wedge_it(clock: FakeTime) -> None:
    """A trial can end without success or failure (its request cancelled): after another reset period the
    breaker allows a new trial instead of failing every request until the process restarts."""
    breaker = Breaker(threshold=1, reset=5.0)
    breaker.failure()
    clock.advance(5.0)
    assert breaker.allow()  # the trial, never heard of again
    clock.advance(1.0)
    assert not breaker.allow()  # still only one at a time
    clock.advance(4.0)
    assert breaker.allow()


# --- what the pool counts as a failure ------------------------------------------------------------

def test_unavailable_answers_open_the_breaker_other_answers_do_not(clock: FakeTime) -> None:
    handler, seen = answers(500, 404, 500, 502, 504, 503)

    async def scenario() -> None:
        up = pool(handler, breaker_failures=3)
        got = [(await up.request("GET", "/x", [])).status_code for _ in range(6)]
        assert got == [500, 404, 500, 502, 504, 503]  # the backend's own answers, passed on
        assert up.breaker.state == "open"
        with pytest.raises(UpstreamError) as failed:
            await up.request("GET", "/x", [])
        assert failed.value.status == 502 and b"circuit open" in failed.value.body()
        assert len(seen) == 6  # failed fast: nothing reached the backend

    run(scenario)


def test_a_client_error_in_between_keeps_the_breaker_closed(clock: FakeTime) -> None:
    handler, _ = answers(503, 503, 404, 503, 503)

    async def scenario() -> None:
        up = pool(handler, breaker_failures=3)
        for _ in range(5):
            await up.request("GET", "/x", [])
        assert up.breaker.state == "closed" and up.breaker.failures == 2

    run(scenario)


def test_abandoned_trial_request_does_not_wedge_the_pool(clock: FakeTime) -> None:
    """The half-open trial is cancelled mid-flight (its client went away); a later request still gets a trial."""
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 3:
            await asyncio.Event().wait()  # the trial hangs until cancelled
        return httpx.Response(503 if calls <= 2 else 200)

    async def scenario() -> None:
        up = pool(handler, breaker_failures=2, breaker_reset=5.0)
        for _ in range(2):
            await up.request("GET", "/x", [])
        clock.advance(5.0)
        trial = asyncio.create_task(up.request("GET", "/x", []))
        while calls < 3:
            await asyncio.sleep(0)
        trial.cancel()
        with pytest.raises(asyncio.CancelledError):
            await trial
        clock.advance(5.0)
        assert (await up.request("GET", "/x", [])).status_code == 200
        assert up.breaker.state == "closed"

    run(scenario)


# --- retries and resting URLs ------------------------------------------------------------------------

def test_connect_error_retries_on_the_next_url_which_then_rests(clock: FakeTime) -> None:
    hosts: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        hosts.append(request.url.host)
        if request.url.host == "a":
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200)

    async def scenario() -> None:
        up = pool(handler, ("http://a", "http://b"))
        assert (await up.request("GET", "/x", [])).status_code == 200
        assert hosts == ["a", "b"] and up.breaker.failures == 0  # answered: not a failure
        for _ in range(3):
            await up.request("GET", "/x", [])
        assert hosts[2:] == ["b", "b", "b"]  # a rests (2 s) instead of costing every request a retry
        clock.advance(2.0)
        await up.request("GET", "/x", [])
        await up.request("GET", "/x", [])
        assert "a" in hosts[5:]  # back in the rotation

    run(scenario)


def test_unreachable_is_one_failure_per_request_and_posts_are_not_retried(clock: FakeTime) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        raise httpx.ConnectError("refused", request=request)

    async def scenario() -> None:
        up = pool(handler, retries=2, breaker_failures=5)
        with pytest.raises(UpstreamError) as failed:
            await up.request("GET", "/x", [])
        assert failed.value.status == 502 and "unreachable" in failed.value.reason
        assert seen == ["GET"] * 3 and up.breaker.failures == 1
        with pytest.raises(UpstreamError):
            await up.request("POST", "/x", [], content=b"{}")
        assert seen[3:] == ["POST"] and up.breaker.failures == 2

    run(scenario)


def test_timeout_is_504_and_counts_as_a_failure(clock: FakeTime) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    async def scenario() -> None:
        up = pool(handler, breaker_failures=1)
        with pytest.raises(UpstreamError) as failed:
            await up.request("GET", "/x", [])
        assert failed.value.status == 504 and up.breaker.state == "open"

    run(scenario)


# --- the request as sent -------------------------------------------------------------------------------

def test_request_target_is_sent_as_given() -> None:
    """No `..` folding, no cut at `#`: only bytes a request line cannot carry are escaped."""
    assert request_target(b"/omero", "/a/../b?x=1#f y") == b"/omero/a/../b?x=1#f%20y"
    assert request_target(b"", "/é") == b"/%E9"


def test_set_cookie_never_rides_along_on_the_next_request(clock: FakeTime) -> None:
    """The client is shared by every requester: one answer's session cookie must not reach another's request."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, headers={"set-cookie": "sessionid=alice; Path=/"})

    async def scenario() -> None:
        up = pool(handler, ("http://a/omero",))
        await up.request("GET", "/webclient/login/", [])
        await up.request("GET", "/x?y=1", [])
        assert "cookie" not in seen[1].headers
        assert seen[1].extensions["target"] == b"/omero/x?y=1"

    run(scenario)
