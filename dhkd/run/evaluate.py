"""Evaluation of a trained run: anomaly maps for the test split, then the metrics.

Maps are computed in batches on the device and kept there for the metrics; they are also
saved (float16) as ``predictions.npz`` in the run folder so the notebooks and widgets can
explore thresholds without running the model again.

The evaluation also records ``dhkd predict``'s default threshold in metrics.json
(:func:`normal_threshold`): it is chosen from the **calibration** images, the defect-free
training images that training held back (``data.calibration_share``, :mod:`dhkd.data.holdout`),
so neither the student nor the test metrics have seen them. A run that held none back (share 0,
or trained before the setting) falls back on the defect-free test images, and the record says so.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from dhkd import metrics
from dhkd.method.anomaly_map import anomaly_map, image_scores, mean_features, teacher_only_map, without_padding
from dhkd.run.checkpoint import check_compatible, load_checkpoint
from dhkd.config import Config, read_config
from dhkd.data import CategorySplit, StreamedImages, normalize, stream_split, validate_category
from dhkd.data.dataset_file import DataSetFile, as_dataset, check_same_split, is_dataset_file, recorded_dataset
from dhkd.run.diagnostics import diagnose_run
from dhkd.errors import DhkdError
from dhkd.io import atomic_write, atomic_write_json
from dhkd.method import DHKD
from dhkd.run.build import build_model
from dhkd.run.folder import (CHECKPOINT_NAME, CONFIG_NAME, METRICS_NAME, PREDICTIONS_NAME, RUN_INFO_NAME, START_NAME,
                             no_checkpoint_error, read_run_info, stopped_before_checkpoint)
from dhkd.run.budget import pixel_stride
from dhkd.run.device import autocast, resolve_device, set_memory_format



@dataclass
class Predictions:
    """Everything needed to score and explore one test split; tensors share one device."""

    maps: torch.Tensor  # float32 (N, H, W); 0 on padding
    scores: torch.Tensor  # float32 (N,)
    masks: torch.Tensor  # bool (N, H, W)
    labels: torch.Tensor  # int64 (N,)
    defect_types: list[str]
    paths: list[str]
    has_mask: torch.Tensor | None = None  # bool (N,): False for a defective image without a mask; None: all have one
    valid: torch.Tensor | None = None  # bool (N, H, W): the images, not their padding (data.resize keep_aspect); None: all

    def cpu(self) -> "Predictions":
        return Predictions(self.maps.cpu(), self.scores.cpu(), self.masks.cpu(), self.labels.cpu(),
                           self.defect_types, self.paths, None if self.has_mask is None else self.has_mask.cpu(),
                           None if self.valid is None else self.valid.cpu())

    def mask_known(self) -> torch.Tensor:
        """bool (N,): images whose pixels are labelled (good ones, and defective ones with a mask)."""
        if self.has_mask is None:
            return torch.ones_like(self.labels, dtype=torch.bool)
        return self.has_mask.to(self.labels.device) | (self.labels == 0)


def load_model(run_dir: str | Path, device: str | torch.device | None = "auto") -> tuple[DHKD, Config]:
    """The trained model of a run folder, in eval mode on ``device``."""
    model, config, _ = _load_model(run_dir, device)
    return model, config


def load_start_model(run_dir: str | Path, device: str | torch.device | None = "auto") -> tuple[DHKD, Config]:
    """The model of a run as training started it (``start.pt``: after the fusion's scale
    matching and the memory's k-means, before the first optimiser step), in eval mode."""
    if not (Path(run_dir) / START_NAME).exists():
        raise DhkdError(f"{run_dir} has no {START_NAME} (the weights training started from): it was trained by an "
                        f"older version of the kit", "train the run again (dhkd train, or notebook 03) to get one")
    model, config, _ = _load_model(run_dir, device, START_NAME)
    return model, config


def _load_model(run_dir: str | Path, device: str | torch.device | None,
                name: str = CHECKPOINT_NAME) -> tuple[DHKD, Config, dict[str, Any]]:
    """:func:`load_model`, plus the checkpoint's state (for its position: epochs done)."""
    run_dir = Path(run_dir)
    config_path = run_dir / CONFIG_NAME
    if stopped_before_checkpoint(run_dir):
        raise no_checkpoint_error(run_dir, "evaluate")
    if not config_path.exists():
        raise DhkdError(f"{run_dir} is not a dhkd run folder (no {CONFIG_NAME})", "point --run at a folder made by dhkd train --out")
    config = read_config(config_path)  # checked as a new run's config, before any model is built
    device = device if isinstance(device, torch.device) else resolve_device(device)
    state = load_checkpoint(run_dir / name, map_location=device)
    check_compatible(state, config, run_dir / name)
    model = build_model(config.model, config.train.seed)
    try:
        model.student.load_state_dict(state["student"])
    except RuntimeError as error:  # missing or unexpected keys, other shapes: not this kit's model for this config
        raise DhkdError(f"the weights in {run_dir / name} do not fit the model its config describes: "
                        f"{str(error).strip().splitlines()[0][:200]} ...",
                        "the checkpoint comes from another kit version or was edited: train the run again") from None
    model = model.to(device).eval()
    model = set_memory_format(model, config.train.channels_last)  # as in training
    return model, config, state


@torch.inference_mode()
def teacher_features(teacher: torch.nn.Module, images: torch.Tensor, batch: int = 8) -> list[torch.Tensor]:
    """The teacher's three feature maps of uint8 images ``(N, 3, S, S)``, in batches on the
    teacher's device, returned on the CPU in float32."""
    device = next(teacher.parameters()).device
    parts = [teacher(normalize(images[i:i + batch].to(device))) for i in range(0, len(images), batch)]
    return [torch.cat([p[s] for p in parts]).float().cpu() for s in range(len(parts[0]))]


def teacher_only_maps(teacher: torch.nn.Module, normal_images: torch.Tensor, images: torch.Tensor, size: int | tuple[int, int],
                      sigma: float, batch: int = 8) -> torch.Tensor:
    """Notebook 01's detector on ``images``: 1 - cos to the mean teacher features of
    ``normal_images`` per position, upsampled, summed and blurred like the student's map."""
    normal_mean = mean_features(teacher_features(teacher, normal_images, batch))
    return torch.cat([teacher_only_map(teacher_features(teacher, images[i:i + batch], batch), normal_mean, size, sigma)
                      for i in range(0, len(images), batch)])


def training_progress(state: dict[str, Any], config: Config, info: dict[str, Any]) -> dict[str, Any]:
    """``epochs_done`` (in the checkpoint that is evaluated), ``epochs`` (planned) and ``finished``."""
    done, planned = int(state.get("epoch", 0)), int(config.train.epochs)
    finished = done >= planned and not state.get("step") and info.get("status", "done") == "done"
    return {"epochs_done": done, "epochs": planned, "finished": finished}


def _unfinished_warning(run_dir: Path, progress: dict[str, Any], info: dict[str, Any]) -> str:
    status = info.get("status", "?")
    return (f"warning: {run_dir} did not finish its training: {progress['epochs_done']} of {progress['epochs']} epochs "
            f"in its checkpoint (run.json status: {status}); these metrics are of that unfinished model. "
            f"Finish it with the same dhkd train command plus --resume, then evaluate again.")


def _run_info(run_dir: Path) -> dict[str, Any]:
    """run.json, checked for what evaluation needs."""
    try:
        info = read_run_info(run_dir)
    except ValueError:
        info = None
    if not isinstance(info, dict) or not isinstance(info.get("category"), str):
        raise DhkdError(f"{run_dir / RUN_INFO_NAME} is damaged (not the JSON dhkd train writes)",
                        "train the run again, or restore the file from a copy")
    return info


def _test_data_root(run_dir: Path, info: dict[str, Any], data_root: str | Path | None) -> Path:
    """The data the run is evaluated on: ``data_root`` when given, else where it was trained;
    data that is gone or moved is named, with how to point at its new place."""
    category = info["category"]
    if data_root is not None:
        return Path(data_root)
    if not isinstance(info.get("data_root"), str):
        raise DhkdError(f"{run_dir / RUN_INFO_NAME} does not record the data the run was trained on",
                        f"give it: dhkd evaluate --run {run_dir} --data-root ROOT ...")
    root = Path(info["data_root"])
    if not (root / category).is_dir():
        missing = root if not root.is_dir() else root / category
        raise DhkdError(f"the data {run_dir} was trained on is gone or moved: {missing} does not exist "
                        f"(run.json records data_root {root}, category {category})",
                        f"point at its new place: dhkd evaluate --run {run_dir} --data-root NEW_ROOT ... "
                        f"(NEW_ROOT is the folder that holds {category}/)")
    return root


@torch.inference_mode()
def score_split(model: DHKD, split: CategorySplit, config: Config, device: torch.device, progress: bool = True,
                stride: int = 1) -> Predictions:
    """Anomaly maps and image scores of a whole split, batch by batch on ``device``. The image
    scores come from the full maps; ``stride`` > 1 keeps every ``stride``-th pixel in each
    direction of the maps, masks and valid masks (for the pixel metrics, when all would not fit:
    :func:`dhkd.run.budget.pixel_stride`)."""
    model.eval()
    torch.backends.cudnn.benchmark = True  # one input shape per batch size: let cuDNN pick its kernels
    images = split.images.to(device)  # a tensor, or StreamedImages decoding each batch (the next one prefetched)
    maps, scores = [], []
    batch = max(1, config.eval.batch_size)
    valid = None if split.valid is None else split.valid.to(device)
    kept = (lambda x: x) if stride == 1 else (lambda x: x[:, ::stride, ::stride].contiguous())
    for start in tqdm(range(0, len(images), batch), desc="anomaly maps", unit="batch", disable=not progress):
        if isinstance(images, StreamedImages) and start + batch < len(images):
            images.prefetch(slice(start + batch, start + 2 * batch))
        inside = None if valid is None else valid[start:start + batch]
        part = without_padding(batch_maps(model, images[start:start + batch], config, device).float(), inside)
        scores.append(image_scores(part, inside))
        maps.append(kept(part))
    return Predictions(torch.cat(maps), torch.cat(scores), kept(split.masks.to(device)), split.labels.to(device),
                       list(split.defect_types), [str(p) for p in split.paths],
                       None if split.has_mask is None else split.has_mask.to(device),
                       None if valid is None else kept(valid))


@torch.inference_mode()
def batch_maps(model: DHKD, images: torch.Tensor, config: Config, device: torch.device) -> torch.Tensor:
    """uint8 images ``(B, 3, H, W)`` on ``device`` -> anomaly maps ``(B, H, W)`` (evaluation and dhkd predict alike)."""
    x = normalize(images)
    if config.train.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    teacher = model.teacher(x)  # fp32 always: the reference the student is scored against
    return maps_from_features(model, teacher, config, device)


@torch.inference_mode()
def maps_from_features(model: DHKD, teacher: list[torch.Tensor], config: Config, device: torch.device,
                       scales: tuple[int, ...] | None = None) -> torch.Tensor:
    """The teacher's features of a batch -> its anomaly maps ``(B, H, W)``: the student's side of
    :func:`batch_maps`, for tools that hold the teacher's features already (:mod:`dhkd.run.curve`).
    ``scales``: the distilled scales summed (1 = finest), ``eval.scales`` when None."""
    chosen = tuple(config.eval.scales) if scales is None else tuple(scales)
    return anomaly_map(teacher, student_features(model, teacher, config, device), config.data.shape,
                       config.eval.blur_sigma, chosen)


@torch.inference_mode()
def student_features(model: DHKD, teacher: list[torch.Tensor], config: Config, device: torch.device) -> list[torch.Tensor]:
    """The student's reconstruction of the teacher's features, in float32 (``train.amp`` as in training)."""
    with autocast(device, config.train.amp):
        return [feature.float() for feature in model.student(teacher)]


def compute_metrics(predictions: Predictions, config: Config, full: bool = True) -> dict[str, Any]:
    """Image AUROC, pixel AUROC, AUPRO (official) and RD4AD's PRO, plus per-defect-type scores.

    Image AUROC uses every test image; the pixel metrics only the images whose pixels are
    labelled (defective images without a mask are left out of them; NaN when none has one), and
    only their pixels, not the padding around them (``valid``). ``full=False`` leaves out RD4AD's
    PRO (NaN) and the per-defect pixel metrics, the slow ones, for a curve of many checkpoints.
    """
    p = predictions
    maps, masks, valid = _labelled_pixels(p, torch.arange(len(p.labels), device=p.maps.device))
    pixel = maps is not None
    result: dict[str, Any] = {
        "image_auroc": metrics.image_auroc(p.scores, p.labels),
        "pixel_auroc": metrics.pixel_auroc(maps, masks, valid=valid) if pixel else math.nan,
        "aupro": metrics.aupro(maps, masks, fpr_limit=config.eval.fpr_limit, valid=valid) if pixel else math.nan,
        "pro_rd4ad": (metrics.pro_rd4ad(maps, masks, num_thresholds=config.eval.pro_thresholds, valid=valid)
                      if pixel and full else math.nan),
    }
    result["per_defect"] = per_defect_metrics(p, config, pixels=full)
    return result


def _labelled_pixels(p: Predictions, chosen: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    """Maps, masks and valid masks (None: all valid) of the chosen images whose pixels are labelled;
    all None without a defective one."""
    known = chosen[p.mask_known()[chosen]]
    if not bool((p.labels[known] == 1).any()):
        return None, None, None
    return p.maps[known], p.masks[known], None if p.valid is None else p.valid[known]


def per_defect_metrics(p: Predictions, config: Config, pixels: bool = True) -> dict[str, dict[str, Any]]:
    """Each defect type scored against the good test images alone (its pixel metrics NaN unless ``pixels``)."""
    good = [i for i, kind in enumerate(p.defect_types) if kind == "good"]
    table = {}
    for kind in sorted(set(p.defect_types) - {"good"}):
        chosen = torch.tensor(good + [i for i, k in enumerate(p.defect_types) if k == kind], device=p.maps.device)
        maps, masks, valid = _labelled_pixels(p, chosen) if pixels else (None, None, None)
        table[kind] = {
            "n": len(chosen) - len(good),
            "image_auroc": metrics.image_auroc(p.scores[chosen], p.labels[chosen]) if good else float("nan"),
            "pixel_auroc": metrics.pixel_auroc(maps, masks, valid=valid) if maps is not None else math.nan,
            "aupro": (metrics.aupro(maps, masks, fpr_limit=config.eval.fpr_limit, valid=valid)
                      if maps is not None else math.nan),
        }
        if p.has_mask is not None:
            table[kind]["without_mask"] = int((~p.mask_known()[chosen]).sum())
    return table


def normal_threshold(scores: torch.Tensor, quantile: float, source: str = "calibration") -> dict[str, Any]:
    """``dhkd predict``'s default threshold: the ``quantile`` of defect-free image ``scores``, so
    that about that share of such images stays unflagged.

    ``source`` says which images they are: ``"calibration"`` (held back from training, in neither
    split: an honest threshold) or ``"test"`` (the defect-free test images: the fallback for runs
    that held none back; the images it is then judged on are the ones it was fitted to).
    """
    if not 0 < quantile <= 1:
        raise DhkdError(f"eval.threshold_quantile must be in (0, 1], got {quantile}",
                        "e.g. --set eval.threshold_quantile=0.99 (about 1 in 100 defect-free images flagged)")
    if source not in ("calibration", "test"):
        raise ValueError(f"source must be 'calibration' or 'test', got {source!r}")
    normal = scores.float()
    if normal.numel() == 0:
        raise DhkdError("there are no defect-free images to choose a threshold from",
                        "hold some training images back (data.calibration_share) or keep normal test images")
    value = float(torch.quantile(normal, quantile))
    images = ("calibration images (defect-free, held back from training: data.calibration_share)"
              if source == "calibration" else
              "defect-free test images (the run held no training images back: the threshold is fitted to the "
              "images it is judged on)")
    return {"value": value, "quantile": quantile, "n_normal": int(normal.numel()), "images": source,
            "how": f"the {quantile:g} quantile of the image scores of the {normal.numel()} {images} "
                   "(eval.threshold_quantile)"}


def calibration_scores(model: DHKD, data_root: Path | DataSetFile, category: str, config: Config,
                       info: dict[str, Any], device: torch.device) -> torch.Tensor | None:
    """Image scores of the run's calibration images, or None when it held none back. The images are
    those ``data.calibration_share`` chooses now; a count that differs from the one training
    recorded means the training images changed, which is an error rather than a silently
    different (possibly trained-on) set."""
    recorded = info.get("calibration_images") or 0
    if not recorded:
        return None
    split = stream_split(data_root, category, "calibration", config.data.fit(), progress=False,
                         calibration_share=config.data.calibration_share)
    if len(split) != recorded:
        raise DhkdError(f"the run held back {recorded} training images for calibration; the data now gives {len(split)}, "
                        "so the training images changed since it was trained",
                        "restore the training images as they were, or train again")
    return score_split(model, split, config, device, progress=False).scores


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
    if p.has_mask is not None:
        arrays["has_mask"] = p.has_mask.numpy()
    if p.valid is not None:
        arrays["valid"] = np.packbits(p.valid.numpy(), axis=-1)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a handle, so numpy does not append ".npz" to the name
            np.savez_compressed(handle, **arrays)

    atomic_write(path, write, size_hint=sum(a.nbytes for a in arrays.values()))  # compressed: at most this


def load_predictions(run_dir: str | Path) -> Predictions:
    """The maps saved by the last evaluation of a run (float16 on disk, float32 here)."""
    path = Path(run_dir) / PREDICTIONS_NAME
    if not path.exists():
        raise DhkdError(f"no {PREDICTIONS_NAME} in {run_dir}", f"evaluate first: dhkd evaluate --run {run_dir} --json OUT.json")
    with np.load(path) as data:
        width = int(data["mask_width"])
        masks = np.unpackbits(data["masks"], axis=-1, count=width).astype(bool)
        has_mask = torch.from_numpy(data["has_mask"]) if "has_mask" in data.files else None
        valid = (torch.from_numpy(np.unpackbits(data["valid"], axis=-1, count=width).astype(bool))
                 if "valid" in data.files else None)
        return Predictions(torch.from_numpy(data["maps"].astype(np.float32)), torch.from_numpy(data["scores"]),
                           torch.from_numpy(masks), torch.from_numpy(data["labels"]),
                           [str(s) for s in data["defect_types"]], [str(s) for s in data["paths"]], has_mask, valid)


def _data_source(info: dict[str, Any], data_root: str | Path | None) -> Path | DataSetFile:
    """Where to read the test split: the given root, else the recorded data set, else the recorded root."""
    record = info.get("dataset")
    if data_root is None:
        if record is None:
            return Path(info["data_root"])
        dataset = recorded_dataset(record)
    elif is_dataset_file(data_root):
        dataset = as_dataset(data_root)
    else:
        return Path(data_root)
    if record is not None:
        check_same_split(dataset, record)
    return dataset


def run_test_data(run_dir: Path, data_root: str | Path | None = None) -> tuple[dict[str, Any], Path | DataSetFile]:
    """A run's ``run.json`` and the data its test split is read from (``data_root`` when given, else
    what it was trained on: a moved data root, or a data set whose split changed, is an error)."""
    info = _run_info(run_dir)
    if data_root is None and info.get("dataset") is None:
        data_root = _test_data_root(run_dir, info, None)  # a moved data root is named here
    data = _data_source(info, data_root)
    validate_category(data, info["category"])
    return info, data


def evaluate_run(run_dir: str | Path, data_root: str | Path | None = None, device: str | None = "auto",
                 json_path: str | Path | None = None, progress: bool = True, diagnostics: bool = True) -> dict[str, Any]:
    """Evaluate a trained run on its category's test split; writes metrics (and maps) to disk.
    ``diagnostics``: also record whether each addition acts (:mod:`dhkd.run.diagnostics`), from a few
    training images.

    A run trained from a data-set file is tested on the split it recorded (the file's content as
    it was then); a changed set of images is an error rather than a silently different split.
    """
    started = time.perf_counter()
    run_dir = Path(run_dir)
    info, data_root = run_test_data(run_dir, data_root)
    category = info["category"]
    resolved = resolve_device(device)
    model, config, state = _load_model(run_dir, resolved)
    progress_of_training = training_progress(state, config, info)
    if not progress_of_training["finished"]:
        print(_unfinished_warning(run_dir, progress_of_training, info), file=sys.stderr, flush=True)
    # the test images are decoded per batch (only their masks are held); the maps are kept for the metrics
    split = stream_split(data_root, category, "test", config.data.fit(), progress=progress)
    stride, note = pixel_stride(len(split), config.data.shape, resolved)
    if note:
        print(f"note: {note}", file=sys.stderr, flush=True)
    predictions = score_split(model, split, config, resolved, progress, stride=stride)
    scores = compute_metrics(predictions, config)
    calibration = calibration_scores(model, data_root, category, config, info, resolved)
    threshold = (normal_threshold(predictions.scores[predictions.labels == 0], config.eval.threshold_quantile, "test")
                 if calibration is None else normal_threshold(calibration, config.eval.threshold_quantile))
    result = {
        "category": category,
        "image_auroc": scores["image_auroc"],
        "pixel_auroc": scores["pixel_auroc"],
        "aupro": scores["aupro"],
        "pro_rd4ad": scores["pro_rd4ad"],
        "n_test": len(split),
        "n_defective": int(split.labels.sum()),
        "n_defective_without_mask": int((~split.mask_known()).sum()),
        "seconds": round(time.perf_counter() - started, 3),
        "profile": config.profile,
        "teacher": config.model.teacher.name,
        **progress_of_training,
        "train_seconds": info.get("train_seconds"),
        "device": str(resolved),
        "data_root": str(data_root.source or data_root.root) if isinstance(data_root, DataSetFile) else str(data_root),
        "threshold": threshold,
        "pixel_stride": stride,
        "per_defect": scores["per_defect"],
    }
    if isinstance(data_root, DataSetFile):
        result["dataset"] = data_root.name
    if diagnostics:
        train_images = stream_split(data_root, category, "train", config.data.fit(), progress=False,
                                    calibration_share=config.data.calibration_share).images
        result["diagnostics"] = diagnose_run(model, config, train_images, run_dir)  # decodes only the images it uses
        result["seconds"] = round(time.perf_counter() - started, 3)
    save_predictions(run_dir / PREDICTIONS_NAME, predictions)
    atomic_write_json(run_dir / METRICS_NAME, result)
    if json_path is not None:
        atomic_write_json(Path(json_path), result)
    return result
