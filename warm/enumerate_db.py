"""Enumeration straight from an OMERO PostgreSQL database (`--db postgresql://…`), for very large sites.

One indexed query per container instead of API pages through OMERO.web, and large image lists are
streamed with a server-side cursor. Table and column names are OMERO's own: screen, plate,
screenplatelink, plateacquisition, well ("row", "column"), wellsample (well_index = the field),
project, dataset, projectdatasetlink, datasetimagelink, image (acquisitiondate). `--group` keeps
to the groups whose data the public user reads, since the database knows nothing of the web's
public user. Records and ordering match the API source, so shards split identically.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from .model import RUN_KINDS, ImageList, PlateLayout, Ref


class DbError(Exception):
    pass


def _group(alias: str, groups: list[int]) -> str:
    return f" AND {alias}.group_id = ANY(%(groups)s)" if groups else ""


class DbSource:
    def __init__(self, conn, since: float | None = None, groups: list[int] | None = None) -> None:
        self.conn = conn
        self._lock = asyncio.Lock()  # one connection; the pipeline lists a few objects ahead concurrently
        self.since = since
        self.groups = groups or []

    @classmethod
    async def connect(cls, dsn: str, since: float | None = None, groups: list[int] | None = None) -> DbSource:
        try:
            import psycopg
        except ImportError:
            raise DbError("--db needs psycopg: pip install 'omero-edge[db]'") from None
        try:
            conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise DbError(f"cannot connect to the database: {str(exc).strip()}") from None
        return cls(conn, since, groups)

    async def _all(self, sql: str, **params) -> list[tuple]:
        async with self._lock, self.conn.cursor() as cur:
            await cur.execute(sql, {"groups": self.groups, **params})
            return await cur.fetchall()

    async def _stream(self, sql: str, **params) -> AsyncIterator[tuple]:
        """Rows through a server-side cursor: a 100 000-image dataset is never in memory as rows."""
        async with self._lock, self.conn.transaction():
            async with self.conn.cursor(name="warm_stream") as cur:
                cur.itersize = 5000
                await cur.execute(sql, {"groups": self.groups, **params})
                async for row in cur:
                    yield row

    def _kept(self, when: float | None) -> bool:
        return self.since is None or when is None or when >= self.since

    async def children(self, kind: str, parent: int | None = None) -> tuple[list[int], int]:
        if kind in ("screens", "projects"):
            table = kind[:-1]
            sql = f"SELECT t.id FROM {table} t WHERE TRUE{_group('t', self.groups)} ORDER BY lower(t.name), t.id"
        elif kind == "plates":
            sql = ("SELECT t.id FROM screenplatelink l JOIN plate t ON t.id = l.child WHERE l.parent = %(parent)s"
                   f"{_group('t', self.groups)} ORDER BY lower(t.name), t.id")
        elif parent is not None:
            sql = ("SELECT t.id FROM projectdatasetlink l JOIN dataset t ON t.id = l.child "
                   f"WHERE l.parent = %(parent)s{_group('t', self.groups)} ORDER BY lower(t.name), t.id")
        else:
            sql = ("SELECT t.id FROM dataset t WHERE NOT EXISTS (SELECT 1 FROM projectdatasetlink l "
                   f"WHERE l.child = t.id){_group('t', self.groups)} ORDER BY lower(t.name), t.id")
        ids = [row[0] for row in await self._all(sql, parent=parent)]
        return ids, len(ids)

    async def plate(self, ref: Ref, kinds: frozenset[str]) -> PlateLayout | None:
        rows = await self._all(
            'SELECT w."row", w."column", w.id, ws.well_index, ws.image, ws.plateacquisition, '
            "extract(epoch FROM i.acquisitiondate)::float8 FROM well w JOIN wellsample ws ON ws.well = w.id "
            "JOIN image i ON i.id = ws.image WHERE w.plate = %(plate)s" + _group("i", self.groups),
            plate=ref.id)
        n_wells = (await self._all("SELECT count(*) FROM well WHERE plate = %(plate)s", plate=ref.id))[0][0]
        cells: dict[int, list[tuple[int, int, int]]] = {}
        per_run: dict[int, dict[int, int]] = {}
        wells: set[tuple[int, int, int]] = set()
        n_fields = 0
        for row, col, well, index, image, run, when in rows:
            n_fields = max(n_fields, index + 1)
            if self._kept(when):
                cells.setdefault(index, []).append((row, col, image))
                wells.add((row, col, well))
            if run is not None:
                counts = per_run.setdefault(run, {})
                counts[well] = counts.get(well, 0) + 1
        if not cells and self.since is not None:
            return None
        fields = [[image for _, _, image in sorted(cells.get(f, []))] for f in range(n_fields)]
        runs = []
        if kinds & RUN_KINDS:  # runs: their grids, listings, plate pages and their wells' children
            for (run,) in await self._all("SELECT id FROM plateacquisition WHERE plate = %(plate)s ORDER BY id",
                                          plate=ref.id):
                runs.append((run, max(per_run.get(run, {}).values(), default=0)))
        return PlateLayout(n_wells, fields, runs, well_ids=[well for _, _, well in sorted(wells)])

    async def images(self, ref: Ref) -> ImageList | None:
        if ref.kind == "orphans":
            sql = ("SELECT i.id, extract(epoch FROM i.acquisitiondate)::float8 FROM image i WHERE NOT EXISTS "
                   "(SELECT 1 FROM datasetimagelink l WHERE l.child = i.id) AND NOT EXISTS "
                   f"(SELECT 1 FROM wellsample ws WHERE ws.image = i.id){_group('i', self.groups)} "
                   "ORDER BY lower(i.name), i.id")
        else:
            sql = ("SELECT i.id, extract(epoch FROM i.acquisitiondate)::float8 FROM datasetimagelink l "
                   f"JOIN image i ON i.id = l.child WHERE l.parent = %(parent)s{_group('i', self.groups)} "
                   "ORDER BY lower(i.name), i.id")
        ids, total = [], 0
        async for image, when in self._stream(sql, parent=ref.id):
            total += 1
            if self._kept(when):
                ids.append(image)
        if not ids and self.since is not None:
            return None
        return ImageList(ids, total)

    async def close(self) -> None:
        await self.conn.close()
