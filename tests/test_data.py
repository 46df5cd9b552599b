"""dhkd.data and dhkd.data.download: loading, conversion, the table of bad inputs tried, downloads.

Everything here runs on small fake categories made in ``tmp_path``; one test uses the real
MVTec AD bottle category and skips where it is absent.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from dhkd.data import download
from dhkd.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MVTEC_CATEGORIES,
    CategorySplit,
    MVTecDataset,
    denormalize,
    find_category,
    list_categories,
    load_split,
    normalize,
    validate_category,
)
from dhkd.errors import DhkdError

SIZE = 32  # fake images are SIZE x SIZE
LOAD = 24  # and are loaded at LOAD x LOAD, so the resize does something
CAT = "widget"
DEFECTS = {"dent": 1, "scratch": 2}  # defect type -> number of images


# --------------------------------------------------------------------------------------------
# fake categories


def _save(path: Path, image: Image.Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def _rgb(seed: int, size: int = SIZE) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def _mask(seed: int, size: int = SIZE) -> Image.Image:
    mask = np.zeros((size, size), np.uint8)
    r = 4 + seed % 8
    mask[r : r + 10, r : r + 12] = 255
    mask[r + 10, r : r + 12] = 128  # a grey edge row: binarisation must decide it
    return Image.fromarray(mask)


def make_category(root: Path, name: str = CAT, n_train: int = 3, n_good_test: int = 2) -> Path:
    folder = root / name
    for i in range(n_train):
        _save(folder / "train" / "good" / f"{i:03d}.png", _rgb(i))
    for i in range(n_good_test):
        _save(folder / "test" / "good" / f"{i:03d}.png", _rgb(100 + i))
    for d, (defect, count) in enumerate(DEFECTS.items()):
        for i in range(count):
            _save(folder / "test" / defect / f"{i:03d}.png", _rgb(200 + 10 * d + i))
            _save(folder / "ground_truth" / defect / f"{i:03d}_mask.png", _mask(10 * d + i))
    return folder


@pytest.fixture
def root(tmp_path: Path) -> Path:
    make_category(tmp_path / "data")
    return tmp_path / "data"


# --------------------------------------------------------------------------------------------
# the table of bad inputs tried: (case, setup, fragment the message must contain)
#
# A setup gets a data root holding one good category "widget" and breaks something; it returns
# what to load and the path the message must name. Both validate_category() and load_split()
# must raise a DhkdError that names that path, contains the fragment and says what to do.


class Broken(NamedTuple):
    root: Path
    category: str
    split: str  # the split load_split() must fail on
    path: Path  # named in the message


def _root_missing(root: Path) -> Broken:
    return Broken(root.parent / "no such data", CAT, "train", root.parent / "no such data")


def _root_is_file(root: Path) -> Broken:
    (root.parent / "data.txt").write_text("not a folder")
    return Broken(root.parent / "data.txt", CAT, "train", root.parent / "data.txt")


def _category_misspelt(root: Path) -> Broken:
    return Broken(root, "widgte", "train", root / "widgte")


def _category_absent(root: Path) -> Broken:
    return Broken(root, "zzz", "train", root / "zzz")


def _root_is_a_category(root: Path) -> Broken:
    return Broken(root / CAT, CAT, "train", root / CAT)


def _train_good_missing(root: Path) -> Broken:
    shutil.rmtree(root / CAT / "train" / "good")
    return Broken(root, CAT, "train", root / CAT / "train" / "good")


def _train_good_empty(root: Path) -> Broken:
    for path in (root / CAT / "train" / "good").iterdir():
        path.unlink()
    return Broken(root, CAT, "train", root / CAT / "train" / "good")


def _truncated_png(root: Path) -> Broken:
    path = root / CAT / "train" / "good" / "001.png"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return Broken(root, CAT, "train", path)


def _corrupt_png(root: Path) -> Broken:
    path = root / CAT / "test" / "good" / "001.png"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return Broken(root, CAT, "test", path)


def _empty_file(root: Path) -> Broken:
    path = root / CAT / "train" / "good" / "002.png"
    path.write_bytes(b"")
    return Broken(root, CAT, "train", path)


def _text_named_png(root: Path) -> Broken:
    path = root / CAT / "train" / "good" / "003.png"
    path.write_text("this is not an image")
    return Broken(root, CAT, "train", path)


def _non_image_file(root: Path) -> Broken:
    path = root / CAT / "test" / "good" / "notes.txt"
    path.write_text("a stray file")
    return Broken(root, CAT, "test", path)


def _folder_among_images(root: Path) -> Broken:
    path = root / CAT / "train" / "good" / "more"
    path.mkdir()
    return Broken(root, CAT, "train", path)


def _file_directly_in_test(root: Path) -> Broken:
    path = root / CAT / "test" / "000.png"
    _rgb(0).save(path)
    return Broken(root, CAT, "test", path)


def _mask_missing(root: Path) -> Broken:
    (root / CAT / "ground_truth" / "scratch" / "001_mask.png").unlink()
    return Broken(root, CAT, "test", root / CAT / "test" / "scratch" / "001.png")


def _ground_truth_folder_missing(root: Path) -> Broken:
    shutil.rmtree(root / CAT / "ground_truth" / "dent")
    return Broken(root, CAT, "test", root / CAT / "ground_truth" / "dent")


def _mask_wrong_size(root: Path) -> Broken:
    path = root / CAT / "ground_truth" / "scratch" / "000_mask.png"
    _mask(0, size=SIZE // 2).save(path)
    return Broken(root, CAT, "test", path)


def _truncated_mask(root: Path) -> Broken:
    path = root / CAT / "ground_truth" / "dent" / "000_mask.png"
    path.write_bytes(path.read_bytes()[:-30])
    return Broken(root, CAT, "test", path)


def _test_missing(root: Path) -> Broken:
    shutil.rmtree(root / CAT / "test")
    return Broken(root, CAT, "test", root / CAT / "test")


def _test_without_good(root: Path) -> Broken:
    shutil.rmtree(root / CAT / "test" / "good")
    return Broken(root, CAT, "test", root / CAT / "test")


def _test_without_defects(root: Path) -> Broken:
    for defect in DEFECTS:
        shutil.rmtree(root / CAT / "test" / defect)
    return Broken(root, CAT, "test", root / CAT / "test")


BAD_INPUTS: list[tuple[str, Callable[[Path], Broken], str]] = [
    ("data root missing", _root_missing, "dhkd data mvtec --out"),
    ("data root is a file", _root_is_file, "is a file, not a folder"),
    ("category misspelt", _category_misspelt, "did you mean 'widget'?"),
    ("category absent", _category_absent, "categories present: widget"),
    ("data root is a category folder", _root_is_a_category, "looks like a category folder itself"),
    ("train/good missing", _train_good_missing, "a category needs normal training images in train/good"),
    ("train/good empty", _train_good_empty, "holds no images"),
    ("truncated PNG", _truncated_png, "the file is truncated"),
    ("corrupt PNG", _corrupt_png, "the file is corrupt"),
    ("empty file", _empty_file, "the file is empty (0 bytes)"),
    ("text file named .png", _text_named_png, "not an image file PIL can read"),
    ("non-image file among images", _non_image_file, "is not an image (suffix '.txt')"),
    ("folder among images", _folder_among_images, "unexpected folder"),
    ("image directly in test/", _file_directly_in_test, "test images go in a folder per defect type"),
    ("defect image without mask", _mask_missing, "has no mask"),
    ("ground_truth/<defect> missing", _ground_truth_folder_missing, "need masks there"),
    ("mask size differs from image", _mask_wrong_size, f"is {SIZE // 2}x{SIZE // 2} but its image"),
    ("truncated mask", _truncated_mask, "cannot read mask"),
    ("test/ missing", _test_missing, "a category needs test images"),
    ("test/good missing", _test_without_good, "has no 'good' folder"),
    ("no defective test images", _test_without_defects, "evaluation needs defective test images"),
]


def bad_input_message(tmp_path: Path, setup: Callable[[Path], Broken], call: str) -> tuple[Broken, DhkdError]:
    """Make a good category, break it with ``setup``, and return the error ``call`` raises."""
    make_category(tmp_path / "data")
    broken = setup(tmp_path / "data")
    with pytest.raises(DhkdError) as info:
        if call == "validate":
            validate_category(broken.root, broken.category)
        else:
            load_split(broken.root, broken.category, broken.split, image_size=LOAD, progress=False)  # type: ignore[arg-type]
    return broken, info.value


@pytest.mark.parametrize("call", ["validate", "load"])
@pytest.mark.parametrize(("case", "setup", "fragment"), BAD_INPUTS, ids=[case for case, _, _ in BAD_INPUTS])
def test_bad_input(tmp_path: Path, case: str, setup: Callable[[Path], Broken], fragment: str, call: str) -> None:
    broken, error = bad_input_message(tmp_path, setup, call)
    message = str(error)
    assert fragment in message, message
    assert str(broken.path) in message, message
    assert error.fix, f"{case}: the message says what is wrong but not what to do"


def test_many_problems_are_listed_in_one_error(root: Path) -> None:
    good = root / CAT / "train" / "good"
    for i in range(3, 16):
        (good / f"{i:03d}.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # a PNG signature, then nothing
    for call in (lambda: validate_category(root, CAT), lambda: load_split(root, CAT, "train", progress=False)):
        with pytest.raises(DhkdError) as info:
            call()
        message = str(info.value)
        assert message.startswith(f"13 problems with ")
        assert str(good / "003.png") in message and "... and 3 more" in message


# --------------------------------------------------------------------------------------------
# loading


def test_load_split_shapes_labels_masks(root: Path) -> None:
    train = load_split(root, CAT, "train", image_size=LOAD, progress=False)
    assert len(train) == 3
    assert train.images.shape == (3, 3, LOAD, LOAD) and train.images.dtype == torch.uint8
    assert train.masks.shape == (3, LOAD, LOAD) and train.masks.dtype == torch.bool and not train.masks.any()
    assert train.labels.tolist() == [0, 0, 0] and train.labels.dtype == torch.int64
    assert train.defect_types == ["good"] * 3
    assert train.paths == sorted((root / CAT / "train" / "good").iterdir())

    test = load_split(root, CAT, "test", image_size=LOAD, progress=False)
    assert test.defect_types == ["dent", "good", "good", "scratch", "scratch"]  # folders sorted, then files
    assert test.labels.tolist() == [1, 0, 0, 1, 1]
    assert [p.relative_to(root / CAT).as_posix() for p in test.paths] == [
        "test/dent/000.png", "test/good/000.png", "test/good/001.png", "test/scratch/000.png", "test/scratch/001.png",
    ]  # fmt: skip
    has_defect = test.masks.flatten(1).any(1)
    assert has_defect.tolist() == [True, False, False, True, True]  # good test images: empty masks


def test_matches_rd4ad_torchvision_preprocessing(root: Path) -> None:
    test = load_split(root, CAT, "test", image_size=LOAD, progress=False)
    image_tf = T.Compose([T.Resize((LOAD, LOAD)), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    mask_tf = T.Compose([T.Resize((LOAD, LOAD)), T.ToTensor()])
    expected = torch.stack([image_tf(Image.open(p).convert("RGB")) for p in test.paths])
    torch.testing.assert_close(normalize(test.images), expected, rtol=0, atol=1e-6)
    for i, path in enumerate(test.paths):
        if test.defect_types[i] != "good":
            gt = mask_tf(Image.open(root / CAT / "ground_truth" / path.parent.name / f"{path.stem}_mask.png"))
            assert torch.equal(test.masks[i], gt[0] > 0.5)  # RD4AD binarises at > 0.5
    assert 0 < int(test.masks[0].sum()) < LOAD * LOAD


def test_image_modes_become_8bit_rgb(tmp_path: Path) -> None:
    make_category(tmp_path, n_train=0)
    good = tmp_path / CAT / "train" / "good"
    rgb = np.asarray(_rgb(7))
    grey = rgb[..., 0]
    _save(good / "a_grey.png", Image.fromarray(grey))  # L
    _save(good / "b_rgba.png", Image.fromarray(np.dstack([rgb, np.full_like(grey, 7)])))  # RGBA, mostly transparent
    palette = _rgb(7).quantize(colors=16)  # P
    _save(good / "c_palette.png", palette)
    _save(good / "d_grey16.png", Image.fromarray(grey.astype(np.uint16) * 257))  # I;16: k * 257 -> k
    _save(good / "e_bilevel.png", Image.fromarray(grey > 127))  # 1
    assert Image.open(good / "d_grey16.png").mode == "I;16"

    split = load_split(tmp_path, CAT, "train", image_size=SIZE, progress=False)  # no resize: exact values
    hwc = split.images.permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(hwc[0], np.dstack([grey] * 3))
    np.testing.assert_array_equal(hwc[1], rgb)
    np.testing.assert_array_equal(hwc[2], np.asarray(palette.convert("RGB")))
    np.testing.assert_array_equal(hwc[3], np.dstack([grey] * 3))
    np.testing.assert_array_equal(hwc[4], np.dstack([np.where(grey > 127, 255, 0).astype(np.uint8)] * 3))


def test_sixteen_bit_is_scaled_not_clipped(tmp_path: Path) -> None:
    make_category(tmp_path, n_train=0)
    values = np.array([[0, 257, 128 * 257, 65535, 1000, 300]], dtype=np.uint16).repeat(6, 0)
    _save(tmp_path / CAT / "train" / "good" / "000.png", Image.fromarray(values))
    split = load_split(tmp_path, CAT, "train", image_size=6, progress=False)
    assert split.images[0, :, 0].tolist() == [[0, 1, 128, 255, 4, 1]] * 3  # round(v / 257)


def test_paths_with_spaces_and_non_ascii(tmp_path: Path) -> None:
    root = tmp_path / "my data ü"
    make_category(root, "wid get é")
    validate_category(root, "wid get é")
    split = load_split(root, "wid get é", "test", image_size=LOAD, progress=True)
    assert len(split) == 5 and split.paths[0].parent.parent.parent.name == "wid get é"
    assert list_categories(root) == ["wid get é"]


def test_hidden_and_os_files_are_ignored(root: Path) -> None:
    good = root / CAT / "train" / "good"
    (good / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (good / "._000.png").write_bytes(b"\0\5\26\7")  # macOS AppleDouble companion
    (good / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    validate_category(root, CAT)
    assert len(load_split(root, CAT, "train", image_size=LOAD, progress=False)) == 3


def test_find_and_list_categories(tmp_path: Path) -> None:
    for name in ("zeta", "bottle", "grid"):
        make_category(tmp_path, name, n_train=1, n_good_test=1)
    (tmp_path / "not a category").mkdir()
    assert list_categories(tmp_path) == ["grid", "bottle", "zeta"]  # the seed's order, then the rest sorted
    assert find_category(tmp_path, "grid") == tmp_path / "grid"
    with pytest.raises(DhkdError, match="did you mean 'bottle'"):
        find_category(tmp_path, "Bottel")
    with pytest.raises(DhkdError, match=r"dhkd data mvtec --out"):
        find_category(tmp_path, "toothbrush")  # an MVTec category that is not there: how to get it
    assert MVTEC_CATEGORIES[:5] == ("grid", "leather", "tile", "carpet", "wood") and len(MVTEC_CATEGORIES) == 15


def test_normalize_denormalize_to_and_dataset(root: Path) -> None:
    split = load_split(root, CAT, "test", image_size=LOAD, progress=False)
    x = normalize(split.images)
    assert x.dtype == torch.float32 and x.shape == split.images.shape
    torch.testing.assert_close(denormalize(x), split.images.float() / 255, rtol=0, atol=1e-6)
    assert normalize(split.images[0]).shape == (3, LOAD, LOAD)
    assert normalize(torch.zeros(2, 3, 4, 4, dtype=torch.uint8, device="meta")).device.type == "meta"
    with pytest.raises(TypeError, match="uint8"):
        normalize(x)

    moved = split.to("cpu")
    assert isinstance(moved, CategorySplit) and torch.equal(moved.images, split.images)
    assert moved.paths == split.paths and moved.paths is not split.paths

    for dataset in (MVTecDataset.from_split(split), MVTecDataset(root, CAT, "test", image_size=LOAD)):
        assert len(dataset) == 5
        item = dataset[3]
        assert set(item) == {"image", "mask", "label", "defect_type", "path"}
        assert item["image"].shape == (3, LOAD, LOAD) and item["image"].dtype == torch.float32
        assert item["mask"].shape == (1, LOAD, LOAD) and item["mask"].dtype == torch.float32
        assert item["mask"].sum() > 0 and item["label"] == 1 and item["defect_type"] == "scratch"
        assert item["path"] == str(root / CAT / "test" / "scratch" / "000.png")
        torch.testing.assert_close(item["image"], x[3])


# --------------------------------------------------------------------------------------------
# the real bottle category


@pytest.fixture(scope="module")
def bottle(mvtec_root: Path) -> Path:
    if not (mvtec_root / "bottle").is_dir():
        pytest.skip(f"no bottle category in {mvtec_root}")
    return mvtec_root


@pytest.mark.bottle
def test_real_bottle_test_split(bottle: Path) -> None:
    start = time.perf_counter()
    validate_category(bottle, "bottle")  # all 292 images and 63 masks checked intact, sizes matched
    assert time.perf_counter() - start < 10
    test = load_split(bottle, "bottle", "test", progress=False)
    assert len(test) == 83 and test.images.shape == (83, 3, 256, 256) and test.masks.shape == (83, 256, 256)
    assert int(test.labels.sum()) == 63 and test.defect_types.count("good") == 20
    assert sorted(set(test.defect_types)) == ["broken_large", "broken_small", "contamination", "good"]
    defective = test.labels == 1
    assert bool(test.masks[defective].flatten(1).any(1).all()) and not test.masks[~defective].any()
    reference = T.Compose([T.Resize((256, 256)), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    torch.testing.assert_close(normalize(test.images[:1])[0], reference(Image.open(test.paths[0]).convert("RGB")), rtol=0, atol=1e-6)


@pytest.mark.bottle
def test_real_bottle_train_split(bottle: Path) -> None:
    train = load_split(bottle, "bottle", "train", progress=False)
    assert len(train) == 209 and train.images.shape == (209, 3, 256, 256) and train.images.dtype == torch.uint8
    assert not train.labels.any() and not train.masks.any() and set(train.defect_types) == {"good"}


# --------------------------------------------------------------------------------------------
# download


def _tar_xz(path: Path, files: dict[str, bytes]) -> str:
    """Write a tar.xz holding ``files`` (name -> content); return its sha256."""
    with tarfile.open(path, "w:xz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fake_mvtec_files(tmp_path: Path, prefix: str = "") -> dict[str, bytes]:
    src = tmp_path / "src"
    for name in ("bottle", "grid"):
        make_category(src, name, n_train=2, n_good_test=1)
    files = {f"{prefix}{p.relative_to(src).as_posix()}": p.read_bytes() for p in sorted(src.rglob("*")) if p.is_file()}
    files[f"{prefix}license.txt"] = b"CC BY-NC-SA 4.0"
    return files


def test_download_without_network_fails_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = "http://127.0.0.1:9/mvtec_anomaly_detection.tar.xz"  # the discard port: nothing listens
    monkeypatch.setattr(download, "MVTEC_URL", url)
    start = time.perf_counter()
    with pytest.raises(DhkdError) as info:
        download.download_mvtec(tmp_path / "out", ["bottle"], progress=False)
    assert time.perf_counter() - start < 15
    message = str(info.value)
    assert url in message and "--data-root" in message and "train/good" in message
    assert str(tmp_path / "out" / download.ARCHIVE_NAME) in message  # where to put a hand-downloaded archive


@pytest.mark.parametrize("prefix", ["", "./", "mvtec_anomaly_detection/"])
def test_unpacks_only_the_requested_categories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefix: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(download, "MVTEC_URL", "http://127.0.0.1:9/unused")
    monkeypatch.setattr(download, "MVTEC_SHA256", _tar_xz(out / download.ARCHIVE_NAME, _fake_mvtec_files(tmp_path, prefix)))
    assert download.download_mvtec(out, ["bottle"], progress=False) == out
    # the temp folder is gone; the archive was placed by hand, so it is the user's and is kept
    assert sorted(p.name for p in out.iterdir()) == sorted(["bottle", "license.txt", download.ARCHIVE_NAME])
    assert list_categories(out) == ["bottle"]
    validate_category(out, "bottle")
    assert download.download_mvtec(out, ["bottle"], progress=False) == out  # present: nothing to do, no network


def test_wrong_checksum_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    out.mkdir()
    _tar_xz(out / download.ARCHIVE_NAME, _fake_mvtec_files(tmp_path))
    monkeypatch.setattr(download, "MVTEC_SHA256", "0" * 64)
    with pytest.raises(DhkdError, match="not the expected 0000"):
        download.download_mvtec(out, ["bottle"], progress=False)
    assert (out / download.ARCHIVE_NAME).exists() and not (out / "bottle").exists()  # a hand-placed file is kept


def test_unsafe_archive_member_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    out.mkdir()
    files = _fake_mvtec_files(tmp_path)
    files["bottle/train/good/../../../../escaped.txt"] = b"outside"
    monkeypatch.setattr(download, "MVTEC_SHA256", _tar_xz(out / download.ARCHIVE_NAME, files))
    with pytest.raises(DhkdError, match="unsafe member"):
        download.download_mvtec(out, ["bottle"], progress=False)
    assert not (tmp_path / "escaped.txt").exists() and not (out / "bottle").exists()
    assert [p.name for p in out.iterdir()] == [download.ARCHIVE_NAME]


def test_unknown_category_name(tmp_path: Path) -> None:
    with pytest.raises(DhkdError, match="did you mean 'metal_nut'"):
        download.download_mvtec(tmp_path, ["metalnut"], progress=False)


class _Server:
    """A local HTTP server for ``payload``: mode "range" (honours Range), "no-range", "404" or "html"."""

    def __init__(self, payload: bytes, mode: str) -> None:
        self.ranges: list[str | None] = []
        ranges = self.ranges

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                ranges.append(self.headers.get("Range"))
                if mode in ("404", "html"):
                    body = b"<html>gone</html>"
                    self.send_response(404 if mode == "404" else 200)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                start = int(ranges[-1].split("=")[1].split("-")[0]) if ranges[-1] and mode == "range" else 0
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
                self.send_header("Content-Type", "application/x-xz")
                self.send_header("Content-Length", str(len(payload) - start))
                self.end_headers()
                self.wfile.write(payload[start:])

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/mvtec_anomaly_detection.tar.xz"

    def __enter__(self) -> _Server:
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("mode", ["range", "no-range"])
def test_download_resumes_a_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    archive = tmp_path / "served.tar.xz"
    monkeypatch.setattr(download, "MVTEC_SHA256", _tar_xz(archive, _fake_mvtec_files(tmp_path)))
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    out = tmp_path / "out"
    out.mkdir()
    (out / (download.ARCHIVE_NAME + ".part")).write_bytes(archive.read_bytes()[:1000])
    with _Server(archive.read_bytes(), mode) as server:
        monkeypatch.setattr(download, "MVTEC_URL", server.url)
        download.download_mvtec(out, ["grid"], progress=False, keep_archive=True)
    assert server.ranges == ["bytes=1000-"]  # asked to continue; a server that ignores it starts over
    assert (out / download.ARCHIVE_NAME).read_bytes() == archive.read_bytes()
    assert list_categories(out) == ["grid"] and not (out / (download.ARCHIVE_NAME + ".part")).exists()


@pytest.mark.parametrize(("mode", "fragment"), [("404", "HTTP 404"), ("html", "answered with a web page")])
def test_download_refuses_an_error_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, fragment: str) -> None:
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    with _Server(b"", mode) as server, pytest.raises(DhkdError) as info:
        monkeypatch.setattr(download, "MVTEC_URL", server.url)
        download.download_mvtec(tmp_path / "out", ["bottle"], progress=False)
    assert fragment in str(info.value) and "--data-root" in str(info.value)
    assert not (tmp_path / "out" / download.ARCHIVE_NAME).exists()
