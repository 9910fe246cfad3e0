"""`warm --db`: enumeration straight from an OMERO-shaped PostgreSQL, against a real server.

The test starts its own PostgreSQL (initdb + pg_ctl on a free port in a temp dir; as the `postgres`
user when run as root, since initdb refuses root), creates OMERO's tables with OMERO's names, fills
them with the simulator's public data as the API shows it, and checks that a DB-enumerated run plans
exactly the URLs an API-enumerated run does, so both warm the same keys.
"""
from __future__ import annotations

import re

import httpx
import psycopg
import pytest

from tests.helpers.postgres import Postgres
from tests.helpers.warm import journal_rows, start_edge, warm

pytestmark = pytest.mark.process

SCHEMA = """
CREATE TABLE screen (id bigint PRIMARY KEY, name text NOT NULL, group_id bigint NOT NULL);
CREATE TABLE plate (id bigint PRIMARY KEY, name text NOT NULL, "columns" int, "rows" int, group_id bigint NOT NULL);
CREATE TABLE screenplatelink (id bigserial PRIMARY KEY, parent bigint REFERENCES screen, child bigint REFERENCES plate);
CREATE TABLE plateacquisition (id bigint PRIMARY KEY, plate bigint REFERENCES plate, name text,
                               group_id bigint NOT NULL);
CREATE TABLE well (id bigint PRIMARY KEY, plate bigint REFERENCES plate, "row" int, "column" int,
                   group_id bigint NOT NULL);
CREATE TABLE image (id bigint PRIMARY KEY, name text NOT NULL, acquisitiondate timestamp, group_id bigint NOT NULL);
CREATE TABLE wellsample (id bigint PRIMARY KEY, well bigint REFERENCES well, image bigint REFERENCES image,
                         plateacquisition bigint REFERENCES plateacquisition, well_index int NOT NULL,
                         group_id bigint NOT NULL);
CREATE TABLE project (id bigint PRIMARY KEY, name text NOT NULL, group_id bigint NOT NULL);
CREATE TABLE dataset (id bigint PRIMARY KEY, name text NOT NULL, group_id bigint NOT NULL);
CREATE TABLE projectdatasetlink (id bigserial PRIMARY KEY, parent bigint REFERENCES project,
                                 child bigint REFERENCES dataset);
CREATE TABLE datasetimagelink (id bigserial PRIMARY KEY, parent bigint REFERENCES dataset,
                               child bigint REFERENCES image);
CREATE INDEX ON well (plate); CREATE INDEX ON wellsample (well); CREATE INDEX ON datasetimagelink (parent);
"""
PUBLIC_GROUP = 3


@pytest.fixture(scope="module")
def postgres():
    pg = Postgres()
    yield pg
    pg.stop()


def load_public_catalog(sim_url: str, dsn: str) -> None:
    """OMERO's tables filled with what the public user sees of the simulator (read through API v0)."""
    api = httpx.Client(base_url=sim_url + "/api/v0/m", timeout=30)

    def rows(path: str, **query: str) -> list[dict]:
        return api.get(path, params={"limit": 500, **query}).json()["data"]

    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute(SCHEMA)
        image = "INSERT INTO image VALUES (%s, %s, to_timestamp(%s / 1000.0), 3) ON CONFLICT DO NOTHING"
        for screen in rows("/screens/"):
            db.execute("INSERT INTO screen VALUES (%s, %s, 3)", (screen["@id"], screen["Name"]))
            for plate in rows(f"/screens/{screen['@id']}/plates/"):
                pid = plate["@id"]
                db.execute("INSERT INTO plate VALUES (%s, %s, %s, %s, 3)",
                           (pid, plate["Name"], plate["Columns"], plate["Rows"]))
                db.execute("INSERT INTO screenplatelink (parent, child) VALUES (%s, %s)", (screen["@id"], pid))
                for acq in rows(f"/plates/{pid}/plateacquisitions/"):
                    db.execute("INSERT INTO plateacquisition VALUES (%s, %s, %s, 3)", (acq["@id"], pid, acq["Name"]))
                for well in rows(f"/plates/{pid}/wells/"):
                    db.execute("INSERT INTO well VALUES (%s, %s, %s, %s, 3)",
                               (well["@id"], pid, well["Row"], well["Column"]))
                    for index, ws in enumerate(well.get("WellSamples", [])):
                        img = ws["Image"]
                        db.execute(image, (img["@id"], img["Name"], img["AcquisitionDate"]))
                        db.execute("INSERT INTO wellsample VALUES (%s, %s, %s, %s, %s, 3)",
                                   (ws["@id"], well["@id"], img["@id"], ws.get("PlateAcquisition", {}).get("@id"),
                                    index))
        datasets = [(d, None) for d in rows("/datasets/", orphaned="true")]
        for project in rows("/projects/"):
            db.execute("INSERT INTO project VALUES (%s, %s, 3)", (project["@id"], project["Name"]))
            datasets += [(d, project["@id"]) for d in rows(f"/projects/{project['@id']}/datasets/")]
        for ds, project in datasets:
            db.execute("INSERT INTO dataset VALUES (%s, %s, 3)", (ds["@id"], ds["Name"]))
            if project is not None:
                db.execute("INSERT INTO projectdatasetlink (parent, child) VALUES (%s, %s)", (project, ds["@id"]))
            for img in rows(f"/datasets/{ds['@id']}/images/"):
                db.execute(image, (img["@id"], img["Name"], img["AcquisitionDate"]))
                db.execute("INSERT INTO datasetimagelink (parent, child) VALUES (%s, %s)", (ds["@id"], img["@id"]))
        for img in rows("/images/", orphaned="true"):
            db.execute(image, (img["@id"], img["Name"], img["AcquisitionDate"]))
        # data the public user must not get: another group's screen with a plate and an image
        db.execute("INSERT INTO screen VALUES (900, 'private', 5); INSERT INTO image VALUES (900, 'p', now(), 5)")


def test_db_enumeration_plans_exactly_what_the_api_does(postgres, sim, redis_server, tmp_path):
    edge = start_edge(sim, redis_server, 8)
    try:
        load_public_catalog(sim.url, postgres.dsn)
        by_api, by_db = str(tmp_path / "api.sqlite"), str(tmp_path / "db.sqlite")
        api_run = warm("all", "--edge", edge.url, "--journal", by_api, "--progress", "none")
        assert api_run.returncode == 0, api_run.stderr
        sim.reset()
        db_run = warm("all", "--db", postgres.dsn, "--group", str(PUBLIC_GROUP), "--edge", edge.url,
                      "--journal", by_db, "--progress", "none")
        assert db_run.returncode == 0, db_run.stderr
        api_rows, db_rows = journal_rows(by_api), journal_rows(by_db)
        assert set(db_rows) == set(api_rows)
        assert sim.stats()["total"]["renders"] == len(sim.info["in_progress_images"])  # all else was cached

        recent = warm("all", "--db", postgres.dsn, "--group", str(PUBLIC_GROUP), "--since", "1d", "--edge",
                      edge.url, "--dry-run")
        # nothing acquired in the last day: no image is left, so no thumbnail and no grid; the listing pages
        # and the containers' webclient panels stay
        assert recent.returncode == 0 and "thumb" not in recent.stdout and "grid" not in recent.stdout
        # 6 pages + the gallery's two ?childCount=true listings
        assert re.search(r"^api\s+8$", recent.stdout, re.M), recent.stdout
    finally:
        edge.proc.stop()
