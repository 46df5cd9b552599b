"""The learning curves of a folder of runs, as Markdown tables (lab tool).

    python -m benchmarks.curves benchmarks/results/mtd/curve

Each run folder under the given one holds the ``curve.csv`` that ``dhkd curve`` wrote (and the
run's ``config.yaml``, ``history.csv`` and ``run.json``). Prints, per metric, the kit's map (all
three scales) by epoch with one column per run; then the map of the two coarser scales alone
where a run was scored with it; then every run's last epoch per defect kind; then each run's
training seconds. Every figure is read from those files; nothing is typed here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from dhkd.kit.curves import LABELS, curve_table, last_epoch, load_curves, scales_table
from dhkd.kit.tables import markdown_table
from dhkd.run.folder import RUN_INFO_NAME


def report(folder: Path) -> str:
    curves = load_curves(folder)
    if not curves:
        raise SystemExit(f"no run under {folder} holds a curve.csv (dhkd curve --run RUN writes one)")
    parts = []
    for metric, label in LABELS.items():
        parts += [f"**{label}, the kit's map (scales 1+2+3), by epoch**", "",
                  markdown_table(curve_table(curves, metric=metric).round(1), signed=()), ""]
    coarse = {name: curve for name, curve in curves.items() if "2+3" in set(curve["scales"])}
    if coarse:
        parts += ["**image AUROC, the two coarser scales alone (2+3), by epoch**", "",
                  markdown_table(curve_table(coarse, "2+3").round(1), signed=()), ""]
    last = pd.DataFrame({name: last_epoch(curve) for name, curve in curves.items()}).T
    last = last.rename(columns={**LABELS, **{c: c.split("/", 1)[1] for c in last.columns if "/" in c}})
    last["epoch"] = last["epoch"].astype(int)
    parts += ["**last epoch, the kit's map, per defect kind (image AUROC)**", "",
              markdown_table(last.round(1).rename_axis("run"), signed=()), ""]
    for name, curve in curves.items():
        if curve["scales"].nunique() > 1:
            parts += [f"**{name}: every set of scales at its last epoch**", "",
                      markdown_table(scales_table(curve).round(1), signed=()), ""]
    seconds = {name: json.loads((folder / name / RUN_INFO_NAME).read_text()).get("train_seconds")
               for name in curves if (folder / name / RUN_INFO_NAME).exists()}
    if seconds:
        parts += ["training seconds: " + ", ".join(f"{name} {value:.0f} s" for name, value in seconds.items() if value)]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.curves", description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="a folder of run folders, each with its curve.csv")
    print(report(parser.parse_args(argv).folder))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
