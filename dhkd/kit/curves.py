"""Learning curves of committed or fresh runs, as tables: what ``dhkd curve`` wrote, read back.

A folder of runs (each with its ``curve.csv``, :mod:`dhkd.run.curve`) becomes one frame per run;
:func:`curve_table` lines them up by epoch, in percent, for one set of scales. The curves are scored
on the test split: they show how the metrics move with the budget, never which epoch to report.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dhkd.run.curve import METRICS, read_curve
from dhkd.run.folder import CURVE_NAME

LABELS = {"image_auroc": "image AUROC", "pixel_auroc": "pixel AUROC", "aupro": "AUPRO"}
ALL_SCALES = "1+2+3"


def load_curves(folder: str | Path) -> dict[str, pd.DataFrame]:
    """``{run name: its curve rows}`` for every run folder directly under ``folder`` that holds a curve."""
    return {path.parent.name: pd.DataFrame(read_curve(path.parent))
            for path in sorted(Path(folder).glob(f"*/{CURVE_NAME}"))}


def at_scales(curve: pd.DataFrame, scales: str = ALL_SCALES) -> pd.DataFrame:
    """The rows of one set of scales (``"1+2+3"``: the kit's map; ``"2+3"``: the finest left out), by epoch."""
    rows = curve[curve["scales"] == scales].sort_values("epoch")
    if rows.empty:
        raise ValueError(f"no rows with scales {scales!r}; the curve has {sorted(set(curve['scales']))}")
    return rows.reset_index(drop=True)


def curve_table(curves: dict[str, pd.DataFrame], scales: str = ALL_SCALES, metric: str = "image_auroc") -> pd.DataFrame:
    """Epochs down, runs across: ``metric`` in percent (blank where a run has no such epoch)."""
    columns = {name: at_scales(curve, scales).set_index("epoch")[metric] * 100 for name, curve in curves.items()}
    frame = pd.DataFrame(columns)
    frame.index.name = "epoch"
    return frame


def last_epoch(curve: pd.DataFrame, scales: str = ALL_SCALES) -> pd.Series:
    """The final epoch's row of one set of scales, in percent (``epoch`` kept as is)."""
    row = at_scales(curve, scales).iloc[-1]
    return pd.Series({"epoch": int(row["epoch"]), **{key: 100 * row[key] for key in row.index
                                                      if key in METRICS or key.startswith("image_auroc/")}})


def scales_table(curve: pd.DataFrame, epoch: int | None = None) -> pd.DataFrame:
    """One epoch (the last by default), every set of scales the curve was scored with: rows are the
    sets, columns the metrics and each kind's image AUROC, in percent."""
    epoch = int(curve["epoch"].max()) if epoch is None else epoch
    rows = curve[curve["epoch"] == epoch].set_index("scales")
    keep = [c for c in rows.columns if c in METRICS or c.startswith("image_auroc/")]
    frame = rows[keep] * 100
    return frame.rename(columns={**LABELS, **{c: c.split("/", 1)[1] for c in keep if "/" in c}})
