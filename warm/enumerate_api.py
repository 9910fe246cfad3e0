"""Enumeration from the JSON API v0 (omero-web-api.md §2), streaming.

Listings are walked page by page with the server's own `maxLimit` (learned from `meta`, so IDR's
1000 is used where it is set) and rows are consumed as they arrive: only one plate's wells or one
dataset's image ids are held at a time. Reads go through the edge by default (plain GETs, so the
edge's cache and backend protection apply) or straight to `--backend` in direct mode.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx

from .dates import omero_time
from .model import ImageList, PlateLayout, Ref
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
        headers = {"accept": "application/json", "user-agent": "omero-edge-warm"}
        if host:
            headers["host"] = host
        self.client = httpx.AsyncClient(base_url=base.rstrip("/"), headers=headers, timeout=timeout,
                                        limits=httpx.Limits(max_connections=4), trust_env=False)
        self.retries = retries

    async def get_json(self, url: str, params: dict | None = None) -> dict:
        for attempt in range(self.retries + 1):
            try:
                resp = await self.client.get(url, params=params)
            except httpx.HTTPError as exc:
                status, reason = 0, f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code == 200:
                    try:
                        return resp.json()
                    except ValueError:
                        raise SourceError(url, 200, "answer is not JSON") from None
                status, reason = resp.status_code, resp.text[:200].strip() or f"HTTP {resp.status_code}"
                if resp.status_code < 500 and resp.status_code != 429:
                    raise SourceError(url, status, reason)
            if attempt < self.retries:
                await asyncio.sleep(delay(attempt))
        raise SourceError(url, status, reason)

    async def close(self) -> None:
        await self.client.aclose()


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

    def _kept(self, image: dict) -> bool:
        """Images older than --since are left out; an image without a date is kept (it may be new)."""
        if self.since is None:
            return True
        when = omero_time(image.get("AcquisitionDate"))
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

    async def plate(self, ref: Ref, need_runs: bool) -> PlateLayout | None:
        """Field → row-major image ids from the wells listing (a well's WellSamples are its fields in order)."""
        cells: dict[int, list[tuple[int, int, int]]] = {}
        per_run: dict[int, dict[int, int]] = {}
        n_fields = 0
        wells = self._rows(f"/api/v0/m/plates/{ref.id}/wells/")
        async for well in wells:
            samples = well.get("WellSamples") or []
            n_fields = max(n_fields, len(samples))
            for f, sample in enumerate(samples):
                image = sample.get("Image") or {}
                if "@id" in image and self._kept(image):
                    cells.setdefault(f, []).append((well.get("Row", 0), well.get("Column", 0), image["@id"]))
                run = (sample.get("PlateAcquisition") or {}).get("@id")
                if run is not None:
                    counts = per_run.setdefault(run, {})
                    counts[well["@id"]] = counts.get(well["@id"], 0) + 1
        if not cells and self.since is not None:
            return None
        fields = [[image for _, _, image in sorted(cells.get(f, []))] for f in range(n_fields)]
        runs: list[tuple[int, int]] = []
        if need_runs:
            async for acq in self._rows(f"/api/v0/m/plates/{ref.id}/plateacquisitions/"):
                span = acq.get("omero:wellsampleIndex")
                n = span[1] - span[0] + 1 if isinstance(span, list) and len(span) == 2 \
                    else max(per_run.get(acq["@id"], {}).values(), default=0)
                runs.append((acq["@id"], n))
        return PlateLayout(wells.total, fields, runs)

    async def images(self, ref: Ref) -> ImageList | None:
        """A dataset's images (or the orphaned ones), in listing order."""
        rows = self._rows("/api/v0/m/images/", {"orphaned": "true"}) if ref.kind == "orphans" \
            else self._rows(f"/api/v0/m/datasets/{ref.id}/images/")
        ids = [row["@id"] async for row in rows if self._kept(row)]
        if not ids and self.since is not None:
            return None
        return ImageList(ids, rows.total)
