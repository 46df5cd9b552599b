"""A run folder: the files ``dhkd train`` and ``dhkd evaluate`` write there, by name, in one place.

::

    RUN/config.yaml      the whole configuration (dhkd.config)
    RUN/run.json         what was trained on, where, how long; the data-set split
    RUN/history.csv      one row per epoch: stage, loss, learning rate, seconds
    RUN/checkpoint.pt    model, optimiser, position and RNG state (resumable)
    RUN/start.pt         the student's weights before the first optimiser step (after the
                         data-driven starts of epoch 0: fusion scale matching, memory k-means)
    RUN/metrics.json     dhkd evaluate's metrics, diagnostics and recorded threshold
    RUN/predictions.npz  the test images' anomaly maps and scores
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dhkd.config import Config, read_config, to_dict
from dhkd.errors import DhkdError

CONFIG_NAME = "config.yaml"
RUN_INFO_NAME = "run.json"
HISTORY_NAME = "history.csv"
CHECKPOINT_NAME = "checkpoint.pt"
START_NAME = "start.pt"
METRICS_NAME = "metrics.json"
PREDICTIONS_NAME = "predictions.npz"
RUN_FILES = (CHECKPOINT_NAME, START_NAME, HISTORY_NAME, RUN_INFO_NAME, CONFIG_NAME, METRICS_NAME, PREDICTIONS_NAME)


def read_run_info(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / RUN_INFO_NAME
    if not path.exists():
        raise DhkdError(f"{run_dir} is not a dhkd run folder (no {RUN_INFO_NAME})", "point --run at a folder made by dhkd train --out")
    return json.loads(path.read_text())


def prepare_run_dir(run_dir: str | Path, config: Config) -> bool:
    """Whether training into ``run_dir`` should resume.

    True when the folder holds a checkpoint of exactly this configuration: training then
    continues where it stopped (or finds it finished and returns at once). A run of another
    configuration there is removed first, so a changed profile or epoch count never mixes
    with an old checkpoint.
    """
    run_dir = Path(run_dir)
    checkpoint = run_dir / CHECKPOINT_NAME
    if not checkpoint.exists():
        return False
    try:
        same = to_dict(read_config(run_dir / CONFIG_NAME)) == to_dict(config)
    except (OSError, DhkdError, TypeError, ValueError):
        same = False
    if same:
        return True
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    print(f"removed an earlier run of another configuration from the run folder {run_dir.name}")
    return False
