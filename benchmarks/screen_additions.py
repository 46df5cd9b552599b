"""Screen interpretations of DHKD's additions: train one variant, score it, say whether each addition acts.

Used for ``benchmarks/additions.md``::

    python -m benchmarks.screen_additions --data-root /tmp/mtd_mvtec --category mtd --name rd \\
        --set train.epochs=20 --set data.image_size=128 --set model.fusion.enabled=false ...

Each variant trains into ``OUT/<name>`` with the kit's :class:`~dhkd.run.train.Trainer`, then scores
the test split (image / pixel AUROC, AUPRO, each in %, and pixel AUROC per defect kind) and
measures, on the clean training images the model was fitted to, what each enabled addition does:

- fusion: the mixing weights ``w_st`` and the share ``|sum_t w_st M_ts(F_t)| / |G_s|`` borrowed;
- attention: per module, the 1st-99th percentile span of ``a_h * a_w`` and its mean spread
  (std over positions) - a constant map, whatever its value, does nothing a scale could not;
- memory: the read-out's share ``|read-out| / |decoder input|``, the cosine between the read-out
  and ``z``, how many items are the best match somewhere, and the mean largest addressing weight.

One JSON line per variant is appended to ``OUT/screen.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from dhkd.config import load_config
from dhkd.data import load_split, normalize
from dhkd.run.evaluate import compute_metrics, score_split
from dhkd.method import CoordinateAttention
from dhkd.io import plain_name
from dhkd.run.folder import move_aside
from dhkd.run.train import Trainer


@torch.no_grad()
def diagnostics(trainer: Trainer, count: int = 64) -> dict:
    """What each enabled addition does on ``count`` clean training images (eval mode)."""
    student = trainer.student.eval()
    images = normalize(trainer.images[:count])
    features = trainer.model.teacher(images)
    result: dict = {}
    if student.fusion is not None:
        fusion = student.fusion
        shares = []
        for s in range(fusion.scales):
            borrowed = fusion.borrowed(features, s)
            fused = fusion.kept(features, s) + borrowed
            shares.append(float(borrowed.flatten(1).norm(dim=1).div(fused.flatten(1).norm(dim=1)).mean()))
        result["fusion"] = {"weights": [[round(float(w), 4) for w in row] for row in fusion.mixing_weights()],
                            "borrowed_share": [round(x, 4) for x in shares]}
    z = student.bottleneck_embedding(features)
    if student.memory is not None:
        memory = student.memory
        readout = memory.readout(z)
        decoder_input = memory(z)
        weights = memory.address(z).flatten(0, 2)
        result["memory"] = {
            "readout_share": round(float(readout.flatten(1).norm(dim=1).div(decoder_input.flatten(1).norm(dim=1)).mean()), 4),
            "readout_cosine_to_z": round(float(torch.cosine_similarity(readout.flatten(1), z.flatten(1)).mean()), 4),
            "items_used": int(weights.argmax(dim=1).unique().numel()), "items": len(memory.items),
            "mean_max_weight": round(float(weights.max(dim=1).values.mean()), 4)}
    spans = []
    captured: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: captured.append(torch.mul(*mod.attention(inp[0]))))
             for m in student.modules() if isinstance(m, CoordinateAttention)]
    student.decoder(student.embed(features))
    for hook in hooks:
        hook.remove()
    for maps in captured:
        low, high = torch.quantile(maps.flatten()[:: max(1, maps.numel() // 200_000)], torch.tensor([0.01, 0.99]))
        spans.append({"p01": round(float(low), 4), "p99": round(float(high), 4),
                      "spread": round(float(maps.flatten(2).std(dim=2).mean()), 4)})
    if spans:
        result["attention"] = spans
    return result


def screen(args: argparse.Namespace) -> dict:
    config = load_config(args.profile, args.overrides)
    run_dir = Path(args.out) / plain_name(args.name, "--name", "give a plain name, e.g. --name cosine-30")
    move_aside(run_dir)  # an earlier run of this name goes to run_dir/.replaced-<time>/, never deleted
    started = time.perf_counter()
    trainer = Trainer(config, args.data_root, args.category, run_dir, device=args.device, progress=False)
    trainer.fit()
    train_s = time.perf_counter() - started
    test = load_split(args.data_root, args.category, "test", config.data.fit(), progress=False)
    scores = compute_metrics(score_split(trainer.model, test, config, trainer.device, progress=False), config)
    record = {"name": args.name, "profile": args.profile, "category": args.category, "sets": args.overrides,
              **{key: round(100 * scores[key], 2) for key in ("image_auroc", "pixel_auroc", "aupro")},
              "per_kind_pixel_auroc": {kind: round(100 * s["pixel_auroc"], 1) for kind, s in scores["per_defect"].items()},
              "per_kind_image_auroc": {kind: round(100 * s["image_auroc"], 1) for kind, s in scores["per_defect"].items()},
              "diagnostics": diagnostics(trainer), "train_s": round(train_s, 1),
              "wall_s": round(time.perf_counter() - started, 1)}
    with open(Path(args.out) / "screen.jsonl", "a") as log:
        log.write(json.dumps(record) + "\n")
    print(json.dumps(record))
    return record


def _acts(diagnostics: dict) -> str:
    """One short cell per addition: fusion borrowed shares, attention spread, memory share / items used."""
    cells = []
    if "fusion" in diagnostics:
        fusion = diagnostics["fusion"]
        spread = max(abs(w - 1 / len([v for v in row if v])) for row in fusion["weights"] for w in row if w)
        cells.append("fusion borrowed " + "/".join(f"{100 * x:.0f}" for x in fusion["borrowed_share"])
                     + f" %, weights off uniform by {spread:.3f}")
    if "attention" in diagnostics:
        spans = diagnostics["attention"]
        cells.append(f"attention {min(a['p01'] for a in spans):.3f}-{max(a['p99'] for a in spans):.3f}, "
                     f"spread {max(a['spread'] for a in spans):.3f}")
    if "memory" in diagnostics:
        memory = diagnostics["memory"]
        cells.append(f"memory share {100 * memory['readout_share']:.1f} %, {memory['items_used']}/{memory['items']} "
                     f"items, max weight {memory['mean_max_weight']:.2f}")
    return "; ".join(cells) or "-"


def table(out: Path) -> str:
    """Every screened variant as a markdown table (scores in %, per-kind pixel AUROC, diagnostics)."""
    header = ["variant", "--set (beyond the common ones)", "image AUROC", "pixel AUROC", "AUPRO",
              "pixel AUROC blowhole/break/crack/fray/uneven", "diagnostics", "wall s"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for line in (out / "screen.jsonl").read_text().splitlines():
        r = json.loads(line)
        sets = " ".join(x for x in r["sets"] if not x.startswith(("train.epochs", "data.image_size"))
                        and not x.endswith("enabled=false"))
        kinds = "/".join(f"{v:.1f}" for _, v in sorted(r["per_kind_pixel_auroc"].items()))
        lines.append(f"| {r['name']} | {sets or '-'} | {r['image_auroc']:.1f} | {r['pixel_auroc']:.1f} | {r['aupro']:.1f} "
                     f"| {kinds} | {_acts(r['diagnostics'])} | {r['wall_s']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root")
    parser.add_argument("--category")
    parser.add_argument("--profile", default="offline")
    parser.add_argument("--name")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="runs/screen")
    parser.add_argument("--table", action="store_true", help="print the table of every variant in OUT and stop")
    args = parser.parse_args(argv)
    if args.table:
        print(table(Path(args.out)))
        return 0
    if not args.name:
        parser.error("--name is required to screen a variant")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    screen(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
