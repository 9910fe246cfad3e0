"""The request pipeline's stages on their own: the cache decision, single-flight, the thumbnail
coalescer and delivery headers. No sim and no edge app: fakes stand in for what each stage calls."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from edge.cache import Background
from edge.coalesce import ThumbnailCoalescer
from edge.decision import Action, decide, stale_on_error
from edge.deliver import Delivery
from edge.entry import Entry
from edge.flight import Flights
from edge.identity import Requester
from edge.keys import PUBLIC
from edge.metrics import Metrics
from edge.request import Request, request_for
from edge.settings import Settings
from edge.status import CacheStatus
from edge.thumbnails import BatchFailed, Fetched, Member
from edge.upstream import UpstreamError
from tests.inprocess import FakeClock
from tests.inprocess import anyio_backend  # noqa: F401 - fixture

JPEG = b"\xff\xd8\xff" + b"\0" * 16
STORED = 1000.0  # when `entry()` was filled
TTL, STALE = 10.0, 100.0  # fresh until 1010, may answer stale until 1110


def entry(status: int = 200, *, public: bool = True, now: float = STORED, key: str = "k") -> Entry:
    return Entry.build(key, status, "image/jpeg", JPEG, ttl=TTL, stale=STALE, epoch=0, tags=(), public=public,
                       now=now)


# --- decide / stale_on_error ----------------------------------------------------------------------
@pytest.mark.parametrize("found, now, options, action", [
    (None, STORED, {}, Action.MISS),
    (entry(), STORED + 1, {"refresh_before": STORED + 0.5}, Action.MISS),  # warm refresh: stored before it
    (entry(), STORED + 1, {"refresh_before": STORED}, Action.HIT),  # stored at the refresh time: kept
    (entry(), STORED + TTL - 0.1, {}, Action.HIT),
    (entry(), STORED + TTL, {}, Action.MISS),  # freshness ends at fresh_until, and no SWR
    (entry(), STORED + TTL + 5, {"swr": 30}, Action.REVALIDATE),
    (entry(), STORED + TTL + 30, {"swr": 30}, Action.MISS),  # past stale_while_revalidate
    (entry(), STORED + TTL + STALE, {"swr": 500}, Action.MISS),  # SWR never outlives stale_until
    (entry(), STORED + TTL + 5, {"swr": 30, "warm": True}, Action.MISS),  # warm mode never answers stale
    (entry(), STORED + 1, {"warm": True}, Action.HIT),
], ids=["none", "refresh-before", "refresh-at", "fresh", "expired", "swr", "past-swr", "past-stale-until",
        "warm-stale", "warm-fresh"])
def test_decide(found: Entry | None, now: float, options: dict, action: Action):
    assert decide(found, now, **options) is action


@pytest.mark.parametrize("found, now, warm, ok", [
    (None, STORED, False, False),
    (entry(), STORED + TTL + STALE - 0.1, False, True),
    (entry(), STORED + TTL + STALE, False, False),
    (entry(), STORED + TTL + 1, True, False),
], ids=["none", "within", "past", "warm"])
def test_stale_on_error(found: Entry | None, now: float, warm: bool, ok: bool):
    assert stale_on_error(found, now, warm=warm) is ok


# --- Flights ----------------------------------------------------------------------------------------
@dataclass
class Filler:
    """A fill that blocks until `release` and counts its calls (so concurrent callers really overlap)."""

    result: Entry | BaseException = field(default_factory=entry)
    calls: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self) -> Entry:
        self.calls += 1
        await self.release.wait()
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result


async def started(*coros: Awaitable) -> list[asyncio.Task]:
    """Tasks for `coros`, each run up to its first wait."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    await asyncio.sleep(0)
    return tasks


async def finished(tasks: list[asyncio.Task]) -> list:
    """Each task's result or exception; a broken pipeline fails here in 2 s instead of hanging."""
    return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 2)


@pytest.mark.anyio
async def test_run_fills_once_for_concurrent_callers():
    flights, fill = Flights(None, 1.0), Filler()
    tasks = await started(*(flights.run("d", "k", fill) for _ in range(5)))
    assert flights.running("d")
    fill.release.set()
    results = await finished(tasks)
    assert fill.calls == 1 and {id(e) for e, _ in results} == {id(fill.result)}
    assert sorted(coalesced for _, coalesced in results) == [False, True, True, True, True]
    assert not flights.running("d")


@pytest.mark.anyio
async def test_run_gives_the_fill_error_to_every_waiter():
    flights, fill = Flights(None, 1.0), Filler(UpstreamError("omero-web", 502, "unreachable"))
    tasks = await started(*(flights.run("d", "k", fill) for _ in range(3)))
    fill.release.set()
    errors = await finished(tasks)
    assert fill.calls == 1 and all(e is fill.result for e in errors)
    assert not flights.running("d")


@pytest.mark.anyio
async def test_a_claim_settled_with_nothing_makes_the_waiter_fill_itself():
    flights, fill = Flights(None, 1.0), Filler()
    fill.release.set()
    claimed, _ = flights.claim(["d"])
    (waiter,) = await started(flights.run("d", "k", fill))
    assert fill.calls == 0  # waiting on the batch's claim
    flights.settle(claimed, {"d": None})
    assert await finished([waiter]) == [(fill.result, False)] and fill.calls == 1


@pytest.mark.anyio
async def test_a_waiter_on_a_claim_gets_its_entry_or_its_error():
    flights, fill = Flights(None, 1.0), Filler()
    got, error = entry(), UpstreamError("omero-web", 504, "timed out")
    claimed, _ = flights.claim(["a", "b"])
    waiters = await started(flights.run("a", "ka", fill), flights.run("b", "kb", fill))
    flights.settle({"a": claimed["a"]}, {"a": got})
    flights.settle({"b": claimed["b"]}, error=error)
    assert await finished(waiters) == [(got, True), error]
    assert fill.calls == 0


@pytest.mark.anyio
async def test_claim_takes_only_keys_nobody_fills_and_settle_cleans_up():
    flights = Flights(None, 1.0)
    first, none = flights.claim(["a", "b", "a"])
    assert set(first) == {"a", "b"} and none == {}
    second, others = flights.claim(["b", "c"])
    assert set(second) == {"c"} and others == {"b": first["b"]}
    flights.settle(first, {"a": entry()})
    assert first["a"].result() is not None and first["b"].result() is None  # b: absent from the results
    assert not flights.running("a") and not flights.running("b") and flights.running("c")
    newer, _ = flights.claim(["a"])
    flights.settle(first)  # settling old claims again leaves a newer claim alone
    assert flights.running("a") and not newer["a"].done()
    flights.settle({**second, **newer}, error=RuntimeError("batch failed"))
    assert isinstance(second["c"].exception(), RuntimeError)
    assert flights._local == {}


# --- ThumbnailCoalescer -------------------------------------------------------------------------------
class Saturation:
    """The upstream pool's `limit` as the coalescer reads it: locked = no free slot."""

    def __init__(self, locked: bool) -> None:
        self._locked = locked

    def locked(self) -> bool:
        return self._locked


@dataclass
class FakeThumbnails:
    """What the coalescer uses of Thumbnails: `fetch_batch`, and `origin.pool(req).limit`."""

    answer: Callable[[list[Member]], Fetched]  # may raise, like the real fetch
    saturated: bool = True
    calls: list[tuple[str, list[int]]] = field(default_factory=list)

    @property
    def origin(self) -> FakeThumbnails:
        return self

    def pool(self, req: Request) -> FakeThumbnails:
        return self

    @property
    def limit(self) -> Saturation:
        return Saturation(self.saturated)

    async def fetch_batch(self, req: Request, path: str, members: list[Member]) -> Fetched:
        self.calls.append((path, [m.image_id for m in members]))
        await asyncio.sleep(0)
        return self.answer(members)


def every(make: Callable[[Member], Entry | None]) -> Callable[[list[Member]], Fetched]:
    """A batch answer giving each member `make(member)`."""
    def answer(members: list[Member]) -> Fetched:
        return Fetched({m.image_id: make(m) for m in members}, {})
    return answer


def failing(exc: Exception) -> Callable[[list[Member]], Fetched]:
    def answer(members: list[Member]) -> Fetched:
        raise exc
    return answer


def thumb_request(image_id: int, path: str = "/webgateway/render_thumbnail/{}/", audience: str = PUBLIC) -> Request:
    return request_for(Settings(cache_dir=""), path.format(image_id), Requester(audience), "http://edge.test")


@dataclass
class Alone:
    """The `alone` fill each member falls back to, recording who needed it."""

    ids: list[int] = field(default_factory=list)

    def __call__(self, image_id: int) -> Callable[[], Awaitable[Entry]]:
        async def fill() -> Entry:
            self.ids.append(image_id)
            return entry(key=f"alone:{image_id}")
        return fill


async def coalesced(thumbnails: FakeThumbnails, requests: list[Request], *, window_ms: float = 20, limit: int = 50,
                    alone: Alone | None = None) -> list[Entry | BaseException]:
    """Each request's entry (or error) through one coalescer."""
    coalescer = ThumbnailCoalescer(thumbnails, Background(), window_ms, 96, limit)  # type: ignore[arg-type]
    alone = alone or Alone()
    fills = [coalescer.fill(r, alone(int(r.groups["iid"]))) for r in requests]
    return await finished([asyncio.ensure_future(f) for f in fills])


def keys(results: list[Entry | BaseException]) -> list[str]:
    return [r.key for r in results]  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_misses_within_the_window_are_one_batch():
    fake = FakeThumbnails(every(lambda m: entry(key=m.key)))
    requests = [thumb_request(i) for i in (11, 12, 13)]
    results = await coalesced(fake, requests)
    assert fake.calls == [("/webgateway/get_thumbnails/", [11, 12, 13])]
    assert keys(results) == [r.key for r in requests]


@pytest.mark.anyio
async def test_batches_are_per_audience():
    fake = FakeThumbnails(every(lambda m: entry(key=m.key)))
    await coalesced(fake, [thumb_request(1), thumb_request(2, audience="u:x"), thumb_request(3)])
    assert sorted(ids for _, ids in fake.calls) == [[1, 3], [2]]


@pytest.mark.anyio
async def test_reaching_the_batch_limit_flushes_at_once():
    fake = FakeThumbnails(every(lambda m: entry(key=m.key)))
    # A 10 s window: only the limit can flush within wait_for's 2 s.
    results = await coalesced(fake, [thumb_request(i) for i in (1, 2, 3, 4)], window_ms=10_000, limit=2)
    assert [ids for _, ids in fake.calls] == [[1, 2], [3, 4]] and len(results) == 4


@pytest.mark.anyio
async def test_a_member_without_a_final_image_is_fetched_alone():
    fake, alone = FakeThumbnails(every(lambda m: None if m.image_id == 2 else entry(key=m.key))), Alone()
    results = await coalesced(fake, [thumb_request(i) for i in (1, 2, 3)], alone=alone)
    assert alone.ids == [2] and keys(results)[1] == "alone:2"


@pytest.mark.anyio
async def test_a_5xx_batch_answer_reaches_every_member():
    failed, alone = entry(503), Alone()
    results = await coalesced(FakeThumbnails(failing(BatchFailed(failed))), [thumb_request(1), thumb_request(2)],
                              alone=alone)
    assert results == [failed, failed] and alone.ids == []


@pytest.mark.anyio
async def test_a_4xx_batch_answer_sends_every_member_alone():
    alone = Alone()
    await coalesced(FakeThumbnails(failing(BatchFailed(entry(404)))), [thumb_request(1), thumb_request(2)],
                    alone=alone)
    assert alone.ids == [1, 2]  # the backend's exact answer for each, from its own request


@pytest.mark.anyio
async def test_an_upstream_error_reaches_every_member():
    error, alone = UpstreamError("omero-web", 502, "unreachable"), Alone()
    results = await coalesced(FakeThumbnails(failing(error)), [thumb_request(1), thumb_request(2)], alone=alone)
    assert results == [error, error] and alone.ids == []


@pytest.mark.parametrize("path, saturated, applies", [
    ("/webgateway/render_thumbnail/{}/", True, True),
    ("/webgateway/render_thumbnail/{}/96/?_=17", True, True),
    ("/webgateway/render_thumbnail/{}/", False, False),  # free upstream slots: fetched at once, alone
    ("/webgateway/render_thumbnail/{}/64/", True, False),  # not the batch's size
    ("/webgateway/render_thumbnail/{}/?z=2", True, False),  # a plane the batch ignores
    ("/webgateway/render_image/{}/0/0/", True, False),  # no batch form
], ids=["default", "explicit-size", "unsaturated", "other-size", "plane", "render"])
def test_which_misses_coalesce(path: str, saturated: bool, applies: bool):
    fake = FakeThumbnails(every(lambda m: None), saturated=saturated)
    coalescer = ThumbnailCoalescer(fake, Background(), 20, 96, 50)  # type: ignore[arg-type]
    assert coalescer.applies(thumb_request(7, path)) is applies


# --- Delivery.headers ----------------------------------------------------------------------------------
def headers_of(delivery: Delivery, found: Entry, status: CacheStatus = CacheStatus.HIT, tier: str = "memory",
               public: bool = True, max_age: int | None = None) -> dict[bytes, bytes]:
    return dict(delivery.headers(found, status, tier, public, max_age))


@pytest.fixture
def clock() -> FakeClock:
    """A clock at STORED + 4: four seconds into `entry()`'s ten of freshness."""
    c = FakeClock()
    c.now = STORED + 4
    return c


@pytest.fixture
def delivery(clock: FakeClock) -> Delivery:
    return Delivery(Metrics(), clock)


@pytest.mark.parametrize("public, control, vary", [
    (True, b"public, max-age=6", None),
    (False, b"private, max-age=6", b"Cookie"),
])
def test_cache_control_follows_the_audience(delivery: Delivery, public: bool, control: bytes, vary: bytes | None):
    h = headers_of(delivery, entry(), public=public)
    assert (h[b"cache-control"], h.get(b"vary")) == (control, vary)
    assert (h[b"x-edge-cache"], h[b"x-edge-tier"]) == (b"HIT", b"memory")


def test_a_miss_is_cacheable_only_once_stored(delivery: Delivery):
    fetched = entry()
    assert headers_of(delivery, fetched, CacheStatus.MISS, "")[b"cache-control"] == b"no-cache"
    assert headers_of(delivery, fetched, CacheStatus.MISS, "", max_age=3)[b"cache-control"] == b"public, max-age=3"
    fetched.stored_ok = True
    assert headers_of(delivery, fetched, CacheStatus.MISS, "")[b"cache-control"] == b"public, max-age=6"
    assert headers_of(delivery, entry(404), CacheStatus.HIT)[b"cache-control"] == b"no-cache"


def test_hit_headers_are_built_once_a_second_per_tier_and_audience(delivery: Delivery, clock: FakeClock):
    hit = entry()
    first = delivery.headers(hit, CacheStatus.HIT, "memory", True)
    assert delivery.headers(hit, CacheStatus.HIT, "memory", True) is first
    assert dict(delivery.headers(hit, CacheStatus.HIT, "disk", True))[b"x-edge-tier"] == b"disk"
    assert dict(delivery.headers(hit, CacheStatus.HIT, "disk", False))[b"cache-control"].startswith(b"private")
    again = delivery.headers(hit, CacheStatus.HIT, "memory", True)
    assert again is not first and again == first  # the memo holds one (tier, audience) at a time
    clock.advance(1)
    later = delivery.headers(hit, CacheStatus.HIT, "memory", True)
    assert later is not again and dict(later)[b"cache-control"] == b"public, max-age=5"


@pytest.mark.parametrize("status, max_age", [(CacheStatus.STALE, None), (CacheStatus.HIT, 3)])
def test_only_plain_hits_are_memoised(delivery: Delivery, status: CacheStatus, max_age: int | None):
    found = entry()
    assert delivery.headers(found, status, "memory", True, max_age) is not \
        delivery.headers(found, status, "memory", True, max_age)
    assert found.prepared is None
