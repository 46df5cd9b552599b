"""Anomaly maps and image scores, computed in batches on whatever device the features live on.

Per scale, the anomaly is ``1 - cos`` between teacher and student feature vectors at each
pixel; the three maps are upsampled to the image size (bilinear, ``align_corners=True`` as
in RD4AD), summed, and smoothed with a Gaussian of sigma 4. The image score is the maximum.
"""

from __future__ import annotations


import torch
from torch.nn import functional as F

from dhkd.method.size import Size, pair


def scale_maps(teacher: list[torch.Tensor], student: list[torch.Tensor], size: Size) -> torch.Tensor:
    """Per-scale anomaly maps ``(B, scales, H, W)`` at ``size`` (H, W), before summing and blurring."""
    maps = []
    for f_t, f_s in zip(teacher, student, strict=True):
        distance = 1.0 - F.cosine_similarity(f_t.float(), f_s.float(), dim=1)  # (B, h, w)
        maps.append(F.interpolate(distance.unsqueeze(1), size=pair(size), mode="bilinear", align_corners=True))
    return torch.cat(maps, dim=1)


def anomaly_map(teacher: list[torch.Tensor], student: list[torch.Tensor], size: Size, sigma: float = 4.0,
                scales: tuple[int, ...] | None = None) -> torch.Tensor:
    """The blurred sum of the scale maps, ``(B, H, W)``; of the ``scales`` only (1-based, finest
    first; None: all, as RD4AD) where given. A scale left out costs nothing: it is not computed."""
    if scales is not None:
        teacher, student = [teacher[s - 1] for s in scales], [student[s - 1] for s in scales]
    summed = scale_maps(teacher, student, size).sum(dim=1)
    return gaussian_blur(summed, sigma) if sigma > 0 else summed


def mean_features(features: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per scale, the mean feature map over a batch of normal images, ``(1, C, h, w)`` each."""
    return [f.mean(dim=0, keepdim=True) for f in features]


def teacher_only_map(features: list[torch.Tensor], normal_mean: list[torch.Tensor], size: Size,
                     sigma: float = 4.0) -> torch.Tensor:
    """The detector with no student: :func:`anomaly_map` with the normal images' mean features
    (:func:`mean_features`) in place of the student's reconstruction, ``(B, H, W)``."""
    return anomaly_map(features, [m.to(f.device).expand_as(f) for m, f in zip(normal_mean, features, strict=True)],
                       size, sigma)


def without_padding(maps: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """``maps (B, ..., H, W)`` with 0 where ``valid (B, H, W)`` is False (padding is not part of an
    image, so never anomalous; maps are >= 0), in place; unchanged when ``valid`` is None."""
    if valid is not None:
        maps.masked_fill_(~valid.view(valid.shape[0], *([1] * (maps.dim() - 3)), *valid.shape[1:]), 0.0)
    return maps


def image_scores(maps: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """``(B, H, W) -> (B,)``: the maximum of each map (over its ``valid`` pixels only, where given:
    bool ``(B, H, W)``, False on padding)."""
    if valid is not None:
        maps = maps.masked_fill(~valid, -torch.inf)
    return maps.flatten(1).amax(dim=1)


def gaussian_blur(maps: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, H, W)`` maps, equal to ``scipy.ndimage.gaussian_filter``.

    RD4AD blurs with scipy per image on the CPU; doing the same in torch keeps the maps on
    the device. scipy's default border mode ``reflect`` repeats the edge pixel
    (``d c b a | a b c d``), which torch's ``reflect`` padding does not, so the padding is
    built by indexing.
    """
    radius = int(truncate * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, device=maps.device, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(maps.dtype)
    x = maps.unsqueeze(1)
    x = _blur_along(x, kernel, dim=3)
    x = _blur_along(x, kernel, dim=2)
    return x.squeeze(1)


def _blur_along(x: torch.Tensor, kernel: torch.Tensor, dim: int) -> torch.Tensor:
    radius = (kernel.numel() - 1) // 2
    length = x.shape[dim]
    index = _symmetric_index(length, radius, x.device)
    padded = x.index_select(dim, index)
    weight = kernel.view(1, 1, -1, 1) if dim == 2 else kernel.view(1, 1, 1, -1)
    return F.conv2d(padded, weight)


def _symmetric_index(length: int, radius: int, device: torch.device) -> torch.Tensor:
    """Indices of a ``d c b a | a b c d | d c b a`` padding by ``radius`` (any radius)."""
    positions = torch.arange(-radius, length + radius, device=device)
    period = 2 * length
    folded = torch.remainder(positions, period)
    return torch.where(folded < length, folded, period - 1 - folded)


def blur_kernel_size(sigma: float, truncate: float = 4.0) -> int:
    return 2 * int(truncate * sigma + 0.5) + 1 if sigma > 0 else 1


__all__ = ["without_padding", "anomaly_map", "scale_maps", "mean_features", "teacher_only_map", "image_scores", "gaussian_blur", "blur_kernel_size"]
