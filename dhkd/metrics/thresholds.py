"""What a threshold on the anomaly score does: counts, precision/recall/F1, mask IoU, ROC point.

Pure computations (numpy), no widgets: :mod:`dhkd.notebook.widgets` draws what these return, and the
tests compare them with a direct ``maps >= t``.

Conventions, the same as :mod:`dhkd.metrics.curves`: a sample or pixel is predicted defective when its
score is ``>= threshold``; labels and masks are 1 = defective. The predicted mask of an image at
threshold ``t`` is ``map >= t`` at both levels; since an image's score is the maximum of its
map, at the image level an image is flagged exactly when its predicted mask is not empty.

Speed: :class:`PixelCounter` sorts each image's normal and defective pixels once, so the counts
at any threshold are two ``searchsorted`` per image (well under a millisecond for a whole
category) instead of a pass over millions of pixels.

Undefined ratios (precision without any prediction, recall without any defective sample) are
``nan``; F1 is ``2 TP / (2 TP + FP + FN)``, 0 when TP is 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dhkd.metrics import curves as metrics

__all__ = [
    "Counts",
    "counts",
    "PixelCounter",
    "ImageCounter",
    "ceil_float32",
]


def _np(x: Any, dtype: Any | None = None) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        x = x.numpy()
    return np.asarray(x, dtype=dtype)


def ceil_float32(t: float) -> np.float32:
    """The smallest float32 ``>= t``: for float32 data, ``x >= t`` iff ``x >= ceil_float32(t)``.

    So float32 maps can be searched exactly with an arbitrary (float64) slider value.
    """
    if math.isnan(t):
        raise ValueError("threshold is nan")
    t32 = np.float32(t)
    if float(t32) < t:
        t32 = np.nextafter(t32, np.float32(np.inf))
    return t32


@dataclass(frozen=True)
class Counts:
    """A confusion matrix (of images or of pixels)."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else math.nan

    @property
    def recall(self) -> float:  # = TPR
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else math.nan

    @property
    def fpr(self) -> float:
        return self.fp / (self.fp + self.tn) if self.fp + self.tn else math.nan

    @property
    def f1(self) -> float:
        denominator = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denominator if denominator else math.nan

    @property
    def roc_point(self) -> tuple[float, float]:
        """(FPR, TPR): where this threshold sits on the ROC curve."""
        return self.fpr, self.recall

    @property
    def iou(self) -> float:
        """Intersection over union of predicted and true positives (Jaccard index)."""
        union = self.tp + self.fp + self.fn
        return self.tp / union if union else math.nan


def counts(predicted: Any, truth: Any) -> Counts:
    """The confusion counts of two boolean arrays of one shape (the direct computation)."""
    p, y = _np(predicted).astype(bool), _np(truth).astype(bool)
    tp = int(np.count_nonzero(p & y))
    fp = int(np.count_nonzero(p & ~y))
    fn = int(np.count_nonzero(~p & y))
    return Counts(tp, fp, fn, p.size - tp - fp - fn)


class ImageCounter:
    """Image-level counts at any threshold: ``score >= t`` against the labels."""

    def __init__(self, scores: Any, labels: Any) -> None:
        self.scores = _np(scores, np.float32).reshape(-1)
        self.labels = _np(labels).reshape(-1).astype(bool)
        self._pos = np.sort(self.scores[self.labels])
        self._neg = np.sort(self.scores[~self.labels])

    def flagged(self, t: float) -> np.ndarray:
        return self.scores >= ceil_float32(t)

    def counts(self, t: float) -> Counts:
        t32 = ceil_float32(t)
        tp = len(self._pos) - int(np.searchsorted(self._pos, t32, side="left"))
        fp = len(self._neg) - int(np.searchsorted(self._neg, t32, side="left"))
        return Counts(tp, fp, len(self._pos) - tp, len(self._neg) - fp)

    def roc_curve(self) -> tuple[np.ndarray, np.ndarray]:
        fpr, tpr, _ = metrics.roc_curve(self.scores, self.labels)
        return fpr, tpr

    def f1_optimal(self) -> tuple[float, float]:
        return metrics.f1_optimal_sorted(self._pos, self._neg)

    def threshold_at_fpr(self, fpr: float) -> float:
        """Lowest threshold flagging at most ``fpr`` of the good images (= :func:`metrics.threshold_at_fpr`)."""
        return metrics.threshold_at_fpr_sorted(self._neg, fpr, candidates=(self._pos,))


class PixelCounter:
    """Pixel-level counts, per image and pooled, at any threshold, from per-image sorted pixels.

    ``maps`` (N, H, W) float, ``masks`` (N, H, W) bool, ``labels`` (N,) (0 = good image), ``valid``
    (N, H, W) bool: the images' own pixels (padding is left out of every count). Each image's
    defective and normal pixels are sorted once (float32) at construction.
    """

    def __init__(self, maps: Any, masks: Any, labels: Any | None = None, valid: Any | None = None) -> None:
        maps = _np(maps, np.float32)
        masks = _np(masks).astype(bool)
        if maps.shape != masks.shape or maps.ndim != 3:
            raise ValueError(f"maps and masks must both be (N, H, W); got {maps.shape} and {masks.shape}")
        keep = np.ones(maps.shape, dtype=bool) if valid is None else _np(valid).astype(bool)
        if keep.shape != maps.shape:
            raise ValueError(f"valid must be (N, H, W) like the maps; got {keep.shape} and {maps.shape}")
        n = maps.shape[0]
        self.n_images = n
        masks = masks & keep
        self.labels = masks.reshape(n, -1).any(1) if labels is None else _np(labels).reshape(-1).astype(bool)
        flat, gt, inside = maps.reshape(n, -1), masks.reshape(n, -1), keep.reshape(n, -1)
        self.n_pos = gt.sum(1).astype(np.int64)
        self.n_pad = (~inside).sum(1).astype(np.int64)
        self.n_neg = gt.shape[1] - self.n_pos - self.n_pad
        # Per image, one row: its defective pixels sorted, its padding (-inf: below every
        # threshold), then its normal pixels sorted.
        rows = np.empty_like(flat)
        for i in range(n):
            pos, neg = flat[i][gt[i]], flat[i][inside[i] & ~gt[i]]
            k, pad = pos.shape[0], int(self.n_pad[i])
            rows[i, :k] = np.sort(pos)
            rows[i, k:k + pad] = -np.inf
            rows[i, k + pad:] = np.sort(neg)
        self._rows = rows
        self.good = ~self.labels
        self._min = float(flat[inside].min())
        self._max = float(flat[inside].max())

    def _normal(self, i: int) -> np.ndarray:
        """Image ``i``'s normal pixels, sorted."""
        return self._rows[i, self.n_pos[i] + self.n_pad[i]:]

    @property
    def value_range(self) -> tuple[float, float]:
        return self._min, self._max

    def per_image(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """(TP, FP) per image at threshold ``t``: defective / normal pixels with map ``>= t``."""
        t32 = ceil_float32(t)
        tp = np.empty(self.n_images, np.int64)
        fp = np.empty(self.n_images, np.int64)
        for i, (row, k) in enumerate(zip(self._rows, self.n_pos)):
            normal = self._normal(i)
            tp[i] = k - np.searchsorted(row[:k], t32, side="left")
            fp[i] = normal.shape[0] - np.searchsorted(normal, t32, side="left")
        return tp, fp

    def stats(self, t: float) -> dict[str, Any]:
        """Pooled pixel counts and ratios, mask IoUs and the good-image pixel FPR at ``t``."""
        tp, fp = self.per_image(t)
        fn = self.n_pos - tp
        pooled = Counts(int(tp.sum()), int(fp.sum()), int(fn.sum()), int((self.n_neg - fp).sum()))
        union = tp + fp + fn
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
        defective = self.n_pos > 0
        n_good_pixels = int(self.n_neg[self.good].sum())
        return {
            "counts": pooled,
            "per_image_tp": tp,
            "per_image_fp": fp,
            "per_image_iou": iou,
            "iou_defective": float(iou[defective].mean()) if defective.any() else math.nan,
            "iou_pooled": pooled.iou,
            "fpr_good": float(fp[self.good].sum()) / n_good_pixels if n_good_pixels else math.nan,
            "flagged": (tp + fp) > 0,
        }

    def _pooled_sorted(self) -> tuple[np.ndarray, np.ndarray]:
        """All defective pixels sorted and all normal pixels sorted (computed on first use)."""
        if not hasattr(self, "_pooled"):
            pos = np.sort(np.concatenate([row[:k] for row, k in zip(self._rows, self.n_pos)]))
            neg = np.sort(np.concatenate([self._normal(i) for i in range(self.n_images)]))
            self._pooled = (pos, neg)
        return self._pooled

    def roc_curve(self, points: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """The pooled pixel ROC at ``points`` thresholds (quantiles of all pixels), for plotting."""
        pos, neg = self._pooled_sorted()
        both = np.concatenate([pos[:: max(1, len(pos) // points)], neg[:: max(1, len(neg) // points)]])
        th = np.unique(np.concatenate([both, [np.inf]]))[::-1]
        tpr = (len(pos) - np.searchsorted(pos, th, side="left")) / max(len(pos), 1)
        fpr = (len(neg) - np.searchsorted(neg, th, side="left")) / max(len(neg), 1)
        return np.concatenate([fpr, [1.0]]), np.concatenate([tpr, [1.0]])

    def f1_optimal(self) -> tuple[float, float]:
        """Pixel threshold maximising pooled pixel F1 (highest among ties), and that F1
        (:func:`dhkd.metrics.curves.f1_optimal_threshold` over all pixels, from the sorted pixels)."""
        pos, neg = self._pooled_sorted()
        return metrics.f1_optimal_sorted(pos, neg)

    def threshold_at_fpr(self, fpr: float) -> float:
        """Lowest threshold flagging at most ``fpr`` of the pixels of the good images.

        Without good images, of all normal pixels. Among the thresholds with the same false
        positives, the lowest pixel value (any pixel) is chosen: it flags the most defects.
        """
        pos, neg = self._pooled_sorted()
        if self.good.any():
            good = np.sort(np.concatenate([self._normal(i) for i in range(self.n_images) if self.good[i]]))
        else:
            good = neg
        return metrics.threshold_at_fpr_sorted(good, fpr, candidates=(pos, neg))
