"""The threshold explorer, failure browser and run comparison, driven programmatically.

Every number a widget shows is compared with a direct computation (``maps >= t`` in float64
and plain counting) on small synthetic predictions, so these tests need no model and no browser.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from PIL import Image

from dhkd import metrics
from dhkd.metrics import thresholds
from dhkd.notebook import widgets
from dhkd.run.evaluate import Predictions

N, S = 14, 64


def make_predictions(seed: int = 0, n: int = N, size: int = S, ties: bool = False) -> tuple[Predictions, torch.Tensor]:
    """Good images first, then two defect types with rectangular masks; maps higher on defects."""
    rng = np.random.default_rng(seed)
    labels = np.array([0] * (n // 2) + [1] * (n - n // 2))
    kinds = ["good"] * (n // 2) + [("crack" if k % 2 else "hole") for k in range(n - n // 2)]
    masks = np.zeros((n, size, size), bool)
    maps = rng.normal(0.0, 1.0, (n, size, size))
    for i in np.flatnonzero(labels):
        y, x = rng.integers(2, size // 2, 2)
        h, w = rng.integers(3, size // 3, 2)
        masks[i, y:y + h, x:x + w] = True
        maps[i, y:y + h, x:x + w] += rng.uniform(0.5, 3.0)
    if ties:  # coarse values: many pixels share a score
        maps = np.round(maps * 2) / 2
    maps = maps.astype(np.float32)
    scores = maps.reshape(n, -1).max(1)
    images = torch.from_numpy(rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8))
    p = Predictions(torch.from_numpy(maps), torch.from_numpy(scores), torch.from_numpy(masks),
                    torch.from_numpy(labels), kinds, [f"/data/{k}/{i:03d}.png" for i, k in enumerate(kinds)])
    return p, images


def direct_counts(pred: np.ndarray, truth: np.ndarray) -> dict[str, int]:
    pred, truth = pred.astype(bool), truth.astype(bool)
    return {"tp": int((pred & truth).sum()), "fp": int((pred & ~truth).sum()),
            "fn": int((~pred & truth).sum()), "tn": int((~pred & ~truth).sum())}


def direct_ious(maps: np.ndarray, masks: np.ndarray, t: float) -> tuple[float, float]:
    """(mean IoU over images with a defect, pooled IoU over all pixels) of ``maps >= t``."""
    pred = maps.astype(np.float64) >= t
    inter = (pred & masks).sum((1, 2))
    union = (pred | masks).sum((1, 2))
    defective = masks.any((1, 2))
    return float((inter[defective] / union[defective]).mean()), float(inter.sum() / union.sum())


def close(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-12, abs=1e-12)


def shown_counts(explorer: widgets.ThresholdExplorer) -> dict[str, int]:
    """The counts as the HTML widget shows them (what a user reads)."""
    found = re.search(r'data-counts="TP=(\d+) FP=(\d+) FN=(\d+) TN=(\d+)"', explorer.stats_html.value)
    assert found, explorer.stats_html.value
    return dict(zip(("tp", "fp", "fn", "tn"), map(int, found.groups())))


@pytest.fixture(scope="module")
def data() -> tuple[Predictions, torch.Tensor]:
    return make_predictions()


# ------------------------------------------------------------------------------ thresholds.py


@pytest.mark.parametrize("ties", [False, True])
def test_pixel_counter_matches_direct_computation(ties: bool) -> None:
    p, _ = make_predictions(seed=3, ties=ties)
    maps, masks = p.maps.numpy(), p.masks.numpy()
    counter = thresholds.PixelCounter(maps, masks, p.labels)
    values = np.unique(maps)
    between = float(values[len(values) // 2]) + 1e-12  # a float64 strictly between float32 values
    for t in [float(values[0]) - 1, float(values[0]), -0.3, 0.0, 0.5, 1.7, between, float(values[-1]), 99.0]:
        stats = counter.stats(t)
        assert vars(stats["counts"]) == direct_counts(maps.astype(np.float64) >= t, masks), t
        mean_iou, pooled_iou = direct_ious(maps, masks, t)
        assert close(stats["iou_defective"], mean_iou) and close(stats["iou_pooled"], pooled_iou)
        good = ~p.labels.numpy().astype(bool)
        assert close(stats["fpr_good"], float((maps[good].astype(np.float64) >= t).mean()))


@pytest.mark.parametrize("ties", [False, True])
def test_presets_agree_with_dhkd_metrics(ties: bool) -> None:
    p, _ = make_predictions(seed=5, ties=ties)
    image = thresholds.ImageCounter(p.scores, p.labels)
    pixel = thresholds.PixelCounter(p.maps, p.masks, p.labels)
    assert image.f1_optimal() == metrics.f1_optimal_threshold(p.scores, p.labels)
    assert pixel.f1_optimal() == metrics.f1_optimal_threshold(p.maps.reshape(-1), p.masks.reshape(-1))
    for fpr in [0.0, 0.1, 1 / 7, 0.3, 0.5, 1.0]:
        assert image.threshold_at_fpr(fpr) == metrics.threshold_at_fpr(p.scores, p.labels, fpr)
        t = pixel.threshold_at_fpr(fpr)
        good = np.sort(p.maps[p.labels == 0].numpy().reshape(-1))
        assert (good >= t).mean() <= fpr
        k = int(np.floor(fpr * len(good) + 1e-9))  # good pixels that may be flagged
        if k < len(good):  # lowest: no pixel at all lies between the (k+1)-th largest good one and t
            cut = good[len(good) - k - 1]
            assert cut < t and not ((p.maps > float(cut)) & (p.maps < t)).any()


def test_threshold_at_fpr_random_against_metrics() -> None:
    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(2, 25))
        scores = (rng.integers(0, 6, n) / 5 if trial % 2 else rng.random(n)).astype(np.float32)
        labels = rng.integers(0, 2, n)
        labels[0], labels[1] = 0, 1
        counter = thresholds.ImageCounter(scores, labels)
        for fpr in [0.0, 0.2, 0.25, 1 / 3, 0.5, 0.9, 1.0]:
            assert counter.threshold_at_fpr(fpr) == metrics.threshold_at_fpr(scores, labels, fpr)


def test_counts_ratios() -> None:
    c = thresholds.Counts(tp=3, fp=1, fn=2, tn=4)
    assert (c.precision, c.recall, c.fpr, c.f1, c.iou) == (0.75, 0.6, 0.2, 6 / 9, 0.5)
    assert c.roc_point == (0.2, 0.6)
    assert thresholds.counts(np.array([1, 1, 0, 0, 1]), np.array([1, 0, 1, 0, 1])) == thresholds.Counts(2, 1, 1, 1)
    empty = thresholds.Counts(0, 0, 5, 5)
    assert math.isnan(empty.precision) and empty.f1 == 0.0 and empty.recall == 0.0


def test_ceil_float32() -> None:
    for t in [0.1, 1 / 3, -0.7, 1e-30, 5.0]:
        c = thresholds.ceil_float32(t)
        assert float(c) >= t and float(np.nextafter(c, np.float32(-np.inf))) < t


# ------------------------------------------------------------------------------ threshold explorer


def test_image_explorer_slider_updates_the_numbers(data) -> None:
    p, images = data
    explorer = widgets.threshold_explorer(p, images, level="image")
    assert isinstance(explorer.widget, widgets.W.Widget)
    scores, labels = p.scores.double().numpy(), p.labels.numpy()
    maps, masks = p.maps.numpy(), p.masks.numpy()
    pictures = set()
    for t in np.linspace(float(scores.min()) - 0.1, float(scores.max()) + 0.05, 9):
        explorer.slider.value = float(t)
        t = explorer.slider.value
        want = direct_counts(scores >= t, labels)
        assert shown_counts(explorer) == want
        s = explorer.stats
        assert {k: s[k] for k in want} == want and s["threshold"] == t
        tp, fp, fn = want["tp"], want["fp"], want["fn"]
        assert close(s["precision"], tp / (tp + fp) if tp + fp else math.nan)
        assert close(s["recall"], tp / (tp + fn)) and close(s["f1"], 2 * tp / (2 * tp + fp + fn))
        assert close(s["fpr"], fp / (labels == 0).sum()) and s["fpr"] == s["fpr_good"]
        mean_iou, pooled_iou = direct_ious(maps, masks, t)
        assert close(s["iou_defective"], mean_iou) and close(s["iou_pooled"], pooled_iou)
        assert s["flagged_images"] == int((scores >= t).sum())
        pictures.add((explorer.grid_image.value, explorer.roc_image.value))
    assert len(pictures) > 3  # the overlays and the ROC point moved


def test_pixel_explorer_set_threshold_and_presets(data) -> None:
    p, images = data
    explorer = widgets.threshold_explorer(p, images, level="pixel")
    maps, masks = p.maps.double().numpy(), p.masks.numpy()
    for t in [-1.0, 0.25, 1.5, 2.2, 3.0]:
        explorer.set_threshold(t)
        assert explorer.threshold == t
        want = direct_counts(maps >= t, masks)
        assert shown_counts(explorer) == want
        assert {k: explorer.stats[k] for k in want} == want
        assert close(explorer.stats["recall"], want["tp"] / masks.sum())
        assert close(explorer.stats["fpr"], want["fp"] / (~masks).sum())

    t_f1 = explorer.preset_f1()
    best_t, best_f1 = metrics.f1_optimal_threshold(p.maps.reshape(-1), p.masks.reshape(-1))
    assert t_f1 == best_t == explorer.slider.value and close(explorer.stats["f1"], best_f1)

    t_fpr = explorer.preset_fpr(0.02)
    good = maps[p.labels.numpy() == 0]
    assert explorer.threshold == t_fpr and explorer.stats["fpr_good"] == (good >= t_fpr).mean() <= 0.02
    explorer.set_threshold(1e6)  # beyond the slider: the range widens, nothing is flagged
    assert explorer.slider.max >= 1e6 and explorer.stats["tp"] == explorer.stats["fp"] == 0


def test_image_explorer_presets(data) -> None:
    p, images = data
    explorer = widgets.threshold_explorer(p, images)
    explorer.fpr_box.value = 0.3
    explorer.fpr_button.click()  # the buttons call the presets
    assert explorer.threshold == metrics.threshold_at_fpr(p.scores, p.labels, 0.3)
    assert explorer.stats["fpr_good"] <= 0.3
    explorer.set_threshold(float(p.scores.min()))
    explorer.f1_button.click()
    assert (explorer.threshold, explorer.stats["f1"]) == pytest.approx(metrics.f1_optimal_threshold(p.scores, p.labels))


def test_browser_snapping_keeps_the_exact_preset(data) -> None:
    """JupyterLab rounds a value set from Python to the slider's step and sends it back."""
    p, images = data
    explorer = widgets.threshold_explorer(p, images)
    t = explorer.preset_f1()
    stats = dict(explorer.stats)
    s = explorer.slider
    snapped = s.min + round((t - s.min) / s.step) * s.step
    s.value = snapped  # the echo
    assert explorer.threshold == t and explorer.stats == stats
    s.value = snapped - 40 * s.step  # a user's move
    assert explorer.threshold == s.value and explorer.stats["threshold"] == s.value


def test_explorer_pages_and_subsets(data) -> None:
    p, images = data
    explorer = widgets.threshold_explorer(p, images, per_page=4, columns=2, thumb_size=16)
    assert len(explorer.page.options) == math.ceil(N / 4)
    explorer.page.value = 1
    assert list(explorer.page_indices()) == [4, 5, 6, 7]
    explorer.subset.value = "crack"
    assert list(explorer.page_indices()) == [i for i, k in enumerate(p.defect_types) if k == "crack"][:4]
    assert explorer.page.value == 0
    with Image.open(__import__("io").BytesIO(explorer.grid_image.value)) as img:
        assert img.width == 2 * (16 + 6) + 4  # two columns of framed 16-px thumbnails


def test_explorer_without_images_and_latency(data) -> None:
    p, _ = data
    explorer = widgets.threshold_explorer(p, None, level="pixel")
    explorer.update_seconds.clear()
    for t in np.linspace(-1, 3, 10):
        explorer.set_threshold(float(t))
    assert len(explorer.update_seconds) == 10 and max(explorer.update_seconds) < 1.0


def test_explorer_state_renders_statically(data) -> None:
    """What nbconvert embeds: the widget state holds the numbers (HTML) and the pictures (bytes)."""
    p, images = data
    explorer = widgets.threshold_explorer(p, images)
    states = [w.get_state() for w in [explorer.stats_html, explorer.grid_image, explorer.roc_image]]
    assert "TP=" in states[0]["value"]
    assert all(len(s["value"]) > 1000 and s["format"] == "jpeg" for s in states[1:])


def test_bad_level(data) -> None:
    with pytest.raises(Exception, match="level"):
        widgets.threshold_explorer(data[0], data[1], level="region")


# ------------------------------------------------------------------------------ failure browser


def test_failure_browser_lists(data) -> None:
    p, images = data
    scores, labels = p.scores.numpy(), p.labels.numpy()
    t = float(np.median(scores))
    browser = widgets.failure_browser(p, images, image_threshold=t, pixel_threshold=1.0)
    assert browser.kind.value == "false negatives"  # the first kind with cases
    browser.kind.value = "false negatives"
    fn = [i for i in np.argsort(scores, kind="stable") if labels[i] == 1 and scores[i] < t]
    assert browser.items == fn and browser.current == (fn[0] if fn else None)

    browser.kind.value = "false positives"
    fp = [i for i in np.argsort(-scores, kind="stable") if labels[i] == 0 and scores[i] >= t]
    assert browser.items == fp

    browser.kind.value = "worst localisation"
    maps, masks = p.maps.double().numpy(), p.masks.numpy()
    pred = maps >= 1.0
    iou = (pred & masks).sum((1, 2)) / (pred | masks).sum((1, 2))
    worst = sorted(np.flatnonzero(labels), key=lambda i: (iou[i], scores[i]))
    assert browser.items == worst
    assert f"{iou[worst[0]]:.3f}" in browser.caption.value

    browser.defect.value = "crack"
    assert browser.items == [i for i in worst if p.defect_types[i] == "crack"]
    first = browser.current
    assert browser.next() == browser.items[1] and browser.current == browser.items[1]
    assert browser.previous() == first
    assert browser.previous() == browser.items[-1]  # wraps around
    assert browser.view.value and p.paths[browser.current] in browser.caption.value


def test_failure_browser_empty_list(data) -> None:
    p, images = data
    browser = widgets.failure_browser(p, images, image_threshold=-1e9)  # everything flagged
    assert browser.kind.value == "false positives"  # opens on the first kind with cases
    browser.kind.value = "false negatives"
    assert browser.items == [] and browser.current is None and browser.next() is None
    assert "no false negatives" in browser.position_html.value


def test_failure_browser_default_thresholds_are_f1_optimal(data) -> None:
    p, images = data
    browser = widgets.failure_browser(p, images)
    assert browser.image_threshold.value == metrics.f1_optimal_threshold(p.scores, p.labels)[0]
    assert browser.pixel_threshold.value == pytest.approx(
        metrics.f1_optimal_threshold(p.maps.reshape(-1), p.masks.reshape(-1))[0])


# ------------------------------------------------------------------------------ run comparison


def write_run(tmp_path, name: str, data_root, category: str, p: Predictions) -> object:
    from dhkd.config import load_config, save_config
    from dhkd.run.evaluate import save_predictions
    from dhkd.run.folder import METRICS_NAME
    from dhkd.run.folder import CONFIG_NAME, RUN_INFO_NAME

    run = tmp_path / name
    run.mkdir()
    config = load_config("smoke")
    config.data.image_size = S  # the fake maps' size
    save_config(config, run / CONFIG_NAME)
    (run / RUN_INFO_NAME).write_text(json.dumps({"data_root": str(data_root), "category": category}))
    (run / METRICS_NAME).write_text(json.dumps({"image_auroc": 0.75, "pixel_auroc": 0.5, "aupro": 0.25}))
    save_predictions(run / "predictions.npz", p)
    return run


def test_run_comparison(tmp_path) -> None:
    from dhkd.data import load_split

    p, images = make_predictions(seed=1, n=6)
    root = tmp_path / "data"
    category = root / "widget"
    (category / "train" / "good").mkdir(parents=True)
    Image.fromarray(np.zeros((S, S, 3), np.uint8)).save(category / "train" / "good" / "000.png")
    for i, kind in enumerate(p.defect_types):
        folder = category / "test" / kind
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i].permute(1, 2, 0).numpy()).save(folder / f"{i:03d}.png")
        if kind != "good":
            (category / "ground_truth" / kind).mkdir(parents=True, exist_ok=True)
            Image.fromarray(p.masks[i].numpy().astype(np.uint8) * 255).save(category / "ground_truth" / kind / f"{i:03d}_mask.png")
    split = load_split(root, "widget", "test", S, progress=False)
    order = [int(path.stem) for path in split.paths]  # the split's order (defect folders sorted)
    pa = Predictions(p.maps[order], p.scores[order], split.masks, p.labels[order],
                     list(split.defect_types), [str(path) for path in split.paths])
    reverse = order[::-1]  # run B lists the same images in another order, with other maps
    pb = Predictions(p.maps[reverse] * 2 + 1, p.scores[reverse] * 2 + 1, split.masks.flip(0), p.labels[reverse],
                     list(split.defect_types)[::-1], [str(path) for path in split.paths][::-1])
    run_a = write_run(tmp_path, "rd", root, "widget", pa)
    run_b = write_run(tmp_path, "dhkd", root, "widget", pb)

    comparison = widgets.run_comparison(run_a, run_b)
    assert comparison.index.max == 5 and "0.750" in comparison.header.value
    seen = set()
    for i in range(6):
        comparison.index.value = i
        caption = comparison.caption.value
        assert f"{float(pa.scores[i]):.4g}" in caption and f"{float(pa.scores[i] * 2 + 1):.4g}" in caption
        assert split.defect_types[i] in caption
        seen.add(comparison.view.value)
    assert len(seen) == 6

    other = write_run(tmp_path, "other", root, "other_category", pa)
    with pytest.raises(Exception, match="different categories"):
        widgets.run_comparison(run_a, other)
