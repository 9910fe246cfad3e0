"""Everything `bench sim` can be told, in one frozen object shared by all modules."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SimConfig:
    host: str = "127.0.0.1"
    port: int = 4080
    ms_port: int | None = None
    scale: str = "small"
    workers: int = 4
    speed: float = 1.0
    redis_url: str | None = None
    public: bool = True
    session_cookie: str = "sessionid"
    cookie_age: int = 86400
    thumb_size: int = 96
    thumbnails_batch: int = 50                          # omero.web.thumbnails_batch
    use_x_forwarded_host: bool = False                  # omero.web.use_x_forwarded_host
    secure_proxy_ssl_header: tuple[str, str] | None = None   # omero.web.secure_proxy_ssl_header (header, value)
    server: str = "granian"
    job_delay: float = 0.0                              # seconds before a chgrp/chown/delete job takes effect
    db: str | None = None                               # PostgreSQL where writes are journaled as OMERO does
