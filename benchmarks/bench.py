"""How fast the kit trains, infers and scores, optionally beside anomalib's RD (``dhkd bench``).

Run from the kit's checkout as ``dhkd bench ...`` or ``python -m benchmarks.bench ...`` (the
same arguments); benchmarks/README.md says how to read the figures. What is timed:

- ``teacher_cache_s``: the one-off teacher pass over the training images (their features are
  reused every stage-1 epoch).
- ``train_epoch_s``: one stage-1 training epoch (every batch of the train split at the
  profile's batch size, the last smaller one included) through the kit's own
  :meth:`~dhkd.run.train.Trainer.train_step`, after untimed warm-up steps, one per batch shape
  (``train_warmup_s``, which holds torch.compile's compilation when ``train.compile`` is on).
  Profiles with the masking stage also get ``train_epoch_stage2_s`` (the teacher runs on the
  corrupted images every step) and ``projected_train_s`` for the whole run.
- ``train_gmac_per_image`` / ``infer_gmac_per_image``: the work of a training step and of an
  inference per image in multiply-accumulates (torch's FlopCounterMode), so that times can be
  read against the work each implementation does.
- ``infer_img_per_s_b1`` / ``infer_img_per_s_b32``: test images per second through
  :func:`dhkd.run.evaluate.score_split` (teacher, student, anomaly map with upsampling, sum and blur),
  one image per batch (16 images on the CPU, all on CUDA) and 32 per batch (the whole test
  set), after a warm-up.
- ``train_page_faults_per_step`` / ``train_kernel_cpu_s`` (CPU): minor page faults per
  training step and kernel CPU seconds in the epoch, per side: the price of fresh memory
  pages, which the allocator decides (``allocator`` records its settings, :data:`ALLOCATOR_ENV`).
- ``peak_mem_mb``: ``torch.cuda.max_memory_allocated`` on CUDA; on the CPU the process's peak
  resident set size (``getrusage``), taken before anything of anomalib runs.
- ``aupro_s``, ``pixel_auroc_s``, ``pro_rd4ad_s``, ``image_auroc_s``: the metrics of
  :mod:`dhkd.metrics` on the whole test set's maps (median of 3 calls after a warm-up call).

``--compare anomalib`` builds anomalib's ``ReverseDistillationModel`` (same backbone, input size
and batch, ``pre_trained=False`` like ``model.teacher.weights=none``) and times its plain
training loop (forward, which runs the teacher every step; its loss; backward; Adam over
bottleneck and decoder, with anomalib's lr 0.005 and betas (0.5, 0.99)) over the same batches,
and its eval-mode anomaly maps at batch 32. On the CPU the two sides alternate batch by batch,
so that other processes on a shared machine slow both alike; on CUDA each side runs its epoch
back to back.

The JSON also says how it was made and under what load: ``command``, ``finished``, the
1-minute load average sampled through the run and ``cpu_steal_pct`` (CPU time the hypervisor
gave to other machines). Without ``--data-root`` the data are synthetic with the shapes of
MVTec AD bottle (209 train images, 83 test images of which 20 are good, masks with 1-3 elliptic
defects), so the command runs anywhere; with ``--data-root ROOT --category CAT`` the real
splits are decoded.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import os
import platform
import resource
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch.nn import functional as F

from dhkd import metrics
from dhkd.config import Config, load_config
from dhkd.data import CategorySplit, load_split, normalize
from dhkd.errors import DhkdError
from dhkd.run.background import Periodic
from dhkd.run.evaluate import score_split
from dhkd.io import atomic_write_json
from dhkd.method.loss import distillation_loss
from dhkd.run.train import Trainer, stage_of
from dhkd.run.device import resolve_device, synchronize

from benchmarks.report import format_table

#: The shapes of MVTec AD bottle: 209 training images, 83 test images (20 good).
SYNTHETIC_TRAIN = 209
SYNTHETIC_TEST = 83
SYNTHETIC_GOOD = 20
INFER_BATCH = 32
METRIC_REPEATS = 3
#: Images timed at batch 1 on the CPU (a throughput needs no more); CUDA does the whole test set.
CPU_B1_IMAGES = 16
#: Environment variables that change how the process gets memory: glibc malloc's tunables and a
#: preloaded allocator (jemalloc, tcmalloc). They decide how often the kernel must hand out
#: fresh zeroed pages, so the JSON records them (see benchmarks/README.md).
ALLOCATOR_ENV = ("MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                 "MALLOC_ARENA_MAX", "GLIBC_TUNABLES", "LD_PRELOAD")
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


# ------------------------------------------------------------------------------ timing


def _seconds(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    synchronize(device)
    started = time.perf_counter()
    result = fn()
    synchronize(device)
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


def _cpu_times() -> tuple[int, int] | None:
    """(steal, total) CPU ticks since boot from ``/proc/stat`` (Linux), None elsewhere."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    steal = fields[7] if len(fields) > 7 else 0
    return steal, sum(fields[:8])  # guest time is already counted in user time


def _steal_percent(start: tuple[int, int] | None, end: tuple[int, int] | None) -> float | None:
    """Share of the CPU time that the hypervisor gave to other machines between two readings
    (0 on bare metal). Contention it cannot see (shared caches, memory bandwidth of other
    machines on the host) shows only in the times themselves."""
    if start is None or end is None or end[1] <= start[1]:
        return None
    return 100.0 * (end[0] - start[0]) / (end[1] - start[1])


def allocator_setting() -> str:
    """The allocator settings this process runs under (:data:`ALLOCATOR_ENV`), ``"default"`` without any."""
    return " ".join(f"{name}={os.environ[name]}" for name in ALLOCATOR_ENV if os.environ.get(name)) or "default"


def _faults_and_kernel_seconds() -> tuple[int, float]:
    """This process's minor page faults and kernel CPU seconds so far (all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_minflt, usage.ru_stime


class _LoadWatcher(Periodic):
    """The 1-minute load average sampled every few seconds while the benchmark runs (other
    processes on a small CPU change every figure; the JSON says how busy the machine was)."""

    def __init__(self, every: float = 5.0) -> None:
        super().__init__(every)
        self.samples: list[float] = []

    def tick(self) -> None:
        load = _load()
        if load is not None:
            self.samples.append(load)


# ------------------------------------------------------------------------------ the two sides


class KitSide:
    """The kit as it trains and evaluates: its :class:`~dhkd.run.train.Trainer` step and :func:`predict`."""

    name = "dhkd"

    def __init__(self, config: Config, device: torch.device, train_images: torch.Tensor, out_dir: str) -> None:
        self.config, self.device = config, device
        self.trainer = Trainer(config, ".", "bench", out_dir, device=str(device), progress=False)
        self.trainer.prepare(images=train_images)  # decodes nothing: the images are given; caches the teacher
        self.model = self.trainer.model
        self.predict_config = copy.deepcopy(config)
        self.predict_config.eval.batch_size = INFER_BATCH

    def train(self) -> None:
        self.trainer.student.train()

    def train_step(self, indices: torch.Tensor, stage: int = 1) -> None:
        self.trainer.train_step(indices, stage)

    def epoch_batches(self) -> list[torch.Tensor]:
        """Every batch of a fresh epoch order, as :meth:`~dhkd.run.train.Trainer.fit` draws them."""
        order = self.trainer.epoch_order()
        return [self.trainer.batch_indices(order, step) for step in range(self.trainer.batches_per_epoch())]

    def time_epoch(self, stage: int) -> float:
        """Seconds of one epoch of ``stage``'s steps, after one untimed warm-up step per batch
        shape (cuDNN autotuning and torch.compile work on each new shape)."""
        batches = self.epoch_batches()
        self.train()
        for indices in {len(b): b for b in batches}.values():
            self.train_step(indices, stage)
        seconds, _ = _seconds(lambda: [self.train_step(indices, stage) for indices in batches], self.device)
        return seconds

    def infer(self, chunk: CategorySplit) -> Any:
        return score_split(self.model, chunk, self.predict_config, self.device, progress=False)

    def train_gmac(self) -> float:
        """A stage-1 step's work per image: the student's forward and backward on cached teacher features."""
        trainer = self.trainer
        self.train()
        indices = torch.arange(2, device=self.device)
        teacher = 0.0
        if trainer.cache is not None:
            features = [level[indices] for level in trainer.cache]
        else:  # the teacher runs every step
            images = normalize(trainer.images[indices])
            teacher = _gmac_per_image(lambda: trainer.teacher_features(images), 2)
            features = trainer.teacher_features(images)
        step = lambda: distillation_loss(features, trainer.student(features), trainer.config.train.loss).backward()
        gmac = teacher + _gmac_per_image(step, 2)
        trainer.optimizer.zero_grad(set_to_none=True)
        return gmac

    def infer_gmac(self, images: torch.Tensor) -> float:
        return _gmac_per_image(lambda: self.model(normalize(images[:2])), 2, inference=True)


class AnomalibSide:
    """anomalib's ``ReverseDistillationModel`` and its plain loop: forward (the teacher runs every
    step), its loss, backward, Adam over bottleneck and decoder with its own settings."""

    name = "anomalib"

    def __init__(self, config: Config, device: torch.device, train_images: torch.Tensor) -> None:
        anomalib, mode, loss_class, model_class = _import_anomalib(config)
        self.version = anomalib.__version__
        size = config.data.image_size
        torch.manual_seed(config.train.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model = model_class(backbone=config.model.teacher.name, input_size=(size, size),
                                     layers=list(ANOMALIB_LAYERS), anomaly_map_mode=mode.ADD,
                                     pre_trained=False).to(device)
        self.loss = loss_class()
        # anomalib's configure_optimizers: Adam over decoder + bottleneck, lr 0.005, betas (0.5, 0.99)
        self.optimizer = torch.optim.Adam(list(self.model.decoder.parameters()) + list(self.model.bottleneck.parameters()),
                                          lr=0.005, betas=(0.5, 0.99))
        self.images = train_images.to(device)

    def train(self) -> None:
        self.model.train()

    def train_step(self, indices: torch.Tensor) -> None:
        loss = self.loss(*self.model(normalize(self.images[indices])))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        loss.item()  # its Lightning training_step logs loss.item() every step

    @torch.inference_mode()
    def infer(self, chunk: CategorySplit) -> torch.Tensor:
        self.model.eval()
        return self.model(normalize(chunk.images)).anomaly_map

    def train_gmac(self) -> float:
        self.train()
        two = normalize(self.images[:2])
        gmac = _gmac_per_image(lambda: self.loss(*self.model(two)).backward(), 2)
        self.optimizer.zero_grad(set_to_none=True)
        return gmac

    def infer_gmac(self, images: torch.Tensor) -> float:
        self.model.eval()
        return _gmac_per_image(lambda: self.model(normalize(images[:2])), 2, inference=True)


def _gmac_per_image(fn: Callable[[], Any], n: int, inference: bool = False) -> float:
    """Multiply-accumulates (GMAC) per image of ``fn`` over ``n`` images, counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, (torch.inference_mode() if inference else contextlib.nullcontext()):
        fn()
    return counter.get_total_flops() / 2e9 / n


@dataclass
class SideTimes:
    """What :func:`_time_sides` measured, per side: total seconds, the calls' results and, on
    the CPU, the minor page faults and kernel CPU seconds during the side's calls (the price
    of fresh memory pages; how many a step needs is up to the allocator, see :data:`ALLOCATOR_ENV`)."""

    seconds: dict[str, float]
    results: dict[str, list[Any]]
    page_faults: dict[str, int]
    kernel_s: dict[str, float]


def _time_sides(calls: dict[str, list[Callable[[], Any]]], device: torch.device) -> SideTimes:
    """Time each side's calls.

    On the CPU the sides alternate call by call (batch i of every side before batch i + 1 of
    any), so that whatever else runs on a shared machine slows both alike; on CUDA each side
    runs its calls back to back with one synchronisation at the end (the GPU is not shared, and
    a synchronisation per call would cost time).
    """
    times = SideTimes({name: 0.0 for name in calls}, {name: [] for name in calls}, {}, {})
    if device.type == "cuda":
        for name, fns in calls.items():
            times.seconds[name], times.results[name] = _seconds(lambda: [fn() for fn in fns], device)
        return times
    times.page_faults, times.kernel_s = {name: 0 for name in calls}, {name: 0.0 for name in calls}
    for i in range(max(len(fns) for fns in calls.values())):
        for name, fns in calls.items():
            if i < len(fns):
                faults, kernel = _faults_and_kernel_seconds()
                seconds, value = _seconds(fns[i], device)
                faults_after, kernel_after = _faults_and_kernel_seconds()
                times.seconds[name] += seconds
                times.results[name].append(value)
                times.page_faults[name] += faults_after - faults
                times.kernel_s[name] += kernel_after - kernel
    return times


def _chunks(split: CategorySplit, size: int) -> list[CategorySplit]:
    return [_slice(split, start, start + size) for start in range(0, len(split), size)]


def _slice(split: CategorySplit, start: int, stop: int) -> CategorySplit:
    return CategorySplit(split.images[start:stop], split.masks[start:stop], split.labels[start:stop],
                         split.defect_types[start:stop], split.paths[start:stop])


def _concat(parts: list[Any]) -> Any:
    """One :class:`~dhkd.run.evaluate.Predictions` from those of consecutive chunks."""
    first = parts[0]
    return type(first)(torch.cat([p.maps for p in parts]), torch.cat([p.scores for p in parts]),
                       torch.cat([p.masks for p in parts]), torch.cat([p.labels for p in parts]),
                       [t for p in parts for t in p.defect_types], [q for p in parts for q in p.paths])


def _bench(config: Config, device: torch.device, train_images: torch.Tensor, test: CategorySplit, compare: bool,
           log: Callable[[str], None]) -> dict[str, Any]:
    """Every timing. The kit's own phases (warm-ups, peak memory, stage 2, batch 1) run before
    anomalib exists, so that its memory is the kit's alone; then the epoch and the batch-32
    inference of both sides are timed together (see :func:`_time_sides`)."""
    result: dict[str, Any] = {}
    test = test.to(device)  # decoded once, on the device
    with tempfile.TemporaryDirectory(prefix="dhkd-bench-") as out:
        log("teacher features of the training images (once)")
        kit = KitSide(config, device, train_images, out)
        trainer = kit.trainer
        result["teacher_cache_s"] = trainer.teacher_cache_seconds
        batch = config.train.batch_size
        batches = kit.epoch_batches()
        shapes = list({len(b): b for b in batches}.values())  # one warm-up step per batch shape
        chunks = _chunks(test, INFER_BATCH)
        warm_chunks = chunks if device.type == "cuda" else chunks[:1]  # cuDNN autotunes every shape

        log("warm-up of the kit (one step per batch shape; torch.compile compiles here)")
        kit.train()
        result["train_warmup_s"], _ = _seconds(lambda: [kit.train_step(b) for b in shapes], device)
        result["train_gmac_per_image"] = kit.train_gmac()
        epochs = config.train.epochs
        stage2_epochs = sum(stage_of(e, config) == 2 for e in range(epochs))
        if stage2_epochs:
            log("one stage-2 (masking) training epoch")
            result["train_epoch_stage2_s"] = kit.time_epoch(stage=2)
        n_b1 = len(test) if device.type == "cuda" else min(len(test), CPU_B1_IMAGES)
        log(f"inference, batch 1 ({n_b1} images)")
        b1 = copy.deepcopy(config)
        b1.eval.batch_size = 1
        one = _slice(test, 0, n_b1)
        score_split(kit.model, _slice(test, 0, 1) if device.type != "cuda" else one, b1, device, progress=False)
        seconds, _ = _seconds(lambda: score_split(kit.model, one, b1, device, progress=False), device)
        result["infer_b1_images"], result["infer_img_per_s_b1"] = n_b1, n_b1 / seconds
        for chunk in warm_chunks:
            kit.infer(chunk)
        result["infer_gmac_per_image"] = kit.infer_gmac(test.images)
        result["peak_mem_mb"] = _peak_mem_mb(device)

        sides: list[Any] = [kit]
        if compare:
            log("anomalib: model and warm-up")
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                baseline = torch.cuda.memory_allocated(device)
            other = AnomalibSide(config, device, train_images)
            other.train()
            for b in shapes:
                other.train_step(b)
            for chunk in warm_chunks:
                other.infer(chunk)
            result["anomalib_version"] = other.version
            result["anomalib_train_gmac_per_image"] = other.train_gmac()
            result["anomalib_infer_gmac_per_image"] = other.infer_gmac(test.images)
            if device.type == "cuda":
                result["anomalib_peak_mem_mb"] = (torch.cuda.max_memory_allocated(device) - baseline) / 2**20
            sides.append(other)

        names = " and ".join(s.name for s in sides)
        how = "alternating batch by batch" if device.type == "cpu" and compare else "timed"
        log(f"one training epoch of {names} ({len(train_images)} images, batch {batch}, {how})")
        for side in sides:
            side.train()
        training = _time_sides({s.name: [functools.partial(s.train_step, b) for b in batches] for s in sides}, device)
        log(f"inference of {names}, batch {INFER_BATCH} ({len(test)} images, {how})")
        inference = _time_sides({s.name: [functools.partial(s.infer, c) for c in chunks] for s in sides}, device)
        predictions = _concat(inference.results["dhkd"])

    result["train_epoch_s"] = training.seconds["dhkd"]
    result["train_img_per_s"] = len(train_images) / result["train_epoch_s"]
    mean_epoch = (result["train_epoch_s"] * (epochs - stage2_epochs) + result.get("train_epoch_stage2_s", 0.0) * stage2_epochs) / epochs
    result["projected_train_s"] = result["teacher_cache_s"] + epochs * mean_epoch
    result["infer_img_per_s_b32"] = len(test) / inference.seconds["dhkd"]
    for side, prefix in (("dhkd", ""), ("anomalib", "anomalib_")):
        if side in training.page_faults:
            result[f"{prefix}train_page_faults_per_step"] = training.page_faults[side] / len(batches)
            result[f"{prefix}train_kernel_cpu_s"] = training.kernel_s[side]
    if compare:
        result["anomalib_train_epoch_s"] = training.seconds["anomalib"]
        result["anomalib_infer_img_per_s_b32"] = len(test) / inference.seconds["anomalib"]
        result["train_epoch_ratio"] = result["train_epoch_s"] / result["anomalib_train_epoch_s"]
        result["infer_time_ratio_b32"] = result["anomalib_infer_img_per_s_b32"] / result["infer_img_per_s_b32"]
        result["timing"] = "interleaved" if device.type == "cpu" else "sequential"

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
        "bottleneck_width": config.model.bottleneck_width,
        "image_size": size, "batch_size": config.train.batch_size, "infer_batch_size": INFER_BATCH,
        "compile": config.train.compile, "amp": config.train.amp and resolved.type == "cuda",
        "channels_last": config.train.channels_last, "allocator": allocator_setting(),
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

    cpu_start = _cpu_times()
    with _LoadWatcher() as load:
        result.update(_bench(config, resolved, train_images, test, compare == "anomalib", log))
    result["load_1min_end"] = _load()
    result["cpu_steal_pct"] = _steal_percent(cpu_start, _cpu_times())
    if load.samples:
        result["load_1min_mean"] = statistics.fmean(load.samples)
        result["load_1min_max"] = max(load.samples)
    result["total_s"] = time.perf_counter() - started
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.items()}


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def command_line(args: argparse.Namespace) -> str:
    """The ``dhkd bench`` command that ``args`` came from, for the JSON and the README."""
    parts = ["dhkd", "bench", "--profile", args.profile, "--device", args.device]
    if args.data_root is not None:
        parts += ["--data-root", str(args.data_root), "--category", str(args.category)]
    if args.compare:
        parts += ["--compare", args.compare]
    for override in args.overrides:
        parts += ["--set", override]
    if args.json_path is not None:
        parts += ["--json", str(args.json_path)]
    return shlex.join(parts)


def build_parser() -> argparse.ArgumentParser:
    """``dhkd bench``'s options (``dhkd bench`` hands its arguments over unparsed)."""
    parser = argparse.ArgumentParser(prog="dhkd bench", description="Time training, inference and metrics; "
                                     "print a table and write the figures as JSON.")
    parser.add_argument("--profile", default="rd")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-root", type=Path)
    parser.add_argument("--category")
    parser.add_argument("--compare", choices=["anomalib"])
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", dest="overrides")
    parser.add_argument("--json", type=Path, dest="json_path")
    return parser


def main(argv: list[str]) -> int:
    """``dhkd bench ARGS``: run, print the table, write the JSON."""
    args = build_parser().parse_args(argv)
    config = load_config(args.profile, list(args.overrides))
    result = run_bench(config, args.device, args.data_root, args.category, args.compare)
    result["command"] = command_line(args)
    result["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(format_table(result))
    if args.json_path is not None:
        atomic_write_json(Path(args.json_path), result)
        print(f"wrote {args.json_path}")
    return 0


if __name__ == "__main__":  # python -m benchmarks.bench ARGS is dhkd bench ARGS
    try:
        sys.exit(main(sys.argv[1:]))
    except DhkdError as error:
        print(f"dhkd bench: {error}", file=sys.stderr)
        sys.exit(2)
