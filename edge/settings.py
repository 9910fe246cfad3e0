"""Settings: one typed record, read from defaults, then a TOML file, then `EDGE_*` variables.

Every field carries its default and its documentation here, so the README table, `--help`
and validation all come from one place. A bad value stops start-up with a one-line
`ConfigError` that names the setting.
"""
from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from typing import Any, Literal
from urllib.parse import urlsplit

from .protocol import DEFAULT_THUMBNAILS_BATCH


class ConfigError(ValueError):
    """A setting has a value the edge cannot run with; the message names the setting."""


def _doc(text: str, default: Any, **kw: Any) -> Any:
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"doc": text, **kw})
    return field(default=default, metadata={"doc": text, **kw})


@dataclass
class Settings:
    # upstreams
    backend: list[str] = _doc("OMERO.web base URL(s); several are balanced with passive health checks.",
                              ["http://127.0.0.1:4080"])
    ms: list[str] = _doc("omero-ms-image-region base URL(s); empty = its routes go to OMERO.web.", [])
    upstream_http2: Literal["auto", "on", "off"] = _doc(
        "HTTP/2 to upstreams: auto = ALPN for https and HTTP/1.1 for http; on = also h2c prior knowledge.", "auto")
    upstream_concurrency: int = _doc("Most requests in flight to one upstream per edge process (protects OMERO).", 16)
    connect_timeout: float = _doc("Seconds to connect to an upstream before trying the next URL.", 2.0)
    read_timeout: float = _doc("Seconds to wait for an upstream answer; then 504.", 30.0)
    retries: int = _doc("Retries of an idempotent GET on connect errors, with exponential backoff.", 2)
    breaker_failures: int = _doc("Consecutive upstream failures that open the circuit breaker.", 5)
    breaker_reset: float = _doc("Seconds the breaker stays open before one trial request.", 5.0)
    # server
    bind: str = _doc("Address the server listens on (host:port).", "127.0.0.1:8080")
    workers: int = _doc("Server worker processes.", 1)
    server: Literal["granian", "hypercorn"] = _doc("ASGI server for `edge serve`.", "granian")
    certfile: str = _doc("TLS certificate (PEM): serve HTTP/2 over TLS with ALPN.", "")
    keyfile: str = _doc("TLS private key (PEM, PKCS#8 for granian).", "")
    max_header_size: int = _doc("Largest request header block in bytes (HTTP/1.1 and HTTP/2); larger is refused "
                                "(431) or the connection closed.", 64 * 1024)
    header_timeout: float = _doc("Seconds a client has to send a request's headers (slow clients are "
                                 "disconnected; granian).", 10.0)
    access_log: str = _doc("Access log: empty = off, `-` = stdout (journald), else a file path, reopened when "
                           "SIGHUP respawns the workers (docs/deploy.md).", "")
    access_log_format: Literal["json", "combined"] = _doc(
        "Access log lines: JSON, or nginx's combined format followed by the edge's fields as name=value.", "json")
    shutdown_timeout: float = _doc("Seconds in-flight requests have to finish on SIGTERM (new connections get no "
                                   "answer from then on); then the workers are killed.", 30.0)
    metrics_dir: str = _doc("Node-local directory where the workers write their metrics for /_edge/metrics to add "
                            "up (`edge serve` empties it at start); empty = a fresh temporary one when workers > 1 "
                            "(docs/deploy.md, Metrics).", "")
    server_interface: Literal["asgi", "rsgi"] = _doc(
        "granian's interface to the edge: RSGI (a hit is one call, no ASGI messages) or ASGI; the same request "
        "pipeline either way (hypercorn always speaks ASGI).", "rsgi")
    # tiers
    memory_size: int = _doc("L0 in-process memory tier size in bytes (LRU); 0 turns it off.", 64 * 2**20)
    cache_dir: str = _doc("L1 disk tier directory (diskcache); empty turns it off.", ".cache/edge")
    disk_size: int = _doc("L1 disk tier size limit in bytes (evicts least recently used).", 4 * 2**30)
    disk_readahead: bool = _doc("At start-up, ask the kernel to read the disk tier's SQLite files into the page cache "
                                "(in the background) when they fit in 3/4 of the memory available: hits over millions "
                                "of entries cost memory speed from the first (docs/bench.md, Scale).", True)
    redis_url: str = _doc("L2 Redis tier shared by all nodes (e.g. redis://127.0.0.1:6379/0); empty = off.", "")
    redis_prefix: str = _doc("Namespace of this deployment's purge state and channel in Redis; empty = "
                             "`edge:<db>:` from redis_url (pub/sub channels are shared by all databases).", "")
    redis_max_body: int = _doc("Bodies larger than this many bytes are kept out of Redis.", 512 * 1024)
    redis_timeout: float = _doc("Most seconds one call to the L2 Redis tier may take (connecting included; cache reads "
                                "and writes, fill locks); a Redis that takes longer is skipped as down and retried "
                                "with backoff (0.5 s doubling to 30 s).", 0.25)
    redis_cluster: bool = _doc("redis_url names any node of a Redis Cluster (database 0): entries spread over its "
                               "masters, purge state in one slot; set cluster-require-full-coverage no on the "
                               "nodes so a dead master costs only its own keys (docs/deploy.md).", False)
    # freshness
    ttl_thumbnail: int = _doc("Seconds a thumbnail stays fresh.", 86400)
    ttl_render: int = _doc("Seconds a render/tile stays fresh.", 86400)
    ttl_json: int = _doc("Seconds imgData, plate grids and other webgateway JSON stay fresh.", 3600)
    ttl_api: int = _doc("Seconds JSON API v0 pages stay fresh.", 600)
    ttl_metadata: int = _doc("Seconds the webclient's tree JSON, metadata panels, map annotations and "
                             "load_plate stay fresh (docs/browse.md).", 3600)
    purge_writes: bool = _doc("Purge what OMERO.web's writes change (rendering settings, channel names, chgrp, "
                              "chown, deletes) when they pass through the edge (edge/writes.py).", True)
    soft_purge_seconds: float = _doc("Longest an entry a soft purge made stale is still answered, while one "
                                     "refresh runs (then it is a miss).", 300.0)
    ttl_negative: int = _doc("Seconds a 404 is remembered (0 = never cached).", 30)
    stale_while_revalidate: int = _doc("Seconds past freshness an entry is served while one refresh runs.", 60)
    stale_if_error: int = _doc("Seconds past freshness an entry is served when the upstream fails.", 86400)
    # keys and identity
    public_base_url: str = _doc("Base URL of API JSON links; empty = the request's Host (part of API keys).", "")
    thumb_default_size: int = _doc("OMERO's omero.client.browser.thumb_default_size (folds …/<id>/ into …/<id>/96/).",
                                   96)
    thumbnails_batch: int = _doc("OMERO.web's omero.web.thumbnails_batch: most ids in one get_thumbnails (more get "
                                 "OMERO's own 500); also the coalescer's and the warmer's batch size.",
                                 DEFAULT_THUMBNAILS_BATCH)
    loading_thumbnails: list[str] = _doc("ETags (without quotes) of OMERO's in-progress 'loading' thumbnail, never "
                                         "stored; the edge also learns them (see README).", [])
    session_cookie: str = _doc("OMERO.web session cookie name (IDR: sessionid_idr).", "sessionid")
    public_session_path: str = _doc("URL path (inside OMERO.web's public filter) the edge requests to get its own "
                                    "public-user session.", "/api/v0/m/screens/?limit=1")
    session_redis_url: str = _doc("Redis holding OMERO.web's django-redis sessions; needed to tell users apart.", "")
    access: Literal["public-only", "verified"] = _doc(
        "public-only: cache the public audience only; verified: per-user audiences with read checks.", "public-only")
    access_ttl: float = _doc("Seconds a (session, object) read check is remembered; 0 = check every hit.", 60.0)
    access_cache_size: int = _doc("Most (session, object) read checks remembered.", 100_000)
    # admin
    purge_token: str = _doc("Bearer token for POST /_edge/purge; empty disables it.", "")
    warm_token: str = _doc("Token of the X-Edge-Warm request header (warm mode); empty disables it.", "")
    coalesce_window_ms: float = _doc("Milliseconds default-size render_thumbnail misses wait to be fetched together as "
                                     "one get_thumbnails batch (0 = one request each).", 3.0)
    fill_timeout: float = _doc("Most seconds a request waits for another worker's or node's fill.", 35.0)
    prefetch: bool = _doc("on: after a plate grid's fill, fetch its default thumbnails as get_thumbnails batches; "
                          "after imgData / iviewer's image_data, iviewer's first view (edge/prefetch.py).", False)
    prefetch_share: float = _doc("Fraction of upstream_concurrency prefetches may hold per upstream; a prefetch "
                                 "also needs a free slot, else it is skipped (never queued).", 0.25)
    # edge watch (docs/watch.md)
    watch_db: str = _doc("OMERO's PostgreSQL (postgresql://user@host/omero) whose eventlog `edge watch` follows; "
                         "a read-only user is enough.", "")
    watch_interval: float = _doc("Seconds `edge watch` waits between polls once it has caught up.", 1.0)
    watch_batch: int = _doc("Most eventlog rows `edge watch` reads and purges at once (a burst is read batch "
                            "after batch without waiting).", 5000)
    watch_gap_seconds: float = _doc("Seconds an eventlog id skipped over (its transaction not yet committed) is "
                                    "asked for again before it is given up as rolled back.", 600.0)
    watch_state: str = _doc("File keeping `edge watch`'s position; empty = in Redis (redis_url), else "
                            "<cache_dir>/watch.position.", "")
    watch_edges: list[str] = _doc("Edge URLs `edge watch` sends its purges to (POST /_edge/purge, purge_token); "
                                  "empty = written into the purge state of cache_dir / redis_url, as `edge purge` "
                                  "does.", [])

    def __post_init__(self) -> None:
        self.validate()

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def load(cls, config: str | None = None, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults < TOML file (`config` or `EDGE_CONFIG`) < `EDGE_*` variables < `overrides`."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        path = config or env.get("EDGE_CONFIG")
        if path:
            values.update(_read_toml(path))
        for f in fields(cls):
            raw = env.get("EDGE_" + f.name.upper())
            if raw is not None:
                values[f.name] = _parse(f, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in fields(cls)}
        for name in values:
            if name not in known:
                raise ConfigError(f"unknown setting {name!r}")
        return cls(**{k: _coerce(cls, k, v) for k, v in values.items()})

    def to_env(self) -> dict[str, str]:
        """`EDGE_*` variables that reproduce these settings in a server worker process."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out["EDGE_" + f.name.upper()] = ",".join(value) if isinstance(value, list) else str(value)
        return out

    def validate(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in ("int", "float") and value < 0:
                raise ConfigError(f"{f.name} must not be negative (got {value})")
            choices = _choices(f)
            if choices and value not in choices:
                raise ConfigError(f"{f.name} must be one of {', '.join(choices)} (got {value!r})")
        for name in ("backend", "ms"):
            for url in getattr(self, name):
                parts = urlsplit(url)
                if parts.scheme not in ("http", "https") or not parts.hostname:
                    raise ConfigError(f"{name} must be http(s)://host[:port] URLs (got {url!r})")
        if not self.backend:
            raise ConfigError("backend needs at least one OMERO.web URL")
        for name in ("redis_url", "session_redis_url"):
            url = getattr(self, name)
            if url and urlsplit(url).scheme not in ("redis", "rediss", "unix"):
                raise ConfigError(f"{name} must be a redis:// URL (got {url!r})")
        host, _, port = self.bind.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"bind must be host:port (got {self.bind!r})")
        if bool(self.certfile) != bool(self.keyfile):
            raise ConfigError("certfile and keyfile go together")
        for name in ("certfile", "keyfile"):
            if getattr(self, name) and not os.path.isfile(getattr(self, name)):
                raise ConfigError(f"{name} {getattr(self, name)} is not a readable file")
        if self.workers < 1:
            raise ConfigError("workers must be at least 1")
        if self.max_header_size < 8192:
            raise ConfigError("max_header_size must be at least 8192")
        if self.header_timeout <= 0:
            raise ConfigError("header_timeout must be positive")
        if self.shutdown_timeout <= 0:
            raise ConfigError("shutdown_timeout must be positive")
        if self.access_log not in ("", "-") and not os.path.isdir(os.path.dirname(os.path.abspath(self.access_log))):
            raise ConfigError(f"access_log {self.access_log}: no such directory")
        if self.redis_timeout <= 0:
            raise ConfigError("redis_timeout must be positive")
        if self.redis_cluster:
            cluster_url_error(self.redis_url, "redis_url")
        if self.thumbnails_batch < 1:
            raise ConfigError("thumbnails_batch must be at least 1")
        if not 0 < self.prefetch_share <= 1:
            raise ConfigError(f"prefetch_share must be a fraction in (0, 1] (got {self.prefetch_share})")
        if self.upstream_concurrency < 1:
            raise ConfigError("upstream_concurrency must be at least 1")
        if self.watch_batch < 1 or self.watch_interval <= 0:
            raise ConfigError("watch_batch must be at least 1 and watch_interval positive")
        if self.watch_db and urlsplit(self.watch_db).scheme not in ("postgresql", "postgres"):
            raise ConfigError(f"watch_db must be a postgresql:// URL (got {safe_url(self.watch_db)!r})")
        if self.access == "verified" and not self.session_redis_url:
            raise ConfigError("access = verified needs session_redis_url (where OMERO.web keeps its sessions)")

    def doc_rows(self) -> list[tuple[str, str, str]]:
        """(setting, default, meaning) for the README table and `edge config`."""
        return [(f.name, repr(getattr(self, f.name)), f.metadata["doc"]) for f in fields(self)]


def safe_url(url: str) -> str:
    """A URL fit for logs and errors: its password (user info) masked."""
    return re.sub(r"//[^@/]*@", "//***@", url)


def _choices(f: dataclasses.Field) -> tuple[str, ...]:
    t = str(f.type)
    if t.startswith("Literal["):
        return tuple(part.strip().strip("'\"") for part in t[len("Literal["):-1].split(","))
    return ()


_BOOLEANS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


def cluster_url_error(url: str, name: str) -> None:
    """ConfigError unless `url` can name a Redis Cluster node: redis(s)://host:port, database 0 (a cluster has no
    other), no unix socket."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname or parts.path.strip("/") not in ("", "0"):
        raise ConfigError(f"a Redis Cluster needs {name} = redis://host:port of one of its nodes, database 0 "
                          f"(got {safe_url(url) if url else 'nothing'})")


def _parse(f: dataclasses.Field, raw: str) -> Any:
    t = str(f.type)
    name = f.name
    try:
        if t == "int":
            return int(raw)
        if t == "float":
            return float(raw)
        if t.startswith("list"):
            return [part.strip() for part in raw.split(",") if part.strip()]
        if t == "bool":
            return _BOOLEANS[raw.strip().lower()]
    except KeyError:
        raise ConfigError(f"{name} must be true or false (got {raw!r})") from None
    except ValueError:
        raise ConfigError(f"{name} must be {'an integer' if t == 'int' else 'a number'} (got {raw!r})") from None
    return raw


def _coerce(cls: type, name: str, value: Any) -> Any:
    f = next(x for x in fields(cls) if x.name == name)
    t = str(f.type)
    if isinstance(value, str) and (t in ("int", "float", "bool") or t.startswith("list")):
        return _parse(f, value)
    if t == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false (got {value!r})")
        return value
    if t == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{name} must be an integer (got {value!r})")
    if t == "float" and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ConfigError(f"{name} must be a number (got {value!r})")
    if t == "float":
        return float(value)
    if t.startswith("list") and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise ConfigError(f"{name} must be a list of strings (got {value!r})")
    if t not in ("int", "float") and not t.startswith("list") and not isinstance(value, str):
        raise ConfigError(f"{name} must be a string (got {value!r})")
    return value


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    # Accept a flat file or an [edge] table.
    return dict(data.get("edge", data))
