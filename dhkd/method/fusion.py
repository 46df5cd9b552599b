"""Mutual-mapping fusion (MMF): every teacher scale borrows from the other two.

The paper (IEEE TBD 2024) fuses "features of different levels inhomogeneously". This kit's
interpretation (docs/method.md, addition 1): for each target scale s, each other scale t is mapped
onto s's shape, and ``G_s = F_s + sum_t w_st * M_ts(F_t)`` with ``w_s = softmax(a_s)``
learned per target, so each scale learns its own mixture. G replaces F as input to the
bottleneck; the distillation targets stay the raw teacher features. Options (config
``model.fusion``): the own scale in the softmax (``include_self``), and mappings scaled at the
start of training to the size of the scale they feed (``match_scale``, :meth:`match_scales`).
"""

from __future__ import annotations

import torch
from torch import nn

from dhkd.method.blocks import conv_bn_relu


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

    def __init__(self, channels: tuple[int, ...], include_self: bool = False, self_logit: float = 0.0) -> None:
        super().__init__()
        self.scales = len(channels)
        self.include_self = include_self
        self.mappings = nn.ModuleDict(
            {
                f"{t}to{s}": ScaleMapping(channels[t], channels[s], s - t)
                for s in range(self.scales)
                for t in range(self.scales)
                if t != s
            }
        )
        # a_s: one logit per source scale; zeros start every target at an even mixture. With
        # include_self the own scale is the first source and starts at self_logit.
        logits = torch.zeros(self.scales, self.scales - 1 + int(include_self))
        if include_self:
            logits[:, 0] = self_logit
        self.mix_logits = nn.Parameter(logits)

    def sources(self, s: int) -> list[int]:
        """The scales target ``s`` mixes, in the order of its logits (itself first with include_self)."""
        return ([s] if self.include_self else []) + [t for t in range(self.scales) if t != s]

    def borrowed(self, features: list[torch.Tensor], s: int) -> torch.Tensor:
        """``sum_t w_st M_ts(F_t)`` over the other scales: what target ``s`` takes from them."""
        w = torch.softmax(self.mix_logits[s], dim=0)
        terms = [w[j] * self.mappings[f"{t}to{s}"](features[t]) for j, t in enumerate(self.sources(s)) if t != s]
        return torch.stack(terms).sum(dim=0)

    def kept(self, features: list[torch.Tensor], s: int) -> torch.Tensor:
        """``w_ss F_s`` (``F_s`` itself unless the own scale is in the softmax)."""
        if not self.include_self:
            return features[s]
        return torch.softmax(self.mix_logits[s], dim=0)[0] * features[s]

    def mixing_weights(self) -> torch.Tensor:
        """``(scales, scales)`` matrix of ``w_st`` (row: target, column: source; the diagonal is zero
        unless the own scale is in the softmax)."""
        weights = torch.zeros(self.scales, self.scales, device=self.mix_logits.device)
        for s in range(self.scales):
            weights[s, self.sources(s)] = torch.softmax(self.mix_logits[s], dim=0)
        return weights

    @torch.no_grad()
    def match_scales(self, features: list[torch.Tensor]) -> None:
        """Scale every mapping so that its output has the RMS of the scale it is added to.

        Why: a mapping ends in BatchNorm + ReLU (RMS about 0.6), the teacher's features are
        several times larger, so a borrowed term starts at a few % of the fused map and stays
        there (measured: 3-6 %). ``ReLU(k y) = k ReLU(y)`` for ``k > 0``, so multiplying the last
        BatchNorm's weight and bias by ``k`` scales the output exactly.
        """
        for s in range(self.scales):
            target = features[s].float().pow(2).mean().sqrt()
            for t in range(self.scales):
                if t == s:
                    continue
                mapping = self.mappings[f"{t}to{s}"]
                norm = mapping.body[-1][1] if mapping.levels > 0 else mapping.post[0]
                k = target / mapping(features[t]).float().pow(2).mean().sqrt().clamp_min(1e-12)
                norm.weight.mul_(k)
                norm.bias.mul_(k)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self.kept(features, s) + self.borrowed(features, s) for s in range(self.scales)]
