"""Mutual-mapping fusion (MMF): every teacher scale borrows from the other two.

The paper (IEEE TBD 2024) fuses "features of different levels inhomogeneously". This kit's
interpretation (docs/method.md, addition 1): for each target scale s, each other scale t is mapped
onto s's shape, and ``G_s = F_s + sum_t w_st * M_ts(F_t)`` with ``w_s = softmax(a_s)``
learned per target, so each scale learns its own mixture. G replaces F as input to the
bottleneck; the distillation targets stay the raw teacher features.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_bn_relu(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ScaleMapping(nn.Module):
    """Map scale ``t`` (``C_t`` channels) onto scale ``s`` (``C_s`` channels, ``2**(t-s)`` times the size).

    Finer to coarser: one stride-2 3x3 conv+BN+ReLU per halving. Coarser to finer: bilinear
    upsampling then 1x1 conv+BN+ReLU; the conv is applied *before* the upsampling, which is
    the same function (both are linear and bilinear weights sum to 1) at a fraction of the cost.
    """

    def __init__(self, source_channels: int, target_channels: int, levels: int) -> None:
        super().__init__()
        self.levels = levels  # target level - source level; > 0 means the target is coarser
        if levels > 0:
            layers = [conv_bn_relu(source_channels, target_channels, 3, stride=2)]
            layers += [conv_bn_relu(target_channels, target_channels, 3, stride=2) for _ in range(levels - 1)]
            self.body = nn.Sequential(*layers)
        else:
            self.conv = nn.Conv2d(source_channels, target_channels, 1, bias=False)
            self.post = nn.Sequential(nn.BatchNorm2d(target_channels), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.levels > 0:
            return self.body(x)
        y = self.conv(x)
        y = nn.functional.interpolate(y, scale_factor=2 ** (-self.levels), mode="bilinear", align_corners=False)
        return self.post(y)


class MutualMappingFusion(nn.Module):
    """``[F_1, F_2, F_3] -> [G_1, G_2, G_3]`` with the same shapes (``(B, c_i, S/2**(i+1), ...)``)."""

    def __init__(self, channels: tuple[int, ...]) -> None:
        super().__init__()
        self.scales = len(channels)
        self.mappings = nn.ModuleDict(
            {
                f"{t}to{s}": ScaleMapping(channels[t], channels[s], s - t)
                for s in range(self.scales)
                for t in range(self.scales)
                if t != s
            }
        )
        # a_s: one logit per source scale; zeros start every target at an even mixture.
        self.mix_logits = nn.Parameter(torch.zeros(self.scales, self.scales - 1))

    def sources(self, s: int) -> list[int]:
        return [t for t in range(self.scales) if t != s]

    def mixing_weights(self) -> torch.Tensor:
        """``(scales, scales)`` matrix of ``w_st`` (row: target, column: source; zero diagonal)."""
        weights = torch.zeros(self.scales, self.scales, device=self.mix_logits.device)
        for s in range(self.scales):
            weights[s, self.sources(s)] = torch.softmax(self.mix_logits[s], dim=0)
        return weights

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        fused = []
        for s in range(self.scales):
            w = torch.softmax(self.mix_logits[s], dim=0)
            g = features[s]
            for j, t in enumerate(self.sources(s)):
                g = g + w[j] * self.mappings[f"{t}to{s}"](features[t])
            fused.append(g)
        return fused
