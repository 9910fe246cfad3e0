"""`edge nginx-conf`: the nginx config that puts the edge in front of OMERO.web without ever
breaking the site when the edge is down.

Cacheable paths (the edge's own route table, `edge.routes`, exported as regexes: never a
hand-kept copy) go to the edges; everything else goes to OMERO.web exactly as before. When no
edge answers, or one answers 502/503/504, nginx re-sends the request to OMERO.web, or to
omero-ms-image-region for the routes the edge would have fetched there, through
`error_page … = @fallback` with `proxy_intercept_errors`. The templates in `edge/nginx/`
(package data, so an installed wheel has them) carry the comments that explain each directive;
this module only chooses and fills them. The top-level `nginx/` holds examples rendered from them.
"""
from __future__ import annotations

import argparse
import re
import shlex
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from string import Template

from .routes import ROUTES, Upstream, cacheable_regex
from .settings import ConfigError

TEMPLATES = Path(__file__).resolve().parent / "nginx"

# omero-ms-image-region's own nginx routing (its README; omero-web-api.md §5), plus the NGFF
# bird's-eye view it also serves: what a site with the microservice already sends it directly.
MS_DIRECT_REGEX = (r"^/(?:(?:webclient|webgateway)/(?:render_(?:thumbnail_ngff|birds_eye_view_ngff|image|"
                   r"image_region|image_region_rdef|image_rdef|shape_mask)|get_thumbnails_ngff|histogram_json|"
                   r"annotation)/|omero_ms_image_region/)")

FAIL_TIMEOUT = "2s"
EDGE_SERVER = """\
    # max_fails=1 fail_timeout={fail}: one refused or timed-out connection takes this edge out
    # of rotation for {fail}; meanwhile its requests go to another edge, or straight to the
    # fallthrough, without a connection attempt. Then one request probes it again: a dead
    # edge costs one failed connect per {fail} per worker, a restarted one gets its traffic
    # back within {fail}.
""".format(fail=FAIL_TIMEOUT)
LONE_EDGE = """\
    # nginx never marks the only server of a group down, so a lone dead edge would cost a
    # connection attempt (or a whole timeout, if it hangs) on every request. A second entry
    # marked `down` (never used) makes the group "not single": after one failure the edge is
    # marked down, and requests fall through at once until fail_timeout has passed.
"""
BALANCE = {
    "uri": "    # Each URL (without `_=`) always goes to the same edge, so each edge's memory and disk\n"
           "    # tiers hold a different share of the cache; consistent hashing moves only 1/N of\n"
           "    # the URLs when an edge joins or leaves.\n"
           "    hash $omero_edge_uri consistent;\n",
    "least-conn": "    # Each request goes to the edge with the fewest requests in flight: with a shared Redis\n"
                  "    # tier every edge can answer every URL, so spread the load.\n"
                  "    least_conn;\n",
    "round-robin": "    # Requests take turns across the edges (nginx's default balancing).\n",
}
_HOST_PORT = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})$")
_COOKIE = re.compile(r"^[A-Za-z0-9_]+$")


@dataclass(frozen=True)
class Options:
    """What the config is rendered from; `from_args` validates the command line into this."""

    edges: tuple[str, ...] = ("127.0.0.1:8080",)
    omero_web: str = "127.0.0.1:4080"
    ms: str = ""
    listen: tuple[str, ...] = ()
    server_name: str = "_"
    tls_cert: str = ""
    tls_key: str = ""
    static_root: str = ""
    microcache: bool = False
    microcache_dir: str = ""
    microcache_size: str = "1g"
    microcache_valid: int = 10
    session_cookie: str = "sessionid"
    balance: str = "uri"
    edge_timeout: int = 60
    prefix: str = ""
    user: str = ""
    command: str = "edge nginx-conf"

    def listens(self) -> tuple[str, ...]:
        return self.listen or (("443",) if self.tls_cert else ("80",))


def host_port(text: str, what: str) -> str:
    """`text` if it is HOST:PORT (IPv6 in brackets) with a port in 1..65535, else a ConfigError."""
    m = _HOST_PORT.match(text)
    if not m or not 0 < int(m.group(1)) < 65536:
        raise ConfigError(f"{what} must be HOST:PORT, e.g. 127.0.0.1:8080 (got {text!r})")
    return text


def listen_address(text: str) -> str:
    """A `listen` address: PORT, HOST:PORT or [IPv6]:PORT."""
    if text.isdigit() and 0 < int(text) < 65536:
        return text
    return host_port(text, "--listen")


def ms_regex() -> str:
    """The cacheable routes the edge fetches from omero-ms-image-region, as one nginx regex."""
    return cacheable_regex([r for r in ROUTES if r.upstream == Upstream.MS])


def _fill(name: str, **values: object) -> str:
    return _Template((TEMPLATES / name).read_text()).substitute(values)


class _Template(Template):
    delimiter = "%"  # nginx variables use `$`, named locations `@`


def _indent(text: str) -> str:
    return textwrap.indent(text, "    ")


def _edge_servers(opts: Options) -> str:
    params = f"max_fails=1 fail_timeout={FAIL_TIMEOUT}"
    lines = EDGE_SERVER + "".join(f"    server {edge} {params};\n" for edge in opts.edges)
    if len(opts.edges) == 1:
        lines += LONE_EDGE + f"    server {opts.edges[0]} down;\n"
    return lines


def render_http(opts: Options) -> str:
    """The http-context part: upstreams, maps, log format, the microcache zone."""
    microcache_http = ""
    if opts.microcache:
        microcache_http = _fill("microcache-http.conf.tmpl", dir=_microcache_dir(opts), size=opts.microcache_size,
                                inactive=f"{max(60, 6 * opts.microcache_valid)}s")
    return _fill("http.conf.tmpl", command=opts.command,
                 balance=BALANCE[opts.balance] if len(opts.edges) > 1 else "",
                 edge_servers=_edge_servers(opts), omero_web=opts.omero_web,
                 ms_upstream=_fill("ms-upstream.conf.tmpl", ms=opts.ms) if opts.ms else "",
                 microcache_http=microcache_http)


def _microcache_dir(opts: Options) -> str:
    if opts.microcache_dir:
        return opts.microcache_dir
    return f"{opts.prefix}/microcache" if opts.prefix else "/var/cache/nginx/omero-edge"


def _backend(location: str, upstream: str, what: str) -> str:
    return _fill("backend-location.conf.tmpl", location=location, upstream=upstream, what=what,
                 proxy_headers=_fill("proxy-headers.conf.tmpl"))


def render_locations(opts: Options) -> str:
    """The server-context part that an existing OMERO.web server block includes: the edge
    locations and their fallthrough targets (the existing `location /` stays as it is)."""
    microcache = _fill("microcache.conf.tmpl", valid=opts.microcache_valid,
                       cookie=opts.session_cookie) if opts.microcache else ""

    def edge_location(what: str, regex: str, source: str, fallback: str, fallback_name: str) -> str:
        return _fill("edge-location.conf.tmpl", what=what, regex=regex, regex_source=source, fallback=fallback,
                     fallback_name=fallback_name, proxy_headers=_fill("proxy-headers.conf.tmpl"),
                     edge_timeout=opts.edge_timeout, microcache=microcache)

    out = []
    if opts.ms:
        out.append(edge_location(" that the edge fetches from omero-ms-image-region", ms_regex(),
                                 "edge.nginxconf.ms_regex()", "@omero_edge_ms", "omero-ms-image-region"))
    out.append(edge_location(" (but the microservice's, matched above)" if opts.ms else "", cacheable_regex(),
                             "edge.routes.cacheable_regex()", "@omero_edge_web", "OMERO.web"))
    out.append(_backend("@omero_edge_web", "omero_web",
                        "The fallthrough for OMERO.web's cacheable URLs: the same request, straight to OMERO.web."))
    if opts.ms:
        out.append(_backend("@omero_edge_ms", "omero_ms", "The fallthrough for the microservice's cacheable URLs: "
                                                          "the same request, straight to omero-ms-image-region."))
    return "\n".join(out)


def render_server(opts: Options) -> str:
    """A complete server block: listen/TLS, static files, the edge locations, OMERO.web for the rest."""
    tls = bool(opts.tls_cert)
    listen = "".join(f"    listen {addr}{' ssl http2' if tls else ''};\n" for addr in opts.listens())
    locations = []
    if opts.static_root:
        locations.append(_fill("static-location.conf.tmpl", static_root=opts.static_root.rstrip("/")))
    locations.append(render_locations(opts))
    if opts.ms:
        locations.append(_backend(f'~ "{MS_DIRECT_REGEX}"', "omero_ms", "The microservice's other routes (its "
                                  "README's nginx routing): straight to omero-ms-image-region, as before."))
    locations.append(_backend("/", "omero_web", "Everything else (login, writes, webclient pages, uploads, "
                              "websockets): straight to OMERO.web, as before."))
    access_log = f"{opts.prefix}/access.log" if opts.prefix else "/var/log/nginx/omero-edge.access.log"
    return _fill("server.conf.tmpl", listen=listen, server_name=opts.server_name,
                 tls=_fill("tls.conf.tmpl", cert=opts.tls_cert, key=opts.tls_key) if tls else "",
                 access_log=access_log, locations=_indent("\n".join(locations)))


def render(opts: Options, snippet: str = "") -> str:
    """The whole config: a conf.d file (http context), a standalone nginx.conf when `prefix`
    is set, or one of the two snippets for an existing setup (`http` or `server`)."""
    if snippet == "server":
        return render_locations(opts)
    if snippet == "http":
        return render_http(opts)
    http = render_http(opts) + render_server(opts)
    if not opts.prefix:
        return http
    return _fill("standalone.conf.tmpl", prefix=opts.prefix, conf=f"{opts.prefix}/nginx.conf",
                 user=f"\n# Worker processes run as this user.\nuser {opts.user};\n" if opts.user else "",
                 http=_indent(http))


def from_args(args: argparse.Namespace) -> Options:
    """Validated options from the command line; a ConfigError (one line, exit 2) when wrong."""
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together")
    for path, what in ((args.static_root, "--static-root"), (args.prefix, "--prefix"),
                       (args.microcache_dir, "--microcache-dir")):
        if path and not path.startswith("/"):
            raise ConfigError(f"{what} must be an absolute path (got {path!r})")
    if not _COOKIE.match(args.session_cookie):
        raise ConfigError(f"--session-cookie must be letters, digits and _ (got {args.session_cookie!r})")
    if args.user and not args.prefix:
        raise ConfigError("--user goes with --prefix (a standalone nginx.conf)")
    if args.edge_timeout < 1:
        raise ConfigError("--edge-timeout must be at least 1 second")
    if args.microcache_valid < 1:
        raise ConfigError("--microcache-valid must be at least 1 second")
    if not re.fullmatch(r"[0-9]+[kmg]?", args.microcache_size):
        raise ConfigError(f"--microcache-size must be an nginx size such as 500m or 2g (got {args.microcache_size!r})")
    return Options(
        edges=tuple(host_port(e, "--edge") for e in args.edge or Options.edges),
        omero_web=host_port(args.omero_web, "--omero-web"),
        ms=host_port(args.ms, "--ms") if args.ms else "",
        listen=tuple(listen_address(a) for a in args.listen or ()),
        server_name=args.server_name, tls_cert=args.tls_cert or "", tls_key=args.tls_key or "",
        static_root=args.static_root or "", microcache=args.microcache, microcache_dir=args.microcache_dir or "",
        microcache_size=args.microcache_size, microcache_valid=args.microcache_valid,
        session_cookie=args.session_cookie, balance=args.balance, edge_timeout=args.edge_timeout,
        prefix=(args.prefix or "").rstrip("/"), user=args.user or "", command=_command_line(args))


def _command_line(args: argparse.Namespace) -> str:
    """The options that differ from their defaults, as a command to re-run (for the header)."""
    words = ["edge", "nginx-conf"]
    for action in args.parser._actions:
        value = getattr(args, action.dest, None)
        if not action.option_strings or value in (None, False, action.default) or action.dest == "output":
            continue
        flag = action.option_strings[-1]
        if value is True:
            words.append(flag)
        else:
            words += [w for v in (value if isinstance(value, list) else [value]) for w in (flag, str(v))]
    return shlex.join(words)


def cmd_nginx_conf(args: argparse.Namespace) -> int:
    text = render(from_args(args), args.snippet or "")
    if args.output and args.output != "-":
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `edge nginx-conf` on the `edge` CLI."""
    p = sub.add_parser(
        "nginx-conf", help="render the nginx config: edge in front, OMERO.web as the fallthrough",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill("Render a commented nginx config that sends the cacheable OMERO URLs (the edge's "
                                  "route table) to the edges and everything else to OMERO.web, and re-sends a "
                                  "request to OMERO.web (or omero-ms-image-region) when no edge answers or one "
                                  "answers 502/503/504.", 90),
        epilog=textwrap.dedent("""\
            outputs:
              default           a conf.d file (http context): upstreams, maps and one server block
              --prefix DIR      a complete nginx.conf, everything under DIR, nginx in the foreground:
                                  nginx -p DIR -c DIR/nginx.conf -e stderr
              --snippet http    only the upstreams and maps, for /etc/nginx/conf.d/
              --snippet server  only the edge locations, to `include` in an existing OMERO.web server
                                block (before its own regex locations)
            See docs/deploy.md for the deployment shapes."""))
    p.add_argument("--edge", action="append", metavar="HOST:PORT",
                   help="an edge (`edge serve --bind`); repeat for several, load-balanced (default 127.0.0.1:8080)")
    p.add_argument("--omero-web", default=Options.omero_web, metavar="HOST:PORT",
                   help="OMERO.web (gunicorn): gets everything else and the fallthrough (default %(default)s)")
    p.add_argument("--ms", metavar="HOST:PORT",
                   help="omero-ms-image-region: its routes fall through to it, and its uncached routes go to it")
    p.add_argument("--listen", action="append", metavar="ADDR",
                   help="what nginx listens on: PORT or HOST:PORT, repeatable (default 443 with TLS, else 80)")
    p.add_argument("--server-name", default="_", help="server_name of the server block (default: any)")
    p.add_argument("--tls-cert", metavar="FILE", help="TLS certificate (PEM chain): HTTPS with HTTP/2")
    p.add_argument("--tls-key", metavar="FILE", help="TLS private key for --tls-cert")
    p.add_argument("--static-root", metavar="DIR",
                   help="OMERO.web's collected static files, served by nginx at /static/ "
                        "(default: OMERO.web serves them)")
    p.add_argument("--microcache", action="store_true",
                   help="a small nginx cache in front of the edges for public answers only (off by default: "
                        "purges do not reach it, see --microcache-valid)")
    p.add_argument("--microcache-dir", metavar="DIR",
                   help="its directory (default PREFIX/microcache, or /var/cache/nginx/omero-edge)")
    p.add_argument("--microcache-size", default="1g", metavar="SIZE", help="its disk budget (default %(default)s)")
    p.add_argument("--microcache-valid", type=int, default=10, metavar="SECONDS",
                   help="how long nginx answers alone, the longest a purged object stays visible (default 10)")
    p.add_argument("--session-cookie", default="sessionid", metavar="NAME",
                   help="OMERO.web's session cookie: requests with it bypass the microcache (IDR: sessionid_idr)")
    p.add_argument("--balance", choices=sorted(BALANCE), default="uri",
                   help="how several edges share requests: uri (same URL → same edge, the default; best "
                        "without Redis), least-conn or round-robin (with a shared Redis tier)")
    p.add_argument("--edge-timeout", type=int, default=60, metavar="SECONDS",
                   help="how long an edge may take to answer before the request falls through (default 60: "
                        "above the edge's own upstream limits, so a slow backend is not asked twice)")
    p.add_argument("--prefix", metavar="DIR", help="render a standalone nginx.conf with pid, logs, temp files "
                                                   "and the microcache under DIR (for tests, containers, systemd)")
    p.add_argument("--user", help="with --prefix: the user nginx's workers run as (`user` directive)")
    p.add_argument("--snippet", nargs="?", const="server", choices=["server", "http"],
                   help="render only part of the config for an existing nginx (default part: server)")
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    p.set_defaults(func=cmd_nginx_conf, parser=p)
