"""Per defect kind, mean ± std over seeds, of chosen ablation variants (lab tool).

    python -m benchmarks.per_kind results/mtd/offline_short --category mtd --variants rd masking all

Reads the per-seed JSON files ``make ablation`` writes (``ablation/<category>/seed<N>/<variant>.json``,
key ``per_defect``) and prints one Markdown table: image AUROC, pixel AUROC and AUPRO per kind and
variant, in percent. Used for the kind-by-kind figures in benchmarks/ablation.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from dhkd.kit.tables import load_ablation, markdown_table

METRICS = {"image_auroc": "image", "pixel_auroc": "pixel", "aupro": "AUPRO"}


def per_kind(results: list[dict], variants: list[str]) -> pd.DataFrame:
    """One row per (kind, variant): ``mean ± std`` over seeds of each metric, and how many seeds ran."""
    rows = [{"kind": kind, "variant": result["key"], "seed": result["seed"],
             **{label: 100 * figures[name] for name, label in METRICS.items()}}
            for result in results if result.get("key") in variants
            for kind, figures in (result.get("per_defect") or {}).items()]
    frame = pd.DataFrame(rows)
    grouped = frame.groupby(["kind", "variant"], sort=False)
    table = pd.DataFrame({label: [f"{m:.1f} ± {s:.1f}" if pd.notna(s) else f"{m:.1f}"
                                  for m, s in zip(grouped[label].mean(), grouped[label].std())]
                          for label in METRICS.values()}, index=grouped.size().index)
    table["seeds"] = grouped.size().to_numpy()
    order = {key: i for i, key in enumerate(variants)}
    return table.sort_index(level=1, key=lambda keys: keys.map(order)).sort_index(level=0, sort_remaining=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path, help="a make ablation results folder: results/<data>/<profile>")
    parser.add_argument("--category", required=True)
    parser.add_argument("--variants", nargs="+", default=["rd", "all"])
    args = parser.parse_args()
    found = load_ablation(args.results)
    if args.category not in found:
        raise SystemExit(f"no ablation of {args.category!r} under {args.results / 'ablation'}")
    table = per_kind(found[args.category], args.variants)
    print(markdown_table(table.reset_index().set_index("kind"), signed=()))


if __name__ == "__main__":
    main()
