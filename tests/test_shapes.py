"""Images at their own shape: rectangular input (data.image_size=[H, W]) and kept aspect (data.resize).

Pins: the geometry of keep_aspect (scale, centre, edge padding, masks padded with False), that
every stage takes [H, W] (loading, masking, model, maps, metrics, predict, widgets, export), that
the padding is left out of the image scores and pixel metrics (a hand-made case: padded maps
score exactly as the same maps cut to the image), the shape errors and their fix lines, and the
shape ``dhkd data folder`` suggests and writes.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from dhkd import metrics
from dhkd.config import load_config
from dhkd.data import Fit, as_fit, load_split, stream_split, suggest_shape
from dhkd.data.dataset_file import describe_folder, read_dataset_file
from dhkd.data.toy import generate_toy
from dhkd.errors import DhkdError
from dhkd.metrics.thresholds import PixelCounter
from dhkd.method.anomaly_map import image_scores
from dhkd.method.masking import region_masks

CATEGORY = "nut"


# ------------------------------------------------------------------------------ the geometry


def test_keep_aspect_scales_by_one_factor_centres_and_pads_with_the_edge_pixels() -> None:
    fit = Fit(64, 96, keep_aspect=True)
    assert fit.box(150, 100) == (0, 0, 64, 96)  # 3 : 2 into 3 : 2: fills the input
    assert fit.box(100, 100) == (0, 16, 64, 64)  # a square: full height, centred with 16 px each side
    assert fit.box(300, 100) == (16, 0, 32, 96)  # 3 : 1: full width, centred vertically
    picture = np.zeros((100, 100, 3), np.uint8)
    picture[:, 0] = 200  # a bright left column: the left padding repeats it
    out = fit.image(Image.fromarray(picture))
    assert out.shape == (64, 96, 3)
    assert (out[:, :16] == out[:, 16:17]).all() and out[0, 0, 0] > 100
    levels = np.full((100, 100), 255, np.uint8)
    mask = fit.mask(levels)
    assert mask.shape == (64, 96) and mask[:, 16:80].all() and not mask[:, :16].any() and not mask[:, 80:].any()
    assert (fit.valid(100, 100) == mask).all()


def test_squeeze_ignores_the_aspect_and_a_square_is_resized_as_before() -> None:
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 120, 3), dtype=np.uint8))
    assert Fit(64, 96).box(120, 50) == (0, 0, 64, 96)
    assert np.array_equal(Fit(64, 64).image(picture), np.asarray(picture.resize((64, 64), Image.BILINEAR)))
    assert as_fit(64) == Fit(64, 64) and as_fit([64, 96]) == Fit(64, 96)
    with pytest.raises(ValueError):
        as_fit([64])


def test_suggested_shape_follows_the_median_aspect_and_keeps_it_only_when_aspects_differ() -> None:
    assert suggest_shape([(400, 200)] * 5) == ((192, 352), "squeeze")  # one aspect, 2 : 1, ~256² pixels
    assert suggest_shape([(100, 300), (300, 100), (200, 200)]) == ((256, 256), "keep_aspect")
    (height, width), _ = suggest_shape([(1250, 500)] * 3)
    assert height % 32 == 0 and width % 32 == 0 and 2.2 < width / height < 2.8


def test_masking_and_corruption_regions_take_a_rectangle() -> None:
    generator = torch.Generator().manual_seed(0)
    for shape in ("perlin", "rect", "crack", "mixed", "all"):
        masks = region_masks(3, (64, 160), shape, 0.2, generator, torch.device("cpu"))
        assert masks.shape == (3, 64, 160)
        assert 0.1 < masks.float().mean() < 0.3, shape


# ------------------------------------------------------------------------ padding left out


def _padded_case() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    maps = rng.random((4, 20, 30)).astype(np.float32)
    masks = np.zeros((4, 20, 30), bool)
    masks[0, 5:9, 8:14] = masks[2, 10:15, 4:7] = masks[1, 2:4, 20:25] = True
    maps[masks] += 0.4
    valid = np.zeros_like(masks)
    valid[:, :, 3:27] = True  # 3 columns of padding on each side
    padded = np.where(valid, maps, 0.0).astype(np.float32)  # what evaluation stores: 0 on padding
    return padded, masks, valid, maps[:, :, 3:27], masks[:, :, 3:27]


@pytest.mark.parametrize("metric", ["pixel_auroc", "aupro", "pro_rd4ad"])
def test_padding_is_left_out_of_the_pixel_metrics(metric: str) -> None:
    padded, masks, valid, cut_maps, cut_masks = _padded_case()
    fn = getattr(metrics, metric)
    kept = fn(padded, masks, valid=valid)
    assert kept == pytest.approx(fn(cut_maps, cut_masks), abs=1e-12)
    assert kept != pytest.approx(fn(padded, masks), abs=1e-3)  # counting the padding would change it


def test_padding_is_left_out_of_the_pro_curve_the_scores_and_the_widgets_counts() -> None:
    padded, masks, valid, cut_maps, cut_masks = _padded_case()
    for kept, cut in zip(metrics.pro_curve(padded, masks, valid=valid), metrics.pro_curve(cut_maps, cut_masks)):
        assert np.allclose(kept, cut)
    shifted = torch.from_numpy(padded - 5.0)  # a map below its padding's value still scores its own maximum
    assert torch.equal(image_scores(shifted, torch.from_numpy(valid)), torch.from_numpy(cut_maps - 5.0).flatten(1).amax(1))
    counter, cut = PixelCounter(padded, masks, valid=valid), PixelCounter(cut_maps, cut_masks)
    for t in (0.1, 0.5, 0.9):
        a, b = counter.stats(t), cut.stats(t)
        assert a["counts"] == b["counts"] and a["fpr_good"] == b["fpr_good"]
    assert counter.threshold_at_fpr(0.05) == cut.threshold_at_fpr(0.05)
    assert counter.value_range == cut.value_range


def test_valid_masks_of_the_wrong_shape_are_refused() -> None:
    padded, masks, valid, _, _ = _padded_case()
    with pytest.raises(DhkdError, match="valid and anomaly_maps differ in shape"):
        metrics.pixel_auroc(padded, masks, valid=valid[:, :, :10])


# ---------------------------------------------------------------- a data set of mixed sizes


@pytest.fixture(scope="module")
def mixed_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy nut category with every image (and mask) stretched to its own size, 48-96 px a side."""
    root = tmp_path_factory.mktemp("mixed")
    generate_toy(root, image_size=64, n_train=8, n_test_good=2, n_test_per_defect=2, categories=[CATEGORY],
                 progress=False)
    rng = np.random.default_rng(0)
    for path in sorted((root / CATEGORY).rglob("*.png")):
        if path.parent.parent.name == "ground_truth":
            continue
        size = (int(rng.integers(48, 97)), int(rng.integers(48, 97)))  # (width, height)
        Image.open(path).resize(size, Image.BILINEAR).save(path)
        if path.parent.parent.name == "test" and path.parent.name != "good":
            mask = root / CATEGORY / "ground_truth" / path.parent.name / f"{path.stem}_mask.png"
            Image.open(mask).resize(size, Image.NEAREST).save(mask)
    return root


def test_a_mixed_size_split_keeps_each_aspect_and_says_where_each_image_lies(mixed_root: Path) -> None:
    fit = Fit(64, 96, keep_aspect=True)
    held = load_split(mixed_root, CATEGORY, "test", fit, progress=False)
    streamed = stream_split(mixed_root, CATEGORY, "test", fit, progress=False)
    assert held.images.shape[1:] == (3, 64, 96) and held.valid is not None
    assert torch.equal(held.valid, streamed.valid) and torch.equal(held.masks, streamed.masks)
    assert torch.equal(held.images, streamed.images[torch.arange(len(held))])
    for i, path in enumerate(held.paths):
        width, height = Image.open(path).size
        top, left, h, w = fit.box(width, height)
        assert int(held.valid[i].sum()) == h * w
        assert not (held.masks[i] & ~held.valid[i]).any()
    squeezed = load_split(mixed_root, CATEGORY, "test", (64, 96), progress=False)
    assert squeezed.valid is None and squeezed.images.shape[1:] == (3, 64, 96)


def _train_evaluate(data: Path, out: Path, overrides: list[str]) -> dict:
    from dhkd.run.evaluate import evaluate_run
    from dhkd.run.train import train

    config = load_config("smoke", ["train.epochs=2", "train.batch_size=4"] + overrides)
    run = train(config, data, CATEGORY, out, device="cpu", progress=False)
    return evaluate_run(run, device="cpu", progress=False)


@pytest.mark.slow
def test_a_rectangular_run_trains_evaluates_predicts_and_shows_in_the_widgets(toy_root: Path, tmp_path: Path) -> None:
    from dhkd.notebook.widgets import FailureBrowser, ThresholdExplorer
    from dhkd.run.evaluate import load_predictions
    from dhkd.run.predict import predict

    result = _train_evaluate(toy_root, tmp_path / "run", ["data.image_size=[64,96]"])
    assert 0 <= result["image_auroc"] <= 1 and 0 <= result["aupro"] <= 1
    predictions = load_predictions(tmp_path / "run")
    assert predictions.maps.shape[1:] == (64, 96) and predictions.valid is None
    images = sorted((toy_root / CATEGORY / "test").rglob("*.png"))[:3]
    table = predict(tmp_path / "run", images, out=tmp_path / "predicted", threshold=0.5, progress=False)
    assert len(table) == 3
    for image in images:  # the maps are written at each image's own size
        written = next((tmp_path / "predicted" / "maps").glob(f"*{image.stem}.png"))
        assert Image.open(written).size == Image.open(image).size
    pytest.importorskip("onnxruntime")
    from dhkd.run.export import export_run

    done = export_run(tmp_path / "run", tmp_path / "rect.onnx")
    assert (done["height"], done["width"]) == (64, 96) and done["check"]["checked"]
    onnx = predict(None, images, model=tmp_path / "rect.onnx", threshold=0.5, progress=False)
    assert np.allclose(onnx["score"], table["score"], atol=1e-3)  # the same scores from the exported file
    split = load_split(toy_root, CATEGORY, "test", (64, 96), progress=False)
    explorer = ThresholdExplorer(predictions, split.images, thumb_size=48)
    assert explorer._thumbs.shape[1:3] == (32, 48)  # the thumbnails keep the 2 : 3 shape
    explorer.slider.value = explorer.slider.min
    FailureBrowser(predictions, split.images, panel_size=96)


@pytest.mark.slow
def test_a_kept_aspect_run_leaves_the_padding_out_of_its_maps_and_metrics(mixed_root: Path, tmp_path: Path) -> None:
    from dhkd.run.evaluate import compute_metrics, load_predictions
    from dhkd.run.predict import predict

    result = _train_evaluate(mixed_root, tmp_path / "run", ["data.image_size=[64,96]", "data.resize=keep_aspect"])
    predictions = load_predictions(tmp_path / "run")
    assert predictions.valid is not None and predictions.maps.shape[1:] == (64, 96)
    assert (predictions.maps[~predictions.valid] == 0).all()
    config = load_config("smoke", ["data.image_size=[64,96]", "data.resize=keep_aspect"])
    again = compute_metrics(predictions, config)
    assert again["pixel_auroc"] == pytest.approx(result["pixel_auroc"], abs=1e-3)  # float16 on disk
    # scored image by image on its own box, the pooled pixel AUROC is the same number
    own = [(m[v], k[v]) for m, k, v in zip(predictions.maps, predictions.masks, predictions.valid)]
    pooled = metrics.pixel_auroc(torch.cat([m for m, _ in own])[None], torch.cat([k for _, k in own])[None])
    assert again["pixel_auroc"] == pytest.approx(pooled, abs=1e-12)
    image = sorted((mixed_root / CATEGORY / "test").rglob("*.png"))[0]
    table = predict(tmp_path / "run", [image], out=tmp_path / "predicted", threshold=0.5, progress=False)
    assert Image.open(next((tmp_path / "predicted" / "maps").glob("*.png"))).size == Image.open(image).size
    if importlib.util.find_spec("onnxruntime") is not None:  # the exported file pads and crops alike
        from dhkd.run.export import export_run

        export_run(tmp_path / "run", tmp_path / "kept.onnx")
        onnx = predict(None, [image], model=tmp_path / "kept.onnx", threshold=0.5, progress=False)
        assert onnx["score"][0] == pytest.approx(table["score"][0], abs=1e-3)


# ------------------------------------------------------------------ errors and the data-set file


@pytest.mark.parametrize("override, fragments", [
    ("data.image_size=[250,384]", ["item 1: 250", "a multiple of 32", "data.image_size=[256, 384]"]),
    ("data.image_size=[256]", ["has 1 items", "must have 2"]),
    ("data.image_size=[256,384,3]", ["has 3 items"]),
    ("data.image_size=wide", ["wrong type", "int or list[int]"]),
    ("data.resize=pad", ["squeeze / keep_aspect"]),
])
def test_shape_errors_name_the_setting_and_the_fix(override: str, fragments: list[str]) -> None:
    with pytest.raises(DhkdError) as caught:
        load_config("smoke", [override])
    message = str(caught.value)
    assert caught.value.fix
    for fragment in fragments:
        assert fragment in message


def test_data_folder_suggests_the_shape_and_writes_it_on_request(mixed_root: Path, tmp_path: Path) -> None:
    folder = mixed_root / CATEGORY
    common = dict(root=folder, normal=["train/good/*.png", "test/good/*.png"], abnormal=["test/*/*.png"],
                  masks=None, kind="{parent}", name="mixed", test_share=0.2, split_seed=0)
    _, summary = describe_folder(**common, out=tmp_path / "suggested.yaml")
    assert "suggested" in summary and "keep_aspect" in summary and "--image-size auto" in summary
    assert "image_size" not in yaml.safe_load((tmp_path / "suggested.yaml").read_text())
    dataset, summary = describe_folder(**common, out=tmp_path / "written.yaml", image_size="auto")
    written = yaml.safe_load((tmp_path / "written.yaml").read_text())
    assert written["resize"] == "keep_aspect" and len(written["image_size"]) == 2 and "written into the file" in summary
    settings = read_dataset_file(tmp_path / "written.yaml").settings()
    config = load_config("smoke", settings)
    assert list(config.data.shape) == written["image_size"] and config.data.resize == "keep_aspect"
    describe_folder(**common, out=tmp_path / "given.yaml", image_size="64,96")
    assert yaml.safe_load((tmp_path / "given.yaml").read_text())["image_size"] == [64, 96]
    with pytest.raises(DhkdError, match="not auto, one number or H,W"):
        describe_folder(**common, out=tmp_path / "bad.yaml", image_size="wide")


def test_a_data_set_file_with_a_bad_shape_is_refused(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    for key, value, fragment in (("image_size", "[64]", "image_size=.64. has 1 items; it must have 2"),
                                 ("resize", "pad", "resize must be one of")):
        path = tmp_path / f"{key}.yaml"
        path.write_text(f"name: x\nroot: images\nnormal: '*.png'\n{key}: {value}\n")
        with pytest.raises(DhkdError, match=fragment):
            read_dataset_file(path)


def test_a_data_set_files_shape_is_the_runs_default_under_the_users_set(mixed_root: Path, tmp_path: Path) -> None:
    from dhkd.config import dataset_settings, training_config

    path = tmp_path / "mixed.yaml"
    path.write_text(f"name: mixed\nroot: {mixed_root / CATEGORY}\nnormal: train/good/*.png\n"
                    "image_size: [64, 96]\nresize: keep_aspect\n")
    config = training_config("smoke", 2, path)
    assert config.data.shape == (64, 96) and config.data.resize == "keep_aspect" and config.train.epochs == 2
    assert training_config("smoke", 2, mixed_root).data.shape == (64, 64)  # a folder carries no shape
    assert load_config("smoke", dataset_settings(path) + ["data.resize=squeeze"]).data.resize == "squeeze"
