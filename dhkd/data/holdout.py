"""Holding images back: a share of a list of images, chosen deterministically, kept out of another use.

Two splits use it. A data-set file keeps ``test_share`` of its normal images for testing
(:mod:`dhkd.data.dataset_file`). And every data root keeps ``data.calibration_share`` of its
normal *training* images out of training: the **calibration** images, from which
``dhkd evaluate`` chooses ``dhkd predict``'s threshold. A threshold chosen on the test images
would be judged on the images it was fitted to (it flags, by construction, about the chosen
share of them), and one chosen on training images would sit too low (the student reproduces
what it was trained on better than new images); the calibration images are neither.

The choice depends only on the sorted list and its own fixed seed, never on a run's seed, so every run
of an ablation trains on the same images and calibrates on the same others.
"""

from __future__ import annotations

from typing import Sequence, TypeVar

import numpy as np

T = TypeVar("T")

#: the random seed of the calibration images' choice: fixed, so that it is a property of the data, not of a run
CALIBRATION_SEED = 0


def held_out_count(n: int, share: float) -> int:
    """How many of ``n`` images ``share`` holds back: ``round(n * share)``, at least one when
    ``share > 0``, and always at least one left for the other use (none held of a single image)."""
    if share <= 0 or n < 2:
        return 0
    return min(max(1, round(n * share)), n - 1)


def hold_out(items: Sequence[T], share: float, seed: int) -> tuple[list[T], list[T]]:
    """``(kept, held)``: ``items`` split by a permutation drawn from ``seed``; both keep the items' order."""
    held_n = held_out_count(len(items), share)
    order = np.random.default_rng(seed).permutation(len(items))
    held = set(order[:held_n].tolist())
    return ([item for i, item in enumerate(items) if i not in held],
            [item for i, item in enumerate(items) if i in held])
