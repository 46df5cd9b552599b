"""Bringing an image of any size to the network's input shape: squeezed, or with its aspect kept.

The network sees one shape, ``height x width`` (``data.image_size``: one number is a square).
How an image of another size gets there is ``data.resize``:

- **squeeze** (RD4AD's ``transforms.Resize((H, W))``): the image is resized to H x W whatever its
  proportions, so a 2.5 : 1 strip put into a square is shrunk 2.5 times more along its length
  than across it;
- **keep_aspect**: the image is scaled by one factor, the largest that fits it inside H x W,
  and centred; the rest of the input is *padding*, filled by repeating the image's edge pixels
  (a black border would be an edge the teacher reacts to). The padding is not part of the image:
  :meth:`Fit.box` says where the content lies, and the anomaly maps and pixel metrics leave the
  padding out (``valid`` masks).

Both resize with PIL's bilinear filter (antialiased when shrinking), masks too (their 0..255
levels, then cut at the middle grey, as RD4AD does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image

from dhkd.ranges import Range

#: ``data.resize``'s choices (the configuration's declaration reads them from here).
RESIZE_MODES = ("squeeze", "keep_aspect")
# The network's input size: a multiple of 32, so that the decoder's upsampling from the stride-32
# bottleneck lands on the teacher's stride-4 grid. One number is a square; [H, W] is height, width.
# data.image_size and a data-set file's image_size both accept exactly this.
IMAGE_SIZE = Range(low=64, high=1024, multiple_of=32, length=2, single_too=True,
                   note="one number: a square; [H, W]: height and width")
#: Images whose aspects (width / height) spread more than this around their median are better
#: kept at their own aspect than squeezed (a suggestion of ``dhkd data folder``).
ASPECT_SPREAD = 1.1


@dataclass(frozen=True)
class Fit:
    """The input shape ``(height, width)`` and whether images keep their aspect inside it."""

    height: int
    width: int
    keep_aspect: bool = False

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def is_square(self) -> bool:
        return self.height == self.width

    def box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """Where an image of ``width x height`` pixels lies in the input: ``(top, left, h, w)``."""
        if not self.keep_aspect:
            return 0, 0, self.height, self.width
        scale = min(self.height / height, self.width / width)
        h = min(self.height, max(1, round(height * scale)))
        w = min(self.width, max(1, round(width * scale)))
        return (self.height - h) // 2, (self.width - w) // 2, h, w

    def image(self, img: Image.Image) -> np.ndarray:
        """An RGB (or L) PIL image -> uint8 ``(H, W, channels)`` (or ``(H, W)``) at the input shape."""
        top, left, h, w = self.box(*img.size)
        pixels = np.asarray(img.resize((w, h), Image.BILINEAR))
        return self._pad(pixels, top, left, "edge")

    def mask(self, levels: np.ndarray) -> np.ndarray:
        """A mask's uint8 0..255 levels ``(h0, w0)`` -> bool ``(H, W)``: resized, cut at > 127, padding False."""
        top, left, h, w = self.box(levels.shape[1], levels.shape[0])
        resized = np.asarray(Image.fromarray(levels).resize((w, h), Image.BILINEAR)) > 127
        return self._pad(resized, top, left, "constant")

    def valid(self, width: int, height: int) -> np.ndarray:
        """bool ``(H, W)``: True on the image, False on the padding."""
        top, left, h, w = self.box(width, height)
        inside = np.zeros(self.shape, dtype=bool)
        inside[top:top + h, left:left + w] = True
        return inside

    def _pad(self, pixels: np.ndarray, top: int, left: int, mode: str) -> np.ndarray:
        bottom, right = self.height - top - pixels.shape[0], self.width - left - pixels.shape[1]
        if not (top or left or bottom or right):
            return pixels
        widths = [(top, bottom), (left, right)] + [(0, 0)] * (pixels.ndim - 2)
        return np.pad(pixels, widths, mode=mode)  # type: ignore[call-overload]


def as_fit(size: int | Sequence[int] | Fit, keep_aspect: bool = False) -> Fit:
    """A :class:`Fit` from a side (a square), ``(height, width)``, or a Fit (returned as it is)."""
    if isinstance(size, Fit):
        return size
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        if size < 1:
            raise ValueError(f"an image size must be positive, got {size}")
        return Fit(int(size), int(size), keep_aspect)
    if (isinstance(size, (list, tuple)) and len(size) == 2
            and all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in size)):
        return Fit(int(size[0]), int(size[1]), keep_aspect)
    raise ValueError(f"an image size is one positive whole number (a square) or [height, width], got {size!r}")


def median_aspect(sizes: Sequence[tuple[int, int]]) -> float:
    """The median width / height of images given as ``(width, height)``."""
    return float(np.median([w / h for w, h in sizes])) if sizes else 1.0


def suggest_shape(sizes: Sequence[tuple[int, int]], area: int = 256 * 256, multiple: int = 32) -> tuple[tuple[int, int], str]:
    """An input ``(height, width)`` and a ``data.resize`` for images of these ``(width, height)``
    sizes: their median aspect at about ``area`` pixels, each side a multiple of ``multiple`` (what
    the model needs); keep_aspect when their aspects differ (the middle 90 % spread by more than
    :data:`ASPECT_SPREAD` around the median), else squeeze."""
    aspect = median_aspect(sizes)
    height = max(multiple, multiple * round((area / aspect) ** 0.5 / multiple))
    width = max(multiple, multiple * round((area * aspect) ** 0.5 / multiple))
    aspects = np.array([w / h for w, h in sizes]) if sizes else np.ones(1)
    low, high = np.quantile(aspects, [0.05, 0.95])
    varied = high / aspect > ASPECT_SPREAD or aspect / low > ASPECT_SPREAD
    return (height, width), "keep_aspect" if varied else "squeeze"


__all__ = ["Fit", "IMAGE_SIZE", "RESIZE_MODES", "as_fit", "median_aspect", "suggest_shape"]
