"""`edge doctor`: check a site's settings against the servers they name, before the edge runs on them.

Each check is one row of `CHECKS` (name, function, the one-line fix shown when it fails) and answers
pass, fail or skip (not configured, or a check it needs failed first) with a detail. Every network call
has a short timeout, so a dead host fails in seconds instead of hanging the command.
"""
from __future__ import annotations

import email.utils
import io
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import TypeVar

import httpx
import redis
from PIL import Image, UnidentifiedImageError
from redis.exceptions import RedisError, ResponseError

from .identity import SESSION_PREFIX, hashed, load_session
from .settings import Settings, safe_url

HTTP_TIMEOUT = httpx.Timeout(5.0, connect=2.0)
REDIS_TIMEOUTS = {"socket_connect_timeout": 1.0, "socket_timeout": 2.0}
MAX_SKEW = 5.0  # seconds; HTTP dates have a resolution of one second
CSRF_COOKIE = "csrftoken"  # Django's CSRF_COOKIE_NAME, set beside the session on some views
# An id no OMERO holds: a batch of them costs OMERO.web its size check and nothing else (gw/views.py:1690-1695).
ABSENT_ID = 9_000_000_000_000_000_000
T = TypeVar("T")
# What a server that is down, or a URL the settings spell wrong, raises: the check that asked fails.
UNREACHABLE = (httpx.HTTPError, httpx.InvalidURL, RedisError, OSError)
_MAX_BATCH = re.compile(r"Max (\d+) thumbnails at a time")

# maxmemory-policy → why it is (un)safe for the L2 tier. Every cache entry, fill lock and fill result the edge
# writes carries a TTL (tiers.py RedisTier.put_many, locks.py); the purge state under redis_prefix (purge.py:
# purge:seq, purge:gen, purge:tags) has none. volatile-* policies evict only keys with a TTL: the cache is
# evicted like allkeys-*, the purge state never. allkeys-* may evict `purge:tags`, which is read only when a
# node starts (PurgeRegistry.start), so LRU/LFU see it as cold: a node started after that misses the purges.
SAFE_POLICIES = {
    "volatile-lru": "evicts least recently used cache entries; purge state has no TTL, never evicted",
    "volatile-lfu": "evicts least frequently used cache entries; purge state has no TTL, never evicted",
    "volatile-ttl": "evicts cache entries nearest expiry; purge state has no TTL, never evicted",
    "volatile-random": "evicts random cache entries; purge state has no TTL, never evicted",
}
UNSAFE_POLICIES = {
    "allkeys-lru": "may evict the purge state (purge:tags is cold): nodes started later miss those purges",
    "allkeys-lfu": "may evict the purge state (purge:tags is cold): nodes started later miss those purges",
    "allkeys-random": "may evict the purge state: nodes started later miss those purges",
    "noeviction": "when full, Redis refuses every cache write and every purge (OOM)",
}


@dataclass(frozen=True)
class Result:
    status: str  # "pass" | "fail" | "skip"
    detail: str


def passed(detail: str) -> Result:
    return Result("pass", detail)


def failed(detail: str) -> Result:
    return Result("fail", detail)


def skipped(detail: str) -> Result:
    return Result("skip", detail)


class Needs(Exception):
    """A check needs something an earlier check could not get: it is skipped, that one has failed."""


class Probe:
    """What the checks share: the settings, one HTTP client, and the answers several checks read, each asked
    for once (a failure too: a dead host costs one timeout, not one per check)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.http = httpx.Client(timeout=HTTP_TIMEOUT, follow_redirects=False)
        self.api_asked_at = 0.0
        self._memo: dict[str, tuple[object, BaseException | None]] = {}

    def close(self) -> None:
        self.http.close()
        l2, _ = self._memo.get("l2", (None, None))
        if isinstance(l2, redis.Redis):
            l2.close()

    def once(self, name: str, get: Callable[[], T]) -> T:
        """`get()` the first time; later calls give its value, or raise its exception again."""
        if name not in self._memo:
            try:
                self._memo[name] = (get(), None)
            except (*UNREACHABLE, Needs) as exc:
                self._memo[name] = (None, exc)
        value, exc = self._memo[name]
        if exc is not None:
            raise exc
        return value  # type: ignore[return-value]

    @staticmethod
    def after(check: str, get: Callable[[], T]) -> T:
        """What another check got first: if that failed, this check is skipped (that one reports it)."""
        try:
            return get()
        except UNREACHABLE:
            raise Needs(f"needs {check} (failed)") from None

    @property
    def web(self) -> str:
        return self.settings.backend[0].rstrip("/")

    def api_root(self) -> httpx.Response:
        """OMERO.web's `/api/` (api/urls.py:30 `api_versions`), and the local time it was asked at."""
        def get() -> httpx.Response:
            sent = time.time()
            response = self.http.get(self.web + "/api/")
            self.api_asked_at = (sent + time.time()) / 2
            return response
        return self.once("api", get)

    def public_answer(self) -> httpx.Response:
        return self.once("public", lambda: self.http.get(self.web + self.settings.public_session_path,
                                                         headers={"accept": "application/json"}))

    def set_cookies(self) -> dict[str, str]:
        """The cookies OMERO.web set on the anonymous request inside its public filter."""
        jar: dict[str, str] = {}
        for raw in self.after("public session", self.public_answer).headers.get_list("set-cookie"):
            cookie = SimpleCookie()
            try:
                cookie.load(raw)
            except CookieError:
                continue
            jar.update({name: morsel.value for name, morsel in cookie.items()})
        return jar

    def public_cookie(self) -> str:
        ok = self.after("public session", self.public_answer).status_code == 200
        value = self.set_cookies().get(self.settings.session_cookie) if ok else None
        if not value:
            raise Needs("needs a public session (see public session, session cookie)")
        return value

    def cookie_header(self) -> dict[str, str]:
        return {"cookie": f"{self.settings.session_cookie}={self.public_cookie()}"}

    def image_id(self) -> int:
        """One image the public user can read, from API v0 (api/urls.py `api_images`)."""
        def get() -> int:
            answer = self.http.get(self.web + "/api/v0/m/images/?limit=1", headers=self.cookie_header())
            try:
                return int(answer.json()["data"][0]["@id"])
            except (ValueError, KeyError, IndexError, TypeError):
                raise Needs("needs an image the public user can read (/api/v0/m/images/ lists none)") from None
        return self.once("image", get)

    def l2(self) -> redis.Redis:
        def get() -> redis.Redis:
            client = redis.Redis.from_url(self.settings.redis_url, **REDIS_TIMEOUTS)
            client.ping()
            return client
        return self.once("l2", get)

    def l2_config(self, *names: str) -> dict[str, str]:
        try:
            found = self.l2().config_get(*names)
        except ResponseError as exc:
            raise Needs(f"this Redis refuses CONFIG ({exc}): check {', '.join(names)} by hand") from None
        return {str(k): str(v) for k, v in found.items()}


# --- the checks ------------------------------------------------------------------------------------------
def check_omero_web(p: Probe) -> Result:
    """Every backend answers `/api/` as OMERO.web does: JSON listing version "0" (api/views.py:68-73), with
    the `X-OMERO-ApiVersion` header of its json_response (api/decorators.py:65, api_settings.py:60-63)."""
    details = []
    for url in p.settings.backend:
        response = p.api_root() if url.rstrip("/") == p.web else p.http.get(url.rstrip("/") + "/api/")
        try:
            versions = [v.get("version") for v in response.json()["data"]]
        except (ValueError, KeyError, TypeError, AttributeError):
            versions = []
        api = response.headers.get("x-omero-apiversion")
        if response.status_code != 200 or "0" not in versions or not api:
            return failed(f"{safe_url(url)}/api/ answered {response.status_code} "
                          f"{response.headers.get('content-type', '')}, not OMERO.web's API root")
        details.append(f"{safe_url(url)}: API v{'/'.join(map(str, versions))}, X-OMERO-ApiVersion {api}")
    return passed("; ".join(details))


def check_public_session(p: Probe) -> Result:
    """OMERO.web gives an anonymous request inside omero.web.public.url_filter a new session (Set-Cookie)."""
    if not p.settings.public_session_path.startswith("/"):
        return failed(f"public_session_path {p.settings.public_session_path!r} is not a URL path (/…)")
    r = p.public_answer()
    others = sorted(set(p.set_cookies()) - {CSRF_COOKIE})
    if r.status_code != 200:
        where = f" to {r.headers['location']}" if "location" in r.headers else ""
        return failed(f"GET {p.settings.public_session_path} answered {r.status_code}{where}")
    if not others:
        return failed(f"GET {p.settings.public_session_path} answered 200 but set no session cookie")
    return passed(f"GET {p.settings.public_session_path}: 200, a new session in {', '.join(others)}")


def check_session_cookie(p: Probe) -> Result:
    names = sorted(set(p.set_cookies()) - {CSRF_COOKIE})
    if p.settings.session_cookie not in names:
        return failed(f"OMERO.web sets {', '.join(names)}; session_cookie is {p.settings.session_cookie!r}")
    return passed(f"OMERO.web sets {p.settings.session_cookie}")


def check_session_redis(p: Probe) -> Result:
    """The public session OMERO.web just created is in session_redis_url, as django-redis keeps it:
    `:1:django.contrib.sessions.cache<cookie>`, a pickled dict whose connector is the public user's."""
    if not p.settings.session_redis_url:
        return skipped("no session_redis_url (access = public-only needs none)")
    client = redis.Redis.from_url(p.settings.session_redis_url, **REDIS_TIMEOUTS)
    try:
        client.ping()  # a Redis that is down fails here, whatever OMERO.web says
        cookie = p.public_cookie()
        raw = client.get(SESSION_PREFIX + cookie)
    finally:
        client.close()
    if raw is None:
        return failed(f"{safe_url(p.settings.session_redis_url)} has no {SESSION_PREFIX}… key for the public "
                      f"session OMERO.web just made (session {hashed(cookie)})")
    session = load_session(raw)
    connector = session.get("connector") if session else None
    if not isinstance(connector, dict) or not connector.get("omero_session_key"):
        return failed(f"the session's value is not a pickled Django session with a connector ({len(raw)} bytes)")
    if not connector.get("is_public"):
        return failed("the session's connector is not the public user's (is_public is not set)")
    return passed(f"{safe_url(p.settings.session_redis_url)} holds the public session (pickled, connector "
                  f"of user {connector.get('user_id')})")


def check_l2_redis(p: Probe) -> Result:
    if not p.settings.redis_url:
        return skipped("no redis_url (L2 tier off)")
    version = p.l2().info("server").get("redis_version", "?")
    return passed(f"{safe_url(p.settings.redis_url)}: Redis {version}")


def check_l2_eviction(p: Probe) -> Result:
    found = p.l2_config("maxmemory-policy", "maxmemory")
    policy, limit = found.get("maxmemory-policy", "?"), int(found.get("maxmemory", "0") or 0)
    if policy in UNSAFE_POLICIES:
        return failed(f"maxmemory-policy {policy}: {UNSAFE_POLICIES[policy]}")
    if policy not in SAFE_POLICIES:
        return failed(f"maxmemory-policy {policy} is not one the edge knows")
    if limit == 0:
        return failed(f"maxmemory-policy {policy} but maxmemory 0: Redis grows until the OS kills it")
    return passed(f"maxmemory {_size(limit)}, {policy}: {SAFE_POLICIES[policy]}")


def check_l2_persistence(p: Probe) -> Result:
    """Without persistence a Redis restart loses the purge generation, and every node drops its whole cache."""
    found = p.l2_config("appendonly", "save")
    kinds = [name for name, on in (("AOF", found.get("appendonly") == "yes"),
                                   (f"RDB save {found.get('save')!r}", bool(found.get("save", "").strip()))) if on]
    if not kinds:
        return failed("no AOF and no RDB snapshots: a restart loses the purge state and every node's cache")
    return passed(f"purge state survives a restart ({', '.join(kinds)})")


def check_cache_dir(p: Probe) -> Result:
    """The disk tier's directory (or the one it would be made in) takes a file, and has room for disk_size
    beside what it already holds."""
    directory = p.settings.cache_dir
    if not directory:
        return skipped("no cache_dir (disk tier off)")
    path = Path(directory)
    existing = next((d for d in (path, *path.parents) if d.exists()), Path("/"))
    if not existing.is_dir():
        return failed(f"{existing} is not a directory")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".edge-doctor-"):
            pass
    except OSError as exc:
        return failed(f"cannot write in {existing}: {exc.strerror}")
    held = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0
    free = shutil.disk_usage(existing).free
    if free + held < p.settings.disk_size:
        return failed(f"disk_size {_size(p.settings.disk_size)} > {_size(free)} free + {_size(held)} held")
    return passed(f"{directory} writable; {_size(free)} free + {_size(held)} held ≥ disk_size "
                  f"{_size(p.settings.disk_size)}")


# The microservice routes the edge sends there (routes.py Upstream.MS), one cheap probe per kind of answer.
MS_PROBES = (
    ("render_image_region", "/webgateway/render_image_region/{iid}/0/0/?region=0,0,16,16&c=1|0:255$FF0000&m=c",
     "image/"),
    ("histogram_json", "/webgateway/histogram_json/{iid}/channel/0/", "application/json"),
)


def check_microservice(p: Probe) -> Result:
    if not p.settings.ms:
        return skipped("no ms (its routes go to OMERO.web)")
    headers, iid = p.cookie_header(), p.image_id()
    for url in p.settings.ms:
        for name, path, kind in MS_PROBES:
            r = p.http.get(url.rstrip("/") + path.format(iid=iid), headers=headers)
            if r.status_code != 200 or not r.headers.get("content-type", "").startswith(kind):
                return failed(f"{safe_url(url)} {name} of image {iid} answered {r.status_code} "
                              f"{r.headers.get('content-type', '')} with the public session")
    return passed(f"{', '.join(map(safe_url, p.settings.ms))}: {', '.join(n for n, _, _ in MS_PROBES)} "
                  f"answer with the public session")


def check_thumb_size(p: Probe) -> Result:
    """OMERO.web renders `render_thumbnail/<id>/` at the session's thumb_default_size (gw/views.py:381-392);
    no URL reports the setting, so the doctor measures the longest side of a default thumbnail."""
    iid = p.image_id()
    r = p.http.get(f"{p.web}/webgateway/render_thumbnail/{iid}/", headers=p.cookie_header())
    try:
        side = max(Image.open(io.BytesIO(r.content)).size)
    except (UnidentifiedImageError, OSError):
        return failed(f"render_thumbnail/{iid}/ answered {r.status_code} {r.headers.get('content-type', '')}, "
                      f"not an image")
    if side != p.settings.thumb_default_size:
        return failed(f"OMERO.web's default thumbnail of image {iid} is {side} px; thumb_default_size is "
                      f"{p.settings.thumb_default_size}")
    return passed(f"default thumbnail of image {iid} is {side} px")


def check_thumbnails_batch(p: Probe) -> Result:
    """get_thumbnails refuses more than omero.web.thumbnails_batch ids with `Max N thumbnails at a time.`
    before it reads any (gw/views.py:1688-1692): ask for thumbnails_batch + 1 ids no OMERO holds."""
    n = p.settings.thumbnails_batch
    query = "&".join(f"id={ABSENT_ID + i}" for i in range(n + 1))
    r = p.http.get(f"{p.web}/webgateway/get_thumbnails/?{query}", headers=p.cookie_header())
    found = _MAX_BATCH.search(r.text) if r.status_code == 500 else None
    if r.status_code == 200:
        return failed(f"OMERO.web answered {n + 1} ids: its omero.web.thumbnails_batch is above {n}")
    if found is None:
        return failed(f"get_thumbnails of {n + 1} ids answered {r.status_code}, not OMERO's batch limit")
    if int(found.group(1)) != n:
        return failed(f"OMERO.web's omero.web.thumbnails_batch is {found.group(1)}; thumbnails_batch is {n}")
    return passed(f"OMERO.web refuses {n + 1} ids: \"{found.group(0)}.\"")


def check_clock(p: Probe) -> Result:
    r = p.after("omero.web", p.api_root)
    date = r.headers.get("date")
    if not date:
        return skipped("the backend sends no Date header")
    backend = email.utils.parsedate_to_datetime(date).timestamp()
    skew = backend - p.api_asked_at
    if abs(skew) > MAX_SKEW:
        return failed(f"the backend's clock is {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} this "
                      f"host's (over {MAX_SKEW:.0f} s)")
    return passed(f"backend Date within {max(abs(skew), 1.0):.0f} s of this host's clock")


@dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[Probe], Result]
    fix: str
    needs: tuple[str, ...] = ()  # checks that must pass first (else this one is skipped: they say why)


CHECKS = (
    Check("omero.web", check_omero_web, "set backend to OMERO.web's base URL (the one that serves /webclient/)"),
    Check("public session", check_public_session,
          "enable OMERO.web's public user (omero.web.public.enabled, url_filter) or set public_session_path to a "
          "public API/webgateway path", needs=("omero.web",)),
    Check("session cookie", check_session_cookie,
          "set session_cookie to OMERO.web's omero.web.session_cookie_name (the name it sets)",
          needs=("public session",)),
    Check("session redis", check_session_redis,
          "set session_redis_url to the Redis and database of OMERO.web's django-redis CACHES (pickle serializer)"),
    Check("l2 redis", check_l2_redis, "start Redis or fix redis_url (empty turns the L2 tier off)"),
    Check("l2 eviction", check_l2_eviction,
          "CONFIG SET maxmemory-policy volatile-lru and a maxmemory (redis.conf too), or a Redis for the edge alone",
          needs=("l2 redis",)),
    Check("l2 persistence", check_l2_persistence, "CONFIG SET appendonly yes (or save '3600 1'), and in redis.conf",
          needs=("l2 redis",)),
    Check("cache dir", check_cache_dir, "point cache_dir at a writable directory, or lower disk_size to what fits"),
    Check("microservice", check_microservice,
          "set ms to omero-ms-image-region's base URLs (reading OMERO.web's session store), or leave it empty",
          needs=("session cookie",)),
    Check("thumbnail size", check_thumb_size,
          "set thumb_default_size to OMERO's omero.client.browser.thumb_default_size", needs=("session cookie",)),
    Check("thumbnail batch", check_thumbnails_batch,
          "set thumbnails_batch to OMERO.web's omero.web.thumbnails_batch", needs=("session cookie",)),
    Check("clock", check_clock, "synchronise the clocks of this host and OMERO.web (NTP)"),
)


PAST = {"fail": "failed", "skip": "skipped"}


@dataclass(frozen=True)
class Row:
    name: str
    status: str
    detail: str
    fix: str


def run_checks(settings: Settings, checks: tuple[Check, ...] = CHECKS) -> list[Row]:
    """Every check in order; an unreachable server fails the check that asked, never the command."""
    probe = Probe(settings)
    rows: list[Row] = []
    try:
        for check in checks:
            done = {r.name: r.status for r in rows}
            blocked = [f"{name} ({PAST[done[name]]})" for name in check.needs if done.get(name) != "pass"]
            try:
                if blocked:
                    raise Needs(f"needs {', '.join(blocked)}")
                result = check.run(probe)
            except Needs as exc:
                result = skipped(str(exc))
            except httpx.HTTPError as exc:
                result = failed(f"{type(exc).__name__} {safe_url(str(exc.request.url))}: {exc or 'no answer'}")
            except UNREACHABLE as exc:
                result = failed(f"{type(exc).__name__}: {exc}")
            rows.append(Row(check.name, result.status, result.detail, check.fix if result.status == "fail" else ""))
    finally:
        probe.close()
    return rows


def render(rows: list[Row]) -> str:
    """An aligned table, each failure followed by its fix."""
    width = max(len(r.name) for r in rows)
    lines = [f"{'check':{width}}  {'result':6}  detail"]
    for r in rows:
        lines.append(f"{r.name:{width}}  {r.status.upper():6}  {r.detail}")
        if r.fix:
            lines.append(f"{'':{width}}  {'':6}  fix: {r.fix}")
    counts = {status: sum(r.status == status for r in rows) for status in ("pass", "skip", "fail")}
    lines.append(f"{counts['pass']} passed, {counts['skip']} skipped, {counts['fail']} failed")
    return "\n".join(lines)


def as_dicts(rows: list[Row]) -> list[dict]:
    return [asdict(r) for r in rows]


def _size(n: float) -> str:
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    i = 0
    while abs(n) >= 1024 and i < len(units) - 1:
        n, i = n / 1024, i + 1
    return f"{n:.0f} B" if i == 0 else f"{n:.1f} {units[i]}"
