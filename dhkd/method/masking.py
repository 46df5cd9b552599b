"""Corruptions for the self-supervised masking stage (stage 2).

The KBS 2023 paper trains in two stages; in the second the student must reproduce the
teacher's features of a clean image ``x`` while the bottleneck sees the teacher's features of
a corrupted ``x~``. This kit's interpretation (docs/method.md, addition 4): regions shaped by
Perlin noise or rectangles are filled with content cut from another normal training image or
with noise. Everything is batched tensor work on the images' own device, driven by one
``torch.Generator`` so that a resumed run draws the same corruptions.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from dhkd.method.size import Size, pair

#: The shapes of the masked regions and what fills them (masking.shape and masking.fill take these).
SHAPES = ("perlin", "rect", "mixed", "crack", "all")
FILLS = ("image", "noise", "mixed")


def _either(choices: tuple[str, ...]) -> str:
    """``a, b or c``: the allowed values in an error message."""
    return f"{', '.join(choices[:-1])} or {choices[-1]}"


def _uniform(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) drawn on the generator's device, then moved (CPU generators stay portable)."""
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def perlin_noise(batch: int, size: Size, cells: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """2-D Perlin gradient noise ``(batch, H, W)`` with ``cells`` lattice cells along the longer side.

    A rectangle is cut from the noise of the square on its longer side, so blobs stay round.
    """
    height, width = pair(size)
    side = max(height, width)
    return _square_perlin(batch, side, cells, generator, device)[:, :height, :width]


def _square_perlin(batch: int, size: int, cells: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    angles = 2 * math.pi * _uniform((batch, cells + 1, cells + 1), generator, device)
    gradients = torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1)  # (B, c+1, c+1, 2)
    coords = torch.linspace(0, cells, size + 1, device=device)[:-1]
    cell = coords.floor().long().clamp(max=cells - 1)
    frac = coords - cell  # position inside the cell
    fy, fx = frac.view(size, 1), frac.view(1, size)
    iy, ix = cell.view(size, 1), cell.view(1, size)

    def corner(dy: int, dx: int) -> torch.Tensor:
        g = gradients[:, iy + dy, ix + dx]  # (B, size, size, 2)
        return g[..., 0] * (fy - dy) + g[..., 1] * (fx - dx)

    def fade(t: torch.Tensor) -> torch.Tensor:
        return 6 * t**5 - 15 * t**4 + 10 * t**3

    wy, wx = fade(fy), fade(fx)
    top = torch.lerp(corner(0, 0), corner(0, 1), wx)
    bottom = torch.lerp(corner(1, 0), corner(1, 1), wx)
    return torch.lerp(top, bottom, wy)


def perlin_masks(batch: int, size: Size, ratio: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Blob-shaped masks ``(batch, H, W)`` covering about ``ratio`` of each image.

    Thresholding each noise field at its own ``1 - ratio`` quantile fixes the area whatever
    the noise's contrast; the lattice is drawn from {2, 4, 8} cells for varied blob sizes.
    """
    cells = 2 ** int(1 + 3 * float(_uniform((1,), generator, device)))
    cells = min(cells, 8)
    noise = perlin_noise(batch, size, cells, generator, device)
    cutoff = torch.quantile(noise.flatten(1), 1.0 - ratio, dim=1).view(batch, 1, 1)
    return noise > cutoff


def rect_masks(batch: int, size: Size, ratio: float, generator: torch.Generator, device: torch.device,
               count: int = 3) -> torch.Tensor:
    """Union of ``count`` random rectangles per image ``(batch, H, W)``, each of about ``ratio / count``
    of the area (their sides are drawn as shares of the image's sides)."""
    area = ratio / count
    aspect = torch.exp((_uniform((batch, count), generator, device) - 0.5) * 2 * math.log(3.0))
    height = (area * aspect).sqrt().clamp(max=1.0)
    width = (area / aspect).sqrt().clamp(max=1.0)
    top = _uniform((batch, count), generator, device) * (1 - height)
    left = _uniform((batch, count), generator, device) * (1 - width)
    rows, columns = pair(size)
    grid_y = ((torch.arange(rows, device=device) + 0.5) / rows).view(1, 1, rows)
    grid_x = ((torch.arange(columns, device=device) + 0.5) / columns).view(1, 1, columns)
    inside_y = (grid_y >= top.unsqueeze(-1)) & (grid_y < (top + height).unsqueeze(-1))
    inside_x = (grid_x >= left.unsqueeze(-1)) & (grid_x < (left + width).unsqueeze(-1))
    boxes = inside_y.unsqueeze(-1) & inside_x.unsqueeze(-2)  # (B, count, H, W)
    return boxes.any(dim=1)


def crack_masks(batch: int, size: Size, ratio: float, generator: torch.Generator, device: torch.device,
                strokes: int = 4, segments: int = 6) -> torch.Tensor:
    """Thin, winding masks ``(batch, H, W)`` shaped like cracks and scratches, covering ``ratio``.

    Why: blobs and boxes teach the student to repair compact regions, but many real defects
    (MTD's cracks and frays, MVTec's scratches) are long and thin. Each image gets ``strokes``
    random walks of ``segments`` straight steps; a pixel is masked when it is among the
    ``ratio`` share nearest to a walk, so the area is fixed and the width follows from it
    (4 walks at ratio 0.2 are bands of about 5 % of the side). Lengths are shares of the longer
    side, so a walk turns alike along both sides of a rectangle.
    """
    height, width = pair(size)
    extent = torch.tensor([height, width], device=device, dtype=torch.float32) / max(height, width)  # (y, x)
    count = strokes * segments
    start = _uniform((batch, strokes, 1, 2), generator, device) * extent
    heading = 2 * math.pi * _uniform((batch, strokes, 1), generator, device)
    turns = (_uniform((batch, strokes, segments), generator, device) - 0.5) * 1.2  # up to +-0.6 rad a step
    angles = heading + turns.cumsum(dim=-1)
    lengths = 0.05 + 0.1 * _uniform((batch, strokes, segments), generator, device)
    steps = torch.stack([angles.sin(), angles.cos()], dim=-1) * lengths.unsqueeze(-1)  # (B, K, M, 2) as (y, x)
    points = torch.cat([start, start + steps.cumsum(dim=2)], dim=2)
    a = points[:, :, :-1].reshape(batch, count, 1, 2)
    ab = points[:, :, 1:].reshape(batch, count, 1, 2) - a
    # the distance field is smooth: computed on a grid of at most 64 along the longer side and
    # upsampled, 16x cheaper at 256
    side = min(max(height, width), 64)
    coarse_h, coarse_w = max(1, round(side * float(extent[0]))), max(1, round(side * float(extent[1])))
    grid_y = (torch.arange(coarse_h, device=device, dtype=torch.float32) + 0.5) / coarse_h * extent[0]
    grid_x = (torch.arange(coarse_w, device=device, dtype=torch.float32) + 0.5) / coarse_w * extent[1]
    pixels = torch.stack(torch.meshgrid(grid_y, grid_x, indexing="ij"), dim=-1).view(1, 1, coarse_h * coarse_w, 2)
    along = (((pixels - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-12)).clamp(0, 1)
    distance = (pixels - a - along.unsqueeze(-1) * ab).norm(dim=-1).amin(dim=1).view(batch, 1, coarse_h, coarse_w)
    distance = F.interpolate(distance, size=(height, width), mode="bilinear", align_corners=False).flatten(1)
    cutoff = torch.quantile(distance, ratio, dim=1).view(batch, 1)
    return (distance <= cutoff).view(batch, height, width)


def corrupt(images: torch.Tensor, generator: torch.Generator, donors: torch.Tensor | None = None, *,
            ratio: float, shape: str, fill: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Corrupt a batch of normalised images ``(B, 3, H, W)``; returns ``(corrupted, masks)``.

    Content for the "image" fill is taken at the same place from ``donors`` (normalised, same
    shape; row i from another normal image than row i of ``images``, so the student cannot copy
    it; training passes :func:`donor_indices`). Without ``donors`` the next image in the batch
    gives it, which needs two images or more. The "noise" fill is Gaussian noise in the
    normalised space.

    ``shape``: perlin, rect, crack, mixed (perlin or rect, a coin flip per image) or all (perlin,
    rect or crack, a third each); ``fill``: image, noise or mixed (a coin flip per image);
    ``ratio``: the share of the image area masked.
    """
    if fill not in FILLS:
        raise ValueError(f"unknown fill {fill!r}: {_either(FILLS)}")
    batch, _, height, width = images.shape
    device = images.device
    if donors is None:
        if batch < 2 and fill != "noise":
            raise ValueError("the 'image' fill of one image needs a donor image (it would be filled with itself): "
                             "pass donors=, corrupt two images or more, or use the noise fill")
        donors = images.roll(1, dims=0)
    masks = region_masks(batch, (height, width), shape, ratio, generator, device)
    noise = torch.randn(images.shape, generator=generator, device=generator.device).to(device)
    use_image = _choose(batch, fill == "image", fill == "noise", generator, device)
    fill = torch.where(use_image.view(batch, 1, 1, 1), donors, noise)
    corrupted = torch.where(masks.unsqueeze(1), fill, images)
    return corrupted, masks


def donor_indices(indices: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """For each training-image index in ``indices``, another index of ``range(count)``, drawn
    uniformly from the generator (so a resumed run draws the same). Needs ``count >= 2``."""
    if count < 2:
        raise ValueError(f"a donor image needs two training images or more, got {count}")
    draws = (_uniform((len(indices),), generator, indices.device) * (count - 1)).long().clamp(max=count - 2)
    return draws + (draws >= indices).long()  # skip the image itself: uniform over the others


def region_masks(batch: int, size: Size, shape: str, ratio: float, generator: torch.Generator,
                 device: torch.device) -> torch.Tensor:
    """bool ``(B, H, W)``: the regions to corrupt, of ``shape`` (see :func:`corrupt`)."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}: {_either(SHAPES)}")
    if shape == "crack":
        return crack_masks(batch, size, ratio, generator, device)
    perlin = perlin_masks(batch, size, ratio, generator, device)
    rects = rect_masks(batch, size, ratio, generator, device)
    use_perlin = _choose(batch, shape == "perlin", shape == "rect", generator, device)
    masks = torch.where(use_perlin.view(batch, 1, 1), perlin, rects)
    if shape != "all":
        return masks
    use_crack = _uniform((batch,), generator, device) < 1 / 3  # then perlin, rect, crack a third each
    return torch.where(use_crack.view(batch, 1, 1), crack_masks(batch, size, ratio, generator, device), masks)


def _choose(batch: int, always: bool, never: bool, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Per-image coin flips, or all True / all False when the config fixes the choice."""
    coins = _uniform((batch,), generator, device) < 0.5  # drawn always, so the stream does not depend on the choice
    if always:
        return torch.ones_like(coins)
    if never:
        return torch.zeros_like(coins)
    return coins
