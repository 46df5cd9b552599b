"""The distillation loss: how far the student's features point from the teacher's.

RD4AD's official code flattens each scale of each image to one vector and takes one cosine
per image per scale (``flatten``); its paper's text describes a cosine per pixel averaged
over positions (``pixel``). Both are summed over the three scales and averaged over the batch.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

#: The two readings of the loss (train.loss takes these): RD4AD's code, then its paper's text.
LOSS_KINDS = ("flatten", "pixel")

def distillation_loss(teacher: list[torch.Tensor], student: list[torch.Tensor], kind: str = "flatten") -> torch.Tensor:
    """``sum_scales mean_batch (1 - cos(f_T, f_S))``; zero when the features are identical."""
    if kind not in LOSS_KINDS:
        raise ValueError(f"unknown loss kind {kind!r}: {' or '.join(LOSS_KINDS)}")
    total = teacher[0].new_zeros((), dtype=torch.float32)
    for f_t, f_s in zip(teacher, student, strict=True):
        f_t, f_s = f_t.float(), f_s.float()
        if kind == "flatten":
            cosine = flat_cosine(f_t, f_s)
        else:
            cosine = F.cosine_similarity(f_t, f_s, dim=1).flatten(1).mean(dim=1)
        total = total + (1.0 - cosine).mean()
    return total


def flat_cosine(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``cos(flatten(a_i), flatten(b_i))`` per sample ``i`` of ``(B, C, H, W)`` tensors.

    The same number as ``F.cosine_similarity(a.flatten(1), b.flatten(1))``, written as sums
    over the non-batch dimensions so that channels-last tensors are not copied into NCHW
    order first (and back in the backward pass): 4x faster on the CPU at RD4AD's sizes.
    """
    dims = tuple(range(1, a.dim()))
    dot = (a * b).sum(dims)
    norms = torch.linalg.vector_norm(a, dim=dims) * torch.linalg.vector_norm(b, dim=dims)
    return dot / norms.clamp_min(eps)
