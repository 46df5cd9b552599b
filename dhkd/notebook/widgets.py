"""Interactive views of a run's test predictions, for JupyterLab (ipywidgets + matplotlib).

- :func:`threshold_explorer`: a threshold slider (image or pixel level) that updates, live, the
  confusion counts, precision/recall/F1, the IoU of the predicted masks, the ROC point and a
  page of overlays (predicted region vs ground truth); presets for the F1-optimal threshold and
  for a false-positive rate on the good images.
- :func:`failure_browser`: false negatives, false positives and the worst localised images,
  sorted worst first, filterable by defect type, with next/previous.
- :func:`run_comparison`: two run folders (e.g. RD and DHKD) side by side on the same image.

Why it feels live on a CPU: everything a slider move needs is precomputed once (per-image
sorted pixels, see :mod:`dhkd.metrics.thresholds`; small thumbnails; max-pooled maps; the ROC curve
drawn once by matplotlib), and an update only counts with ``searchsorted``, draws contours
with numpy on the thumbnails and encodes JPEGs (a few ms; PNG encoding alone would take
40-90 ms on a busy 2-core CPU).

Everything shown lives in ``ipywidgets.HTML`` and ``ipywidgets.Image`` (JPEG bytes) values, so
a notebook saved with its widget state renders statically (nbconvert HTML) with the last
numbers and pictures.

Usage (in a notebook)::

    from dhkd.notebook import widgets
    from dhkd.data import load_split
    from dhkd.run.evaluate import load_predictions

    predictions = load_predictions("runs/bottle")            # written by `dhkd evaluate`
    test = load_split(data_root, "bottle", "test", 256)      # the same images, same order
    explorer = widgets.threshold_explorer(predictions, test.images, level="pixel")
    explorer                                                  # displays explorer.widget
    explorer.set_threshold(0.4); explorer.stats["f1"]         # or drive it from code
"""

from __future__ import annotations

import html
import io
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import ipywidgets as W
import numpy as np
import torch
import torch.nn.functional as F
from IPython.display import display
from PIL import Image, ImageDraw, ImageFont

from dhkd.errors import DhkdError
from dhkd.metrics.thresholds import Counts, ImageCounter, PixelCounter, ceil_float32
from dhkd.run.folder import METRICS_NAME

__all__ = [
    "threshold_explorer",
    "failure_browser",
    "run_comparison",
    "ThresholdExplorer",
    "FailureBrowser",
    "RunComparison",
    "FAILURE_KINDS",
]

FAILURE_KINDS = ("false negatives", "false positives", "worst localisation")
LEVELS = ("image", "pixel")

# Colours (RGB): distinguishable with the common colour-vision deficiencies.
PRED_RGB = np.array([255, 140, 0], np.uint8)  # predicted region: orange
GT_RGB = np.array([0, 200, 255], np.uint8)  # ground truth: sky blue
OUTCOME_RGB = {  # frame of a thumbnail: its image-level outcome at the threshold
    "TP": (0, 158, 115),  # green
    "TN": (160, 160, 160),  # grey
    "FP": (204, 121, 167),  # purple
    "FN": (200, 0, 0),  # red
}
_FONT = ImageFont.load_default()


def _font(size: int) -> Any:
    try:  # Pillow >= 10.1 with FreeType: a scalable default font
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):
        return _FONT


_TITLE_FONT = _font(14)
_FRAME, _CAPTION = 3, 26  # thumbnail frame width and caption height, pixels


# ------------------------------------------------------------------------------ helpers


def _swatch(rgb: Sequence[int], text: str) -> str:
    colour = "#%02x%02x%02x" % tuple(int(c) for c in rgb)
    return (f'<span style="display:inline-block;width:0.9em;height:0.9em;background:{colour};'
            f'vertical-align:middle;margin:0 0.3em 0 0.8em"></span>{html.escape(text)}')


def _fmt(x: float, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _encode(rgb: np.ndarray) -> bytes:
    """JPEG bytes (quality 92, no chroma subsampling, so thin coloured contours stay sharp) of
    an (H, W, 3) uint8 array. JPEG because it encodes in ~1 ms where PNG takes 40-90 ms on a
    busy 2-core CPU for a page of thumbnails."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb[..., :3])).save(buffer, format="jpeg", quality=92, subsampling=0)
    return buffer.getvalue()


def _image_widget() -> W.Image:
    """An image shown at its own size (a flex column would otherwise stretch it to the width)."""
    return W.Image(format="jpeg", layout=W.Layout(align_self="flex-start", max_width="100%", height="auto"))


def _as_cpu_predictions(predictions: Any) -> Any:
    return predictions.cpu() if hasattr(predictions, "cpu") else predictions


def _fitted(shape: Sequence[int], limit: int) -> tuple[int, int]:
    """``(h, w)`` of a picture of ``shape`` (..., H, W) shrunk so its longer side is at most ``limit``."""
    height, width = int(shape[-2]), int(shape[-1])
    scale = min(1.0, limit / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def _images_hwc(images: Any, n: int, size: tuple[int, int]) -> np.ndarray:
    """uint8 (N, h, w, 3) from (N, 3, H, W) or (N, H, W, 3) tensors/arrays; grey when None."""
    if images is None:
        return np.full((n, *size, 3), 128, np.uint8)
    x = images.detach().cpu() if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
    if x.ndim != 4:
        raise DhkdError(f"images must be (N, 3, H, W) or (N, H, W, 3); got shape {tuple(x.shape)}")
    if x.shape[1] != 3 and x.shape[-1] == 3:
        x = x.permute(0, 3, 1, 2)
    if x.shape[0] != n:
        raise DhkdError(f"{x.shape[0]} images for {n} predictions", "pass the test split the predictions were made on")
    if x.dtype != torch.uint8:
        x = (x.float().clamp(0, 1) * 255).round().to(torch.uint8) if x.is_floating_point() else x.to(torch.uint8)
    return _resize_images(x, size)


def _resize_images(x: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """uint8 (N, 3, H, W) -> uint8 (N, h, w, 3), area-averaged (antialiased)."""
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x.float(), size=size, mode="area" if x.shape[-1] >= size[1] else "bilinear")
        x = x.round().clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def _max_pool(x: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(N, H, W) -> (N, h, w) block maxima: ``pooled >= t`` iff some pixel of the block is."""
    x = x.float()
    if tuple(x.shape[-2:]) != tuple(size):
        if x.shape[-1] >= size[1]:
            x = F.adaptive_max_pool2d(x[:, None], size)[:, 0]
        else:
            x = F.interpolate(x[:, None], size=size, mode="nearest")[:, 0]
    return x.numpy()


def _edges(mask: np.ndarray, thick: bool = True) -> np.ndarray:
    """Boundary pixels of boolean masks (..., H, W): in the mask with a 4-neighbour outside it."""
    padded = np.pad(mask, [(0, 0)] * (mask.ndim - 2) + [(1, 1), (1, 1)], mode="edge")
    inner = (padded[..., :-2, 1:-1] & padded[..., 2:, 1:-1] & padded[..., 1:-1, :-2] & padded[..., 1:-1, 2:])
    edge = mask & ~inner
    if thick:  # grow inwards by one pixel so a contour stays visible on a small thumbnail
        p = np.pad(edge, [(0, 0)] * (edge.ndim - 2) + [(1, 1), (1, 1)])
        grown = edge | p[..., :-2, 1:-1] | p[..., 2:, 1:-1] | p[..., 1:-1, :-2] | p[..., 1:-1, 2:]
        edge = grown & mask
    return edge


def _tinted(image: np.ndarray, tint: float = 0.3) -> np.ndarray:
    """Images (..., H, W, 3) mixed with the prediction colour: how a predicted region looks."""
    w = int(round(tint * 256))
    return ((image.astype(np.uint16) * (256 - w) + PRED_RGB.astype(np.uint16) * w) >> 8).astype(np.uint8)


def _overlay(image: np.ndarray, pred: np.ndarray | None, gt_edge: np.ndarray | None,
             tinted: np.ndarray | None = None) -> np.ndarray:
    """A copy of images (..., H, W, 3) with the predicted region (bool (..., H, W)) tinted (with
    ``tinted``, see :func:`_tinted`; none when ``None``) and outlined, and the GT edges drawn."""
    out = image.copy()
    if pred is not None:
        if tinted is not None:
            np.copyto(out, tinted, where=pred[..., None])
        out[_edges(pred)] = PRED_RGB
    if gt_edge is not None:
        out[gt_edge] = GT_RGB
    return out


class _Colormap:
    """A matplotlib colormap as a 256-entry lookup table, applied with numpy."""

    def __init__(self, name: str = "jet") -> None:
        import matplotlib

        self.lut = (matplotlib.colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)

    def __call__(self, values: np.ndarray, lo: float, hi: float) -> np.ndarray:
        scaled = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
        return self.lut[np.clip(scaled * 255, 0, 255).astype(np.uint8)]


def _blend(image: np.ndarray, colour: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    return (image.astype(np.float32) * (1 - alpha) + colour.astype(np.float32) * alpha).astype(np.uint8)


def _text(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, fill: Any = (255, 255, 255),
          font: Any = None) -> None:
    draw.text(xy, text, fill=fill, font=font or _FONT)


def _labelled_row(panels: Sequence[np.ndarray], titles: Sequence[str], gap: int = 6, title_h: int = 20) -> np.ndarray:
    """Panels (H, W, 3) side by side on white with a title above each."""
    h = max(p.shape[0] for p in panels)
    w = sum(p.shape[1] for p in panels) + gap * (len(panels) - 1)
    canvas = np.full((h + title_h, w, 3), 255, np.uint8)
    x = 0
    for panel in panels:
        canvas[title_h:title_h + panel.shape[0], x:x + panel.shape[1]] = panel
        x += panel.shape[1] + gap
    img = Image.fromarray(canvas)
    draw = ImageDraw.Draw(img)
    x = 0
    for panel, title in zip(panels, titles):
        _text(draw, (x + 2, 2), title, fill=(0, 0, 0), font=_TITLE_FONT if panel.shape[1] >= 160 else _FONT)
        x += panel.shape[1] + gap
    return np.asarray(img)


class _RocPlot:
    """A ROC curve drawn once by matplotlib; the current point is stamped onto a copy with numpy."""

    def __init__(self, fpr: np.ndarray, tpr: np.ndarray, title: str, size_px: int = 260) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        dpi = 100
        fig = Figure(figsize=(size_px / dpi, size_px / dpi), dpi=dpi)
        FigureCanvasAgg(fig)
        ax = fig.add_axes((0.19, 0.17, 0.76, 0.72))
        ax.plot([0, 1], [0, 1], color="0.8", lw=0.8, ls="--")
        ax.plot(fpr, tpr, color="#0072B2", lw=1.5, drawstyle="default")
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("false-positive rate", fontsize=8)
        ax.set_ylabel("true-positive rate", fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
        fig.canvas.draw()
        self.base = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
        self._transform = ax.transData
        self._height = self.base.shape[0]
        yy, xx = np.mgrid[-6:7, -6:7]
        radius = np.hypot(yy, xx)
        self._disc = (yy[radius <= 5.5], xx[radius <= 5.5])
        self._ring = (yy[(radius > 3.5) & (radius <= 5.5)], xx[(radius > 3.5) & (radius <= 5.5)])

    def render(self, x: float, y: float) -> bytes:
        out = self.base.copy()
        if not (math.isnan(x) or math.isnan(y)):
            px, py = self._transform.transform((x, y))
            col, row = int(round(px)), int(round(self._height - py))
            for (dy, dx), colour in ((self._disc, (213, 94, 0)), (self._ring, (0, 0, 0))):
                rr, cc = row + dy, col + dx
                ok = (rr >= 0) & (rr < out.shape[0]) & (cc >= 0) & (cc < out.shape[1])
                out[rr[ok], cc[ok]] = colour
        return _encode(out)


class _Timed:
    """Keeps the durations of the last updates (seconds), for the latency report."""

    def __init__(self) -> None:
        self.durations: list[float] = []

    def __call__(self, fn: Callable[[], None]) -> None:
        started = time.perf_counter()
        fn()
        self.durations.append(time.perf_counter() - started)


class _CountedPredictions:
    """A run's test predictions on the CPU with their image and pixel counters, built once:
    what the threshold explorer and the failure browser both stand on."""

    def __init__(self, predictions: Any) -> None:
        p = _as_cpu_predictions(predictions)
        self.predictions = p
        self.n = len(p.labels)
        self.defect_types = list(p.defect_types)
        self.image_counter = ImageCounter(p.scores, p.labels)
        self.pixel_counter = PixelCounter(p.maps, p.masks, p.labels, getattr(p, "valid", None))


# ------------------------------------------------------------------------------ threshold explorer


class ThresholdExplorer(_CountedPredictions):
    """A threshold slider and everything it decides; see :func:`threshold_explorer`.

    ``stats`` holds the numbers on display (keys: level, threshold, tp, fp, fn, tn, precision,
    recall, f1, fpr, tpr, fpr_good, iou_defective, iou_pooled, flagged_images); counts are of
    images at the image level and of pixels at the pixel level. ``update_seconds`` lists how
    long each update (numbers and pictures) took.
    """

    def __init__(self, predictions: Any, images: Any = None, level: str = "image", thumb_size: int = 128,
                 per_page: int = 12, columns: int = 4, fpr: float = 0.05) -> None:
        if level not in LEVELS:
            raise DhkdError(f"level must be one of {LEVELS}; got {level!r}")
        super().__init__(predictions)
        p = self.predictions
        self.level = level
        self.per_page, self.columns = per_page, columns
        size = _fitted(p.maps.shape, thumb_size)
        self._thumbs = _images_hwc(images, self.n, size)
        self._thumbs_tinted = _tinted(self._thumbs)
        self._small_maps = _max_pool(p.maps, size)
        self._gt_edges = _edges(_max_pool(p.masks, size) > 0.5)
        self._scores = self.image_counter.scores
        self._timer = _Timed()
        self.stats: dict[str, Any] = {}

        if level == "image":
            lo, hi = float(self._scores.min()), float(self._scores.max())
            fpr_curve, tpr_curve = self.image_counter.roc_curve()
            default, _ = self.image_counter.f1_optimal()
            title = "image ROC"
        else:
            lo, hi = self.pixel_counter.value_range
            fpr_curve, tpr_curve = self.pixel_counter.roc_curve()
            default, _ = self.pixel_counter.f1_optimal()
            title = "pixel ROC"
        self._roc = _RocPlot(fpr_curve, tpr_curve, title)
        margin = (hi - lo) * 0.01 or 1e-6
        self.slider = W.FloatSlider(
            value=default, min=lo, max=hi + margin, step=(hi + margin - lo) / 5000,
            description=f"{level} threshold", continuous_update=True, readout_format=".4g",
            style={"description_width": "initial"}, layout=W.Layout(width="560px"),
        )
        self.f1_button = W.Button(description="F1-optimal", tooltip="threshold that maximises F1")
        self.fpr_box = W.BoundedFloatText(value=fpr, min=0.0, max=1.0, step=0.01, description="FPR on good",
                                          style={"description_width": "initial"}, layout=W.Layout(width="150px"))
        self.fpr_button = W.Button(description="at this FPR",
                                   tooltip="lowest threshold flagging at most this share of the good images"
                                   + (" (their pixels)" if level == "pixel" else ""))
        self.subset = W.Dropdown(options=["all", "defective", "good"] + sorted(set(self.defect_types) - {"good"}),
                                 value="all", description="show", layout=W.Layout(width="220px"))
        self.page = W.Dropdown(options=[("1/1", 0)], value=0, description="page", layout=W.Layout(width="150px"))
        self.stats_html = W.HTML()
        self.roc_image = _image_widget()
        self.grid_image = _image_widget()
        legend = (_swatch(PRED_RGB, "predicted region (map ≥ t)") + _swatch(GT_RGB, "ground truth")
                  + " &nbsp; frame: " + "".join(_swatch(c, k) for k, c in OUTCOME_RGB.items()))
        self.legend = W.HTML(f'<div style="font-size:0.85em">{legend}</div>')

        # The browser snaps a value set from Python to the slider's step and sends that back;
        # _exact remembers the value set from Python so such an echo does not replace it.
        self._threshold = self._exact = float(self.slider.value)
        self.slider.observe(self._on_slider, names="value")
        self.f1_button.on_click(lambda _: self.preset_f1())
        self.fpr_button.on_click(lambda _: self.preset_fpr(self.fpr_box.value))
        self.subset.observe(lambda change: self._new_subset(), names="value")
        self.page.observe(lambda change: self._timer(self._draw_grid), names="value")

        self.widget = W.VBox([
            W.HBox([self.slider, self.f1_button, self.fpr_box, self.fpr_button]),
            W.HBox([self.stats_html, self.roc_image], layout=W.Layout(align_items="center")),
            W.HBox([self.subset, self.page]),
            self.grid_image,
            self.legend,
        ])
        self.widget.add_class("dhkd-threshold-explorer")
        self._new_subset(draw=False)
        self._refresh()

    # -- public API

    @property
    def threshold(self) -> float:
        """The threshold in use: the slider's value, or exactly what :meth:`set_threshold` set."""
        return self._threshold

    @property
    def update_seconds(self) -> list[float]:
        return self._timer.durations

    def set_threshold(self, value: float) -> None:
        """Move the slider to ``value`` (widening its range when needed); the view updates."""
        value = float(value)
        if value > self.slider.max:
            self.slider.max = value
        if value < self.slider.min:
            self.slider.min = value
        self._exact = value
        if value == self.slider.value:
            self._threshold = value
            self._refresh()
        else:
            self.slider.value = value  # -> _on_slider

    def _on_slider(self, change: dict[str, Any]) -> None:
        new = float(change["new"])
        snapped = self._exact is not None and abs(new - self._exact) <= 0.5005 * (self.slider.step or 0.0)
        if snapped:  # our own value, rounded to the step by the browser: keep it exact
            if self._threshold == self._exact:
                return
            self._threshold = self._exact
        else:  # moved by the user (or set directly on .slider)
            self._exact = None
            self._threshold = new
        self._refresh()

    def preset_f1(self) -> float:
        """Set the F1-optimal threshold (of images or of pixels, by level) and return it."""
        counter = self.image_counter if self.level == "image" else self.pixel_counter
        threshold, _ = counter.f1_optimal()
        self.set_threshold(threshold)
        return threshold

    def preset_fpr(self, fpr: float) -> float:
        """Set the lowest threshold flagging at most ``fpr`` of the good images (pixel level:
        of their pixels) and return it."""
        counter = self.image_counter if self.level == "image" else self.pixel_counter
        threshold = counter.threshold_at_fpr(float(fpr))
        self.fpr_box.value = float(fpr)
        self.set_threshold(threshold)
        return threshold

    def compute_stats(self, t: float) -> dict[str, Any]:
        """The numbers the explorer shows at threshold ``t`` (without drawing)."""
        pixel = self.pixel_counter.stats(t)
        c: Counts = self.image_counter.counts(t) if self.level == "image" else pixel["counts"]
        flagged = self.image_counter.flagged(t) if self.level == "image" else pixel["flagged"]
        fpr_good = c.fpr if self.level == "image" else pixel["fpr_good"]
        return {
            "level": self.level, "threshold": float(t),
            "tp": c.tp, "fp": c.fp, "fn": c.fn, "tn": c.tn,
            "precision": c.precision, "recall": c.recall, "f1": c.f1, "fpr": c.fpr, "tpr": c.recall,
            "fpr_good": fpr_good,
            "iou_defective": pixel["iou_defective"], "iou_pooled": pixel["iou_pooled"],
            "flagged_images": int(np.count_nonzero(flagged)),
            "_per_image_iou": pixel["per_image_iou"], "_per_image_fp": pixel["per_image_fp"], "_flagged": flagged,
        }

    def _ipython_display_(self) -> None:
        display(self.widget)

    # -- drawing

    def _refresh(self) -> None:
        self._timer(self._update)

    def _update(self) -> None:
        full = self.compute_stats(self.threshold)
        self._per_image_iou, self._flagged = full.pop("_per_image_iou"), full.pop("_flagged")
        self._per_image_fp = full.pop("_per_image_fp")
        self.stats = full
        self.stats_html.value = self._stats_html(full)
        self.roc_image.value = self._roc.render(full["fpr"], full["tpr"])
        self._draw_grid()

    def _stats_html(self, s: dict[str, Any]) -> str:
        unit = "images" if self.level == "image" else "pixels"
        good_label = "FPR (good images)" if self.level == "image" else "FPR (good images' pixels)"
        rows = [
            ("threshold", f"{s['threshold']:.5g}"),
            (f"TP / FP ({unit})", f"{s['tp']} / {s['fp']}"),
            (f"FN / TN ({unit})", f"{s['fn']} / {s['tn']}"),
            ("precision", _fmt(s["precision"])),
            ("recall (TPR)", _fmt(s["recall"])),
            ("F1", _fmt(s["f1"])),
            (good_label, _fmt(s["fpr_good"], 4)),
            ("mask IoU, mean of defective images", _fmt(s["iou_defective"])),
            ("mask IoU, all pixels pooled", _fmt(s["iou_pooled"])),
            ("images flagged", f"{s['flagged_images']} of {self.n}"),
        ]
        body = "".join(f'<tr><td style="padding:1px 10px 1px 0">{html.escape(k)}</td>'
                       f'<td style="text-align:right;font-family:monospace">{v}</td></tr>' for k, v in rows)
        counts = f"TP={s['tp']} FP={s['fp']} FN={s['fn']} TN={s['tn']}"
        return (f'<div class="dhkd-stats" data-counts="{counts}" style="min-width:330px;margin-right:16px">'
                f'<b>{self.level}-level threshold</b>'
                f'<table style="border-collapse:collapse;font-size:0.9em">{body}</table></div>')

    def _subset_indices(self) -> np.ndarray:
        labels = self.image_counter.labels
        kinds = np.array(self.defect_types)
        choice = self.subset.value
        if choice == "all":
            return np.arange(self.n)
        if choice == "defective":
            return np.flatnonzero(labels)
        if choice == "good":
            return np.flatnonzero(~labels)
        return np.flatnonzero(kinds == choice)

    def _new_subset(self, draw: bool = True) -> None:
        self._indices = self._subset_indices()
        pages = max(1, math.ceil(len(self._indices) / self.per_page))
        with self.page.hold_trait_notifications():
            self.page.options = [(f"{i + 1}/{pages}", i) for i in range(pages)]
            self.page.value = 0
        if draw:
            self._timer(self._draw_grid)

    def page_indices(self) -> np.ndarray:
        """Indices (into the predictions) of the thumbnails on the current page."""
        start = (self.page.value or 0) * self.per_page
        return self._indices[start:start + self.per_page]

    def _page_canvas(self, idx: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
        """White page with each tile's fixed caption line drawn (cached per page), and tile corners."""
        key = tuple(int(i) for i in idx)
        if getattr(self, "_page_key", None) != key:
            (height, width), cols = self._thumbs.shape[1:3], self.columns
            cell_w, cell_h = width + 2 * _FRAME, height + 2 * _FRAME + _CAPTION
            rows = max(1, math.ceil(len(idx) / cols))
            canvas = np.full((rows * cell_h + (rows - 1) * 4, cols * cell_w + (cols - 1) * 4, 3), 255, np.uint8)
            corners = [(int(i), (k % cols) * (cell_w + 4), (k // cols) * (cell_h + 4)) for k, i in enumerate(idx)]
            img = Image.fromarray(canvas)
            draw = ImageDraw.Draw(img)
            for i, x, y in corners:
                _text(draw, (x + 1, y + height + 2 * _FRAME + 1),
                      f"#{i} {self.defect_types[i]} s={self._scores[i]:.3g}"[:30], fill=(0, 0, 0))
            self._page_key, self._page_base, self._page_corners = key, np.asarray(img), corners
        return self._page_base, self._page_corners

    def _draw_grid(self) -> None:
        if not hasattr(self, "_flagged"):  # a page event before the first update
            return
        idx = self.page_indices()
        base, corners = self._page_canvas(idx)
        if len(idx) == 0:
            self.grid_image.value = _encode(base)
            return
        height, width = self._thumbs.shape[1:3]
        pred = self._small_maps[idx] >= ceil_float32(self.threshold)
        tiles = _overlay(self._thumbs[idx], pred, self._gt_edges[idx], self._thumbs_tinted[idx])
        labels, flagged = self.image_counter.labels[idx], self._flagged[idx]
        canvas = base.copy()
        captions = []
        for k, (i, x, y) in enumerate(corners):
            outcome = ("TP" if flagged[k] else "FN") if labels[k] else ("FP" if flagged[k] else "TN")
            canvas[y:y + height + 2 * _FRAME, x:x + width + 2 * _FRAME] = OUTCOME_RGB[outcome]
            canvas[y + _FRAME:y + _FRAME + height, x + _FRAME:x + _FRAME + width] = tiles[k]
            if labels[k]:
                detail = f"mask IoU {_fmt(float(self._per_image_iou[i]), 2)}"
            else:  # no defect: IoU says nothing, the share of flagged pixels does
                detail = f"{100 * self._per_image_fp[i] / max(int(self.pixel_counter.n_neg[i]), 1):.1f}% px flagged"
            captions.append(((x + 1, y + height + 2 * _FRAME + 13), f"{outcome}  {detail}"))
        img = Image.fromarray(canvas)
        draw = ImageDraw.Draw(img)
        for xy, text in captions:
            _text(draw, xy, text, fill=(70, 70, 70))
        self.grid_image.value = _encode(np.asarray(img))


def threshold_explorer(predictions: Any, images: Any = None, level: str = "image", **options: Any) -> ThresholdExplorer:
    """A live threshold explorer over a run's test predictions.

    ``predictions``: :class:`dhkd.run.evaluate.Predictions` (e.g. from ``load_predictions``);
    ``images``: the test split's uint8 ``(N, 3, S, S)`` images in the same order (``None``
    draws grey tiles); ``level``: ``"image"`` (threshold on image scores) or ``"pixel"``
    (threshold on map values). Options: ``thumb_size`` (128), ``per_page`` (12), ``columns``
    (4), ``fpr`` (0.05, the FPR preset's default).
    """
    return ThresholdExplorer(predictions, images, level=level, **options)


# ------------------------------------------------------------------------------ failure browser


class FailureBrowser(_CountedPredictions):
    """Sorted failure cases with next/previous; see :func:`failure_browser`.

    ``items`` is the current list (indices into the predictions, worst first), ``position``
    the place in it and ``current`` the index shown (``None`` when the list is empty).
    """

    def __init__(self, predictions: Any, images: Any = None, image_threshold: float | None = None,
                 pixel_threshold: float | None = None, panel_size: int = 256) -> None:
        super().__init__(predictions)
        p = self.predictions
        size = _fitted(p.maps.shape, panel_size)
        same = size == tuple(p.maps.shape[-2:])
        self._images = _images_hwc(images, self.n, size)
        self._maps = p.maps.float().numpy() if same else _max_pool(p.maps, size)
        self._masks = p.masks.numpy().astype(bool) if same else _max_pool(p.masks, size) > 0.5
        self._gt_edges = _edges(self._masks)
        self._lo, self._hi = self.pixel_counter.value_range
        self._cmap = _Colormap("jet")
        self._timer = _Timed()
        if image_threshold is None:
            image_threshold = self.image_counter.f1_optimal()[0]
        if pixel_threshold is None:
            pixel_threshold = self.pixel_counter.f1_optimal()[0]
        self.items: list[int] = []
        self.position = 0

        self.kind = W.ToggleButtons(options=list(FAILURE_KINDS), value=FAILURE_KINDS[0], description="show",
                                    style={"button_width": "150px"})
        self.defect = W.Dropdown(options=["all"] + sorted(set(self.defect_types)), value="all",
                                 description="defect type", style={"description_width": "initial"})
        self.image_threshold = W.FloatText(value=image_threshold, description="image threshold",
                                           style={"description_width": "initial"}, layout=W.Layout(width="230px"))
        self.pixel_threshold = W.FloatText(value=pixel_threshold, description="pixel threshold",
                                           style={"description_width": "initial"}, layout=W.Layout(width="230px"))
        self.prev_button = W.Button(description="◀ previous", layout=W.Layout(width="110px"))
        self.next_button = W.Button(description="next ▶", layout=W.Layout(width="110px"))
        self.position_html = W.HTML()
        self.view = _image_widget()
        self.caption = W.HTML()
        for control in (self.kind, self.defect, self.image_threshold, self.pixel_threshold):
            control.observe(lambda change: self._timer(self._rebuild), names="value")
        self.prev_button.on_click(lambda _: self.previous())
        self.next_button.on_click(lambda _: self.next())
        legend = _swatch(PRED_RGB, "predicted region (map ≥ pixel threshold)") + _swatch(GT_RGB, "ground truth")
        self.widget = W.VBox([
            W.HBox([self.kind]),
            W.HBox([self.defect, self.image_threshold, self.pixel_threshold]),
            W.HBox([self.prev_button, self.next_button, self.position_html], layout=W.Layout(align_items="center")),
            self.view,
            self.caption,
            W.HTML(f'<div style="font-size:0.85em">{legend}; heatmaps share one colour scale '
                   f'({self._lo:.3g} to {self._hi:.3g})</div>'),
        ])
        self.widget.add_class("dhkd-failure-browser")
        # open on the first kind of failure that has cases (what a static copy will show)
        self._iou = self.pixel_counter.stats(float(pixel_threshold))["per_image_iou"]
        first = next((k for k in FAILURE_KINDS if self.failure_list(k)), FAILURE_KINDS[0])
        if first != self.kind.value:
            self.kind.value = first  # -> _rebuild
        else:
            self._rebuild()

    @property
    def current(self) -> int | None:
        return self.items[self.position] if self.items else None

    @property
    def update_seconds(self) -> list[float]:
        return self._timer.durations

    def next(self) -> int | None:
        if self.items:
            self.position = (self.position + 1) % len(self.items)
            self._timer(self._draw)
        return self.current

    def previous(self) -> int | None:
        if self.items:
            self.position = (self.position - 1) % len(self.items)
            self._timer(self._draw)
        return self.current

    def failure_list(self, kind: str, defect: str = "all") -> list[int]:
        """Indices of one kind of failure, worst first (see the module docstring of the kinds)."""
        if kind not in FAILURE_KINDS:
            raise DhkdError(f"kind must be one of {FAILURE_KINDS}; got {kind!r}")
        scores, labels = self.image_counter.scores, self.image_counter.labels
        flagged = self.image_counter.flagged(float(self.image_threshold.value))
        keep = np.ones(self.n, bool) if defect == "all" else np.array(self.defect_types) == defect
        if kind == "false negatives":  # defective, not flagged: lowest score first
            chosen = np.flatnonzero(labels & ~flagged & keep)
            order = np.argsort(scores[chosen], kind="stable")
        elif kind == "false positives":  # good, flagged: highest score first
            chosen = np.flatnonzero(~labels & flagged & keep)
            order = np.argsort(-scores[chosen], kind="stable")
        else:  # images with a defect mask, lowest IoU of the predicted mask first
            iou = self.pixel_counter.stats(float(self.pixel_threshold.value))["per_image_iou"]
            chosen = np.flatnonzero((self.pixel_counter.n_pos > 0) & keep)
            order = np.lexsort((scores[chosen], iou[chosen]))
            self._iou = iou
        return [int(i) for i in chosen[order]]

    def _rebuild(self) -> None:
        self._iou = self.pixel_counter.stats(float(self.pixel_threshold.value))["per_image_iou"]
        self.items = self.failure_list(self.kind.value, self.defect.value)
        self.position = 0
        self._draw()

    def _draw(self) -> None:
        kind = self.kind.value
        if not self.items:
            self.position_html.value = f"<b>no {kind}</b> for this defect type and threshold"
            self.view.value = _encode(np.full((8, 8, 3), 255, np.uint8))
            self.caption.value = ""
            return
        i = self.current
        self.position_html.value = f"&nbsp; {kind}: <b>{self.position + 1}</b> of {len(self.items)}"
        image = self._images[i]
        heat = _blend(image, self._cmap(self._maps[i], self._lo, self._hi), 0.55)
        mask = np.where(self._masks[i][..., None], 255, 0).astype(np.uint8).repeat(3, -1)
        pred = self._maps[i] >= ceil_float32(float(self.pixel_threshold.value))
        both = _overlay(image, pred, self._gt_edges[i], _tinted(image))
        self.view.value = _encode(_labelled_row([image, heat, mask, both],
                                             ["image", "anomaly map", "ground-truth mask", "predicted vs truth"]))
        t_img = float(self.image_threshold.value)
        score = float(self.image_counter.scores[i])
        verdict = "flagged" if score >= ceil_float32(t_img) else "not flagged"
        t_pix = float(self.pixel_threshold.value)
        if self.pixel_counter.n_pos[i] > 0:
            localisation = f"mask IoU {_fmt(float(self._iou[i]))} at pixel threshold {t_pix:.4g}"
        else:  # no defect: the share of its pixels over the threshold
            localisation = f"{100 * float(pred.mean()):.1f}% of its pixels over pixel threshold {t_pix:.4g}"
        self.caption.value = (
            f'<div class="dhkd-caption">#{i} <b>{html.escape(self.defect_types[i])}</b> · score '
            f'<b>{score:.4g}</b> ({verdict} at image threshold {t_img:.4g}) · {localisation}'
            f'<br><span style="font-size:0.85em;color:#555">{html.escape(self.predictions.paths[i])}</span></div>')

    def _ipython_display_(self) -> None:
        display(self.widget)


def failure_browser(predictions: Any, images: Any = None, **options: Any) -> FailureBrowser:
    """Browse a run's failure cases: false negatives (defective images under the image
    threshold, lowest score first), false positives (good images over it, highest score first)
    and the worst localisation (defective images by IoU of ``map >= pixel threshold`` with the
    ground truth, lowest first). Both thresholds default to their F1-optimal values.

    Options: ``image_threshold``, ``pixel_threshold``, ``panel_size`` (256).
    """
    return FailureBrowser(predictions, images, **options)


# ------------------------------------------------------------------------------ run comparison


class RunComparison:
    """Two runs side by side on the same test image; see :func:`run_comparison`."""

    def __init__(self, run_a: str | Path, run_b: str | Path, data_root: str | Path | None = None,
                 names: tuple[str, str] | None = None, panel_size: int = 256) -> None:
        from dhkd.config import read_config
        from dhkd.data import load_split
        from dhkd.run.evaluate import load_predictions
        from dhkd.run.folder import CONFIG_NAME, read_run_info

        self.runs = (Path(run_a), Path(run_b))
        # runs usually live in <out>/<category>: "tutorial/nut" says more than "nut"
        self.names = names or tuple("/".join(r.resolve().parts[-2:]) for r in self.runs)
        if self.names[0] == self.names[1]:
            self.names = (f"A: {self.names[0]}", f"B: {self.names[1]}")
        infos = [read_run_info(r) for r in self.runs]
        if infos[0]["category"] != infos[1]["category"]:
            raise DhkdError(f"the runs are of different categories ({infos[0]['category']} and {infos[1]['category']})",
                            "compare two runs of the same category")
        preds = [_as_cpu_predictions(load_predictions(r)) for r in self.runs]
        order = self._align(preds)
        pa, pb = preds[0], preds[1]
        if tuple(pa.maps.shape[-2:]) != tuple(pb.maps.shape[-2:]):
            raise DhkdError(f"the runs' maps differ in shape ({tuple(pa.maps.shape[-2:])} and {tuple(pb.maps.shape[-2:])})",
                            "compare two runs trained at the same data.image_size")
        size = _fitted(pa.maps.shape, panel_size)
        root = Path(data_root) if data_root is not None else Path(infos[0]["data_root"])
        fit = read_config(self.runs[0] / CONFIG_NAME).data.fit()
        split = load_split(root, infos[0]["category"], "test", fit, progress=False)
        by_path = {str(path): k for k, path in enumerate(split.paths)}
        missing = [path for path in pa.paths if path not in by_path]
        if missing:
            raise DhkdError(f"{len(missing)} predicted images are not in {root} (e.g. {missing[0]})",
                            "pass the data_root the runs were evaluated on")
        self.paths = pa.paths
        self.defect_types = pa.defect_types
        self.n = len(pa.paths)
        self._images = _images_hwc(split.images[[by_path[path] for path in pa.paths]], self.n, size)
        self._gt_edges = _edges(_max_pool(pa.masks, size) > 0.5)
        self._cmap = _Colormap("jet")
        self._runs = []
        for pred, idx in ((pa, None), (pb, order)):
            maps = pred.maps if idx is None else pred.maps[idx]
            scores = pred.scores if idx is None else pred.scores[idx]
            valid = pred.valid if pred.valid is None or idx is None else pred.valid[idx]
            counter = PixelCounter(maps, pred.masks if idx is None else pred.masks[idx], pa.labels, valid)
            threshold, _ = counter.f1_optimal()
            self._runs.append({
                "maps": _max_pool(maps, size), "scores": scores.numpy(), "range": counter.value_range,
                "threshold": threshold, "iou": counter.stats(threshold)["per_image_iou"],
            })
        self._metrics = [self._read_metrics(r) for r in self.runs]

        self.index = W.IntSlider(value=0, min=0, max=self.n - 1, description="test image",
                                 continuous_update=True, layout=W.Layout(width="500px"))
        self.view = _image_widget()
        self.caption = W.HTML()
        self.header = W.HTML(self._header_html())
        self.index.observe(lambda change: self._draw(), names="value")
        self.widget = W.VBox([self.header, self.index, self.view, self.caption])
        self.widget.add_class("dhkd-run-comparison")
        self._draw()

    @staticmethod
    def _align(preds: list[Any]) -> list[int]:
        """Indices into run B in run A's order (the same test images, by path)."""
        pa, pb = preds
        where = {path: k for k, path in enumerate(pb.paths)}
        missing = [path for path in pa.paths if path not in where]
        if missing or len(pa.paths) != len(pb.paths):
            raise DhkdError("the two runs were evaluated on different test images "
                            f"({len(pa.paths)} and {len(pb.paths)}; e.g. {missing[:1]} only in the first)",
                            "evaluate both on the same data root")
        return [where[path] for path in pa.paths]

    @staticmethod
    def _read_metrics(run: Path) -> dict[str, Any]:
        path = run / METRICS_NAME
        try:
            return json.loads(path.read_text()) if path.exists() else {}
        except (OSError, ValueError):
            return {}

    def _header_html(self) -> str:
        keys = [("image_auroc", "image AUROC"), ("pixel_auroc", "pixel AUROC"), ("aupro", "AUPRO")]
        head = "".join(f"<th style='padding:0 10px'>{label}</th>" for _, label in keys)
        rows = ""
        for name, m, run in zip(self.names, self._metrics, self._runs):
            cells = "".join(f"<td style='padding:0 10px;text-align:right'>{_fmt(m.get(k, math.nan))}</td>" for k, _ in keys)
            rows += (f"<tr><td>{html.escape(name)}</td>{cells}"
                     f"<td style='padding:0 10px'>pixel threshold {run['threshold']:.4g} (F1-optimal)</td></tr>")
        return f"<table style='font-size:0.9em'><tr><th></th>{head}<th></th></tr>{rows}</table>"

    def _draw(self) -> None:
        i = int(self.index.value)
        image = self._images[i]
        blank = np.full_like(image, 255)
        top, bottom = [_overlay(image, None, self._gt_edges[i])], [blank]
        top_titles, bottom_titles = ["image + ground truth"], [""]
        for name, run in zip(self.names, self._runs):
            lo, hi = run["range"]
            top.append(_blend(image, self._cmap(run["maps"][i], lo, hi), 0.55))
            top_titles.append(f"{name}: score {run['scores'][i]:.3g}"[:40])
            pred = run["maps"][i] >= ceil_float32(run["threshold"])
            bottom.append(_overlay(image, pred, self._gt_edges[i], _tinted(image)))
            bottom_titles.append(f"{name}: predicted vs truth"[:40])
        rows = [_labelled_row(top, top_titles), _labelled_row(bottom, bottom_titles)]
        self.view.value = _encode(np.concatenate([rows[0], np.full((4, rows[0].shape[1], 3), 255, np.uint8), rows[1]]))
        parts = " · ".join(f"{html.escape(name)}: score <b>{run['scores'][i]:.4g}</b>, mask IoU "
                           f"{_fmt(float(run['iou'][i]))}" for name, run in zip(self.names, self._runs))
        self.caption.value = (f'<div class="dhkd-caption">#{i} <b>{html.escape(self.defect_types[i])}</b> · {parts}<br>'
                              f'<span style="font-size:0.85em;color:#555">{html.escape(self.paths[i])} · '
                              f'each heatmap on its own run\'s colour scale (its min to max over the test set); '
                              f'orange: map ≥ that run\'s F1-optimal pixel threshold; blue: ground truth</span></div>')

    def _ipython_display_(self) -> None:
        display(self.widget)


def run_comparison(run_a: str | Path, run_b: str | Path, data_root: str | Path | None = None,
                   **options: Any) -> RunComparison:
    """Two evaluated run folders (e.g. the RD baseline and DHKD) side by side on each test image.

    Both must have ``predictions.npz`` (``dhkd evaluate``) for the same category; the images
    are read from ``data_root`` (default: the first run's). Options: ``names`` (two labels),
    ``panel_size`` (256).
    """
    return RunComparison(run_a, run_b, data_root, **options)
