"""Data sets in any folder layout, described by a data-set file (YAML).

MVTec AD's layout is one way to store images; factories and other data sets store them
otherwise. A data-set file says where the defect-free and defective images are, where their
masks are and how the defect kinds are named::

    name: mtd
    root: mtd                         # absolute, or relative to this file
    normal: MT_Free/Imgs/*.jpg        # glob or list of globs: defect-free images
    abnormal: MT_*/Imgs/*.jpg         # optional; an image matched by `normal` is never abnormal
    masks: "{dir}/{stem}.png"         # optional template, relative to root
    kind: "{top}"                     # optional: defect kind per image (default {top})
    test_share: 0.2                   # share of the normal images kept for testing
    split_seed: 0                     # the split is deterministic and recorded in the run
    image_size: [256, 384]            # optional: the input (height, width) this data set trains at
    resize: keep_aspect               # optional: squeeze or keep_aspect (dhkd data folder suggests both)

``image_size`` and ``resize`` are the data set's own defaults for ``data.image_size`` and
``data.resize``: they replace the profile's, and ``--set`` replaces them.

Templates (``masks``, ``kind``) use these fields of an image's path under root:
``{dir}`` its folder, ``{stem}`` its name without extension, ``{name}`` its file name,
``{suffix}`` its extension (with the dot), ``{top}`` the first folder, ``{parent}`` the
innermost folder. A glob that matches a folder takes the images in it.

The split: the normal images, sorted by path, are shuffled with ``split_seed`` and the first
``test_share`` of them (rounded, at least one) are kept for testing; the rest train. Every
defective image is a test image. The same file and the same files on disk always give the same
split; a run records the file's content and a digest of its split, so ``dhkd evaluate`` checks
that it tests on what was held out.

The file is read by :mod:`dhkd.yamlfile` and its keys are declared in :class:`DataSetKeys` with
:mod:`dhkd.ranges`, exactly as a profile's settings are: the same YAML rules (``on`` is text, a
repeated key is an error, ``1e-3`` a number) and the same type and range messages.

Everything here is names only (cheap); :mod:`dhkd.data.mvtec` decodes the images and checks that each
is readable and that each mask has its image's size.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import string
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import yaml

from dhkd.data.files import IMAGE_SUFFIXES, Item, Problem, check_item, image_size_of, is_ignored, raise_problems, run_parallel
from dhkd.data.fit import IMAGE_SIZE, RESIZE_MODES, as_fit, suggest_shape
from dhkd.data.holdout import held_out_count, hold_out
from dhkd.errors import DhkdError
from dhkd.io import plain_name_problem
from dhkd.ranges import REQUIRED, Range, check_leaves, from_dict as build, raise_all, setting
from dhkd.yamlfile import read_yaml

DATASET_SUFFIXES = (".yaml", ".yml")
TEMPLATE_FIELDS = ("dir", "stem", "name", "suffix", "top", "parent")
NORMAL_KIND = "good"  # the kind of every defect-free image, as in MVTec AD's layout

EXAMPLE = """\
    name: mtd
    root: mtd                         # absolute, or relative to this file
    normal: MT_Free/Imgs/*.jpg        # glob or list of globs: defect-free images
    abnormal: MT_*/Imgs/*.jpg         # optional
    masks: "{dir}/{stem}.png"         # optional template
    kind: "{top}"                     # optional
    test_share: 0.2
    split_seed: 0"""


@dataclass
class DataSetKeys:
    """The keys a data-set file may hold, their types and allowed values: what :func:`from_dict`
    checks, with the machinery that checks a profile's settings (:mod:`dhkd.ranges`)."""

    name: str = setting(REQUIRED, Range(note="a plain name"), "the data set's name: the category, and a folder name")
    root: str = setting(REQUIRED, Range(), "the folder that holds the images: absolute, or relative to the file")
    normal: str | list[str] = setting(REQUIRED, Range(), "glob or list of globs, under root: the defect-free images")
    abnormal: str | list[str] | None = setting(None, Range(), "the defective images (one matched by normal is normal)")
    masks: str | None = setting(None, Range(), "template of a defective image's mask, relative to root")
    kind: str | None = setting("{top}", Range(), "template of a defective image's kind")
    test_share: float = setting(0.2, Range(low=0, high=1, low_open=True, high_open=True),
                                "share of the normal images kept for testing")
    split_seed: int = setting(0, Range(low=0), "seed of the split of the normal images")
    image_size: int | list[int] | None = setting(None, IMAGE_SIZE, "the data set's own data.image_size")
    resize: str | None = setting(None, Range(choices=RESIZE_MODES), "the data set's own data.resize")


KEYS = tuple(f.name for f in dataclasses.fields(DataSetKeys))
REQUIRED_KEYS = tuple(f.name for f in dataclasses.fields(DataSetKeys) if f.default is dataclasses.MISSING)


@dataclass(frozen=True)
class DataSetFile:
    """The content of a data-set file, with ``root`` made absolute."""

    name: str
    root: Path
    normal: tuple[str, ...]
    abnormal: tuple[str, ...] = ()
    masks: str | None = None
    kind: str = "{top}"
    test_share: float = 0.2
    split_seed: int = 0
    image_size: int | tuple[int, int] | None = None  # the data set's own data.image_size (None: the profile's)
    resize: str | None = None  # its own data.resize
    source: Path | None = field(default=None, compare=False)  # the file it was read from

    def settings(self) -> list[str]:
        """The data set's own settings as ``--set`` overrides (applied before the user's)."""
        overrides = []
        if self.image_size is not None:
            size = self.image_size
            overrides.append(f"data.image_size={size if isinstance(size, int) else list(size)}")
        if self.resize is not None:
            overrides.append(f"data.resize={self.resize}")
        return overrides

    def describe(self) -> str:
        return f"{self.name!r} ({self.source})" if self.source else f"{self.name!r} (root {self.root})"

    def to_dict(self, relative_to: Path | None = None) -> dict[str, Any]:
        """The file's content; ``root`` relative to ``relative_to`` where it lies below it."""
        root = str(self.root)
        if relative_to is not None:
            try:
                root = self.root.relative_to(_absolute(relative_to)).as_posix() or "."
            except ValueError:
                pass
        content: dict[str, Any] = {"name": self.name, "root": root, "normal": _one_or_list(self.normal)}
        if self.abnormal:
            content["abnormal"] = _one_or_list(self.abnormal)
        if self.masks:
            content["masks"] = self.masks
        content.update({"kind": self.kind, "test_share": self.test_share, "split_seed": self.split_seed})
        if self.image_size is not None:
            content["image_size"] = self.image_size if isinstance(self.image_size, int) else list(self.image_size)
        if self.resize is not None:
            content["resize"] = self.resize
        return content


def _absolute(path: Path) -> Path:
    """Absolute and without ``..``, but with symbolic links kept (a linked data folder keeps its name)."""
    return Path(os.path.abspath(path))


def _one_or_list(globs: tuple[str, ...]) -> str | list[str]:
    return globs[0] if len(globs) == 1 else list(globs)


# --------------------------------------------------------------------------------------------
# Reading the file


def is_dataset_file(root: Any) -> bool:
    """Whether a data root given by the user is a data-set file rather than a folder."""
    if isinstance(root, DataSetFile):
        return True
    return isinstance(root, (str, Path)) and Path(root).suffix.lower() in DATASET_SUFFIXES


def as_dataset(root: str | Path | DataSetFile, category: str | None = None) -> DataSetFile:
    """The data set of a data root; ``category``, when given, must be its name."""
    dataset = root if isinstance(root, DataSetFile) else read_dataset_file(root)
    if category is not None and category != dataset.name:
        raise DhkdError(f"the data-set file {dataset.source} describes the data set {dataset.name!r}, not {category!r}",
                        f"use {dataset.name!r} as the category (or leave --category out)")
    return dataset


def read_dataset_file(path: str | Path) -> DataSetFile:
    """Parse and check a data-set file (not the images: see :func:`scan`)."""
    path = Path(path).expanduser()
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise DhkdError(f"data-set file {path} {what}",
                        "write one with `dhkd data folder --root DIR --normal GLOB --out FILE.yaml`")
    return from_dict(read_yaml(path, "data-set"), _absolute(path).parent, source=path)


def from_dict(content: Any, base: Path, source: Path | None = None) -> DataSetFile:
    """A :class:`DataSetFile` from parsed YAML; ``root`` is taken relative to ``base``. The keys'
    types and ranges are :class:`DataSetKeys`'; the rest (plain name, globs and templates that
    stay under root) is checked here."""
    where = f"the data-set file {source}" if source else "the data set"
    if not isinstance(content, dict):
        raise DhkdError(f"{where} must be a mapping of keys to values, got {type(content).__name__}",
                        f"a data-set file looks like\n{EXAMPLE}")
    missing = [key for key in REQUIRED_KEYS if content.get(key) in (None, "", [])]
    if missing:
        raise DhkdError(f"{where} lacks {', '.join(missing)}", f"add {' and '.join(missing)}; a data-set file looks like\n{EXAMPLE}")
    try:
        keys = build(DataSetKeys, content, what=where)
    except DhkdError as error:  # a wrong type names the key alone: say which file
        raise error if error.what.startswith(where) else DhkdError(f"{where}: {error.what}", error.fix) from None
    raise_all([(f"{where}: {what}", fix) for what, fix in check_leaves(keys)], noun="keys")
    name = _text(keys.name, "name", where)
    if plain_name_problem(name):
        raise DhkdError(f"{where}: name {name!r} is not a plain name ({plain_name_problem(name)})",
                        "use a short name such as mtd (it names folders)")
    root = Path(_text(keys.root, "root", where)).expanduser()
    root = _absolute(root if root.is_absolute() else base / root)
    size = keys.image_size
    dataset = DataSetFile(
        name=name, root=root, normal=_globs(keys.normal, "normal", where), abnormal=_globs(keys.abnormal or (), "abnormal", where),
        masks=_text(keys.masks, "masks", where) if keys.masks else None, kind=_text(keys.kind or "{top}", "kind", where),
        test_share=keys.test_share, split_seed=keys.split_seed,
        image_size=None if size is None else as_fit(size).height if isinstance(size, int) else as_fit(size).shape,
        resize=keys.resize, source=source,
    )
    for key in ("masks", "kind"):
        if getattr(dataset, key):
            _check_template(getattr(dataset, key), key, where)
    if dataset.masks and (PurePosixPath(dataset.masks).is_absolute() or ".." in PurePosixPath(dataset.masks).parts
                          or "\\" in dataset.masks):
        raise DhkdError(f"{where}: the masks template {dataset.masks!r} leaves the root folder",
                        "write the template relative to root, e.g. {dir}/{stem}_mask.png (as the globs are)")
    return dataset


def _text(value: str, key: str, where: str) -> str:
    """``value`` stripped; blank text is refused (its type is :class:`DataSetKeys`' to check)."""
    if not value.strip():
        raise DhkdError(f"{where}: {key} must be a text, got {value!r}", f"write {key}: followed by a text")
    return value.strip()


def _globs(value: str | list[str] | tuple[()], key: str, where: str) -> tuple[str, ...]:
    globs = (value,) if isinstance(value, str) else tuple(value)
    if not all(g.strip() for g in globs):
        raise DhkdError(f"{where}: {key} must be a glob or a list of globs, got {value!r}",
                        f"e.g. {key}: good/*.png  or  {key}: [a/*.png, b/*.jpg]")
    for glob in globs:
        if Path(glob).is_absolute() or ".." in PurePosixPath(glob).parts:
            raise DhkdError(f"{where}: the {key} glob {glob!r} leaves the root folder",
                            "write globs relative to root (set root to a folder above all the images)")
    return tuple(g.strip() for g in globs)


def _check_template(template: str, key: str, where: str) -> None:
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as error:
        raise DhkdError(f"{where}: the {key} template {template!r} is malformed ({error})",
                        "write fields in braces, e.g. {dir}/{stem}.png") from None
    unknown = [f for f in fields if f not in TEMPLATE_FIELDS]
    if unknown:
        raise DhkdError(f"{where}: the {key} template {template!r} uses {{{unknown[0]}}}, which is not a field",
                        f"the fields are {', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)}")


# --------------------------------------------------------------------------------------------
# Scanning: which files are normal, abnormal, their kinds and masks


@dataclass
class Scan:
    """What a data-set file's globs and templates find on disk (names only)."""

    normal: list[Path]
    abnormal: list[tuple[Path, str, Path | None]]  # image, kind, mask (None: no mask)
    problems: list[Problem]
    normal_also_abnormal: int = 0  # images both globs match: normal, by the rule

    def kinds(self) -> dict[str, tuple[int, int]]:
        """kind -> (images, of which with a mask), kinds sorted."""
        table: dict[str, list[int]] = {}
        for _, kind, mask in self.abnormal:
            counts = table.setdefault(kind, [0, 0])
            counts[0] += 1
            counts[1] += mask is not None
        return {kind: (n, masked) for kind, (n, masked) in sorted(table.items())}

    def summary(self, dataset: DataSetFile) -> str:
        """What was found, one line per kind: what ``dhkd data folder`` prints."""
        n_test = _test_count(len(self.normal), dataset.test_share)
        width = max([len("normal"), *(len(kind) for kind in self.kinds())])
        lines = [f"data set {dataset.name!r} under {_shown(dataset.root)}:",
                 f"  {'normal':{width}s} {len(self.normal):6d} images ({len(self.normal) - n_test} train, {n_test} test "
                 f"with test_share {dataset.test_share}, split_seed {dataset.split_seed})"]
        if self.normal_also_abnormal:
            lines.append(f"  {'':{width}s}        ({self.normal_also_abnormal} of them also match abnormal: normal wins)")
        for kind, (n, masked) in self.kinds().items():
            lines.append(f"  {kind:{width}s} {n:6d} images, {masked} with a mask, {n - masked} without")
        if not self.abnormal:
            lines.append("  no abnormal images: enough to train, not to evaluate")
        return "\n".join(lines)


def _shown(path: Path) -> str:
    """A path relative to the working directory where it lies below it, else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def scan(dataset: DataSetFile) -> Scan:
    """Apply the globs and templates; every problem found is listed in ``Scan.problems``."""

    problems: list[Problem] = []
    if not dataset.root.is_dir():
        what = "is a file, not a folder" if dataset.root.exists() else "does not exist"
        problems.append(Problem(f"the root {dataset.root} of {dataset.describe()} {what}",
                                 "set root to the folder that holds the images (absolute, or relative to the data-set file)"))
        return Scan([], [], problems)
    normal = _match(dataset, dataset.normal, "normal", problems)
    abnormal_paths = _match(dataset, dataset.abnormal, "abnormal", problems)
    normal_set = set(normal)
    overlap = sum(path in normal_set for path in abnormal_paths)
    abnormal = []
    for path in abnormal_paths:
        if path in normal_set:
            continue
        kind = _fill(dataset.kind, dataset.root, path).strip()
        if not kind or kind == NORMAL_KIND or "/" in kind:
            problems.append(Problem(f"the kind template {dataset.kind!r} names the abnormal image {path} {kind!r}",
                                     f"choose a kind template that gives a plain name other than {NORMAL_KIND!r}, e.g. {{top}}"))
            continue
        mask = None
        if dataset.masks:
            candidate = dataset.root / _fill(dataset.masks, dataset.root, path)
            mask = candidate if candidate.is_file() else None
        abnormal.append((path, kind, mask))
    if not normal and not any("matches nothing" in p.what for p in problems):
        problems.append(Problem(f"{dataset.describe()} has no normal images", "the normal glob must match the defect-free images"))
    found = Scan(normal, abnormal, problems, overlap)
    _check_masks_are_not_images(found, problems)
    _check_enough_normal(dataset, found, problems)
    return found


def _match(dataset: DataSetFile, globs: tuple[str, ...], key: str, problems: list) -> list[Path]:
    """Image files matched by ``globs`` under root, sorted; matched folders give their images."""

    found: set[Path] = set()
    for glob in globs:
        matched = sorted(dataset.root.glob(glob))
        if not matched:
            problems.append(Problem(
                f"the {key} glob {glob!r} of {dataset.describe()} matches nothing under {dataset.root}",
                f"check the glob against the folders there ({_listing(dataset.root)}); globs are relative to root "
                "and case-sensitive",
            ))  # fmt: skip
            continue
        for path in matched:
            files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
            for file in files:
                if any(is_ignored(Path(part)) for part in file.relative_to(dataset.root).parts):
                    continue  # hidden files and folders (.ipynb_checkpoints, ._name) and OS clutter
                if file.suffix.lower() not in IMAGE_SUFFIXES:
                    problems.append(Problem(
                        f"the {key} glob {glob!r} matches {file}, which is not an image (suffix {file.suffix or '(none)'!r})",
                        f"narrow the glob to the images, e.g. ending in *.jpg; images are {', '.join(IMAGE_SUFFIXES)}",
                    ))  # fmt: skip
                    continue
                found.add(file)
    return sorted(found)


def _listing(root: Path, limit: int = 8) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir() if not p.name.startswith("."))
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "") if names else "it is empty"


def _fields(root: Path, path: Path) -> dict[str, str]:
    relative = path.relative_to(root)
    folders = relative.parts[:-1]
    return {"dir": relative.parent.as_posix(), "stem": path.stem, "name": path.name, "suffix": path.suffix,
            "top": folders[0] if folders else ".", "parent": folders[-1] if folders else "."}


def _fill(template: str, root: Path, path: Path) -> str:
    return template.format(**_fields(root, path))


def _check_masks_are_not_images(found: Scan, problems: list) -> None:

    images = set(found.normal) | {path for path, _, _ in found.abnormal}
    for path, _, mask in found.abnormal:
        if mask == path:
            problems.append(Problem(f"the masks template makes {path} its own mask",
                                     "narrow the globs to the images (e.g. *.jpg when the masks are .png)"))
        elif mask is not None and mask in images:
            problems.append(Problem(f"{mask} is the mask of {path} but the globs also take it as an image",
                                     "narrow the globs to the images (e.g. *.jpg when the masks are .png)"))


def _test_count(n_normal: int, test_share: float) -> int:
    return held_out_count(n_normal, test_share)


def _check_enough_normal(dataset: DataSetFile, found: Scan, problems: list) -> None:

    if len(found.normal) == 1:
        problems.append(Problem(f"{dataset.describe()} has a single normal image: it cannot be both trained on and tested",
                                 "add defect-free images (a few dozen at least)"))


# --------------------------------------------------------------------------------------------
# The split


def split_paths(dataset: DataSetFile, found: Scan) -> tuple[list[Path], list[Path]]:
    """(train, test) normal images: deterministic in ``split_seed`` and the sorted file names."""
    return hold_out(found.normal, dataset.test_share, dataset.split_seed)


def split_items(dataset: DataSetFile, found: Scan) -> dict[str, list]:
    """``{"train": [...], "test": [...]}`` as :class:`dhkd.data.mvtec._Item` lists (test: normal first, then by kind)."""

    train, test_normal = split_paths(dataset, found)
    abnormal = sorted(found.abnormal, key=lambda entry: (entry[1], entry[0]))
    return {"train": [Item(p, NORMAL_KIND, None) for p in train],
            "test": [Item(p, NORMAL_KIND, None) for p in test_normal] + [Item(p, k, m) for p, k, m in abnormal]}


def split_record(dataset: DataSetFile) -> dict[str, Any]:
    """What a run records of its data set: the file's content, the counts and a digest of the split."""
    found = scan(dataset)
    items = split_items(dataset, found)
    digest = hashlib.sha256()
    for split in ("train", "test"):
        for item in items[split]:
            digest.update(f"{split}\t{item.path.relative_to(dataset.root).as_posix()}\t{item.defect_type}\n".encode())
    return {
        "file": str(_absolute(dataset.source)) if dataset.source else None,
        "content": dataset.to_dict(),
        "split": {"test_share": dataset.test_share, "split_seed": dataset.split_seed, "train": len(items["train"]),
                  "test_normal": len(items["test"]) - len(found.abnormal), "test_abnormal": len(found.abnormal),
                  "abnormal_without_mask": sum(mask is None for _, _, mask in found.abnormal),
                  "digest": digest.hexdigest()[:16]},
    }


def recorded_dataset(record: dict[str, Any]) -> DataSetFile:
    """The data set a run was trained on, from its run.json record (not from the file, which may have changed)."""
    source = Path(record["file"]) if record.get("file") else None
    dataset = from_dict(record["content"], Path("/"), source=None)
    return DataSetFile(**{**dataset.__dict__, "source": source})


def check_same_split(dataset: DataSetFile, record: dict[str, Any]) -> None:
    """Raise unless ``dataset`` splits today as it did when the run was trained."""
    now = split_record(dataset)["split"]
    then = record["split"]
    if now["digest"] != then["digest"]:
        raise DhkdError(
            f"the images of {dataset.describe()} changed since the run was trained (train/test normal/abnormal: "
            f"then {then['train']}/{then['test_normal']}/{then['test_abnormal']}, now {now['train']}/"
            f"{now['test_normal']}/{now['test_abnormal']}), so the test split is no longer the one held out",
            "restore the images as they were, or train again on the data set as it is now",
        )


# --------------------------------------------------------------------------------------------
# dhkd data folder


def describe_folder(root: str | Path, normal: list[str], abnormal: list[str], masks: str | None, kind: str,
                    name: str | None, test_share: float, split_seed: int, out: str | Path,
                    image_size: str | None = None) -> tuple[DataSetFile, str]:
    """Check a folder of images as a data set, write its data-set file, and say what was found,
    the images' sizes among it, with the input shape :func:`~dhkd.data.fit.suggest_shape` suggests.

    ``image_size``: ``auto`` writes the suggested ``image_size`` and ``resize`` into the file; a
    number or ``H,W`` writes that size (with the suggested resize); None writes neither.
    """

    out = Path(out).expanduser()
    if out.suffix.lower() not in DATASET_SUFFIXES:
        raise DhkdError(f"the data-set file {out} must end in .yaml", f"e.g. --out {out.with_suffix('.yaml')}")
    root = _absolute(Path(root).expanduser())
    content = {"name": name or root.name, "root": str(root), "normal": normal, "abnormal": abnormal or None,
               "masks": masks, "kind": kind, "test_share": test_share, "split_seed": split_seed}
    dataset = from_dict(content, Path.cwd(), source=None)
    found = scan(dataset)
    raise_problems(found.problems, f"the data set {dataset.describe()}")
    items = [item for split in split_items(dataset, found).values() for item in split]
    _, bad = run_parallel(check_item, items, f"checking {dataset.name}", progress=True)
    raise_problems(bad, f"the data set {dataset.describe()}")
    sizes = [size for size in run_parallel(image_size_of, items, "image sizes", progress=False)[0] if size is not None]
    shape, resize = suggest_shape(sizes)
    if image_size is not None:
        chosen = shape if image_size == "auto" else _given_size(image_size)
        dataset = DataSetFile(**{**dataset.__dict__, "image_size": chosen, "resize": resize})
    text = yaml.safe_dump(dataset.to_dict(relative_to=out.parent), sort_keys=False, allow_unicode=True)
    from dhkd.io import atomic_write_text

    atomic_write_text(out, f"# written by dhkd data folder; the keys are explained in data/README.md\n{text}")
    return DataSetFile(**{**dataset.__dict__, "source": out}), found.summary(dataset) + "\n" + shape_summary(
        sizes, shape, resize, written=image_size is not None)


def _given_size(text: str) -> int | tuple[int, int]:
    parts = [p.strip() for p in str(text).replace("x", ",").split(",")]
    try:
        numbers = [int(p) for p in parts]
        as_fit(numbers[0] if len(numbers) == 1 else numbers)
    except ValueError:
        raise DhkdError(f"--image-size {text!r} is not auto, one number or H,W",
                        "e.g. --image-size auto, --image-size 256 or --image-size 256,384 (height, width)") from None
    return numbers[0] if len(numbers) == 1 else (numbers[0], numbers[1])


def shape_summary(sizes: list[tuple[int, int]], shape: tuple[int, int], resize: str, written: bool) -> str:
    """The images' sizes and aspects, and the input shape suggested for them (``dhkd data folder``)."""
    if not sizes:
        return ""
    widths, heights = [w for w, _ in sizes], [h for _, h in sizes]
    aspects = np.array([w / h for w, h in sizes])
    if len(set(sizes)) == 1:
        lines = [f"  sizes    all {widths[0]} x {heights[0]} px (width x height)"]
    else:
        lines = [f"  sizes    {min(widths)}-{max(widths)} x {min(heights)}-{max(heights)} px (width x height), "
                 f"width / height {aspects.min():.2f}-{aspects.max():.2f} (median {np.median(aspects):.2f})"]
    setting = f"--set data.image_size=[{shape[0]},{shape[1]}] --set data.resize={resize}"
    why = ("their proportions differ, so each keeps its own and is padded" if resize == "keep_aspect"
           else "they share one aspect, so squeezing to it distorts nothing")
    lines.append(f"  shape    suggested {shape[0]} x {shape[1]} (height x width), resize {resize}: {why}; "
                 + ("written into the file" if written else f"use it with {setting}, or write it with --image-size auto"))
    return "\n".join(lines)
