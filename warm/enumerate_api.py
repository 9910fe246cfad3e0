"""Enumeration from the JSON API v0 (omero-web-api.md §2), streaming.

Listings are walked page by page with the server's own `maxLimit` (learned from `meta`, so IDR's
1000 is used where it is set) and rows are consumed as they arrive: only one plate's or one
dataset's image ids are held at a time. A plate's images come from its grids, not its wells
listing: the grid is what the plate view loads (so it is warmed on the way), lists exactly the ids
it batches in row-major order, and is ~25x smaller than wells with their images. Reads go through
the edge by default (plain GETs, so the edge's cache and backend protection apply) or straight to
`--backend` in direct mode.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from urllib.parse import urlencode

from .dates import omero_time
from .http1 import Http1Pool, HttpError, Response
from .model import API, RUN_KINDS, ImageList, PlateLayout, Ref
from .retry import delay

START_LIMIT = 500  # omero.web.api.max_limit default; replaced by meta.maxLimit after the first page


class SourceError(Exception):
    """A listing could not be read after retries; `url` names it."""

    def __init__(self, url: str, status: int, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url, self.status, self.reason = url, status, reason


class ApiClient:
    """GET JSON with retries on transient failures; every read the warmer makes goes through here."""

    def __init__(self, base: str, *, host: str | None = None, retries: int = 3, timeout: float = 60.0) -> None:
        headers = {"accept": "application/json", **({"host": host} if host else {})}
        self.http = Http1Pool(base, headers, size=8, timeout=timeout)
        self.retries = retries

    async def _read(self, url: str, params: dict | None = None) -> Response:
        """A 200 answer, retrying 5xx, 429 and connection failures; SourceError otherwise."""
        target = f"{url}?{urlencode(params)}" if params else url
        for attempt in range(self.retries + 1):
            try:
                resp = await self.http.get(target)
            except HttpError as exc:
                status, reason = 0, str(exc)
            else:
                if resp.status == 200:
                    return resp
                status, reason = resp.status, resp.text[:200].strip() or f"HTTP {resp.status}"
                if resp.status < 500 and resp.status != 429:
                    raise SourceError(url, status, reason)
            if attempt < self.retries:
                await asyncio.sleep(delay(attempt))
        raise SourceError(url, status, reason)

    async def get(self, url: str, params: dict | None = None) -> tuple[dict, str]:
        """(JSON document, the edge's X-Edge-Cache header or "" when read from the backend)."""
        resp = await self._read(url, params)
        try:
            return json.loads(resp.body), resp.headers.get("x-edge-cache", "")
        except ValueError:
            raise SourceError(url, 200, "answer is not JSON") from None

    async def text(self, url: str) -> str:
        """An HTML page (the webclient's, for its active group)."""
        return (await self._read(url)).text

    async def get_json(self, url: str, params: dict | None = None) -> dict:
        return (await self.get(url, params))[0]

    async def close(self) -> None:
        await self.http.close()


class Rows:
    """Every row of one listing, page by page; `total` is the listing's totalCount once read."""

    def __init__(self, api: ApiClient, path: str, query: dict | None = None, limit: int = START_LIMIT) -> None:
        self.api, self.path, self.query, self.limit = api, path, query or {}, limit
        self.total = 0

    async def __aiter__(self) -> AsyncIterator[dict]:
        offset = 0
        while True:
            doc = await self.api.get_json(self.path, {**self.query, "limit": self.limit, "offset": offset})
            meta = doc.get("meta") or {}
            self.total = int(meta.get("totalCount", 0))
            self.limit = int(meta.get("maxLimit") or self.limit)
            data = doc.get("data") or []
            for row in data:
                yield row
            offset += len(data)
            if not data or offset >= self.total:
                return


class ApiSource:
    """The hierarchy as the public user sees it through API v0."""

    def __init__(self, api: ApiClient, since: float | None = None) -> None:
        self.api = api
        self.since = since
        self.limit = START_LIMIT

    def _rows(self, path: str, query: dict | None = None) -> Rows:
        return Rows(self.api, path, query, self.limit)

    def _kept(self, date: object, seconds: bool = False) -> bool:
        """Images older than --since are left out; an image without a date is kept (it may be new).
        API objects carry AcquisitionDate in ms; grid cells carry `date` in seconds."""
        if self.since is None:
            return True
        when = omero_time(date * 1000 if seconds and isinstance(date, (int, float)) else date)
        return when is None or when >= self.since

    async def children(self, kind: str, parent: int | None = None) -> tuple[list[int], int]:
        """Ids in a listing (screens, projects, plates of a screen, datasets of a project or orphaned)."""
        if kind == "datasets":
            path, query = (f"/api/v0/m/projects/{parent}/datasets/", None) if parent is not None \
                else ("/api/v0/m/datasets/", {"orphaned": "true"})
        elif kind == "plates":
            path, query = f"/api/v0/m/screens/{parent}/plates/", None
        else:
            path, query = f"/api/v0/m/{kind}/", None
        rows = self._rows(path, query)
        ids = [row["@id"] async for row in rows]
        self.limit = rows.limit
        return ids, rows.total

    async def plate(self, ref: Ref, kinds: frozenset[str]) -> PlateLayout | None:
        """The plate's fields from `omero:wellsampleIndex`, each field's image ids from its grid (the
        plate view's own request, a fraction of the wells listing's size), runs from its listing."""
        pid = ref.id
        plate = (await self.api.get_json(f"/api/v0/m/plates/{pid}/")).get("data") or {}
        span = plate.get("omero:wellsampleIndex")
        n_fields = span[1] + 1 if isinstance(span, list) and len(span) == 2 else 1
        fields, fetched, well_ids = [], {}, {}
        for f in range(n_fields):
            url = f"/webgateway/plate/{pid}/{f}/"
            grid, cache = await self.api.get(url)
            fetched[url] = cache
            cells = [cell for row in grid.get("grid") or [] for cell in row
                     if cell and self._kept(cell.get("date"), seconds=True)]
            fields.append([cell["id"] for cell in cells])
            well_ids.update((cell["wellId"], None) for cell in cells if isinstance(cell.get("wellId"), int))
        if self.since is not None and not any(fields):
            return None
        runs: list[tuple[int, int]] = []
        if kinds & RUN_KINDS:  # runs: their grids, listings, plate pages and their wells' children
            async for acq in self._rows(f"/api/v0/m/plates/{pid}/plateacquisitions/"):
                span = acq.get("omero:wellsampleIndex")
                runs.append((acq["@id"], span[1] - span[0] + 1 if isinstance(span, list) and len(span) == 2 else 1))
        wells = 0
        if API in kinds:  # the wells listing's size, without its rows (limit=0 returns only counts)
            meta = (await self.api.get_json(f"/api/v0/m/plates/{pid}/wells/", {"limit": 0})).get("meta") or {}
            wells = int(meta.get("totalCount", 0))
        return PlateLayout(wells, fields, runs, fetched, list(well_ids))

    async def images(self, ref: Ref) -> ImageList | None:
        """A dataset's images (or the orphaned ones), in listing order."""
        rows = self._rows("/api/v0/m/images/", {"orphaned": "true"}) if ref.kind == "orphans" \
            else self._rows(f"/api/v0/m/datasets/{ref.id}/images/")
        ids = [row["@id"] async for row in rows if self._kept(row.get("AcquisitionDate"))]
        if not ids and self.since is not None:
            return None
        return ImageList(ids, rows.total)
