"""Headless Chromium driven over the DevTools protocol (CDP, its own websocket): open a page, run
JavaScript in it, wait for what it shows, take a screenshot. The same Chromium and flags as the
bench's browser runs (bench/browser.py); started and stopped by PID with the test's other processes."""
from __future__ import annotations

import base64
import itertools
import json
from contextlib import ExitStack
from pathlib import Path

import httpx
from websockets.sync.client import connect

from bench.browser import CHROMIUM_FLAGS, chromium
from tests.helpers.launch import Launcher
from tests.helpers.procs import free_port, wait_until

SCREENS = Path("/tmp/omero-edge-screens")  # a stable copy of every screenshot, for reports


class Page:
    """One tab of a fresh headless Chromium (fresh profile in `profile`)."""

    def __init__(self, launcher: Launcher, profile: Path, width: int = 1400, height: int = 1000) -> None:
        binary = chromium()
        assert binary, "Chromium not installed (make system-deps)"
        port = free_port()
        argv = [binary, *CHROMIUM_FLAGS, f"--remote-debugging-port={port}", f"--user-data-dir={profile}",
                f"--window-size={width},{height}", "about:blank"]
        launcher.start(argv, name="chromium", ports=[port], health=f"http://127.0.0.1:{port}/json/version")
        tab = next(t for t in httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json() if t["type"] == "page")
        self._closing = ExitStack()
        self.ws = self._closing.enter_context(connect(tab["webSocketDebuggerUrl"], max_size=None, open_timeout=10))
        self._ids = itertools.count(1)

    def call(self, method: str, **params) -> dict:
        """One CDP command's result (events arriving meanwhile are not asked for: dropped)."""
        ident = next(self._ids)
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=30))
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def open(self, url: str, timeout: float = 20.0) -> None:
        """Navigates, and returns once the new document has loaded (scripts run, `load` fired)."""
        self.call("Page.navigate", url=url)

        def loaded() -> bool:
            try:
                return self.js(f"location.href === {json.dumps(url)} && document.readyState === 'complete'")
            except RuntimeError:  # the old document's context went away mid-call
                return False
        wait_until(loaded, timeout, 0.05, f"{url} did not load")

    def js(self, expression: str):
        """The value of a JavaScript expression in the page (promises awaited), JSON-like."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails'].get('exception', result['exceptionDetails'])}")
        return result["result"].get("value")

    def wait(self, expression: str, timeout: float = 20.0):
        """The first truthy value of `expression`, polled."""
        return wait_until(lambda: self.js(expression), timeout, 0.1, f"the page never showed: {expression}")

    def text(self, selector: str) -> str:
        return self.js(f"(document.querySelector({json.dumps(selector)}) || {{}}).textContent || ''")

    def screenshot(self, path: Path) -> Path:
        """A PNG of the page at `path`, copied to SCREENS under the same name; printed for the test's output."""
        png = base64.b64decode(self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"])
        path.write_bytes(png)
        SCREENS.mkdir(parents=True, exist_ok=True)
        (SCREENS / path.name).write_bytes(png)
        print(f"screenshot: {path} (copy: {SCREENS / path.name})")
        return path

    def close(self) -> None:
        self._closing.close()
