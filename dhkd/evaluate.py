"""Evaluation of a trained run: anomaly maps for the test split, then the metrics.

Maps are computed in batches on the device and kept there for the metrics; they are also
saved (float16) as ``predictions.npz`` in the run folder so the notebooks and widgets can
explore thresholds without running the model again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from dhkd import metrics
from dhkd.anomaly_map import anomaly_map, image_scores
from dhkd.checkpoint import CHECKPOINT_NAME, check_compatible, load_checkpoint
from dhkd.config import Config, read_config
from dhkd.data import CategorySplit, load_split, normalize, validate_category
from dhkd.diagnostics import diagnose_run
from dhkd.errors import DhkdError
from dhkd.io import atomic_write, atomic_write_json
from dhkd.models import DHKD, build_model
from dhkd.train import CONFIG_NAME, autocast, read_run_info, resolve_device, set_memory_format

PREDICTIONS_NAME = "predictions.npz"
METRICS_NAME = "metrics.json"


@dataclass
class Predictions:
    """Everything needed to score and explore one test split; tensors share one device."""

    maps: torch.Tensor  # float32 (N, S, S)
    scores: torch.Tensor  # float32 (N,)
    masks: torch.Tensor  # bool (N, S, S)
    labels: torch.Tensor  # int64 (N,)
    defect_types: list[str]
    paths: list[str]

    def cpu(self) -> "Predictions":
        return Predictions(self.maps.cpu(), self.scores.cpu(), self.masks.cpu(), self.labels.cpu(),
                           self.defect_types, self.paths)


def load_model(run_dir: str | Path, device: str | torch.device | None = "auto") -> tuple[DHKD, Config]:
    """The trained model of a run folder, in eval mode on ``device``."""
    run_dir = Path(run_dir)
    config_path = run_dir / CONFIG_NAME
    if not config_path.exists():
        raise DhkdError(f"{run_dir} is not a dhkd run folder (no {CONFIG_NAME})", "point --run at a folder made by dhkd train --out")
    config = read_config(config_path)
    device = device if isinstance(device, torch.device) else resolve_device(device)
    state = load_checkpoint(run_dir / CHECKPOINT_NAME, map_location=device)
    check_compatible(state, config, run_dir / CHECKPOINT_NAME)
    model = build_model(config.model, config.train.seed)
    model.student.load_state_dict(state["student"])
    model = model.to(device).eval()
    model = set_memory_format(model, config.train.channels_last)  # as in training
    return model, config


@torch.inference_mode()
def predict(model: DHKD, split: CategorySplit, config: Config, device: torch.device, progress: bool = True) -> Predictions:
    """Anomaly maps and image scores of a whole split, batch by batch on ``device``."""
    model.eval()
    torch.backends.cudnn.benchmark = True  # one input shape per batch size: let cuDNN pick its kernels
    images = split.images.to(device)
    maps = []
    batch = max(1, config.eval.batch_size)
    for start in tqdm(range(0, len(images), batch), desc="anomaly maps", unit="batch", disable=not progress):
        x = normalize(images[start:start + batch])
        if config.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        teacher = model.teacher(x)  # fp32 always: the reference the student is scored against
        with autocast(device, config.train.amp):
            student = [feature.float() for feature in model.student(teacher)]
        maps.append(anomaly_map(teacher, student, config.data.image_size, config.eval.blur_sigma))
    all_maps = torch.cat(maps).float()
    return Predictions(all_maps, image_scores(all_maps), split.masks.to(device), split.labels.to(device),
                       list(split.defect_types), [str(p) for p in split.paths])


def compute_metrics(predictions: Predictions, config: Config) -> dict[str, Any]:
    """Image AUROC, pixel AUROC, AUPRO (official) and RD4AD's PRO, plus per-defect-type scores."""
    p = predictions
    result: dict[str, Any] = {
        "image_auroc": metrics.image_auroc(p.scores, p.labels),
        "pixel_auroc": metrics.pixel_auroc(p.maps, p.masks),
        "aupro": metrics.aupro(p.maps, p.masks, fpr_limit=config.eval.fpr_limit),
        "pro_rd4ad": metrics.pro_rd4ad(p.maps, p.masks, num_thresholds=config.eval.pro_thresholds),
    }
    result["per_defect"] = per_defect_metrics(p, config)
    return result


def per_defect_metrics(p: Predictions, config: Config) -> dict[str, dict[str, float]]:
    """Each defect type scored against the good test images alone."""
    good = [i for i, kind in enumerate(p.defect_types) if kind == "good"]
    table = {}
    for kind in sorted(set(p.defect_types) - {"good"}):
        chosen = torch.tensor(good + [i for i, k in enumerate(p.defect_types) if k == kind], device=p.maps.device)
        maps, masks = p.maps[chosen], p.masks[chosen]
        table[kind] = {
            "n": len(chosen) - len(good),
            "image_auroc": metrics.image_auroc(p.scores[chosen], p.labels[chosen]) if good else float("nan"),
            "pixel_auroc": metrics.pixel_auroc(maps, masks),
            "aupro": metrics.aupro(maps, masks, fpr_limit=config.eval.fpr_limit),
        }
    return table


def save_predictions(path: Path, predictions: Predictions) -> None:
    p = predictions.cpu()
    arrays = {
        "maps": p.maps.numpy().astype(np.float16),
        "scores": p.scores.numpy(),
        "masks": np.packbits(p.masks.numpy(), axis=-1),
        "mask_width": np.array(p.masks.shape[-1]),
        "labels": p.labels.numpy(),
        "defect_types": np.array(p.defect_types),
        "paths": np.array(p.paths),
    }

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a handle, so numpy does not append ".npz" to the name
            np.savez_compressed(handle, **arrays)

    atomic_write(path, write)


def load_predictions(run_dir: str | Path) -> Predictions:
    """The maps saved by the last evaluation of a run (float16 on disk, float32 here)."""
    path = Path(run_dir) / PREDICTIONS_NAME
    if not path.exists():
        raise DhkdError(f"no {PREDICTIONS_NAME} in {run_dir}", f"evaluate first: dhkd evaluate --run {run_dir} --json OUT.json")
    with np.load(path) as data:
        width = int(data["mask_width"])
        masks = np.unpackbits(data["masks"], axis=-1, count=width).astype(bool)
        return Predictions(torch.from_numpy(data["maps"].astype(np.float32)), torch.from_numpy(data["scores"]),
                           torch.from_numpy(masks), torch.from_numpy(data["labels"]),
                           [str(s) for s in data["defect_types"]], [str(s) for s in data["paths"]])


def evaluate_run(run_dir: str | Path, data_root: str | Path | None = None, device: str | None = "auto",
                 json_path: str | Path | None = None, progress: bool = True, diagnostics: bool = True) -> dict[str, Any]:
    """Evaluate a trained run on its category's test split; writes metrics (and maps) to disk.
    ``diagnostics``: also record whether each addition acts (:mod:`dhkd.diagnostics`), from a few
    training images."""
    started = time.perf_counter()
    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    data_root = Path(data_root) if data_root is not None else Path(info["data_root"])
    category = info["category"]
    validate_category(data_root, category)
    resolved = resolve_device(device)
    model, config = load_model(run_dir, resolved)
    split = load_split(data_root, category, "test", config.data.image_size, progress=progress)
    predictions = predict(model, split, config, resolved, progress)
    scores = compute_metrics(predictions, config)
    result = {
        "category": category,
        "image_auroc": scores["image_auroc"],
        "pixel_auroc": scores["pixel_auroc"],
        "aupro": scores["aupro"],
        "pro_rd4ad": scores["pro_rd4ad"],
        "n_test": len(split),
        "n_defective": int(split.labels.sum()),
        "seconds": round(time.perf_counter() - started, 3),
        "profile": config.profile,
        "teacher": config.model.teacher.name,
        "epochs": info.get("epochs_done"),
        "train_seconds": info.get("train_seconds"),
        "device": str(resolved),
        "data_root": str(data_root),
        "per_defect": scores["per_defect"],
    }
    if diagnostics:
        train_split = load_split(data_root, category, "train", config.data.image_size, progress=progress)
        result["diagnostics"] = diagnose_run(model, config, train_split.images, run_dir)
        result["seconds"] = round(time.perf_counter() - started, 3)
    save_predictions(run_dir / PREDICTIONS_NAME, predictions)
    atomic_write_json(run_dir / METRICS_NAME, result)
    if json_path is not None:
        atomic_write_json(Path(json_path), result)
    return result
