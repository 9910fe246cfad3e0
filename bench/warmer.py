"""The product's warmer (`warm …`) run through an edge's warm mode, as the warm targets are filled.

It goes through the edge's plain server (the warmer has no way to trust the run's private CA);
the TLS server shares the disk tier. Bounded by WARM_TIMEOUT, killed after it.
"""
from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

from bench.measure import LoadFailed
from bench.procs import console_script
from bench.targets import WARM_TOKEN, Edge, Stack

WARM_TIMEOUT = 600.0


def run_warm(stack: Stack, edge: Edge, command: list[str], jobs: int | None = None,
             while_running: Callable[[], None] | None = None) -> None:
    """`warm <command…>` through `edge`, `jobs` requests in flight (default: the backend's workers).

    `while_running` is called about every 20 ms until the warmer exits."""
    argv = console_script("warm") + [
        *command, "--edge", edge.url, "--token", WARM_TOKEN, "--jobs", str(jobs or stack.settings.workers),
        "--journal", str(stack.tmp / "warm-journal.sqlite"), "--progress", "none"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        deadline = time.monotonic() + WARM_TIMEOUT
        while proc.poll() is None and time.monotonic() < deadline:
            if while_running is not None:
                while_running()
            time.sleep(0.02)
        if proc.poll() is None:
            proc.kill()
        output = proc.communicate()[0]
    if proc.returncode != 0:
        raise LoadFailed(f"warm {' '.join(command)} failed ({proc.returncode}):\n{output[-3000:]}")
