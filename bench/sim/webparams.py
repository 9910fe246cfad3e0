"""The webclient's query-string readers and the helpers its tree and annotation views share.

`get_long_or_default` / `get_bool_or_default` / `get_list` (wc/views.py:139-174), omero-py's
`toBoolean`, the tree's paging (`params.page((page - 1) * limit, limit)` only when page > 0,
tree.py:120-122) and `_marshal_date` (tree.py:500-511, `omero.web.time_zone` Europe/London)."""
from __future__ import annotations

from datetime import datetime
from itertools import islice
from typing import Iterable, Sequence, TypeVar
from zoneinfo import ZoneInfo

from bench.sim.http import Ctx, error

PAGE = 200                         # omero.web.page_size (settings.py:969-977)
ANNOTATIONS_LIMIT = PAGE * 100     # wc/views.py:136
TIME_ZONE = ZoneInfo("Europe/London")
FALSE_ITEMS = ("false", "f", "no", "n", "none", "0", "[]", "{}", "")   # omero.gateway.utils.toBoolean
T = TypeVar("T")


class BadLong(ValueError):
    """`int(raw)` failed: the tree views answer 400 "Invalid parameter value"; api_annotations does not catch it."""


def get_long(ctx: Ctx, name: str, default: int | None) -> int | None:
    raw = ctx.q.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadLong(raw) from None


def get_bool(ctx: Ctx, name: str, default: bool = False) -> bool:
    raw = ctx.q.get(name)
    return default if raw is None else raw.strip().lower() not in FALSE_ITEMS


def get_list(ctx: Ctx, name: str) -> list[str]:
    return [v for v in ctx.q.getlist(name) if v != ""]


def tree_params(ctx: Ctx, **defaults: int | None) -> dict[str, int | None]:
    """Every `get_long_or_default` of a tree view; any bad one is OMERO's 400 (wc/views.py:677-679)."""
    try:
        return {name: get_long(ctx, name, default) for name, default in defaults.items()}
    except BadLong:
        raise error(400, "Invalid parameter value", "text/html; charset=utf-8") from None


def page_of(items: Sequence[T] | Iterable[T], page: int | None, limit: int) -> list[T]:
    """One page (1-based) of `items`; page None, 0 or negative is everything."""
    if page is None or page <= 0:
        return list(items)
    start = (page - 1) * max(limit, 0)
    if isinstance(items, Sequence):
        return list(items[start:start + limit])
    return list(islice(items, start, start + limit))


def marshal_date(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, TIME_ZONE).isoformat()
