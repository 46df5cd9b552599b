"""MVTec AD category loading and validation.

A category split is decoded once into one ``uint8`` tensor of shape ``(N, 3, S, S)`` plus a
``bool`` mask tensor, so that a run can keep the whole split on its device and normalise
there (:func:`normalize`) instead of decoding PNGs every epoch.

Preprocessing is RD4AD's: ``transforms.Resize((S, S))`` on the PIL image (bilinear, which PIL
antialiases), then ImageNet mean/std. Images of any size and aspect are squeezed to the S x S
square: the aspect ratio is not kept (a 200x400 image is stretched to twice its width). Masks
are brought to the 0..255 scale by one rule for 0/1, 0/255, anti-aliased, 16-bit and palette
masks (:func:`binarize_mask`), resized the same way and kept where > 0.5 of it. No augmentation.

Besides a data root in MVTec AD's layout, every public function here accepts a data-set file
(YAML, :mod:`dhkd.dataset_file`) or a :class:`~dhkd.dataset_file.DataSetFile` in its place; the
category is then the data set's name.

Expected layout (MVTec AD's own)::

    ROOT/CATEGORY/train/good/*.png
    ROOT/CATEGORY/test/good/*.png
    ROOT/CATEGORY/test/DEFECT/*.png
    ROOT/CATEGORY/ground_truth/DEFECT/NAME_mask.png   (one per defective test image)

Files are read in sorted order (defect folders by name, then file names), so a split is
deterministic. What is skipped silently: names starting with ``.`` (``.DS_Store``, macOS
``._*`` files) and the Windows thumbnails files ``Thumbs.db`` / ``desktop.ini``. Any other file
in an image folder without an image suffix (:data:`IMAGE_SUFFIXES`) is an error, so a stray
file is never ignored by accident.

Image modes: greyscale, palette, RGBA (alpha is dropped, the colour channels kept) and 16-bit
greyscale (``I;16``/``I``: scaled from 0..65535 to 0..255, i.e. divided by 257) all become
8-bit RGB. 16-bit RGB PNGs are reduced to 8 bits by Pillow itself when it opens them.
"""

from __future__ import annotations

import difflib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Sequence, TypeVar

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from dhkd.errors import DhkdError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

# The DHKD authors' table order: textures first, then objects.
MVTEC_CATEGORIES: tuple[str, ...] = (
    "grid", "leather", "tile", "carpet", "wood",
    "bottle", "capsule", "pill", "transistor", "zipper",
    "cable", "hazelnut", "metal_nut", "screw", "toothbrush",
)  # fmt: skip

EXPECTED_LAYOUT = """\
    ROOT/
      CATEGORY/                          e.g. bottle
        train/good/*.png                 normal training images
        test/good/*.png                  normal test images
        test/DEFECT/*.png                defective test images, one folder per defect type
        ground_truth/DEFECT/*_mask.png   a mask per defective image: NAME.png -> NAME_mask.png"""

GET_DATA = (
    "get the data with `dhkd data mvtec --out {root}` (downloads MVTec AD) or "
    "`dhkd data toy --out {root}` (the embedded toy set), or pass the folder that holds it "
    "with --data-root; the expected layout is\n{layout}"
)

MAX_LISTED = 10  # problems listed in one error before "... and N more"
_IGNORED_NAMES = {"thumbs.db", "desktop.ini"}  # OS clutter, skipped like hidden files
_WORKERS = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 2)


# --------------------------------------------------------------------------------------------
# The decoded split


@dataclass
class CategorySplit:
    """One split of one category, decoded: images as uint8, masks as bool, all in memory."""

    images: torch.Tensor  # uint8 (N, 3, S, S)
    masks: torch.Tensor  # bool (N, S, S); all False for good images
    labels: torch.Tensor  # int64 (N,): 0 good, 1 defective
    defect_types: list[str]  # "good" or the defect folder name
    paths: list[Path]
    has_mask: torch.Tensor | None = None  # bool (N,): False for a defective image without a mask; None: all have one

    def mask_known(self) -> torch.Tensor:
        """bool (N,): images whose pixels are labelled (good images, and defective ones with a mask)."""
        if self.has_mask is None:
            return torch.ones(len(self), dtype=torch.bool, device=self.labels.device)
        return self.has_mask.to(self.labels.device) | (self.labels == 0)

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device | str) -> CategorySplit:
        """The same split with its tensors on ``device`` (the lists are copied)."""
        return CategorySplit(
            images=self.images.to(device),
            masks=self.masks.to(device),
            labels=self.labels.to(device),
            defect_types=list(self.defect_types),
            paths=list(self.paths),
            has_mask=None if self.has_mask is None else self.has_mask.to(device),
        )


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 images ``(N, 3, H, W)`` or ``(3, H, W)`` -> float32 ImageNet-normalised, same device.

    The same numbers as RD4AD's ``ToTensor()`` + ``Normalize(IMAGENET_MEAN, IMAGENET_STD)``.
    """
    if images.dtype != torch.uint8:
        raise TypeError(f"normalize expects uint8 images (0..255), got {images.dtype}; were they normalised already?")
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(3, 1, 1)
    return images.float().div_(255.0).sub_(mean).div_(std)


def denormalize(images: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalize`, clamped to [0, 1] (float), for plotting."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device, dtype=images.dtype).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device, dtype=images.dtype).view(3, 1, 1)
    return (images * std + mean).clamp_(0.0, 1.0)


# --------------------------------------------------------------------------------------------
# Finding categories


def list_categories(root: str | Path) -> list[str]:
    """Folders under ``root`` that hold ``train/good``: MVTec AD's in the authors' table order, then others sorted.
    For a data-set file: its one data set's name."""
    from dhkd import dataset_file

    if dataset_file.is_dataset_file(root):
        return [dataset_file.as_dataset(root).name]
    root = _check_root(root)
    found = {p.name for p in root.iterdir() if (p / "train" / "good").is_dir()}
    known = [c for c in MVTEC_CATEGORIES if c in found]
    return known + sorted(found - set(known))


def find_category(root: str | Path, category: str) -> Path:
    """``root / category``, or a :class:`DhkdError` saying what is there instead and what to do.
    For a data-set file: the data set's root folder (``category`` must be its name)."""
    from dhkd import dataset_file

    if dataset_file.is_dataset_file(root):
        return dataset_file.as_dataset(root, category).root
    root = _check_root(root)
    if not category or category in (".", "..") or "/" in category or "\\" in category:
        raise DhkdError(f"{category!r} is not a category name", "give a folder name under the data root, e.g. bottle")
    folder = root / category
    if folder.is_dir():
        return folder

    present = list_categories(root)
    what = f"no category {category!r} in {root} (looked for the folder {folder})"
    if (root / "train" / "good").is_dir():
        raise DhkdError(
            f"{what}; {root} looks like a category folder itself (it holds train/good)",
            f"pass its parent {root.parent} as the data root and {root.name!r} as the category",
        )
    nested = [p for p in sorted(root.iterdir()) if p.is_dir() and (p / category / "train").is_dir()]
    if nested:
        raise DhkdError(f"{what}, but {nested[0] / category} exists", f"pass {nested[0]} as the data root")
    by_lower = {name.lower(): name for name in present}
    close = difflib.get_close_matches(category.lower(), list(by_lower), n=1, cutoff=0.6)
    if close:
        raise DhkdError(f"{what}; did you mean {by_lower[close[0]]!r}?", f"use --category {by_lower[close[0]]}")
    listed = ", ".join(present) if present else "none (no folder there holds train/good)"
    fix = f"choose one of the categories present ({listed})"
    if category in MVTEC_CATEGORIES:
        fix += f", or download it with `dhkd data mvtec --out {root}`"
    raise DhkdError(f"{what}; categories present: {listed}", fix)


def _check_root(root: str | Path) -> Path:
    root = Path(root).expanduser()
    if not root.exists():
        raise DhkdError(
            f"data root {root} does not exist",
            GET_DATA.format(root=root, layout=EXPECTED_LAYOUT),
        )
    if not root.is_dir():
        raise DhkdError(
            f"data root {root} is a file, not a folder",
            f"pass the folder that holds the category folders; the expected layout is\n{EXPECTED_LAYOUT}",
        )
    return root


# --------------------------------------------------------------------------------------------
# Scanning the layout (cheap: names only)


@dataclass(frozen=True)
class _Item:
    path: Path
    defect_type: str
    mask: Path | None  # None for good images, and for defective images without a mask (data-set files)


@dataclass(frozen=True)
class _Problem:
    what: str
    fix: str


def _is_ignored(path: Path) -> bool:
    return path.name.startswith(".") or path.name.lower() in _IGNORED_NAMES


def _image_files(folder: Path, problems: list[_Problem]) -> list[Path]:
    """Sorted image files in ``folder``; anything else (except hidden/OS files) is a problem."""
    images = []
    for path in sorted(folder.iterdir()):
        if _is_ignored(path):
            continue
        if path.is_dir():
            problems.append(_Problem(
                f"unexpected folder {path} among the images in {folder}",
                "image folders hold image files only; move the sub-folder out",
            ))  # fmt: skip
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            images.append(path)
        else:
            problems.append(_Problem(
                f"{path} is not an image (suffix {path.suffix or '(none)'!r}); image folders may only hold "
                f"{', '.join(IMAGE_SUFFIXES)} files",
                "move the file out of the image folder (hidden files starting with '.' are ignored)",
            ))  # fmt: skip
    return images


def _scan(folder: Path, split: str) -> tuple[list[_Item], list[_Problem]]:
    problems: list[_Problem] = []
    items: list[_Item] = []
    split_dir = folder / split
    if split == "train":
        good = split_dir / "good"
        if not good.is_dir():
            problems.append(_Problem(
                f"{good} is missing: a category needs normal training images in train/good",
                f"put the normal (defect-free) training images in {good}; the expected layout is\n{EXPECTED_LAYOUT}",
            ))  # fmt: skip
            return items, problems
        paths = _image_files(good, problems)
        if not paths and not problems:
            problems.append(_Problem(
                f"{good} holds no images ({', '.join(IMAGE_SUFFIXES)})",
                f"put the normal (defect-free) training images in {good}",
            ))  # fmt: skip
        items = [_Item(p, "good", None) for p in paths]
        return items, problems

    if not split_dir.is_dir():
        problems.append(_Problem(
            f"{split_dir} is missing: a category needs test images in test/good and test/DEFECT",
            f"put the test images there; the expected layout is\n{EXPECTED_LAYOUT}",
        ))  # fmt: skip
        return items, problems
    folders = [p for p in sorted(split_dir.iterdir()) if p.is_dir() and not _is_ignored(p)]
    stray = [p for p in sorted(split_dir.iterdir()) if not p.is_dir() and not _is_ignored(p)]
    for path in stray:
        problems.append(_Problem(
            f"{path} lies directly in {split_dir}; test images go in a folder per defect type",
            "move it into test/good (normal) or test/DEFECT (defective, with a mask in ground_truth/DEFECT)",
        ))  # fmt: skip
    if not folders:
        problems.append(_Problem(
            f"{split_dir} holds no defect-type folders",
            f"put normal test images in {split_dir / 'good'} and defective ones in {split_dir}/DEFECT",
        ))  # fmt: skip
    elif not any(p.name == "good" for p in folders):
        problems.append(_Problem(
            f"{split_dir} has no 'good' folder: image AUROC needs normal test images",
            f"put the normal test images in {split_dir / 'good'}",
        ))  # fmt: skip
    elif all(p.name == "good" for p in folders):
        problems.append(_Problem(
            f"{split_dir} has only a 'good' folder: evaluation needs defective test images",
            f"put defective images in {split_dir}/DEFECT and their masks in {folder / 'ground_truth'}/DEFECT",
        ))  # fmt: skip
    for defect_dir in folders:
        paths = _image_files(defect_dir, problems)
        if not paths:
            problems.append(_Problem(f"{defect_dir} holds no images", "add its images or delete the empty folder"))
            continue
        defect = defect_dir.name
        if defect == "good":
            items += [_Item(p, "good", None) for p in paths]
            continue
        gt_dir = folder / "ground_truth" / defect
        if not gt_dir.is_dir():
            problems.append(_Problem(
                f"{gt_dir} is missing: the defective images in {defect_dir} ({len(paths)}) need masks there",
                f"put a mask NAME_mask.png per image NAME.png in {gt_dir} (white = defect, black = normal)",
            ))  # fmt: skip
            continue
        masks: dict[str, Path] = {}
        for mask in sorted(gt_dir.iterdir()):
            if mask.suffix.lower() in IMAGE_SUFFIXES and not _is_ignored(mask):
                masks.setdefault(mask.stem.lower(), mask)
        for path in paths:
            mask = masks.get(f"{path.stem}_mask".lower())
            if mask is None:
                problems.append(_Problem(
                    f"defective image {path} has no mask: expected {gt_dir / (path.stem + '_mask.png')}",
                    "add the mask (white = defect, black = normal, same size as the image) "
                    "or move the image out of the test set",
                ))  # fmt: skip
            items.append(_Item(path, defect, mask))
    return items, problems


# --------------------------------------------------------------------------------------------
# Reading files


class _BadFile(Exception):
    def __init__(self, problem: _Problem) -> None:
        self.problem = problem


def _describe(path: Path, error: Exception) -> str:
    text = str(error)
    if isinstance(error, PermissionError):
        return "permission denied"
    if isinstance(error, UnidentifiedImageError):
        if path.is_file() and path.stat().st_size == 0:
            return "the file is empty (0 bytes)"
        return "it is not an image file PIL can read (check what the file really is)"
    if "truncated" in text.lower():
        return "the file is truncated (an interrupted download or copy?)"
    return f"the file is corrupt ({type(error).__name__}: {text})"


def _open(path: Path, kind: str, decode: bool) -> Image.Image:
    """Check that ``path`` is an intact image and return it, decoded when ``decode``.

    PNGs are ``verify()``-ed first (chunk checksums, a missing end): that catches truncation and
    corruption in about 1 ms per 900x900 file, against about 30 ms for a full decode. Other
    formats have no cheap check and are always decoded. Without ``decode`` the returned image
    is closed and only its ``size`` and ``mode`` may be used.
    """
    try:
        with Image.open(path) as img:
            if img.format == "PNG":
                img.verify()
            elif not decode:
                img.load()
            if not decode:
                return img
        with Image.open(path) as img:
            img.load()  # the pixels stay in memory after the file closes
            return img
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, zlib.error...
        raise _BadFile(_Problem(
            f"cannot read {kind} {path}: {_describe(path, error)}",
            "replace it with an intact copy (re-download or re-extract the data) or delete it",
        )) from None  # fmt: skip


def _to_8bit(img: Image.Image) -> Image.Image:
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


def _resize(img: Image.Image, size: int) -> np.ndarray:
    # What torchvision's transforms.Resize((size, size)) does to a PIL image.
    return np.asarray(img.resize((size, size), Image.BILINEAR))


def _read_item(item: _Item, size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode one image (CHW uint8) and its mask (HW bool, None for good images)."""
    img = _open(item.path, "image", decode=True)
    mask_img = None if item.mask is None else _open(item.mask, "mask", decode=True)
    if mask_img is not None and mask_img.size != img.size:
        raise _BadFile(_size_problem(item, img.size, mask_img.size))
    try:
        # HWC -> CHW here, in numpy: torch's strided uint8 copy is ~50x slower (7 ms an image)
        image = np.ascontiguousarray(_resize(_to_8bit(img).convert("RGB"), size).transpose(2, 0, 1))
    except (ValueError, OSError) as error:  # a mode PIL cannot convert, e.g. "La"
        raise _BadFile(_unsupported(item.path, img, error)) from None
    if mask_img is None:
        return image, None
    try:
        mask = _resize(Image.fromarray(mask_levels(mask_img)), size) > 127  # v / 255 > 0.5 after resizing, as RD4AD
    except (ValueError, OSError, TypeError) as error:
        raise _BadFile(_unsupported(item.mask, mask_img, error)) from None
    return image, mask


def _unsupported(path: Path | None, img: Image.Image, error: Exception) -> _Problem:
    return _Problem(f"cannot convert {path} (PIL mode {img.mode}) to 8-bit: {error}", "save it as an 8-bit RGB or greyscale PNG")


def _check_item(item: _Item) -> None:
    img = _open(item.path, "image", decode=False)
    if item.mask is not None:
        mask = _open(item.mask, "mask", decode=False)
        if mask.size != img.size:
            raise _BadFile(_size_problem(item, img.size, mask.size))


def _size_problem(item: _Item, image_size: tuple[int, int], mask_size: tuple[int, int]) -> _Problem:
    (w, h), (mw, mh) = image_size, mask_size
    return _Problem(
        f"mask {item.mask} is {mw}x{mh} but its image {item.path} is {w}x{h}",
        f"a mask must have its image's size; re-export it at {w}x{h}",
    )


T = TypeVar("T")


def _run(task: Callable[[_Item], T], items: Sequence[_Item], desc: str, progress: bool) -> tuple[list[T | None], list[_Problem]]:
    """``task`` over ``items`` on a few threads (PIL releases the GIL while decoding), in order."""

    def safe(item: _Item) -> tuple[T | None, _Problem | None]:
        try:
            return task(item), None
        except _BadFile as bad:
            return None, bad.problem

    results: list[T | None] = []
    problems: list[_Problem] = []
    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        bar = tqdm(pool.map(safe, items), total=len(items), desc=desc, unit="img", disable=not progress, leave=False)
        for result, problem in bar:
            results.append(result)
            if problem is not None:
                problems.append(problem)
    return results, problems


def _raise(problems: list[_Problem], context: str) -> None:
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


def _check_split_name(split: str) -> None:
    if split not in ("train", "test"):
        raise DhkdError(f"unknown split {split!r}", "use 'train' or 'test'")


# --------------------------------------------------------------------------------------------
# Public entry points


def validate_category(root: str | Path, category: str, splits: Sequence[str] = ("train", "test")) -> None:
    """Check a whole category up front and raise one :class:`DhkdError` listing every problem.

    Checks the layout, that every image and mask is an intact image (PNG chunk checksums, so
    truncated files are caught), and that every mask has its image's size. About 0.5 s for
    the real bottle category (292 images of 900x900); :func:`load_split` decodes in full.
    """
    items, problems, context = _items(root, category, splits)
    _, bad = _run(_check_item, items, f"checking {category}", progress=False)
    _raise(problems + bad, context)


def _items(root: str | Path, category: str, splits: Sequence[str]) -> tuple[list[_Item], list[_Problem], str]:
    """The items of ``splits``, the layout problems found and how to name the source in errors."""
    from dhkd import dataset_file

    for split in splits:
        _check_split_name(split)
    if dataset_file.is_dataset_file(root):
        dataset = dataset_file.as_dataset(root, category)
        scan = dataset_file.scan(dataset)
        items = [item for split in splits for item in dataset_file.split_items(dataset, scan)[split]]
        return items, scan.problems, f"the data set {dataset.describe()}"
    folder = find_category(root, category)
    items, problems = [], []
    for split in splits:
        found, trouble = _scan(folder, split)
        items += found
        problems += trouble
    return items, problems, f"the {'/'.join(splits)} split of {folder}"


def count_images(root: str | Path, category: str, split: Literal["train", "test"] = "train") -> int:
    """How many images a split holds, from the file names alone (no decoding), for either kind of data root."""
    items, problems, context = _items(root, category, [split])
    _raise(problems, context)
    return len(items)


def load_split(
    root: str | Path,
    category: str,
    split: Literal["train", "test"],
    image_size: int = 256,
    progress: bool = True,
) -> CategorySplit:
    """Decode one split of one category into memory (see the module docstring for the layout).

    The layout is checked first, then every file is decoded; either step raises one
    :class:`DhkdError` listing all the problems it found.
    """
    _check_split_name(split)
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
        raise DhkdError(f"image size must be a positive whole number, got {image_size!r}", "e.g. 256")
    items, problems, context = _items(root, category, [split])
    _raise(problems, context)

    decoded, problems = _run(lambda item: _read_item(item, image_size), items, f"{category}/{split}", progress)
    _raise(problems, context)

    n, s = len(items), image_size
    images = torch.empty((n, 3, s, s), dtype=torch.uint8)
    masks = torch.zeros((n, s, s), dtype=torch.bool)
    for i, result in enumerate(decoded):
        assert result is not None
        image, mask = result
        images[i] = torch.from_numpy(image)
        if mask is not None:
            masks[i] = torch.from_numpy(mask)
    labels = torch.tensor([int(item.defect_type != "good") for item in items], dtype=torch.int64)
    has_mask = torch.tensor([item.mask is not None for item in items], dtype=torch.bool)
    return CategorySplit(images, masks, labels, [item.defect_type for item in items], [item.path for item in items],
                         has_mask)


class MVTecDataset(torch.utils.data.Dataset):
    """A thin per-item view over a :class:`CategorySplit`, for code that wants a DataLoader.

    An item is ``dict(image=float (3,S,S) normalised, mask=float (1,S,S), label=int,
    defect_type=str, path=str)``. Training loops that keep the split on the GPU should use
    the :class:`CategorySplit` tensors directly instead.
    """

    def __init__(self, root: str | Path, category: str, split: Literal["train", "test"], image_size: int = 256) -> None:
        self.split = load_split(root, category, split, image_size=image_size)

    @classmethod
    def from_split(cls, split: CategorySplit) -> MVTecDataset:
        dataset = cls.__new__(cls)
        dataset.split = split
        return dataset

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> dict:
        s = self.split
        return {
            "image": normalize(s.images[index]),
            "mask": s.masks[index].unsqueeze(0).float(),
            "label": int(s.labels[index]),
            "defect_type": s.defect_types[index],
            "path": str(s.paths[index]),
        }
