"""dhkd predict stays bounded and honest (issue 33): it never scores its own outputs, its memory is
bounded for large images, and every bad input ends in one dhkd: message with nothing half-made."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dhkd import cli

CATEGORY = "nut"


@pytest.fixture(scope="module")
def trained_run(toy_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "smoke"
    assert cli.main(["train", "--data-root", str(toy_root), "--category", CATEGORY, "--profile", "smoke", "--out",
                     str(run), "--quiet", "--epochs", "2"]) == 0
    assert cli.main(["evaluate", "--run", str(run), "--json", str(run / "metrics.json"), "--quiet"]) == 0
    return run


@pytest.fixture
def images(toy_root: Path, tmp_path: Path) -> Path:
    """A folder of three of the toy's test images."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    for source in sorted((toy_root / CATEGORY / "test").rglob("*.png"))[:3]:
        (folder / f"{source.parent.name}_{source.name}").write_bytes(source.read_bytes())
    return folder


def predict_cli(run: Path, *args: str) -> int:
    return cli.main(["predict", "--run", str(run), *args, "--quiet"])


def tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# ----------------------------------------------------------------------------- its own outputs


def test_an_output_folder_inside_the_input_is_never_scored(trained_run: Path, images: Path, capsys) -> None:
    out = images / "pred"
    for _ in range(2):
        assert predict_cli(trained_run, str(images), "--out", str(out)) == 0
        assert "3 images scored" in capsys.readouterr().out
        with open(out / "scores.csv") as handle:
            assert len(handle.readlines()) == 1 + 3
    assert predict_cli(trained_run, str(out / "maps"), "--out", str(images.parent / "again")) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("dhkd: ") and "is (in) the output folder of dhkd predict" in err
    assert not (images.parent / "again").exists()


def test_an_older_output_folder_without_the_marker_is_recognised(trained_run: Path, images: Path, capsys) -> None:
    old = images / "scored"
    assert predict_cli(trained_run, str(images), "--out", str(old)) == 0
    (old / ".dhkd-predict").unlink()  # as written before the marker existed: scores.csv beside maps/
    assert predict_cli(trained_run, str(images), "--out", str(images.parent / "new")) == 0
    assert "3 images scored" in capsys.readouterr().out


def test_predict_out_that_is_a_file_is_one_message(trained_run: Path, images: Path, tmp_path: Path, capsys) -> None:
    target = tmp_path / "scores.txt"
    target.write_text("mine")
    assert predict_cli(trained_run, str(images), "--out", str(target)) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("dhkd: ") and "is a file, not a folder" in err and target.read_text() == "mine"
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "maps").write_text("mine")
    assert predict_cli(trained_run, str(images), "--out", str(tmp_path / "o")) == cli.EXIT_ERROR
    assert "is a file where dhkd predict writes the folder maps/" in capsys.readouterr().err


# ----------------------------------------------------------------------------- bad inputs: one message, nothing left


def corrupt_deflate_tiff(path: Path) -> Path:
    """A deflate TIFF whose strips lie inside the file (the header check passes) but whose data is corrupt."""
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, compression="tiff_adobe_deflate")
    with Image.open(path) as img:
        offset, count = img.tag_v2[273][0], img.tag_v2[279][0]
    data = bytearray(path.read_bytes())
    data[offset + count // 2: offset + count // 2 + 16] = b"\xff" * 16
    path.write_bytes(bytes(data))
    return path


def test_a_corrupt_deflate_tiff_is_one_message_and_nothing_is_left(trained_run: Path, images: Path, tmp_path: Path,
                                                                   capsys) -> None:
    from dhkd.data.files import Item, check_item

    bad = corrupt_deflate_tiff(images / "zz_last.tif")
    check_item(Item(bad, "good", None))  # the header check cannot see it
    out = tmp_path / "out"
    assert predict_cli(trained_run, str(images), "--out", str(out), "--batch-size", "1") == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("dhkd: cannot read image") and str(bad) in err and "Traceback" not in err and "fix: " in err
    assert not out.exists()  # the PNGs of the images before it were written, then removed
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    assert predict_cli(trained_run, str(images), "--out", str(kept), "--batch-size", "1") == cli.EXIT_ERROR
    assert tree(kept) == {"notes.txt"}  # what was there stays, what predict made goes


def test_a_file_name_that_is_not_utf8_is_one_message(trained_run: Path, images: Path, tmp_path: Path, capsys) -> None:
    source = next(images.iterdir())
    try:
        os.rename(source, os.path.join(os.fsencode(images), b"caf\xe9.png"))
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses names that are not UTF-8")
    out = tmp_path / "out"
    assert predict_cli(trained_run, str(images), "--out", str(out)) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("dhkd: 1 image name(s) are not valid UTF-8") and "caf\\xe9.png" in err and "rename" in err
    assert not out.exists()


def test_images_over_the_pixel_limit_are_refused_before_decoding(trained_run: Path, images: Path, tmp_path: Path,
                                                                 capsys) -> None:
    width, height = Image.open(next(images.iterdir())).size
    out = tmp_path / "out"
    assert predict_cli(trained_run, str(images), "--out", str(out), "--max-pixels", str(width * height - 1)) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("dhkd: 3 image(s) are over dhkd predict's limit") and f"--max-pixels {width * height}" in err
    assert not out.exists()
    assert predict_cli(trained_run, str(images), "--out", str(out), "--max-pixels", str(width * height)) == 0


def test_pil_s_own_limit_follows_max_pixels(trained_run: Path, tmp_path: Path, monkeypatch) -> None:
    from dhkd.run.predict import predict

    big = tmp_path / "big.png"
    Image.new("RGB", (300, 200), (90, 120, 30)).save(big)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL would call 60,000 pixels a decompression bomb
    table = predict(trained_run, [big], out=tmp_path / "out", threshold=1.0, progress=False, max_pixels=60_000)
    assert len(table) == 1 and Image.MAX_IMAGE_PIXELS == 1000


# ----------------------------------------------------------------------------- what is written


def test_outputs_choose_the_png_folders(trained_run: Path, images: Path, tmp_path: Path, capsys) -> None:
    assert predict_cli(trained_run, str(images), "--out", str(tmp_path / "none"), "--outputs", "none") == 0
    assert tree(tmp_path / "none") == {".dhkd-predict", "scores.csv"}
    assert "scores in" in capsys.readouterr().out
    assert predict_cli(trained_run, str(images), "--out", str(tmp_path / "masks"), "--outputs", "masks") == 0
    assert {p.split("/")[0] for p in tree(tmp_path / "masks")} == {".dhkd-predict", "scores.csv", "masks"}
    assert predict_cli(trained_run, str(images), "--out", str(tmp_path / "x"), "--outputs", "maps,heat") == cli.EXIT_ERROR
    assert "unknown output 'heat'" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_the_pngs_are_the_float64_colour_maps_in_uint8_work(tmp_path: Path) -> None:
    """The table-and-bands rendering gives the colours matplotlib's float64 jet gives, and the
    overlay within one level of the float64 blend."""
    from matplotlib import colormaps

    from dhkd.run.outputs import BAND_ROWS, OVERLAY_WEIGHT, OutputFolder, jet_table, render

    rng = np.random.default_rng(3)
    original = rng.integers(0, 256, (BAND_ROWS + 37, 90, 3), dtype=np.uint8)  # more than one band
    amap = torch.from_numpy(rng.gamma(2.0, 1.0, (16, 16)).astype(np.float32))
    threshold = 2.0
    with OutputFolder(tmp_path, ("maps", "overlays", "masks")) as folder:
        render(original, amap, threshold, ("maps", "overlays", "masks"), folder, "x.png", jet_table())
    full = torch.nn.functional.interpolate(amap[None, None], size=original.shape[:2], mode="bilinear",
                                           align_corners=False)[0, 0].numpy()
    colour = (colormaps["jet"](np.clip(full / (2 * threshold), 0, 1))[..., :3] * 255).astype(np.uint8)
    overlay = ((1 - OVERLAY_WEIGHT) * original + OVERLAY_WEIGHT * colour).round().astype(np.uint8)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "maps" / "x.png")), colour)
    assert np.abs(np.asarray(Image.open(tmp_path / "overlays" / "x.png")).astype(int) - overlay).max() <= 1
    assert np.array_equal(np.asarray(Image.open(tmp_path / "masks" / "x.png")), ((full > threshold) * 255).astype(np.uint8))


def traced_peak(run: Path, folder: Path, out: Path, keep_pixels: int) -> int:
    """The most memory numpy (and Python) held at once during one predict, by tracemalloc, in a fresh
    process: every measurement then pays the same one-off costs (imports, model loading, tables), so
    the differences between them are what the images cost, whatever ran before in this session."""
    import subprocess
    import sys

    script = (
        "import sys, tracemalloc\n"
        "from pathlib import Path\n"
        "from dhkd.run import predict as p\n"
        f"p.KEEP_PIXELS = {keep_pixels}\n"
        "tracemalloc.start()\n"
        "p.predict(Path(sys.argv[1]), [Path(sys.argv[2])], out=Path(sys.argv[3]), threshold=1.0, device='cpu', progress=False)\n"
        "print(tracemalloc.get_traced_memory()[1])\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(run), str(folder), str(out)], capture_output=True, text=True,
                          check=True, timeout=300)
    return int(done.stdout.split()[-1])


def test_peak_memory_of_large_images_is_one_image_s_worth(trained_run: Path, tmp_path: Path, monkeypatch) -> None:
    """Images over KEEP_PIXELS (made small here) are handled one at a time, in uint8 and float32:
    three cost what one does, and one well under the 58 bytes a pixel of the float64 colour map and
    overlay. Whole-process figures: benchmarks/deploy.md."""

    side = 600
    y, x = np.mgrid[0:side, 0:side]
    pixels = np.stack([x * 255 // side, y * 255 // side, (x + y) % 256], -1).astype(np.uint8)
    folders = {name: tmp_path / name for name in ("small", "one", "three")}
    for folder in folders.values():
        folder.mkdir()
    Image.fromarray(pixels[:64, :64]).save(folders["small"] / "s.png")
    for i in range(3):
        Image.fromarray(np.roll(pixels, i, axis=0)).save(folders["three"] / f"{i}.png")
    Image.fromarray(pixels).save(folders["one"] / "0.png")
    peaks = {name: traced_peak(trained_run, folder, tmp_path / f"out-{name}", side * side // 4)
             for name, folder in folders.items()}
    print({name: f"{peak / 2**20:.1f} MiB" for name, peak in peaks.items()})
    area = side * side
    # tracemalloc counts every transient buffer at this size (about 21 bytes a pixel here, in fresh processes);
    # the whole process's peak RSS at 6000 x 6000 is BYTES_PER_PIXEL's 11. Either way far below the float64 path's 58.
    assert peaks["one"] - peaks["small"] <= 29 * area < 58 * area
    assert peaks["three"] - peaks["one"] < 3 * area  # less than one more decoded image held
