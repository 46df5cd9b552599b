"""Model components: shapes, the frozen teacher, switchable additions."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import pytest
import torch

from dhkd.config import load_config
from dhkd.method import (TEACHER_CHANNELS, CoordinateAttention, Decoder, MemoryBank, MutualMappingFusion,
                         OneClassBottleneck, Teacher)
from dhkd.run.build import build_model


@pytest.mark.parametrize("name", sorted(TEACHER_CHANNELS))
def test_teacher_feature_shapes(name: str) -> None:
    teacher = Teacher(name, weights="none")
    features = teacher(torch.randn(1, 3, 64, 64))
    expected = [(1, c, 64 // s, 64 // s) for c, s in zip(TEACHER_CHANNELS[name], (4, 8, 16))]
    assert [tuple(f.shape) for f in features] == expected


def test_efficientnet_teacher_at_256_matches_method_md() -> None:
    features = Teacher("efficientnet_lite0", weights="none")(torch.randn(1, 3, 256, 256))
    assert [tuple(f.shape[1:]) for f in features] == [(24, 64, 64), (40, 32, 32), (112, 16, 16)]


def test_pretrained_offline_teacher_loads_from_the_wheel() -> None:
    teacher = Teacher("efficientnet_lite0", weights="imagenet")
    random = Teacher("efficientnet_lite0", weights="none")
    first = next(teacher.parameters())
    assert not torch.equal(first, next(random.parameters()))


def test_teacher_stays_frozen_and_in_eval_mode() -> None:
    model = build_model(load_config("smoke").model, 0)
    model.train()
    assert not model.teacher.training
    assert all(not m.training for m in model.teacher.modules())
    assert all(not p.requires_grad for p in model.teacher.parameters())
    assert model.student.training
    before = [b.clone() for b in model.teacher.buffers()]
    model(torch.randn(2, 3, 64, 64))
    assert all(torch.equal(a, b) for a, b in zip(before, model.teacher.buffers()))


def test_only_the_student_gets_gradients() -> None:
    model = build_model(load_config("smoke").model, 0)
    teacher_features, student_features = model(torch.randn(2, 3, 64, 64))
    assert not any(f.requires_grad for f in teacher_features)
    sum(f.sum() for f in student_features).backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    assert any(p.grad is not None for p in model.student.parameters())


def test_wide_resnet_bottleneck_and_decoder_are_rd4ad_shapes() -> None:
    channels = TEACHER_CHANNELS["wide_resnet50_2"]
    features = [torch.randn(1, c, 64 // 2**i, 64 // 2**i) for i, c in enumerate(channels)]
    bottleneck = OneClassBottleneck(channels)
    z = bottleneck(features)
    assert tuple(z.shape) == (1, 2048, 8, 8)
    outputs = Decoder(2048, channels, [3, 4, 6])(z)
    assert [tuple(o.shape) for o in outputs] == [tuple(f.shape) for f in features]


def test_bottleneck_width_half_is_anomalibs_ocbe() -> None:
    """``model.bottleneck_width=0.5`` builds anomalib's OCBE (512 wide inside, 2048 out), the
    like-for-like setting for ``dhkd bench --compare anomalib``; 1.0 is RD4AD's (1024 wide)."""
    channels = TEACHER_CHANNELS["wide_resnet50_2"]
    features = [torch.randn(1, c, 64 // 2**i, 64 // 2**i) for i, c in enumerate(channels)]
    for ratio, width in [(1.0, 1024), (0.5, 512)]:
        bottleneck = OneClassBottleneck(channels, width_ratio=ratio)
        assert tuple(bottleneck(features).shape) == (1, 2048, 8, 8)
        assert [block.conv2.out_channels for block in bottleneck.embed] == [width] * 3
    if importlib.util.find_spec("anomalib") is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from anomalib.models.image.reverse_distillation.components import get_bottleneck_layer
        theirs = get_bottleneck_layer("wide_resnet50_2")
        unused = {"conv4", "bn4"}  # defined in RD4AD's and anomalib's OCBE, never called in forward
        count = sum(p.numel() for name, p in theirs.named_parameters() if name.split(".")[0] not in unused)
        assert count == sum(p.numel() for p in OneClassBottleneck(channels, width_ratio=0.5).parameters())
    with pytest.raises(ValueError, match="cannot be built"):
        OneClassBottleneck(channels, width_ratio=0.3)


def test_an_unbuildable_bottleneck_width_is_a_user_error_naming_the_setting() -> None:
    from dhkd.errors import DhkdError

    config = load_config("rd", ["model.teacher.weights=none", "model.bottleneck_width=0.3"])
    with pytest.raises(DhkdError, match=r"model.bottleneck_width=0.3: a bottleneck width of 307 cannot be built") as error:
        build_model(config.model, 0)
    assert "use 1.0 (RD4AD) or 0.5" in str(error.value)


def test_fusion_keeps_shapes_and_weights_are_a_mixture() -> None:
    channels = (8, 16, 32)
    features = [torch.randn(2, c, 32 // 2**i, 32 // 2**i) for i, c in enumerate(channels)]
    fusion = MutualMappingFusion(channels)
    fused = fusion(features)
    assert [f.shape for f in fused] == [f.shape for f in features]
    weights = fusion.mixing_weights()
    assert torch.allclose(weights.sum(dim=1), torch.ones(3))
    assert torch.all(weights.diagonal() == 0)


def test_coordinate_attention_scales_each_row_and_column() -> None:
    attention = CoordinateAttention(16)
    x = torch.randn(2, 16, 8, 12)
    a_h, a_w = attention.attention(x)
    assert a_h.shape == (2, 16, 8, 1) and a_w.shape == (2, 16, 1, 12)
    assert torch.allclose(attention(x), x * a_h * a_w)
    assert attention.squeeze[0].out_channels == 8  # mip = max(8, C // 32)


def test_memory_read_out_is_a_sparse_mixture_of_items() -> None:
    memory = MemoryBank(channels=16, items=10)
    z = torch.randn(2, 16, 4, 4)
    weights = memory.address(z)
    assert weights.shape == (2, 4, 4, 10)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 4, 4))
    assert torch.all((weights == 0) | (weights >= 0))
    readout = memory(z)
    expected = torch.einsum("bhwn,nc->bchw", weights, memory.items)
    assert torch.allclose(readout, expected, atol=1e-6)
    # an item itself is read back as (nearly) itself
    item = memory.items[3].detach().view(1, 16, 1, 1)
    assert memory.address(item)[0, 0, 0].argmax() == 3


@pytest.mark.parametrize("switch", ["fusion", "attention", "memory"])
def test_each_addition_switches_off_independently(switch: str) -> None:
    on = build_model(load_config("smoke").model, 0)
    off = build_model(load_config("smoke", [f"model.{switch}.enabled=false"]).model, 0)
    count = lambda m, kind: sum(isinstance(x, kind) for x in m.modules())  # noqa: E731
    kind = {"fusion": MutualMappingFusion, "attention": CoordinateAttention, "memory": MemoryBank}[switch]
    assert count(on, kind) > 0 and count(off, kind) == 0
    others = {"fusion", "attention", "memory"} - {switch}
    for other in others:
        other_kind = {"fusion": MutualMappingFusion, "attention": CoordinateAttention, "memory": MemoryBank}[other]
        assert count(off, other_kind) == count(on, other_kind)


def test_rd_profile_is_plain_reverse_distillation() -> None:
    config = load_config("rd", ["model.teacher.weights=none"])
    model = build_model(config.model, 0)
    assert model.student.fusion is None and model.student.memory is None
    assert not any(isinstance(m, CoordinateAttention) for m in model.modules())
    assert not config.masking.enabled


def test_output_projection_follows_the_teacher() -> None:
    effnet = build_model(load_config("smoke").model, 0)
    assert all(isinstance(p, torch.nn.Conv2d) for p in effnet.student.decoder.projections)
    resnet = build_model(load_config("smoke", ["model.teacher.name=resnet18"]).model, 0)
    assert all(isinstance(p, torch.nn.Identity) for p in resnet.student.decoder.projections)


def test_training_step_copies_no_weight_gradient_between_layouts(tmp_path: Path) -> None:
    """Channels-last activations give weight gradients in channels-last layout; the weights are
    channels-last too (``set_memory_format``), so no gradient is copied into another layout."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from dhkd.run.train import Trainer

    trainer = Trainer(load_config("smoke"), ".", "bench", tmp_path / "run", device="cpu", progress=False)
    trainer.prepare(images=torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8))
    weights = {tuple(p.shape) for p in trainer.student.parameters() if p.dim() == 4 and p.shape[-1] > 1}
    copied: list[tuple[int, ...]] = []

    class CopiesOfWeights(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten.copy_.default and tuple(args[0].shape) in weights:
                copied.append(tuple(args[0].shape))
            return func(*args, **(kwargs or {}))

    assert weights  # 3x3 convolutions, whose layouts differ (a 1x1 weight is the same in both)
    with CopiesOfWeights():
        trainer.train_step(torch.arange(4), 1)
    assert copied == []
