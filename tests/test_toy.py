"""The embedded toy data set: MVTec layout, masks, determinism, skip-if-complete."""

from __future__ import annotations

import inspect
import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dhkd.errors import DhkdError
from dhkd.data.toy import (
    STAMP_NAME,
    TOY_CATEGORIES,
    TOY_DEFECTS,
    expected_files,
    generate_toy,
    make_sample,
)

SMALL = dict(image_size=64, n_train=4, n_test_good=2, n_test_per_defect=2, progress=False)


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    out = tmp_path_factory.mktemp("toy")
    return out, generate_toy(out, seed=0, **SMALL)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_catalogue() -> None:
    assert len(TOY_CATEGORIES) >= 3
    assert {"brick", "grass", "gravel"} & set(TOY_CATEGORIES)  # textures from skimage photographs
    assert "nut" in TOY_CATEGORIES  # the drawn object
    for category in TOY_CATEGORIES:
        assert 2 <= len(TOY_DEFECTS[category]) <= 4
    defaults = inspect.signature(generate_toy).parameters
    assert defaults["image_size"].default == 256 and defaults["seed"].default == 0
    assert (defaults["n_train"].default, defaults["n_test_good"].default, defaults["n_test_per_defect"].default) == (60, 12, 8)


def test_mvtec_layout(toy: tuple[Path, list[Path]]) -> None:
    out, folders = toy
    assert folders == [out / c for c in TOY_CATEGORIES]
    readme = (out / "README.txt").read_text()
    assert "seed 0" in readme and "CC0" in readme and "MVTec" in readme
    for folder in folders:
        category = folder.name
        defects = set(TOY_DEFECTS[category])
        assert {p.name for p in folder.iterdir() if p.is_dir()} == {"train", "test", "ground_truth"}
        assert {p.name for p in (folder / "train").iterdir()} == {"good"}
        assert {p.name for p in (folder / "test").iterdir()} == defects | {"good"}
        assert {p.name for p in (folder / "ground_truth").iterdir()} == defects  # good has no masks
        assert sorted(p.name for p in (folder / "train/good").iterdir()) == ["000.png", "001.png", "002.png", "003.png"]
        assert sorted(p.name for p in (folder / "test/good").iterdir()) == ["000.png", "001.png"]
        pngs = {str(p.relative_to(folder)) for p in folder.rglob("*.png")}
        assert pngs == set(expected_files(category, 4, 2, 2))
        stamp = json.loads((folder / STAMP_NAME).read_text())
        assert stamp["category"] == category and stamp["seed"] == 0 and stamp["image_size"] == 64


def test_images_and_masks(toy: tuple[Path, list[Path]]) -> None:
    out, folders = toy
    for folder in folders:
        for path in folder.glob("t*/good/*.png"):
            image = Image.open(path)
            assert image.mode == "RGB" and image.size == (64, 64)
        for defect in TOY_DEFECTS[folder.name]:
            images = sorted((folder / "test" / defect).iterdir())
            masks = sorted((folder / "ground_truth" / defect).iterdir())
            assert [m.name for m in masks] == [p.stem + "_mask.png" for p in images]
            for path, mask_path in zip(images, masks):
                image, mask = Image.open(path), Image.open(mask_path)
                assert image.mode == "RGB" and mask.mode == "L"
                assert mask.size == image.size == (64, 64)
                values = np.unique(np.asarray(mask))
                assert set(values.tolist()) <= {0, 255} and 255 in values, f"{mask_path}: empty or not binary"


@pytest.mark.parametrize("category", TOY_CATEGORIES)
def test_masks_are_exactly_the_changed_pixels(category: str) -> None:
    for kind in TOY_DEFECTS[category]:
        for index in range(3):
            sample = make_sample(category, kind, index, seed=3, image_size=64)
            assert sample.mask is not None and sample.mask.shape == (64, 64) and sample.mask.any()
            changed = (sample.image != sample.clean).any(2)
            assert not (changed & ~sample.mask).any(), f"{category}/{kind}/{index}: change outside the mask"
            assert changed.sum() >= 0.8 * sample.mask.sum(), f"{category}/{kind}/{index}: mask wider than the defect"
            assert np.abs(sample.image.astype(int) - sample.clean).max() >= 6, "invisible defect"
    good = make_sample(category, "good", 0, seed=3, image_size=64)
    assert good.mask is None and np.array_equal(good.image, good.clean)


def test_normal_images_vary(toy: tuple[Path, list[Path]]) -> None:
    _, folders = toy
    for folder in folders:
        train = [np.asarray(Image.open(p)) for p in sorted((folder / "train/good").iterdir())]
        assert all(not np.array_equal(train[0], other) for other in train[1:])


def test_deterministic_and_independent_of_other_categories(toy: tuple[Path, list[Path]], tmp_path: Path) -> None:
    out, _ = toy
    again = generate_toy(tmp_path / "again", seed=0, categories=["nut", "brick"], **SMALL)
    assert [p.name for p in again] == ["nut", "brick"]
    for folder in again:
        assert _files(folder) == _files(out / folder.name)
    other = generate_toy(tmp_path / "other", seed=1, categories=["brick"], **SMALL)[0]
    a, b = _files(out / "brick"), _files(other)
    pngs = [name for name in a if name.endswith(".png") and "ground_truth" not in name]
    assert all(a[name] != b[name] for name in pngs)


def test_complete_category_is_not_rewritten(tmp_path: Path) -> None:
    args = dict(SMALL, categories=["gravel"])
    folder = generate_toy(tmp_path, **args)[0]
    mtimes = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    readme = (tmp_path / "README.txt").stat().st_mtime_ns
    start = time.perf_counter()
    assert generate_toy(tmp_path, **args) == [folder]
    assert time.perf_counter() - start < 1.0
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == mtimes
    assert (tmp_path / "README.txt").stat().st_mtime_ns == readme

    # a lost file or other parameters: made again, with no stale files left behind
    (folder / "train/good/001.png").unlink()
    generate_toy(tmp_path, **args)
    assert (folder / "train/good/001.png").is_file()
    generate_toy(tmp_path, **dict(args, n_train=2))
    assert sorted(p.name for p in (folder / "train/good").iterdir()) == ["000.png", "001.png"]
    assert json.loads((folder / STAMP_NAME).read_text())["n_train"] == 2


def test_interrupted_run_and_foreign_folder(tmp_path: Path) -> None:
    partial = tmp_path / ".nut.partial"
    (partial / "train/good").mkdir(parents=True)
    (partial / "train/good/000.png").write_bytes(b"half a picture")
    generate_toy(tmp_path, categories=["nut"], **SMALL)
    assert not partial.exists()

    (tmp_path / "grass").mkdir()
    (tmp_path / "grass" / "mine.txt").write_text("not the toy's")
    with pytest.raises(DhkdError, match="not made by the toy"):
        generate_toy(tmp_path, categories=["grass"], **SMALL)
    assert (tmp_path / "grass" / "mine.txt").read_text() == "not the toy's"


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(DhkdError, match="unknown toy category"):
        generate_toy(tmp_path, categories=["carpet"], progress=False)
    with pytest.raises(DhkdError, match="image_size"):
        generate_toy(tmp_path, image_size=8, progress=False)
    with pytest.raises(DhkdError, match="n_train"):
        generate_toy(tmp_path, n_train=0, progress=False)
    with pytest.raises(DhkdError, match="no image kind"):
        make_sample("nut", "crack", 0)
