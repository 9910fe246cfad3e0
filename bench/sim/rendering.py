"""Rendering settings (rdefs) per image and user, and the URL rendering parameters that override them.

This is where per-user bytes come from: every render starts from the requester's saved rdef, else
the owner's (ImageRegionRequestHandler.java:187-206, omero-py `_prepareRE`), and the URL changes
only what it names (clients.md §6). Saved rdefs keep windows, colours, active flags, the model,
quantization family/coefficient, inversion and the default Z/T, so even a full `c` + `m` render
differs between readers unless `maps` sets both quantization and inversion of every channel.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Callable, Mapping

from bench.sim.catalog import Catalog, Image

RAW_MAX = 4095                    # synthetic data range of every channel (uint16 pixels, 12-bit data)
PIXEL_RANGE = (0, 65535)
COLORS = ("0000FF", "00FF00", "FF0000", "FF00FF", "FFFF00", "00FFFF")
NAMES = ("DAPI", "GFP", "Cy5", "mCherry", "YFP", "CFP")
EMISSION = (461, 510, 670, 610, 527, 475)
FAMILIES = ("linear", "polynomial", "exponential", "logarithmic")   # OMERO's Family enumeration
PROJECTIONS = ("normal", "intmax", "intmean", "intsum")
DEFAULT_RDEF_BASE = 20_000_000    # the owner's rdef id = DEFAULT_RDEF_BASE + image id
SAVED_RDEF_BASE = 30_000_001      # everyone else's, in order of creation


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

    def summary(self) -> dict:
        """What /_sim/info shows of a saved rdef (the fields that change the bytes)."""
        return {"rdefId": self.id, "model": self.model, "defaultZ": self.default_z, "defaultT": self.default_t,
                "channels": [{"active": c.active, "start": c.start, "end": c.end, "color": c.color,
                              "family": c.family, "coefficient": c.coefficient, "inverted": c.inverted}
                             for c in self.channels]}


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


def _narrow(base: RDef, image: Image) -> RDef:
    """Narrower windows and rotated colours."""
    channels = tuple(replace(ch, start=ch.start + 200, end=ch.end * 0.6, color=COLORS[(i + 1) % len(COLORS)])
                     for i, ch in enumerate(base.channels))
    return replace(base, channels=channels)


def _quantized(base: RDef, image: Image) -> RDef:
    """Non-linear families, an inverted channel and the last plane as default Z/T."""
    px = image.pixels
    looks = (("logarithmic", 1.0, False), ("exponential", 1.5, True), ("polynomial", 0.6, False))
    channels = tuple(replace(ch, family=f, coefficient=k, inverted=inv)
                     for ch, (f, k, inv) in zip(base.channels, looks * len(base.channels)))
    return replace(base, channels=channels, default_z=px.size_z - 1, default_t=px.size_t - 1)


# A seeded user's own settings, by style (presets name them): each visibly differs from the owner's.
SEED_STYLES: dict[str, Callable[[RDef, Image], RDef]] = {"narrow": _narrow, "quantized": _quantized}


class RDefStore:
    """Saved rendering settings per (image, user); an owner's unsaved default is computed, never stored."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._saved: dict[tuple[int, int], RDef] = {}
        self._next = SAVED_RDEF_BASE
        for image_id, user_id, style in catalog.rdef_seeds:
            image = catalog.image(image_id)
            if image is not None:
                made = SEED_STYLES[style](default_rdef(image), image)
                self._saved[(image_id, user_id)] = replace(made, id=self._id_for(image, user_id), owner_id=user_id)

    def _id_for(self, image: Image, user_id: int) -> int:
        old = self._saved.get((image.id, user_id))
        if old is not None:
            return old.id
        if user_id == image.owner_id:
            return DEFAULT_RDEF_BASE + image.id
        self._next += 1
        return self._next - 1

    def for_user(self, image: Image, user_id: int) -> RDef:
        """The requester's settings, else the owner's (saved or default)."""
        return (self._saved.get((image.id, user_id)) or self._saved.get((image.id, image.owner_id))
                or default_rdef(image))

    def by_id(self, image: Image, rdef_id: int) -> RDef | None:
        found = next((r for (iid, _), r in self._saved.items() if iid == image.id and r.id == rdef_id), None)
        return found or (default_rdef(image) if rdef_id == DEFAULT_RDEF_BASE + image.id else None)

    def save(self, image: Image, user_id: int, params: Mapping[str, str]) -> RDef:
        """saveImgRDef (gw/views.py:876-967 with saveDefs): the query over the user's settings, all of it
        kept (quantization and inversion included) except projection and `ia`; `z`/`t` are 1-based."""
        rdef = self.compose(image, user_id, params)
        self._saved[(image.id, user_id)] = rdef
        self.catalog.journal.rendering(image, rdef.id, user_id)
        return rdef

    def compose(self, image: Image, user_id: int, params: Mapping[str, str]) -> RDef:
        """The settings `params` make of the user's own, unsaved (copyImgRDef's rdef from the request)."""
        base = self.for_user(image, user_id)
        spec = resolve(base, params, image)
        px = image.pixels
        z = _plane_param(params, "z", base.default_z, px.size_z)
        t = _plane_param(params, "t", base.default_t, px.size_t)
        return RDef(self._id_for(image, user_id), user_id, spec.model, spec.channels, z, t)

    def _keep(self, image: Image, user_id: int, rdef: RDef) -> None:
        px = image.pixels
        self._saved[(image.id, user_id)] = replace(rdef, id=self._id_for(image, user_id), owner_id=user_id,
                                                   default_z=min(rdef.default_z, px.size_z - 1),
                                                   default_t=min(rdef.default_t, px.size_t - 1))
        self.catalog.journal.rendering(image, self._saved[(image.id, user_id)].id, user_id)

    def paste(self, image: Image, user_id: int, source: RDef) -> bool:
        """applySettingsToSet for one image: the source's settings become the user's own when the channel
        counts match (RenderingSettingsI refuses others: the answer's `false` list)."""
        if len(source.channels) != image.pixels.size_c:
            return False
        self._keep(image, user_id, source)
        return True

    def reset(self, image: Image, user_id: int) -> None:
        """resetDefaultsInSet: the import defaults become the user's settings (a reader no longer sees the
        owner's); for the owner that is the computed default again."""
        if user_id == image.owner_id:
            self._saved.pop((image.id, user_id), None)
            self.catalog.journal.rendering(image, DEFAULT_RDEF_BASE + image.id, user_id)
        else:
            self._keep(image, user_id, default_rdef(image))

    def to_owners(self, image: Image, user_id: int) -> None:
        """resetDefaultsByOwnerInSet: a copy of the owner's current settings becomes the user's."""
        if user_id != image.owner_id:
            self._keep(image, user_id, self.for_user(image, image.owner_id))

    def all_for(self, image: Image) -> list[RDef]:
        """getAllRenderingDefs: every user's saved settings on the image, the owner's (default if unsaved) first."""
        owner = self._saved.get((image.id, image.owner_id)) or default_rdef(image)
        return [owner] + [r for (iid, uid), r in sorted(self._saved.items())
                          if iid == image.id and uid != image.owner_id]

    def summaries(self) -> list[dict]:
        return [{"image": iid, "user": self.catalog.users[uid].name, **r.summary()}
                for (iid, uid), r in sorted(self._saved.items())]


def _plane_param(params: Mapping[str, str], name: str, default: int, size: int) -> int:
    if name not in params:
        return default
    try:
        value = int(params[name]) - 1
    except ValueError:
        raise BadParam(f"{name} must be an integer") from None
    if not 0 <= value < size:
        raise BadParam(f"{name} out of range")
    return value


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


def _maps(value: str | None, count: int, ms: bool) -> list[dict | None]:
    """One `maps` entry per listed channel (None: no entry). OMERO.web ignores a `maps` it cannot use
    (gw/views.py:840-873, 898-915 log and go on); the microservice rejects it (ImageRegionCtx.java:150-156)."""
    try:
        maps = json.loads(value) if value else None
    except ValueError:
        maps = False
    usable = isinstance(maps, list) and all(isinstance(m, dict) for m in maps)
    if ms and value and not (usable and len(maps) == count):
        raise BadParam("Must provide codomain map for all provided channels or none")
    entries: list[dict | None] = list(maps) if usable else []
    return (entries + [None] * count)[:count]


def _flag(entry: dict, order: tuple[str, str]) -> object:
    first = entry.get(order[0])
    return entry.get(order[1]) if first is None else first


def _apply_map(ch: Channel, entry: dict | None, ms: bool) -> Channel:
    """`maps[i]` over a channel. Quantization: family with coefficient (default 1.0) or no change
    (gw/views.py:906-914, omero-py setQuantizationMaps; ImageRegionCtx.java:417-431). Inversion: OMERO.web
    sets it from every entry (absent → off, gw/views.py:857-867); the microservice only turns it on
    (ImageRegionCtx.java:444-452), so a saved inversion survives `"enabled": false` there."""
    if entry is None:
        return ch
    flag = _flag(entry, ("reverse", "inverted") if ms else ("inverted", "reverse"))
    value = flag.get("enabled") if isinstance(flag, dict) else None
    enabled = value is True if ms else value in (True, "true")      # Java's Boolean.TRUE.equals vs Python's `in`
    if enabled or not ms:
        ch = replace(ch, inverted=enabled)
    quant = entry.get("quantization")
    if isinstance(quant, dict) and quant.get("family") in FAMILIES:
        coefficient = quant.get("coefficient", 1.0)
        if isinstance(coefficient, (int, float)) and not isinstance(coefficient, bool):
            ch = replace(ch, family=quant["family"], coefficient=float(coefficient))
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


def resolve(rdef: RDef, params: Mapping[str, str], image: Image, formats: tuple[str, ...] = (),
            ms: bool = False) -> RenderSpec:
    """Merge URL params over an rdef (OMERO.web's rules, or the microservice's with `ms`); raises
    BadParam for input OMERO answers with 400."""
    channels = list(rdef.channels)
    entries = parse_c(params["c"]) if params.get("c") else ()
    maps = _maps(params.get("maps"), len(entries), ms)
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
            channels[e.index] = _apply_map(ch, m, ms)
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
    """The microservice: `c` with windows and colours and `m` are mandatory."""
    if not is_explicit(params):
        raise BadParam("c (with a window and colour for every channel) and m (g|c) are required")


def rdef_query_error(params: Mapping[str, str]) -> str | None:
    """validate_rdef_query (gw/views.py:208-252): the 400 text of OMERO.web's `_rdef` views and saveImgRDef."""
    if "c" not in params:
        return "Rendering settings must specify channels as c"
    for e in parse_c(params["c"]):
        if e.window is None:
            return "Must specify window for each channel"
        if e.color is None:
            return "Must specify color for each channel"
    if params.get("m") not in ("g", "c"):
        return 'Query parameter "m" must be present with value either "g" or "c"'
    if "maps" in params:
        try:
            maps = json.loads(params["maps"])
        except ValueError:
            return "Failed to parse maps JSON"
        if not isinstance(maps, list) or len(maps) != len(params["c"].split(",")):
            return 'Number of "maps" must match number of channels'
    return None
