"""`bench sim --db DSN`: the sim's changes written where OMERO writes them, so `edge watch` can be tested.

OMERO records each change of a model object as an `eventlog` row of an `event` (the tables of
OMERO's schema, sql/psql/OMERO5.x/schema.sql: eventlog(id, action, entitytype, entityid, event),
event(id, time, experimenter, experimentergroup)), in the transaction that makes the change. The sim
does the same for its writes (rendering settings, channel names, chgrp, chown, deletes), and first
writes the rows of OMERO's tables the watcher reads to find an image from a RenderingDef, a
LogicalChannel or a link (pixels, renderingdef, channel, datasetimagelink, wellsample, well), with
OMERO's table and column names. Only the columns those lookups use exist here.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.sim.catalog import Image

SCHEMA = """
CREATE TABLE IF NOT EXISTS event (id bigserial PRIMARY KEY, time timestamp NOT NULL, experimenter bigint,
                                  experimentergroup bigint);
CREATE TABLE IF NOT EXISTS eventlog (id bigserial PRIMARY KEY, action varchar(255) NOT NULL,
                                     entityid bigint NOT NULL, entitytype varchar(255) NOT NULL, event bigint NOT NULL);
CREATE TABLE IF NOT EXISTS pixels (id bigint PRIMARY KEY, image bigint NOT NULL);
CREATE TABLE IF NOT EXISTS renderingdef (id bigint PRIMARY KEY, pixels bigint NOT NULL, quantization bigint);
CREATE TABLE IF NOT EXISTS channelbinding (id bigint PRIMARY KEY, renderingdef bigint NOT NULL);
CREATE TABLE IF NOT EXISTS thumbnail (id bigint PRIMARY KEY, pixels bigint NOT NULL);
CREATE TABLE IF NOT EXISTS channel (id bigint PRIMARY KEY, pixels bigint NOT NULL, logicalchannel bigint NOT NULL);
CREATE TABLE IF NOT EXISTS well (id bigint PRIMARY KEY, plate bigint NOT NULL);
CREATE TABLE IF NOT EXISTS wellsample (id bigint PRIMARY KEY, well bigint NOT NULL, image bigint NOT NULL,
                                       plateacquisition bigint);
CREATE TABLE IF NOT EXISTS datasetimagelink (id bigint PRIMARY KEY, parent bigint NOT NULL, child bigint NOT NULL);
CREATE TABLE IF NOT EXISTS projectdatasetlink (id bigint PRIMARY KEY, parent bigint NOT NULL, child bigint NOT NULL);
CREATE TABLE IF NOT EXISTS screenplatelink (id bigint PRIMARY KEY, parent bigint NOT NULL, child bigint NOT NULL);
""" + "".join(f"CREATE TABLE IF NOT EXISTS {kind}annotationlink (id bigint PRIMARY KEY, parent bigint NOT NULL, "
              f"child bigint NOT NULL);\n"
              for kind in ("image", "dataset", "project", "screen", "plate", "plateacquisition", "well", "roi"))
CLASSES = {"image": "ome.model.core.Image", "dataset": "ome.model.containers.Dataset",
           "project": "ome.model.containers.Project", "screen": "ome.model.screen.Screen",
           "plate": "ome.model.screen.Plate", "well": "ome.model.screen.Well",
           "acquisition": "ome.model.screen.PlateAcquisition"}
CHANNEL_IDS = 100  # channel and logical channel ids: image id × 100 + index (the sim has no channel rows)
Change = tuple[str, str, int]  # (action, OMERO class, id)


class Journal:
    """Nothing recorded: the sim without --db."""

    def rendering(self, image: Image, rdef_id: int, user_id: int) -> None:
        return None

    def channels(self, images: Iterable[Image], indexes: Iterable[int], user_id: int) -> None:
        return None

    def objects(self, action: str, changed: Iterable[tuple[str, int]], images: Iterable[Image], user_id: int,
                group_id: int) -> None:
        return None


class DbJournal(Journal):
    """Each change an event with its eventlog rows, in one transaction with the rows that locate it."""

    def __init__(self, dsn: str) -> None:
        import psycopg

        self.conn = psycopg.connect(dsn, autocommit=True)
        self.conn.execute(SCHEMA)

    def _record(self, changes: list[Change], images: Iterable[Image], user_id: int, group_id: int) -> None:
        with self.conn.transaction():
            self._locate(images)
            event = self.conn.execute("INSERT INTO event (time, experimenter, experimentergroup) "
                                      "VALUES (localtimestamp, %s, %s) RETURNING id", (user_id, group_id)).fetchone()[0]
            with self.conn.cursor() as cur:
                cur.executemany("INSERT INTO eventlog (action, entitytype, entityid, event) VALUES (%s, %s, %s, %s)",
                                [(*change, event) for change in changes])

    def _locate(self, images: Iterable[Image]) -> None:
        """The rows OMERO has for these images: pixels, and their dataset link or well sample."""
        rows = {"pixels": [], "datasetimagelink": [], "well": [], "wellsample": []}
        for img in images:
            rows["pixels"].append((img.id, img.id))
            if img.dataset_id is not None:
                rows["datasetimagelink"].append((img.id, img.dataset_id, img.id))
            if img.ws_id is not None:
                rows["well"].append((img.well_id, img.plate_id))
                rows["wellsample"].append((img.ws_id, img.well_id, img.id, img.acquisition_id))
        with self.conn.cursor() as cur:
            for table, values in rows.items():
                if values:
                    marks = ", ".join(["%s"] * len(values[0]))
                    cur.executemany(f"INSERT INTO {table} VALUES ({marks}) ON CONFLICT DO NOTHING", values)

    def rendering(self, image: Image, rdef_id: int, user_id: int) -> None:
        """saveImgRDef, a paste, a reset: the user's RenderingDef is saved, its thumbnail re-made."""
        with self.conn.transaction():
            self.conn.execute("INSERT INTO renderingdef VALUES (%s, %s, NULL) ON CONFLICT DO NOTHING",
                              (rdef_id, image.id))
            self.conn.execute("INSERT INTO thumbnail VALUES (%s, %s) ON CONFLICT DO NOTHING", (image.id, image.id))
            self._record([("UPDATE", "ome.model.display.RenderingDef", rdef_id),
                          ("UPDATE", "ome.model.display.Thumbnail", image.id)], [image], user_id, image.group_id)

    def channels(self, images: Iterable[Image], indexes: Iterable[int], user_id: int) -> None:
        """edit_channel_names: each image's LogicalChannel rows are updated."""
        images, indexes = list(images), list(indexes)
        if not images:
            return
        with self.conn.transaction():
            with self.conn.cursor() as cur:
                cur.executemany("INSERT INTO channel VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                                [(img.id * CHANNEL_IDS + i, img.id, img.id * CHANNEL_IDS + i)
                                 for img in images for i in indexes])
            self._record([("UPDATE", "ome.model.core.LogicalChannel", img.id * CHANNEL_IDS + i)
                          for img in images for i in indexes], images, user_id, images[0].group_id)

    def objects(self, action: str, changed: Iterable[tuple[str, int]], images: Iterable[Image], user_id: int,
                group_id: int) -> None:
        """chgrp/chown (UPDATE) or delete (DELETE) of objects and every image inside them, as OMERO's graph
        requests touch each row."""
        images = list(images)
        changes = [(action, CLASSES[kind], ident) for kind, ident in changed]
        changes += [(action, CLASSES["image"], img.id) for img in images]
        self._record(changes, images if action == "UPDATE" else [], user_id, group_id)


def journal(dsn: str | None) -> Journal:
    return DbJournal(dsn) if dsn else Journal()
