"""MVTec AD's folder layout: which categories a data root holds and the items of a split.

Expected layout (MVTec AD's own)::

    ROOT/CATEGORY/train/good/*.png
    ROOT/CATEGORY/test/good/*.png
    ROOT/CATEGORY/test/DEFECT/*.png
    ROOT/CATEGORY/ground_truth/DEFECT/NAME_mask.png   (one per defective test image)

Files are read in sorted order (defect folders by name, then file names), so a split is
deterministic. Any file in an image folder without an image suffix
(:data:`dhkd.data.files.IMAGE_SUFFIXES`) is an error, so a stray file is never ignored by accident.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from dhkd.data.files import IMAGE_SUFFIXES, Item, Problem, image_files, is_ignored
from dhkd.errors import DhkdError

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


def mvtec_categories(root: str | Path) -> list[str]:
    """Folders under ``root`` that hold ``train/good``: MVTec AD's in the authors' table order, then others sorted."""
    root = check_root(root)
    found = {p.name for p in root.iterdir() if (p / "train" / "good").is_dir()}
    known = [c for c in MVTEC_CATEGORIES if c in found]
    return known + sorted(found - set(known))


def mvtec_category_folder(root: str | Path, category: str) -> Path:
    """``root / category``, or a :class:`DhkdError` saying what is there instead and what to do."""
    root = check_root(root)
    if not category or category in (".", "..") or "/" in category or "\\" in category:
        raise DhkdError(f"{category!r} is not a category name", "give a folder name under the data root, e.g. bottle")
    folder = root / category
    if folder.is_dir():
        return folder

    present = mvtec_categories(root)
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


def check_root(root: str | Path) -> Path:
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


def scan_split(folder: Path, split: str) -> tuple[list[Item], list[Problem]]:
    problems: list[Problem] = []
    items: list[Item] = []
    split_dir = folder / split
    if split == "train":
        good = split_dir / "good"
        if not good.is_dir():
            problems.append(Problem(
                f"{good} is missing: a category needs normal training images in train/good",
                f"put the normal (defect-free) training images in {good}; the expected layout is\n{EXPECTED_LAYOUT}",
            ))  # fmt: skip
            return items, problems
        paths = image_files(good, problems)
        if not paths and not problems:
            problems.append(Problem(
                f"{good} holds no images ({', '.join(IMAGE_SUFFIXES)})",
                f"put the normal (defect-free) training images in {good}",
            ))  # fmt: skip
        items = [Item(p, "good", None) for p in paths]
        return items, problems

    if not split_dir.is_dir():
        problems.append(Problem(
            f"{split_dir} is missing: a category needs test images in test/good and test/DEFECT",
            f"put the test images there; the expected layout is\n{EXPECTED_LAYOUT}",
        ))  # fmt: skip
        return items, problems
    folders = [p for p in sorted(split_dir.iterdir()) if p.is_dir() and not is_ignored(p)]
    stray = [p for p in sorted(split_dir.iterdir()) if not p.is_dir() and not is_ignored(p)]
    for path in stray:
        problems.append(Problem(
            f"{path} lies directly in {split_dir}; test images go in a folder per defect type",
            "move it into test/good (normal) or test/DEFECT (defective, with a mask in ground_truth/DEFECT)",
        ))  # fmt: skip
    if not folders:
        problems.append(Problem(
            f"{split_dir} holds no defect-type folders",
            f"put normal test images in {split_dir / 'good'} and defective ones in {split_dir}/DEFECT",
        ))  # fmt: skip
    elif not any(p.name == "good" for p in folders):
        problems.append(Problem(
            f"{split_dir} has no 'good' folder: image AUROC needs normal test images",
            f"put the normal test images in {split_dir / 'good'}",
        ))  # fmt: skip
    elif all(p.name == "good" for p in folders):
        problems.append(Problem(
            f"{split_dir} has only a 'good' folder: evaluation needs defective test images",
            f"put defective images in {split_dir}/DEFECT and their masks in {folder / 'ground_truth'}/DEFECT",
        ))  # fmt: skip
    for defect_dir in folders:
        paths = image_files(defect_dir, problems)
        if not paths:
            problems.append(Problem(f"{defect_dir} holds no images", "add its images or delete the empty folder"))
            continue
        defect = defect_dir.name
        if defect == "good":
            items += [Item(p, "good", None) for p in paths]
            continue
        gt_dir = folder / "ground_truth" / defect
        if not gt_dir.is_dir():
            problems.append(Problem(
                f"{gt_dir} is missing: the defective images in {defect_dir} ({len(paths)}) need masks there",
                f"put a mask NAME_mask.png per image NAME.png in {gt_dir} (white = defect, black = normal)",
            ))  # fmt: skip
            continue
        masks: dict[str, Path] = {}
        for mask in sorted(gt_dir.iterdir()):
            if mask.suffix.lower() in IMAGE_SUFFIXES and not is_ignored(mask):
                masks.setdefault(mask.stem.lower(), mask)
        for path in paths:
            mask = masks.get(f"{path.stem}_mask".lower())
            if mask is None:
                problems.append(Problem(
                    f"defective image {path} has no mask: expected {gt_dir / (path.stem + '_mask.png')}",
                    "add the mask (white = defect, black = normal, same size as the image) "
                    "or move the image out of the test set",
                ))  # fmt: skip
            items.append(Item(path, defect, mask))
    return items, problems
