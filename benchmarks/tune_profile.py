"""Tune a profile: train one variant and score it on the test split at chosen epochs.

    python -m benchmarks.tune_profile --data-root data/mvtec_ad --category bottle \\
        --profile offline --name cosine-30 --eval-at 10,20,30 --set train.epochs=30
    python -m benchmarks.tune_profile --out runs/tuning --table     # every variant so far, one table

Each variant trains into ``OUT/<name>`` with the kit's own :class:`~dhkd.run.train.Trainer`; after
every epoch of ``--eval-at`` the model in training scores the test split (image AUROC, pixel
AUROC, AUPRO, RD4AD's PRO, in %, from :func:`dhkd.run.evaluate.compute_metrics`), which shows
whether more epochs would still pay. One JSON line per variant is appended to
``OUT/tuning.jsonl``. Scoring on the test split is what tuning a profile for a known data set
means; the profile's figures on that category are then not a held-out estimate.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from dhkd.config import load_config
from dhkd.data import load_split
from dhkd.run.evaluate import compute_metrics, score_split
from dhkd.kit.tables import markdown_table
from dhkd.io import plain_name
from dhkd.run.folder import move_aside
from dhkd.run.train import Trainer

SCORES = ("image_auroc", "pixel_auroc", "aupro", "pro_rd4ad")


def tune(args: argparse.Namespace) -> dict[str, Any]:
    """Train the variant, scoring it after the epochs of ``--eval-at``; its JSON record."""
    config = load_config(args.profile, args.overrides)
    eval_at = {int(e) for e in args.eval_at.split(",") if e} or {config.train.epochs}
    test = load_split(args.data_root, args.category, "test", config.data.fit(), progress=False)
    run_dir = Path(args.out) / plain_name(args.name, "--name", "give a plain name, e.g. --name cosine-30")
    move_aside(run_dir)  # an earlier run of this name goes to run_dir/.replaced-<time>/, never deleted
    started = time.perf_counter()
    trainer = Trainer(config, args.data_root, args.category, run_dir, device=args.device, progress=False)
    scores: list[dict[str, Any]] = []

    def score(history: list[dict[str, Any]]) -> None:
        epoch = history[-1]["epoch"]
        if epoch not in eval_at:
            return
        metrics = compute_metrics(score_split(trainer.model, test, config, trainer.device, progress=False), config)
        row = {"epoch": epoch, "stage": history[-1]["stage"], **{key: round(100 * metrics[key], 2) for key in SCORES},
               "train_s": round(sum(h["seconds"] for h in history), 1)}
        scores.append(row)
        print(json.dumps(row), flush=True)

    trainer.fit(after_epoch=score)
    record = {"name": args.name, "profile": args.profile, "category": args.category, "sets": args.overrides,
              "wall_s": round(time.perf_counter() - started, 1), "scores": scores}
    with open(Path(args.out) / "tuning.jsonl", "a") as log:
        log.write(json.dumps(record) + "\n")
    return record


def table(out: Path) -> str:
    """Every variant's last scored epoch as a Markdown table (scores in %, two decimals)."""
    rows = []
    for line in (out / "tuning.jsonl").read_text().splitlines():
        record = json.loads(line)
        last = record["scores"][-1]
        rows.append({"variant": record["name"], "--set": " ".join(record["sets"]), "epochs": str(last["epoch"]),
                     **{name: f"{last[key]:.2f}" for name, key in
                        [("image AUROC", "image_auroc"), ("pixel AUROC", "pixel_auroc"), ("AUPRO", "aupro")]},
                     "train s": f"{last['train_s']:.1f}"})
    return markdown_table(pd.DataFrame(rows).set_index("variant"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tune_profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default="data/mvtec_ad")
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
