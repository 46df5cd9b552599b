"""The `rd` and `paper` profiles are RD4AD (Deng & Li, CVPR 2022, github.com/hq-deng/RD4AD):
its settings, its initialisation, its parameter count, fp32, and a stage-2 donor that is
never the image itself."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dhkd.config import MaskingConfig, TrainConfig, load_config
from dhkd.method.masking import corrupt, donor_indices
from dhkd.method import CoordinateAttention, Student, TEACHER_CHANNELS
from dhkd.run.build import build_student, masking_arguments

# RD4AD's main.py: epochs 200, lr 0.005, Adam betas (0.5, 0.999), batch 16, image 256,
# setup_seed(111), loss_fucntion (cosine of each scale flattened per image); test.py blurs
# the map with gaussian_filter(sigma=4); no autocast anywhere (fp32).
RD4AD_SETTINGS = {
    "train.epochs": 200, "train.lr": 0.005, "train.lr_schedule": "constant", "train.betas": [0.5, 0.999],
    "train.batch_size": 16, "train.seed": 111, "train.loss": "flatten", "train.amp": False,
    "data.image_size": 256, "eval.blur_sigma": 4.0,
    "model.teacher.name": "wide_resnet50_2", "model.teacher.weights": "imagenet",
    # de_wide_resnet50_2: [3, 4, 6] blocks, width = half the stage's channels; BN_layer: 3 blocks, 1024 wide
    "model.decoder.blocks": [3, 4, 6], "model.decoder.width_ratio": 0.5, "model.decoder.min_width": 0,
    "model.bottleneck_blocks": 3, "model.bottleneck_width": 1.0,
}


def _setting(config, dotted: str):
    node = config
    for key in dotted.split("."):
        node = getattr(node, key)
    return node


@pytest.mark.parametrize("profile", ["rd", "paper"])
def test_rd_and_paper_profiles_hold_every_rd4ad_setting(profile: str) -> None:
    config = load_config(profile)
    assert {key: _setting(config, key) for key in RD4AD_SETTINGS} == RD4AD_SETTINGS


def test_rd_profile_has_every_addition_off() -> None:
    config = load_config("rd")
    assert not any([config.model.fusion.enabled, config.model.attention.enabled, config.model.memory.enabled,
                    config.masking.enabled])


def test_mixed_precision_is_off_unless_asked_for() -> None:
    assert TrainConfig().amp is False
    assert all(not load_config(profile).train.amp for profile in ("paper", "rd", "offline", "smoke"))


def _rd_student(**model_overrides) -> Student:
    config = load_config("rd", [f"model.{key}={value}" for key, value in model_overrides.items()])
    torch.manual_seed(0)
    return build_student(TEACHER_CHANNELS["wide_resnet50_2"], config.model)


def _kaiming_fan_out_std(conv: nn.Conv2d) -> float:
    out_channels, _, kh, kw = conv.weight.shape
    return math.sqrt(2.0 / (out_channels * kh * kw))


def test_bottleneck_and_decoder_convs_start_from_rd4ads_kaiming_fan_out() -> None:
    """Every ``nn.Conv2d`` ~ N(0, 2 / fan_out); BatchNorm weight 1, bias 0; the transposed
    convolutions keep torch's default (RD4AD's loop matches ``nn.Conv2d`` only)."""
    student = _rd_student(**{"bottleneck_blocks": 1, "decoder.blocks": "[1, 1, 1]"})
    convs = [m for part in (student.bottleneck, student.decoder) for m in part.modules() if type(m) is nn.Conv2d]
    assert len(convs) > 10
    for conv in convs:
        expected = _kaiming_fan_out_std(conv)
        assert conv.weight.std().item() == pytest.approx(expected, rel=0.1 if conv.weight.numel() > 5000 else 0.3)
    norms = [m for part in (student.bottleneck, student.decoder) for m in part.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in norms)
    for deconv in (m for m in student.decoder.modules() if isinstance(m, nn.ConvTranspose2d)):
        fan_in = deconv.weight.shape[1] * deconv.weight[0, 0].numel()  # torch's fan_in of a transposed conv
        default_std = 1.0 / math.sqrt(3.0 * fan_in)  # kaiming_uniform_(a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        assert deconv.weight.std().item() == pytest.approx(default_std, rel=0.1)


def test_attention_keeps_torchs_default_init() -> None:
    student = _rd_student(**{"bottleneck_blocks": 1, "decoder.blocks": "[1, 1, 1]", "attention.enabled": "true"})
    attention = next(m for m in student.bottleneck.modules() if isinstance(m, CoordinateAttention))
    conv = attention.to_h
    bound = 1.0 / math.sqrt(conv.weight.shape[1])  # kaiming_uniform_(a=sqrt(5)) of a 1x1 conv
    assert conv.weight.abs().max().item() <= bound
    assert conv.weight.std().item() == pytest.approx(bound / math.sqrt(3.0), rel=0.1)


def _conv(c_in: int, c_out: int, k: int) -> int:
    return c_in * c_out * k * k


def _bn(c: int) -> int:
    return 2 * c  # weight and bias


def _rd4ad_block(c_in: int, width: int, c_out: int, middle_kernel: int, shortcut_kernel: int | None) -> int:
    """RD4AD's (de)bottleneck block: 1x1, 3x3 (or 2x2 transposed), 1x1, each with BN; plus the shortcut."""
    count = _conv(c_in, width, 1) + _bn(width) + _conv(width, width, middle_kernel) + _bn(width)
    count += _conv(width, c_out, 1) + _bn(c_out)
    if shortcut_kernel is not None:
        count += _conv(c_in, c_out, shortcut_kernel) + _bn(c_out)
    return count


def rd4ad_parameter_count() -> int:
    """Bottleneck + decoder parameters of RD4AD's ``wide_resnet50_2`` (resnet.py ``BN_layer(AttnBottleneck, 3,
    width_per_group=128)``) and ``de_wide_resnet50_2`` (de_resnet.py), re-counted from their source.

    ``BN_layer`` also declares ``conv4`` (1x1, 4096 -> 2048) and ``bn4``, which its forward never
    uses: 8,392,704 + 4,096 parameters that train nothing and are left out here and in the kit.
    """
    bn_layer = _conv(256, 512, 3) + _bn(512) + _conv(512, 1024, 3) + _bn(1024)  # conv1/bn1, conv2/bn2: layer 1, two halvings
    bn_layer += _conv(512, 1024, 3) + _bn(1024)  # conv3/bn3: layer 2, one halving
    bn_layer += _rd4ad_block(3 * 1024, 1024, 2048, 3, shortcut_kernel=1)  # stride 2, conv1x1 downsample
    bn_layer += 2 * _rd4ad_block(2048, 1024, 2048, 3, shortcut_kernel=None)
    decoder = 0
    for c_in, width, c_out, blocks in [(2048, 512, 1024, 3), (1024, 256, 512, 4), (512, 128, 256, 6)]:
        decoder += _rd4ad_block(c_in, width, c_out, 2, shortcut_kernel=2)  # deconv2x2 in the block and the shortcut
        decoder += (blocks - 1) * _rd4ad_block(c_out, width, c_out, 3, shortcut_kernel=None)
    return bn_layer + decoder


def test_bottleneck_and_decoder_have_rd4ads_parameter_count() -> None:
    student = _rd_student()
    kit = sum(p.numel() for part in (student.bottleneck, student.decoder) for p in part.parameters())
    assert rd4ad_parameter_count() == 83_802_624  # as printed by this function; kept to catch a change in it
    assert kit == rd4ad_parameter_count()


def test_donors_are_never_the_image_itself_and_cover_the_others() -> None:
    generator = torch.Generator().manual_seed(0)
    indices = torch.tensor([0, 1, 2, 3, 4] * 200)
    donors = donor_indices(indices, 5, generator)
    assert not torch.any(donors == indices)
    assert set(donors.tolist()) == set(range(5))
    again = donor_indices(indices, 5, torch.Generator().manual_seed(0))
    assert torch.equal(donors, again)


def test_a_batch_of_one_is_filled_from_its_donor_not_itself() -> None:
    image = torch.zeros(1, 3, 32, 32)
    donor = torch.ones(1, 3, 32, 32)
    corrupted, masks = corrupt(image, torch.Generator().manual_seed(0), donor, **masking_arguments(MaskingConfig(fill="image")))
    assert masks.any()
    assert torch.all(corrupted[:, :, masks[0]] == 1) and torch.all(corrupted[:, :, ~masks[0]] == 0)


def test_a_batch_of_one_without_a_donor_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="donor"):
        corrupt(torch.zeros(1, 3, 32, 32), torch.Generator().manual_seed(0), **masking_arguments(MaskingConfig(fill="image")))
