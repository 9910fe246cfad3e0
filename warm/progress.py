"""Progress: a live rich bar with rate and ETA on a terminal, one line every few seconds otherwise
(Slurm logs, CI, `nohup`), and the same counters for the final summary.

The total is an estimate while enumeration is still running: the items planned so far plus, for the
objects not yet expanded, the average number of items per expanded object. It becomes exact when
the last object is planned.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from .model import FAIL, OK, SKIP


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


@dataclass
class Counters:
    states: dict[str, int] = field(default_factory=lambda: {OK: 0, SKIP: 0, FAIL: 0})
    fetched: int = 0  # images/URLs the backend produced in this session
    earlier: int = 0  # items a resumed run found finished in the journal
    planned: int = 0  # items planned so far (including `earlier`)
    objects_total: int | None = None  # objects to expand, once known
    objects_planned: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def done(self) -> int:
        return sum(self.states.values())

    def total(self) -> tuple[int, bool]:
        """(estimated total items, exact?)"""
        if self.objects_total is None or self.objects_planned >= self.objects_total:
            return self.planned, self.objects_total is not None
        per_object = self.planned / self.objects_planned if self.objects_planned else 0
        return self.planned + round(per_object * (self.objects_total - self.objects_planned)), False

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def eta(self) -> float | None:
        total, _ = self.total()
        rate = self.rate()
        return (total - self.earlier - self.done) / rate if rate > 0 else None

    def summary(self) -> str:
        s = self.states
        text = f"ok {s[OK]}  skip {s[SKIP]}  fail {s[FAIL]}"
        if self.earlier:
            text += f"  (earlier {self.earlier})"
        return text + f"  | {self.rate():.1f} items/s, {self.fetched / max(time.monotonic() - self.started, 1e-9):.0f} " \
                      f"fetched/s"


class Reporter:
    """Shows `Counters`; `mode` is auto (bar on a terminal, lines otherwise), bar, line or none."""

    def __init__(self, counters: Counters, mode: str = "auto", interval: float = 10.0) -> None:
        self.c = counters
        self.mode = ("bar" if sys.stderr.isatty() else "line") if mode == "auto" else mode
        self.interval = interval
        self._last_line = time.monotonic()
        self._bar: Progress | None = None
        self._task = None

    def __enter__(self) -> Reporter:
        if self.mode == "bar":
            self._bar = Progress(TextColumn("[bold]warm"), BarColumn(), TaskProgressColumn(),
                                 TextColumn("{task.completed}/{task.fields[total_text]}"),
                                 TextColumn("{task.fields[rate]}"), TextColumn("ETA {task.fields[eta]}"),
                                 TimeElapsedColumn(), TextColumn("{task.fields[states]}"),
                                 console=Console(stderr=True), refresh_per_second=4)
            self._bar.start()
            self._task = self._bar.add_task("warm", total=None, total_text="?", rate="", eta="?", states="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self.tick(force=True)
            self._bar.stop()

    def tick(self, force: bool = False) -> None:
        """Called after every item; cheap unless a refresh is due."""
        now = time.monotonic()
        if self.mode == "bar" and self._bar is not None:
            if force or now - self._last_line >= 0.25:
                self._last_line = now
                total, exact = self.c.total()
                eta = self.c.eta()
                s = self.c.states
                self._bar.update(self._task, completed=self.c.done + self.c.earlier, total=total or None,
                                 total_text=f"{total}" if exact else f"~{total}", rate=f"{self.c.rate():.1f}/s",
                                 eta=_duration(eta) if eta is not None else "?",
                                 states=f"ok {s[OK]} skip {s[SKIP]} fail {s[FAIL]}")
        elif self.mode == "line" and (force or now - self._last_line >= self.interval):
            self._last_line = now
            print(self.line(), file=sys.stderr, flush=True)

    def line(self) -> str:
        total, exact = self.c.total()
        done = self.c.done + self.c.earlier
        pct = f" ({100 * done / total:.0f}%)" if total else ""
        eta = self.c.eta()
        return (f"warm: {done}/{'' if exact else '~'}{total}{pct} {self.c.summary()}, elapsed "
                f"{_duration(time.monotonic() - self.c.started)}, ETA {_duration(eta) if eta is not None else '?'}")
