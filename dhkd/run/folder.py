"""A run folder: the files ``dhkd train`` and ``dhkd evaluate`` write there, by name, in one place.

::

    RUN/.dhkd-run        written first when dhkd train starts the folder: the files below are the kit's
    RUN/config.yaml      the whole configuration (dhkd.config)
    RUN/run.json         what was trained on, where, how long; the data-set split
    RUN/history.csv      one row per epoch: stage, loss, learning rate, seconds
    RUN/checkpoint.pt    model, optimiser, position and RNG state (resumable)
    RUN/start.pt         the student's weights before the first optimiser step (after the
                         data-driven starts of epoch 0: fusion scale matching, memory k-means)
    RUN/metrics.json     dhkd evaluate's metrics, diagnostics and recorded threshold
    RUN/predictions.npz  the test images' anomaly maps and scores
    RUN/kept/epoch-NNNN.pt  the student after epoch NNNN, every train.keep_every epochs (dhkd curve)
    RUN/curve.csv        dhkd curve's metrics of every kept checkpoint (a diagnostic: scored on the test split)
    RUN/model.onnx       the scoring graph for onnxruntime (dhkd export; made by dhkd predict --engine onnxruntime)
    RUN/.replaced-<time>/  an earlier run that a new one replaced, moved aside (never deleted)

The kit never deletes a run: one of another configuration, or one ``make reproduce FORCE=1``
runs again, is moved aside under the run's lock. It never overwrites a file of these names
that it cannot show it wrote (no ``.dhkd-run`` marker and no dhkd checkpoint next to it).
"""

from __future__ import annotations

import datetime
import json
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from dhkd.config import Config, read_config, to_dict
from dhkd.errors import DhkdError
from dhkd.io import atomic_write_json
from dhkd.run.lock import LOCK_NAME, folder_lock, holds

MARKER_NAME = ".dhkd-run"
CONFIG_NAME = "config.yaml"
RUN_INFO_NAME = "run.json"
HISTORY_NAME = "history.csv"
CHECKPOINT_NAME = "checkpoint.pt"
START_NAME = "start.pt"
METRICS_NAME = "metrics.json"
PREDICTIONS_NAME = "predictions.npz"
ONNX_NAME = "model.onnx"
KEPT_DIR = "kept"
CURVE_NAME = "curve.csv"
RUN_FILES = (CHECKPOINT_NAME, START_NAME, HISTORY_NAME, RUN_INFO_NAME, CONFIG_NAME, METRICS_NAME, PREDICTIONS_NAME, ONNX_NAME)
REPLACED_PREFIX = ".replaced-"


def stopped_before_checkpoint(run_dir: str | Path) -> bool:
    """Whether ``dhkd train`` started this folder but was killed before it wrote a checkpoint."""
    run_dir = Path(run_dir)
    return (run_dir / MARKER_NAME).exists() and not (run_dir / CHECKPOINT_NAME).exists()


def no_checkpoint_error(run_dir: str | Path, action: str) -> DhkdError:
    """The error for a run folder whose training stopped before its first checkpoint."""
    return DhkdError(f"the training in {run_dir} stopped before its first checkpoint (it was killed during its "
                     f"first epoch): there is nothing to {action}",
                     f"start it again: the same dhkd train command with --out {run_dir}, without --resume")


def read_run_info(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / RUN_INFO_NAME
    if not path.exists():
        if stopped_before_checkpoint(run_dir):
            raise no_checkpoint_error(run_dir, "evaluate")
        raise DhkdError(f"{run_dir} is not a dhkd run folder (no {RUN_INFO_NAME})", "point --run at a folder made by dhkd train --out")
    return json.loads(path.read_text())


def foreign_files(run_dir: str | Path) -> list[str]:
    """Files of the kit's names in ``run_dir`` that the kit cannot show it wrote."""
    run_dir = Path(run_dir)
    if (run_dir / MARKER_NAME).exists() or (run_dir / CHECKPOINT_NAME).exists():
        return []  # a checkpoint is checked as a dhkd one when it is loaded
    return [name for name in RUN_FILES if (run_dir / name).exists()]


def start_run_dir(run_dir: str | Path) -> None:
    """Claim ``run_dir`` for a new training (under its lock): refuse files of the kit's names it did
    not write, then write the marker that says the folder's run files are the kit's."""
    run_dir = Path(run_dir)
    foreign = foreign_files(run_dir)
    if foreign:
        raise DhkdError(f"{run_dir} already holds {', '.join(foreign)}, not written by dhkd train (no {MARKER_NAME} "
                        f"marker, no checkpoint): they are left as they are",
                        "choose an empty --out folder, or move those files away first")
    atomic_write_json(run_dir / MARKER_NAME, {"made_by": "dhkd train", "files": list(RUN_FILES)})


def move_aside(run_dir: str | Path) -> Path | None:
    """Move the run in ``run_dir`` (everything but the lock and earlier replaced runs) into
    ``run_dir/.replaced-<UTC time>/``; returns that folder (None when there was nothing to move).
    Takes the run's lock unless this process holds it."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return None
    with nullcontext() if holds(run_dir) else folder_lock(run_dir):
        entries = [p for p in run_dir.iterdir() if p.name != LOCK_NAME and not p.name.startswith(REPLACED_PREFIX)]
        if not entries:
            return None
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
        target = run_dir / f"{REPLACED_PREFIX}{stamp}"
        n = 1
        while target.exists():
            n += 1
            target = run_dir / f"{REPLACED_PREFIX}{stamp}-{n}"
        target.mkdir()
        for entry in entries:
            os.replace(entry, target / entry.name)  # same file system: a rename, nothing copied or lost
        return target


def replaced_runs(run_dir: str | Path) -> list[Path]:
    """The earlier runs :func:`move_aside` kept in ``run_dir`` (``.replaced-<time>/``), oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    return sorted(p for p in run_dir.iterdir() if p.name.startswith(REPLACED_PREFIX) and p.is_dir() and not p.is_symlink())


def folder_bytes(folder: Path) -> int:
    """The bytes of the files under ``folder`` (links not followed)."""
    total = 0
    for top, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(top, name)).st_size
            except OSError:
                pass
    return total


def replaced_note(run_dir: str | Path) -> str:
    """One line on what the replaced runs in ``run_dir`` hold ("" when there are none): they are full
    copies, hidden from ls, and kept until the user removes them."""
    found = replaced_runs(run_dir)
    if not found:
        return ""
    total = sum(map(folder_bytes, found))
    return (f"{run_dir} keeps {len(found)} replaced run{'s' if len(found) > 1 else ''} in {REPLACED_PREFIX}*/ "
            f"({_bytes_text(total)}): dhkd runs clean {run_dir} lists them, with --yes removes them")


def is_kits_replaced_run(folder: Path) -> bool:
    """Whether ``folder`` is provably a run :func:`move_aside` moved there: its name and a run of the
    kit inside (the marker or a checkpoint), with no link anywhere below it."""
    if not folder.name.startswith(REPLACED_PREFIX) or folder.is_symlink() or not folder.is_dir():
        return False
    if not ((folder / MARKER_NAME).is_file() or (folder / CHECKPOINT_NAME).is_file()):
        return False
    return not any(os.path.islink(os.path.join(top, name)) for top, dirs, files in os.walk(folder)
                   for name in (*dirs, *files))


def clean_replaced(run_dir: str | Path, remove: bool) -> list[tuple[Path, int, str]]:
    """Each replaced run of ``run_dir`` with its bytes and what became of it: listed, removed (only
    with ``remove``), or left (not provably one the kit moved aside). Never called by the kit itself."""
    import shutil

    report = []
    for folder in replaced_runs(run_dir):
        size = folder_bytes(folder)
        if not is_kits_replaced_run(folder):
            report.append((folder, size, "left: not provably a run dhkd moved aside (no marker or checkpoint, or a link)"))
        elif remove:
            with folder_lock(Path(run_dir)):
                shutil.rmtree(folder)
            report.append((folder, size, "removed"))
        else:
            report.append((folder, size, "kept"))
    return report


def _bytes_text(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def prepare_run_dir(run_dir: str | Path, config: Config) -> bool:
    """Whether training into ``run_dir`` should resume.

    True when the folder holds a checkpoint of exactly this configuration: training then
    continues where it stopped (or finds it finished and returns at once). A run of another
    configuration there is moved aside (``.replaced-<time>/``) first, so a changed profile or
    epoch count never mixes with an old checkpoint; a run whose config.yaml cannot be read (another
    kit version, an edit) is refused and left as it is. Takes the run's lock unless this process
    holds it (``train(..., resume="auto")`` calls this under the lock).
    """
    run_dir = Path(run_dir)
    if not (run_dir / CHECKPOINT_NAME).exists():
        return False
    with nullcontext() if holds(run_dir) else folder_lock(run_dir):
        try:
            same = to_dict(read_config(run_dir / CONFIG_NAME)) == to_dict(config)
        except DhkdError as error:
            raise DhkdError(f"the run folder {run_dir} holds a checkpoint whose {CONFIG_NAME} cannot be read "
                            f"({error.what.splitlines()[0]}); the run is left as it is",
                            f"train into another folder, or move {run_dir} away yourself") from None
        if same:
            return True
        moved = move_aside(run_dir)
    print(f"moved an earlier run of another configuration aside, to {run_dir.name}/{moved.name if moved else '?'}; "
          f"{replaced_note(run_dir)}")
    return False


def kept_name(epoch: int) -> str:
    """The kept checkpoint of ``epoch``, relative to the run folder (``kept/epoch-0012.pt``)."""
    return f"{KEPT_DIR}/epoch-{epoch:04d}.pt"


def kept_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(epoch, path)`` of every checkpoint ``train.keep_every`` kept in a run folder, by epoch."""
    found = []
    for path in sorted((Path(run_dir) / KEPT_DIR).glob("epoch-*.pt")):
        stem = path.stem.removeprefix("epoch-")
        if stem.isdigit():
            found.append((int(stem), path))
    return sorted(found)
