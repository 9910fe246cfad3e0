"""Reports: a header that says where the figures come from, a rich table, JSON, and a plot.

Absolute times depend on the machine (and on the client sharing its cores), so every report
states the machine, the versions and the backend model, and puts ratios next to the times:
ratios are what carries to another machine.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.measure import Record
from bench.procs import which
from bench.targets import RunSettings

NOTE = ("Absolute times are specific to this machine (the client shares its cores with every server); "
        "ratios between targets measured in the same run are the comparable figures.")
COLD = ("cold = the target is restarted on a new, empty cache directory (memory tier included) before every "
        "load, outside the timed window; warm = filled once before the timed loads.")
CONNECTIONS = ("Every load is a first visit: it opens its connections (TCP, TLS) inside the timed window; the clock "
               "stops at the last byte of the last response. HTTP/1.1 uses up to 6 connections, HTTP/2 one.")
RTT = ("RTT is added by a user-space TCP proxy delaying every chunk by RTT/2 each way plus one RTT for the TCP "
       "handshake (no bandwidth limit, no slow start).")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


def _tool_version(name: str, *args: str) -> str:
    binary = which(name)
    if binary is None:
        return "not installed"
    done = subprocess.run([binary, *args], capture_output=True, text=True, timeout=10)
    out = (done.stdout + done.stderr).strip().splitlines()
    return out[0].split()[-1] if out else "?"          # "nginx version: nginx/1.22.1" → "nginx/1.22.1"


def machine() -> dict:
    model = ""
    try:
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "")
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu": model, "kernel": platform.release(), "python": platform.python_version(),
            "versions": {"omero-edge": _version("omero-edge"), "granian": _version("granian"),
                         "starlette": _version("starlette"), "nginx": _tool_version("nginx", "-v"),
                         "h2load": _tool_version("h2load", "--version")}}


def backend_model(settings: RunSettings) -> dict:
    from bench.sim.capacity import COSTS_MS

    return {"what": "bench sim: simulated OMERO.web + omero-ms-image-region (granian, one process)",
            "workers": settings.workers, "speed": settings.speed, "scale": settings.scale,
            "costs_ms": {k: v * settings.speed for k, v in COSTS_MS.items()},
            "model": "at most `workers` requests do backend work at once, each held for its cost × speed; "
                     "others queue, like a WSGI worker pool"}


@dataclass
class Report:
    """One scenario's output: `results` go to JSON as they are, `table` to the terminal."""
    scenario: str
    settings: RunSettings
    params: dict
    results: list[dict]
    table: Table | None = None
    notes: list[str] = field(default_factory=list)
    plot: Callable[[str], None] | None = None

    def to_json(self) -> dict:
        return {"scenario": self.scenario, "machine": machine(), "backend": backend_model(self.settings),
                "settings": {**vars(self.settings), **self.params}, "notes": [NOTE, *self.notes],
                "results": self.results}


def load_report(scenario: str, settings: RunSettings, params: dict, records: list[Record], notes: list[str],
                table: Callable[[list[Record]], Table] | None = None) -> Report:
    """The report of a load scenario (plate-384, tiles, browse): ratios added, a table and a plot of the records."""
    add_ratios(records)
    return Report(scenario, settings, params, [r.to_json() for r in records], (table or records_table)(records),
                  [COLD, CONNECTIONS, RTT, *notes], lambda path: plot(path, records, scenario))


def add_ratios(records: list[Record]) -> None:
    """speedup_vs_direct (direct ÷ this) on every record; ratio_vs_nginx (this ÷ nginx in the same state) on edges.

    The backend speaks no TLS, so h2-tls cells compare with direct over h2c."""
    index = {(r.target, r.mode, r.transport, r.rtt_ms): r for r in records}
    for r in records:
        direct = index.get(("direct", r.mode, "h2" if r.transport == "h2-tls" else r.transport, r.rtt_ms))
        if direct is not None:
            r.extra["speedup_vs_direct"] = round(direct.median_s / r.median_s, 2)
            mine, theirs = r.extra.get("steps_ms", {}), direct.extra.get("steps_ms", {})
            if mine and theirs:
                r.extra["steps_speedup_vs_direct"] = {name: round(theirs[name] / ms, 2) for name, ms in mine.items()
                                                      if name in theirs and ms > 0}
        cold = index.get(("edge-cold", r.mode, r.transport, r.rtt_ms)) if r.target == "edge-prefetch" else None
        if cold is not None:
            r.extra["speedup_vs_edge_cold"] = round(cold.median_s / r.median_s, 2)
        if r.target.startswith("edge-"):
            nginx = index.get(("nginx-" + r.target.split("-", 1)[1], r.mode, r.transport, r.rtt_ms))
            if nginx is not None:
                r.extra["ratio_vs_nginx"] = round(r.median_s / nginx.median_s, 2)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f}"


def print_report(report: Report, console: Console | None = None) -> None:
    console = console or Console(width=max(160, shutil.get_terminal_size().columns))
    m, b = machine(), backend_model(report.settings)
    console.print(f"[bold]{report.scenario}[/bold] on {m['cores']} cores ({m['cpu'] or 'unknown CPU'}), "
                  f"kernel {m['kernel']}, Python {m['python']}; " +
                  ", ".join(f"{k} {v}" for k, v in m["versions"].items()))
    console.print(f"backend: {b['what']}, {b['workers']} workers, speed {b['speed']:g} "
                  f"(thumbnail {b['costs_ms']['thumbnail_cached']:g} ms, batch {b['costs_ms']['batch']:g} + "
                  f"{b['costs_ms']['batch_per_id']:g}/id ms, grid {b['costs_ms']['grid']:g} ms, "
                  f"tile {b['costs_ms']['region']:g} ms)")
    for note in (NOTE, *report.notes):
        console.print(f"[dim]{note}[/dim]")
    if report.table is not None:
        console.print(report.table)


def records_table(records: list[Record]) -> Table:
    """One row per target × mode × transport; the RTTs side by side."""
    rtts = sorted({r.rtt_ms for r in records})
    table = Table(show_lines=False, header_style="bold")
    for name in ("target", "mode", "transport", "req", "KB", "renders"):
        table.add_column(name, justify="left" if name in ("target", "mode", "transport") else "right")
    for rtt in rtts:
        table.add_column(f"{rtt:g} ms RTT\nmedian (p95, min) ms", justify="right")
        table.add_column(f"{rtt:g} ms\n× direct", justify="right")
        table.add_column(f"{rtt:g} ms\n÷ nginx", justify="right")
    rows: dict[tuple[str, str, str], dict[float, Record]] = {}
    for r in records:
        rows.setdefault((r.mode, r.transport, r.target), {})[r.rtt_ms] = r
    for (mode, transport, target), by_rtt in rows.items():
        first = next(iter(by_rtt.values()))
        cells = [target, mode, transport, str(first.requests), f"{first.bytes / 1024:,.0f}",
                 "/".join(str(by_rtt[t].backend_renders) for t in rtts if t in by_rtt)]
        for rtt in rtts:
            r = by_rtt.get(rtt)
            if r is None:
                cells += ["-", "-", "-"]
                continue
            cells += [f"{_ms(r.median_s)} ({_ms(r.p95_s)}, {_ms(r.min_s)})",
                      _ratio(r.extra.get("speedup_vs_direct"), "×"), _ratio(r.extra.get("ratio_vs_nginx"), "")]
        table.add_row(*cells)
    return table


def steps_table(records: list[Record]) -> Table:
    """One row per target × transport × RTT: each step's median ms (× direct), the total, backend requests."""
    steps = list(dict.fromkeys(name for r in records for name in r.extra.get("steps_ms", {})))
    table = Table(show_lines=False, header_style="bold")
    for name in ("target", "transport", "RTT"):
        table.add_column(name)
    for name in (*steps, "total"):
        table.add_column(f"{name}\nms (× direct)", justify="right")
    table.add_column("backend req\n(cacheable)", justify="right")
    for r in sorted(records, key=lambda r: (r.rtt_ms, r.transport)):
        ms, ratios = r.extra.get("steps_ms", {}), r.extra.get("steps_speedup_vs_direct", {})
        cells = [f"{ms[name]:,.1f} ({_ratio(ratios.get(name), '×')})" if name in ms else "-" for name in steps]
        cacheable = r.extra.get("backend_cacheable")
        table.add_row(r.target, r.transport, f"{r.rtt_ms:g}", *cells,
                      f"{_ms(r.median_s)} ({_ratio(r.extra.get('speedup_vs_direct'), '×')})",
                      f"{r.backend_requests}" + ("" if cacheable is None else f" ({cacheable})"))
    return table


def _ratio(value: float | None, suffix: str) -> str:
    return "-" if value is None else f"{value:.2f}{suffix}"


def write_json(path: str, doc: dict) -> None:
    Path(path).write_text(json.dumps(doc, indent=2) + "\n")


def plot(path: str, records: Iterable[Record], title: str) -> None:
    """Grouped bars per RTT: one group per mode/transport, one bar per target (log scale, median with p95 whisker)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = list(records)
    rtts = sorted({r.rtt_ms for r in records})
    targets = list(dict.fromkeys(r.target for r in records))
    groups = list(dict.fromkeys((r.mode, r.transport) for r in records))
    fig, axes = plt.subplots(1, len(rtts), figsize=(max(6.0, 1.1 * len(groups) * len(rtts) + 3), 4.5), squeeze=False)
    width = 0.8 / max(1, len(targets))
    for ax, rtt in zip(axes[0], rtts):
        for k, target in enumerate(targets):
            xs, ys, errs = [], [], []
            for g, (mode, transport) in enumerate(groups):
                r = next((r for r in records if (r.target, r.mode, r.transport, r.rtt_ms) ==
                          (target, mode, transport, rtt)), None)
                if r is not None:
                    xs.append(g + (k - (len(targets) - 1) / 2) * width)
                    ys.append(r.median_s * 1000)
                    errs.append((r.p95_s - r.median_s) * 1000)
            ax.bar(xs, ys, width, yerr=[[0] * len(errs), errs], label=target)
        ax.set_yscale("log")
        ax.set_xticks(range(len(groups)), [f"{m}\n{t}" for m, t in groups], fontsize=8)
        ax.set_ylabel("time to last byte, ms (median, p95 whisker)")
        ax.set_title(f"{rtt:g} ms RTT")
        ax.grid(axis="y", which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{title} (absolute times are machine-specific; compare ratios)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
