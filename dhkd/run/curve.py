"""A learning curve: every checkpoint ``train.keep_every`` kept, scored on the test split.

``dhkd curve RUN`` loads the test split and the teacher's features of it once, then for each kept
checkpoint (``RUN/kept/epoch-NNNN.pt``, and the final ``checkpoint.pt``) runs only the student and
the kit's own map and metrics (:func:`dhkd.run.evaluate.maps_from_features`,
:func:`dhkd.run.evaluate.compute_metrics`), for each set of scales asked for (``--scales 2,3``: the
map of those scales alone; the per-scale table of a run at every kept epoch).

It is a diagnostic, scored on the test split: a curve shows how the metrics move with the budget,
and picking the best epoch from it would be tuning on the test images. The kit reports the last
epoch, as RD4AD does (RD++ and SimpleNet keep the best test epoch).
"""

from __future__ import annotations

import csv
import io
import math
import sys
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from dhkd.config import Config, read_config
from dhkd.data import CategorySplit, StreamedImages, normalize, stream_split
from dhkd.errors import DhkdError
from dhkd.io import atomic_write_text
from dhkd.method.anomaly_map import anomaly_map, image_scores, without_padding
from dhkd.run.budget import available_bytes, feature_bytes, pixel_stride
from dhkd.run.build import build_model
from dhkd.run.checkpoint import check_compatible, load_checkpoint
from dhkd.run.device import resolve_device, set_memory_format
from dhkd.run.evaluate import Predictions, compute_metrics, run_test_data, student_features
from dhkd.run.folder import CHECKPOINT_NAME, CONFIG_NAME, CURVE_NAME, kept_checkpoints

METRICS = ("image_auroc", "pixel_auroc", "aupro")


def curve_points(run_dir: Path) -> list[tuple[int, Path]]:
    """``(epoch, checkpoint)`` of every kept checkpoint, and of the final one when no kept file has its epoch."""
    points = dict(kept_checkpoints(run_dir))
    final = run_dir / CHECKPOINT_NAME
    if final.exists():
        epoch = int(load_checkpoint(final).get("epoch", 0))
        points.setdefault(epoch, final)
    if not points:
        raise DhkdError(f"{run_dir} holds no checkpoint to score",
                        "train with --set train.keep_every=N (every N epochs is kept in RUN/kept/), then run dhkd curve")
    return sorted(points.items())


class _TestFeatures:
    """The teacher's features of the test split, computed once and held (on ``device``) when they fit
    in half the free memory, else computed again per checkpoint (said on stderr)."""

    def __init__(self, model: torch.nn.Module, split: CategorySplit, config: Config, device: torch.device) -> None:
        self.model, self.split, self.config, self.device = model, split, config, device
        self.batch = max(1, config.eval.batch_size)
        free = available_bytes(device)
        need = len(split) * feature_bytes(config)
        self.held: list[list[torch.Tensor]] | None = None
        if free is not None and need <= free // 2:
            self.held = [self._compute(start) for start in range(0, len(split), self.batch)]
        else:
            print(f"note: the test split's teacher features ({need / 2**30:.1f} GiB) do not fit in half the free "
                  "memory; the teacher runs again for every checkpoint", file=sys.stderr, flush=True)

    @torch.inference_mode()
    def _compute(self, start: int) -> list[torch.Tensor]:
        images = self.split.images
        if isinstance(images, StreamedImages) and start + self.batch < len(images):
            images.prefetch(slice(start + self.batch, start + 2 * self.batch))
        x = normalize(images[start:start + self.batch].to(self.device))
        if self.config.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model.teacher(x)

    def batches(self) -> list[tuple[int, list[torch.Tensor]]]:
        starts = range(0, len(self.split), self.batch)
        if self.held is not None:
            return list(zip(starts, self.held))
        return [(start, self._compute(start)) for start in starts]


@torch.inference_mode()
def _score(model: torch.nn.Module, features: _TestFeatures, config: Config, device: torch.device,
           scale_sets: list[tuple[int, ...]], stride: int) -> dict[tuple[int, ...], Predictions]:
    """:func:`dhkd.run.evaluate.score_split` from held teacher features, for several sets of scales
    at once (the student runs once per batch; each set sums its own scales' maps)."""
    split = features.split
    valid = None if split.valid is None else split.valid.to(device)
    kept = (lambda x: x) if stride == 1 else (lambda x: x[:, ::stride, ::stride].contiguous())
    maps: dict[tuple[int, ...], list[torch.Tensor]] = {scales: [] for scales in scale_sets}
    scores: dict[tuple[int, ...], list[torch.Tensor]] = {scales: [] for scales in scale_sets}
    for start, teacher in features.batches():
        inside = None if valid is None else valid[start:start + features.batch]
        student = student_features(model, teacher, config, device)
        for scales in scale_sets:
            part = anomaly_map(teacher, student, config.data.shape, config.eval.blur_sigma, scales)
            part = without_padding(part.float(), inside)
            scores[scales].append(image_scores(part, inside))
            maps[scales].append(kept(part))
    return {scales: Predictions(torch.cat(maps[scales]), torch.cat(scores[scales]), kept(split.masks.to(device)),
                                split.labels.to(device), list(split.defect_types), [str(p) for p in split.paths],
                                None if split.has_mask is None else split.has_mask.to(device),
                                None if valid is None else kept(valid))
            for scales in scale_sets}


def score_curve(run_dir: str | Path, data_root: str | Path | None = None, device: str | None = "auto",
                scale_sets: list[tuple[int, ...]] | None = None, progress: bool = True,
                last_only: bool = False, write: bool = True) -> list[dict[str, Any]]:
    """One row per kept checkpoint and set of scales: ``epoch``, ``scales`` (e.g. ``"2+3"``), the three
    metrics and each defect kind's image AUROC (``image_auroc/<kind>``), as fractions. ``last_only``:
    the final checkpoint alone (a run's per-scale table). Writes ``RUN/curve.csv`` (only that file,
    atomically) unless ``write`` is False."""
    run_dir = Path(run_dir)
    info, data = run_test_data(run_dir, data_root)
    category = info["category"]
    config = read_config(run_dir / CONFIG_NAME)
    scale_sets = scale_sets or [tuple(config.eval.scales)]
    for scales in scale_sets:
        if not scales or len(set(scales)) != len(scales) or any(s not in (1, 2, 3) for s in scales):
            raise DhkdError(f"--scales {','.join(map(str, scales))}: each of 1, 2, 3 (1 = the finest scale) at most once",
                            "e.g. --scales 1,2,3 (the kit's map) --scales 2,3 (the finest left out)")
    resolved = resolve_device(device)
    points = curve_points(run_dir)[-1:] if last_only else curve_points(run_dir)
    model = set_memory_format(build_model(config.model, config.train.seed).to(resolved).eval(), config.train.channels_last)
    split = stream_split(data, category, "test", config.data.fit(), progress=progress)
    stride, note = pixel_stride(len(split), config.data.shape, resolved)
    if note:
        print(f"note: {note}", file=sys.stderr, flush=True)
    features = _TestFeatures(model, split, config, resolved)
    rows = []
    for epoch, path in tqdm(points, desc=f"curve {category}", unit="checkpoint", disable=not progress):
        state = load_checkpoint(path, map_location=resolved)
        check_compatible(state, config, path)
        model.student.load_state_dict(state["student"])
        model.eval()
        for scales, predictions in _score(model, features, config, resolved, scale_sets, stride).items():
            scored = compute_metrics(predictions, config, full=False)
            row = {"epoch": epoch, "scales": "+".join(map(str, scales)), **{m: scored[m] for m in METRICS}}
            row.update({f"image_auroc/{kind}": value["image_auroc"] for kind, value in scored["per_defect"].items()})
            rows.append(row)
    if write:
        atomic_write_text(run_dir / CURVE_NAME, _csv(rows))
    return rows


def _csv(rows: list[dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) and math.isfinite(v) else v) for k, v in row.items()})
    return out.getvalue()


def read_curve(run_dir: str | Path) -> list[dict[str, Any]]:
    """``RUN/curve.csv`` as rows of numbers (``epoch`` an int, ``scales`` text)."""
    path = Path(run_dir) / CURVE_NAME
    if not path.exists():
        raise DhkdError(f"{path} does not exist", f"score the run first: dhkd curve --run {run_dir}")
    with path.open(newline="") as handle:
        return [{k: (v if k == "scales" else int(v) if k == "epoch" else float(v)) for k, v in row.items()}
                for row in csv.DictReader(handle)]


def curve_text(rows: list[dict[str, Any]]) -> str:
    """The curve as a plain table in percent, one line per epoch and set of scales."""
    kinds = [k for k in rows[0] if k.startswith("image_auroc/")] if rows else []
    head = ["epoch", "scales", "image AUROC", "pixel AUROC", "AUPRO"] + [k.split("/", 1)[1] for k in kinds]
    lines = ["  ".join(f"{h:>11}" for h in head)]
    for row in rows:
        values = [f"{row['epoch']:>11}", f"{row['scales']:>11}"]
        values += [f"{100 * row[k]:>11.2f}" for k in (*METRICS, *kinds)]
        lines.append("  ".join(values))
    return "\n".join(lines)
