"""Plots for the notebooks: short functions that take tensors or run files and return a Figure.

Figures are built with ``matplotlib.figure.Figure`` rather than ``pyplot``, so a notebook
shows each one exactly once (as the cell's value) and scripts can ``savefig`` them without a
display. Nothing here computes a metric: the numbers come from :mod:`dhkd.metrics` and
:mod:`dhkd.run.evaluate`; the few helpers that compute something (:func:`pca_rgb`,
:func:`distance_to_normal`, :func:`best_and_worst`) only prepare what is drawn.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch.nn import functional as F

from dhkd.config import Config
from dhkd.run.evaluate import Predictions
from dhkd.run.folder import HISTORY_NAME

GOOD_COLOUR, DEFECT_COLOUR = "#4c72b0", "#c44e52"
STAGE_COLOURS = {1: "#4c72b0", 2: "#dd8452"}


def _as_numpy_image(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """uint8 ``(3, H, W)`` tensor or array -> ``(H, W, 3)`` array for ``imshow``."""
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    return array.transpose(1, 2, 0) if array.shape[0] == 3 else array


def _thin(x: np.ndarray, y: np.ndarray, points: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """At most ``points`` points of a long curve (pixel ROC curves have millions), ends kept."""
    if len(x) <= points:
        return x, y
    keep = np.unique(np.linspace(0, len(x) - 1, points).round().astype(int))
    return x[keep], y[keep]


# ----------------------------------------------------------------------------- teacher features


def pca_rgb(features: torch.Tensor, fit_on: torch.Tensor | None = None) -> np.ndarray:
    """``(N, C, H, W)`` features -> ``(N, H, W, 3)`` colours in [0, 1]: the first 3 principal components.

    The components and the colour range are fitted on ``fit_on`` (default: ``features``), so
    fitting on normal images and projecting a defective one shows the defect as a colour the
    normal images never take.
    """
    reference = features if fit_on is None else fit_on
    channels = reference.shape[1]
    ref = reference.detach().float().permute(0, 2, 3, 1).reshape(-1, channels).cpu()
    mean = ref.mean(0)
    _, _, v = torch.pca_lowrank(ref - mean, q=3, center=False)
    ref_projected = (ref - mean) @ v
    low, high = torch.quantile(ref_projected, 0.01, dim=0), torch.quantile(ref_projected, 0.99, dim=0)
    x = features.detach().float().permute(0, 2, 3, 1).cpu()
    projected = (x.reshape(-1, channels) - mean) @ v
    colours = ((projected - low) / (high - low).clamp_min(1e-8)).clamp(0, 1)
    return colours.reshape(*x.shape[:3], 3).numpy()


def feature_pca_grid(images: torch.Tensor, features: list[torch.Tensor], titles: Sequence[str],
                     fit_on: list[torch.Tensor] | None = None, masks: torch.Tensor | None = None) -> Figure:
    """One row per image: the image, then each teacher scale coloured by its first 3 principal components."""
    rows, scales = len(images), len(features)
    figure = Figure(figsize=(2.3 * (scales + 1), 2.3 * rows), layout="constrained")
    axes = np.atleast_2d(figure.subplots(rows, scales + 1, squeeze=False))
    coloured = [pca_rgb(f, None if fit_on is None else fit_on[s]) for s, f in enumerate(features)]
    for i in range(rows):
        axes[i, 0].imshow(_as_numpy_image(images[i]))
        if masks is not None and masks[i].any():
            axes[i, 0].contour(masks[i].cpu().numpy(), levels=[0.5], colors="lime", linewidths=0.8)
        axes[i, 0].set_title(titles[i], fontsize="small")
        for s in range(scales):
            axes[i, s + 1].imshow(coloured[s][i], interpolation="nearest")
            if i == 0:
                c, h, w = features[s].shape[1:]
                axes[i, s + 1].set_title(f"scale {s + 1}: {c}×{h}×{w}", fontsize="small")
    for ax in axes.flat:
        ax.set_axis_off()
    return figure


def distance_to_normal(normal: list[torch.Tensor], test: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per scale, ``1 - cos(f(x)_p, mean of normal f_p)`` at every position p: ``(N, h, w)`` maps.

    What a detector that only had the teacher could do: compare each feature vector with the
    average normal one at the same place. Reverse distillation replaces the average by a
    student that reconstructs the features of *this* image.
    """
    maps = []
    for f_normal, f_test in zip(normal, test, strict=True):
        mean = f_normal.float().mean(0, keepdim=True)
        maps.append(1.0 - F.cosine_similarity(f_test.float(), mean, dim=1))
    return maps


def scale_gaps(distances: list[torch.Tensor], masks: torch.Tensor) -> pd.DataFrame:
    """Mean distance inside and outside the ground-truth defects, per scale (masks resized to each scale)."""
    rows = []
    for s, d in enumerate(distances):
        small = F.interpolate(masks[:, None].float(), size=d.shape[-2:], mode="area")[:, 0] > 0.25
        inside = d[small].mean().item() if small.any() else float("nan")
        outside = d[~small].mean().item()
        rows.append({"scale": s + 1, "inside defects": inside, "outside defects": outside, "gap": inside - outside})
    return pd.DataFrame(rows).set_index("scale")


def scale_gap_bars(gaps: pd.DataFrame) -> Figure:
    figure = Figure(figsize=(5.5, 3.2), layout="constrained")
    ax = figure.subplots()
    x = np.arange(len(gaps))
    ax.bar(x - 0.2, gaps["outside defects"], 0.4, label="outside defects", color=GOOD_COLOUR)
    ax.bar(x + 0.2, gaps["inside defects"], 0.4, label="inside defects", color=DEFECT_COLOUR)
    ax.set_xticks(x, [f"scale {s}" for s in gaps.index])
    ax.set_ylabel("1 − cos to the normal mean")
    ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    return figure


def distance_maps(images: torch.Tensor, distances: list[torch.Tensor], masks: torch.Tensor, titles: Sequence[str]) -> Figure:
    """Image with its defect outline, then the per-scale distance maps (shared colour range per scale)."""
    rows, scales = len(images), len(distances)
    figure = Figure(figsize=(2.3 * (scales + 1), 2.3 * rows), layout="constrained")
    axes = figure.subplots(rows, scales + 1, squeeze=False)
    for i in range(rows):
        axes[i, 0].imshow(_as_numpy_image(images[i]))
        if masks[i].any():
            axes[i, 0].contour(masks[i].cpu().numpy(), levels=[0.5], colors="lime", linewidths=0.8)
        axes[i, 0].set_title(titles[i], fontsize="small")
        for s in range(scales):
            d = distances[s]
            shown = axes[i, s + 1].imshow(d[i].cpu().numpy(), cmap="magma", vmin=0, vmax=float(d.max()))
            if i == 0:
                axes[i, s + 1].set_title(f"scale {s + 1}", fontsize="small")
            if i == rows - 1:
                figure.colorbar(shown, ax=axes[:, s + 1], location="bottom", shrink=0.8, label="1 − cos")
    for ax in axes.flat:
        ax.set_axis_off()
    return figure


# ----------------------------------------------------------------------------- the architecture


def architecture_diagram(shapes: dict[str, tuple[int, ...]], fusion: bool, attention: bool, memory: bool) -> Figure:
    """RD4AD's U-shaped picture with this model's shapes: the frozen teacher on top, the
    bottleneck on the right, the student decoder below, the loss between matching scales.

    ``shapes`` maps ``image, F1, F2, F3, z, S1, S2, S3`` to ``(C, H, W)``.
    """
    from matplotlib.patches import FancyBboxPatch, Patch

    def text(key: str) -> str:
        return "×".join(str(n) for n in shapes[key])

    figure = Figure(figsize=(10.5, 4.6), layout="constrained")
    ax = figure.subplots()
    ax.set_xlim(-0.4, 11.0)
    ax.set_ylim(-0.1, 5.1)
    ax.set_axis_off()

    def box(x: float, y: float, label: str, colour: str, width: float = 1.6) -> None:
        ax.add_patch(FancyBboxPatch((x - width / 2, y - 0.45), width, 0.9, boxstyle="round,pad=0.05",
                                    facecolor=colour, edgecolor="black", linewidth=0.8))
        ax.text(x, y, label, ha="center", va="center", fontsize="small")

    def arrow(start: tuple[float, float], end: tuple[float, float], label: str = "") -> None:
        ax.annotate("", end, start, arrowprops={"arrowstyle": "->", "lw": 1.0})
        if label:
            ax.text((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 + 0.12, label, ha="center", fontsize="x-small")

    frozen, trained, optional = "#d9d9d9", "#c6dbef", "#fdd0a2"
    top, middle, bottom = 4.3, 2.5, 0.7
    xs = [2.4, 4.6, 6.8]
    box(0.5, top, f"image\n{text('image')}", "white", 1.5)
    for s, x in enumerate(xs, start=1):
        box(x, top, f"teacher F{s}\n{text(f'F{s}')}", frozen)
        box(x, bottom, f"student S{s}\n{text(f'S{s}')}", trained)
        ax.plot([x, x], [top - 0.5, bottom + 0.5], ls="--", color=DEFECT_COLOUR, lw=1.0)
        ax.text(x + 0.08, middle, "1 − cos", color=DEFECT_COLOUR, fontsize="x-small", rotation=90, va="center")
    for a, b in ((0.5, xs[0]), (xs[0], xs[1]), (xs[1], xs[2])):
        arrow((a + 0.8, top), (b - 0.85, top))
    for a, b in ((xs[2], xs[1]), (xs[1], xs[0])):
        arrow((a - 0.85, bottom), (b + 0.85, bottom), "up ×2")
    right = 9.6
    ocbe = "OCBE" + (" + coord. att." if attention else "") + f"\nz: {text('z')}"
    if fusion:
        box(right, top, "mutual-mapping\nfusion: G1, G2, G3", optional, 2.3)
        arrow((xs[2] + 0.85, top), (right - 1.2, top), "F1,F2,F3")
        arrow((right, top - 0.5), (right, middle + 0.5))
    else:
        arrow((xs[2] + 0.85, top - 0.2), (right - 1.0, middle + 0.3), "F1, F2, F3")
    box(right, middle, ocbe, trained, 2.3)
    if memory:
        box(right, bottom, "memory bank\nread-out of z", optional, 2.3)
        arrow((right, middle - 0.5), (right, bottom + 0.5))
        arrow((right - 1.2, bottom), (xs[2] + 0.85, bottom))
    else:
        arrow((right - 1.0, middle - 0.3), (xs[2] + 0.85, bottom + 0.2))
    decoder = "decoder: mirrored ResNet" + (", coord. attention after each stage" if attention else "")
    ax.text(xs[1], bottom - 0.62, decoder, ha="center", fontsize="x-small")
    ax.text(xs[1], top + 0.6, "frozen ImageNet encoder (never trained)", ha="center", fontsize="x-small")
    legend = [Patch(facecolor=frozen, edgecolor="black", label="frozen teacher"),
              Patch(facecolor=trained, edgecolor="black", label="trained student (RD4AD)"),
              Patch(facecolor=optional, edgecolor="black", label="DHKD addition")]
    ax.legend(handles=legend, loc="lower left", bbox_to_anchor=(0.0, 0.3), fontsize="x-small", frameon=False)
    return figure


# ----------------------------------------------------------------------------- the additions


def fusion_weights(weights: torch.Tensor, reference: torch.Tensor | None = None) -> Figure:
    """Heatmap of the mutual-mapping weights ``w_st`` (row: target scale s, column: source scale t).

    With ``reference`` (the untrained model's weights) it shows ``w - reference`` on a scale
    centred at zero, so that weights that did not move read as "no change" instead of a colour.
    """
    w = weights.detach().cpu().numpy()
    shown = w if reference is None else w - reference.detach().cpu().numpy()
    figure = Figure(figsize=(3.8, 3.2), layout="constrained")
    ax = figure.subplots()
    if reference is None:
        image = ax.imshow(shown, cmap="viridis", vmin=0, vmax=1)
    else:
        limit = max(float(np.abs(shown).max()), 1e-3)
        image = ax.imshow(shown, cmap="RdBu_r", vmin=-limit, vmax=limit)
    for s in range(w.shape[0]):
        for t in range(w.shape[1]):
            text = "–" if s == t else (f"{w[s, t]:.2f}" if reference is None else f"{shown[s, t]:+.3f}")
            ax.text(t, s, text, ha="center", va="center", color="black" if reference is not None or w[s, t] >= 0.6 else "white")
    labels = [f"F{i + 1}" for i in range(w.shape[0])]
    ax.set_xticks(range(w.shape[1]), labels)
    ax.set_yticks(range(w.shape[0]), [f"G{i + 1}" for i in range(w.shape[0])])
    ax.set_xlabel("source scale t")
    ax.set_ylabel("target scale s")
    figure.colorbar(image, ax=ax, shrink=0.8, label="w_st" if reference is None else "w_st − untrained w_st")
    return figure


def attention_maps(images: torch.Tensor, attentions: list[tuple[torch.Tensor, torch.Tensor]],
                   names: Sequence[str], titles: Sequence[str],
                   reference: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
                   spreads: Sequence[float] | None = None) -> Figure:
    """For each image and each coordinate-attention module: ``mean_c a_h(c, y) * a_w(c, x)`` as a map.

    ``attentions[m] = (a_h, a_w)`` with shapes ``(B, C, H, 1)`` and ``(B, C, 1, W)`` as
    :meth:`dhkd.method.CoordinateAttention.attention` returns them. The maps are drawn on the
    attention's whole range [0, 1], so a nearly constant map looks constant; with ``reference``
    (the same modules untrained) the change is drawn instead, on a scale centred at zero.
    ``spreads`` (one per module: the diagnostics' measure, :func:`dhkd.run.diagnostics.attention_site`)
    go into the titles, so the picture and the verdict name the same number.
    """
    rows, columns = len(images), len(attentions) + 1
    figure = Figure(figsize=(2.4 * columns, 2.3 * rows + 0.8), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    combined_all = [(a_h * a_w).mean(1).detach().cpu().numpy() for a_h, a_w in attentions]  # (B, H, W) each
    if reference is not None:
        combined_all = [m - (a_h * a_w).mean(1).detach().cpu().numpy() for m, (a_h, a_w) in zip(combined_all, reference)]
    for i in range(rows):
        axes[i, 0].imshow(_as_numpy_image(images[i]))
        axes[i, 0].set_title(titles[i], fontsize="small")
    for m, maps in enumerate(combined_all):
        if reference is None:
            limits, cmap, label = (0.0, 1.0), "viridis", "mean_c a_h·a_w"
        else:
            limit = max(float(np.abs(maps).max()), 1e-3)
            limits, cmap, label = (-limit, limit), "RdBu_r", "change from untrained"
        for i in range(rows):
            shown = axes[i, m + 1].imshow(maps[i], cmap=cmap, vmin=limits[0], vmax=limits[1])
        spread = "" if spreads is None else f", spread {spreads[m]:.3f}"
        axes[0, m + 1].set_title(f"{names[m]}\n{attentions[m][0].shape[1]} ch, {maps.shape[1]}×{maps.shape[2]}{spread}",
                                 fontsize="small")
        figure.colorbar(shown, ax=axes[:, m + 1], location="bottom", shrink=0.9, label=label)
    for ax in axes.flat:
        ax.set_axis_off()
    return figure


def memory_usage(weights: dict[str, torch.Tensor]) -> Figure:
    """Memory addressing. Left: mean weight of every item, per group of images (e.g. good / defective).

    Right: how many items each position reads from (weights above zero after shrinkage).
    ``weights[group]`` is ``(B, H, W, N)`` from :meth:`dhkd.method.MemoryBank.address`.
    """
    figure = Figure(figsize=(10, 3.2), layout="constrained")
    left, right = figure.subplots(1, 2, width_ratios=[2, 1])
    colours = [GOOD_COLOUR, DEFECT_COLOUR, "#55a868", "#8172b2"]
    n_items = next(iter(weights.values())).shape[-1]
    width = 0.8 / len(weights)
    for j, (group, w) in enumerate(weights.items()):
        usage = w.detach().float().reshape(-1, n_items).mean(0).cpu().numpy()
        left.bar(np.arange(n_items) + (j - (len(weights) - 1) / 2) * width, usage, width, label=group,
                 color=colours[j % len(colours)])
        used = (w.detach() > 0).sum(-1).flatten().cpu().numpy()
        right.hist(used, bins=np.arange(0.5, n_items + 1.5), alpha=0.6, label=group, color=colours[j % len(colours)])
    left.set_xlabel("memory item")
    left.set_ylabel("mean addressing weight")
    left.legend(fontsize="small")
    right.set_xlabel("items read per position")
    right.set_ylabel("positions")
    right.set_xlim(0.5, min(n_items, 12) + 0.5)
    return figure


def memory_item_maps(images: torch.Tensor, weights: torch.Tensor, titles: Sequence[str]) -> Figure:
    """Per image: which item each embedding position reads most, and how sure it is (the top weight)."""
    rows = len(images)
    figure = Figure(figsize=(7, 2.3 * rows), layout="constrained")
    axes = figure.subplots(rows, 3, squeeze=False)
    top_weight, top_item = weights.detach().max(-1)
    for i in range(rows):
        axes[i, 0].imshow(_as_numpy_image(images[i]))
        axes[i, 0].set_title(titles[i], fontsize="small")
        items = axes[i, 1].imshow(top_item[i].cpu().numpy(), cmap="tab20", vmin=0, vmax=weights.shape[-1] - 1,
                                  interpolation="nearest")
        shown = axes[i, 2].imshow(top_weight[i].cpu().numpy(), cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        if i == 0:
            axes[i, 1].set_title("most-read item", fontsize="small")
            axes[i, 2].set_title("its weight", fontsize="small")
    figure.colorbar(items, ax=axes[:, 1], location="bottom", shrink=0.8, label="item number (colours repeat)")
    figure.colorbar(shown, ax=axes[:, 2], shrink=0.8, label="top addressing weight")
    for ax in axes.flat:
        ax.set_axis_off()
    return figure


# ----------------------------------------------------------------------------- training


def schedule(config: Config, batches_per_epoch: int) -> Figure:
    """The training plan before it runs: the learning rate of every step, coloured by stage."""
    from dhkd.run.train import learning_rate, stage_of

    epochs = config.train.epochs
    steps = [(epoch, step) for epoch in range(epochs) for step in range(batches_per_epoch)]
    x = np.array([epoch + step / batches_per_epoch for epoch, step in steps])
    lr = np.array([learning_rate(config, epoch, step, batches_per_epoch) for epoch, step in steps])
    stages = np.array([stage_of(epoch, config) for epoch, _ in steps])
    figure = Figure(figsize=(7, 2.6), layout="constrained")
    ax = figure.subplots()
    for stage in (1, 2):
        chosen = stages == stage
        if chosen.any():
            ax.plot(x[chosen], lr[chosen], ".", markersize=2, color=STAGE_COLOURS[stage],
                    label=f"stage {stage}: {'masked' if stage == 2 else 'clean'} inputs")
    ax.set_xlim(0, epochs)
    ax.set_ylim(0, config.train.lr * 1.1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.set_title(f"{epochs} epochs × {batches_per_epoch} steps, lr schedule '{config.train.lr_schedule}'", fontsize="medium")
    ax.legend(fontsize="small", loc="lower left")
    ax.grid(alpha=0.3)
    return figure


def loss_curves(history: pd.DataFrame | str | Path, total_epochs: int | None = None) -> Figure:
    """Loss per epoch coloured by stage (stage 2 shaded), and throughput, from a run's ``history.csv``."""
    if not isinstance(history, pd.DataFrame):
        path = Path(history)
        history = pd.read_csv(path / HISTORY_NAME if path.is_dir() else path)
    figure = Figure(figsize=(9, 3.2), layout="constrained")
    loss_ax, speed_ax = figure.subplots(1, 2, width_ratios=[2, 1])
    for stage, part in history.groupby("stage"):
        loss_ax.plot(part["epoch"], part["loss"], "o-", color=STAGE_COLOURS.get(stage, "grey"), label=f"stage {stage}",
                     markersize=3)
    stage2 = history.loc[history["stage"] == 2, "epoch"]
    if len(stage2):
        loss_ax.axvspan(stage2.min() - 0.5, (total_epochs or stage2.max()) + 0.5, color=STAGE_COLOURS[2], alpha=0.1)
    if total_epochs:
        loss_ax.set_xlim(0.5, total_epochs + 0.5)
    loss_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    speed_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("distillation loss  Σ_s (1 − cos)")
    loss_ax.legend(fontsize="small")
    loss_ax.grid(alpha=0.3)
    speed_ax.bar(history["epoch"], history["images_per_s"], color=[STAGE_COLOURS.get(s, "grey") for s in history["stage"]])
    speed_ax.set_xlabel("epoch")
    speed_ax.set_ylabel("training images / s")
    return figure


@contextmanager
def live_loss(run_dir: str | Path, total_epochs: int | None = None, every: float = 2.0) -> Iterator[None]:
    """Redraw :func:`loss_curves` under the cell while the code inside the ``with`` block trains.

    A background thread watches ``run_dir/history.csv`` (the trainer rewrites it after every
    epoch) and updates one display; training itself stays in the main thread, so the
    kernel's interrupt button stops it cleanly with a resumable checkpoint.
    """
    from IPython.display import display

    path = Path(run_dir) / HISTORY_NAME
    handle = display("loss curves appear here after the first epoch", display_id=True)
    stop = threading.Event()
    seen = {"mtime": None}

    def redraw() -> None:
        try:
            mtime = path.stat().st_mtime_ns
        except FileNotFoundError:
            return
        if mtime == seen["mtime"]:
            return
        seen["mtime"] = mtime
        try:
            figure = loss_curves(pd.read_csv(path), total_epochs)
        except (pd.errors.EmptyDataError, KeyError, ValueError):
            return  # caught between two writes; the next poll sees the whole file
        handle.update(figure)

    def watch() -> None:
        while not stop.wait(every):
            redraw()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        redraw()


# ----------------------------------------------------------------------------- evaluation


def roc_and_pro(predictions: Predictions, fpr_limit: float = 0.3) -> Figure:
    """Image ROC, pixel ROC and the official PRO curve (the area up to ``fpr_limit`` shaded)."""
    from dhkd import metrics

    p = predictions.cpu()
    figure = Figure(figsize=(12, 3.8), layout="constrained")
    image_ax, pixel_ax, pro_ax = figure.subplots(1, 3)
    # the areas are read off the full curves (equal to the metrics up to float rounding)
    fpr, tpr, _ = metrics.roc_curve(p.scores, p.labels)
    image_ax.plot(fpr, tpr, color=DEFECT_COLOUR)
    image_ax.set_title(f"image ROC: AUROC {100 * metrics.trapezoid(fpr, tpr):.1f}")
    fpr, tpr, _ = metrics.roc_curve(p.maps.flatten(), p.masks.flatten())
    pixel_ax.set_title(f"pixel ROC: AUROC {100 * metrics.trapezoid(fpr, tpr):.1f}")
    pixel_ax.plot(*_thin(fpr, tpr), color=DEFECT_COLOUR)
    for ax in (image_ax, pixel_ax):
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.set_xlabel("false-positive rate")
        ax.set_ylabel("true-positive rate")
    fprs, pros = metrics.pro_curve(p.maps, p.masks)
    area = metrics.trapezoid(fprs, pros, fpr_limit) / fpr_limit
    fprs, pros = _thin(fprs, pros)
    pro_ax.plot(fprs, pros, color=DEFECT_COLOUR)
    inside = fprs <= fpr_limit
    pro_ax.fill_between(fprs[inside], pros[inside], alpha=0.2, color=DEFECT_COLOUR)
    pro_ax.axvline(fpr_limit, ls=":", color="grey")
    pro_ax.set_title(f"PRO curve: AUPRO@{fpr_limit} {100 * area:.1f}")
    pro_ax.set_xlabel("false-positive rate (normal pixels)")
    pro_ax.set_ylabel("per-region overlap")
    for ax in (image_ax, pixel_ax, pro_ax):
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    return figure


def score_histogram(predictions: Predictions, threshold: float | None = None) -> Figure:
    """Image scores of good and defective test images, with an optional threshold line."""
    p = predictions.cpu()
    scores, labels = p.scores.numpy(), p.labels.numpy()
    figure = Figure(figsize=(6, 3), layout="constrained")
    ax = figure.subplots()
    bins = np.linspace(scores.min(), scores.max(), 25)
    ax.hist(scores[labels == 0], bins=bins, alpha=0.6, label="good", color=GOOD_COLOUR)
    ax.hist(scores[labels == 1], bins=bins, alpha=0.6, label="defective", color=DEFECT_COLOUR)
    if threshold is not None:
        ax.axvline(threshold, color="black", ls="--", label=f"threshold {threshold:.3f}")
    ax.set_xlabel("image score (maximum of the anomaly map)")
    ax.set_ylabel("test images")
    ax.legend(fontsize="small")
    return figure


def per_defect_bars(per_defect: dict[str, dict[str, float]]) -> Figure:
    """Image AUROC, pixel AUROC and AUPRO per defect type (each scored against the good images)."""
    frame = pd.DataFrame(per_defect).T[["image_auroc", "pixel_auroc", "aupro"]] * 100
    figure = Figure(figsize=(max(5.0, 1.4 * len(frame) + 2), 3.2), layout="constrained")
    ax = figure.subplots()
    x = np.arange(len(frame))
    for j, (column, colour) in enumerate(zip(frame.columns, ["#4c72b0", "#55a868", "#dd8452"])):
        ax.bar(x + (j - 1) * 0.27, frame[column], 0.27, label=column.replace("_", " "), color=colour)
    ax.set_xticks(x, [f"{k}\n(n={per_defect[k]['n']})" for k in frame.index])
    ax.set_ylabel("%")
    ax.set_ylim(max(0.0, float(np.nanmin(frame.to_numpy())) - 5), 100.5)
    ax.legend(fontsize="small", loc="lower left")
    ax.grid(axis="y", alpha=0.3)
    return figure


def ablation_deltas(table: pd.DataFrame, metrics: Sequence[str] = ("Image AUROC", "Pixel AUROC", "AUPRO")) -> Figure:
    """Each ablation variant minus RD (points, paired by seed), with ± the spread of that
    difference as error bars: a bar whose error bar crosses zero is no measured difference.
    ``table`` is :func:`dhkd.kit.tables.ablation_table`'s frame; the baseline's own row (every
    difference zero) is left out."""
    rows = table.drop(index=[v for v in table.index if (table.loc[v, [f"Δ {m}" for m in metrics]] == 0).all()])
    figure = Figure(figsize=(4.0 * len(metrics), 0.45 * len(rows) + 1.4), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, len(metrics), sharey=True))
    y = np.arange(len(rows))
    for ax, metric in zip(axes, metrics):
        delta, spread = rows[f"Δ {metric}"].to_numpy(float), rows[f"Δ {metric} std"].to_numpy(float)
        colours = [DEFECT_COLOUR if d < 0 else GOOD_COLOUR for d in delta]
        ax.barh(y, delta, xerr=np.nan_to_num(spread), color=colours, alpha=0.85, capsize=3)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_title(f"Δ {metric} to RD (points)", fontsize="medium")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, rows.index)
    axes[0].invert_yaxis()
    seeds = sorted(set(table["Seeds"]))
    figure.suptitle(f"mean over {'/'.join(map(str, seeds))} seed(s), bars ± std of the paired difference",
                    fontsize="small")
    return figure


def map_steps(image: torch.Tensor, mask: torch.Tensor, scales: torch.Tensor, summed: torch.Tensor,
              blurred: torch.Tensor, teacher_only: torch.Tensor | None = None) -> Figure:
    """One image's anomaly map built step by step: the three scale maps (one shared range), their sum,
    the blurred sum; and, for comparison, the teacher-only map (distance to the normal mean).

    ``scales`` is ``(3, S, S)``; the other maps ``(S, S)``. Every map gets its own colourbar.
    """
    panels = [(f"scale {s + 1}: 1 − cos", scales[s], (0.0, float(scales.max()))) for s in range(len(scales))]
    panels += [("sum over scales", summed, None), ("blurred (σ = 4): M(x)", blurred, None)]
    if teacher_only is not None:
        panels.append(("teacher only (notebook 01)", teacher_only, None))
    figure = Figure(figsize=(2.5 * (len(panels) + 1), 3.0), layout="constrained")
    axes = figure.subplots(1, len(panels) + 1)
    axes[0].imshow(_as_numpy_image(image))
    if mask.any():
        axes[0].contour(mask.cpu().numpy(), levels=[0.5], colors="lime", linewidths=0.8)
    axes[0].set_title("image, defect outlined", fontsize="small")
    for ax, (title, values, limits) in zip(axes[1:], panels):
        low, high = limits or (float(values.min()), float(values.max()))
        shown = ax.imshow(values.detach().cpu().numpy(), cmap="magma", vmin=low, vmax=high)
        ax.set_title(title, fontsize="small")
        figure.colorbar(shown, ax=ax, location="bottom", shrink=0.9)
    for ax in axes:
        ax.set_axis_off()
    return figure


# ----------------------------------------------------------------------------- visual analysis


def overlay(ax, image: torch.Tensor, amap: torch.Tensor, mask: torch.Tensor, vmin: float, vmax: float,
            threshold: float | None = None, title: str = "") -> None:
    """Image, anomaly map on top (jet, half transparent), ground truth in lime, prediction dashed white."""
    ax.imshow(_as_numpy_image(image))
    ax.imshow(amap.cpu().numpy(), cmap="jet", alpha=0.45, vmin=vmin, vmax=vmax)
    if mask.any():
        ax.contour(mask.cpu().numpy(), levels=[0.5], colors="lime", linewidths=1.0)
    if threshold is not None and (amap >= threshold).any():
        ax.contour(amap.cpu().numpy(), levels=[threshold], colors="white", linewidths=0.8, linestyles="dashed")
    ax.set_title(title, fontsize="small")
    ax.set_axis_off()


def overlay_grid(images: torch.Tensor, predictions: Predictions, indices: Sequence[int], threshold: float | None = None,
                 columns: int = 4, title: str = "") -> Figure:
    """:func:`overlay` for the chosen test images; colour range shared by the whole test set."""
    p = predictions.cpu()
    vmin, vmax = float(p.maps.min()), float(p.maps.max())
    rows = max(1, -(-len(indices) // columns))
    figure = Figure(figsize=(2.6 * columns, 2.8 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, i in zip(axes.flat, indices):
        overlay(ax, images[i], p.maps[i], p.masks[i], vmin, vmax, threshold,
                f"{p.defect_types[i]} · {Path(p.paths[i]).stem}\nscore {float(p.scores[i]):.3f}")
    if title:
        figure.suptitle(title)
    colours = ScalarMappable(Normalize(vmin, vmax), cmap="jet")
    figure.colorbar(colours, ax=axes, shrink=0.6, label="anomaly map M(x)")
    return figure


def best_and_worst(predictions: Predictions, k: int = 4) -> dict[str, list[int]]:
    """Test-image indices worth looking at, by image score.

    - ``caught``: defective images scored highest (the easiest defects);
    - ``missed``: defective images scored lowest (the hardest; below the threshold they are misses);
    - ``false alarms``: good images scored highest;
    - ``quiet``: good images scored lowest.
    """
    scores = predictions.scores.cpu()
    labels = predictions.labels.cpu()
    defective = torch.nonzero(labels == 1).flatten()
    good = torch.nonzero(labels == 0).flatten()
    by_score_d = defective[torch.argsort(scores[defective], descending=True)].tolist()
    by_score_g = good[torch.argsort(scores[good], descending=True)].tolist()
    return {"caught": by_score_d[:k], "missed": by_score_d[::-1][:k], "false alarms": by_score_g[:k],
            "quiet": by_score_g[::-1][:k]}


def corruption_examples(clean: torch.Tensor, corrupted: torch.Tensor, masks: torch.Tensor) -> Figure:
    """Stage-2 inputs: clean uint8 images, the masks drawn, the corrupted (normalised) images."""
    from dhkd.data import denormalize

    rows = len(clean)
    figure = Figure(figsize=(6.5, 2.2 * rows), layout="constrained")
    axes = figure.subplots(rows, 3, squeeze=False)
    for i in range(rows):
        axes[i, 0].imshow(_as_numpy_image(clean[i]))
        axes[i, 1].imshow(masks[i].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
        axes[i, 2].imshow(denormalize(corrupted[i].cpu()).permute(1, 2, 0).numpy())
    for j, title in enumerate(["clean x (target: T(x))", "mask", "corrupted x̃ (input: T(x̃))"]):
        axes[0, j].set_title(title, fontsize="small")
    for ax in axes.flat:
        ax.set_axis_off()
    return figure


def masking_errors(clean: torch.Tensor, corrupted: torch.Tensor, masks: torch.Tensor,
                   errors: dict[str, torch.Tensor]) -> Figure:
    """The masking probe, image by image: the clean image, its corruption (the corrupted region
    outlined), then each error map of ``errors`` (``(B, S, S)``: ``1 - cos`` to the clean image's
    teacher features, e.g. of a student and of copying the corrupted input) on one shared scale
    from 0, the corrupted region outlined, so that "the error is high inside" reads directly."""
    from dhkd.data import denormalize

    rows, columns = len(clean), 2 + len(errors)
    figure = Figure(figsize=(2.3 * columns, 2.2 * rows + 0.8), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    top = max(float(e.max()) for e in errors.values())
    for i in range(rows):
        mask = masks[i].float().cpu().numpy()
        axes[i, 0].imshow(_as_numpy_image(clean[i]))
        axes[i, 1].imshow(denormalize(corrupted[i].cpu()).clamp(0, 1).permute(1, 2, 0).numpy())
        for j, error in enumerate(errors.values(), start=2):
            shown = axes[i, j].imshow(error[i].cpu().numpy(), cmap="inferno", vmin=0.0, vmax=top)
        for j in range(1, columns):
            axes[i, j].contour(mask, levels=[0.5], colors="#00d000", linewidths=0.8)
    for j, title in enumerate(["clean x", "corrupted x̃", *errors]):
        axes[0, j].set_title(title, fontsize="small")
    figure.colorbar(shown, ax=axes[:, 2:], location="bottom", shrink=0.8, label="1 - cos to T(x), mean over scales")
    for ax in axes.flat:
        ax.set_axis_off()
    return figure


# ----------------------------------------------------------------------------- diagnostics


def addition_diagnostics(diagnostics: dict) -> Figure:
    """Does each addition act? One panel per addition from an evaluation's ``diagnostics``
    (:mod:`dhkd.run.diagnostics`), on fixed scales starting at 0, with the untrained value (dotted)
    and the inert threshold (dashed) drawn, so a small effect looks small."""
    figure = Figure(figsize=(14, 3.3), layout="constrained")
    axes = figure.subplots(1, 4)
    thresholds = diagnostics["thresholds"]
    panels = [(_fusion_panel, "fusion"), (_attention_panel, "attention"), (_memory_panel, "memory"),
              (_masking_panel, "masking")]
    for ax, (draw, name) in zip(axes, panels):
        entry = diagnostics[name]
        if entry.get("enabled") is False and name != "masking":
            ax.text(0.5, 0.5, f"{name}: off", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        draw(ax, entry, thresholds)
        verdict = {True: "inert", False: "acts", None: "off"}[entry.get("inert")]
        ax.set_title(f"{name}: {verdict}", color=DEFECT_COLOUR if entry.get("inert") else "black")
        ax.grid(axis="y", alpha=0.3)
    return figure


def _fusion_panel(ax, entry: dict, thresholds: dict) -> None:
    """Per target scale: its mixing weights and the share of the fused map that is borrowed."""
    shares = entry["borrowed_share"]
    x = np.arange(len(shares))
    ax.bar(x - 0.2, shares, 0.4, color=GOOD_COLOUR, label="borrowed share")
    weights = entry.get("mixing_weights")
    if weights is not None:
        largest = [max(w for t, w in enumerate(row) if t != s) for s, row in enumerate(weights)]
        ax.bar(x + 0.2, largest, 0.4, color="#55a868", label="largest mixing weight")
        ax.axhline(entry["mixing_untrained"], color="grey", linestyle=":", label="untrained weight")
    ax.axhline(thresholds["fusion_min_borrowed_share"], color=DEFECT_COLOUR, linestyle="--", label="inert below")
    ax.set_xticks(x, [f"G{i + 1}" for i in x])
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize="x-small", loc="upper left")


def _attention_panel(ax, entry: dict, thresholds: dict) -> None:
    """Per site: spread of a_h*a_w over positions (std / mean) and mean |a - 0.25|."""
    names = list(entry["sites"])
    x = np.arange(len(names))
    ax.bar(x - 0.2, [entry["sites"][n]["spread"] for n in names], 0.4, color=GOOD_COLOUR, label="spread over positions")
    ax.bar(x + 0.2, [entry["sites"][n]["mean_abs_from_untrained"] for n in names], 0.4, color="#55a868",
           label=f"mean |a - {entry['untrained']}|")
    ax.axhline(thresholds["attention_min_spread"], color=DEFECT_COLOUR, linestyle="--", label="inert below")
    ax.set_xticks(x, [n.replace("decoder.attentions.", "dec ").replace("bottleneck.attention", "OCBE") for n in names])
    ax.set_ylim(0, max(0.25, *(entry["sites"][n]["spread"] for n in names)) * 1.1)
    ax.legend(fontsize="x-small", loc="upper left")


def _memory_panel(ax, entry: dict, thresholds: dict) -> None:
    """Read-out share, item use (as shares of the bank) and peakedness, all on [0, 1]."""
    items = entry["items"]
    values = {"read-out\nshare": entry["readout_share"], "items\nused": entry["items_used"] / items,
              "effective\nitems": entry["effective_items"] / items, "max\nweight": entry["mean_max_weight"],
              "entropy /\nlog N": entry["entropy_ratio"]}
    ax.bar(range(len(values)), list(values.values()), color=GOOD_COLOUR)
    ax.axhline(thresholds["memory_min_readout_share"], color=DEFECT_COLOUR, linestyle="--", label="inert below (share)")
    ax.set_xticks(range(len(values)), list(values), fontsize="small")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"share (bank of {items} items)")
    ax.legend(fontsize="x-small", loc="upper right")


def _masking_panel(ax, entry: dict, thresholds: dict) -> None:
    """The student's error inside and outside corrupted regions, beside the corruption's own."""
    if "error_inside" not in entry:
        ax.text(0.5, 0.5, "no probe", ha="center", va="center", transform=ax.transAxes)
        return
    values = {"student\noutside": entry["error_outside"], "student\ninside": entry["error_inside"],
              "copying\ninside": entry["corruption_inside"]}
    ax.bar(range(3), list(values.values()), color=[GOOD_COLOUR, DEFECT_COLOUR, "grey"])
    ax.set_xticks(range(3), list(values), fontsize="small")
    ax.set_ylim(0, max(values.values()) * 1.2 or 1.0)
    ax.set_ylabel("1 - cos to the clean features")
    ax.text(0.02, 0.95, f"restoration {entry['restoration']:.2f} (inert below {thresholds['masking_min_restoration']})",
            transform=ax.transAxes, fontsize="small", va="top")


CURVE_METRICS = {"image_auroc": "image AUROC", "pixel_auroc": "pixel AUROC", "aupro": "AUPRO"}


def learning_curves(curves: dict[str, pd.DataFrame], reference: dict[str, float] | None = None,
                    stage2_from: dict[str, int] | None = None) -> Figure:
    """One panel per metric, one line per run: ``curves`` maps a label to ``dhkd curve``'s rows
    (``epoch`` and the metrics as fractions, one set of scales). ``reference``: a detector's value per
    metric (drawn flat, e.g. the training-free reference); ``stage2_from``: a run's first stage-2 epoch
    (marked), since a constant-rate curve changes regime there."""
    figure = Figure(figsize=(11, 3.3), layout="constrained")
    axes = figure.subplots(1, len(CURVE_METRICS), sharex=True)
    for ax, (metric, title) in zip(axes, CURVE_METRICS.items()):
        for label, rows in curves.items():
            line, = ax.plot(rows["epoch"], 100 * rows[metric], "o-", markersize=3, label=label)
            if stage2_from and label in stage2_from:
                ax.axvline(stage2_from[label], color=line.get_color(), linestyle=":", alpha=0.6)
        if reference and metric in reference:
            ax.axhline(100 * reference[metric], color="black", linestyle="--", linewidth=1, label="reference, no training")
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("% on the test split")
    axes[-1].legend(fontsize="small", loc="lower right")
    return figure
