"""Which of the student's three scales finds which defect kind (lab tool).

    python -m benchmarks.per_scale RUN --data data/mtd.yaml

Scores a trained run's test split once per scale: the ``1 - cos`` map of the stride-4, stride-8
and stride-16 features alone (upsampled and blurred as the full map is; padding left out), and
their sum (the kit's map), and prints image AUROC per defect kind and pixel AUROC per scale, in
percent. Where the student trails a detector on the same features, this says at which scale the
normal and the defective images are not told apart.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import torch

from dhkd import metrics
from dhkd.data import normalize, stream_split
from dhkd.kit.tables import markdown_table
from dhkd.method.anomaly_map import gaussian_blur, image_scores, scale_maps, without_padding
from dhkd.run.evaluate import load_model
from dhkd.run.folder import RUN_INFO_NAME

SCALES = ("stride 4", "stride 8", "stride 16")
SUM = "sum (the kit's map)"
COARSE = "stride 8 + 16 (the finest left out)"  # the scales the training-free reference uses


@torch.inference_mode()
def per_scale_maps(run: Path, data: str, batch: int = 16) -> tuple[torch.Tensor, object]:
    """``(N, 5, H, W)``: each scale's blurred map, their sum, and the sum of the two coarser ones,
    0 on padding; and the test split."""
    model, config = load_model(run, "cpu")
    category = json.loads((run / RUN_INFO_NAME).read_text())["category"]
    split = stream_split(data, category, "test", config.data.fit(), progress=False)
    parts = []
    for start in range(0, len(split), batch):
        x = normalize(split.images[start:start + batch])
        teacher = model.teacher(x)
        scales = scale_maps(teacher, model.student(teacher), config.data.shape)  # (B, 3, H, W)
        maps = torch.cat([scales, scales.sum(dim=1, keepdim=True), scales[:, 1:].sum(dim=1, keepdim=True)], dim=1)
        b, k, h, w = maps.shape
        if config.eval.blur_sigma > 0:
            maps = gaussian_blur(maps.reshape(b * k, h, w), config.eval.blur_sigma).reshape(b, k, h, w)
        parts.append(maps)
    maps = torch.cat(parts)
    without_padding(maps, split.valid)
    return maps, split


def table(maps: torch.Tensor, split) -> pd.DataFrame:
    """Rows: the three scales, their sum and the two coarser ones' sum; columns: image AUROC over all kinds, per kind, and pixel AUROC."""
    labels, kinds = split.labels, split.defect_types
    good = [i for i, kind in enumerate(kinds) if kind == "good"]
    rows = {}
    for index, name in enumerate(SCALES + (SUM, COARSE)):
        scale = maps[:, index]
        scores = image_scores(scale, split.valid)
        row = {"image AUROC": 100 * metrics.image_auroc(scores, labels)}
        for kind in sorted(set(kinds) - {"good"}):
            chosen = good + [i for i, k in enumerate(kinds) if k == kind]
            row[kind] = 100 * metrics.image_auroc(scores[chosen], labels[chosen])
        known = split.mask_known()
        row["pixel AUROC"] = 100 * metrics.pixel_auroc(scale[known], split.masks[known],
                                                       valid=None if split.valid is None else split.valid[known])
        rows[name] = row
    return pd.DataFrame(rows).T.round(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.per_scale", description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="a trained and evaluated run folder")
    parser.add_argument("--data", required=True, help="the data root or data-set file the run was trained on")
    args = parser.parse_args(argv)
    maps, split = per_scale_maps(args.run, args.data)
    print(markdown_table(table(maps, split), signed=()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
