"""Data-set files (any folder layout), mask binarisation, and dhkd predict."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from dhkd import cli
from dhkd.config import load_config
from dhkd.data.holdout import held_out_count
from dhkd.data import dataset_file
from dhkd.data import binarize_mask, list_categories, load_split, validate_category
from dhkd.errors import DhkdError

SIZE = 32
MTD = Path(os.environ.get("DHKD_MTD_ROOT") or Path(__file__).resolve().parents[2] / "shared" / "data" / "mtd")


def _image(path: Path, value: int = 120, size: tuple[int, int] = (40, 24), mode: str = "L", fmt: str | None = None) -> Path:
    """A grey image with a bright square (so maps differ between images), in the given mode and format."""
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    grey = np.full(size[::-1], value, np.uint8)
    grey += rng.integers(0, 8, grey.shape, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        img = Image.fromarray(grey.astype(np.uint16) * 257)
    elif mode == "P":
        img = Image.fromarray(grey).convert("P")
    else:
        img = Image.fromarray(grey).convert(mode)
    img.save(path, format=fmt)
    return path


def _mask(path: Path, values: np.ndarray, mode: str = "L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        Image.fromarray(values.astype(np.uint16)).save(path)
    else:
        Image.fromarray(values.astype(np.uint8), mode).save(path)
    return path


def _square(size=(40, 24), box=(8, 4, 24, 16), on=255) -> np.ndarray:
    values = np.zeros(size[::-1], np.int64)
    x0, y0, x1, y1 = box
    values[y0:y1, x0:x1] = on
    return values


def _write(path: Path, **content) -> Path:
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


@pytest.fixture
def folder_set(tmp_path: Path) -> Path:
    return make_folder_set(tmp_path)


def make_folder_set(tmp_path: Path) -> Path:
    """good/ 10 images; scratch/ 3 with masks beside (NAME.png); dent/ 2, one with a mask; a data-set file."""
    root = tmp_path / "parts"
    for i in range(10):
        _image(root / "good" / f"g{i:02d}.jpg", fmt="JPEG")
    for i in range(3):
        _image(root / "scratch" / f"s{i}.jpg", 200, fmt="JPEG")
        _mask(root / "scratch" / f"s{i}.png", _square())
    _image(root / "dent" / "d0.jpg", 30, fmt="JPEG")
    _mask(root / "dent" / "d0.png", _square(on=1))
    _image(root / "dent" / "d1.jpg", 30, fmt="JPEG")  # no mask
    (root / "scratch" / "notes.txt").write_text("not an image")
    return _write(tmp_path / "parts.yaml", name="parts", root="parts", normal="good/*.jpg", abnormal="*/*.jpg",
                  masks="{dir}/{stem}.png", test_share=0.3, split_seed=0)


# ------------------------------------------------------------------------------------------ reading


def _refusal(path: Path) -> DhkdError:
    with pytest.raises(DhkdError) as error:
        dataset_file.read_dataset_file(path)
    print(f"{path.name}: dhkd: {error.value.what}\n  fix: {error.value.fix}")  # pytest -s shows the messages
    return error.value


def test_a_data_set_file_is_read_by_the_profiles_yaml_rules(tmp_path: Path) -> None:
    """``on``/``no`` are text, never booleans; a key given twice is refused (not "last wins"); ``1e-3``
    is a number, not text. Plain yaml.safe_load got all three the other way."""
    head = "name: parts\nroot: parts\nnormal: good/*.jpg\n"
    (tmp_path / "parts").mkdir()
    text = tmp_path / "no.yaml"
    text.write_text("name: no\nroot: parts\nnormal: good/*.jpg\n")
    assert dataset_file.read_dataset_file(text).name == "no"  # safe_load: False, "name must be a text"
    on = tmp_path / "on.yaml"
    on.write_text(head + "test_share: on\n")
    error = _refusal(on)
    assert "'test_share' must be of type float, got 'on' (str)" in error.what and str(on) in error.what
    twice = tmp_path / "twice.yaml"
    twice.write_text(head + "test_share: 0.3\nnormal: good/*.png\n")
    error = _refusal(twice)
    assert f"data-set file {twice} is not valid YAML at line 5" in error.what
    assert "the key 'normal' appears twice (first at line 3)" in error.what and "keep one of the two" in error.fix
    small = tmp_path / "small.yaml"
    small.write_text(head + "test_share: 1e-3\n")
    assert dataset_file.read_dataset_file(small).test_share == 1e-3  # safe_load: the text '1e-3', refused


def test_data_set_keys_are_checked_with_the_settings_ranges(tmp_path: Path) -> None:
    """Types and ranges come from :class:`DataSetKeys`' declarations, as a profile's do: every
    problem in one message, each with the nearest allowed value."""
    (tmp_path / "parts").mkdir()
    path = tmp_path / "bad.yaml"
    path.write_text("name: parts\nroot: parts\nnormal: good/*.jpg\ntest_share: 1.5\nsplit_seed: -1\nimage_size: 100\n")
    error = _refusal(path)
    assert error.what.startswith("3 keys are not allowed:")
    assert "test_share=1.5 is out of range: test_share must be 0 < x < 1" in error.what
    assert "split_seed=-1 is out of range" in error.what and "nearest valid value: split_seed=0" in error.fix
    assert "image_size=100 is out of range" in error.what and "nearest valid value: image_size=96" in error.fix



def test_data_set_file_loads_as_a_split_with_kinds_masks_and_paths(folder_set: Path) -> None:
    assert list_categories(folder_set) == ["parts"]
    validate_category(folder_set, "parts")
    train = load_split(folder_set, "parts", "train", SIZE, progress=False)
    test = load_split(folder_set, "parts", "test", SIZE, progress=False)
    assert len(train) == 7 and train.labels.sum() == 0 and train.images.dtype == torch.uint8
    assert train.images.shape == (7, 3, SIZE, SIZE)
    assert test.defect_types == ["good"] * 3 + ["dent", "dent", "scratch", "scratch", "scratch"]
    assert test.labels.tolist() == [0, 0, 0, 1, 1, 1, 1, 1]
    assert test.has_mask.tolist() == [False, False, False, True, False, True, True, True]
    assert test.mask_known().tolist() == [True, True, True, True, False, True, True, True]
    assert test.masks[3].any() and not test.masks[4].any()  # the 0/1 mask is read as a defect
    assert not set(train.paths) & set(test.paths)


@pytest.mark.parametrize("fmt,suffix,mode", [
    (fmt, suffix, mode)
    for fmt, suffix, modes in [("PNG", "png", ["L", "RGB", "RGBA", "P", "I;16"]), ("JPEG", "jpg", ["L", "RGB"]),
                               ("BMP", "bmp", ["L", "RGB", "P"]), ("TIFF", "tif", ["L", "RGB", "RGBA", "P", "I;16"])]
    for mode in modes
])
def test_every_image_format_and_mode_reads_as_8_bit_rgb(tmp_path: Path, fmt: str, suffix: str, mode: str) -> None:
    root = tmp_path / "d"
    for i in range(3):
        _image(root / "ok" / f"{i}.{suffix}", 150, mode=mode, fmt=fmt)
    _image(root / "bad" / f"b.{suffix}", 150, mode=mode, fmt=fmt)
    spec = _write(tmp_path / "d.yaml", name="d", root="d", normal=f"ok/*.{suffix}", abnormal=f"bad/*.{suffix}")
    split = load_split(spec, "d", "train", SIZE, progress=False)
    assert split.images.shape == (2, 3, SIZE, SIZE)
    mean = split.images.float().mean().item()
    assert 140 < mean < 165, f"{fmt} {mode}: mean {mean}"  # 150..157 in, whatever the mode


@pytest.mark.parametrize("encoding,values,mode", [
    ("0/1", _square(on=1), "L"),
    ("0/255", _square(on=255), "L"),
    ("anti-aliased", np.clip(_square(on=255) * 0.9 + np.linspace(0, 60, 40)[None, :], 0, 255), "L"),
    ("16-bit 0/65535", _square(on=65535), "I;16"),
    ("16-bit 0/255", _square(on=255), "I;16"),
    ("16-bit 0/1", _square(on=1), "I;16"),
])
def test_each_mask_encoding_gives_the_same_binary_mask(tmp_path: Path, encoding: str, values, mode: str) -> None:
    path = _mask(tmp_path / "m.png", values, mode)
    with Image.open(path) as img:
        binary = binarize_mask(img)
    assert (binary == (_square() > 0)).all(), encoding


def test_palette_and_colour_masks_count_by_their_colours(tmp_path: Path) -> None:
    palette = Image.fromarray((_square(on=1)).astype(np.uint8), "P")
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)  # index 1 = red, as annotation tools save
    palette.save(tmp_path / "p.png")
    rgb = np.zeros((24, 40, 3), np.uint8)
    rgb[..., 1] = _square(on=200)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    for name in ("p.png", "c.png"):
        with Image.open(tmp_path / name) as img:
            assert (binarize_mask(img) == (_square() > 0)).all(), name


def test_masks_in_another_folder_with_a_suffix(tmp_path: Path) -> None:
    root = tmp_path / "f"
    for i in range(4):
        _image(root / "images" / "ok" / f"{i}.png")
    _image(root / "images" / "crack" / "c.png", 220)
    _mask(root / "labels" / "crack" / "c_label.bmp", _square())
    spec = _write(tmp_path / "f.yaml", name="f", root="f", normal="images/ok/*.png", abnormal="images/crack/*.png",
                  masks="labels/{parent}/{stem}_label.bmp", kind="{parent}")
    test = load_split(spec, "f", "test", SIZE, progress=False)
    assert test.defect_types[-1] == "crack" and test.has_mask[-1] and test.masks[-1].any()


def test_mask_of_another_size_and_unreadable_files_are_found_before_training(tmp_path: Path) -> None:
    root = tmp_path / "s"
    for i in range(3):
        _image(root / "ok" / f"{i}.png")
    (root / "ok" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    _image(root / "bad" / "b.png")
    _mask(root / "bad" / "b_mask.png", _square(size=(20, 12), box=(1, 1, 5, 5)))
    spec = _write(tmp_path / "s.yaml", name="s", root="s", normal="ok/*.png", abnormal="bad/b.png", masks="{dir}/{stem}_mask.png")
    with pytest.raises(DhkdError) as error:
        validate_category(spec, "s")
    text = str(error.value)
    assert "2 problems" in text and "broken.png" in text and "b_mask.png is 20x12 but its image" in text


# ------------------------------------------------------------------------------------------ the split


def test_split_is_deterministic_in_its_seed_and_recorded(folder_set: Path, tmp_path: Path) -> None:
    dataset = dataset_file.read_dataset_file(folder_set)
    found = dataset_file.scan(dataset)
    first = dataset_file.split_paths(dataset, found)
    assert first == dataset_file.split_paths(dataset_file.read_dataset_file(folder_set), dataset_file.scan(dataset))
    assert len(first[1]) == 3 and len(first[0]) == 7  # round(10 * 0.3)
    other = dataset_file.DataSetFile(**{**dataset.__dict__, "split_seed": 1})
    assert dataset_file.split_paths(other, found)[1] != first[1]
    record = dataset_file.split_record(dataset)
    assert record["split"]["train"] == 7 and record["split"]["abnormal_without_mask"] == 1
    again = dataset_file.recorded_dataset(record)
    dataset_file.check_same_split(again, record)
    _image(dataset.root / "good" / "g99.jpg", fmt="JPEG")  # a new image changes the split: said, not silent
    with pytest.raises(DhkdError, match="changed since the run was trained"):
        dataset_file.check_same_split(again, record)


def test_overlapping_globs_keep_normal_images_normal(folder_set: Path) -> None:
    dataset = dataset_file.read_dataset_file(folder_set)
    found = dataset_file.scan(dataset)
    assert found.normal_also_abnormal == 10  # "*/*.jpg" also matches good/
    assert {kind for _, kind, _ in found.abnormal} == {"scratch", "dent"}
    assert "10 of them also match abnormal: normal wins" in found.summary(dataset)


# ------------------------------------------------------------------------------------------ layout errors


LAYOUT_ERRORS = [
    ("a glob that matches nothing", {"normal": "god/*.jpg"}, "the normal glob 'god/*.jpg' of 'parts'"),
    ("a glob that matches other files", {"abnormal": "scratch/*"}, "matches {root}/scratch/notes.txt, which is not an image"),
    ("an image its own mask", {"abnormal": "scratch/*.png"}, "makes {root}/scratch/s0.png its own mask"),
    ("a mask taken as an image", {"abnormal": ["scratch/*.jpg", "scratch/*.png"], "masks": "{dir}/{stem}.png"},
     "is the mask of"),
    ("an unknown key", {"test_size": 0.2}, "unknown key 'test_size'"),
    ("a missing key", {"normal": None}, "lacks normal"),
    ("a root that is not there", {"root": "nowhere"}, "does not exist"),
    ("a glob leaving the root", {"normal": "../x/*.jpg"}, "leaves the root folder"),
    ("test_share out of range", {"test_share": 1.5}, "test_share=1.5 is out of range: test_share must be 0 < x < 1"),
    ("an unknown template field", {"masks": "{folder}/{stem}.png"}, "{{folder}}, which is not a field"),
    ("a kind named good", {"kind": "good"}, "other than 'good'"),
    ("another category name", None, "describes the data set 'parts', not 'other'"),
    ("a single normal image", {"normal": "good/g00.jpg", "abnormal": ["scratch/*.jpg", "dent/*.jpg"]},
     "has a single normal image"),
    ("a mask of another size", lambda root: _mask(root / "scratch" / "s0.png", _square((20, 12), (1, 1, 5, 5))),
     "mask {root}/scratch/s0.png is 20x12 but its image {root}/scratch/s0.jpg is 40x24"),
    ("an unreadable image", lambda root: (root / "good" / "g03.jpg").write_bytes(b"\xff\xd8 cut short"),
     "cannot read image {root}/good/g03.jpg"),
]


def _break(folder_set: Path, change) -> str:
    """Apply a LAYOUT_ERRORS change (to the file's content, or to the files); the category to ask for."""
    if callable(change):
        change(folder_set.parent / "parts")
        return "parts"
    content = yaml.safe_load(folder_set.read_text())
    content.update(change or {})
    _write(folder_set, **content)
    return "parts" if change is not None else "other"


@pytest.mark.parametrize("case,change,message", LAYOUT_ERRORS, ids=[case for case, _, _ in LAYOUT_ERRORS])
def test_layout_errors_name_the_problem_and_the_fix(folder_set: Path, case: str, change, message: str) -> None:
    category = _break(folder_set, change)
    with pytest.raises(DhkdError) as error:
        validate_category(folder_set, category)
    message = message.format(root=folder_set.parent / "parts")
    assert message in str(error.value) and error.value.fix, str(error.value)


def layout_error_rows(tmp_path: Path) -> list[str]:
    """The data/README.md table rows: each layout error's case, message and fix as the kit prints them."""
    rows = []
    for index, (case, change, _) in enumerate(LAYOUT_ERRORS):
        folder = tmp_path / f"case{index}"
        folder.mkdir()
        folder_set = make_folder_set(folder)
        try:
            validate_category(folder_set, _break(folder_set, change))
        except DhkdError as error:
            first = error.what.splitlines()[1].lstrip(" -") if "problems with" in error.what else error.what
            text = first.replace(str(folder_set.parent), "…")
            fix = (error.fix or "").splitlines()[0].replace(str(folder_set.parent), "…")
            rows.append(f"| {case} | {text} | {fix} |")
    return rows


def test_data_readme_lists_every_layout_error_as_the_kit_says_it(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[1] / "data" / "README.md").read_text()
    missing = [row for row in layout_error_rows(tmp_path) if row not in readme]
    assert not missing, "data/README.md's table of layout errors is out of date; these rows are new:\n" + "\n".join(missing)


# ------------------------------------------------------------------------------------------ CLI end to end


@pytest.mark.slow
def test_data_folder_train_evaluate_predict(folder_set: Path, tmp_path: Path, capsys) -> None:
    root = folder_set.parent / "parts"
    out = tmp_path / "written.yaml"
    assert cli.main(["data", "folder", "--root", str(root), "--normal", "good/*.jpg", "--abnormal", "*/*.jpg",
                     "--masks", "{dir}/{stem}.png", "--test-share", "0.3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "scratch      3 images, 3 with a mask, 0 without" in printed and "dent" in printed
    written = yaml.safe_load(out.read_text())
    assert written["root"] == "parts" and written["name"] == "parts"  # relative to the file

    run = tmp_path / "run"
    assert cli.main(["train", "--data", str(out), "--profile", "smoke", "--epochs", "2", "--out", str(run), "--quiet"]) == 0
    info = yaml.safe_load((run / "run.json").read_text())
    assert info["dataset"]["split"]["train"] == 7 and info["dataset"]["content"]["split_seed"] == 0
    assert cli.main(["evaluate", "--run", str(run), "--json", str(tmp_path / "m.json"), "--quiet"]) == 0
    result = yaml.safe_load((tmp_path / "m.json").read_text())
    assert result["n_defective"] == 5 and result["n_defective_without_mask"] == 1 and result["dataset"] == "parts"
    assert result["pixel_auroc"] is not None and result["per_defect"]["dent"]["without_mask"] == 1
    held = held_out_count(7, load_config("smoke").data.calibration_share)  # of the 7 training images
    assert info["train_images"] == 7 - held and info["calibration_images"] == held
    assert result["threshold"]["n_normal"] == held and result["threshold"]["images"] == "calibration"

    predicted = tmp_path / "pred"
    images = [str(root / "good"), str(root / "scratch" / "s0.jpg")]
    assert cli.main(["predict", "--run", str(run), *images, "--out", str(predicted), "--quiet", "--batch-size", "2"]) == 0
    with open(predicted / "scores.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [list(r) for r in rows[:1]] == [["path", "score", "flagged"]] and len(rows) == 11
    for folder in ("maps", "overlays", "masks"):
        for name in ("s0.png", "g00.png", "g09.png"):
            with Image.open(predicted / folder / name) as img:
                assert img.size == (40, 24), (folder, name)  # the image's own size, not the model's square
    from dhkd.run.evaluate import load_predictions

    evaluated = load_predictions(run)
    by_path = dict(zip(evaluated.paths, evaluated.scores.tolist()))
    for row in rows:  # dhkd predict scores an image as dhkd evaluate does
        if row["path"] in by_path:
            assert float(row["score"]) == pytest.approx(by_path[row["path"]], rel=1e-5)
    assert sum(row["path"] in by_path for row in rows) >= 3  # the test split's good images and s0
    import dhkd

    table = dhkd.predict(run, [root / "scratch" / "s1.jpg"], threshold=0.0, progress=False)
    assert table["flagged"].all() and table.attrs["threshold_how"] == "given"


def test_predict_without_an_evaluation_says_how_to_get_a_threshold(folder_set: Path, tmp_path: Path) -> None:
    from dhkd.run.predict import run_threshold

    with pytest.raises(DhkdError, match="no recorded threshold"):
        run_threshold(tmp_path)


def test_example_mtd_file_on_the_real_data(tmp_path: Path) -> None:
    """data/mtd.yaml, pointed at the real MTD: 952 normal, five kinds, every defective image with its mask."""
    if not (MTD / "MT_Free").is_dir():
        pytest.skip(f"MTD not found at {MTD} (set DHKD_MTD_ROOT to the folder that holds MT_Free/)")
    content = yaml.safe_load((Path(__file__).resolve().parents[1] / "data" / "mtd.yaml").read_text())
    content["root"] = str(MTD)
    dataset = dataset_file.from_dict(content, tmp_path)
    found = dataset_file.scan(dataset)
    assert not found.problems
    assert len(found.normal) == 952
    assert {k: n for k, (n, masked) in found.kinds().items() if n == masked} == {
        "MT_Blowhole": 115, "MT_Break": 85, "MT_Crack": 57, "MT_Fray": 32, "MT_Uneven": 103}
    items = dataset_file.split_items(dataset, found)
    assert len(items["train"]) == 762 and len(items["test"]) == 190 + 392


def test_pixel_metrics_leave_out_defective_images_without_a_mask() -> None:
    from dhkd import metrics
    from dhkd.config import load_config
    from dhkd.run.evaluate import Predictions, compute_metrics

    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(6, 16, 16, generator=generator)
    masks = torch.zeros(6, 16, 16, dtype=torch.bool)
    masks[3:, 4:9, 4:9] = True
    maps[3:, 4:9, 4:9] += 0.5
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    has_mask = torch.tensor([False, False, False, True, True, False])
    masks[5] = False  # its mask is unknown: read as all normal, it would count its defect as false alarms
    p = Predictions(maps, maps.flatten(1).amax(1), masks, labels, ["good"] * 3 + ["dent"] * 3, [str(i) for i in range(6)],
                    has_mask)
    config = load_config("smoke")
    result = compute_metrics(p, config)
    assert result["pixel_auroc"] == metrics.pixel_auroc(maps[:5], masks[:5])
    assert result["image_auroc"] == metrics.image_auroc(p.scores, labels)  # every image
    assert result["per_defect"]["dent"]["without_mask"] == 1
    none = compute_metrics(Predictions(maps, p.scores, masks, labels, p.defect_types, p.paths,
                                       torch.zeros(6, dtype=torch.bool)), config)
    assert np.isnan(none["pixel_auroc"]) and np.isnan(none["aupro"]) and not np.isnan(none["image_auroc"])
