"""The journal: one SQLite file holding every run, its items (OK / Skip / Fail) and finished objects.

Why SQLite: an interrupted run must resume without redoing finished work, and `warm status` must
answer from any shell, so the record is durable, indexed and readable while a run writes it (WAL).
Rows are written in batched transactions (every second or 500 rows) and at exit, so the file is
always a consistent prefix of the run: an item is recorded only once its answer arrived, never while
in flight. An object (a plate, a dataset …) is recorded when all its items are, so a resumed run does
not even re-list the wells of a finished plate.
"""
from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from .model import FAIL, OK, SKIP, Item, Outcome

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  id TEXT PRIMARY KEY,      -- e.g. 20250101-120000-1a2b
  argv TEXT NOT NULL,       -- JSON list: the command line, secrets removed (used by --resume)
  shard TEXT NOT NULL,      -- K/N
  state TEXT NOT NULL,      -- running | done | interrupted | failed
  started REAL NOT NULL,    -- Unix seconds
  finished REAL,            -- Unix seconds of the last stop
  active REAL NOT NULL DEFAULT 0  -- seconds spent running, summed over resumes
);
CREATE TABLE IF NOT EXISTS items (
  run TEXT NOT NULL,
  url TEXT NOT NULL,        -- path?query as requested: the item's identity
  kind TEXT NOT NULL,       -- api | grid | thumb | imgdata | tile | well | tree | center | details | annots | wellpanel | imgpanel | imgtab
  object TEXT NOT NULL,     -- plate:51, dataset:12 … (the unit of --shard)
  state TEXT NOT NULL,      -- ok | skip | fail
  status INTEGER NOT NULL,  -- HTTP status of the answer (0: none)
  reason TEXT NOT NULL,     -- why it failed (empty otherwise)
  attempts INTEGER NOT NULL,
  bytes INTEGER NOT NULL,
  ms REAL NOT NULL,         -- time of the last attempt
  at REAL NOT NULL,         -- Unix seconds when recorded
  PRIMARY KEY (run, url)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS items_object ON items (run, object, state);
CREATE TABLE IF NOT EXISTS objects (
  run TEXT NOT NULL,
  object TEXT NOT NULL,
  PRIMARY KEY (run, object)
) WITHOUT ROWID;
"""

_SECRET_FLAGS = ("--token",)


def default_path() -> Path:
    """~/.cache/omero-edge/warm/journal.sqlite, or ./.warm/journal.sqlite where home is not writable."""
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "omero-edge" / "warm"
    try:
        home.mkdir(parents=True, exist_ok=True)
        if os.access(home, os.W_OK):
            return home / "journal.sqlite"
    except OSError:
        pass
    return Path(".warm") / "journal.sqlite"


def scrub(argv: list[str]) -> list[str]:
    """The command line without secrets (the token) and without --resume, as stored for a resume."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in (*_SECRET_FLAGS, "--resume"):
            skip = "=" not in arg
            continue
        out.append(arg)
    return out


@dataclass
class RunInfo:
    id: str
    argv: list[str]
    shard: str
    state: str
    started: float
    finished: float | None
    active: float


class Journal:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self.run = ""
        self._rows: list[tuple] = []
        self._objects: list[tuple] = []
        self._last_flush = time.monotonic()
        self._segment_start = 0.0

    # --- runs ---------------------------------------------------------------------------------------
    def start(self, argv: list[str], shard: str, resume: str | None = None) -> RunInfo:
        """A new run, or the run `resume` ("last" = the newest) reopened."""
        now = time.time()
        if resume:
            info = self.find(resume)
            self.db.execute("UPDATE runs SET state='running' WHERE id=?", (info.id,))
        else:
            run_id = time.strftime("%Y%m%d-%H%M%S", time.localtime(now)) + "-" + secrets.token_hex(2)
            self.db.execute("INSERT INTO runs (id, argv, shard, state, started) VALUES (?,?,?,?,?)",
                            (run_id, json.dumps(scrub(argv)), shard, "running", now))
            info = self.find(run_id)
        self.run = info.id
        self._segment_start = time.monotonic()
        return info

    def finish(self, state: str) -> None:
        self.flush()
        active = time.monotonic() - self._segment_start
        self.db.execute("UPDATE runs SET state=?, finished=?, active=active+? WHERE id=?",
                        (state, time.time(), active, self.run))

    def find(self, run: str | None) -> RunInfo:
        """A run by id or unique id prefix; None or "last" = the newest. Raises KeyError."""
        if not run or run == "last":
            row = self.db.execute("SELECT * FROM runs ORDER BY started DESC LIMIT 1").fetchone()
        else:
            rows = self.db.execute("SELECT * FROM runs WHERE id = ? OR id LIKE ? ORDER BY id",
                                   (run, run + "%")).fetchall()
            exact = [r for r in rows if r[0] == run]
            row = exact[0] if exact else rows[0] if len(rows) == 1 else None
        if row is None:
            raise KeyError(f"no run {run!r} in {self.path}" if run and run != "last" else f"no runs in {self.path}")
        return RunInfo(row[0], json.loads(row[1]), row[2], row[3], row[4], row[5], row[6])

    # --- items --------------------------------------------------------------------------------------
    def state(self, url: str) -> str | None:
        """OK, SKIP or FAIL when this run recorded the item already, else None."""
        row = self.db.execute("SELECT state FROM items WHERE run=? AND url=?", (self.run, url)).fetchone()
        return row[0] if row else None

    def object_done(self, name: str) -> bool:
        return self.db.execute("SELECT 1 FROM objects WHERE run=? AND object=?",
                               (self.run, name)).fetchone() is not None

    def has_failures(self, name: str) -> bool:
        return self.db.execute("SELECT 1 FROM items WHERE run=? AND object=? AND state=? LIMIT 1",
                               (self.run, name, FAIL)).fetchone() is not None

    def clear_listing_failures(self, name: str) -> None:
        """An object listed fine at last: its earlier listing failures (URLs no plan holds) are history."""
        self.flush()
        self.db.execute("DELETE FROM items WHERE run=? AND object=? AND state=? AND reason LIKE 'listing:%'",
                        (self.run, name, FAIL))

    def record(self, item: Item, outcome: Outcome, attempts: int, ms: float) -> None:
        self._rows.append((self.run, item.url, item.kind, item.obj, outcome.state, outcome.status, outcome.reason,
                           attempts, outcome.bytes, ms, time.time()))
        self._maybe_flush()

    def record_object(self, name: str) -> None:
        self._objects.append((self.run, name))
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        if len(self._rows) >= 500 or time.monotonic() - self._last_flush > 1.0:
            self.flush()

    def flush(self) -> None:
        """Write what is buffered in one transaction: items first, then the objects they complete."""
        self._last_flush = time.monotonic()
        if not self._rows and not self._objects:
            return
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR REPLACE INTO items VALUES (?,?,?,?,?,?,?,?,?,?,?)", self._rows)
            self.db.executemany("INSERT OR IGNORE INTO objects VALUES (?,?)", self._objects)
        self._rows.clear()
        self._objects.clear()

    # --- status -------------------------------------------------------------------------------------
    def totals(self, run: str) -> dict[str, dict[str, int]]:
        """{kind: {ok, skip, fail}} for a run."""
        out: dict[str, dict[str, int]] = {}
        for kind, state, n in self.db.execute(
                "SELECT kind, state, count(*) FROM items WHERE run=? GROUP BY kind, state", (run,)):
            out.setdefault(kind, {OK: 0, SKIP: 0, FAIL: 0})[state] = n
        return out

    def failures(self, run: str, limit: int) -> list[tuple[str, str, int, str]]:
        """(object, url, status, reason) of failed items, in the order they were recorded."""
        return self.db.execute("SELECT object, url, status, reason FROM items WHERE run=? AND state=? "
                               "ORDER BY at LIMIT ?", (run, FAIL, limit)).fetchall()

    def close(self) -> None:
        self.flush()
        self.db.close()
