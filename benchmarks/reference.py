"""A training-free reference beside DHKD: PatchCore-style nearest neighbours on the same teacher.

What a user could pick instead of training a student: keep the teacher's features of the normal
training images and call a test patch anomalous by its distance to the nearest of them
(Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022). This is that
recipe on the kit's own teacher, images and split, so that a table can say how far DHKD is from
what its teacher's features allow:

- features: the teacher's stride-8 and stride-16 scales, each averaged over its 3 x 3
  neighbourhood, the coarser one upsampled to the finer one's grid, concatenated;
- memory: a greedy (k-centre) coreset of 1 % of the training patches, chosen in a random
  projection to 128 dimensions (the random seed sets the projection and the first centre);
- scoring: the Euclidean distance of every test patch to its nearest memory patch, upsampled
  to the image size, blurred with the kit's Gaussian (``eval.blur_sigma``); the image score is
  the map's maximum. No re-weighting of the image score (PatchCore's optional step).

The metrics are the kit's own (:func:`dhkd.run.evaluate.compute_metrics`), per defect kind too.

    python -m benchmarks.reference --data data/mtd.yaml --profile offline --seeds "111 112 113" \\
        --results benchmarks/results/mtd/offline

writes ``RESULTS/reference/<category>/seed<N>.json`` and prints mean ± std over the random seeds,
beside the ablation's RD and DHKD rows where ``RESULTS/ablation`` holds them. ``--out ROOT``
instead of ``--results`` picks the results folder as ``make reproduce`` does
(``ROOT/<data>/<profile>``): ``make ablation REFERENCE=1`` runs it so, and its tables then show
the reference's row (:func:`dhkd.kit.tables.load_reference`). A seed whose JSON file records the
same settings is not run again.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from dhkd.config import Config, load_config
from dhkd.data.dataset_file import as_dataset, is_dataset_file
from dhkd.data import CategorySplit, list_categories, load_split, normalize
from dhkd.errors import DhkdError
from dhkd.io import atomic_write_json
from dhkd.kit.tables import load_ablation
from dhkd.method.anomaly_map import gaussian_blur, image_scores, without_padding
from dhkd.run.build import build_teacher
from dhkd.run.evaluate import Predictions, compute_metrics

CORESET_SHARE = 0.01
PROJECTION_DIM = 128
METRICS = ("image_auroc", "pixel_auroc", "aupro")


@torch.no_grad()
def patch_features(teacher: torch.nn.Module, images: torch.Tensor, batch: int = 32) -> torch.Tensor:
    """uint8 images ``(N, 3, H, W)`` -> locally aware patch features ``(N, C2 + C3, H/8, W/8)``."""
    out = []
    for start in range(0, len(images), batch):
        _, f2, f3 = teacher(normalize(images[start:start + batch]))
        f2 = F.avg_pool2d(f2, 3, stride=1, padding=1)
        f3 = F.avg_pool2d(f3, 3, stride=1, padding=1)
        f3 = F.interpolate(f3, size=f2.shape[-2:], mode="bilinear", align_corners=False)
        out.append(torch.cat([f2, f3], dim=1))
    return torch.cat(out)


def greedy_coreset(patches: torch.Tensor, share: float, generator: torch.Generator) -> torch.Tensor:
    """Indices of ``share`` of the rows of ``patches (M, C)`` chosen k-centre greedily: each next one
    the patch farthest from those chosen (distances in a random projection, as PatchCore does)."""
    count = max(1, round(share * len(patches)))
    projection = torch.randn(patches.shape[1], PROJECTION_DIM, generator=generator) / math.sqrt(PROJECTION_DIM)
    projected = patches @ projection
    squared = (projected * projected).sum(dim=1)
    chosen = torch.empty(count, dtype=torch.long)
    chosen[0] = int(torch.randint(len(patches), (1,), generator=generator))
    nearest = torch.full((len(patches),), math.inf)
    for i in range(count):
        if i:
            chosen[i] = int(nearest.argmax())
        centre = projected[chosen[i]]
        # |x - c|^2 = |x|^2 - 2 x.c + |c|^2: one matrix-vector product per step, no (M, C) temporary
        nearest = torch.minimum(nearest, squared - 2 * (projected @ centre) + squared[chosen[i]])
    return chosen


def nearest_distances(patches: torch.Tensor, memory: torch.Tensor, chunk: int = 16384) -> torch.Tensor:
    """Euclidean distance of every row of ``patches`` to its nearest row of ``memory``."""
    return torch.cat([torch.cdist(patches[i:i + chunk], memory).amin(dim=1) for i in range(0, len(patches), chunk)])


def score(train: CategorySplit, test: CategorySplit, config: Config, seed: int) -> tuple[Predictions, dict[str, float]]:
    """The reference's predictions on ``test`` with a memory from ``train``, and where the time went."""
    torch.manual_seed(seed)
    # PatchCore's strides 8 and 16 whatever stages the profile distils (model.teacher.stages)
    teacher_config = dataclasses.replace(config.model, teacher=dataclasses.replace(config.model.teacher, stages=[1, 2, 3]))
    teacher = build_teacher(teacher_config).eval()
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    features = patch_features(teacher, train.images)
    seconds["train_features"] = time.perf_counter() - start
    patches = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])
    start = time.perf_counter()
    memory = patches[greedy_coreset(patches, CORESET_SHARE, torch.Generator().manual_seed(seed))]
    seconds["coreset"] = time.perf_counter() - start
    start = time.perf_counter()
    test_features = patch_features(teacher, test.images)
    n, c, h, w = test_features.shape
    distances = nearest_distances(test_features.permute(0, 2, 3, 1).reshape(-1, c), memory).view(n, 1, h, w)
    maps = F.interpolate(distances, size=tuple(test.images.shape[-2:]), mode="bilinear", align_corners=False).squeeze(1)
    if config.eval.blur_sigma > 0:
        maps = gaussian_blur(maps, config.eval.blur_sigma)
    without_padding(maps, test.valid)
    seconds["test"] = time.perf_counter() - start
    predictions = Predictions(maps, image_scores(maps, test.valid), test.masks, test.labels, test.defect_types,
                              [str(p) for p in test.paths], test.has_mask, test.valid)
    return predictions, seconds


def settings(config: Config, data: str) -> dict[str, Any]:
    """What a reference result depends on: a seed's JSON file with the same settings is up to date."""
    return {"data": str(Path(data).resolve()), "teacher": config.model.teacher.name,
            "weights": config.model.teacher.weights, "image_size": config.data.image_size, "resize": config.data.resize,
            "blur_sigma": config.eval.blur_sigma, "fpr_limit": config.eval.fpr_limit, "coreset_share": CORESET_SHARE}


def run(data: str, category: str, config: Config, seeds: list[int], results: Path | None) -> list[dict[str, Any]]:
    fit = config.data.fit()
    wanted = settings(config, data)
    rows, todo = [], []
    for seed in seeds:
        path = None if results is None else results / "reference" / category / f"seed{seed}.json"
        recorded = json.loads(path.read_text()) if path is not None and path.is_file() else None
        if recorded is not None and recorded.get("settings") == wanted:
            print(f"{category} seed {seed}: up to date ({path})", flush=True)
            rows.append(recorded)
        else:
            todo.append(seed)
    if not todo:
        return rows
    train = load_split(data, category, "train", fit, progress=False)
    test = load_split(data, category, "test", fit, progress=False)
    for seed in todo:
        predictions, seconds = score(train, test, config, seed)
        row = {"method": "patchcore", "category": category, "seed": seed, "profile": config.profile,
               "teacher": config.model.teacher.name, "image_size": config.data.image_size,
               "resize": config.data.resize, "coreset_share": CORESET_SHARE,
               "memory_patches": round(CORESET_SHARE * len(train) * (fit.height // 8) * (fit.width // 8)),
               **compute_metrics(predictions, config), "seconds": seconds, "settings": wanted}
        rows.append(row)
        print(f"{category} seed {seed}: " + " / ".join(f"{100 * row[m]:.2f}" for m in METRICS)
              + f"  ({sum(seconds.values()):.0f} s)", flush=True)
        if results is not None:
            atomic_write_json(results / "reference" / category / f"seed{seed}.json", row)
    return rows


def results_name(data: str) -> str:
    """The results sub-folder ``make reproduce`` names after a data root: a data-set file's name, else the folder's."""
    return as_dataset(data).name if is_dataset_file(data) else Path(data).resolve().name


def _mean_std(values: list[float]) -> str:
    values = [100 * v for v in values if not math.isnan(v)]
    if not values:
        return "–"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.2f} ± {spread:.2f}"


def summary(rows: list[dict[str, Any]], ablation: list[dict[str, Any]]) -> str:
    """Markdown: the reference beside the ablation's RD and DHKD rows (mean ± std over seeds),
    then image AUROC per defect kind where there are several kinds."""
    groups = [(title, [r for r in ablation if r.get("key") == key]) for title, key in (("RD", "rd"), ("DHKD (all additions)", "all"))]
    groups = [(title, group) for title, group in groups if group] + [("PatchCore-style, no training", rows)]
    lines = ["| detector | seeds | image AUROC | pixel AUROC | AUPRO |", "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {title} | {len(group)} | " + " | ".join(_mean_std([r[m] for r in group]) for m in METRICS) + " |"
              for title, group in groups]
    kinds = sorted({kind for r in rows for kind in r["per_defect"]})
    if len(kinds) > 1:
        lines += ["", "| image AUROC per kind | " + " | ".join(title for title, _ in groups) + " |",
                  "| --- |" + " ---: |" * len(groups)]
        lines += [f"| {kind} | " + " | ".join(_mean_std([r["per_defect"][kind]["image_auroc"] for r in group
                                                         if kind in r.get("per_defect", {})]) for _, group in groups) + " |"
                  for kind in kinds]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reference", description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="a data root in MVTec AD's layout, or a data-set file")
    parser.add_argument("--category", "--categories", dest="category",
                        help="one category, or several separated by spaces (default: every category of --data)")
    parser.add_argument("--profile", default="offline", help="whose teacher, image size and blur are used")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", dest="overrides")
    parser.add_argument("--seeds", default="111", help="e.g. '111 112 113'")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--results", type=Path, help="a results folder (results/<data>/<profile>): writes its "
                       "reference/ JSON files and compares with its ablation/")
    where.add_argument("--out", type=Path, help="a results root, as make reproduce's RESULTS: the results folder is "
                       "OUT/<data>/<profile>")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.profile, args.overrides)
        seeds = [int(s) for s in args.seeds.replace(",", " ").split()]
        if args.out is not None:
            args.results = args.out / results_name(args.data) / config.profile
        categories = args.category.split() if args.category and args.category.strip() else list_categories(args.data)
        for category in categories:
            rows = run(args.data, category, config, seeds, args.results)
            ablation = []
            if args.results is not None:
                ablation = load_ablation(args.results).get(category, [])
            print(f"\n{category}, image / pixel AUROC / AUPRO in %, mean ± std over seeds:\n")
            print(summary(rows, ablation))
    except DhkdError as error:
        print(f"reference: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
