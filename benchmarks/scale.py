"""Peak memory and throughput of training and evaluation on a data set larger than a toy one.

``make`` writes a synthetic category in MVTec AD's layout (smooth random images with a little
noise, PNG; defective test images with a bright blob and its mask) under a folder you give
(never the repository). ``train`` and ``evaluate`` each measure one path in a fresh process:

* ``train --stream off``: today's in-memory path (every image decoded up front, optionally the
  teacher's feature cache); ``--stream on``: images decoded from disk per batch, next batch
  prefetched. Prints the data plan, the seconds and peak RSS after preparing, and the training
  images per second over ``--steps`` optimiser steps.
* ``evaluate --stream off``: the test split decoded up front and the whole training split decoded
  for the diagnostics' 16 images (the path before issue 24); ``--stream on``: the test split
  decoded per batch, 16 training images decoded.

Peak RSS is ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of that process::

    python -m benchmarks.scale make --out /tmp/scale --train 5000 --test 200
    python -m benchmarks.scale train --root /tmp/scale --stream off --steps 10 --set train.cache_teacher_features=false
    python -m benchmarks.scale train --root /tmp/scale --stream on --steps 10
    python -m benchmarks.scale evaluate --root /tmp/scale --stream off
    python -m benchmarks.scale evaluate --root /tmp/scale --stream on
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

CATEGORY = "synthetic"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def make(out: Path, n_train: int, n_test: int, size: int, seed: int = 0) -> None:
    from PIL import Image

    folder = out / CATEGORY
    if (folder / "done.json").exists() and json.loads((folder / "done.json").read_text()) == [n_train, n_test, size]:
        print(f"{folder} is complete, kept")
        return
    for sub in ("train/good", "test/good", "test/blob", "ground_truth/blob"):
        (folder / sub).mkdir(parents=True, exist_ok=True)

    def one(job: tuple[str, int]) -> None:
        kind, i = job
        rng = np.random.default_rng([seed, i, len(kind)])
        low = rng.random((3, 8, 8))
        image = np.asarray(Image.fromarray((low.transpose(1, 2, 0) * 255).astype(np.uint8)).resize((size, size),
                                                                                                 Image.BICUBIC), np.float32)
        image = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
        if kind == "blob":
            y, x = np.ogrid[:size, :size]
            cy, cx, r = rng.integers(size // 4, 3 * size // 4, 2).tolist() + [int(rng.integers(size // 16, size // 6))]
            mask = (y - cy) ** 2 + (x - cx) ** 2 <= r * r
            image[mask] = 255
            Image.fromarray(mask.astype(np.uint8) * 255).save(folder / "ground_truth/blob" / f"{i:05d}_mask.png",
                                                               compress_level=1)
            Image.fromarray(image).save(folder / "test/blob" / f"{i:05d}.png", compress_level=1)
        else:
            Image.fromarray(image).save(folder / ("train/good" if kind == "train" else "test/good") / f"{i:05d}.png",
                                        compress_level=1)

    jobs = [("train", i) for i in range(n_train)] + [("good", i) for i in range(n_test // 2)] + \
           [("blob", i) for i in range(n_test - n_test // 2)]
    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, jobs))
    (folder / "done.json").write_text(json.dumps([n_train, n_test, size]))
    print(f"wrote {len(jobs)} images of {size} px under {folder} in {time.perf_counter() - started:.1f} s")


def train(args: argparse.Namespace) -> dict:
    import torch

    from dhkd.config import load_config
    from dhkd.run.train import Trainer

    config = load_config(args.profile, [f"train.stream={args.stream}", *args.overrides])
    trainer = Trainer(config, args.root, CATEGORY, Path(args.scratch), device="cpu", progress=False)
    started = time.perf_counter()
    trainer.prepare()
    prepare_s = time.perf_counter() - started
    after_prepare = peak_rss_mb()
    order = trainer.epoch_order()
    started = time.perf_counter()
    for step in range(args.steps):
        if hasattr(trainer.images, "prefetch") and step + 1 < args.steps:
            trainer.images.prefetch(trainer.batch_indices(order, step + 1))
        trainer.train_step(trainer.batch_indices(order, step), stage=1)
    steps_s = time.perf_counter() - started
    plan = trainer.data_plan
    return {"what": "train", "stream": plan.stream, "teacher_cache": plan.cache, "images": plan.images,
            "image_size": config.data.image_size, "teacher": config.model.teacher.name, "threads": torch.get_num_threads(),
            "held_gb_estimate": round(plan.held_bytes / 1e9, 3), "prepare_s": round(prepare_s, 1),
            "peak_rss_mb_after_prepare": round(after_prepare), "steps": args.steps,
            "train_images_per_s": round(args.steps * config.train.batch_size / steps_s, 2),
            "peak_rss_mb": round(peak_rss_mb())}


def evaluate(args: argparse.Namespace) -> dict:
    import torch

    from dhkd.config import load_config
    from dhkd.data import load_split, stream_split
    from dhkd.run.build import build_model
    from dhkd.run.diagnostics import diagnose
    from dhkd.run.evaluate import compute_metrics, score_split

    config = load_config(args.profile, args.overrides)
    device = torch.device("cpu")
    model = build_model(config.model, config.train.seed).eval()
    started = time.perf_counter()
    load = stream_split if args.stream == "on" else load_split
    test = load(args.root, CATEGORY, "test", config.data.fit(), progress=False)
    train_images = load(args.root, CATEGORY, "train", config.data.fit(), progress=False).images
    chosen = torch.linspace(0, len(train_images) - 1, 16).round().long()
    diagnose(model, config, train_images[chosen], [])
    predictions = score_split(model, test, config, device, progress=False)
    scored_s = time.perf_counter() - started
    metrics = compute_metrics(predictions, config)
    return {"what": "evaluate", "stream": args.stream == "on", "test_images": len(test), "train_images": len(train_images),
            "seconds": round(time.perf_counter() - started, 1),
            "test_images_per_s": round(len(test) / scored_s, 2), "image_auroc": round(metrics["image_auroc"], 4),
            "peak_rss_mb": round(peak_rss_mb())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make")
    m.add_argument("--out", required=True)
    m.add_argument("--train", type=int, default=5000)
    m.add_argument("--test", type=int, default=200)
    m.add_argument("--size", type=int, default=256)
    for name in ("train", "evaluate"):
        p = sub.add_parser(name)
        p.add_argument("--root", required=True)
        p.add_argument("--stream", choices=("off", "on"), default="off")
        p.add_argument("--profile", default="offline")
        p.add_argument("--set", dest="overrides", action="append", default=[])
        p.add_argument("--steps", type=int, default=10)
        p.add_argument("--scratch", default="/tmp/dhkd-scale-run")
    args = parser.parse_args(argv)
    if args.command == "make":
        make(Path(args.out), args.train, args.test, args.size)
        return 0
    result = (train if args.command == "train" else evaluate)(args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
