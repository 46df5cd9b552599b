"""Tests of dhkd.metrics against plain reference implementations and hand-computed values.

The references below are written the straightforward way, after the official code:
``ref_compute_pro``/``ref_trapezoid`` follow the MVTec AD evaluation (``generic_util.py``,
``pro_curve_util.py``) and ``ref_pro_rd4ad`` follows RD4AD's ``compute_pro`` (a loop over
thresholds with ``skimage.measure.regionprops``; a list instead of a pandas DataFrame, and
float64 instead of the MVTec code's float32 FPR so the comparison can be tight).

Every test runs with both backends: numpy (used for CPU inputs) and torch (used for
accelerator inputs; forced onto the CPU here so its code path is exercised without a GPU).
"""

from __future__ import annotations

from bisect import bisect

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy.ndimage import gaussian_filter, label
from skimage import measure
from sklearn.metrics import auc, roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from dhkd.metrics import curves as metrics  # the private helpers are tested too
from dhkd.errors import DhkdError

# ---------------------------------------------------------------------------- references


def ref_compute_pro(anomaly_maps: np.ndarray, ground_truth_maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The MVTec AD evaluation's compute_pro, per-pixel arrays and a full argsort."""
    structure = np.ones((3, 3), dtype=int)
    num_ok_pixels = 0
    num_gt_regions = 0
    shape = anomaly_maps.shape
    fp_changes = np.zeros(shape, dtype=np.uint32)
    pro_changes = np.zeros(shape, dtype=np.float64)
    for gt_ind, gt_map in enumerate(ground_truth_maps):
        labeled, n_components = label(gt_map, structure)
        num_gt_regions += n_components
        ok_mask = labeled == 0
        num_ok_pixels += np.sum(ok_mask)
        fp_changes[gt_ind, ok_mask] = 1
        for k in range(n_components):
            region_mask = labeled == (k + 1)
            pro_changes[gt_ind, region_mask] = 1.0 / np.sum(region_mask)
    scores = np.array(anomaly_maps, dtype=np.float64).ravel()
    order = np.argsort(scores)[::-1]
    scores = scores[order]
    fprs = np.cumsum(fp_changes.ravel()[order]).astype(np.float64) / num_ok_pixels
    pros = np.cumsum(pro_changes.ravel()[order]) / num_gt_regions
    keep_mask = np.append(np.diff(scores) != 0, np.True_)
    fprs = np.clip(fprs[keep_mask], None, 1.0)
    pros = np.clip(pros[keep_mask], None, 1.0)
    return np.concatenate(([0.0], fprs)), np.concatenate(([0.0], pros))


def ref_trapezoid(x: np.ndarray, y: np.ndarray, x_max: float | None = None) -> float:
    """The MVTec AD evaluation's trapezoid, as published."""
    x, y = np.array(x), np.array(y)
    finite_mask = np.logical_and(np.isfinite(x), np.isfinite(y))
    x, y = x[finite_mask], y[finite_mask]
    correction = 0.0
    if x_max is not None:
        if x_max not in x:
            ins = bisect(x, x_max)
            assert 0 < ins < len(x)
            y_interp = y[ins - 1] + ((y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (x[ins] - x[ins - 1]))
            correction = 0.5 * (y_interp + y[ins - 1]) * (x_max - x[ins - 1])
        mask = x <= x_max
        x, y = x[mask], y[mask]
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction)


def ref_aupro(maps: np.ndarray, masks: np.ndarray, limit: float = 0.3) -> float:
    fprs, pros = ref_compute_pro(maps, masks)
    return ref_trapezoid(fprs, pros, x_max=limit) / limit


def ref_pro_rd4ad_image(amap: np.ndarray, mask: np.ndarray, num_th: int = 200) -> float:
    """RD4AD's compute_pro for one image (it is called with one image at a time)."""
    amap = amap.astype(np.float64)
    regions = measure.regionprops(measure.label(mask.astype(int)))
    inverse_mask = 1 - mask.astype(int)
    rows = []
    min_th, max_th = amap.min(), amap.max()
    for th in np.arange(min_th, max_th, (max_th - min_th) / num_th):
        binary = amap > th
        pros = [binary[r.coords[:, 0], r.coords[:, 1]].sum() / r.area for r in regions]
        fpr = np.logical_and(inverse_mask, binary).sum() / inverse_mask.sum()
        rows.append((np.mean(pros), fpr))
    pro, fpr = np.array(rows).T
    keep = fpr < 0.3
    pro, fpr = pro[keep], fpr[keep]
    return auc(fpr / fpr.max(), pro)


def ref_pro_rd4ad(maps: np.ndarray, masks: np.ndarray, num_th: int = 200) -> float:
    return float(np.mean([ref_pro_rd4ad_image(m, g, num_th) for m, g in zip(maps, masks) if g.any()]))


# ------------------------------------------------------------------------------- helpers


@pytest.fixture(params=["numpy", "torch"], autouse=True)
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run every test with each backend; torch is forced onto the CPU."""
    if request.param == "torch":
        monkeypatch.setattr(metrics, "_backend_for", lambda x: metrics._TorchBackend(torch.device("cpu")))
    return request.param


def blob_data(seed: int, n: int = 6, size: int = 32, n_good: int = 2, decimals: int | None = None):
    """Maps and masks: random elliptic defects (1-3 per defective image), n_good clean images,
    maps = smoothed noise + a weak smoothed copy of the mask (so AUPRO is far from 0 and 1)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((n, size, size), dtype=bool)
    for i in range(n - n_good):
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.integers(0, size, 2)
            ry, rx = rng.uniform(1, size / 5, 2)
            masks[i] |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    maps = gaussian_filter(rng.random((n, size, size)), (0, 1.5, 1.5))
    maps = maps + 0.1 * gaussian_filter(masks.astype(float), (0, 1.5, 1.5))
    maps = (maps - maps.min()) / (maps.max() - maps.min())
    if decimals is not None:
        maps = maps.round(decimals)
    return maps, masks


def shuffled(maps: np.ndarray, masks: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(len(maps))
    return maps[order], masks[order]


# ---------------------------------------------------------------------------- AUPRO tests


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("limit", [0.3, 0.05, 1.0])
def test_aupro_matches_reference_on_random_blobs(seed: int, limit: float) -> None:
    maps, masks = blob_data(seed)
    assert metrics.aupro(maps, masks, fpr_limit=limit) == pytest.approx(ref_aupro(maps, masks, limit), abs=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_aupro_matches_reference_with_ties(seed: int) -> None:
    maps, masks = blob_data(seed, decimals=1)  # about ten distinct values: long runs of ties
    for limit in (0.3, 0.1, 0.6):
        assert metrics.aupro(maps, masks, limit) == pytest.approx(ref_aupro(maps, masks, limit), abs=1e-6)


def test_aupro_float32_and_torch_inputs() -> None:
    maps, masks = blob_data(7)
    expected = ref_aupro(maps.astype(np.float32), masks)
    assert metrics.aupro(maps.astype(np.float32), masks) == pytest.approx(expected, abs=1e-6)
    assert metrics.aupro(torch.from_numpy(maps.astype(np.float32)), torch.from_numpy(masks)) == pytest.approx(
        expected, abs=1e-6
    )
    assert metrics.aupro(maps[:, None], masks[:, None].astype(np.uint8)) == pytest.approx(
        ref_aupro(maps, masks), abs=1e-6
    )


def test_aupro_one_region() -> None:
    maps = np.array([[[0.1, 0.5, 0.2], [0.9, 0.8, 0.3], [0.4, 0.6, 0.0]]])
    masks = np.array([[[0, 0, 0], [1, 1, 0], [0, 0, 0]]], dtype=bool)
    for limit in (0.3, 0.125, 0.5, 1.0):
        assert metrics.aupro(maps, masks, limit) == pytest.approx(ref_aupro(maps, masks, limit), abs=1e-9)


def test_aupro_several_regions_within_and_across_images() -> None:
    rng = np.random.default_rng(3)
    masks = np.zeros((3, 10, 10), dtype=bool)
    masks[0, 1:3, 1:3] = True  # image 0: a 2x2 square ...
    masks[0, 6:9, 5] = True  # ... a vertical line ...
    masks[0, 4, 8] = True  # ... a single pixel
    masks[1, 2:8, 2:8] = True  # image 1: one large square
    # image 2 has no defect
    maps = rng.random((3, 10, 10))
    for limit in (0.3, 0.02, 0.7):
        assert metrics.aupro(maps, masks, limit) == pytest.approx(ref_aupro(maps, masks, limit), abs=1e-9)


def test_aupro_hand_computed_1x4_with_and_without_tie() -> None:
    # Pixels 0 and 2 are defective; 8-connectivity cannot join them across pixel 1, so there
    # are two regions of one pixel each (weight 1/2 per pixel); 2 normal pixels (1/2 each).
    masks = np.array([[[1, 0, 1, 0]]], dtype=bool)
    # scores 0.9(A) 0.8(N) 0.7(A) 0.1(N): curve (0,0) (0,.5) (.5,.5) (.5,1) (1,1).
    # Up to FPR 0.75: 0 + .5*.5 + 0 + the part of (.5,1)-(1,1) up to .75 = .25 + .25 = .5;
    # divided by .75: 2/3.
    maps = np.array([[[0.9, 0.8, 0.7, 0.1]]])
    assert metrics.aupro(maps, masks, fpr_limit=0.75) == pytest.approx(2 / 3, abs=1e-12)
    # Now the normal 0.8 and the defective 0.7 tie at 0.8: the merged curve is
    # (0,0) (0,.5) (.5,1) (1,1). Up to .75: .5*(.5+1)/2 = .375, then .25*1 = .25; total
    # .625 / .75 = 5/6. Up to 0.3: y(.3) = .5 + .5*(.3/.5) = .8, area .3*(.5+.8)/2 = .195,
    # divided by .3: 0.65.
    maps = np.array([[[0.9, 0.8, 0.8, 0.1]]])
    assert metrics.aupro(maps, masks, fpr_limit=0.75) == pytest.approx(5 / 6, abs=1e-12)
    assert metrics.aupro(maps, masks, fpr_limit=0.3) == pytest.approx(0.65, abs=1e-12)


def test_aupro_hand_computed_2x4_region_sizes_and_diagonal_connectivity() -> None:
    maps = np.array([[[0.9, 0.2, 0.5, 0.1], [0.4, 0.3, 0.8, 0.0]]])
    # Defects at (0,0), (0,1) and (1,2): (1,2) touches (0,1) diagonally, so with
    # 8-connectivity they form ONE region of 3 pixels (weight 1/3 each); 5 normal pixels.
    # Descending: .9 A, .8 A, .5 N, .4 N, .3 N, .2 A, .1 N, 0 N ->
    # curve (0,0) (0,1/3) (0,2/3) (.2,2/3) (.4,2/3) (.6,2/3) (.6,1) (.8,1) (1,1).
    # AUPRO@0.3 = (2/3 * .3) / .3 = 2/3;  AUPRO@1 = 2/3 * .6 + 1 * .4 = 0.8.
    masks = np.array([[[1, 1, 0, 0], [0, 0, 1, 0]]], dtype=bool)
    assert metrics.aupro(maps, masks) == pytest.approx(2 / 3, abs=1e-12)
    assert metrics.aupro(maps, masks, fpr_limit=1.0) == pytest.approx(0.8, abs=1e-12)
    # Moving the lone defect to (1,3) separates it: regions {(0,0),(0,1)} (weights 1/4) and
    # {(1,3)} (weight 1/2); the 0.8 pixel becomes normal, the 0.0 pixel defective... keep the
    # scores and recompute: descending .9 A(1/4), .8 N, .5 N, .4 N, .3 N, .2 A(1/4), .1 N, 0 A(1/2)
    # -> curve (0,0) (0,.25) (.2,.25) (.4,.25) (.6,.25) (.8,.25) (.8,.5) (1,.5) (1,1).
    # AUPRO@0.3 = .25;  AUPRO@1 = .25 * .8 + .5 * .2 = 0.3.
    masks = np.array([[[1, 1, 0, 0], [0, 0, 0, 1]]], dtype=bool)
    maps = np.array([[[0.9, 0.2, 0.5, 0.1], [0.4, 0.3, 0.8, 0.0]]])
    assert metrics.aupro(maps, masks) == pytest.approx(0.25, abs=1e-12)
    assert metrics.aupro(maps, masks, fpr_limit=1.0) == pytest.approx(0.3, abs=1e-12)


def test_aupro_limit_on_a_curve_point_and_image_without_defect() -> None:
    maps, masks = blob_data(11, n=4, size=10, n_good=1)
    n_normal = int((~masks).sum())
    for limit in (10 / n_normal, 0.5, 25 / n_normal):  # exactly on FPR steps
        assert metrics.aupro(maps, masks, limit) == pytest.approx(ref_aupro(maps, masks, limit), abs=1e-9)


def test_pro_curve_and_trapezoid_match_reference() -> None:
    maps, masks = blob_data(2, decimals=2)
    fprs, pros = metrics.pro_curve(maps, masks)
    ref_fprs, ref_pros = ref_compute_pro(maps, masks)
    np.testing.assert_allclose(fprs, ref_fprs, atol=1e-12)
    np.testing.assert_allclose(pros, ref_pros, atol=1e-12)
    for limit in (0.3, 0.01, 1.0):
        assert metrics.trapezoid(fprs, pros, limit) == pytest.approx(ref_trapezoid(fprs, pros, limit), abs=1e-12)
        assert metrics.aupro(maps, masks, limit) == pytest.approx(metrics.trapezoid(fprs, pros, limit) / limit, abs=1e-9)


def test_perfect_and_inverted_maps() -> None:
    _, masks = blob_data(4)
    perfect = masks.astype(np.float64)
    assert metrics.aupro(perfect, masks) == pytest.approx(1.0, abs=1e-12)
    assert metrics.pixel_auroc(perfect, masks) == 1.0
    assert metrics.pro_rd4ad(perfect, masks) == pytest.approx(1.0)
    assert metrics.aupro(-perfect, masks) == 0.0
    assert metrics.pixel_auroc(-perfect, masks) == 0.0


# ---------------------------------------------------------------------- RD4AD's PRO tests


@pytest.mark.parametrize("seed", range(3))
def test_pro_rd4ad_matches_loop_reference(seed: int) -> None:
    maps, masks = blob_data(seed, n=4, size=24, n_good=1)
    assert metrics.pro_rd4ad(maps, masks) == pytest.approx(ref_pro_rd4ad(maps, masks), abs=1e-6)


def test_pro_rd4ad_other_threshold_counts_and_float32() -> None:
    maps, masks = blob_data(5, n=3, size=20, n_good=0)
    for num in (7, 50):
        assert metrics.pro_rd4ad(maps, masks, num) == pytest.approx(ref_pro_rd4ad(maps, masks, num), abs=1e-6)
    maps32 = maps.astype(np.float32)
    assert metrics.pro_rd4ad(maps32, masks) == pytest.approx(ref_pro_rd4ad(maps32, masks), abs=1e-6)


@pytest.mark.parametrize("num", [20, 10])
def test_pro_rd4ad_scores_exactly_on_thresholds(num: int) -> None:
    # Integer maps spanning 0..20: with 20 (or 10) thresholds the step is exactly 1 (or 2), so
    # many pixels sit exactly on a threshold, where `map > th` must be False.
    rng = np.random.default_rng(num)
    _, masks = blob_data(num, n=4, size=16, n_good=1)
    maps = rng.integers(0, 15, masks.shape) + 6 * masks
    maps[:, 0, 0], maps[:, 0, 1] = 0, 20
    assert metrics.pro_rd4ad(maps, masks, num) == pytest.approx(ref_pro_rd4ad(maps, masks, num), abs=1e-9)


def test_pro_rd4ad_degenerate_images() -> None:
    masks = np.zeros((4, 4, 4), dtype=bool)
    masks[:, 1:3, 1:3] = True
    maps = np.zeros((4, 4, 4))
    # image 0 is constant: no thresholds -> 0
    maps[1][masks[1]] = 1.0  # perfect: FPR is 0 at every threshold -> the largest PRO, 1
    maps[2] = np.arange(16).reshape(4, 4)  # an ordinary map, for comparison
    maps[3][~masks[3]] = 1.0  # inverted: FPR is 1 at every threshold, no point kept -> 0
    expected = (0.0 + 1.0 + ref_pro_rd4ad_image(maps[2], masks[2]) + 0.0) / 4
    assert metrics.pro_rd4ad(maps, masks) == pytest.approx(expected, abs=1e-9)


def test_thresholds_below_equals_searchsorted_on_and_next_to_thresholds() -> None:
    b = metrics._NumpyBackend()
    rng = np.random.default_rng(0)
    flat = rng.random((3, 50)) * np.array([[1.0], [1e-3], [1e6]]) + np.array([[0.0], [7.0], [-3e5]])
    table, lengths, spacing = metrics._rd4ad_thresholds(b, flat, 37)
    th = table[:, :-1]
    values = np.concatenate([th, np.nextafter(th, -np.inf), np.nextafter(th, np.inf), flat], axis=1)
    rows = np.repeat(np.arange(3), values.shape[1])
    values = values.reshape(-1)
    finite = np.isfinite(values)
    steps = metrics._thresholds_below(b, table, lengths, spacing, values[finite], rows[finite])
    expected = [np.searchsorted(table[r, : lengths[r]], v, side="left") for r, v in zip(rows[finite], values[finite])]
    np.testing.assert_array_equal(steps, expected)


# ---------------------------------------------------------------------------- AUROC tests


@pytest.mark.parametrize("seed", range(4))
def test_image_auroc_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.random(83) < 0.7
    scores = rng.normal(size=83) + labels
    if seed % 2:
        scores = scores.round(1)  # ties between classes
    assert metrics.image_auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
    assert metrics.image_auroc(torch.tensor(scores), torch.tensor(labels)) == pytest.approx(
        roc_auc_score(labels, scores), abs=1e-6
    )


@pytest.mark.parametrize("decimals", [None, 1])
def test_pixel_auroc_matches_sklearn(decimals: int | None) -> None:
    maps, masks = blob_data(1, decimals=decimals)
    expected = roc_auc_score(masks.ravel(), maps.ravel())
    assert metrics.pixel_auroc(maps, masks) == pytest.approx(expected, abs=1e-6)
    # more positives than negatives takes the other branch of the rank computation
    assert metrics.pixel_auroc(maps, ~masks) == pytest.approx(1 - expected, abs=1e-6)


def test_auroc_perfect_and_inverted() -> None:
    labels = np.array([0, 0, 1, 1, 0, 1])
    scores = labels * 2.0 - 0.5
    assert metrics.image_auroc(scores, labels) == 1.0
    assert metrics.image_auroc(-scores, labels) == 0.0
    assert metrics.image_auroc(np.ones(6), labels) == 0.5


def test_roc_curve_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    labels = rng.random(200) < 0.4
    scores = (rng.normal(size=200) + labels).round(1)
    fpr, tpr, th = metrics.roc_curve(scores, labels)
    sk_fpr, sk_tpr, sk_th = sk_roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr, atol=1e-12)
    np.testing.assert_allclose(tpr, sk_tpr, atol=1e-12)
    np.testing.assert_array_equal(th[1:], sk_th[1:])
    assert th[0] == np.inf
    assert np.trapezoid(tpr, fpr) == pytest.approx(metrics.image_auroc(scores, labels), abs=1e-12)


def test_f1_optimal_threshold_matches_brute_force() -> None:
    rng = np.random.default_rng(1)
    labels = rng.random(100) < 0.3
    scores = (rng.normal(size=100) + 1.5 * labels).round(1)
    best = max(
        (2 * np.sum((scores >= t) & labels) / (np.sum(scores >= t) + labels.sum()), t) for t in np.unique(scores)
    )
    threshold, f1 = metrics.f1_optimal_threshold(scores, labels)
    assert f1 == pytest.approx(best[0], abs=1e-12)
    assert 2 * np.sum((scores >= threshold) & labels) / (np.sum(scores >= threshold) + labels.sum()) == pytest.approx(f1)


def test_threshold_at_fpr() -> None:
    scores = np.array([0.1, 0.5, 0.3, 0.7, 0.9], dtype=np.float32)
    labels = np.array([0, 0, 1, 1, 0])
    # good scores 0.1, 0.5, 0.9. FPR <= 1/3 allows only 0.9 flagged: lowest such threshold
    # among the scores is 0.7 (flags 0.7 and 0.9); 0.5 would also flag 0.5 (FPR 2/3).
    assert metrics.threshold_at_fpr(scores, labels, 1 / 3) == pytest.approx(0.7)
    assert metrics.threshold_at_fpr(scores, labels, 0.7) == pytest.approx(0.3)
    assert metrics.threshold_at_fpr(scores, labels, 1.0) == pytest.approx(0.1)
    # FPR 0 is impossible with any observed score (the top one is good): just above 0.9
    t = metrics.threshold_at_fpr(scores, labels, 0.0)
    assert t > 0.9 and np.float32(t) > np.float32(0.9) and not (scores >= np.float32(t)).any()
    for budget in np.linspace(0, 1, 11):
        t = metrics.threshold_at_fpr(scores, labels, budget)
        assert np.mean(scores[labels == 0] >= np.float32(t)) <= budget + 1e-12


# ----------------------------------------------------------------------------------- errors


def test_errors_are_dhkd_errors_with_clear_messages() -> None:
    maps, masks = blob_data(0, n=3, size=8, n_good=0)
    with pytest.raises(DhkdError, match="differ in shape"):
        metrics.aupro(maps, masks[:, :4])
    with pytest.raises(DhkdError, match="differ in shape"):
        metrics.pixel_auroc(maps[:2], masks)
    with pytest.raises(DhkdError, match="no defective"):
        metrics.aupro(maps, np.zeros_like(masks))
    with pytest.raises(DhkdError, match="no defective"):
        metrics.pro_rd4ad(maps, np.zeros_like(masks))
    with pytest.raises(DhkdError, match="no defective"):
        metrics.pixel_auroc(maps, np.zeros_like(masks))
    with pytest.raises(DhkdError, match="no good"):
        metrics.aupro(maps, np.ones_like(masks))
    with pytest.raises(DhkdError, match="binary"):
        metrics.aupro(maps, masks.astype(np.uint8) * 255)
    with pytest.raises(DhkdError, match="NaN"):
        metrics.aupro(np.full_like(maps, np.nan), masks)
    with pytest.raises(DhkdError, match="fpr_limit"):
        metrics.aupro(maps, masks, fpr_limit=0.0)
    with pytest.raises(DhkdError, match="shape"):
        metrics.aupro(maps.ravel(), masks.ravel())
    with pytest.raises(DhkdError, match="differ in shape"):
        metrics.image_auroc([0.1, 0.2], [0, 1, 1])
    with pytest.raises(DhkdError, match="no good"):
        metrics.image_auroc([0.1, 0.2], [1, 1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_give_the_cpu_values() -> None:
    maps, masks = blob_data(3, decimals=2)
    cuda_maps, cuda_masks = torch.from_numpy(maps).cuda(), torch.from_numpy(masks).cuda()
    assert metrics.aupro(cuda_maps, cuda_masks) == pytest.approx(ref_aupro(maps, masks), abs=1e-6)
    assert metrics.pixel_auroc(cuda_maps, cuda_masks) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()))
    assert metrics.pro_rd4ad(cuda_maps, cuda_masks) == pytest.approx(ref_pro_rd4ad(maps, masks), abs=1e-6)
    labels = masks.reshape(len(masks), -1).any(1)
    scores = torch.from_numpy(maps.reshape(len(maps), -1).max(1)).cuda()
    assert metrics.image_auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores.cpu().numpy()))


# ------------------------------------------------------------------------- property tests

small = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def maps_and_masks(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Up to 4 images of 8x8 with integer scores 0..9 (many ties) and random masks."""
    n = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    masks = rng.random((n, 8, 8)) < draw(st.sampled_from([0.05, 0.2, 0.5]))
    maps = rng.integers(0, 10, (n, 8, 8)).astype(np.float64) + 3 * masks * draw(st.sampled_from([0, 1]))
    assume(masks.any() and not masks.all())
    return maps, masks


@small
@given(maps_and_masks(), st.sampled_from([0.3, 0.1, 1.0]))
def test_property_values_in_unit_interval(data: tuple[np.ndarray, np.ndarray], limit: float) -> None:
    maps, masks = data
    values = [metrics.aupro(maps, masks, limit), metrics.pixel_auroc(maps, masks), metrics.pro_rd4ad(maps, masks)]
    labels = masks.reshape(len(masks), -1).any(1)
    if 0 < labels.sum() < len(labels):
        values.append(metrics.image_auroc(maps.reshape(len(maps), -1).max(1), labels))
    for value in values:
        assert 0.0 <= value <= 1.0 + 1e-12


@small
@given(maps_and_masks(), st.sampled_from([0.3, 0.05, 1.0]))
def test_property_aupro_matches_reference(data: tuple[np.ndarray, np.ndarray], limit: float) -> None:
    maps, masks = data
    assert metrics.aupro(maps, masks, limit) == pytest.approx(ref_aupro(maps, masks, limit), abs=1e-9)


@small
@given(maps_and_masks())
def test_property_invariant_to_increasing_transform(data: tuple[np.ndarray, np.ndarray]) -> None:
    maps, masks = data
    for transformed in (np.exp(maps), 3 * maps + 1):
        assert metrics.aupro(transformed, masks) == pytest.approx(metrics.aupro(maps, masks), abs=1e-12)
        assert metrics.pixel_auroc(transformed, masks) == pytest.approx(metrics.pixel_auroc(maps, masks), abs=1e-12)


@small
@given(maps_and_masks(), st.integers(0, 1000))
def test_property_invariant_to_image_order(data: tuple[np.ndarray, np.ndarray], seed: int) -> None:
    maps, masks = data
    other_maps, other_masks = shuffled(maps, masks, seed)
    assert metrics.aupro(other_maps, other_masks) == pytest.approx(metrics.aupro(maps, masks), abs=1e-12)
    assert metrics.pixel_auroc(other_maps, other_masks) == pytest.approx(metrics.pixel_auroc(maps, masks), abs=1e-12)
    assert metrics.pro_rd4ad(other_maps, other_masks) == pytest.approx(metrics.pro_rd4ad(maps, masks), abs=1e-12)


@small
@given(maps_and_masks())
def test_property_perfect_map(data: tuple[np.ndarray, np.ndarray]) -> None:
    _, masks = data
    perfect = masks.astype(np.float64)
    assert metrics.pixel_auroc(perfect, masks) == 1.0
    assert metrics.aupro(perfect, masks) == pytest.approx(1.0, abs=1e-12)
