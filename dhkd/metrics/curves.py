"""Anomaly-detection metrics: AUROC, the official AUPRO and RD4AD's own PRO.

Why two PRO numbers exist:

- :func:`aupro` is the MVTec AD evaluation's definition (Bergmann et al.): all test pixels are
  pooled, every ground-truth region weighs the same however large it is, and the area under
  the PRO-over-FPR curve up to FPR 0.3 is divided by 0.3. This is the number to compare with
  most of the literature and with the MVTec AD leaderboard.
- :func:`pro_rd4ad` is what RD4AD's released code computes instead: a PRO curve per anomalous
  image from 200 thresholds spaced between that image's min and max, its FPR axis cut at 0.3
  and then stretched to [0, 1], averaged over images. Papers that copy RD4AD's code (DHKD among
  them) report this one; it is usually a few points higher. We report both, under their own
  names, so either comparison is possible.

Every metric is vectorised: sorts, cumulative sums, ``searchsorted`` and ``bincount``, never a
Python loop over thresholds. Inputs may be numpy arrays or torch tensors on any device. Maps
on an accelerator are evaluated there with torch; everything else is evaluated with numpy,
because on the CPU numpy's SIMD sort is ~20x faster than ``torch.sort`` and its element-wise
passes and boolean indexing are several times faster too (measured on the 2-core CPU this kit
targets). The few operations whose numpy and torch spellings differ live in two small
backends, :class:`_NumpyBackend` and :class:`_TorchBackend`; the metrics are written once.
Scalar metrics are returned as python floats, curves as float64 numpy arrays (for plotting).
Counts and sums over millions of pixels are accumulated in int64 or float64.

Conventions: larger scores mean "more anomalous"; a sample or pixel is predicted defective
when its score is ``>= threshold``; masks and labels are binary (1 = defective). The pixel
metrics take an optional ``valid`` mask (N, H, W) of the pixels that belong to the images: the
padding around an image whose aspect was kept (``data.resize: keep_aspect``) is not a pixel of
it and is left out, as if the maps had been cut to each image's own box.
"""

from __future__ import annotations

import math
from typing import Any, Union

import numpy as np
import scipy.ndimage
import torch

from dhkd.errors import DhkdError

__all__ = [
    "image_auroc",
    "pixel_auroc",
    "roc_curve",
    "aupro",
    "pro_curve",
    "pro_rd4ad",
    "trapezoid",
    "f1_optimal_threshold",
    "threshold_at_fpr",
    "f1_optimal_sorted",
    "threshold_at_fpr_sorted",
]

ArrayLike = Union[np.ndarray, torch.Tensor]
Native = Any  # an np.ndarray or a torch.Tensor, depending on the backend

#: RD4AD keeps only curve points with FPR strictly below this value.
RD4AD_FPR_LIMIT = 0.3


# ------------------------------------------------------------------------------ backends


class _NumpyBackend:
    """numpy spelling of the operations that differ between numpy and torch (CPU inputs)."""

    xp = np

    def native(self, x: Any) -> np.ndarray:
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu()
            return (x.float() if x.dtype in (torch.float16, torch.bfloat16) else x).numpy()
        return np.asarray(x)

    def is_bool(self, x: np.ndarray) -> bool:
        return x.dtype == np.bool_

    def is_float(self, x: np.ndarray) -> bool:
        return x.dtype in (np.float32, np.float64)

    def f64(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float64)

    def i64(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.int64)

    def sort(self, x: np.ndarray) -> np.ndarray:
        return np.sort(x)

    def argsort_desc(self, x: np.ndarray) -> np.ndarray:
        return np.argsort(x)[::-1]

    def split_at_kth_largest(self, x: np.ndarray, k: int) -> tuple[float, np.ndarray]:
        """k-th largest value c (1-based) and the values > c sorted ascending; ``x`` is reordered."""
        kth = x.shape[0] - k
        x.partition(kth)
        cut = x[kth]
        above = x[kth + 1:]
        return float(cut), np.sort(above[above > cut])

    def sort_rows(self, x: np.ndarray) -> np.ndarray:
        return np.sort(x, axis=1)

    def searchsorted_rows(self, sorted_rows: np.ndarray, queries: np.ndarray, side: str) -> np.ndarray:
        """Row-wise searchsorted; numpy's is 1-D only, so a loop over the (few) rows."""
        return np.stack([np.searchsorted(row, q, side=side) for row, q in zip(sorted_rows, queries)])

    def arange(self, n: int) -> np.ndarray:
        return np.arange(n)

    def cat(self, parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts)

    def to_backend(self, x: np.ndarray) -> np.ndarray:
        return x

    def numpy(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x)


class _TorchBackend:
    """torch spelling of the same operations, on one device (accelerator inputs)."""

    xp = torch

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def native(self, x: Any) -> torch.Tensor:
        if isinstance(x, torch.Tensor):
            x = x.detach().to(self.device)
            return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        return torch.as_tensor(np.ascontiguousarray(x), device=self.device)

    def is_bool(self, x: torch.Tensor) -> bool:
        return x.dtype == torch.bool

    def is_float(self, x: torch.Tensor) -> bool:
        return x.dtype in (torch.float32, torch.float64)

    def f64(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.float64)

    def i64(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.int64)

    def sort(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sort(x).values

    def argsort_desc(self, x: torch.Tensor) -> torch.Tensor:
        return torch.argsort(x, descending=True)

    def split_at_kth_largest(self, x: torch.Tensor, k: int) -> tuple[float, torch.Tensor]:
        cut = torch.kthvalue(x, x.shape[0] - k + 1).values
        return float(cut), torch.sort(x[x > cut]).values

    def sort_rows(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sort(x, dim=1).values

    def searchsorted_rows(self, sorted_rows: torch.Tensor, queries: torch.Tensor, side: str) -> torch.Tensor:
        return torch.searchsorted(sorted_rows.contiguous(), queries.contiguous(), side=side)

    def arange(self, n: int) -> torch.Tensor:
        return torch.arange(n, device=self.device)

    def cat(self, parts: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(parts)

    def to_backend(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x)).to(self.device)

    def numpy(self, x: torch.Tensor) -> np.ndarray:
        return x.detach().cpu().numpy()


Backend = Union[_NumpyBackend, _TorchBackend]


def _backend_for(x: Any) -> Backend:
    """torch on the tensor's device for accelerator tensors, numpy for everything else."""
    if isinstance(x, torch.Tensor) and x.device.type != "cpu":
        return _TorchBackend(x.device)
    return _NumpyBackend()


# --------------------------------------------------------------------------- input checks


def _native(b: Backend, x: Any, name: str) -> Native:
    try:
        return b.native(x)
    except (TypeError, ValueError, RuntimeError) as err:
        raise DhkdError(f"{name} cannot be read as a numeric array ({err})") from err


def _scores(b: Backend, x: Native, name: str) -> Native:
    """Scores as float32/float64 (kept as they are) or float64 (anything else), NaN-free.

    Only the order of the scores matters to every metric here: float32 is kept because
    widening it would change nothing but cost memory; other types become float64 because
    float32 could create ties.
    """
    if not b.is_float(x):
        x = b.f64(x)
    if x.shape[0] and bool(b.xp.isnan(x).any()):
        raise DhkdError(f"{name} contain NaN values", "check the model output for NaN before evaluating")
    return x


def _binary(b: Backend, x: Native, name: str) -> Native:
    """A boolean array from a 0/1 (or bool) array; anything else is a user error."""
    if b.is_bool(x):
        return x
    if bool(((x != 0) & (x != 1)).any()):
        raise DhkdError(
            f"{name} must be binary (0 = good, 1 = defective) but contain other values",
            "threshold them first, e.g. mask > 0 for 0/255 PNG masks",
        )
    return x != 0


def _as_stack(x: Native, name: str) -> Native:
    """(H, W) -> (1, H, W); (N, 1, H, W) -> (N, H, W); (N, H, W) unchanged."""
    if x.ndim == 2:
        return x[None]
    if x.ndim == 4 and x.shape[1] == 1:
        return x[:, 0]
    if x.ndim == 3:
        return x
    raise DhkdError(f"{name} must have shape (N, H, W) (or (H, W) or (N, 1, H, W)); got {tuple(x.shape)}")


def _maps_and_masks(anomaly_maps: ArrayLike, masks: ArrayLike) -> tuple[Backend, Native, Native]:
    """The backend, validated (N, H, W) float scores and bool ground truth."""
    b = _backend_for(anomaly_maps)
    maps = _as_stack(_native(b, anomaly_maps, "anomaly_maps"), "anomaly_maps")
    gt = _as_stack(_native(b, masks, "masks"), "masks")
    if tuple(maps.shape) != tuple(gt.shape):
        raise DhkdError(
            f"anomaly_maps and masks differ in shape: {tuple(maps.shape)} vs {tuple(gt.shape)}",
            "resize the masks to the map size (nearest neighbour) or the maps to the mask size",
        )
    if min(maps.shape) == 0:
        raise DhkdError(f"anomaly_maps is empty (shape {tuple(maps.shape)})")
    return b, _scores(b, maps.reshape(-1), "anomaly_maps").reshape(maps.shape), _binary(b, gt, "masks")


def _valid_pixels(b: Backend, valid: ArrayLike | None, shape: tuple[int, ...]) -> Native | None:
    """The ``valid`` mask as a bool (N, H, W) array of ``shape``, or None (every pixel counts)."""
    if valid is None:
        return None
    keep = _binary(b, _as_stack(_native(b, valid, "valid"), "valid"), "valid")
    if tuple(keep.shape) != tuple(shape):
        raise DhkdError(f"valid and anomaly_maps differ in shape: {tuple(keep.shape)} vs {tuple(shape)}",
                        "give one bool mask per map, True on the image and False on its padding")
    if not bool(keep.reshape(keep.shape[0], -1).any(1).all()):
        raise DhkdError("valid leaves an image without a single pixel", "each image needs at least one valid pixel")
    return keep


def _kept(maps: Native, gt: Native, keep: Native | None) -> tuple[Native, Native]:
    """Flat scores and ground truth of the valid pixels (all pixels when ``keep`` is None), in order."""
    if keep is None:
        return maps.reshape(-1), gt.reshape(-1)
    return maps[keep], gt[keep]


def _scores_and_labels(scores: ArrayLike, labels: ArrayLike) -> tuple[Backend, Native, Native]:
    """The backend, validated flat float scores and bool labels containing both classes."""
    b = _backend_for(scores)
    s, y = _native(b, scores, "scores"), _native(b, labels, "labels")
    if tuple(s.shape) != tuple(y.shape):
        raise DhkdError(f"scores and labels differ in shape: {tuple(s.shape)} vs {tuple(y.shape)}")
    s, y = _scores(b, s.reshape(-1), "scores"), _binary(b, y.reshape(-1), "labels")
    _need_both_classes(b, y, "labels")
    return b, s, y


def _need_both_classes(b: Backend, y: Native, name: str) -> int:
    """Number of positives; raises unless ``y`` (flat, bool) has both classes."""
    n_pos = int(b.xp.count_nonzero(y))
    if n_pos == 0:
        raise DhkdError(
            f"{name} contain no defective (1) entry, so the metric is undefined",
            "evaluate on a test set that includes defective samples",
        )
    if n_pos == y.shape[0]:
        raise DhkdError(
            f"{name} contain no good (0) entry, so the metric is undefined",
            "evaluate on a test set that includes good samples or pixels",
        )
    return n_pos


# ---------------------------------------------------------------------- shared primitives


def _last_of_runs(b: Backend, sorted_values: Native) -> Native:
    """Mask of the last element of each run of equal values (merges tied scores)."""
    return b.cat([sorted_values[1:] != sorted_values[:-1], sorted_values[-1:] == sorted_values[-1:]])


def _cumulative_by_score(b: Backend, scores: Native, *weights: Native) -> tuple[Native, list[Native]]:
    """Distinct scores in descending order and, per weight, its float64 sum over scores >= each.

    The core of every curve: sort descending, cumulative sums, keep the last point of each run
    of tied scores (no threshold can separate equal scores).
    """
    order = b.argsort_desc(scores)
    s = scores[order]
    last = _last_of_runs(b, s)
    return s[last], [b.xp.cumsum(b.f64(w)[order], 0)[last] for w in weights]


# ------------------------------------------------------------------------------- AUROC


def _auroc(b: Backend, scores: Native, labels: Native) -> float:
    """AUROC as the Mann-Whitney statistic: P(score_pos > score_neg) + 0.5 P(equal).

    This equals the trapezoidal area under the tie-merged ROC curve (what sklearn computes)
    but needs no argsort: the larger class is sorted and the smaller one located in it with
    ``searchsorted`` (side left counts "strictly below", side right "below or equal").
    """
    pos, neg = scores[labels], scores[~labels]
    n_pos, n_neg = pos.shape[0], neg.shape[0]
    ref, query = (b.sort(neg), pos) if n_neg >= n_pos else (b.sort(pos), neg)
    below2 = int(b.xp.searchsorted(ref, query, side="left").sum()) + int(
        b.xp.searchsorted(ref, query, side="right").sum()
    )
    # below2 = sum over queries of 2 #(ref < q) + #(ref == q): twice the wins of the positives
    # when the queries are positive; when they are negative, the wins are the complement.
    wins2 = below2 if n_neg >= n_pos else 2 * n_pos * n_neg - below2
    return wins2 / (2.0 * n_pos * n_neg)


def image_auroc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Image-level AUROC. ``scores`` (N,), ``labels`` (N,) with 0 = good, 1 = defective."""
    return _auroc(*_scores_and_labels(scores, labels))


def pixel_auroc(anomaly_maps: ArrayLike, masks: ArrayLike, valid: ArrayLike | None = None) -> float:
    """Pixel-level AUROC over all (``valid``) pixels of all images pooled. Maps and masks are (N, H, W)."""
    b, maps, gt = _maps_and_masks(anomaly_maps, masks)
    scores, gt = _kept(maps, gt, _valid_pixels(b, valid, maps.shape))
    _need_both_classes(b, gt, "masks")
    return _auroc(b, scores, gt)


def roc_curve(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve ``(fpr, tpr, thresholds)``, tied scores merged, as float64 numpy arrays.

    The points of ``sklearn.metrics.roc_curve(labels, scores, drop_intermediate=False)``:
    thresholds are the distinct scores in descending order, preceded by ``inf`` (the point
    (0, 0)); point i predicts "defective" for ``score >= thresholds[i]``.
    """
    b, s, y = _scores_and_labels(scores, labels)
    th, (tps, fps) = _cumulative_by_score(b, s, y, ~y)
    tps, fps, th = b.numpy(tps), b.numpy(fps), b.numpy(th).astype(np.float64)
    fpr = np.concatenate([[0.0], fps / fps[-1]])
    tpr = np.concatenate([[0.0], tps / tps[-1]])
    return fpr, tpr, np.concatenate([[np.inf], th])


def f1_optimal_threshold(scores: ArrayLike, labels: ArrayLike) -> tuple[float, float]:
    """The threshold (one of the scores) that maximises F1, and that F1.

    F1 = 2 TP / (TP + FP + P) for the prediction ``score >= threshold``. Among equally good
    thresholds the highest is returned. The widgets use it as a default binarisation threshold.
    """
    positives, negatives = _sorted_by_class(scores, labels)
    return f1_optimal_sorted(positives, negatives)


def threshold_at_fpr(scores: ArrayLike, labels: ArrayLike, fpr: float) -> float:
    """The lowest threshold whose false-positive rate on the good samples is ``<= fpr``.

    Candidates are the observed scores (prediction: ``score >= threshold``), so the result
    also maximises the true-positive rate within that FPR budget. When even the highest score
    belongs to a good sample and ``fpr < 1 / num_good``, the next number above the highest
    score that the scores' dtype can represent is returned: it flags nothing.
    """
    if not 0.0 <= fpr <= 1.0:
        raise DhkdError(f"fpr must be in [0, 1]; got {fpr}")
    positives, negatives = _sorted_by_class(scores, labels)
    return threshold_at_fpr_sorted(negatives, fpr, candidates=(positives,))


def _sorted_by_class(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The defective and the good samples' scores, each sorted ascending (numpy, validated)."""
    b, s, y = _scores_and_labels(scores, labels)
    s, y = b.numpy(s), b.numpy(y)
    return np.sort(s[y]), np.sort(s[~y])


def f1_optimal_sorted(pos_sorted: np.ndarray, neg_sorted: np.ndarray) -> tuple[float, float]:
    """:func:`f1_optimal_threshold` from ascending defective and good scores, for callers that
    keep them sorted (the widgets, over millions of pixels): only defective scores can be the
    best threshold (raising a threshold that sits on good scores only removes false
    positives), and each is counted with ``searchsorted``."""
    if len(pos_sorted) == 0:
        raise DhkdError("no defective sample: F1 is undefined", "evaluate on a test set with defective samples")
    candidates = np.unique(pos_sorted)[::-1]  # descending, so argmax picks the highest on ties
    tp = len(pos_sorted) - np.searchsorted(pos_sorted, candidates, side="left")
    fp = len(neg_sorted) - np.searchsorted(neg_sorted, candidates, side="left")
    f1 = 2.0 * tp / (tp + fp + len(pos_sorted))
    best = int(np.argmax(f1))
    return float(candidates[best]), float(f1[best])


def threshold_at_fpr_sorted(normal_sorted: np.ndarray, fpr: float, candidates: tuple[np.ndarray, ...] = ()) -> float:
    """:func:`threshold_at_fpr` from the ascending scores of the good samples.

    The threshold is the lowest value of ``normal_sorted`` or of the ascending ``candidates``
    that flags at most ``fpr`` of the good samples, so it flags as many other (defective)
    samples as that budget allows. When nothing may be flagged and no candidate lies above the
    highest good score, the next number above it in its dtype is returned.
    """
    if not 0.0 <= fpr <= 1.0:
        raise DhkdError(f"fpr must be in [0, 1]; got {fpr}")
    s = normal_sorted
    n = len(s)
    if n == 0:
        raise DhkdError("no good sample: the false-positive rate is undefined",
                        "evaluate on a test set with good samples")
    k = min(n, math.floor(fpr * n))  # how many may be flagged: the largest k with k / n <= fpr
    while k < n and (k + 1) / n <= fpr:
        k += 1
    while k > 0 and k / n > fpr:
        k -= 1
    pools = [s, *candidates]
    if k == n:  # everything may be flagged: the lowest value of all
        return float(min(p[0] for p in pools if len(p)))
    cut = s[n - k - 1]  # the (k+1)-th largest good score must stay below the threshold
    above = [p[i] for p in pools if (i := int(np.searchsorted(p, cut, side="right"))) < len(p)]
    return float(min(above)) if above else float(np.nextafter(cut, np.array(np.inf, dtype=cut.dtype)))


# ------------------------------------------------------------------------ official AUPRO


def _label_regions(b: Backend, gt: Native) -> tuple[np.ndarray, np.ndarray, int]:
    """8-connected regions of each image's mask, labelled by one scipy call over the stack.

    The 3-D structure connects the 3x3 neighbourhood inside a slice and nothing across slices,
    so regions never span two images. Returns, for the anomalous pixels in flattened order,
    their region (0..R-1) and their image index, plus R (all numpy, on the CPU).
    """
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True
    gt_np = b.numpy(gt)
    labels, n_regions = scipy.ndimage.label(gt_np, structure=structure)
    per_image = np.count_nonzero(gt_np.reshape(gt_np.shape[0], -1), axis=1)
    region = labels[gt_np].astype(np.int64) - 1
    return region, np.repeat(np.arange(gt_np.shape[0]), per_image), int(n_regions)


def _region_weights(b: Backend, gt: Native) -> tuple[Native, int]:
    """Per anomalous pixel (flattened order) ``1 / size of its region``, and the region count.

    Summing these weights over the pixels above a threshold and dividing by the number of
    regions gives the mean per-region overlap: the PRO of the official definition.
    """
    region, _, n_regions = _label_regions(b, gt)
    sizes = np.bincount(region, minlength=n_regions)
    return b.to_backend(1.0 / sizes[region]), n_regions


def _pro_inputs(anomaly_maps: ArrayLike, masks: ArrayLike,
                valid: ArrayLike | None = None) -> tuple[Backend, Native, Native, Native, int]:
    """Backend, flat scores, flat bool ground truth, per-anomalous-pixel weights, region count
    (of the ``valid`` pixels; a region's pixels on padding, if any, are not part of it)."""
    b, maps, gt = _maps_and_masks(anomaly_maps, masks)
    keep = _valid_pixels(b, valid, maps.shape)
    if keep is not None:
        gt = gt & keep
    scores, flat_gt = _kept(maps, gt, keep)
    _need_both_classes(b, flat_gt, "masks")
    weights, n_regions = _region_weights(b, gt)  # anomalous pixels in flattened order: all of them are kept
    return b, scores, flat_gt, weights, n_regions


def pro_curve(anomaly_maps: ArrayLike, masks: ArrayLike, valid: ArrayLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The full official PRO curve ``(fprs, pros)`` as float64 numpy arrays, for plotting.

    The MVTec AD evaluation's ``compute_pro``: all pixels pooled and sorted by descending
    score, FPR = normal pixels above / normal pixels, PRO = sum over anomalous pixels above of
    1 / region size, divided by the number of regions; tied scores merged (the last point of
    each run kept), clipped to [0, 1], (0, 0) prepended. One point per distinct score, so it
    can have millions of points; :func:`aupro` gets the area without building it.
    """
    b, scores, gt, weights, n_regions = _pro_inputs(anomaly_maps, masks, valid)
    pro_w = b.f64(gt)  # zeros where normal; the weights go to the anomalous pixels
    pro_w[gt] = weights
    _, (fps, pros) = _cumulative_by_score(b, scores, ~gt, pro_w)
    fps, pros = b.numpy(fps), b.numpy(pros)
    fprs = np.concatenate([[0.0], np.minimum(fps / fps[-1], 1.0)])
    return fprs, np.concatenate([[0.0], np.minimum(pros / n_regions, 1.0)])


def trapezoid(x: ArrayLike, y: ArrayLike, x_max: float | None = None) -> float:
    """Trapezoidal area under ``y(x)`` up to ``x_max``: the MVTec AD evaluation's ``trapezoid``.

    ``x`` must be non-decreasing; non-finite points are dropped. When ``x_max`` lies strictly
    between two points, y at ``x_max`` is interpolated linearly and the partial trapezoid is
    added. Use it on :func:`pro_curve`'s output; :func:`aupro` gets the same area faster.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    finite = np.isfinite(x) & np.isfinite(y)
    x, y = x[finite], y[finite]
    correction = 0.0
    if x_max is not None:
        if x_max not in x:
            ins = int(np.searchsorted(x, x_max, side="right"))  # bisect.bisect, as the original
            if not 0 < ins < len(x):
                raise DhkdError(f"x_max={x_max} lies outside the curve's x range [{x.min()}, {x.max()}]")
            y_interp = y[ins - 1] + (y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (x[ins] - x[ins - 1])
            correction = 0.5 * (y_interp + y[ins - 1]) * (x_max - x[ins - 1])
        keep = x <= x_max
        x, y = x[keep], y[keep]
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction)


def aupro(anomaly_maps: ArrayLike, masks: ArrayLike, fpr_limit: float = 0.3, valid: ArrayLike | None = None) -> float:
    """Normalised area under the official PRO curve up to ``fpr_limit`` (MVTec AD definition).

    Equal, up to float rounding, to ``trapezoid(*pro_curve(maps, masks), fpr_limit) /
    fpr_limit``, but computed without sorting every pixel (about 0.1 s instead of 1 s for a
    category's test set on a 2-core CPU):

    Between consecutive curve points FPR grows only through normal pixels and PRO only through
    anomalous ones, so the segment at a distinct normal score v (n_v normal pixels) has area
    ``n_v / Nn * (W(> v) + W(>= v)) / 2 / R``, W summing the region weights of the anomalous
    pixels above v. Summed over normal pixels that equals ``sum_a w_a * (#normal < s_a +
    #normal <= s_a) / 2 / (Nn R)`` over anomalous pixels a: one ``searchsorted`` into the
    sorted normal scores. Only normal scores above c, the k-th largest normal score with
    k = floor(fpr_limit * Nn) + 1, lie on segments ending at FPR <= fpr_limit, so only those
    are sorted (a partial selection finds c). The segment at c crosses ``fpr_limit``; its part
    left of the limit is added with the linearly interpolated end point, as ``trapezoid`` does.
    """
    if not 0.0 < fpr_limit <= 1.0:
        raise DhkdError(f"fpr_limit must be in (0, 1]; got {fpr_limit}")
    b, scores, gt, weights, n_regions = _pro_inputs(anomaly_maps, masks, valid)
    anomalous = scores[gt]
    n_normal = scores.shape[0] - anomalous.shape[0]
    k = math.floor(fpr_limit * n_normal) + 1
    if k > n_normal:  # the limit covers the whole FPR axis: every segment is complete
        return _complete_segments_area(b, b.sort(scores[~gt]), anomalous, weights) / (n_normal * n_regions)
    masked = b.xp.where(gt, -math.inf, scores)
    cut, above = b.split_at_kth_largest(masked, k)
    n_at_cut = int(b.xp.count_nonzero(masked == cut)) - (anomalous.shape[0] if cut == -math.inf else 0)
    area = _complete_segments_area(b, above, anomalous, weights) / (n_normal * n_regions)
    x0, x1 = above.shape[0] / n_normal, (above.shape[0] + n_at_cut) / n_normal
    y0 = float(weights[anomalous > cut].sum()) / n_regions
    y1 = float(weights[anomalous >= cut].sum()) / n_regions
    area += _partial_trapezoid(x0, y0, x1, y1, fpr_limit)
    return area / fpr_limit


def _complete_segments_area(b: Backend, above: Native, anomalous: Native, weights: Native) -> float:
    """``sum_a w_a * (#above < s_a + #above <= s_a) / 2`` (unnormalised; see :func:`aupro`)."""
    below = b.xp.searchsorted(above, anomalous, side="left") + b.xp.searchsorted(above, anomalous, side="right")
    return 0.5 * float((weights * b.f64(below)).sum())


def _partial_trapezoid(x0: float, y0: float, x1: float, y1: float, x_max: float) -> float:
    """Area of the segment (x0, y0)-(x1, y1) between x0 and x_max, x0 <= x_max <= x1."""
    y_end = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)
    return 0.5 * (y0 + y_end) * (x_max - x0)


# ------------------------------------------------------------------------------ RD4AD PRO


def pro_rd4ad(anomaly_maps: ArrayLike, masks: ArrayLike, num_thresholds: int = 200,
              valid: ArrayLike | None = None) -> float:
    """RD4AD's PRO, as its released ``compute_pro`` computes it, averaged over anomalous images.

    RD4AD calls its ``compute_pro`` once per test image with a defect (images with an empty
    mask are skipped). Per image: thresholds ``np.arange(min, max, (max - min) /
    num_thresholds)`` of that image's map (float64); at each threshold ``binary = map > th``;
    PRO = mean over the image's 8-connected regions of (region pixels in ``binary``) / (region
    area); FPR = share of the image's normal pixels in ``binary``. Points with FPR < 0.3 are
    kept, their FPR divided by its largest kept value, and the area (sklearn's ``auc``,
    trapezoids in threshold order) is the image's score. The result is the mean over images.

    Vectorised over thresholds and images: pixels above each threshold are counted by
    locating the thresholds in each image's sorted scores; for the (few) anomalous pixels,
    the number of thresholds below each one gives, through a histogram per region and a
    reversed cumulative sum, every region's overlap at every threshold.

    Degenerate images, where RD4AD's code crashes or returns NaN, are scored as follows:
    a constant map (no thresholds) or no kept point -> 0; a single kept point with FPR > 0 ->
    0 (the trapezoid area of one point); kept points whose FPR is all 0 -> the largest kept
    PRO (that overlap is reached without a false positive, so the stretched curve is at least
    that high everywhere); an image without normal pixels has FPR 0 at every threshold.

    ``valid``: each image's thresholds span its valid pixels, and its padding counts neither as a
    false positive nor among its normal pixels (the padding is set to the image's lowest valid
    score, which no threshold exceeds).
    """
    if num_thresholds < 1:
        raise DhkdError(f"num_thresholds must be >= 1; got {num_thresholds}")
    b, maps, gt = _maps_and_masks(anomaly_maps, masks)
    keep = _valid_pixels(b, valid, maps.shape)
    if keep is not None:
        gt = gt & keep
    defective = gt.reshape(gt.shape[0], -1).any(1)
    if not bool(defective.any()):
        raise DhkdError(
            "masks contain no defective pixel, so RD4AD's PRO is undefined",
            "evaluate on a test set that includes defective images",
        )
    maps, gt = b.f64(maps[defective]), gt[defective]
    if not bool(b.xp.isfinite(maps).all()):
        raise DhkdError("anomaly_maps contain inf values, so RD4AD's thresholds are undefined")
    if keep is not None:
        keep = keep[defective]
        lowest = b.xp.amin(b.xp.where(keep, maps, math.inf).reshape(maps.shape[0], -1), 1)
        maps = b.xp.where(keep, maps, lowest[:, None, None])
    flat, gt_flat = maps.reshape(maps.shape[0], -1), gt.reshape(gt.shape[0], -1)
    table, lengths, spacing = _rd4ad_thresholds(b, flat, num_thresholds)
    region, image, n_regions = _label_regions(b, gt)
    image = b.to_backend(image)
    steps = _thresholds_below(b, table, lengths, spacing, flat[gt_flat], image)
    n_th = table.shape[1] - 1
    fp = _pixels_above(b, flat, table[:, :n_th]) - _count_above(b, image, steps, flat.shape[0], n_th)
    normal_pixels = ~gt_flat if keep is None else keep.reshape(keep.shape[0], -1) & ~gt_flat
    n_normal = b.f64(normal_pixels.sum(1))
    fpr = fp / b.xp.where(n_normal > 0, n_normal, 1.0)[:, None]
    tp = _count_above(b, b.to_backend(region), steps, n_regions, n_th)
    pro = b.to_backend(_region_average(region, b.numpy(image), n_regions, flat.shape[0])) @ tp
    kept = (b.arange(n_th)[None, :] < lengths[:, None]) & (fpr < RD4AD_FPR_LIMIT)
    return float(_rd4ad_auc(b, fpr, pro, kept).mean())


def _rd4ad_thresholds(b: Backend, flat: Native, num_thresholds: int) -> tuple[Native, Native, Native]:
    """Per-image ``np.arange(min, max, (max - min) / n)``, padded with +inf to one length + 1.

    Computed with numpy exactly as RD4AD does (a floating-point ``arange`` may give n or n + 1
    values); the loop is over images (a few dozen), not thresholds. Returns the (M, T + 1)
    table (at least one +inf column), each row's length and its nominal spacing.
    """
    lows, highs = b.numpy(b.xp.amin(flat, 1)), b.numpy(b.xp.amax(flat, 1))
    spacing = (highs - lows) / num_thresholds
    rows = [np.arange(lo, hi, d) if d > 0 else np.empty(0) for lo, hi, d in zip(lows, highs, spacing)]
    table = np.full((len(rows), max(len(r) for r in rows) + 1), np.inf)
    for i, row in enumerate(rows):
        table[i, : len(row)] = row
    lengths = np.array([len(r) for r in rows])
    return b.to_backend(table), b.to_backend(lengths), b.to_backend(np.where(spacing > 0, spacing, 1.0))


def _pixels_above(b: Backend, flat: Native, thresholds: Native) -> Native:
    """(M, T) float64 number of pixels of image i with a score > thresholds[i, j]."""
    return b.f64(flat.shape[1] - b.searchsorted_rows(b.sort_rows(flat), thresholds, side="right"))


def _thresholds_below(
    b: Backend, table: Native, lengths: Native, spacing: Native, values: Native, rows: Native
) -> Native:
    """For each value, the number of thresholds of its image (row) strictly below it.

    That is ``searchsorted(table[row], value, side='left')``, computed as the arithmetic
    guess ``ceil((value - min) / spacing)`` and then corrected against the actual thresholds
    until no value needs it (rounding moves a guess by at most one, so there is one checking
    pass, rarely two). Needs no ragged, batched searchsorted.
    """
    xp = b.xp
    guess = xp.ceil((values - table[rows, 0]) / spacing[rows])
    guess = xp.minimum(xp.where(guess > 0, guess, 0.0), b.f64(lengths[rows]))
    steps, base, cells = b.i64(guess), rows * table.shape[1], table.reshape(-1)
    while True:
        over = (steps > 0) & (cells[base + xp.where(steps > 0, steps - 1, 0)] >= values)
        under = cells[base + steps] < values  # the +inf padding is never below a value
        if not bool(over.any() or under.any()):
            return steps
        steps = xp.where(over, steps - 1, xp.where(under, steps + 1, steps))


def _count_above(b: Backend, groups: Native, steps: Native, n_groups: int, n_thresholds: int) -> Native:
    """(n_groups, T) float64 counts of the values of each group above each threshold j.

    A value is above threshold j when more than j thresholds lie below it (steps > j), so the
    count is the group's total minus the cumulative histogram of ``steps`` up to j.
    """
    width = n_thresholds + 1
    hist = b.xp.bincount(groups * width + steps, minlength=n_groups * width).reshape(n_groups, width)
    return b.f64(hist.sum(1)[:, None] - hist.cumsum(1)[:, :n_thresholds])


def _region_average(region: np.ndarray, image: np.ndarray, n_regions: int, n_images: int) -> np.ndarray:
    """(M, R) matrix turning per-region pixel counts into the mean overlap over each image's regions.

    Entry (i, r) is 1 / (regions of image i) / (area of r) for the regions r of image i.
    """
    area = np.bincount(region, minlength=n_regions)
    region_image = np.zeros(n_regions, dtype=np.int64)
    region_image[region] = image
    member = region_image[None, :] == np.arange(n_images)[:, None]
    return member / member.sum(1, keepdims=True) / area[None, :]


def _rd4ad_auc(b: Backend, fpr: Native, pro: Native, kept: Native) -> Native:
    """(M,) area under each image's kept (FPR / max kept FPR, PRO) points, in threshold order.

    FPR never increases with the threshold, so the kept points are one contiguous run and
    sklearn's ``auc`` integrates them with direction -1: sum of 0.5 (y_j + y_j+1)(x_j - x_j+1).
    See :func:`pro_rd4ad` for the degenerate cases.
    """
    xp = b.xp
    max_fpr = xp.amax(xp.where(kept, fpr, -1.0), 1)
    x = fpr / xp.where(max_fpr > 0, max_fpr, 1.0)[:, None]
    segments = 0.5 * (pro[:, :-1] + pro[:, 1:]) * (x[:, :-1] - x[:, 1:])
    area = xp.where(kept[:, :-1] & kept[:, 1:], segments, 0.0).sum(1)
    # no kept point: max_fpr is -1 and no segment is kept, so the area is already 0
    return xp.where(max_fpr == 0, xp.amax(xp.where(kept, pro, 0.0), 1), area)
