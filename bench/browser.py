"""`bench plate-384 --browser`: the webclient plate load done by headless Chromium.

The bench serves a small page (bench/static/plate.html) and the jQuery of the xstatic-jquery
package on loopback; the page loads the plate grid and its get_thumbnails batches from the target
over HTTP/2 with TLS as OMERO.web's plate view does (JSONP through jQuery: `callback=jQuery…_…`
and `_=…` on every request) and POSTs its own Performance API timing back; the bench checks the
URLs the browser sent have that shape. Each load is a fresh Chromium with a fresh profile, so every load
is a first visit with a new connection, as in the CLI modes. The run's certificate is trusted
through its public-key hash (`--ignore-certificate-errors-spki-list`), and the page may read
the target's answers although it sits on another origin (`--disable-web-security`; the targets
send no CORS headers, and the profile is thrown away). The backend speaks no TLS, so `direct`
has no browser row.
"""
from __future__ import annotations

import json
import queue
import re
import statistics
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlencode

from bench.clients import Transport
from bench.measure import LoadFailed, Record, percentile, running
from bench.procs import HOST, which
from bench.scenarios.plate import batch_size, find_plate, warm_plate
from bench.sim.app import JQUERY_URL, jquery_file
from bench.targets import Edge, Stack, Target

PAGE = Path(__file__).parent / "static" / "plate.html"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
                  "--no-first-run", "--disable-component-update", "--disable-sync", "--disable-web-security"]
NOTES = ["browser: headless Chromium, a fresh profile per load; the page loads the grid and the get_thumbnails "
         "batches with jQuery's JSONP as ome.plateview.js does; the time is the page's own performance.now() from "
         "the grid request to the last batch's callback (bench/static/plate.html), webclient mode, HTTP/2 over TLS."]
# What jQuery's JSONP makes of ome.plateview.js's URLs (clients.md §2)
JSONP_TAIL = r"callback=jQuery[0-9]+_[0-9]+&_=[0-9]+"
GRID_URL = re.compile(r"/webgateway/plate/[0-9]+/[0-9]+/\?" + JSONP_TAIL)
BATCH_URL = re.compile(r"/webgateway/get_thumbnails/\?id=[0-9]+(?:&id=[0-9]+)*&" + JSONP_TAIL)


def chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        if found := which(name):
            return found
    return None


class PageServer:
    """Serves the page and receives its result; one result at a time."""

    def __init__(self) -> None:
        files = {"/plate.html": (PAGE.read_bytes(), "text/html; charset=utf-8"),
                 JQUERY_URL: (jquery_file().read_bytes(), "application/javascript")}
        results: queue.Queue[dict] = queue.Queue()
        self.results = results

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                found = files.get(self.path.partition("?")[0])
                if found is None:
                    self._answer(404, b"not found", "text/plain")
                else:
                    self._answer(200, *found)

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                results.put(json.loads(body or b"{}"))
                self._answer(204, b"", "text/plain")

            def _answer(self, status: int, body: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class BrowserRun:
    def __init__(self, stack: Stack, load_timeout: float, log: Callable[[str], None]) -> None:
        binary = chromium()
        if binary is None:
            raise LoadFailed("--browser needs Chromium: apt-get install chromium (not part of `make system-deps`)")
        self.binary, self.stack, self.load_timeout, self.log = binary, stack, load_timeout, log
        self.plate = find_plate(stack.sim.info)
        self.batch = batch_size(stack.sim.info)
        self.page = PageServer()

    def close(self) -> None:
        self.page.close()

    def once(self, target: Target) -> dict:
        query = urlencode({"origin": f"https://{HOST}:{target.address(Transport.H2_TLS)}", "plate": self.plate["id"],
                           "field": 0, "batch": self.batch})
        profile = self.stack.fresh_dir("chromium-profile")
        argv = [self.binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                f"--ignore-certificate-errors-spki-list={self.stack.certs.spki}",
                f"http://{HOST}:{self.page.port}/plate.html?{query}"]
        child = self.stack.children.start("chromium", argv)
        try:
            result = self.page.results.get(timeout=self.load_timeout)
        except queue.Empty:
            raise LoadFailed(f"{target.name} browser: no result within {self.load_timeout:.0f}s:\n"
                             f"{child.log_tail()}") from None
        finally:
            self.stack.children.stop(child)
        if "error" in result:
            raise LoadFailed(f"{target.name} browser: the page failed: {result['error']}")
        self.check_urls(target, result)
        return result

    def check_urls(self, target: Target, result: dict) -> None:
        """The browser sent one JSONP grid request and one JSONP request per batch, as jQuery does."""
        paths = [url.partition(f"{HOST}:{target.address(Transport.H2_TLS)}")[2] for url in result["urls"]]
        grids = [p for p in paths if GRID_URL.fullmatch(p)]
        batches = [p for p in paths if BATCH_URL.fullmatch(p)]
        wanted = -(-result["wells"] // self.batch)
        if len(grids) != 1 or len(batches) != wanted or len(paths) != 1 + wanted:
            raise LoadFailed(f"{target.name} browser: expected 1 JSONP grid and {wanted} JSONP batches, got "
                             f"{paths[:3]}… ({len(paths)} requests)")

    def cell(self, target: Target, rtt_ms: float, repeat: int) -> Record:
        if target.warm and isinstance(target, Edge):
            warm_plate(self.stack, target, self.plate["id"])
        elif target.warm:
            self.once(target)
        loads, renders, backend = [], [], []
        for _ in range(repeat):
            target.before_load(Transport.H2_TLS)
            before = self.stack.sim.totals()
            loads.append(self.once(target))
            after = self.stack.sim.totals()
            renders.append(after["renders"] - before["renders"])
            backend.append(after["requests"] - before["requests"])
        samples = [load["seconds"] for load in loads]
        record = Record(target.name, "webclient", Transport.H2_TLS.value, rtt_ms, repeat, statistics.median(samples),
                        percentile(samples, 95), min(samples), max(samples), [round(s, 6) for s in samples],
                        loads[-1]["requests"], loads[-1]["bytes"], max(renders), max(backend),
                        {"client": "chromium", "protocols": sorted({p for load in loads for p in load["protocols"]}),
                         "wells": loads[-1]["wells"], "thumbnails": min(load["thumbnails"] for load in loads),
                         "batch": self.batch, "jquery": loads[-1]["jquery"],
                         "example_urls": [url.partition(f"{HOST}:{target.address(Transport.H2_TLS)}")[2]
                                          for url in loads[-1]["urls"][:2]],
                         "resource_span_median_s": statistics.median(load["resource_span_s"] for load in loads),
                         "user_agent": loads[-1]["user_agent"]})
        self.log(f"{target.name:10} browser  rtt {rtt_ms:g} ms: median {record.median_s * 1000:.1f} ms "
                 f"({', '.join(record.extra['protocols'])})")
        return record


def run_browser(stack: Stack, targets: list[str], rtts: list[float], repeat: int, load_timeout: float,
                log: Callable[[str], None]) -> list[Record]:
    run = BrowserRun(stack, load_timeout, log)
    records = []
    try:
        for rtt in rtts:
            for name in targets:
                target = stack.target(name)
                if Transport.H2_TLS not in target.transports():
                    continue
                with running(target, rtt):
                    records.append(run.cell(target, rtt, repeat))
    finally:
        run.close()
    return records
