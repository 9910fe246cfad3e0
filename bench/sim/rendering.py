"""Rendering settings (rdefs) per image and user, and the URL rendering parameters that override them.

This is where per-user bytes come from: a render without a full explicit `c` + `m` starts from the
requesting user's saved rdef, else the owner's. Family/coefficient/inverted come only from `maps`,
never from a saved rdef, so a full explicit `c` + `m` render is identical for every reader.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Mapping

from bench.sim.catalog import Catalog, Image

RAW_MAX = 4095                    # synthetic data range of every channel (uint16 pixels, 12-bit data)
PIXEL_RANGE = (0, 65535)
COLORS = ("0000FF", "00FF00", "FF0000", "FF00FF", "FFFF00", "00FFFF")
NAMES = ("DAPI", "GFP", "Cy5", "mCherry", "YFP", "CFP")
EMISSION = (461, 510, 670, 610, 527, 475)
FAMILIES = ("linear", "logarithmic", "exponential", "polynomial")
PROJECTIONS = ("normal", "intmax", "intmean", "intsum")
DEFAULT_RDEF_BASE = 20_000_000    # owner's default rdef id = DEFAULT_RDEF_BASE + image id
SAVED_RDEF_BASE = 30_000_001


class BadParam(ValueError):
    """A rendering parameter OMERO would reject with 400."""


@dataclass(frozen=True)
class Channel:
    active: bool
    start: float
    end: float
    color: str
    family: str = "linear"
    coefficient: float = 1.0
    inverted: bool = False


@dataclass(frozen=True)
class RDef:
    id: int
    owner_id: int
    model: str                      # "greyscale" | "color"
    channels: tuple[Channel, ...]
    default_z: int = 0
    default_t: int = 0


@dataclass(frozen=True)
class RenderSpec:
    """Everything that determines the bytes of a render, besides the plane and the region."""
    model: str
    channels: tuple[Channel, ...]
    projection: tuple[str, int, int] = ("normal", 0, 0)
    invert_axis: bool = False
    quality: float = 0.85
    flip: str = ""
    fmt: str = "jpeg"


def default_rdef(image: Image) -> RDef:
    px = image.pixels
    channels = tuple(Channel(c < 4, 60.0 + 25 * c, 1800.0 + 400 * c, COLORS[c % len(COLORS)])
                     for c in range(px.size_c))
    return RDef(DEFAULT_RDEF_BASE + image.id, image.owner_id, "color", channels, px.size_z // 2, 0)


def seeded_rdef(image: Image, user_id: int, rdef_id: int) -> RDef:
    """A user's own settings that visibly differ from the owner's: narrower windows, rotated colours."""
    base = default_rdef(image)
    channels = tuple(replace(ch, start=ch.start + 200, end=ch.end * 0.6, color=COLORS[(i + 1) % len(COLORS)])
                     for i, ch in enumerate(base.channels))
    return RDef(rdef_id, user_id, base.model, channels, base.default_z, base.default_t)


class RDefStore:
    """Saved rendering settings per (image, user); the owner's default is computed, never stored."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._saved: dict[tuple[int, int], RDef] = {}
        self._next = SAVED_RDEF_BASE
        for image_id, user_id in catalog.rdef_seeds:
            image = catalog.image(image_id)
            if image is not None:
                self._saved[(image_id, user_id)] = seeded_rdef(image, user_id, self._take_id())

    def _take_id(self) -> int:
        self._next += 1
        return self._next - 1

    def for_user(self, image: Image, user_id: int) -> RDef:
        return self._saved.get((image.id, user_id)) or default_rdef(image)

    def by_id(self, image: Image, rdef_id: int) -> RDef | None:
        if rdef_id == DEFAULT_RDEF_BASE + image.id:
            return default_rdef(image)
        return next((r for (iid, _), r in self._saved.items() if iid == image.id and r.id == rdef_id), None)

    def save(self, image: Image, user_id: int, params: Mapping[str, str]) -> RDef:
        base = self.for_user(image, user_id)
        spec = resolve(base, params, image)
        old = self._saved.get((image.id, user_id))
        rdef = RDef(old.id if old else self._take_id(), user_id, spec.model,
                    tuple(replace(ch, family="linear", coefficient=1.0, inverted=False) for ch in spec.channels),
                    base.default_z, base.default_t)
        self._saved[(image.id, user_id)] = rdef
        return rdef

    def seeded(self) -> list[dict]:
        return [{"image": iid, "user": self.catalog.users[uid].name, "rdefId": r.id}
                for (iid, uid), r in sorted(self._saved.items())]


# ---- URL parameters -------------------------------------------------------------------------
_C_ENTRY = re.compile(r"^(-)?(\d+)(?:\|(-?\d+(?:\.\d+)?):(-?\d+(?:\.\d+)?))?(?:\$([0-9A-Fa-f]{6}|[\w.-]+\.lut))?$")


@dataclass(frozen=True)
class ChannelEntry:
    index: int                       # 0-based
    active: bool
    window: tuple[float, float] | None
    color: str | None


def parse_c(value: str) -> tuple[ChannelEntry, ...]:
    """`[-]idx[|start:end][$RRGGBB]` entries; indices beyond the image's channels are ignored later."""
    entries = []
    for part in value.split(","):
        m = _C_ENTRY.match(part.strip())
        if not m:
            raise BadParam(f"invalid channel entry {part!r}")
        idx = int(m.group(2)) - 1
        window = (float(m.group(3)), float(m.group(4))) if m.group(3) is not None else None
        entries.append(ChannelEntry(idx, m.group(1) is None, window, _color(m.group(5))))
    return tuple(entries)


def _color(value: str | None) -> str | None:
    """Hex colours as given; a LUT name becomes a deterministic colour of its own."""
    if value is None or len(value) == 6 and not value.endswith(".lut"):
        return value.upper() if value else None
    return f"{sum(value.encode()) * 2654435761 % 0xFFFFFF:06X}"


def is_explicit(params: Mapping[str, str]) -> bool:
    """Full `c` (window and colour on every entry) and `m` in g|c: the rdef no longer matters."""
    if params.get("m") not in ("g", "c") or not params.get("c"):
        return False
    entries = parse_c(params["c"])
    return all(e.window is not None and e.color is not None for e in entries)


def _maps(value: str | None, count: int) -> list[dict]:
    if not value:
        return [{}] * count
    try:
        maps = json.loads(value)
    except ValueError as exc:
        raise BadParam("maps is not JSON") from exc
    if not isinstance(maps, list) or not all(isinstance(m, dict) or m is None for m in maps):
        raise BadParam("maps must be a list of objects")
    return [m or {} for m in maps] + [{}] * (count - len(maps))


def _apply_map(ch: Channel, entry: dict) -> Channel:
    flag = entry.get("inverted", entry.get("reverse"))
    quant = entry.get("quantization")
    if isinstance(flag, dict) and "enabled" in flag:
        ch = replace(ch, inverted=bool(flag["enabled"]))
    if isinstance(quant, dict):
        family = quant.get("family", ch.family)
        try:
            coefficient = float(quant.get("coefficient", ch.coefficient))
        except (TypeError, ValueError) as exc:
            raise BadParam("bad quantization coefficient") from exc
        ch = replace(ch, family=family if family in FAMILIES else ch.family, coefficient=coefficient)
    return ch


def _projection(value: str | None, size_z: int) -> tuple[str, int, int]:
    if not value:
        return "normal", 0, 0
    name, _, rng = value.partition("|")
    start, end = 0, size_z - 1
    if rng:
        s, _, e = rng.partition(":")
        if s.isdigit() and e.isdigit():
            start, end = min(int(s), size_z - 1), min(int(e), size_z - 1)
    return (name if name in PROJECTIONS else "normal"), start, max(start, end)


def resolve(rdef: RDef, params: Mapping[str, str], image: Image, formats: tuple[str, ...] = ()) -> RenderSpec:
    """Merge URL params over an rdef; raises BadParam for input OMERO answers with 400."""
    channels = list(rdef.channels)
    entries = parse_c(params["c"]) if params.get("c") else ()
    maps = _maps(params.get("maps"), len(entries))
    if entries:
        listed = {e.index for e in entries}
        channels = [replace(ch, active=False) if i not in listed else ch for i, ch in enumerate(channels)]
        for e, m in zip(entries, maps):
            if not 0 <= e.index < len(channels):
                continue
            ch = channels[e.index]
            ch = replace(ch, active=e.active, color=e.color or ch.color)
            if e.window:
                ch = replace(ch, start=e.window[0], end=e.window[1])
            channels[e.index] = _apply_map(ch, m)
    model = {"g": "greyscale", "c": "color"}.get(params.get("m", ""), rdef.model)
    try:
        quality = min(1.0, max(0.0, float(params.get("q", 0.85))))
    except ValueError as exc:
        raise BadParam("q must be a number") from exc
    fmt = params.get("format", "jpeg") if formats else "jpeg"
    if fmt not in (*formats, "jpeg"):
        raise BadParam(f"unsupported format {fmt!r}")
    flip = params.get("flip", "").lower()
    return RenderSpec(model, tuple(channels), _projection(params.get("p"), image.pixels.size_z),
                      params.get("ia") == "1", quality, "".join(sorted(set(flip) & {"h", "v"})), fmt)


def require_explicit(params: Mapping[str, str]) -> None:
    """The `_rdef` views and the microservice: `c` with windows and colours and `m` are mandatory."""
    if not is_explicit(params):
        raise BadParam("c (with a window and colour for every channel) and m (g|c) are required")
