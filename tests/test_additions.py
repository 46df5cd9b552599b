"""The kit's interpretations that make DHKD's additions act: data-driven starts, placements, shapes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dhkd.config import load_config
from dhkd.errors import DhkdError
from dhkd.method.masking import crack_masks, region_masks
from dhkd.method import CoordinateAttention, MemoryBank, MutualMappingFusion
from dhkd.run.build import build_model
from dhkd.run.train import Trainer

CATEGORY = "nut"


def test_kmeans_puts_the_items_at_the_cluster_centres_of_the_embeddings() -> None:
    torch.manual_seed(0)
    centres = torch.tensor([[10.0, 0, 0, 0], [0, 5.0, 0, 0], [0, 0, -3.0, 1.0]])
    points = centres.repeat_interleave(40, dim=0) + 0.05 * torch.randn(120, 4)
    z = points.view(10, 3, 4, 4).permute(0, 3, 1, 2)  # (B, C=4, H=3, W=4): 120 vectors of 4 channels
    memory = MemoryBank(channels=4, items=3)
    memory.init_from_embeddings(z)
    found = sorted(memory.items.detach().tolist(), key=lambda item: max(range(4), key=lambda c: abs(item[c])))
    assert torch.allclose(torch.tensor(found), centres, atol=0.05)
    # each centre's own embeddings read out (nearly) themselves: the bank reproduces normal content
    readout = memory.readout(centres.view(3, 4, 1, 1))
    assert torch.allclose(readout.flatten(1), centres, atol=0.1)


def test_kmeans_needs_as_many_embeddings_as_items() -> None:
    with pytest.raises(ValueError, match="at least 5"):
        MemoryBank(channels=4, items=5).init_from_embeddings(torch.randn(1, 4, 2, 2))


def test_fusion_with_its_own_scale_in_the_softmax_keeps_the_chosen_share() -> None:
    channels = (8, 16, 32)
    fusion = MutualMappingFusion(channels, include_self=True, self_logit=float(torch.log(torch.tensor(4.0))))
    weights = fusion.mixing_weights()
    assert torch.allclose(weights.diagonal(), torch.full((3,), 2 / 3))
    assert torch.allclose(weights.sum(dim=1), torch.ones(3))
    features = [torch.randn(2, c, 16 // 2**i, 16 // 2**i) for i, c in enumerate(channels)]
    fused = fusion(features)
    for s in range(3):
        assert torch.allclose(fused[s], 2 / 3 * features[s] + fusion.borrowed(features, s))
    assert torch.equal(MutualMappingFusion(channels).mixing_weights().diagonal(), torch.zeros(3))


def test_matched_scales_make_every_borrowed_term_as_large_as_its_target() -> None:
    torch.manual_seed(0)
    channels = (8, 16, 32)
    features = [50 * torch.rand(4, c, 16 // 2**i, 16 // 2**i) for i, c in enumerate(channels)]
    fusion = MutualMappingFusion(channels).train()
    rms = lambda x: float(x.detach().pow(2).mean().sqrt())  # noqa: E731
    before = rms(fusion.mappings["0to2"](features[0])) / rms(features[2])
    fusion.match_scales(features)
    for name, mapping in fusion.mappings.items():
        s = int(name[-1])
        assert rms(mapping(features[int(name[0])])) == pytest.approx(rms(features[s]), rel=1e-3)
    assert before < 0.1  # unmatched, a borrowed term is a few % of the teacher's scale


@pytest.mark.parametrize("placement, in_ocbe, in_decoder", [("both", True, True), ("ocbe", True, False),
                                                              ("decoder", False, True)])
def test_attention_placement(placement: str, in_ocbe: bool, in_decoder: bool) -> None:
    config = load_config("smoke", [f"model.attention.placement={placement}"]).model
    student = build_model(config, 0).student
    assert isinstance(student.bottleneck.attention, CoordinateAttention) == in_ocbe
    assert sum(isinstance(m, CoordinateAttention) for m in student.decoder.modules()) == (3 if in_decoder else 0)


def test_unknown_attention_placement_is_a_clear_error() -> None:
    with pytest.raises(DhkdError, match="placement"):
        load_config("smoke", ["model.attention.placement=everywhere"])


@pytest.mark.parametrize("ratio", [0.05, 0.2])
def test_crack_masks_cover_the_ratio_in_thin_bands(ratio: float) -> None:
    masks = crack_masks(8, 128, ratio, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert masks.dtype == torch.bool and masks.shape == (8, 128, 128)
    assert torch.allclose(masks.float().mean(dim=(1, 2)), torch.full((8,), ratio), atol=0.01)
    # thin: far more boundary per masked pixel than a blob (a disc of the same area has ~2 sqrt(pi A))
    edges = (masks[:, 1:, :] != masks[:, :-1, :]).sum(dim=(1, 2)) + (masks[:, :, 1:] != masks[:, :, :-1]).sum(dim=(1, 2))
    disc_perimeter = 2 * (torch.pi * ratio * 128**2) ** 0.5
    assert float(edges.float().mean()) > 2.5 * disc_perimeter


def test_the_all_shape_draws_cracks_as_well_as_blobs_and_boxes() -> None:
    generator = torch.Generator().manual_seed(0)
    masks = region_masks(32, 64, "all", 0.2, generator, torch.device("cpu"))
    mixed = region_masks(32, 64, "mixed", 0.2, torch.Generator().manual_seed(0), torch.device("cpu"))
    covered = masks.float().mean(dim=(1, 2))
    assert float(covered.min()) > 0.08 and float(covered.max()) < 0.21  # overlapping boxes cover a little less
    assert not torch.equal(masks, mixed)


def _share(trainer: Trainer) -> float:
    """The read-out's share of ``z + read-out`` on the training images, as training sees them."""
    with trainer._batch_statistics():
        z = trainer.student.bottleneck_embedding(trainer._clean_features(torch.arange(len(trainer.images))))
        readout = trainer.student.memory.readout(z)
    return float(readout.norm() / (z + readout).norm())


@pytest.mark.slow
def test_training_starts_the_memory_from_kmeans_of_the_training_embeddings(toy_root: Path, tmp_path: Path) -> None:
    shares = {}
    for init in ("random", "kmeans"):
        config = load_config("smoke", [f"model.memory.init={init}", "model.memory.residual=true"])
        trainer = Trainer(config, toy_root, CATEGORY, tmp_path / init, device="cpu", progress=False)
        trainer.prepare()
        buffers = {k: v.clone() for k, v in trainer.student.named_buffers()}
        trainer._init_from_data(epoch=0)
        assert all(torch.equal(v, buffers[k]) for k, v in trainer.student.named_buffers())  # BN stats untouched
        shares[init] = _share(trainer)
    assert shares["random"] < 0.1 < 0.3 < shares["kmeans"]


def test_kmeans_waits_for_its_epoch_and_unknown_inits_are_clear(toy_root: Path, tmp_path: Path) -> None:
    config = load_config("smoke", ["model.memory.init=kmeans", "model.memory.init_epoch=1"])
    trainer = Trainer(config, toy_root, CATEGORY, tmp_path / "late", device="cpu", progress=False)
    trainer.prepare()
    items = trainer.student.memory.items.detach().clone()
    trainer._init_from_data(epoch=0)
    assert torch.equal(trainer.student.memory.items, items)
    trainer._init_from_data(epoch=1)
    assert not torch.equal(trainer.student.memory.items, items)
    trainer.config.model.memory.items = 1000  # more than the 8 toy images' 32 embedding vectors
    with pytest.raises(DhkdError, match="at least 1000 embedding vectors"):
        trainer._init_from_data(epoch=1)
    with pytest.raises(DhkdError, match="memory.init"):  # the configuration refuses it before any training
        load_config("smoke", ["model.memory.init=pca"])


def test_training_matches_the_fusion_scales_once_at_the_start(toy_root: Path, tmp_path: Path) -> None:
    config = load_config("smoke", ["model.fusion.match_scale=true"])
    trainer = Trainer(config, toy_root, CATEGORY, tmp_path / "fusion", device="cpu", progress=False)
    trainer.prepare()
    weights = {k: v.clone() for k, v in trainer.student.fusion.state_dict().items()}
    trainer._init_from_data(epoch=1)
    assert all(torch.equal(v, weights[k]) for k, v in trainer.student.fusion.state_dict().items())
    trainer._init_from_data(epoch=0)
    assert not all(torch.equal(v, weights[k]) for k, v in trainer.student.fusion.state_dict().items())
