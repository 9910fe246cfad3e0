"""Deterministic synthetic pixel data and its rendering to real JPEG/PNG bytes with Pillow.

A channel plane is "cells": bright blurred blobs seeded per (image, channel, z, t, grid cell), plus
seeded noise whose strength follows the output scale, which makes a 96 px thumbnail ≈ 3 KB and a
512 px tile ≈ 100 KB. Planes are drawn straight at the output size (a thumbnail never draws the
full plane) and kept in a byte-bounded LRU, so a thumbnail from cached planes costs ~1 ms.
"""
from __future__ import annotations

import io
import math
import random
from functools import lru_cache

from PIL import Image as PILImage, ImageChops, ImageDraw, ImageFilter

from bench.sim.catalog import Image, Pixels
from bench.sim.lru import ByteLRU
from bench.sim.rendering import RAW_MAX, Channel, RenderSpec

CELL = 128                  # blob grid at full resolution
MIN_CELL_PX = 32            # coarser grids at small output scales keep draw counts bounded
BLOBS_PER_CELL = 3
Region = tuple[int, int, int, int]

_planes: ByteLRU[PILImage.Image] = ByteLRU(192 * 2**20, lambda im: im.width * im.height + 200)
_encoded: ByteLRU[bytes] = ByteLRU(8 * 2**20, len)


def _plane(seed: tuple[int, ...], region: Region, out: tuple[int, int]) -> PILImage.Image:
    x, y, w, h = region
    ow, oh = out
    # blobs are smooth: draw and blur them at half the output size, then scale up (4x less work)
    dw, dh = max(1, ow // 2), max(1, oh // 2)
    sx, sy = dw / w, dh / h
    cell = CELL
    while cell * min(sx, sy) * 2 < MIN_CELL_PX:
        cell *= 2
    im = PILImage.new("L", (dw, dh), 10)
    draw = ImageDraw.Draw(im)
    for cy in range(y // cell, (y + h - 1) // cell + 1):
        for cx in range(x // cell, (x + w - 1) // cell + 1):
            rng = random.Random(hash((seed, cell, cx, cy)))
            for _ in range(BLOBS_PER_CELL):
                bx, by = (cx + rng.random()) * cell, (cy + rng.random()) * cell
                rad = (6 + rng.random() * 26) * cell / CELL
                x0, y0 = (bx - rad - x) * sx, (by - rad - y) * sy
                draw.ellipse((x0, y0, x0 + 2 * rad * sx, y0 + 2 * rad * sy), fill=rng.randrange(70, 240))
    im = im.filter(ImageFilter.GaussianBlur(max(0.7, 1.25 * sx))).resize(out, PILImage.Resampling.BILINEAR)
    scale = min(ow / w, oh / h)
    noise = random.Random(hash((seed, region, out))).randbytes(ow * oh).translate(_noise_table(scale))
    return ImageChops.add(im, PILImage.frombytes("L", out, noise))


@lru_cache(maxsize=64)
def _noise_table(scale: float) -> bytes:
    """Scales uniform noise bytes: weaker at small output scales, as downsampling averages it away."""
    amp = min(1.0, scale) ** 1.5 / 4.5
    return bytes(int(v * amp) for v in range(256))


def plane(image: Image, c: int, z: int, t: int, region: Region, out: tuple[int, int]) -> PILImage.Image:
    """One channel plane (8-bit, raw value = v * 16) of `region` (full-resolution px) drawn at `out`."""
    seed = (image.id, c, z, t)
    return _planes.get_or_make((seed, region, out), lambda: _plane(seed, region, out))


@lru_cache(maxsize=4096)
def _palette(ch: Channel, grey: bool) -> bytes:
    """Window, quantization family, inversion and colour folded into one 256-colour RGB palette."""
    span = max(ch.end - ch.start, 1e-9)
    rgb = (255, 255, 255) if grey else tuple(int(ch.color[i:i + 2], 16) for i in (0, 2, 4))
    values = []
    for v in range(256):
        x = min(1.0, max(0.0, (v * 16 + 8 - ch.start) / span))
        if ch.family == "logarithmic":
            x = math.log1p(x * 9 * ch.coefficient) / math.log1p(9 * ch.coefficient) if ch.coefficient > 0 else x
        elif ch.family == "exponential":
            x = x ** (2 * max(ch.coefficient, 0.1))
        elif ch.family == "polynomial":
            x = x ** max(ch.coefficient, 0.1)
        values.append(1.0 - x if ch.inverted else x)
    return bytes(int(x * comp) for x in values for comp in rgb)


def _colored(p: PILImage.Image, palette: bytes) -> PILImage.Image:
    """Apply a palette to an 8-bit plane in C (Image.point would round a 768-entry LUT in Python)."""
    indexed = p.copy()
    indexed.putpalette(palette)
    return indexed.convert("RGB")


def _projected(image: Image, c: int, z: int, t: int, spec: RenderSpec, region: Region,
               out: tuple[int, int]) -> PILImage.Image:
    mode, start, end = spec.projection
    if mode == "normal" or image.pixels.size_z == 1:
        return plane(image, c, z, t, region, out)
    acc = plane(image, c, start, t, region, out)
    for k, zz in enumerate(range(start + 1, end + 1), start=2):
        nxt = plane(image, c, zz, t, region, out)
        acc = {"intmax": ImageChops.lighter, "intsum": ImageChops.add}.get(
            mode, lambda a, b: PILImage.blend(a, b, 1.0 / k))(acc, nxt)
    return acc


def render(image: Image, spec: RenderSpec, z: int, t: int, region: Region, out: tuple[int, int]) -> bytes:
    """Composite the active channels of one plane region and encode it."""
    grey = spec.model == "greyscale"
    active = [(i, ch) for i, ch in enumerate(spec.channels) if ch.active][:1 if grey else None]
    rgb = PILImage.new("RGB", out)
    for i, ch in active:
        p = _projected(image, i, z, t, spec, region, out)
        rgb = ImageChops.add(rgb, _colored(p, _palette(ch, grey)))
    if spec.invert_axis:
        rgb = rgb.transpose(PILImage.Transpose.ROTATE_180)
    if "h" in spec.flip:
        rgb = rgb.transpose(PILImage.Transpose.FLIP_LEFT_RIGHT)
    if "v" in spec.flip:
        rgb = rgb.transpose(PILImage.Transpose.FLIP_TOP_BOTTOM)
    return encode(rgb, spec.fmt, spec.quality)


def encode(im: PILImage.Image, fmt: str, quality: float = 0.85) -> bytes:
    buf = io.BytesIO()
    if fmt == "png":
        im.save(buf, "PNG")
    elif fmt == "tif":
        im.save(buf, "TIFF")
    else:
        im.save(buf, "JPEG", quality=max(1, min(100, round(quality * 100))))
    return buf.getvalue()


MEDIA_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "tif": "image/tiff"}


def thumbnail_box(px: Pixels, w: int | None, h: int | None) -> tuple[int, int]:
    """OMERO's sizes: longest side = w (aspect kept) unless both w and h give an exact box."""
    if w and h:
        return w, h
    side = w or 96
    scale = side / max(px.size_x, px.size_y)
    return max(1, round(px.size_x * scale)), max(1, round(px.size_y * scale))


def histogram(image: Image, c: int, z: int, t: int, bins: int) -> list[int]:
    """Counts of raw values over [0, RAW_MAX] in `bins` bins, from a ≤512 px view of the plane."""
    px = image.pixels
    out = thumbnail_box(px, min(512, max(px.size_x, px.size_y)), None)
    counts = plane(image, c, z, t, (0, 0, px.size_x, px.size_y), out).histogram()
    data = [0] * bins
    for v, n in enumerate(counts):
        data[min(bins - 1, (v * 16 + 8) * bins // (RAW_MAX + 1))] += n
    return data


def _missing(size: tuple[int, int]) -> bytes:
    im = PILImage.new("RGB", (128, 128), (222, 222, 222))
    draw = ImageDraw.Draw(im)
    draw.rectangle((8, 8, 119, 119), outline=(150, 150, 150), width=4)
    draw.ellipse((40, 28, 88, 76), outline=(150, 150, 150), width=6)
    draw.line((30, 100, 98, 100), fill=(150, 150, 150), width=6)
    return encode(im.resize(size), "png")


def _loading(size: tuple[int, int]) -> bytes:
    im = PILImage.new("RGB", (128, 128), (240, 240, 240))
    draw = ImageDraw.Draw(im)
    draw.polygon([(40, 30), (88, 30), (64, 64)], fill=(120, 120, 200))
    draw.polygon([(40, 98), (88, 98), (64, 64)], fill=(120, 120, 200))
    return encode(im.resize(size, PILImage.Resampling.BILINEAR), "jpeg")


def placeholder(size: tuple[int, int]) -> bytes:
    """The webclient's defaultThumbnail (wc/webclient_gateway.py:68-79): `image128.png` resized, PNG bytes
    (served as image/jpeg)."""
    return _encoded.get_or_make(("missing", size), lambda: _missing(size))


def loading(size: tuple[int, int]) -> bytes:
    """OMERO.server's thumbnail while a pyramid is generated: its "loading" picture rasterised as a real
    JPEG at the thumbnail's size (ThumbnailBean.java, compressInProgressImageToStream)."""
    return _encoded.get_or_make(("loading", size), lambda: _loading(size))


def shape_mask(shape_id: int, fill: tuple[int, int, int, int]) -> bytes:
    """An RGBA PNG mask: an ellipse of `fill` on transparent, sized by the shape id."""
    w, h = 40 + shape_id * 7 % 60, 30 + shape_id * 13 % 50
    im = PILImage.new("RGBA", (w, h), (0, 0, 0, 0))
    ImageDraw.Draw(im).ellipse((0, 0, w - 1, h - 1), fill=fill)
    return encode(im, "png")
