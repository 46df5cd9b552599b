"""Coordinate attention (Hou, Zhou & Feng, CVPR 2021).

Channel attention that keeps position: the feature map is pooled along H and along W
separately, so the two attention vectors say *which rows* and *which columns* matter for each
channel. DHKD puts it inside the reverse-distillation structure (docs/method.md, addition 2).
"""

from __future__ import annotations

import torch
from torch import nn


class CoordinateAttention(nn.Module):
    """``(B, C, H, W) -> (B, C, H, W)``: ``x * a_h * a_w`` with ``a_h`` (B,C,H,1), ``a_w`` (B,C,1,W).

    The shared 1x1 conv squeezes to ``mip = max(8, C // 32)`` channels, as in the paper.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        mip = max(8, channels // 32)
        self.squeeze = nn.Sequential(nn.Conv2d(channels, mip, 1), nn.BatchNorm2d(mip), nn.Hardswish())
        self.to_h = nn.Conv2d(mip, channels, 1)
        self.to_w = nn.Conv2d(mip, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a_h, a_w = self.attention(x)
        return x * a_h * a_w

    def attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two attention maps, exposed for the notebooks."""
        _, _, height, width = x.shape
        pooled_h = x.mean(dim=3, keepdim=True)  # (B, C, H, 1)
        pooled_w = x.mean(dim=2, keepdim=True).transpose(2, 3)  # (B, C, W, 1)
        y = self.squeeze(torch.cat([pooled_h, pooled_w], dim=2))
        y_h, y_w = torch.split(y, [height, width], dim=2)
        return torch.sigmoid(self.to_h(y_h)), torch.sigmoid(self.to_w(y_w.transpose(2, 3)))
