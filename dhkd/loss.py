"""The distillation loss: how far the student's features point from the teacher's.

RD4AD's official code flattens each scale of each image to one vector and takes one cosine
per image per scale (``flatten``); its paper's text describes a cosine per pixel averaged
over positions (``pixel``). Both are summed over the three scales and averaged over the batch.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from dhkd.errors import DhkdError

LOSS_KINDS = ("flatten", "pixel")


def distillation_loss(teacher: list[torch.Tensor], student: list[torch.Tensor], kind: str = "flatten") -> torch.Tensor:
    """``sum_scales mean_batch (1 - cos(f_T, f_S))``; zero when the features are identical."""
    if kind not in LOSS_KINDS:
        raise DhkdError(f"unknown loss '{kind}'", f"train.loss must be one of {', '.join(LOSS_KINDS)}")
    total = teacher[0].new_zeros((), dtype=torch.float32)
    for f_t, f_s in zip(teacher, student, strict=True):
        f_t, f_s = f_t.float(), f_s.float()
        if kind == "flatten":
            cosine = F.cosine_similarity(f_t.flatten(1), f_s.flatten(1), dim=1)
        else:
            cosine = F.cosine_similarity(f_t, f_s, dim=1).flatten(1).mean(dim=1)
        total = total + (1.0 - cosine).mean()
    return total
