"""Tune a profile: train one variant and score it on the test split at chosen epochs.

How the ``offline`` profile's settings were chosen (its YAML comments quote these runs)::

    python scripts/tune_profile.py --data-root ../shared/data/mvtec_ad --category bottle \\
        --profile offline --name cosine-30 --eval-at 10,20,30 --set train.epochs=30
    python scripts/tune_profile.py --out runs/tuning --table      # every variant so far, one table

Each variant trains into ``OUT/<name>`` with the kit's own :class:`~dhkd.train.Trainer`; at
every epoch of ``--eval-at`` the model in training scores the test split (image AUROC, pixel
AUROC, AUPRO, RD4AD's PRO, in %, from :func:`dhkd.evaluate.compute_metrics`), which shows
whether more epochs would still pay. One JSON line per variant is appended to
``OUT/tuning.jsonl``. Scoring on the test split is what tuning a
profile for a known data set means; the profile's figures are then not a held-out estimate.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import pandas as pd

from dhkd.config import load_config
from dhkd.data import load_split
from dhkd.evaluate import compute_metrics, predict
from dhkd.train import Trainer


class ScoringTrainer(Trainer):
    """A trainer that scores the test split after the epochs in ``eval_at``."""

    def __init__(self, *args, test_split, eval_at: set[int], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.test_split, self.eval_at, self.scores = test_split, eval_at, []

    def _end_epoch(self, position, stage: int, batches: int) -> None:
        super()._end_epoch(position, stage, batches)
        if position.epoch in self.eval_at:
            scores = compute_metrics(predict(self.model, self.test_split, self.config, self.device, progress=False),
                                     self.config)
            row = {"epoch": position.epoch, "stage": stage,
                   **{key: round(100 * scores[key], 2) for key in ("image_auroc", "pixel_auroc", "aupro", "pro_rd4ad")},
                   "train_s": round(sum(h["seconds"] for h in position.history), 1)}
            self.scores.append(row)
            print(json.dumps(row), flush=True)


def tune(args: argparse.Namespace) -> dict:
    config = load_config(args.profile, args.overrides)
    eval_at = {int(e) for e in args.eval_at.split(",") if e} or {config.train.epochs}
    test = load_split(args.data_root, args.category, "test", config.data.image_size, progress=False)
    run_dir = Path(args.out) / args.name
    shutil.rmtree(run_dir, ignore_errors=True)
    started = time.perf_counter()
    trainer = ScoringTrainer(config, args.data_root, args.category, run_dir, device=args.device, progress=False,
                             test_split=test, eval_at=eval_at)
    trainer.fit()
    record = {"name": args.name, "profile": args.profile, "category": args.category, "sets": args.overrides,
              "wall_s": round(time.perf_counter() - started, 1), "scores": trainer.scores}
    with open(Path(args.out) / "tuning.jsonl", "a") as log:
        log.write(json.dumps(record) + "\n")
    return record


def table(out: Path) -> str:
    """Every variant's last scored epoch (and its best pixel AUROC) as a markdown table."""
    rows = []
    for line in (out / "tuning.jsonl").read_text().splitlines():
        record = json.loads(line)
        last = record["scores"][-1]
        rows.append({"variant": record["name"], "--set": " ".join(record["sets"]), "epochs": last["epoch"],
                     "image AUROC": last["image_auroc"], "pixel AUROC": last["pixel_auroc"], "AUPRO": last["aupro"],
                     "train s": last["train_s"]})
    frame = pd.DataFrame(rows)
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + " --- |" * len(frame.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default="../shared/data/mvtec_ad")
    parser.add_argument("--category", default="bottle")
    parser.add_argument("--profile", default="offline")
    parser.add_argument("--name", default="variant")
    parser.add_argument("--eval-at", default="", help="epochs to score after, e.g. 10,20,30 (default: the last)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="runs/tuning")
    parser.add_argument("--table", action="store_true", help="print the table of every variant in OUT and stop")
    args = parser.parse_args(argv)
    if args.table:
        print(table(Path(args.out)))
        return 0
    Path(args.out).mkdir(parents=True, exist_ok=True)
    tune(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
