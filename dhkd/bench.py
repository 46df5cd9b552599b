"""``dhkd bench``: how fast the kit trains, infers and scores, optionally beside anomalib's RD.

What is timed, and how:

- ``teacher_cache_s``: the one-off teacher pass over the training images (their features are
  reused every stage-1 epoch).
- ``train_epoch_s``: one stage-1 training epoch (every batch of the train split at the
  profile's batch size, the last smaller one included) through the kit's own
  :class:`~dhkd.train.Trainer` step, after untimed warm-up steps, one per batch shape
  (``train_warmup_s``, which holds torch.compile's compilation when ``train.compile`` is on).
  Profiles with the masking stage also get ``train_epoch_stage2_s`` (the teacher runs on the
  corrupted images every step) and ``projected_train_s`` for the whole run.
- ``train_gmac_per_image`` / ``infer_gmac_per_image``: the work of a training step and of an
  inference per image in multiply-accumulates (torch's FlopCounterMode), so that times can be
  read against the work each implementation does.
- ``infer_img_per_s_b1`` / ``infer_img_per_s_b32``: test images per second through
  :func:`dhkd.evaluate.predict` (teacher, student, anomaly map with upsampling, sum and blur),
  one image per batch and 32 per batch, after a warm-up.
- ``peak_mem_mb``: ``torch.cuda.max_memory_allocated`` on CUDA; on the CPU the process's peak
  resident set size (``getrusage``), taken before anything of anomalib runs.
- ``aupro_s``, ``pixel_auroc_s``, ``pro_rd4ad_s``, ``image_auroc_s``: the metrics of
  :mod:`dhkd.metrics` on the whole test set's maps (median of 3 calls after a warm-up call).

``--compare anomalib`` builds anomalib's ``ReverseDistillationModel`` (same backbone, input size
and batch, ``pre_trained=False`` like ``model.teacher.weights=none``) and times its plain
training loop (forward, which runs the teacher every step; its loss; backward; Adam over
bottleneck and decoder) over the same images, and its eval-mode anomaly maps at batch 32.

On a small CPU shared with other processes, run with ``OMP_NUM_THREADS=1``: two OpenMP threads
on two busy cores wait on each other at every operation and can be 10-100x slower.

Without ``--data-root`` the data are synthetic with the shapes of MVTec AD bottle (209 train
images, 83 test images of which 20 are good, masks with 1-3 elliptic defects), so the command
runs anywhere; with ``--data-root ROOT --category CAT`` the real splits are decoded.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import platform
import resource
import statistics
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from torch.nn import functional as F

from dhkd import metrics
from dhkd.config import Config, load_config
from dhkd.data import CategorySplit, load_split, normalize
from dhkd.errors import DhkdError
from dhkd.evaluate import predict
from dhkd.io import atomic_write_json
from dhkd.loss import distillation_loss
from dhkd.train import Trainer, resolve_device, stage_of

#: The shapes of MVTec AD bottle: 209 training images, 83 test images (20 good).
SYNTHETIC_TRAIN = 209
SYNTHETIC_TEST = 83
SYNTHETIC_GOOD = 20
INFER_BATCH = 32
METRIC_REPEATS = 3
#: Images timed at batch 1 on the CPU (a throughput needs no more); CUDA does the whole test set.
CPU_B1_IMAGES = 16
#: anomalib's RD taps these layers of the ResNet backbones it supports.
ANOMALIB_LAYERS = ("layer1", "layer2", "layer3")
#: Teachers of the kit that anomalib's RD has a decoder for (its get_decoder).
ANOMALIB_BACKBONES = ("resnet18", "resnet34", "resnet50", "wide_resnet50_2", "wide_resnet101_2")


# ------------------------------------------------------------------------------ data


def synthetic_data(size: int, n_train: int = SYNTHETIC_TRAIN, n_test: int = SYNTHETIC_TEST,
                   n_good: int = SYNTHETIC_GOOD, seed: int = 0) -> tuple[torch.Tensor, CategorySplit]:
    """Train images and a test split of the given shapes: smooth random colour fields, masks of 1-3 ellipses."""
    g = torch.Generator().manual_seed(seed)

    def images(n: int) -> torch.Tensor:
        coarse = torch.rand((n, 3, 8, 8), generator=g)
        return (F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1) * 255).to(torch.uint8)

    n_bad = n_test - n_good
    blobs = 3
    centre = torch.rand((n_bad, blobs, 2), generator=g) * 0.8 + 0.1
    radius = torch.rand((n_bad, blobs, 2), generator=g) * 0.12 + 0.02
    present = torch.rand((n_bad, blobs), generator=g) < 0.5
    present[:, 0] = True  # at least one defect per defective image
    axis = (torch.arange(size) + 0.5) / size
    dy = (axis.view(1, 1, size, 1) - centre[..., 0, None, None]) / radius[..., 0, None, None]
    dx = (axis.view(1, 1, 1, size) - centre[..., 1, None, None]) / radius[..., 1, None, None]
    bad = ((dy ** 2 + dx ** 2 <= 1) & present[..., None, None]).any(1)
    masks = torch.cat([torch.zeros((n_good, size, size), dtype=torch.bool), bad])
    labels = torch.cat([torch.zeros(n_good, dtype=torch.int64), torch.ones(n_bad, dtype=torch.int64)])
    kinds = ["good"] * n_good + ["synthetic"] * n_bad
    test = CategorySplit(images(n_test), masks, labels, kinds, [Path(f"synthetic/{i:03d}.png") for i in range(n_test)])
    return images(n_train), test


def _subset(split: CategorySplit, n: int) -> CategorySplit:
    return CategorySplit(split.images[:n], split.masks[:n], split.labels[:n], split.defect_types[:n], split.paths[:n])


# ------------------------------------------------------------------------------ timing


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _seconds(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    _synchronize(device)
    started = time.perf_counter()
    result = fn()
    _synchronize(device)
    return time.perf_counter() - started, result


def _median_seconds(fn: Callable[[], Any], device: torch.device, repeats: int = METRIC_REPEATS) -> tuple[float, Any]:
    """Median of ``repeats`` timed calls after one untimed call (imports, caches, allocator)."""
    result = fn()
    times = []
    for _ in range(repeats):
        seconds, result = _seconds(fn, device)
        times.append(seconds)
    return statistics.median(times), result


def _peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


class _LoadWatcher:
    """The 1-minute load average sampled every few seconds while the benchmark runs (other
    processes on a small CPU change every figure; the JSON says how busy the machine was)."""

    def __init__(self, every: float = 5.0) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)

    def _run(self, every: float) -> None:
        while not self._stop.wait(every):
            load = _load()
            if load is not None:
                self.samples.append(load)

    def __enter__(self) -> "_LoadWatcher":
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------------------------ the kit


def bench_kit(config: Config, device: torch.device, train_images: torch.Tensor, test: CategorySplit,
              log: Callable[[str], None]) -> dict[str, Any]:
    """Times of the kit on ``device`` (training, inference, metrics on its test maps)."""
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="dhkd-bench-") as out:
        trainer = Trainer(config, ".", "bench", out, device=str(device), progress=False)
        log("teacher features of the training images (once)")
        trainer._prepare(images=train_images)
        result["teacher_cache_s"] = trainer.teacher_cache_seconds
        log(f"one training epoch ({len(train_images)} images, batch {config.train.batch_size})")
        started = time.perf_counter()
        result["train_epoch_s"] = trainer.time_epoch(stage=1)
        result["train_warmup_s"] = time.perf_counter() - started - result["train_epoch_s"]  # torch.compile's time too
        result["train_gmac_per_image"] = _kit_train_gmac(trainer)
        epochs = config.train.epochs
        stage2_epochs = sum(stage_of(e, config) == 2 for e in range(epochs))
        if stage2_epochs:
            log("one stage-2 (masking) training epoch")
            result["train_epoch_stage2_s"] = trainer.time_epoch(stage=2)
        mean_epoch = (result["train_epoch_s"] * (epochs - stage2_epochs)
                      + result.get("train_epoch_stage2_s", 0.0) * stage2_epochs) / epochs
        result["train_img_per_s"] = len(train_images) / result["train_epoch_s"]
        result["projected_train_s"] = result["teacher_cache_s"] + epochs * mean_epoch
        model = trainer.model
    del trainer

    test = test.to(device)  # decoded once, on the device: predict's own .to() is then free
    n_b1 = len(test) if device.type == "cuda" else min(len(test), CPU_B1_IMAGES)
    log(f"inference, batch 1 ({n_b1} images)")
    result["infer_b1_images"] = n_b1
    result["infer_img_per_s_b1"] = n_b1 / _time_predict(model, _subset(test, n_b1), config, device, 1)
    log(f"inference, batch {INFER_BATCH} ({len(test)} images)")
    seconds, predictions = _time_predict(model, test, config, device, INFER_BATCH, keep=True)
    result["infer_img_per_s_b32"] = len(test) / seconds
    result["infer_gmac_per_image"] = _gmac_per_image(lambda: model(normalize(test.images[:2])), 2, inference=True)
    result["peak_mem_mb"] = _peak_mem_mb(device)

    log("metrics on the test maps")
    p = predictions
    for name, fn in [
        ("aupro", lambda: metrics.aupro(p.maps, p.masks, fpr_limit=config.eval.fpr_limit)),
        ("pixel_auroc", lambda: metrics.pixel_auroc(p.maps, p.masks)),
        ("pro_rd4ad", lambda: metrics.pro_rd4ad(p.maps, p.masks, num_thresholds=config.eval.pro_thresholds)),
        ("image_auroc", lambda: metrics.image_auroc(p.scores, p.labels)),
    ]:
        result[f"{name}_s"], result[f"{name}_value"] = _median_seconds(fn, device)
    return result


def _gmac_per_image(fn: Callable[[], Any], n: int, inference: bool = False) -> float:
    """Multiply-accumulates (GMAC) per image of ``fn`` over ``n`` images, counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, (torch.inference_mode() if inference else contextlib.nullcontext()):
        fn()
    return counter.get_total_flops() / 2e9 / n


def _kit_train_gmac(trainer: Trainer) -> float:
    """A stage-1 step's work per image: the student's forward and backward on cached teacher features."""
    indices = torch.arange(2, device=trainer.device)
    if trainer.cache is not None:
        features = [level[indices] for level in trainer.cache]
        teacher = 0.0
    else:  # the teacher runs every step
        images = normalize(trainer.images[indices])
        teacher = _gmac_per_image(lambda: trainer._teacher_normalised(images), 2)
        features = trainer._teacher_normalised(images)

    def step() -> None:
        distillation_loss(features, trainer.student(features), trainer.config.train.loss).backward()

    gmac = teacher + _gmac_per_image(step, 2)
    trainer.optimizer.zero_grad(set_to_none=True)
    return gmac


def _time_predict(model: torch.nn.Module, split: CategorySplit, config: Config, device: torch.device, batch: int,
                  keep: bool = False) -> Any:
    """Seconds of ``predict`` over ``split`` at ``batch`` images per batch, after a warm-up.

    On CUDA the warm-up is a whole pass (cuDNN autotunes every new shape, the last smaller
    batch included); on the CPU one batch is enough and saves minutes.
    """
    cfg = copy.deepcopy(config)
    cfg.eval.batch_size = batch
    predict(model, split if device.type == "cuda" else _subset(split, batch), cfg, device, progress=False)
    seconds, predictions = _seconds(lambda: predict(model, split, cfg, device, progress=False), device)
    return (seconds, predictions) if keep else seconds


# ------------------------------------------------------------------------------ anomalib


def bench_anomalib(config: Config, device: torch.device, train_images: torch.Tensor, test: CategorySplit,
                   log: Callable[[str], None]) -> dict[str, Any]:
    """anomalib's RD torch model, trained and run by its plain loop on the same images."""
    anomalib, AnomalyMapGenerationMode, ReverseDistillationLoss, ReverseDistillationModel = _import_anomalib(config)
    backbone = config.model.teacher.name
    if config.model.teacher.weights != "none":
        log("note: anomalib is built with pre_trained=False (offline); the weights do not change the timings")
    size = config.data.image_size
    torch.manual_seed(config.train.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ReverseDistillationModel(backbone=backbone, input_size=(size, size), layers=list(ANOMALIB_LAYERS),
                                         anomaly_map_mode=AnomalyMapGenerationMode.ADD, pre_trained=False).to(device)
    loss_fn = ReverseDistillationLoss()
    # anomalib's own configure_optimizers: Adam over decoder + bottleneck, lr 0.005, betas (0.5, 0.99)
    optimizer = torch.optim.Adam(list(model.decoder.parameters()) + list(model.bottleneck.parameters()),
                                 lr=0.005, betas=(0.5, 0.99))
    images = train_images.to(device)
    batch = config.train.batch_size
    generator = torch.Generator(device=device).manual_seed(config.train.seed)
    order = torch.randperm(len(images), generator=generator, device=device)

    def step(indices: torch.Tensor) -> float:
        encoder, decoder = model(normalize(images[indices]))
        loss = loss_fn(encoder, decoder)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()  # its Lightning step logs loss.item() every step, as the kit reads the loss

    chosen = [order[start:start + batch] for start in range(0, len(images), batch)]  # the kit's batches (the last kept)

    def epoch() -> None:
        for indices in chosen:
            step(indices)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model.train()
    log(f"anomalib: one training epoch ({len(images)} images, batch {batch})")
    for indices in {len(c): c for c in chosen}.values():  # warm-up: one step per batch shape, as for the kit
        step(indices)
    result: dict[str, Any] = {"anomalib_version": anomalib.__version__}
    result["anomalib_train_epoch_s"], _ = _seconds(epoch, device)
    two = normalize(images[:2])
    result["anomalib_train_gmac_per_image"] = _gmac_per_image(lambda: loss_fn(*model(two)).backward(), 2)
    optimizer.zero_grad(set_to_none=True)

    model.eval()
    test_images = test.images.to(device)

    @torch.inference_mode()
    def infer(n: int) -> torch.Tensor:
        maps = [model(normalize(test_images[s:s + INFER_BATCH])).anomaly_map for s in range(0, n, INFER_BATCH)]
        return torch.cat(maps)

    log(f"anomalib: inference, batch {INFER_BATCH} ({len(test_images)} images)")
    infer(len(test_images) if device.type == "cuda" else min(INFER_BATCH, len(test_images)))  # warm-up
    seconds, _ = _seconds(lambda: infer(len(test_images)), device)
    result["anomalib_infer_img_per_s_b32"] = len(test_images) / seconds
    result["anomalib_infer_gmac_per_image"] = _gmac_per_image(lambda: model(normalize(test_images[:2])), 2, inference=True)
    if device.type == "cuda":
        result["anomalib_peak_mem_mb"] = _peak_mem_mb(device)
    return result


def _import_anomalib(config: Config) -> tuple[Any, Any, Any, Any]:
    """anomalib and its RD classes; a clear error when it is missing or cannot match the teacher."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import anomalib
            from anomalib.models.image.reverse_distillation.anomaly_map import AnomalyMapGenerationMode
            from anomalib.models.image.reverse_distillation.loss import ReverseDistillationLoss
            from anomalib.models.image.reverse_distillation.torch_model import ReverseDistillationModel
    except ImportError as error:
        raise DhkdError(f"--compare anomalib needs the anomalib package ({error})",
                        "install the bench extra: pip install -e '.[bench]'") from None
    backbone = config.model.teacher.name
    if backbone not in ANOMALIB_BACKBONES:
        raise DhkdError(f"anomalib's ReverseDistillation has no decoder for the teacher '{backbone}'",
                        "compare with a ResNet teacher, e.g. --profile rd (wide_resnet50_2)")
    return anomalib, AnomalyMapGenerationMode, ReverseDistillationLoss, ReverseDistillationModel


# ------------------------------------------------------------------------------ the command


def run_bench(config: Config, device: str | torch.device = "auto", data_root: str | Path | None = None,
              category: str | None = None, compare: str | None = None, progress: bool = True,
              synthetic_sizes: tuple[int, int, int] | None = None) -> dict[str, Any]:
    """All timings as one dict (what ``dhkd bench`` writes as JSON).

    ``synthetic_sizes`` = (train, test, good test) images without a data root; bottle's by default.
    """
    if (data_root is None) != (category is None):
        raise DhkdError("--data-root and --category go together", "give both (real data) or neither (synthetic data)")
    if compare not in (None, "anomalib"):
        raise DhkdError(f"unknown --compare '{compare}'", "the only comparison is --compare anomalib")
    if compare == "anomalib":
        _import_anomalib(config)  # fail before minutes of timing, not after
    resolved = device if isinstance(device, torch.device) else resolve_device(device)
    started = time.perf_counter()

    def log(message: str) -> None:
        if progress:
            print(f"[{time.perf_counter() - started:7.1f}s] {message}", file=sys.stderr, flush=True)

    size = config.data.image_size
    result: dict[str, Any] = {
        "profile": config.profile, "device": str(resolved), "device_name": _device_name(resolved),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "load_1min_start": _load(), "teacher": config.model.teacher.name, "teacher_weights": config.model.teacher.weights,
        "image_size": size, "batch_size": config.train.batch_size, "infer_batch_size": INFER_BATCH,
        "compile": config.train.compile, "amp": config.train.amp and resolved.type == "cuda",
        "channels_last": config.train.channels_last,
    }
    decode_started = time.perf_counter()
    if data_root is None:
        log(f"synthetic data of bottle's shapes at {size}x{size}")
        train_images, test = synthetic_data(size, *(synthetic_sizes or (SYNTHETIC_TRAIN, SYNTHETIC_TEST, SYNTHETIC_GOOD)))
        result["data"] = "synthetic"
    else:
        log(f"decoding {category} from {data_root}")
        train_images = load_split(data_root, category, "train", size, progress=False).images
        test = load_split(data_root, category, "test", size, progress=False)
        result["data"] = f"{Path(data_root) / category}"
    result["decode_s"] = time.perf_counter() - decode_started
    result["n_train"], result["n_test"] = len(train_images), len(test)
    if resolved.type == "cuda":
        torch.cuda.reset_peak_memory_stats(resolved)

    with _LoadWatcher() as load:
        result.update(bench_kit(config, resolved, train_images, test, log))
        if compare == "anomalib":
            result.update(bench_anomalib(config, resolved, train_images, test, log))
            result["train_epoch_ratio"] = result["train_epoch_s"] / result["anomalib_train_epoch_s"]
            result["infer_time_ratio_b32"] = result["anomalib_infer_img_per_s_b32"] / result["infer_img_per_s_b32"]
    result["load_1min_end"] = _load()
    if load.samples:
        result["load_1min_mean"] = statistics.fmean(load.samples)
        result["load_1min_max"] = max(load.samples)
    result["total_s"] = time.perf_counter() - started
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.items()}


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


#: (key, label, anomalib's key, kind): "time" (seconds), "rate" (per second) or "amount" (memory, work).
ROWS = [
    ("teacher_cache_s", "teacher cache, once (s)", None, "time"),
    ("train_warmup_s", "train warm-up, incl. compile (s)", None, "time"),
    ("train_epoch_s", "train epoch (s)", "anomalib_train_epoch_s", "time"),
    ("train_epoch_stage2_s", "train epoch, stage 2 (s)", None, "time"),
    ("train_img_per_s", "train images/s", None, "rate"),
    ("train_gmac_per_image", "train step GMAC/image", "anomalib_train_gmac_per_image", "amount"),
    ("infer_img_per_s_b1", "inference images/s, batch 1", None, "rate"),
    ("infer_img_per_s_b32", "inference images/s, batch 32", "anomalib_infer_img_per_s_b32", "rate"),
    ("infer_gmac_per_image", "inference GMAC/image", "anomalib_infer_gmac_per_image", "amount"),
    ("peak_mem_mb", "peak memory (MB)", "anomalib_peak_mem_mb", "amount"),
    ("aupro_s", "AUPRO, test set (s)", None, "time"),
    ("pixel_auroc_s", "pixel AUROC, test set (s)", None, "time"),
    ("pro_rd4ad_s", "RD4AD PRO, test set (s)", None, "time"),
    ("image_auroc_s", "image AUROC (s)", None, "time"),
]


def format_table(result: dict[str, Any]) -> str:
    """The figures as a plain-text table; with anomalib, its column and the kit's time (or amount) ratio."""
    compared = "anomalib_train_epoch_s" in result
    header = ["", "dhkd"] + (["anomalib RD", "dhkd / anomalib"] if compared else [])
    lines = [header]
    for key, label, other, kind in ROWS:
        if key not in result:
            continue
        row = [label, _fmt(result[key])]
        if compared:
            if other and other in result:
                ratio = result[key] / result[other]
                if kind == "rate":  # images/s: the ratio of times per image
                    ratio = 1 / ratio
                row += [_fmt(result[other]), f"{ratio:.2f}x" + (" time" if kind != "amount" else "")]
            else:
                row += ["", ""]
        lines.append(row)
    widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
    text = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in lines]
    text.insert(1, "-" * len(text[0]))
    where = (f"{result['profile']} profile, {result['teacher']} ({result['teacher_weights']}), "
             f"{result['image_size']}x{result['image_size']}, batch {result['batch_size']}, {result['data']} "
             f"({result['n_train']} train / {result['n_test']} test), {result['device']} ({result['device_name']}), "
             f"{result['threads']} threads, compile {result['compile']}, "
             f"1-min load {result['load_1min_start']} at the start, {result['load_1min_end']} at the end"
             + (f", {result['load_1min_mean']:.2f} mean, {result['load_1min_max']:.2f} max" if "load_1min_mean" in result else ""))
    return where + "\n" + "\n".join(text)


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def main(args: argparse.Namespace) -> int:
    """``dhkd bench``: run, print the table, write the JSON."""
    config = load_config(args.profile, list(args.overrides))
    result = run_bench(config, args.device, args.data_root, args.category, args.compare)
    print(format_table(result))
    if args.json_path is not None:
        atomic_write_json(Path(args.json_path), result)
        print(f"wrote {args.json_path}")
    return 0


__all__ = ["run_bench", "bench_kit", "bench_anomalib", "synthetic_data", "format_table", "main"]
