"""The one-class bottleneck embedding (OCBE) of RD4AD (its ``BN_layer``).

Two jobs: fuse the three teacher scales into one map ("multi-scale feature fusion"), then
squeeze it through residual blocks into a compact embedding ("one-class embedding") that
keeps what normal images share and drops what anomalies add.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck

from dhkd.method.attention import CoordinateAttention
from dhkd.method.blocks import conv_bn_relu


class OneClassBottleneck(nn.Module):
    """``[(B,c1,4h,4w), (B,c2,2h,2w), (B,c3,h,w)] -> (B, 2*c3, h/2, w/2)``.

    For the Wide-ResNet-50 teacher this is RD4AD exactly: 256->512->1024 and 512->1024 by
    stride-2 3x3 conv+BN+ReLU, concatenation to 3072x16x16, then ``blocks`` wide Bottlenecks
    (width 1024), the first with stride 2, giving 2048x8x8. Other teachers scale the same way
    from their own channels (width ``width_ratio * c3``, output ``2*c3``). ``width_ratio`` 0.5
    is anomalib's ``OCBE`` (512 wide for the Wide-ResNet-50), for like-for-like timing.
    """

    def __init__(self, channels: tuple[int, int, int], blocks: int = 3, attention: bool = False,
                 width_ratio: float = 1.0) -> None:
        super().__init__()
        c1, c2, c3 = channels
        if c3 % 2:
            raise ValueError(f"the coarsest teacher scale needs an even channel count, got {c3}")
        self.out_channels = 2 * c3
        self.down1 = nn.Sequential(conv_bn_relu(c1, c2, 3, stride=2), conv_bn_relu(c2, c3, 3, stride=2))
        self.down2 = conv_bn_relu(c2, c3, 3, stride=2)
        self.attention = CoordinateAttention(3 * c3) if attention else nn.Identity()
        self.embed = _residual_stage(3 * c3, c3, blocks, width=round(width_ratio * c3))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        f1, f2, f3 = features
        fused = torch.cat([self.down1(f1), self.down2(f2), f3], dim=1)
        return self.embed(self.attention(fused))


def _residual_stage(in_channels: int, channels: int, blocks: int, width: int) -> nn.Sequential:
    """ResNet Bottlenecks of ``width`` channels inside and ``2 * channels`` outside (RD4AD's
    wide blocks: ``width == channels``)."""
    # torchvision's Bottleneck: width = planes * base_width / 64, output = planes * 4.
    planes = channels // 2
    base_width = 64 * width // planes
    if planes * base_width // 64 != width:
        raise ValueError(f"a bottleneck width of {width} cannot be built from {planes} planes")
    out_channels = planes * Bottleneck.expansion
    downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=2, bias=False), nn.BatchNorm2d(out_channels))
    layers = [Bottleneck(in_channels, planes, stride=2, downsample=downsample, base_width=base_width)]
    layers += [Bottleneck(out_channels, planes, base_width=base_width) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)
