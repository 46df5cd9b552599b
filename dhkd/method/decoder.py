"""The student: a ResNet run backwards, from the embedding back to the teacher's scales.

RD4AD's ``de_wide_resnet50_2``: three stages of [3, 4, 6] bottleneck blocks (the reverse of
the teacher's layer3, layer2, layer1); the first block of each stage doubles the resolution
with a 2x2 transposed convolution.
"""

from __future__ import annotations

import torch
from torch import nn

from dhkd.method.attention import CoordinateAttention


class DecoderBottleneck(nn.Module):
    """RD4AD's ``DeBottleneck``: ``(B, c_in, h, w) -> (B, c_out, 2h, 2w)`` if ``upsample`` else same size.

    1x1 conv to ``width``, 3x3 conv (or 2x2 transposed conv with stride 2), 1x1 conv to
    ``c_out``, each with BatchNorm, ReLU after the residual sum.
    """

    def __init__(self, in_channels: int, width: int, out_channels: int, upsample: bool = False) -> None:
        super().__init__()
        middle = (nn.ConvTranspose2d(width, width, 2, stride=2, bias=False) if upsample
                  else nn.Conv2d(width, width, 3, padding=1, bias=False))
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            middle, nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels),
        )
        self.shortcut: nn.Module = nn.Identity()
        if upsample:
            self.shortcut = nn.Sequential(nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2, bias=False),
                                          nn.BatchNorm2d(out_channels))
        elif in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        out += self.shortcut(x)  # in place, as in RD4AD and torchvision (BatchNorm's backward needs its input only)
        return self.relu(out)


class Decoder(nn.Module):
    """``(B, e, h, w) -> [(B, c1, 8h, 8w), (B, c2, 4h, 4w), (B, c3, 2h, 2w)]`` (finest first, like the teacher).

    Args:
        in_channels: embedding channels ``e``.
        channels: the teacher's ``(c1, c2, c3)``.
        blocks: blocks per stage, coarsest first (RD4AD: [3, 4, 6]).
        width_ratio, min_width: bottleneck width of a stage = ``max(min_width, ratio * c)``.
        attention: coordinate attention after every stage.
        output_projection: end every scale with a plain 1x1 conv, so that the output can take
            negative values (needed for teachers whose features are not ReLU outputs).
    """

    def __init__(self, in_channels: int, channels: tuple[int, int, int], blocks: list[int], width_ratio: float = 0.5,
                 min_width: int = 0, attention: bool = False, output_projection: bool = False) -> None:
        super().__init__()
        coarse_to_fine = list(reversed(channels))
        self.stages = nn.ModuleList()
        self.attentions = nn.ModuleList()
        self.projections = nn.ModuleList()
        previous = in_channels
        for out_channels, count in zip(coarse_to_fine, blocks, strict=True):
            width = max(min_width, int(out_channels * width_ratio))
            layers = [DecoderBottleneck(previous, width, out_channels, upsample=True)]
            layers += [DecoderBottleneck(out_channels, width, out_channels) for _ in range(count - 1)]
            self.stages.append(nn.Sequential(*layers))
            self.attentions.append(CoordinateAttention(out_channels) if attention else nn.Identity())
            self.projections.append(nn.Conv2d(out_channels, out_channels, 1) if output_projection else nn.Identity())
            previous = out_channels

    def forward(self, z: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        x = z
        for stage, attention, projection in zip(self.stages, self.attentions, self.projections):
            x = attention(stage(x))
            outputs.append(projection(x))
        return outputs[::-1]
