"""nginx as a competitor: the IDR's proxy cache in front of the backend, or plain static files.

The proxy cache follows IDR's production config (see shared/omero-web-api.md §7): the key is
`$request_uri` with `_=<digits>` removed by IDR's map `^(.+[?&])_=\\d+(.*)$` → `$1$2`, which keeps
the separator before it (a browser's `…&image=1&_=5` is keyed `…&image=1&`, IDR's recache.py's
`…&image=1` without `_` is keyed as it is: two entries, so warmed ones are missed), `proxy_cache_lock`, stale
answers while updating, Set-Cookie/Vary/Expires ignored and Set-Cookie hidden, 200s valid for
a day. IDR also skips the cache (`proxy_no_cache`) for anything outside its list of cacheable
URLs, and that list lacks the plate grid (`webgateway/plate/`) and `imgData`; `skip="idr"`
keeps that rule, `skip="none"` caches every GET, the upper bound for nginx. IDR's several
zones are one zone here: zones change where entries live, not how fast a hit is.

nginx runs with `daemon off` under a temporary prefix, on three loopback listeners (HTTP/1.1,
h2c with prior knowledge, h2 over TLS), with one worker unless told otherwise.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from bench.certs import Certs
from bench.procs import Child, Children, which

# IDR's $skip_cache map: 0 (cache) only for these URI patterns.
IDR_CACHEABLE = (r"web(client|gateway)/(metadata|render)_", r"get_thumbnail", r"(webclient/)?api/", r"static/",
                 r"gallery-api/", r"img_detail", r"iviewer/")
SKIP_CHOICES = ("idr", "none")


class NginxMissing(RuntimeError):
    """nginx is not installed."""


@dataclass(frozen=True)
class Listeners:
    h1: int
    h2c: int
    tls: int


def _prologue(prefix: Path, listeners: Listeners, certs: Certs, workers: int, sendfile: bool = True) -> tuple[str, str]:
    """(top of the config up to `http {`, the three listen lines) shared by both shapes.

    `sendfile on` (Debian's nginx.conf) stalls sequential HTTP/2 cache hits ~40 ms each here (the
    DATA frame waits for the client's delayed ACK of the HEADERS segment); `sendfile off` avoids it."""
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp = "\n".join(f"  {kind}_temp_path {prefix}/tmp/{kind};" for kind in
                     ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    top = f"""{user}worker_processes {workers};
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
{temp}
  sendfile {'on' if sendfile else 'off'}; tcp_nopush on; tcp_nodelay on;
  keepalive_requests 1000000; keepalive_timeout 65;
  ssl_certificate {certs.cert}; ssl_certificate_key {certs.key};
  ssl_protocols TLSv1.2 TLSv1.3;
"""
    listen = (f"    listen 127.0.0.1:{listeners.h1};\n    listen 127.0.0.1:{listeners.h2c} http2;\n"
              f"    listen 127.0.0.1:{listeners.tls} ssl http2;\n")
    return top, listen


def proxy_cache_conf(prefix: Path, listeners: Listeners, certs: Certs, backend_port: int, workers: int = 1,
                     skip: str = "idr", sendfile: bool = True) -> str:
    top, listen = _prologue(prefix, listeners, certs, workers, sendfile)
    cacheable = "".join(f"    ~{pattern} 0;\n" for pattern in IDR_CACHEABLE)
    skip_map = (f"  map $request_uri $skip_cache {{\n    default 1;\n{cacheable}  }}\n" if skip == "idr"
                else "  map $request_uri $skip_cache { default 0; }\n")
    return top + f"""  proxy_cache_path {prefix}/cache levels=1:2 keys_zone=omero:32m max_size=4g inactive=180d use_temp_path=off;
  map $request_uri $cache_key {{
    ~^(?<k1>.+[?&])_=\\d+(?<k2>.*)$ $k1$k2;
    default $request_uri;
  }}
{skip_map}  upstream omeroweb {{ server 127.0.0.1:{backend_port}; keepalive 64; }}
  server {{
{listen}    location / {{
      proxy_pass http://omeroweb;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_cache omero;
      proxy_cache_key $cache_key;
      proxy_cache_methods GET HEAD;
      proxy_cache_valid 200 1d;
      proxy_cache_lock on; proxy_cache_lock_age 1m; proxy_cache_lock_timeout 1m;
      proxy_cache_use_stale error timeout invalid_header updating http_500 http_502 http_503 http_504;
      proxy_cache_background_update on;
      proxy_ignore_headers Set-Cookie Vary Expires;
      proxy_hide_header Set-Cookie;
      proxy_no_cache $skip_cache;
      add_header X-Proxy-Cache $upstream_cache_status;
    }}
  }}
}}
"""


def static_conf(prefix: Path, listeners: Listeners, certs: Certs, root: Path, workers: int = 1) -> str:
    """Files under `root` answer the URL of their directory: `<root>/<url path>/body`."""
    top, listen = _prologue(prefix, listeners, certs, workers)
    return top + f"""  open_file_cache max=10000 inactive=60s;
  server {{
{listen}    root {root};
    location / {{ types {{}} default_type image/jpeg; try_files ${{uri}}body =404; }}
  }}
}}
"""


class Nginx:
    """One nginx under its own prefix; `restart(clear_cache=True)` gives an empty cache ("cold")."""

    def __init__(self, children: Children, prefix: Path, listeners: Listeners, conf: str) -> None:
        binary = which("nginx")
        if binary is None:
            raise NginxMissing("nginx not found: apt-get install nginx (or `make system-deps`)")
        self.binary, self.children, self.prefix, self.listeners = binary, children, prefix, listeners
        self.child: Child | None = None
        prefix.mkdir(parents=True, exist_ok=True)
        (prefix / "nginx.conf").write_text(conf)

    def start(self) -> None:
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.prefix / "tmp" / kind).mkdir(parents=True, exist_ok=True)
        self.child = self.children.start("nginx", [self.binary, "-p", str(self.prefix), "-c",
                                                   str(self.prefix / "nginx.conf")])
        for port in (self.listeners.h1, self.listeners.h2c, self.listeners.tls):
            self.child.wait_port(port)

    def stop(self) -> None:
        if self.child is not None:
            self.children.stop(self.child)
            self.child = None

    def restart(self, clear_cache: bool) -> None:
        self.stop()
        if clear_cache:
            shutil.rmtree(self.prefix / "cache", ignore_errors=True)
        self.start()


def constant_cache_conf(prefix: Path, listeners: Listeners, certs: Certs, backend_port: int, body: Path,
                        zone_mib: int) -> str:
    """`bench scale`: a proxy cache (every GET, keyed by URI, never evicting) in front of a second server
    of the same nginx that answers every URL with the file `body`, so filling N entries costs N cheap misses."""
    top, listen = _prologue(prefix, listeners, certs, 1, sendfile=False)
    return top + f"""  proxy_cache_path {prefix}/cache levels=1:2 keys_zone=scale:{zone_mib}m max_size=1024g inactive=180d use_temp_path=off;
  upstream constant {{ server 127.0.0.1:{backend_port}; keepalive 16; }}
  server {{
    listen 127.0.0.1:{backend_port};
    root {body.parent};
    location / {{ types {{}} default_type image/jpeg; try_files /{body.name} =404; }}
  }}
  server {{
{listen}    location / {{
      proxy_pass http://constant;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache scale;
      proxy_cache_key $request_uri;
      proxy_cache_valid 200 1d;
      add_header X-Proxy-Cache $upstream_cache_status;
    }}
  }}
}}
"""
