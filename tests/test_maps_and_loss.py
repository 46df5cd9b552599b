"""Loss, anomaly maps, Gaussian blur and the stage-2 corruptions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from dhkd.method.anomaly_map import anomaly_map, gaussian_blur, image_scores, scale_maps
from dhkd.config import MaskingConfig
from dhkd.method.loss import distillation_loss, flat_cosine
from dhkd.method.masking import corrupt, perlin_masks, rect_masks
from dhkd.run.build import masking_arguments


def features(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, c, s, s, generator=g) for c, s in ((8, 16), (16, 8), (32, 4))]


@pytest.mark.parametrize("kind", ["flatten", "pixel"])
def test_loss_is_zero_for_identical_features(kind: str) -> None:
    f = features()
    assert float(distillation_loss(f, [x.clone() for x in f], kind)) == pytest.approx(0.0, abs=1e-6)


def test_loss_by_hand() -> None:
    t = [torch.tensor([[1.0, 0.0]]).view(1, 2, 1, 1)]
    s = [torch.tensor([[0.0, 1.0]]).view(1, 2, 1, 1)]
    assert float(distillation_loss(t, s)) == pytest.approx(1.0)  # orthogonal: 1 - 0
    assert float(distillation_loss(t, [-t[0]])) == pytest.approx(2.0)  # opposite: 1 - (-1)


def test_flat_cosine_is_torchs_cosine_of_flattened_features_in_any_memory_format() -> None:
    """RD4AD's official loss term, F.cosine_similarity(flatten, flatten), values and gradients."""
    torch.manual_seed(0)
    a = torch.randn(3, 8, 5, 7)
    b = torch.randn(3, 8, 5, 7)
    for layout in (torch.contiguous_format, torch.channels_last):
        b_mine = b.clone(memory_format=layout).requires_grad_()
        b_ref = b.clone().requires_grad_()
        mine = flat_cosine(a.contiguous(memory_format=layout), b_mine)
        ref = torch.nn.functional.cosine_similarity(a.flatten(1), b_ref.flatten(1), dim=1)
        torch.testing.assert_close(mine, ref)
        mine.sum().backward()
        ref.sum().backward()
        torch.testing.assert_close(b_mine.grad, b_ref.grad)


def test_flatten_and_pixel_losses_differ_in_general() -> None:
    a, b = features(0), features(1)
    assert float(distillation_loss(a, b, "flatten")) != pytest.approx(float(distillation_loss(a, b, "pixel")))


def test_unknown_loss_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="loss kind"):
        distillation_loss(features(), features(), "l2")


def test_anomaly_map_shape_range_and_zero_for_perfect_student() -> None:
    t, s = features(0), features(1)
    maps = anomaly_map(t, s, size=32, sigma=4)
    assert maps.shape == (2, 32, 32)
    assert float(maps.min()) >= 0 and float(maps.max()) <= 2 * 3  # 1 - cos in [0, 2], three scales
    assert float(anomaly_map(t, t, size=32).abs().max()) < 1e-5
    assert torch.equal(image_scores(maps), maps.flatten(1).max(dim=1).values)
    assert scale_maps(t, s, 32).shape == (2, 3, 32, 32)


def test_gaussian_blur_equals_scipy() -> None:
    x = torch.rand(3, 50, 41, dtype=torch.float64)
    for sigma in (1.0, 4.0, 13.0):  # 13: the kernel is wider than the image
        ref = np.stack([ndimage.gaussian_filter(a, sigma) for a in x.numpy()])
        assert np.abs(gaussian_blur(x, sigma).numpy() - ref).max() < 1e-10


@pytest.mark.parametrize("make", [perlin_masks, rect_masks])
def test_masks_cover_about_the_ratio(make) -> None:
    g = torch.Generator().manual_seed(0)
    masks = make(16, 64, 0.2, g, torch.device("cpu"))
    assert masks.dtype == torch.bool and masks.shape == (16, 64, 64)
    assert 0.05 < float(masks.float().mean()) < 0.35


def test_corrupt_changes_only_masked_pixels_and_is_repeatable() -> None:
    images = torch.randn(4, 3, 32, 32)
    config = MaskingConfig(ratio=0.3)
    a, masks = corrupt(images, torch.Generator().manual_seed(1), **masking_arguments(config))
    b, _ = corrupt(images, torch.Generator().manual_seed(1), **masking_arguments(config))
    assert torch.equal(a, b)
    unchanged = ~masks.unsqueeze(1).expand_as(images)
    assert torch.equal(a[unchanged], images[unchanged])
    assert not torch.equal(a, images)


def test_image_fill_copies_another_training_image() -> None:
    images = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 3, 16, 16).clone()
    corrupted, masks = corrupt(images, torch.Generator().manual_seed(0), **masking_arguments(MaskingConfig(fill="image")))
    for i in range(4):
        values = corrupted[i, 0][masks[i]]
        assert torch.all(values == (i - 1) % 4)
