"""`bench scale`'s planner figure: `warm thumbnails --all --db … --dry-run` over an IDR-sized catalog.

The catalog is OMERO's tables (the names and columns warm/enumerate_db.py reads) in a PostgreSQL of the
run's own, filled with generate_series in IDR's shape: screens of 100 plates of 384 wells × 2 fields hold
96 % of the images, the rest sit in the 100 datasets of one project. The warmer plans every batch without
sending a request; measured: its wall time and peak RSS (the child's ru_maxrss from wait4).
"""
from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from bench.measure import LoadFailed
from bench.postgres import Postgres
from bench.procs import console_script
from bench.targets import Stack

WELLS, FIELDS, PLATES_PER_SCREEN, DATASETS = 384, 2, 100, 100
PLAN_TIMEOUT = 1800.0

SCHEMA = """
CREATE TABLE screen (id bigint PRIMARY KEY, name text NOT NULL, group_id bigint NOT NULL);
CREATE TABLE plate (id bigint PRIMARY KEY, name text NOT NULL, group_id bigint NOT NULL);
CREATE TABLE screenplatelink (parent bigint NOT NULL, child bigint NOT NULL);
CREATE TABLE plateacquisition (id bigint PRIMARY KEY, plate bigint NOT NULL, group_id bigint NOT NULL);
CREATE TABLE well (id bigint PRIMARY KEY, plate bigint NOT NULL, "row" int, "column" int, group_id bigint NOT NULL);
CREATE TABLE image (id bigint PRIMARY KEY, name text NOT NULL, acquisitiondate timestamp, group_id bigint NOT NULL);
CREATE TABLE wellsample (id bigint PRIMARY KEY, well bigint NOT NULL, image bigint NOT NULL, plateacquisition bigint,
                         well_index int NOT NULL, group_id bigint NOT NULL);
CREATE TABLE project (id bigint PRIMARY KEY, name text NOT NULL, group_id bigint NOT NULL);
CREATE TABLE dataset (id bigint PRIMARY KEY, name text NOT NULL, group_id bigint NOT NULL);
CREATE TABLE projectdatasetlink (parent bigint NOT NULL, child bigint NOT NULL);
CREATE TABLE datasetimagelink (parent bigint NOT NULL, child bigint NOT NULL);
"""
_FILL = """
INSERT INTO image SELECT i, 'image ' || i, now(), 3 FROM generate_series(1, %(images)s) i;
INSERT INTO screen SELECT s, 'screen ' || s, 3 FROM generate_series(1, %(screens)s) s;
INSERT INTO plate SELECT p, 'plate ' || p, 3 FROM generate_series(1, %(plates)s) p;
INSERT INTO screenplatelink SELECT (p - 1) / %(per_screen)s + 1, p FROM generate_series(1, %(plates)s) p;
INSERT INTO well SELECT w, (w - 1) / %(wells)s + 1, ((w - 1) %% %(wells)s) / 24, (w - 1) %% 24, 3
  FROM generate_series(1, %(plates)s * %(wells)s) w;
INSERT INTO wellsample SELECT i, (i - 1) / %(fields)s + 1, i, NULL, (i - 1) %% %(fields)s, 3
  FROM generate_series(1, %(in_plates)s) i;
INSERT INTO project VALUES (1, 'project', 3);
INSERT INTO dataset SELECT d, 'dataset ' || d, 3 FROM generate_series(1, %(datasets)s) d;
INSERT INTO projectdatasetlink SELECT 1, d FROM generate_series(1, %(datasets)s) d;
INSERT INTO datasetimagelink SELECT (i - %(in_plates)s - 1) %% %(datasets)s + 1, i
  FROM generate_series(%(in_plates)s + 1, %(images)s) i;
CREATE INDEX ON screenplatelink (parent); CREATE INDEX ON well (plate); CREATE INDEX ON wellsample (well);
CREATE INDEX ON wellsample (image); CREATE INDEX ON projectdatasetlink (parent); CREATE INDEX ON datasetimagelink (parent);
CREATE INDEX ON datasetimagelink (child); CREATE INDEX ON plateacquisition (plate);
ANALYZE;
"""
# Parameters as bigint: psycopg sends small ints as smallint, and 3,646 plates × 384 wells overflows one.
FILL = re.sub(r"%\((\w+)\)s", r"%(\1)s::bigint", _FILL)


def shape(images: int) -> dict[str, int]:
    per_plate = WELLS * FIELDS
    plates = max(1, round(images * 0.96 / per_plate))
    in_plates = min(images, plates * per_plate)
    return {"images": images, "plates": plates, "in_plates": in_plates, "screens": -(-plates // PLATES_PER_SCREEN),
            "per_screen": PLATES_PER_SCREEN, "wells": WELLS, "fields": FIELDS, "datasets": DATASETS}


def plan(dsn: str, log_dir: Path) -> dict:
    """Run the warmer's dry run: its wall time, peak RSS (wait4's, this child's alone) and the items it planned."""
    argv = console_script("warm") + ["thumbnails", "--all", "--db", dsn, "--dry-run"]
    out_path = log_dir / "warm-plan.out"
    t0 = time.perf_counter()
    with open(out_path, "wb") as out:
        child = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = t0 + PLAN_TIMEOUT
    pid, status, usage = os.wait4(child.pid, os.WNOHANG)
    while pid == 0:
        if time.perf_counter() > deadline:
            child.kill()
            child.wait()
            raise LoadFailed(f"warm --dry-run did not finish within {PLAN_TIMEOUT:.0f}s (stopped)")
        time.sleep(0.05)
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
    seconds = time.perf_counter() - t0
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
    text = out_path.read_text(errors="replace")
    total = re.search(r"^total\s+(\d+)", text, re.M)
    if child.returncode != 0 or total is None:
        raise LoadFailed(f"warm --dry-run failed ({child.returncode}): {' '.join(argv)}\n{text[-1500:]}")
    return {"plan_s": round(seconds, 2), "items": int(total.group(1)), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "plan_cpu_s": round(usage.ru_utime + usage.ru_stime, 2)}


def run_plan(stack: Stack, images: int, log: Callable[[str], None]) -> dict:
    """Catalog of `images` in a fresh PostgreSQL, then the planner's run over it."""
    sizes = shape(images)
    with Postgres(stack.children) as pg:
        t0 = time.perf_counter()
        with psycopg.connect(pg.dsn, autocommit=True) as db:
            db.execute(SCHEMA)
            for statement in filter(str.strip, FILL.split(";")):  # one statement per execute with parameters
                db.execute(statement, sizes)
        log(f"plan: catalog of {images:,} images ({sizes['plates']:,} plates) in {time.perf_counter() - t0:.0f} s")
        figures = plan(pg.dsn, stack.tmp)
    row = {"tier": "plan", "what": "warm thumbnails --all --dry-run", **sizes, **figures,
           "us_per_image": round(figures["plan_s"] / images * 1e6, 1)}
    log(f"plan: {figures['items']:,} batches over {images:,} images in {figures['plan_s']} s, "
        f"peak RSS {figures['peak_rss_mib']} MiB")
    return row
