"""The file layer of data loading: items, the problems found, and reading image files.

Both data layouts (MVTec AD's folders, :mod:`dhkd.data.dataset_file`) and ``dhkd predict`` list
their images as :class:`Item` s and report what is wrong as :class:`Problem` s, so that one error
lists every problem of a data set at once (:func:`raise_problems`) rather than the first.

Image modes: greyscale, palette, RGBA (alpha is dropped, the colour channels kept) and 16-bit
greyscale (``I;16``/``I``: scaled from 0..65535 to 0..255, i.e. divided by 257) all become
8-bit RGB. 16-bit RGB PNGs are reduced to 8 bits by Pillow itself when it opens them. What is
skipped silently: names starting with ``.`` (``.DS_Store``, macOS ``._*`` files) and the Windows
thumbnails files ``Thumbs.db`` / ``desktop.ini``.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from dhkd.data.fit import Fit
from dhkd.errors import DhkdError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MAX_LISTED = 10  # problems listed in one error before "... and N more"
IGNORED_NAMES = {"thumbs.db", "desktop.ini"}  # OS clutter, skipped like hidden files
WORKERS = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 2)


@dataclass(frozen=True)
class Item:
    path: Path
    defect_type: str
    mask: Path | None  # None for good images, and for defective images without a mask (data-set files)


@dataclass(frozen=True)
class Problem:
    what: str
    fix: str


def is_ignored(path: Path) -> bool:
    return path.name.startswith(".") or path.name.lower() in IGNORED_NAMES


def image_files(folder: Path, problems: list[Problem]) -> list[Path]:
    """Sorted image files in ``folder``; anything else (except hidden/OS files) is a problem."""
    images = []
    for path in sorted(folder.iterdir()):
        if is_ignored(path):
            continue
        if path.is_dir():
            problems.append(Problem(
                f"unexpected folder {path} among the images in {folder}",
                "image folders hold image files only; move the sub-folder out",
            ))  # fmt: skip
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            images.append(path)
        else:
            problems.append(Problem(
                f"{path} is not an image (suffix {path.suffix or '(none)'!r}); image folders may only hold "
                f"{', '.join(IMAGE_SUFFIXES)} files",
                "move the file out of the image folder (hidden files starting with '.' are ignored)",
            ))  # fmt: skip
    return images



# --------------------------------------------------------------------------------------------
# Reading files


@dataclass(frozen=True)
class Header:
    """What a check needs of an image: its size and mode as the file says."""

    size: tuple[int, int]
    mode: str
    format: str | None


class BadFile(Exception):
    def __init__(self, problem: Problem) -> None:
        self.problem = problem


def describe_error(path: Path, error: Exception) -> str:
    text = str(error)
    if isinstance(error, PermissionError):
        return "permission denied"
    if isinstance(error, Image.DecompressionBombError):
        return (f"it is too large to decode safely ({text.split(' pixels')[0].split('(')[-1]} pixels; PIL's limit is "
                f"{2 * (Image.MAX_IMAGE_PIXELS or 0)}): a decompression bomb, or a genuinely huge image")
    if isinstance(error, UnidentifiedImageError):
        if path.is_file() and path.stat().st_size == 0:
            return "the file is empty (0 bytes)"
        return "it is not an image file PIL can read (check what the file really is)"
    if "truncated" in text.lower():
        return "the file is truncated (an interrupted download or copy?)"
    return f"the file is corrupt ({type(error).__name__}: {text})"


def open_image(path: Path, kind: str, decode: bool) -> Image.Image | Header:
    """Check that ``path`` is an intact image and return it, decoded when ``decode``.

    PNGs are ``verify()``-ed first (chunk checksums, a missing end): that catches truncation and
    corruption in about 1 ms per 900x900 file, against about 30 ms for a full decode. A TIFF is
    checked from its header: every strip or tile its tags name must lie inside the file (what a
    truncated copy breaks); the pixels are decoded once, when loading. A JPEG is checked by
    decoding it at 1/8 scale (the DCT's own reduction: the whole stream is read, the pixels are
    not made); other formats are decoded. Without
    ``decode`` the returned image is closed and only its ``size`` and ``mode`` may be used. An image
    over PIL's pixel limit (``Image.MAX_IMAGE_PIXELS``, a decompression bomb) is refused as such.
    """
    try:
        with Image.open(path) as img:
            if img.format == "PNG":
                img.verify()
            elif not decode:
                header = Header(img.size, img.mode, img.format)
                if img.format == "TIFF" and tiff_data_fits(img, path):
                    return header
                if img.format == "JPEG":
                    img.draft(img.mode, (max(1, img.size[0] // 8), max(1, img.size[1] // 8)))
                img.load()
                return header  # the file's size, not the draft's
            if not decode:
                return img
        with Image.open(path) as img:
            img.load()  # the pixels stay in memory after the file closes
            return img
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, zlib.error...
        raise BadFile(Problem(
            f"cannot read {kind} {path}: {describe_error(path, error)}",
            "replace it with an intact copy (re-download or re-extract the data) or delete it",
        )) from None  # fmt: skip


STRIP_OFFSETS, STRIP_BYTE_COUNTS, TILE_OFFSETS, TILE_BYTE_COUNTS = 273, 279, 324, 325  # TIFF tags


def tiff_data_fits(img: Image.Image, path: Path) -> bool:
    """Whether every strip (or tile) a TIFF's tags name ends inside the file; raises when one does
    not (a truncated file). False when the tags do not say (the caller then decodes to check)."""
    tags = getattr(img, "tag_v2", {})
    offsets = tags.get(STRIP_OFFSETS) or tags.get(TILE_OFFSETS)
    counts = tags.get(STRIP_BYTE_COUNTS) or tags.get(TILE_BYTE_COUNTS)
    if not offsets or not counts or len(offsets) != len(counts):
        return False
    end, size = max(o + c for o, c in zip(offsets, counts)), path.stat().st_size
    if end > size:
        raise OSError(f"image file is truncated ({size} of the {end} bytes its tags name)")
    return True


def to_8bit(img: Image.Image) -> Image.Image:
    """16-bit and float images to 8-bit greyscale, scaled rather than clipped (PIL clips)."""
    if img.mode.startswith("I;16") or img.mode == "I":
        values = np.asarray(img).astype(np.int64)
        bits = 16 if img.mode.startswith("I;16") or values.max(initial=0) <= 65535 else 32
        top = (1 << bits) - 1
        values = (np.clip(values, 0, top) * 255 + top // 2) // top  # rounds; k * 257 -> k for 16 bits
        return Image.fromarray(values.astype(np.uint8))
    if img.mode == "F":
        values = np.asarray(img, dtype=np.float64)
        scale = 255.0 if values.max(initial=0.0) <= 1.0 else 1.0  # [0, 1] floats or 0..255 floats
        return Image.fromarray(np.clip(np.rint(values * scale), 0, 255).astype(np.uint8))
    if img.mode in ("P", "PA"):
        return img.convert("RGBA")  # palette transparency goes through RGBA without a warning
    return img


def mask_levels(img: Image.Image) -> np.ndarray:
    """A mask image -> uint8 (H, W) on the 0..255 scale, whatever its encoding (see :func:`binarize_mask`)."""
    if img.mode in ("P", "PA"):
        img = img.convert("RGBA")
    values = np.asarray(img)
    if values.ndim == 3:
        values = values[..., :3].max(axis=-1) if values.shape[-1] >= 3 else values[..., 0]
    values = values.astype(np.float64)
    largest = values.max(initial=0.0)
    scale = 1.0 if largest <= 1 else 255.0 if largest <= 255 else 65535.0
    return np.clip(np.rint(values * (255.0 / scale)), 0, 255).astype(np.uint8)


def binarize_mask(img: Image.Image) -> np.ndarray:
    """A mask image -> bool (H, W) at its own size: defect where the value is above half its scale.

    The scale is 1, 255 or 65535: the smallest that holds the mask's largest value. So 0/1 and
    0/255 masks (8 or 16 bits) are both right, and anti-aliased ones are cut at their middle grey
    (> 127 of 255). Colour, RGBA and palette masks are read through their colours and a pixel
    counts by its brightest channel (pure red is as much a defect as white). Loading resizes the
    0..255 levels (:func:`mask_levels`) before cutting at the middle, as RD4AD does.
    """
    return mask_levels(img) > 127


def read_item(item: Item, fit: Fit) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int]]:
    """Decode one image (CHW uint8 at ``fit``'s shape), its mask (HW bool, None for good images)
    and the image's own ``(width, height)`` (where its content lies: ``fit.box``)."""
    img = open_image(item.path, "image", decode=True)
    mask_img = None if item.mask is None else open_image(item.mask, "mask", decode=True)
    if mask_img is not None and mask_img.size != img.size:
        raise BadFile(size_problem(item, img.size, mask_img.size))
    try:
        # HWC -> CHW here, in numpy: torch's strided uint8 copy is ~50x slower (7 ms an image)
        image = np.ascontiguousarray(fit.image(to_8bit(img).convert("RGB")).transpose(2, 0, 1))
    except (ValueError, OSError) as error:  # a mode PIL cannot convert, e.g. "La"
        raise BadFile(unsupported(item.path, img, error)) from None
    if mask_img is None:
        return image, None, img.size
    try:
        mask = fit.mask(mask_levels(mask_img))  # v / 255 > 0.5 after resizing, as RD4AD
    except (ValueError, OSError, TypeError) as error:
        raise BadFile(unsupported(item.mask, mask_img, error)) from None
    return image, mask, img.size


def read_mask(item: Item, fit: Fit) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode one item's mask alone (HW bool at ``fit``'s shape), checked against its image's
    size, and that image's ``(width, height)``."""
    assert item.mask is not None
    mask_img = open_image(item.mask, "mask", decode=True)
    image = open_image(item.path, "image", decode=False)
    if mask_img.size != image.size:
        raise BadFile(size_problem(item, image.size, mask_img.size))
    try:
        return fit.mask(mask_levels(mask_img)), image.size
    except (ValueError, OSError, TypeError) as error:
        raise BadFile(unsupported(item.mask, mask_img, error)) from None


def image_size_of(item: Item) -> tuple[int, int]:
    """An image's ``(width, height)`` from its header (a JPEG is checked at 1/8 scale, see :func:`open_image`)."""
    return open_image(item.path, "image", decode=False).size


def unsupported(path: Path | None, img: Image.Image, error: Exception) -> Problem:
    return Problem(f"cannot convert {path} (PIL mode {img.mode}) to 8-bit: {error}", "save it as an 8-bit RGB or greyscale PNG")


def check_item(item: Item) -> None:
    img = open_image(item.path, "image", decode=False)
    if item.mask is not None:
        mask = open_image(item.mask, "mask", decode=False)
        if mask.size != img.size:
            raise BadFile(size_problem(item, img.size, mask.size))


def size_problem(item: Item, image_size: tuple[int, int], mask_size: tuple[int, int]) -> Problem:
    (w, h), (mw, mh) = image_size, mask_size
    return Problem(
        f"mask {item.mask} is {mw}x{mh} but its image {item.path} is {w}x{h}",
        f"a mask must have its image's size; re-export it at {w}x{h}",
    )


T = TypeVar("T")


def run_parallel(task: Callable[[Item], T], items: Sequence[Item], desc: str, progress: bool) -> tuple[list[T | None], list[Problem]]:
    """``task`` over ``items`` on a few threads (PIL releases the GIL while decoding), in order."""

    def safe(item: Item) -> tuple[T | None, Problem | None]:
        try:
            return task(item), None
        except BadFile as bad:
            return None, bad.problem

    results: list[T | None] = []
    problems: list[Problem] = []
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        bar = tqdm(pool.map(safe, items), total=len(items), desc=desc, unit="img", disable=not progress, leave=False)
        for result, problem in bar:
            results.append(result)
            if problem is not None:
                problems.append(problem)
    return results, problems


def raise_problems(problems: list[Problem], context: str) -> None:
    if not problems:
        return
    if len(problems) == 1:
        raise DhkdError(problems[0].what, problems[0].fix)
    lines = [f"{len(problems)} problems with {context}:"]
    lines += [f"  - {p.what}" for p in problems[:MAX_LISTED]]
    if len(problems) > MAX_LISTED:
        lines.append(f"  ... and {len(problems) - MAX_LISTED} more")
    fixes = list(dict.fromkeys(p.fix for p in problems))
    raise DhkdError("\n".join(lines), "\n       ".join(fixes))
