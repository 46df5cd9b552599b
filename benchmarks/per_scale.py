"""Which of the student's three scales finds which defect kind (lab tool).

    python -m benchmarks.per_scale RUN --data data/mtd.yaml

Scores a trained run's final checkpoint once per scale and per sum of scales, with the kit's own
map and metrics (``dhkd curve --last --scales ...``, :mod:`dhkd.run.curve`): each distilled scale
alone, the kit's map (all three) and the two coarser ones (the finest left out, ``eval.scales=[2,
3]``), and prints image AUROC overall and per defect kind, pixel AUROC and AUPRO, in percent.
Where the student trails a detector on the same features, this says at which scale the normal
and the defective images are not told apart. Writes nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from dhkd.kit.tables import markdown_table
from dhkd.method.teacher import stage_strides
from dhkd.config import read_config
from dhkd.run.curve import score_curve
from dhkd.run.folder import CONFIG_NAME

#: The sets of scales scored: each alone, their sum (the kit's map), the two coarser ones.
SCALE_SETS = ((1,), (2,), (3,), (1, 2, 3), (2, 3))


def names(run: Path) -> dict[str, str]:
    """``"2+3"`` -> ``"stride 16 + 32"`` etc., from the run's teacher stages."""
    strides = stage_strides(tuple(read_config(run / CONFIG_NAME).model.teacher.stages))
    shown = {}
    for scales in SCALE_SETS:
        key = "+".join(map(str, scales))
        text = "stride " + " + ".join(str(strides[s - 1]) for s in scales)
        shown[key] = text + (" (the kit's map)" if scales == (1, 2, 3) else " (the finest left out)" if scales == (2, 3) else "")
    return shown


def table(run: Path, data: str | None = None) -> pd.DataFrame:
    """Rows: each scale, their sum and the two coarser ones' sum; columns: image AUROC over all kinds,
    per kind, pixel AUROC and AUPRO, in percent (one decimal)."""
    rows = score_curve(run, data, "cpu", list(SCALE_SETS), progress=False, last_only=True, write=False)
    shown = names(run)
    frame = pd.DataFrame({shown[row["scales"]]: {
        "image AUROC": 100 * row["image_auroc"],
        **{key.split("/", 1)[1]: 100 * value for key, value in row.items() if key.startswith("image_auroc/")},
        "pixel AUROC": 100 * row["pixel_auroc"], "AUPRO": 100 * row["aupro"]} for row in rows}).T
    return frame.round(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.per_scale", description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="a trained run folder")
    parser.add_argument("--data", help="the data root or data-set file the run was trained on (default: as recorded)")
    args = parser.parse_args(argv)
    print(markdown_table(table(args.run, args.data), signed=()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
