"""Metrics: AUROC, AUPRO (the official MVTec definition), RD4AD's PRO, and counts at a threshold.

- :mod:`dhkd.metrics.curves`      ROC and PRO curves and the areas under them (NumPy or torch)
- :mod:`dhkd.metrics.thresholds`  confusion counts, F1 and IoU at a threshold (what the widgets show)

The names below are the public interface; import them from ``dhkd.metrics``.
"""

from dhkd.metrics.curves import (aupro, f1_optimal_sorted, f1_optimal_threshold, image_auroc, pixel_auroc, pro_curve,
                                 pro_rd4ad, roc_curve, threshold_at_fpr, threshold_at_fpr_sorted, trapezoid)

__all__ = ["aupro", "f1_optimal_sorted", "f1_optimal_threshold", "image_auroc", "pixel_auroc", "pro_curve", "pro_rd4ad",
           "roc_curve", "threshold_at_fpr", "threshold_at_fpr_sorted", "trapezoid"]
