"""The embedded toy data set: a small, deterministic MVTec-AD-style data set made offline.

A fresh machine has no MVTec AD, yet ``make reproduce`` and the tutorial must run end to
end. :func:`generate_toy` writes a data set with MVTec AD's folder layout::

    OUT/<category>/train/good/000.png
    OUT/<category>/test/good/000.png
    OUT/<category>/test/<defect>/000.png
    OUT/<category>/ground_truth/<defect>/000_mask.png    (0/255, same size as the image)
    OUT/<category>/.toy.json                             (parameters, written last)
    OUT/README.txt

Categories (:data:`TOY_CATEGORIES`):

- ``brick``, ``grass``, ``gravel``: textures built on the CC0 photographs that scikit-image
  ships inside its wheel (``skimage.data.brick/grass/gravel``, greyscale 512x512, no
  download). Each is colourised with a per-category colour ramp; every normal image is a
  different random crop with a small scale change, flips, a rotation (small for brick, whose
  rows have a direction; any angle for grass and gravel), a brightness / colour-cast /
  lighting-gradient jitter and a little sensor noise.
- ``nut``: a hexagonal nut seen from above, drawn procedurally (anti-aliased signed
  distance fields): chamfered corners, countersunk threaded through hole, lathe rings, a
  soft shadow on a plain dark background, with small pose jitter (position, angle, size)
  and lighting variation (light direction, brightness, background tone).

Defect kinds (:data:`TOY_DEFECTS` says which category has which; 3 each):

- ``scratch``  thin curved (Bezier) line, lighter or darker, 0.7-2.4 px wide.
- ``crack``    branching dark polyline, tapering, random-walk shaped.
- ``hole``     dark irregular blob with a raised, side-lit rim.
- ``stain``    soft-edged translucent colour blob (oil, rust, dust), from faint to strong.
- ``missing``  (nut) a bite or a broken-off corner, cut away to background, fracture rim.
- ``color``    a region whose hue / saturation / tint is shifted, soft edge.

Sizes (small to large) and contrasts (subtle to obvious) are drawn per image, so a model
that is only half right does not score 100. The ground-truth mask is exactly the set of
pixels a defect touched (its anti-aliased support, binarised); outside the mask the defect
image is bit-identical to the clean image it was made from (:func:`make_sample` returns
both). Everything is drawn from ``numpy.random.default_rng`` seeded by ``(seed, category,
split, index)``, so one image never depends on which other images or categories are made,
and the same seed gives byte-identical PNGs on the same software stack.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

from dhkd.errors import DhkdError
from dhkd.io import atomic_write_text

__all__ = [
    "TOY_CATEGORIES",
    "TOY_DEFECTS",
    "DEFECT_KINDS",
    "ToySample",
    "expected_files",
    "generate_toy",
    "make_sample",
]

#: Bumped whenever the pictures change, so an old stamp no longer counts as complete.
TOY_VERSION = 1

TOY_CATEGORIES: tuple[str, ...] = ("brick", "grass", "gravel", "nut")

TOY_DEFECTS: dict[str, tuple[str, ...]] = {
    "brick": ("crack", "hole", "stain"),
    "grass": ("color", "hole", "stain"),
    "gravel": ("color", "crack", "scratch"),
    "nut": ("missing", "scratch", "stain"),
}

DEFECT_KINDS: tuple[str, ...] = ("scratch", "crack", "hole", "stain", "missing", "color")

DEFAULT_IMAGE_SIZE = 256
DEFAULT_N_TRAIN = 60
DEFAULT_N_TEST_GOOD = 12
DEFAULT_N_TEST_PER_DEFECT = 8

STAMP_NAME = ".toy.json"
_SPLITS = ("train", "good") + DEFECT_KINDS
_MIN_CHANGE = 6 / 255  # a defect must change at least one pixel by this much
_NOISE_SIGMA = 1.2 / 255  # sensor noise, identical in a defect image and its clean twin


# --------------------------------------------------------------------------------------
# small drawing helpers (all in float32 RGB in [0, 1], pixel units, (y, x) order)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return yy, xx


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Gaussian-smoothed white noise rescaled to unit standard deviation."""
    field = ndimage.gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), sigma, mode="wrap")
    return field / max(float(field.std()), 1e-6)


def _blob_sdf(
    rng: np.random.Generator, size: int, cy: float, cx: float, radius: float, irregular: float, roughness: float
) -> np.ndarray:
    """Approximate signed distance (pixels, negative inside) to an irregular blob."""
    yy, xx = _grid(size)
    dy, dx = yy - cy, xx - cx
    phi = np.arctan2(dy, dx)
    rho = np.hypot(dy, dx)
    r = np.ones_like(phi)
    for k in range(2, 6):
        r += irregular / k * rng.uniform(0.3, 1.0) * np.cos(k * phi + rng.uniform(0, 2 * np.pi))
    sdf = rho - radius * r
    if roughness > 0:
        sdf += roughness * radius * _smooth_noise(rng, size, max(radius / 3.0, 1.0))
    return sdf


def _stroke_alpha(size: int, points: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage of a polyline (points (N, 2) as y, x) with per-point widths."""
    alpha = np.zeros((size, size), np.float32)
    pad = float(widths.max()) / 2 + 2
    y0 = max(int(math.floor(points[:, 0].min() - pad)), 0)
    y1 = min(int(math.ceil(points[:, 0].max() + pad)) + 1, size)
    x0 = max(int(math.floor(points[:, 1].min() - pad)), 0)
    x1 = min(int(math.ceil(points[:, 1].max() + pad)) + 1, size)
    if y0 >= y1 or x0 >= x1:
        return alpha
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    p = np.stack([yy.ravel(), xx.ravel()], 1)[:, None, :]  # P, 1, 2
    best = np.zeros(p.shape[0], np.float32)
    for start in range(0, len(points) - 1, 32):
        a = points[start : start + 33][:-1].astype(np.float32)
        b = points[start + 1 : start + 33].astype(np.float32)
        wa, wb = widths[start : start + 33][:-1], widths[start + 1 : start + 33]
        ab = b - a
        denom = np.maximum((ab**2).sum(1), 1e-6)
        t = np.clip(((p - a) * ab).sum(2) / denom, 0.0, 1.0)  # P, S
        d = np.hypot(*np.moveaxis(p - (a + t[..., None] * ab), 2, 0))
        w = wa + t * (wb - wa)
        best = np.maximum(best, np.clip(w / 2 + 0.5 - d, 0.0, 1.0).max(1))
    alpha[y0:y1, x0:x1] = best.reshape(yy.shape)
    return alpha


def _rgb_to_yiq(rgb: np.ndarray) -> np.ndarray:
    m = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
    return rgb @ m.T


def _yiq_to_rgb(yiq: np.ndarray) -> np.ndarray:
    m = np.array([[1.0, 0.956, 0.621], [1.0, -0.272, -0.647], [1.0, -1.106, 1.703]], np.float32)
    return yiq @ m.T


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _place(rng: np.random.Generator, surface: np.ndarray, margin: float) -> tuple[float, float]:
    """A random point (y, x) on the surface, at least ``margin`` pixels from the border."""
    size = surface.shape[0]
    m = int(margin)
    inner = np.zeros_like(surface, dtype=bool)
    inner[m : size - m, m : size - m] = surface[m : size - m, m : size - m] > 0.95
    candidates = np.flatnonzero(inner)
    if candidates.size == 0:
        candidates = np.flatnonzero(surface > 0.5)
    index = int(candidates[rng.integers(candidates.size)])
    return float(index // size) + rng.uniform(-0.5, 0.5), float(index % size) + rng.uniform(-0.5, 0.5)


# --------------------------------------------------------------------------------------
# normal images: textures


@dataclass(frozen=True)
class _TextureSpec:
    source: str  # name of the skimage.data function
    crop: float  # source pixels per output image side
    max_rotation: float  # degrees
    stops: tuple[tuple[float, tuple[float, float, float]], ...]  # grey -> RGB colour ramp


_TEXTURES: dict[str, _TextureSpec] = {
    "brick": _TextureSpec(
        "brick",
        288,
        4.0,
        (
            (0.00, (0.20, 0.07, 0.05)),
            (0.18, (0.52, 0.21, 0.14)),
            (0.40, (0.68, 0.36, 0.26)),
            (0.70, (0.80, 0.73, 0.65)),
            (1.00, (0.94, 0.91, 0.86)),
        ),
    ),
    "grass": _TextureSpec(
        "grass",
        300,
        180.0,
        (
            (0.00, (0.03, 0.07, 0.02)),
            (0.35, (0.12, 0.28, 0.06)),
            (0.60, (0.30, 0.50, 0.12)),
            (0.85, (0.58, 0.72, 0.30)),
            (1.00, (0.82, 0.88, 0.55)),
        ),
    ),
    "gravel": _TextureSpec(
        "gravel",
        256,
        180.0,
        (
            (0.00, (0.10, 0.09, 0.08)),
            (0.50, (0.46, 0.43, 0.39)),
            (0.80, (0.70, 0.67, 0.61)),
            (1.00, (0.92, 0.90, 0.85)),
        ),
    ),
}


@lru_cache(maxsize=4)
def _texture_photo(name: str) -> np.ndarray:
    """The scikit-image photograph, greyscale, stretched to [0, 1] by its 1st/99th percentile."""
    try:
        import skimage.data

        image = np.asarray(getattr(skimage.data, name)(), dtype=np.float32)
    except Exception as error:  # noqa: BLE001 - any failure means the same thing to the user
        raise DhkdError(
            f"cannot load the texture photograph skimage.data.{name}() for the toy data set: {error}",
            "install scikit-image from a wheel (it ships brick.png, grass.png and gravel.png), "
            "or choose only the 'nut' toy category",
        ) from None
    if image.ndim == 3:
        image = image[..., :3].mean(2)
    low, high = np.percentile(image, [1, 99])
    return np.clip((image - low) / max(high - low, 1.0), 0.0, 1.0)


@lru_cache(maxsize=8)
def _prefiltered(name: str, sigma: float) -> np.ndarray:
    """The photograph blurred against aliasing when it is shrunk by the crop."""
    photo = _texture_photo(name)
    return ndimage.gaussian_filter(photo, sigma, mode="reflect") if sigma > 0.05 else photo


def _colour_ramp(grey: np.ndarray, stops: tuple) -> np.ndarray:
    positions = [s[0] for s in stops]
    channels = [np.interp(grey, positions, [s[1][c] for s in stops]) for c in range(3)]
    return np.stack(channels, -1).astype(np.float32)


def _texture_image(category: str, rng: np.random.Generator, size: int) -> np.ndarray:
    spec = _TEXTURES[category]
    nominal = spec.crop / size
    source = _prefiltered(spec.source, round(0.5 * math.sqrt(max(nominal**2 - 1.0, 0.0)), 3))
    scale = nominal * rng.uniform(0.94, 1.06)
    angle = math.radians(rng.uniform(-spec.max_rotation, spec.max_rotation))
    flip_x = 1.0 if rng.random() < 0.5 else -1.0
    flip_y = 1.0 if rng.random() < 0.5 else -1.0
    extent = source.shape[0]
    half = size * scale / 2 * (abs(math.cos(angle)) + abs(math.sin(angle))) + 2
    cy = rng.uniform(half, extent - half)
    cx = rng.uniform(half, extent - half)
    c = (np.arange(size, dtype=np.float32) - (size - 1) / 2) * scale
    u = np.broadcast_to(c[None, :] * flip_x, (size, size))
    v = np.broadcast_to(c[:, None] * flip_y, (size, size))
    sx = cx + u * math.cos(angle) - v * math.sin(angle)
    sy = cy + u * math.sin(angle) + v * math.cos(angle)
    grey = ndimage.map_coordinates(source, [sy, sx], order=1, mode="reflect")
    grey = 0.5 + (grey - 0.5) * rng.uniform(0.94, 1.06)
    rgb = _colour_ramp(grey, spec.stops)
    gain = rng.uniform(0.92, 1.08) * (1.0 + rng.normal(0.0, 0.015, 3))
    light = rng.uniform(0, 2 * np.pi)
    yy, xx = _grid(size)
    gradient = 1.0 + rng.uniform(0.0, 0.05) * ((xx - size / 2) * math.cos(light) + (yy - size / 2) * math.sin(light)) / size
    return np.clip(rgb * gain.astype(np.float32) * gradient[..., None], 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------------------
# normal images: the nut


@dataclass(frozen=True)
class _Nut:
    cy: float
    cx: float
    angle: float  # radians
    apothem: float  # centre to flat side, pixels
    light: float  # direction the light comes from, radians
    metal: np.ndarray  # RGB base colour
    background: np.ndarray  # RGB background colour
    rings: np.ndarray  # lathe-ring brightness per pixel of radius
    grain: np.ndarray  # fine surface grain (size, size)
    thread_phase: float


def _nut_params(rng: np.random.Generator, size: int) -> _Nut:
    k = size / 256
    apothem = 0.30 * size * rng.uniform(0.97, 1.03)
    tone = rng.uniform(0.90, 1.08)
    metal = np.array([0.60, 0.61, 0.64], np.float32) * tone * (1 + rng.normal(0, 0.01, 3)).astype(np.float32)
    background = np.array([0.15, 0.16, 0.18], np.float32) * rng.uniform(0.85, 1.15)
    rings = ndimage.gaussian_filter1d(rng.standard_normal(int(apothem * 1.3) + 4).astype(np.float32), 0.8 * k + 0.3)
    rings = 0.035 * rings / max(float(rings.std()), 1e-6)
    grain = 0.015 * _smooth_noise(rng, size, 0.7 * k + 0.2)
    return _Nut(
        cy=size / 2 + rng.uniform(-0.03, 0.03) * size,
        cx=size / 2 + rng.uniform(-0.03, 0.03) * size,
        angle=math.radians(rng.uniform(-10, 10)),
        apothem=apothem,
        light=math.radians(225 + rng.uniform(-20, 20)),
        metal=metal,
        background=background,
        rings=rings,
        grain=grain,
        thread_phase=rng.uniform(0, 2 * np.pi),
    )


def _nut_image(
    nut: _Nut, size: int, cut: np.ndarray | None = None, rim: tuple[float, float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Render the nut; return (rgb, coverage of the nut's material).

    ``cut`` is a signed distance field (negative where material is cut away); ``rim`` is
    (width in pixels, brightness factor) of the fracture face left along the cut.
    """
    k = size / 256
    yy, xx = _grid(size)
    dy, dx = yy - nut.cy, xx - nut.cx
    rho = np.hypot(dy, dx)
    phi = np.arctan2(dy, dx)
    ca, sa = math.cos(nut.angle), math.sin(nut.angle)
    u, v = dx * ca + dy * sa, -dx * sa + dy * ca
    hex_sdf = np.max([u * math.cos(j * np.pi / 3) + v * math.sin(j * np.pi / 3) for j in range(6)], axis=0) - nut.apothem
    a = nut.apothem
    r_bore, r_sink, r_chamfer = 0.40 * a, 0.54 * a, 0.985 * a
    r_thread = 0.47 * a

    outer = np.clip(0.5 - hex_sdf, 0, 1)
    material = outer * np.clip(0.5 + (rho - r_bore), 0, 1)

    lit = np.cos(phi - nut.light)  # +1 on the side the light comes from
    ring = np.interp(rho, np.arange(nut.rings.size, dtype=np.float32), nut.rings).astype(np.float32)
    toward = ((dx * math.cos(nut.light) + dy * math.sin(nut.light)) / a).astype(np.float32)
    face = 1.0 + 0.07 * toward + ring + nut.grain
    chamfer = 0.80 + 0.30 * lit + 0.5 * nut.grain
    sink = 0.72 - 0.30 * lit + 0.5 * nut.grain
    pitch = 3.2 * k + 0.6
    thread = (0.34 - 0.10 * lit) * (1 + 0.35 * np.sin(2 * np.pi * (rho - r_bore) / pitch + phi + nut.thread_phase))

    w_chamfer = np.clip(0.5 + (rho - r_chamfer), 0, 1)
    w_sink = np.clip(0.5 - (rho - r_sink), 0, 1)
    w_thread = np.clip(0.5 - (rho - r_thread), 0, 1)
    shade = face * (1 - w_chamfer) + chamfer * w_chamfer
    shade = shade * (1 - w_sink) + sink * w_sink
    shade = shade * (1 - w_thread) + thread * w_thread

    solid = outer
    if cut is not None:
        keep = np.clip(0.5 + cut, 0, 1)
        material = material * keep
        solid = outer * keep
        if rim is not None:
            width, factor = rim
            band = np.clip(0.5 + cut, 0, 1) * np.clip(0.5 - (cut - width), 0, 1)
            shade = shade * (1 + band * (factor - 1))

    metal = np.clip(nut.metal[None, None, :] * shade[..., None], 0, 1)

    # background, lit from the same side, with the nut's soft shadow
    shift = 0.035 * a
    shadow = ndimage.shift(solid, (-shift * math.sin(nut.light), -shift * math.cos(nut.light)), order=1, mode="constant")
    shadow = ndimage.gaussian_filter(shadow, 3.0 * k + 0.5)
    vignette = 1.0 - 0.25 * (rho / size) ** 2
    bg = nut.background[None, None, :] * (vignette * (1 - 0.55 * shadow))[..., None]
    rgb = bg * (1 - material[..., None]) + metal * material[..., None]
    return rgb.astype(np.float32), material.astype(np.float32)


# --------------------------------------------------------------------------------------
# defects: each returns (new rgb, support) where support > 0 exactly where it changed pixels


def _defect_scratch(rgb: np.ndarray, surface: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    size = rgb.shape[0]
    k = size / 256
    length = _log_uniform(rng, 0.06, 0.40) * size
    y, x = _place(rng, surface, 0.05 * size)
    direction = rng.uniform(0, 2 * np.pi)
    bend = rng.uniform(-0.35, 0.35) * length
    p0 = np.array([y, x]) - 0.5 * length * np.array([math.sin(direction), math.cos(direction)])
    p2 = np.array([y, x]) + 0.5 * length * np.array([math.sin(direction), math.cos(direction)])
    p1 = (p0 + p2) / 2 + bend * np.array([math.cos(direction), -math.sin(direction)])
    t = np.linspace(0, 1, max(int(length / 2) + 4, 8))[:, None]
    points = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
    width = max(rng.uniform(0.7, 2.4) * k, 0.7)
    widths = (width * (0.45 + 0.55 * np.sin(np.pi * t[:, 0]) ** 0.5)).astype(np.float32)
    alpha = _stroke_alpha(size, points, widths) * (surface > 0.5)
    contrast = rng.uniform(0.18, 0.85)
    if rng.random() < 0.65:  # scraped: bright
        target = np.clip(0.35 * rgb + 0.65 * np.array([0.93, 0.92, 0.90], np.float32), 0, 1)
    else:  # groove: dark
        target = 0.35 * rgb
    a = (alpha * contrast)[..., None]
    return rgb * (1 - a) + target * a, alpha


def _walk(rng: np.random.Generator, start: np.ndarray, direction: float, length: float, step: float) -> np.ndarray:
    points = [start]
    heading = direction
    for _ in range(max(int(length / step), 2)):
        heading += rng.normal(0, 0.35) + 0.25 * (direction - heading)
        points.append(points[-1] + step * np.array([math.sin(heading), math.cos(heading)]))
    return np.array(points, np.float32)


def _defect_crack(rgb: np.ndarray, surface: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    size = rgb.shape[0]
    k = size / 256
    length = _log_uniform(rng, 0.12, 0.65) * size
    step = max(4.0 * k, 1.5)
    y, x = _place(rng, surface, 0.08 * size)
    direction = rng.uniform(0, 2 * np.pi)
    back = _walk(rng, np.array([y, x], np.float32), direction + np.pi, length / 2, step)
    fore = _walk(rng, np.array([y, x], np.float32), direction, length / 2, step)
    main = np.concatenate([back[::-1], fore[1:]])
    width = max(rng.uniform(0.9, 3.0) * k, 0.8)
    t = np.linspace(0, 1, len(main))
    alpha = _stroke_alpha(size, main, (width * (0.3 + 0.7 * np.sin(np.pi * t) ** 0.6)).astype(np.float32))
    for _ in range(int(rng.integers(1, 4))):
        node = int(rng.integers(1, len(main) - 1))
        side = 1 if rng.random() < 0.5 else -1
        heading = math.atan2(*(main[node + 1] - main[node - 1])) if node + 1 < len(main) else direction
        branch = _walk(rng, main[node], heading + side * rng.uniform(0.5, 1.1), length * rng.uniform(0.12, 0.4), step)
        tb = np.linspace(0, 1, len(branch))
        bw = (0.65 * width * (1 - 0.7 * tb)).astype(np.float32)
        alpha = np.maximum(alpha, _stroke_alpha(size, branch, np.maximum(bw, 0.5 * k)))
    alpha = alpha * (surface > 0.5)
    depth = rng.uniform(0.35, 0.85)
    return rgb * (1 - depth * alpha)[..., None], alpha


def _defect_hole(rgb: np.ndarray, surface: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    size = rgb.shape[0]
    k = size / 256
    radius = max(_log_uniform(rng, 0.012, 0.075) * size, 1.6)
    y, x = _place(rng, surface, radius + 0.03 * size)
    sdf = _blob_sdf(rng, size, y, x, radius, irregular=0.35, roughness=0.06)
    inside = np.clip(0.5 - sdf, 0, 1)
    rim_width = max(rng.uniform(0.10, 0.30) * radius, 1.0 * k, 0.8)
    rim = np.clip(0.5 - (sdf - rim_width), 0, 1) - inside
    light = rng.uniform(0, 2 * np.pi)
    yy, xx = _grid(size)
    rho = np.maximum(np.hypot(yy - y, xx - x), 1e-3)
    facing = ((xx - x) * math.cos(light) + (yy - y) * math.sin(light)) / rho
    floor = rng.uniform(0.08, 0.45)
    wall = np.clip(floor * (1 - 0.6 * facing * np.clip(rho / radius, 0, 1)), 0.02, 1)
    dark = rgb * wall[..., None] + 0.02
    out = rgb * (1 - inside[..., None]) + dark * inside[..., None]
    raised = 1 + rng.uniform(0.10, 0.35) * facing
    out = out * (1 + rim * (raised - 1))[..., None]
    support = (inside + rim) * (surface > 0.5)
    return np.clip(out, 0, 1), support


_STAIN_COLOURS = (
    # (multiply, add): oil/grease, rust, dried water/dust, dark soot
    ((0.55, 0.48, 0.35), (0.00, 0.00, 0.00)),
    ((0.70, 0.45, 0.25), (0.12, 0.04, 0.00)),
    ((0.55, 0.55, 0.55), (0.38, 0.36, 0.32)),
    ((0.30, 0.30, 0.32), (0.00, 0.00, 0.00)),
)


def _defect_stain(rgb: np.ndarray, surface: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    size = rgb.shape[0]
    radius = max(_log_uniform(rng, 0.025, 0.15) * size, 2.0)
    y, x = _place(rng, surface, 0.03 * size)
    sdf = _blob_sdf(rng, size, y, x, radius, irregular=0.5, roughness=0.12)
    feather = max(rng.uniform(0.15, 0.6) * radius, 1.0)
    profile = _smoothstep(0.5 - sdf / feather)
    profile = np.where(profile >= 0.12, profile, 0.0).astype(np.float32)
    mottle = 1 + 0.25 * _smooth_noise(rng, size, max(radius / 5, 1.0))
    opacity = _log_uniform(rng, 0.12, 0.8)
    mul, add = _STAIN_COLOURS[int(rng.integers(len(_STAIN_COLOURS)))]
    target = np.clip(rgb * np.array(mul, np.float32) + np.array(add, np.float32), 0, 1)
    support = profile * (surface > 0.5)
    a = np.clip(opacity * support * mottle, 0, 1)[..., None]
    return rgb * (1 - a) + target * a, support


# natural discolourations (dried grass, rust, ochre, soot), used for half the color defects
_COLOR_TINTS = (
    (0.80, 0.68, 0.36),
    (0.62, 0.42, 0.22),
    (0.72, 0.40, 0.20),
    (0.80, 0.70, 0.45),
    (0.45, 0.45, 0.48),
)


def _defect_color(rgb: np.ndarray, surface: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    size = rgb.shape[0]
    radius = max(_log_uniform(rng, 0.04, 0.18) * size, 2.5)
    y, x = _place(rng, surface, 0.03 * size)
    sdf = _blob_sdf(rng, size, y, x, radius, irregular=0.45, roughness=0.10)
    feather = max(rng.uniform(0.5, 3.0) * size / 256, 0.7)
    support = np.clip(0.5 - sdf / feather, 0, 1) * (surface > 0.5)
    yiq = _rgb_to_yiq(rgb)
    if rng.random() < 0.5:  # discoloured towards a natural tint, keeping the brightness
        tint = np.array(_COLOR_TINTS[int(rng.integers(len(_COLOR_TINTS)))], np.float32)
        luma = float(_rgb_to_yiq(tint)[0])
        target = np.clip(yiq[..., :1] * (tint / luma) * rng.uniform(0.9, 1.15), 0, 1)
        a = (support * rng.uniform(0.35, 0.9))[..., None]
        return rgb * (1 - a) + target * a, support
    angle = rng.choice([-1, 1]) * rng.uniform(0.25, 1.2)
    gain = rng.uniform(0.6, 1.6)
    offset = rng.uniform(0.015, 0.08)
    direction = rng.uniform(0, 2 * np.pi)
    i, q = yiq[..., 1], yiq[..., 2]
    shifted = np.stack(
        [
            yiq[..., 0] * rng.uniform(0.92, 1.08),
            gain * (i * math.cos(angle) - q * math.sin(angle)) + offset * math.cos(direction),
            gain * (i * math.sin(angle) + q * math.cos(angle)) + offset * math.sin(direction),
        ],
        -1,
    )
    target = np.clip(_yiq_to_rgb(shifted), 0, 1)
    a = (support * rng.uniform(0.5, 1.0))[..., None]
    return rgb * (1 - a) + target * a, support


_DEFECTS: dict[str, Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]] = {
    "scratch": _defect_scratch,
    "crack": _defect_crack,
    "hole": _defect_hole,
    "stain": _defect_stain,
    "color": _defect_color,
}


def _defect_missing(nut: _Nut, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The nut with a chunk broken off: a round bite from an edge or a corner snapped off."""
    k = size / 256
    yy, xx = _grid(size)
    a = nut.apothem
    jag = rng.uniform(0.3, 0.9) * k * _smooth_noise(rng, size, 1.0 * k + 0.5)
    if rng.random() < 0.5:  # bite out of a flat side or corner
        phi = rng.uniform(0, 2 * np.pi)
        reach = a * rng.uniform(0.95, 1.1)
        by, bx = nut.cy + reach * math.sin(phi), nut.cx + reach * math.cos(phi)
        radius = _log_uniform(rng, 0.12, 0.45) * a
        cut = np.hypot(yy - by, xx - bx) - radius
    else:  # a corner snapped off along a chord
        corner = nut.angle + np.pi / 6 + np.pi / 3 * int(rng.integers(6)) + rng.uniform(-0.25, 0.25)
        depth = rng.uniform(0.72, 1.06) * a
        cut = depth - ((xx - nut.cx) * math.cos(corner) + (yy - nut.cy) * math.sin(corner))
    cut = (cut + jag).astype(np.float32)
    rim = (max(rng.uniform(1.0, 2.5) * k, 0.8), rng.uniform(0.6, 1.45))
    clean, material = _nut_image(nut, size)
    broken, left = _nut_image(nut, size, cut=cut, rim=rim)
    band = np.clip(0.5 + cut, 0, 1) * np.clip(0.5 - (cut - rim[0]), 0, 1) * left
    # the mask is the lost material and the fracture face; the broken nut's slightly smaller
    # shadow is only shown inside it (make_sample keeps the clean pixels outside the mask)
    support = np.maximum(material - left, 0) + band
    return broken, support


# --------------------------------------------------------------------------------------
# one sample


@dataclass(frozen=True)
class ToySample:
    """One toy image: the clean version, the final image, and the defect mask (None if good)."""

    clean: np.ndarray  # H, W, 3 uint8
    image: np.ndarray  # H, W, 3 uint8
    mask: np.ndarray | None  # H, W bool


def _category_id(category: str) -> int:
    return zlib.crc32(category.encode("utf-8"))


def _quantise(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def make_sample(category: str, kind: str, index: int, seed: int = 0, image_size: int = DEFAULT_IMAGE_SIZE) -> ToySample:
    """Render one image of a toy category.

    Args:
        category: one of :data:`TOY_CATEGORIES`.
        kind: ``"train"``, ``"good"`` (a normal test image) or one of the category's defects.
        index: image number within that split.
        seed: data set seed.
        image_size: side of the square image in pixels.

    The random stream is seeded by ``(seed, category, kind, index)`` alone. For a defect,
    ``clean`` is the same picture without the defect (same sensor noise), and ``image``
    differs from it only inside ``mask``.
    """
    if category not in TOY_CATEGORIES:
        raise DhkdError(f"unknown toy category {category!r}", f"choose from {', '.join(TOY_CATEGORIES)}")
    if kind not in ("train", "good") + TOY_DEFECTS[category]:
        raise DhkdError(
            f"toy category {category!r} has no image kind {kind!r}",
            f"choose from train, good, {', '.join(TOY_DEFECTS[category])}",
        )
    rng = np.random.default_rng([int(seed), _category_id(category), _SPLITS.index(kind), int(index)])
    size = int(image_size)
    nut = None
    if category == "nut":
        nut = _nut_params(rng, size)
        rgb, material = _nut_image(nut, size)
        surface = np.clip(material * 2 - 1, 0, 1)  # well inside the metal
    else:
        rgb = _texture_image(category, rng, size)
        surface = np.ones((size, size), np.float32)
    noise = rng.normal(0.0, _NOISE_SIGMA, rgb.shape).astype(np.float32)
    clean = _quantise(rgb + noise)
    if kind in ("train", "good"):
        return ToySample(clean=clean, image=clean, mask=None)

    best: tuple[np.ndarray, np.ndarray] | None = None
    for _attempt in range(40):
        out, mask = rgb, np.zeros((size, size), bool)
        count = 1 if kind == "missing" or rng.random() < 0.8 else 2
        for _ in range(count):
            if kind == "missing":
                assert nut is not None
                changed, support = _defect_missing(nut, rng, size)
            else:
                changed, support = _DEFECTS[kind](out, surface, rng)
            touched = support > 0
            out = np.where(touched[..., None], changed, out)
            mask |= touched
        image = np.where(mask[..., None], _quantise(out + noise), clean)
        diff = np.abs(image.astype(np.int16) - clean.astype(np.int16)).max(2)
        if mask.sum() >= 3 and diff.max() >= _MIN_CHANGE * 255:
            best = (image, mask)
            break
    if best is None:  # pragma: no cover - 40 invisible draws in a row does not happen in practice
        raise RuntimeError(f"could not draw a visible {kind} defect for {category} #{index}")
    return ToySample(clean=clean, image=best[0], mask=best[1])


# --------------------------------------------------------------------------------------
# the data set on disk


def _params(category: str, seed: int, image_size: int, n_train: int, n_test_good: int, n_test_per_defect: int) -> dict:
    return {
        "generator": "dhkd.data.toy",
        "version": TOY_VERSION,
        "category": category,
        "seed": seed,
        "image_size": image_size,
        "n_train": n_train,
        "n_test_good": n_test_good,
        "n_test_per_defect": n_test_per_defect,
        "defects": list(TOY_DEFECTS[category]),
    }


def expected_files(category: str, n_train: int, n_test_good: int, n_test_per_defect: int) -> list[str]:
    """Relative paths (inside the category folder) of every PNG a complete category holds."""
    files = [f"train/good/{i:03d}.png" for i in range(n_train)]
    files += [f"test/good/{i:03d}.png" for i in range(n_test_good)]
    for defect in TOY_DEFECTS[category]:
        files += [f"test/{defect}/{i:03d}.png" for i in range(n_test_per_defect)]
        files += [f"ground_truth/{defect}/{i:03d}_mask.png" for i in range(n_test_per_defect)]
    return files


def _is_complete(folder: Path, params: dict) -> bool:
    try:
        stamp = json.loads((folder / STAMP_NAME).read_text())
    except (OSError, ValueError):
        return False
    if stamp != params:
        return False
    files = expected_files(params["category"], params["n_train"], params["n_test_good"], params["n_test_per_defect"])
    return all((folder / name).is_file() for name in files)


def _save_png(path: Path, array: np.ndarray) -> None:
    # deterministic: no timestamps or other metadata, fixed compression level (1: the sensor
    # noise makes higher levels 4x slower for about 10% smaller files)
    Image.fromarray(array).save(path, format="PNG", compress_level=1)


def _write_category(folder: Path, params: dict) -> int:
    category, seed, size = params["category"], params["seed"], params["image_size"]
    count = 0
    (folder / "train" / "good").mkdir(parents=True)
    (folder / "test" / "good").mkdir(parents=True)
    for i in range(params["n_train"]):
        _save_png(folder / "train" / "good" / f"{i:03d}.png", make_sample(category, "train", i, seed, size).image)
        count += 1
    for i in range(params["n_test_good"]):
        _save_png(folder / "test" / "good" / f"{i:03d}.png", make_sample(category, "good", i, seed, size).image)
        count += 1
    for defect in TOY_DEFECTS[category]:
        (folder / "test" / defect).mkdir(parents=True)
        (folder / "ground_truth" / defect).mkdir(parents=True)
        for i in range(params["n_test_per_defect"]):
            sample = make_sample(category, defect, i, seed, size)
            assert sample.mask is not None
            _save_png(folder / "test" / defect / f"{i:03d}.png", sample.image)
            _save_png(folder / "ground_truth" / defect / f"{i:03d}_mask.png", sample.mask.astype(np.uint8) * 255)
            count += 1
    atomic_write_text(folder / STAMP_NAME, json.dumps(params, indent=2) + "\n")  # last: marks completion
    return count


README_FIRST_LINE = "dhkd toy data set\n"  # a README.txt that starts otherwise is the user's: kept


def _readme(out: Path) -> str:
    stamps = []
    for category in TOY_CATEGORIES:
        try:
            stamps.append(json.loads((out / category / STAMP_NAME).read_text()))
        except (OSError, ValueError):
            continue
    lines = [
        README_FIRST_LINE.rstrip("\n"),
        "=================",
        "",
        "A small synthetic anomaly-detection data set in MVTec AD's folder layout, made by",
        "dhkd.data.toy.generate_toy() so that the dhkd kit runs end to end without MVTec AD. It is",
        "NOT MVTec AD and results on it say nothing about the paper's numbers.",
        "",
        "Layout (per category):",
        "  <category>/train/good/NNN.png             normal training images",
        "  <category>/test/good/NNN.png              normal test images",
        "  <category>/test/<defect>/NNN.png          defective test images",
        "  <category>/ground_truth/<defect>/NNN_mask.png  pixel masks, 0 = normal, 255 = defect",
        "  <category>/.toy.json                      generation parameters (written last;",
        "                                            a complete category is not regenerated)",
        "",
        "Categories present:",
    ]
    for stamp in stamps:
        lines.append(
            f"  {stamp['category']:<7} seed {stamp['seed']}, {stamp['image_size']}x{stamp['image_size']} RGB, "
            f"{stamp['n_train']} train, {stamp['n_test_good']} good test, "
            f"{stamp['n_test_per_defect']} per defect: {', '.join(stamp['defects'])}"
        )
    lines += [
        "",
        "How it was made:",
        "  brick, grass, gravel: textures. Random crops (small scale change, flips, rotation:",
        "    a few degrees for brick, any angle for grass and gravel) of the greyscale",
        "    photographs shipped with scikit-image (skimage.data.brick/grass/gravel),",
        "    colourised with a per-category colour ramp, with brightness, colour-cast and",
        "    lighting-gradient jitter and a little sensor noise.",
        "  nut: a hexagonal nut seen from above, drawn procedurally (chamfered corners,",
        "    threaded countersunk bore, lathe rings, soft shadow) with small pose and",
        "    lighting jitter on a plain dark background.",
        "  Defects: scratch (thin curved line), crack (branching dark polyline), hole (dark",
        "    blob with a raised rim), stain (soft translucent blob: oil, rust, dust, soot),",
        "    missing (nut: a chunk cut away to background), color (hue/saturation/tint shift",
        "    of a region). Sizes and contrasts vary from subtle to obvious. A mask marks",
        "    exactly the pixels the defect changed (its anti-aliased footprint, binarised).",
        "  Every image is drawn from numpy.random.default_rng seeded by",
        "    (seed, category, split, index): the same seed gives the same images.",
        "",
        "Licence:",
        "  The texture photographs come from scikit-image's data module (BSD-3-Clause",
        "  package). Their originals are CC0 1.0 (public domain dedication): brick from",
        "  CC0Textures 'Bricks25', gravel from CC0Textures 'Gravel04', grass from DeviantArt",
        "  user linolafett, 'Grass 01'. The nut and all defects are generated by dhkd. The",
        "  generated images may be used freely.",
        "",
    ]
    return "\n".join(lines)


def _check_count(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise DhkdError(f"toy data set: {name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def generate_toy(
    out: str | Path,
    seed: int = 0,
    image_size: int = DEFAULT_IMAGE_SIZE,
    n_train: int = DEFAULT_N_TRAIN,
    n_test_good: int = DEFAULT_N_TEST_GOOD,
    n_test_per_defect: int = DEFAULT_N_TEST_PER_DEFECT,
    categories: Sequence[str] | None = None,
    progress: bool = True,
) -> list[Path]:
    """Write the toy data set under ``out`` and return the category folders, in order.

    A category whose folder already holds a complete set made with the same parameters
    (its ``.toy.json`` stamp matches and every file is there) is left untouched, so this is
    cheap to call every time. Otherwise the category is written into a hidden sibling
    folder and moved into place when complete; an older toy category is replaced, but a
    non-empty folder that was not made by this function is never overwritten.
    """
    seed = _check_count("seed", seed, 0)
    image_size = _check_count("image_size", image_size, 32)
    n_train = _check_count("n_train", n_train, 1)
    n_test_good = _check_count("n_test_good", n_test_good, 1)
    n_test_per_defect = _check_count("n_test_per_defect", n_test_per_defect, 1)
    if categories is None:
        categories = TOY_CATEGORIES
    if isinstance(categories, str):
        categories = [categories]
    unknown = [c for c in categories if c not in TOY_CATEGORIES]
    if unknown:
        raise DhkdError(f"unknown toy categor{'y' if len(unknown) == 1 else 'ies'}: {', '.join(map(repr, unknown))}",
                        f"choose from {', '.join(TOY_CATEGORIES)}")
    categories = list(dict.fromkeys(categories))

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DhkdError(f"toy data set output {out} exists and is not a folder", "choose another output folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DhkdError(f"cannot create the toy data set folder {out}: {error.strerror}",
                        "choose an output folder you can write to") from None

    folders = []
    for category in categories:
        folder = out / category
        params = _params(category, seed, image_size, n_train, n_test_good, n_test_per_defect)
        folders.append(folder)
        if _is_complete(folder, params):
            if progress:
                print(f"toy data: {folder} is complete, kept", file=sys.stderr, flush=True)
            continue
        if folder.exists():
            ours = (folder / STAMP_NAME).exists()
            empty = folder.is_dir() and not any(folder.iterdir())
            if not (ours or empty):
                raise DhkdError(
                    f"{folder} exists and was not made by the toy data generator (no {STAMP_NAME})",
                    "move it away, or generate the toy data set into another folder",
                )
        start = time.perf_counter()
        partial = out / f".{category}.partial"
        if partial.exists():
            shutil.rmtree(partial)
        try:
            count = _write_category(partial, params)
            if folder.exists():
                shutil.rmtree(folder)
            partial.rename(folder)
        except OSError as error:
            raise DhkdError(f"cannot write the toy data set under {out}: {error}",
                            "check free disk space and permissions") from None
        finally:
            if partial.exists():
                shutil.rmtree(partial, ignore_errors=True)
        if progress:
            print(f"toy data: wrote {folder} ({count} images, {time.perf_counter() - start:.1f} s)",
                  file=sys.stderr, flush=True)

    readme = _readme(out)
    path = out / "README.txt"
    try:
        current = path.read_text()
    except OSError:
        current = None
    if current is not None and current != readme and not current.startswith(README_FIRST_LINE):
        print(f"toy data: kept {path}, which the toy generator did not write", file=sys.stderr, flush=True)
    elif current != readme:
        atomic_write_text(path, readme)
    return folders


def ensure_category(data_root: str | Path, category: str) -> Path:
    """``data_root/category``; a missing toy category is generated first (offline, under a minute)."""
    folder = Path(data_root) / category
    if not folder.is_dir() and category in TOY_CATEGORIES:
        generate_toy(data_root, categories=[category])
    return folder
