"""Loading a split from either kind of data root: a folder in MVTec AD's layout or a data-set file.

Preprocessing is RD4AD's: ``transforms.Resize((H, W))`` on the PIL image (bilinear, which PIL
antialiases), then ImageNet mean/std. The size is an ``image_size``: one number (a square),
``(height, width)``, or a :class:`~dhkd.data.fit.Fit`, which may also keep each image's aspect
and pad (:mod:`dhkd.data.fit`; the split's ``valid`` masks then say where the images lie). Masks
are brought to the 0..255 scale by one rule for 0/1, 0/255, anti-aliased, 16-bit and palette
masks (:func:`dhkd.data.files.binarize_mask`), resized the same way and kept where > 0.5 of it.
No augmentation.

The normal training images are split once more: ``calibration_share`` of them (the setting
``data.calibration_share``) are the ``"calibration"`` split, kept out of ``"train"``
(:mod:`dhkd.data.holdout`); with a share of 0 (the default of these functions) ``"train"`` is
every training image.

Every function here accepts a data root in MVTec AD's layout (:mod:`dhkd.data.mvtec`) or a
data-set file (YAML, :mod:`dhkd.data.dataset_file`) or a
:class:`~dhkd.data.dataset_file.DataSetFile` in its place; the category is then the data set's name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch

from dhkd.data import dataset_file
from dhkd.data.files import (BadFile, Item, Problem, check_item, image_size_of, raise_problems, read_item, read_mask,
                             run_parallel)
from dhkd.data.fit import Fit, as_fit
from dhkd.data.holdout import CALIBRATION_SEED, hold_out
from dhkd.data.mvtec import mvtec_categories, mvtec_category_folder, scan_split
from dhkd.data.split import CategorySplit, normalize
from dhkd.errors import DhkdError


def list_categories(root: str | Path) -> list[str]:
    """The categories of a data root (MVTec AD's in the authors' table order, then others sorted),
    or a data-set file's one data set's name."""
    if dataset_file.is_dataset_file(root):
        return [dataset_file.as_dataset(root).name]
    return mvtec_categories(root)


def find_category(root: str | Path, category: str) -> Path:
    """The folder of ``category`` (for a data-set file: its root folder, ``category`` being its name)."""
    if dataset_file.is_dataset_file(root):
        return dataset_file.as_dataset(root, category).root
    return mvtec_category_folder(root, category)


SPLITS = ("train", "calibration", "test")
Split = Literal["train", "calibration", "test"]


def check_split_name(split: str) -> None:
    if split not in SPLITS:
        raise DhkdError(f"unknown split {split!r}", "use 'train', 'calibration' or 'test'")


def validate_category(root: str | Path, category: str, splits: Sequence[str] = ("train", "test")) -> None:
    """Check a whole category up front and raise one :class:`DhkdError` listing every problem.

    Checks the layout, that every image and mask is an intact image (PNG chunk checksums, so
    truncated files are caught), and that every mask has its image's size. About 0.5 s for
    the real bottle category (292 images of 900x900); :func:`load_split` decodes in full.
    """
    items, problems, context = items_of(root, category, splits)
    _, bad = run_parallel(check_item, items, f"checking {category}", progress=False)
    raise_problems(problems + bad, context)


def items_of(root: str | Path, category: str, splits: Sequence[str],
             calibration_share: float = 0.0) -> tuple[list[Item], list[Problem], str]:
    """The items of ``splits``, the layout problems found and how to name the source in errors.
    ``"train"`` and ``"calibration"`` split the normal training images by ``calibration_share``."""
    for split in splits:
        check_split_name(split)
    if calibration_share <= 0 and "calibration" in splits:
        raise DhkdError("the calibration split is empty: no training images are held back (data.calibration_share=0)",
                        "hold some back, e.g. --set data.calibration_share=0.1, and train again")
    if dataset_file.is_dataset_file(root):
        dataset = dataset_file.as_dataset(root, category)
        scan = dataset_file.scan(dataset)
        found = dataset_file.split_items(dataset, scan)
        problems, context = scan.problems, f"the data set {dataset.describe()}"
        stored = {"train": found["train"], "test": found["test"]}
    else:
        folder = mvtec_category_folder(root, category)
        stored, problems = {}, []
        for split in dict.fromkeys("train" if s == "calibration" else s for s in splits):
            stored[split], trouble = scan_split(folder, split)
            problems += trouble
        context = f"the {'/'.join(splits)} split of {folder}"
    if "train" in stored:
        stored["train"], stored["calibration"] = hold_out(stored["train"], calibration_share, CALIBRATION_SEED)
    return [item for split in splits for item in stored[split]], problems, context


def count_images(root: str | Path, category: str, split: Split = "train", calibration_share: float = 0.0) -> int:
    """How many images a split holds, from the file names alone (no decoding), for either kind of data root."""
    items, problems, context = items_of(root, category, [split], calibration_share)
    raise_problems(problems, context)
    return len(items)


class StreamedImages:
    """A split's images decoded from disk per batch: indexed like the uint8 ``(N, 3, H, W)`` tensor
    :func:`load_split` holds (``images[indices]``, ``images[a:b]``), without holding them.

    :meth:`prefetch` starts decoding a batch in background threads, so the next batch is ready
    when the current step ends. Decoding problems end in one :class:`DhkdError`, as in loading.
    """

    def __init__(self, items: Sequence[Item], image_size: int | Sequence[int] | Fit, device: torch.device | str = "cpu",
                 workers: int | None = None) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.items = list(items)
        self.fit = _fit(image_size)
        self.device = torch.device(device)
        self.shape = (len(self.items), 3, *self.fit.shape)
        self.dtype = torch.uint8
        self._pool = ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1))
        self._pending: dict[tuple[int, ...], Any] = {}

    def __len__(self) -> int:
        return len(self.items)

    def to(self, device: torch.device | str) -> "StreamedImages":
        self.device = torch.device(device)
        return self

    def _indices(self, key: Any) -> tuple[int, ...]:
        if isinstance(key, slice):
            return tuple(range(*key.indices(len(self))))
        if isinstance(key, torch.Tensor):
            return tuple(int(i) for i in key.reshape(-1).tolist())
        if isinstance(key, int):
            raise TypeError("index StreamedImages with a tensor, a list or a slice of indices")
        return tuple(int(i) for i in key)

    def _one(self, index: int) -> Any:
        try:
            return read_item(Item(self.items[index].path, self.items[index].defect_type, None), self.fit)[0]
        except BadFile as error:
            return error.problem

    def prefetch(self, key: Any) -> None:
        """Start decoding ``self[key]`` now; the next ``self[key]`` waits only for what is left."""
        indices = self._indices(key)
        if indices not in self._pending:
            self._pending[indices] = [self._pool.submit(self._one, i) for i in indices]
            while len(self._pending) > 2:  # the batch being used and the next one
                self._pending.pop(next(iter(self._pending)))

    def __getitem__(self, key: Any) -> torch.Tensor:
        indices = self._indices(key)
        futures = self._pending.pop(indices, None) or [self._pool.submit(self._one, i) for i in indices]
        decoded = [future.result() for future in futures]
        problems = [d for d in decoded if isinstance(d, Problem)]
        raise_problems(problems, "the images (decoded per batch)")
        if not decoded:
            return torch.empty((0, 3, *self.fit.shape), dtype=torch.uint8, device=self.device)
        return torch.from_numpy(np.stack(decoded)).to(self.device)


def stream_split(root: str | Path, category: str, split: Split, image_size: int | Sequence[int] | Fit = 256,
                 progress: bool = True, calibration_share: float = 0.0) -> CategorySplit:
    """:func:`load_split` without holding the images: ``images`` is a :class:`StreamedImages` that
    decodes a batch when it is indexed; only the masks (defective images' alone) are decoded now.
    Holds about ``H * W`` bytes per image (the masks) instead of ``4 * H * W``; a split without a
    single mask (the training split) holds none (:func:`no_masks`)."""
    check_split_name(split)
    fit = _fit(image_size)
    items, problems, context = items_of(root, category, [split], calibration_share)
    raise_problems(problems, context)
    with_masks = [item for item in items if item.mask is not None]
    decoded, problems = run_parallel(lambda item: read_mask(item, fit), with_masks, f"{category}/{split} masks", progress)
    raise_problems(problems, context)
    masks = no_masks(len(items), fit) if not with_masks else torch.zeros((len(items), *fit.shape), dtype=torch.bool)
    positions = {id(item): i for i, item in enumerate(items)}
    sizes: dict[int, tuple[int, int]] = {}
    for item, result in zip(with_masks, decoded):
        assert result is not None
        masks[positions[id(item)]] = torch.from_numpy(result[0])
        sizes[id(item)] = result[1]
    valid = None
    if fit.keep_aspect:
        rest = [item for item in items if id(item) not in sizes]
        found, problems = run_parallel(image_size_of, rest, f"{category}/{split} sizes", progress=False)
        raise_problems(problems, context)
        sizes.update({id(item): size for item, size in zip(rest, found) if size is not None})
        valid = _valid_masks(fit, [sizes[id(item)] for item in items])
    return CategorySplit(StreamedImages(items, fit), masks, *_labels(items), valid=valid)  # type: ignore[arg-type]


def no_masks(n: int, fit: Fit) -> torch.Tensor:
    """bool ``(n, H, W)`` of zeros that holds one ``H x W`` plane, however large ``n`` (a read-only
    expanded view): the masks of a split where no image has one. 20,000 images at 256 px would
    otherwise hold 1.3 GB, exactly when streaming was chosen because memory is short."""
    return torch.zeros((1, *fit.shape), dtype=torch.bool).expand(n, *fit.shape)


def _labels(items: Sequence[Item]) -> tuple[torch.Tensor, list[str], list[Path], torch.Tensor]:
    """labels, defect types, paths and has_mask of a split's items."""
    labels = torch.tensor([int(item.defect_type != "good") for item in items], dtype=torch.int64)
    has_mask = torch.tensor([item.mask is not None for item in items], dtype=torch.bool)
    return labels, [item.defect_type for item in items], [item.path for item in items], has_mask


def _valid_masks(fit: Fit, sizes: Sequence[tuple[int, int]]) -> torch.Tensor:
    """bool ``(N, H, W)``: where each image of ``(width, height)`` lies in the padded input."""
    valid = torch.zeros((len(sizes), *fit.shape), dtype=torch.bool)
    for i, (width, height) in enumerate(sizes):
        top, left, h, w = fit.box(width, height)
        valid[i, top:top + h, left:left + w] = True
    return valid


def _fit(image_size: Any) -> Fit:
    try:
        return as_fit(image_size)
    except ValueError as error:
        raise DhkdError(str(error), "e.g. 256, or (256, 384) for height 256 and width 384") from None


def load_split(
    root: str | Path,
    category: str,
    split: Split,
    image_size: int | Sequence[int] | Fit = 256,
    progress: bool = True,
    calibration_share: float = 0.0,
) -> CategorySplit:
    """Decode one split of one category into memory (see the module docstring for the layout).

    The layout is checked first, then every file is decoded; either step raises one
    :class:`DhkdError` listing all the problems it found. :func:`stream_split` is the same split
    decoded per batch instead.
    """
    check_split_name(split)
    fit = _fit(image_size)
    items, problems, context = items_of(root, category, [split], calibration_share)
    raise_problems(problems, context)

    decoded, problems = run_parallel(lambda item: read_item(item, fit), items, f"{category}/{split}", progress)
    raise_problems(problems, context)

    images = torch.empty((len(items), 3, *fit.shape), dtype=torch.uint8)
    masks = torch.zeros((len(items), *fit.shape), dtype=torch.bool)
    sizes = []
    for i, result in enumerate(decoded):
        assert result is not None
        image, mask, size = result
        images[i] = torch.from_numpy(image)
        if mask is not None:
            masks[i] = torch.from_numpy(mask)
        sizes.append(size)
    valid = _valid_masks(fit, sizes) if fit.keep_aspect else None
    return CategorySplit(images, masks, *_labels(items), valid=valid)


class MVTecDataset(torch.utils.data.Dataset):
    """A thin per-item view over a :class:`CategorySplit`, for code that wants a DataLoader.

    An item is ``dict(image=float (3,H,W) normalised, mask=float (1,H,W), label=int,
    defect_type=str, path=str)``. Training loops that keep the split on the GPU should use
    the :class:`CategorySplit` tensors directly instead.
    """

    def __init__(self, root: str | Path, category: str, split: Literal["train", "test"],
                 image_size: int | Sequence[int] | Fit = 256) -> None:
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
