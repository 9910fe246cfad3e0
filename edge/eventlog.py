"""OMERO's change log, read as purges: which cached objects an `eventlog` row changes, and how hard.

OMERO records every insert, update and delete of a model object in its `eventlog` table:
`eventlog(id, action, entitytype, entityid, event)`, `event(id, time, …)` (the schema OMERO's
`bin/omero db script` writes, e.g. ome/openmicroscopy sql/psql/OMERO5.3DEV__0/schema.sql:
`create table eventlog (id int8, action varchar(255), permissions int8, entityId int8,
entityType varchar(255), external_id int8, event int8)`; `action` is INSERT, UPDATE, DELETE or
REINDEX; `entityType` the model class, `ome.model.display.RenderingDef`). The table below maps a
class to the objects the cache tags (`edge/kinds.py`): itself when it is one of them, else the
rows that lead to one (a RenderingDef's pixels' image), read from OMERO's own tables by id.

Soft or hard (docs/invalidation.md): rendering settings, thumbnails, channel names and annotations
change how an object looks, so their entries may be answered stale while one refresh runs;
anything else (an image or container updated, which is how chgrp and chown show, links that move
data, every delete) is hard: a public-only cache must never answer for an object that left the
public group.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

ACTIONS = ("INSERT", "UPDATE", "DELETE")  # REINDEX (full-text indexing) changes nothing the cache holds

# The annotation links OMERO has for the kinds the cache tags: the kind of the parent (its class is
# <Kind>AnnotationLink, its table <kind>annotationlink).
ANNOTATED = {"Image": "image", "Dataset": "dataset", "Project": "project", "Screen": "screen", "Plate": "plate",
             "PlateAcquisition": "plateacquisition", "Well": "well", "Roi": "roi"}
ANNOTATION_LINKS = tuple((f"{name}AnnotationLink", f"{kind}annotationlink", kind) for name, kind in ANNOTATED.items())
ANNOTATIONS = ("BooleanAnnotation", "CommentAnnotation", "DoubleAnnotation", "FileAnnotation", "ListAnnotation",
               "LongAnnotation", "MapAnnotation", "TagAnnotation", "TermAnnotation", "TimestampAnnotation",
               "XmlAnnotation")


@dataclass(frozen=True)
class Entity:
    """One OMERO model class: the kind its id is (`direct`), or the SQL that finds the tagged objects
    it belongs to (rows of kind, id for `%(ids)s`), and the tables that SQL reads."""

    soft: bool
    direct: str | None = None
    sql: str = ""
    tables: tuple[str, ...] = ()
    containers: bool = False  # an update also purges the image's dataset, well, plate and acquisition


def _via(tables: tuple[str, ...], sql: str, soft: bool) -> Entity:
    return Entity(soft=soft, sql=sql, tables=tables)


def _link(table: str, parent: str, child: str) -> Entity:
    return _via((table,), f"SELECT '{parent}', parent FROM {table} WHERE id = ANY(%(ids)s) "
                          f"UNION ALL SELECT '{child}', child FROM {table} WHERE id = ANY(%(ids)s)", soft=False)


ENTITIES: dict[str, Entity] = {
    # rendering: ome.model.display.* — the image whose pixels they render (soft)
    "RenderingDef": _via(("renderingdef", "pixels"), "SELECT 'image', p.image FROM renderingdef r "
                         "JOIN pixels p ON p.id = r.pixels WHERE r.id = ANY(%(ids)s)", soft=True),
    "ChannelBinding": _via(("channelbinding", "renderingdef", "pixels"),
                           "SELECT 'image', p.image FROM channelbinding cb JOIN renderingdef r ON r.id = cb.renderingdef "
                           "JOIN pixels p ON p.id = r.pixels WHERE cb.id = ANY(%(ids)s)", soft=True),
    "QuantumDef": _via(("renderingdef", "pixels"), "SELECT 'image', p.image FROM renderingdef r "
                       "JOIN pixels p ON p.id = r.pixels WHERE r.quantization = ANY(%(ids)s)", soft=True),
    "Thumbnail": _via(("thumbnail", "pixels"), "SELECT 'image', p.image FROM thumbnail t "
                      "JOIN pixels p ON p.id = t.pixels WHERE t.id = ANY(%(ids)s)", soft=True),
    "Pixels": _via(("pixels",), "SELECT 'image', image FROM pixels WHERE id = ANY(%(ids)s)", soft=True),
    # channel names (edit_channel_names saves LogicalChannel.name)
    "LogicalChannel": _via(("channel", "pixels"), "SELECT 'image', p.image FROM channel c "
                           "JOIN pixels p ON p.id = c.pixels WHERE c.logicalchannel = ANY(%(ids)s)", soft=True),
    "Channel": _via(("channel", "pixels"), "SELECT 'image', p.image FROM channel c "
                    "JOIN pixels p ON p.id = c.pixels WHERE c.id = ANY(%(ids)s)", soft=True),
    # the tagged objects themselves: an update is how chgrp, chown and renames show (hard)
    "Image": Entity(soft=False, direct="image", containers=True),
    "Dataset": Entity(soft=False, direct="dataset"),
    "Project": Entity(soft=False, direct="project"),
    "Screen": Entity(soft=False, direct="screen"),
    "Plate": Entity(soft=False, direct="plate"),
    "PlateAcquisition": Entity(soft=False, direct="plateacquisition"),
    "Well": Entity(soft=False, direct="well"),
    "Roi": Entity(soft=False, direct="roi"),
    "Shape": Entity(soft=False, direct="shape"),
    # what moves data between containers (hard)
    "WellSample": _via(("wellsample",), "SELECT 'well', well FROM wellsample WHERE id = ANY(%(ids)s) "
                       "UNION ALL SELECT 'image', image FROM wellsample WHERE id = ANY(%(ids)s)", soft=False),
    "DatasetImageLink": _link("datasetimagelink", "dataset", "image"),
    "ProjectDatasetLink": _link("projectdatasetlink", "project", "dataset"),
    "ScreenPlateLink": _link("screenplatelink", "screen", "plate"),
    # annotations: the objects they are linked to (soft)
    **{link: _via((table,), f"SELECT '{kind}', parent FROM {table} WHERE id = ANY(%(ids)s)", soft=True)
       for link, table, kind in ANNOTATION_LINKS},
    **{name: _via(tuple(table for _, table, _ in ANNOTATION_LINKS),
                  " UNION ALL ".join(f"SELECT '{kind}', parent FROM {table} WHERE child = ANY(%(ids)s)"
                                     for _, table, kind in ANNOTATION_LINKS), soft=True)
       for name in ANNOTATIONS},
}

# The containers of updated images (their listings and grids name the image's group and owner).
CONTAINERS = ((("datasetimagelink",), "SELECT 'dataset', parent FROM datasetimagelink WHERE child = ANY(%(ids)s)"),
              (("wellsample",), "SELECT 'well', well FROM wellsample WHERE image = ANY(%(ids)s)"),
              (("wellsample",), "SELECT 'plateacquisition', plateacquisition FROM wellsample "
                                "WHERE image = ANY(%(ids)s) AND plateacquisition IS NOT NULL"),
              (("wellsample", "well"), "SELECT 'plate', w.plate FROM wellsample ws JOIN well w ON w.id = ws.well "
                                       "WHERE ws.image = ANY(%(ids)s)"))


def entity_name(entitytype: str) -> str:
    """`ome.model.display.RenderingDef` → `RenderingDef` (the table's keys)."""
    return entitytype.rpartition(".")[2]


@dataclass(frozen=True)
class Event:
    id: int
    action: str
    entity: str  # the class name without its package
    entity_id: int
    time: float | None  # the event's time (epoch seconds), None when the event row is missing


def readable(entity: Entity, tables: Iterable[str]) -> bool:
    """Whether the database has every table `entity`'s SQL reads (a site's schema, or a test's subset)."""
    present = set(tables)
    return entity.direct is not None or all(t in present for t in entity.tables)
