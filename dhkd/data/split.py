"""A decoded split: images and masks as tensors, and ImageNet normalisation.

A category split is decoded once into one ``uint8`` tensor of shape ``(N, 3, H, W)`` plus a
``bool`` mask tensor, so that a run can keep the whole split on its device and normalise
there (:func:`normalize`) instead of decoding PNGs every epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class CategorySplit:
    """One split of one category, decoded: images as uint8, masks as bool, all in memory."""

    images: torch.Tensor  # uint8 (N, 3, H, W)
    masks: torch.Tensor  # bool (N, H, W); all False for good images
    labels: torch.Tensor  # int64 (N,): 0 good, 1 defective
    defect_types: list[str]  # "good" or the defect folder name
    paths: list[Path]
    has_mask: torch.Tensor | None = None  # bool (N,): False for a defective image without a mask; None: all have one
    valid: torch.Tensor | None = None  # bool (N, H, W): the image, not its padding (data.resize keep_aspect); None: all

    def mask_known(self) -> torch.Tensor:
        """bool (N,): images whose pixels are labelled (good images, and defective ones with a mask)."""
        if self.has_mask is None:
            return torch.ones(len(self), dtype=torch.bool, device=self.labels.device)
        return self.has_mask.to(self.labels.device) | (self.labels == 0)

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device | str) -> CategorySplit:
        """The same split with its tensors on ``device`` (the lists are copied)."""
        return CategorySplit(
            images=self.images.to(device),
            masks=self.masks.to(device),
            labels=self.labels.to(device),
            defect_types=list(self.defect_types),
            paths=list(self.paths),
            has_mask=None if self.has_mask is None else self.has_mask.to(device),
            valid=None if self.valid is None else self.valid.to(device),
        )


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 images ``(N, 3, H, W)`` or ``(3, H, W)`` -> float32 ImageNet-normalised, same device.

    The same numbers as RD4AD's ``ToTensor()`` + ``Normalize(IMAGENET_MEAN, IMAGENET_STD)``.
    """
    if images.dtype != torch.uint8:
        raise TypeError(f"normalize expects uint8 images (0..255), got {images.dtype}; were they normalised already?")
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(3, 1, 1)
    return images.float().div_(255.0).sub_(mean).div_(std)


def denormalize(images: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalize`, clamped to [0, 1] (float), for plotting."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device, dtype=images.dtype).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device, dtype=images.dtype).view(3, 1, 1)
    return (images * std + mean).clamp_(0.0, 1.0)
