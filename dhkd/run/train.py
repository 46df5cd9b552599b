"""The training loop: two stages, one place.

Stage 1 is plain reverse distillation on clean normal images. Stage 2 (the last
``masking.stage2_fraction`` of the epochs, when masking is on) shows the bottleneck the
teacher's features of a corrupted image and asks for the clean image's features.

What makes it fast: the training images are decoded once into one uint8 tensor on the
device; the teacher's features of the clean images never change, so they are computed once
and reused every epoch (the teacher only runs per step on stage-2 corruptions); tensors are
channels-last. What makes it scale: before anything is decoded, :func:`dhkd.run.budget.plan_data`
estimates what that would hold; a data set larger than memory is decoded from disk per batch
(the next batch prefetched in threads) with the teacher run per batch, or refused with the
estimate under ``train.stream=off``. Everything runs in fp32 as in RD4AD; ``train.amp`` runs the student (never the
teacher, whose features are the targets) in bf16 autocast on CUDA.

What makes it safe: every epoch ends in an atomic checkpoint (model, optimiser, config,
position, RNG state); Ctrl-C or SIGTERM saves the exact position mid-epoch, so ``--resume``
continues with the same batches and, on the CPU, ends with the same numbers.
"""

from __future__ import annotations

import csv
import io
import math
import os
import signal
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from dhkd.run.checkpoint import check_compatible, load_checkpoint, save_checkpoint
from dhkd.run.folder import (CHECKPOINT_NAME, CONFIG_NAME, HISTORY_NAME, RUN_INFO_NAME, START_NAME, kept_name,
                             no_checkpoint_error, prepare_run_dir, start_run_dir, stopped_before_checkpoint)
from dhkd.config import Config, check_run, save_config, to_dict
from dhkd.data import StreamedImages, count_images, load_split, normalize, stream_split, validate_category
from dhkd.data.dataset_file import DataSetFile, as_dataset, is_dataset_file, split_record
from dhkd.errors import DhkdError
from dhkd.io import atomic_write_json, atomic_write_text
from dhkd.run.lock import folder_lock
from dhkd.method.loss import distillation_loss
from dhkd.method.masking import corrupt, donor_indices
from dhkd.run.budget import DataPlan, feature_bytes, image_bytes, plan_data
from dhkd.run.diagnostics import batch_statistics
from dhkd.run.build import build_model, masking_arguments
from dhkd.run.device import autocast, resolve_device, seed_everything, set_memory_format, synchronize

class TrainingInterrupted(DhkdError):
    """Raised after SIGINT/SIGTERM once the resumable checkpoint is on disk."""


# ------------------------------------------------------------------------------ distributed


@dataclass
class Distributed:
    """Rank and world size; one process is ``rank 0 of 1``."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls, device: torch.device) -> "Distributed":
        """Join the process group that ``torchrun`` describes in the environment, if any."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(rank=dist.get_rank(), world=dist.get_world_size())

    def close(self) -> None:
        """Leave the process group (a no-op for one process); every rank calls it at the end."""
        if self.world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()

    def any(self, flag: bool, device: torch.device) -> bool:
        """Whether ``flag`` is set on any rank, so that all ranks stop at the same step."""
        if self.world == 1:
            return flag
        import torch.distributed as dist

        tensor = torch.tensor([int(flag)], device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item())

    def shard(self, n: int, device: torch.device) -> torch.Tensor:
        """This rank's indices of ``range(n)``: consecutive slices of ``ceil(n / world)``, the
        last one padded with its final index so that every rank's slice has the same length
        (collectives need equal sizes; :meth:`gather_shards` drops the padding)."""
        size = -(-n // self.world)
        return torch.arange(self.rank * size, (self.rank + 1) * size, device=device).clamp(max=n - 1)

    def gather_shards(self, rows: torch.Tensor, n: int) -> torch.Tensor:
        """Every rank's ``rows`` (one :meth:`shard` each), in rank order: the first ``n``."""
        if self.world == 1:
            return rows[:n]
        import torch.distributed as dist

        channels_last = rows.dim() == 4 and rows.is_contiguous(memory_format=torch.channels_last)
        rows = rows.contiguous()  # collectives want plainly contiguous tensors
        gathered = [torch.empty_like(rows) for _ in range(self.world)]
        dist.all_gather(gathered, rows)
        every = torch.cat(gathered)[:n]
        return every.contiguous(memory_format=torch.channels_last) if channels_last else every

    def mean(self, value: float, device: torch.device) -> float:
        if self.world == 1:
            return value
        import torch.distributed as dist

        tensor = torch.tensor([value], device=device, dtype=torch.float64)
        dist.all_reduce(tensor)
        return float(tensor) / self.world


# ------------------------------------------------------------------------------ state


@dataclass
class Position:
    """Where training stands: finished epochs plus progress inside the current one."""

    epoch: int = 0  # epochs completed
    step: int = 0  # batches completed in the current epoch
    permutation: torch.Tensor | None = None  # the current epoch's order
    loss_sum: float = 0.0
    seconds: float = 0.0  # wall time spent in the current epoch so far
    history: list[dict[str, Any]] = field(default_factory=list)


def learning_rate(config: Config, epoch: int, step: int, batches: int) -> float:
    """The learning rate of one step. ``cosine`` falls from ``train.lr`` to 0 over all steps of
    the run (half a cosine): with a short CPU budget the last epochs then settle instead of
    jumping around at RD4AD's constant 0.005. A function of the position only, so resuming
    needs no scheduler state."""
    lr, schedule = config.train.lr, config.train.lr_schedule
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        done = (epoch * batches + step) / max(1, config.train.epochs * batches)
        return 0.5 * lr * (1.0 + math.cos(math.pi * done))
    raise ValueError(f"unknown learning-rate schedule {schedule!r} (train.lr_schedule's choices are checked on loading)")


def stage_of(epoch: int, config: Config) -> int:
    """1 or 2 for a 0-based epoch index; stage 2 is the last share of the epochs."""
    if not config.masking.enabled:
        return 1
    stage2_epochs = round(config.train.epochs * config.masking.stage2_fraction)
    return 2 if epoch >= config.train.epochs - stage2_epochs else 1


@contextmanager
def stop_requests() -> Iterator[dict[str, int]]:
    """Turn SIGINT/SIGTERM into a flag the loop checks between steps (main thread only)."""
    flag = {"signal": 0}

    def handler(signum: int, _frame: Any) -> None:
        flag["signal"] = signum

    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: no handlers, no graceful stop
        pass
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# ------------------------------------------------------------------------------ trainer


class Trainer:
    """Trains one category into one run folder. ``Trainer(...).fit()`` is the whole job.

    The training step is public so that tools can drive it without a run of their own
    (``benchmarks/`` times it): :meth:`prepare`, then :meth:`epoch_order`,
    :meth:`batch_indices` and :meth:`train_step`; :meth:`teacher_features` and
    :meth:`teacher_cache` are the teacher's side of a step.
    """

    def __init__(self, config: Config, data_root: str | Path, category: str, out_dir: str | Path,
                 device: str | None = "auto", progress: bool = True) -> None:
        self.config = config
        self.data_root = data_root if isinstance(data_root, DataSetFile) else Path(data_root)
        self.category = category
        self.out_dir = Path(out_dir)
        self.device = resolve_device(device)
        self.progress = progress
        self.dist = Distributed.from_environment(self.device)
        if self.dist.world > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(self.device)
        self.checkpoint_path = self.out_dir / CHECKPOINT_NAME
        self.dataset_record: dict[str, Any] | None = None  # a data-set file's content and split, for run.json
        self.calibration_images = 0  # normal training images held back (data.calibration_share); none for a tool's own

    # -- setup -----------------------------------------------------------------------

    def prepare(self, images: torch.Tensor | None = None) -> None:
        """Model, optimiser, training images on the device, teacher cache. ``images`` (uint8
        ``(N, 3, S, S)``) replace the category's train split, so that a tool can train on data
        it made itself; :meth:`fit` calls this first."""
        learning_rate(self.config, 0, 0, 1)  # an unknown schedule fails before any work
        if images is None:
            validate_category(self.data_root, self.category)
            self.dataset_record = dataset_record(self.data_root, self.category)
        _check_writable(self.out_dir)
        seed_everything(self.config.train.seed)
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels
        self.model = build_model(self.config.model, self.config.train.seed).to(self.device)
        self.student: nn.Module = self.model.student
        self.model = set_memory_format(self.model, self.config.train.channels_last)
        self.optimizer = torch.optim.Adam(self.student.parameters(), lr=self.config.train.lr,
                                          betas=tuple(self.config.train.betas), fused=True)
        self.forward_student: nn.Module = self.student
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            if self.device.type == "cuda":  # BatchNorm over the global batch, as on one GPU (the CPU has no SyncBatchNorm)
                self.student = nn.SyncBatchNorm.convert_sync_batchnorm(self.student)  # in place; same parameters
            self.forward_student = DistributedDataParallel(self.student, device_ids=ids)
        if self.config.train.compile:
            self.forward_student = torch.compile(self.forward_student)
        self.generator = torch.Generator(device=self.device).manual_seed(self.config.train.seed)
        if images is None:
            share = self.config.data.calibration_share  # held back for evaluation's threshold, never trained on
            n = count_images(self.data_root, self.category, "train", share)
            self.calibration_images = count_images(self.data_root, self.category, "calibration", share) if share else 0
            self.data_plan = plan_data(self.config, n, self.device)  # before anything is decoded
            if self.data_plan.note and self.dist.main:
                print(self.data_plan.note, file=sys.stderr, flush=True)
            if self.data_plan.stream:
                images = stream_split(self.data_root, self.category, "train", self.config.data.fit(),
                                      progress=False, calibration_share=share).images
            else:
                images = load_split(self.data_root, self.category, "train", self.config.data.fit(),
                                    progress=self.progress, calibration_share=share).images
        else:  # a tool's own images, held as given; the feature cache as configured
            n = len(images)
            self.data_plan = DataPlan(n, isinstance(images, StreamedImages), self.config.train.cache_teacher_features,
                                      n * image_bytes(self.config), n * feature_bytes(self.config), None)
        self.images = images.to(self.device)  # uint8 on the device, decoded once (or per batch when streamed)
        started = time.perf_counter()
        self.cache = self.teacher_cache() if self.data_plan.cache else None
        synchronize(self.device)
        self.teacher_cache_seconds = time.perf_counter() - started

    def start(self) -> nn.Module:
        """The data-driven starts of epoch 0 (fusion scale matching, memory k-means; what
        ``start.pt`` keeps), after :meth:`prepare`: the model the first optimiser step sees."""
        self._init_from_data(0)
        return self.model

    def teacher_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The frozen teacher's features of normalised images, without gradients, in the student's layout."""
        if self.config.train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        # no_grad rather than inference_mode: these features feed the student's autograd graph,
        # which may not save inference tensors. The one-off cache does use inference_mode.
        # Never under autocast: the targets stay fp32 whatever train.amp says.
        with torch.no_grad():
            return self.model.teacher(images)

    def teacher_cache(self) -> list[torch.Tensor]:
        """Teacher features of every (unaugmented) training image, computed once. Under torchrun
        each rank computes one slice and receives the others' (every rank needs all of them:
        its batches are drawn from the whole set)."""
        shard = self.dist.shard(len(self.images), self.device)
        parts: list[list[torch.Tensor]] = []
        batch = max(1, self.config.eval.batch_size)
        with torch.inference_mode():
            for start in range(0, len(shard), batch):
                parts.append(self.teacher_features(normalize(self.images[shard[start:start + batch]])))
            levels = [torch.cat([p[s] for p in parts]) for s in range(len(parts[0]))]
            return [self.dist.gather_shards(level, len(self.images)) for level in levels]

    # -- one step --------------------------------------------------------------------

    def epoch_order(self) -> torch.Tensor:
        """A fresh random order of the training images, from the run's own generator (so resuming repeats it)."""
        return torch.randperm(len(self.images), generator=self.generator, device=self.device)

    def batch_indices(self, order: torch.Tensor, step: int) -> torch.Tensor:
        """This process's share of batch ``step`` of an epoch in ``order`` (all of it with one process)."""
        batch = self.config.train.batch_size
        return order[step * batch:(step + 1) * batch][self.dist.rank::self.dist.world]

    def train_step(self, indices: torch.Tensor, stage: int) -> torch.Tensor:
        """One optimiser step on the training images at ``indices``; stage 2 corrupts the student's input.
        Returns the loss, left on the device so that a step needs no host synchronisation."""
        images = normalize(self.images[indices]) if self.cache is None or stage == 2 else None
        if self.cache is not None:
            targets = [level[indices] for level in self.cache]
        else:
            targets = self.teacher_features(images)
        if stage == 2:
            donors = None
            if self.config.masking.fill != "noise":  # from other training images, never the image itself
                donors = normalize(self.images[donor_indices(indices, len(self.images), self.generator)])
            corrupted, _ = corrupt(images, self.generator, donors, **masking_arguments(self.config.masking))
            inputs = self.teacher_features(corrupted)
        else:
            inputs = targets
        with autocast(self.device, self.config.train.amp):
            outputs = self.forward_student(inputs)
        loss = distillation_loss(targets, outputs, self.config.train.loss)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    # -- the loop --------------------------------------------------------------------

    def fit(self, resume: bool = False, after_epoch: Callable[[list[dict[str, Any]]], None] | None = None) -> Path:
        """Train to ``config.train.epochs`` and return the run folder. ``after_epoch(history)`` is
        called after every finished epoch (its last row is that epoch), e.g. to score the model."""
        self.prepare()
        position = self._resume() if resume else self._start()
        epochs = self.config.train.epochs
        bar = tqdm(total=epochs, initial=position.epoch, desc=f"train {self.category}", unit="epoch",
                   disable=not (self.progress and self.dist.main))
        with stop_requests() as stop:
            while position.epoch < epochs:
                stage = stage_of(position.epoch, self.config)
                if position.step == 0:
                    self._init_from_data(position.epoch)
                    if position.epoch == 0:
                        self._save_start()
                if position.permutation is None:
                    position.permutation = self.epoch_order()
                batches = self.batches_per_epoch()
                self.student.train()
                started = time.perf_counter()
                epoch_loss = torch.zeros((), dtype=torch.float64, device=self.device)
                while position.step < batches:
                    for group in self.optimizer.param_groups:
                        group["lr"] = learning_rate(self.config, position.epoch, position.step, batches)
                    if isinstance(self.images, StreamedImages) and position.step + 1 < batches:
                        self.images.prefetch(self.batch_indices(position.permutation, position.step + 1))
                    epoch_loss += self.train_step(self.batch_indices(position.permutation, position.step), stage)
                    position.step += 1
                    # one tiny all-reduce per step with several processes: a signal that reached one
                    # rank stops every rank after the same step, so none waits for the others forever
                    stopping = self.dist.any(bool(stop["signal"]), self.device)
                    if stopping or self.device.type == "cpu":  # a sync is free on the CPU
                        self._check_finite(position, epoch_loss)
                    if stopping:
                        position.loss_sum += float(epoch_loss)
                        position.seconds += time.perf_counter() - started
                        self._interrupted(position, stop["signal"])
                self._check_finite(position, epoch_loss)
                position.loss_sum += float(epoch_loss)
                position.seconds += time.perf_counter() - started
                self._end_epoch(position, stage, batches)
                if after_epoch is not None:
                    after_epoch(position.history)
                bar.update(1)
                bar.set_postfix(stage=stage, loss=f"{position.history[-1]['loss']:.4f}")
        bar.close()
        self._write_info(position, status="done")
        return self.out_dir

    def _init_from_data(self, epoch: int) -> None:
        """Data-driven starts of the additions (config: fusion.match_scale, memory.init), each
        at the start of its epoch. Their results are in the checkpoint, so a resumed run that
        is past that point does not repeat them."""
        memory = self.config.model.memory
        if epoch == 0 and self.config.model.fusion.enabled and self.config.model.fusion.match_scale:
            with self._batch_statistics():
                self.student.fusion.match_scales(self._clean_features(torch.arange(min(64, len(self.images)))))
        if memory.enabled and memory.init == "kmeans" and epoch == memory.init_epoch:
            self._init_memory()

    def _save_start(self) -> None:
        """``start.pt``: the student as the first optimiser step finds it, so that notebooks and
        tools compare a trained run with its true starting point, not with a freshly built model
        (which lacks the data-driven starts). With ``model.memory.init_epoch > 0`` the items in
        it are still the random ones: k-means runs later."""
        if self.dist.main:
            save_checkpoint(self.out_dir / START_NAME, {"student": self.student.state_dict(), "config": to_dict(self.config),
                                                        "category": self.category, "epoch": 0, "step": 0})

    def _clean_features(self, indices: torch.Tensor) -> list[torch.Tensor]:
        indices = indices.to(self.device)
        return [level[indices] for level in self.cache] if self.cache is not None else self.teacher_features(normalize(self.images[indices]))

    @contextmanager
    def _batch_statistics(self) -> Iterator[None]:
        """Run the student as training sees it (BatchNorm on batch statistics) without gradients,
        restoring BatchNorm's running statistics afterwards, so the pass changes nothing else."""
        with batch_statistics(self.student), torch.no_grad(), autocast(self.device, self.config.train.amp):
            yield

    def _init_memory(self) -> None:
        """k-means the bottleneck embeddings of every clean training image into the memory items."""
        batch, parts = max(1, self.config.train.batch_size), []
        with self._batch_statistics():
            for start in range(0, len(self.images), batch):
                indices = torch.arange(start, min(start + batch, len(self.images)))
                parts.append(self.student.bottleneck_embedding(self._clean_features(indices)).float())
        embeddings = torch.cat(parts)
        vectors, items = embeddings.shape[0] * embeddings.shape[2] * embeddings.shape[3], self.config.model.memory.items
        if vectors < items:
            raise DhkdError(f"model.memory.init=kmeans needs at least {items} embedding vectors (model.memory.items), "
                            f"but the {len(self.images)} training images give {vectors}",
                            "add training images, lower model.memory.items, or use --set model.memory.init=random")
        self.student.memory.init_from_embeddings(embeddings, seed=self.config.train.seed)

    def batches_per_epoch(self) -> int:
        """RD4AD keeps the last, smaller batch; with several processes each needs a share, so it is dropped."""
        batch = self.config.train.batch_size
        if self.dist.world > 1:
            return max(1, len(self.images) // batch)
        return math.ceil(len(self.images) / batch)

    def _end_epoch(self, position: Position, stage: int, batches: int) -> None:
        loss = self.dist.mean(position.loss_sum / batches, self.device)
        position.history.append({"epoch": position.epoch + 1, "stage": stage, "loss": loss,
                                 "seconds": round(position.seconds, 3),
                                 "images_per_s": round(len(self.images) / max(position.seconds, 1e-9), 2)})
        position.epoch += 1
        position.step, position.permutation, position.loss_sum, position.seconds = 0, None, 0.0, 0.0
        last = position.epoch == self.config.train.epochs
        if last or position.epoch % max(1, self.config.train.checkpoint_every) == 0:
            self._save(position)
        keep = self.config.train.keep_every
        if keep and position.epoch % keep == 0:
            self._keep(position.epoch)
        if self.dist.main:
            _write_history(self.out_dir / HISTORY_NAME, position.history)
            self._write_info(position, status="training")

    # -- checkpoints -----------------------------------------------------------------

    def _start(self) -> Position:
        if self.checkpoint_path.exists():  # every rank stops here, not only the one that would write
            raise DhkdError(f"{self.out_dir} already holds a run (checkpoint.pt)",
                            "add --resume to continue it, or choose another --out folder")
        if self.dist.main:
            start_run_dir(self.out_dir)
            save_config(self.config, self.out_dir / CONFIG_NAME)
        return Position()

    def _resume(self) -> Position:
        if stopped_before_checkpoint(self.out_dir):
            raise no_checkpoint_error(self.out_dir, "resume")
        state = load_checkpoint(self.checkpoint_path, map_location=self.device)
        check_compatible(state, self.config, self.checkpoint_path)
        self.student.load_state_dict(state["student"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng_torch"].cpu())
        self.generator.set_state(state["rng_generator"].cpu())
        if self.dist.main:
            save_config(self.config, self.out_dir / CONFIG_NAME)  # epochs may have been extended
        permutation = state["permutation"]
        return Position(epoch=state["epoch"], step=state["step"],
                        permutation=None if permutation.numel() == 0 else permutation.to(self.device),
                        loss_sum=state["loss_sum"], seconds=state["seconds"], history=list(state["history"]))

    def _save(self, position: Position) -> None:
        if not self.dist.main:
            return
        permutation = position.permutation if position.permutation is not None else torch.empty(0, dtype=torch.long)
        save_checkpoint(self.checkpoint_path, {
            "student": self.student.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "config": to_dict(self.config),
            "category": self.category,
            "epoch": position.epoch,
            "step": position.step,
            "permutation": permutation.cpu(),
            "loss_sum": position.loss_sum,
            "seconds": position.seconds,
            "history": position.history,
            "rng_torch": torch.get_rng_state(),
            "rng_generator": self.generator.get_state(),
        })

    def _keep(self, epoch: int) -> None:
        """The student after ``epoch`` (weights, config, epoch), for :mod:`dhkd.run.curve`."""
        if self.dist.main:
            path = self.out_dir / kept_name(epoch)
            path.parent.mkdir(exist_ok=True)
            save_checkpoint(path, {"student": self.student.state_dict(), "config": to_dict(self.config),
                                   "category": self.category, "epoch": epoch, "step": 0})

    def _interrupted(self, position: Position, signum: int) -> None:
        self._save(position)
        self._write_info(position, status="interrupted")
        name = signal.Signals(signum).name if signum else "a signal to another process of the run"
        raise TrainingInterrupted(
            f"training stopped by {name} at epoch {position.epoch + 1}, batch {position.step}; "
            f"a resumable checkpoint is at {self.checkpoint_path}",
            "run the same dhkd train command again with --resume",
        )

    def _check_finite(self, position: Position, epoch_loss: torch.Tensor) -> None:
        """Stop on a NaN/inf loss; the optimiser has stepped with it, so nothing is saved."""
        value = float(epoch_loss)
        if not math.isfinite(value):
            self._diverged(position, value)

    def _diverged(self, position: Position, loss: float) -> None:
        kept = (f"the last good checkpoint (epoch {load_checkpoint(self.checkpoint_path)['epoch']}) is kept at "
                f"{self.checkpoint_path}") if self.checkpoint_path.exists() else "no checkpoint had been written yet"
        self._write_info(position, status="diverged")
        raise DhkdError(f"the training loss became {loss} at epoch {position.epoch + 1} (by batch {position.step}); "
                        f"{kept}", "lower train.lr (e.g. --set train.lr=0.001) or check the training images")

    def _write_info(self, position: Position, status: str) -> None:
        if not self.dist.main:
            return
        atomic_write_json(self.out_dir / RUN_INFO_NAME, {
            "category": self.category,
            "data_root": _data_root_text(self.data_root),
            **({"dataset": self.dataset_record} if self.dataset_record else {}),
            "profile": self.config.profile,
            "teacher": self.config.model.teacher.name,
            "device": str(self.device),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),  # which GPU, under make reproduce DEVICES=
            "world_size": self.dist.world,
            "status": status,
            "epochs_done": position.epoch,
            "epochs": self.config.train.epochs,
            "train_seconds": round(sum(row["seconds"] for row in position.history), 3),
            "train_images": len(self.images),
            "calibration_images": self.calibration_images,  # held back from training for the threshold
            "teacher_cache_seconds": round(self.teacher_cache_seconds, 3),
            "data_plan": self.data_plan.record(),
        })


def train(config: Config, data_root: str | Path, category: str, out_dir: str | Path, device: str | None = "auto",
          resume: bool | str = False, progress: bool = True) -> Path:
    """Train DHKD on one category; the run folder gets config, checkpoint, history and run info.

    The config is checked first (before any data is read); the run folder is locked while
    training (by rank 0 under torchrun), so a second training into it refuses to start.
    ``resume="auto"``: resume a run of this exact configuration found in ``out_dir``, and move
    one of another configuration aside first (:func:`~dhkd.run.folder.prepare_run_dir`, under the lock)."""
    check_run(config)
    lock = folder_lock(out_dir, "run folder") if int(os.environ.get("RANK", "0")) == 0 else nullcontext()
    with lock:
        if resume == "auto":
            resume = prepare_run_dir(out_dir, config)
            if resume:
                print(f"resuming the run in {Path(out_dir).name} from its checkpoint")
        trainer = Trainer(config, data_root, category, out_dir, device, progress)
        try:
            return trainer.fit(resume=resume)
        finally:
            trainer.dist.close()


def dataset_record(data_root: str | Path | DataSetFile, category: str) -> dict[str, Any] | None:
    """For a data-set file: its content and split, recorded in run.json so evaluation uses the same split."""
    if not is_dataset_file(data_root):
        return None
    return split_record(as_dataset(data_root, category))


def _data_root_text(data_root: Path | DataSetFile) -> str:
    if isinstance(data_root, DataSetFile):
        return str(data_root.source.resolve()) if data_root.source else str(data_root.root)
    return str(data_root.resolve())


def _write_history(path: Path, history: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, buffer.getvalue())


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"  # one per process: torchrun ranks probe at once
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise DhkdError(f"cannot write to the output folder {folder} ({error.strerror})",
                        "choose an --out folder you can write to") from None
