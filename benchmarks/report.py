"""Bench results as tables: the plain-text one ``dhkd bench`` prints, and the Markdown section of
``benchmarks/README.md`` written from bench JSON files.

    python -m benchmarks.report results/bench_rd.json results/bench_rd_2.json --readme benchmarks/README.md

(``make bench-readme`` runs it on the files listed in the Makefile.) The section lies between
:data:`MARKERS`; one summary row per run (so that the spread between runs of one command is in
plain sight), the ratio's median and range per setting, then the full table of each setting's
latest run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from dhkd.errors import DhkdError
from dhkd.io import replace_between_markers
from dhkd.kit.tables import markdown_table

MARKERS = ("<!-- bench:start -->", "<!-- bench:end -->")
#: What the kit aims for with ``rd`` on a CPU: an epoch in at most this share of anomalib's time.
EPOCH_RATIO_TARGET = 0.7

#: (key, label, anomalib's key, kind): "time" (seconds), "rate" (per second) or "amount" (memory, work).
ROWS = [
    ("teacher_cache_s", "teacher cache, once (s)", None, "time"),
    ("train_warmup_s", "train warm-up, incl. compile (s)", None, "time"),
    ("train_epoch_s", "train epoch (s)", "anomalib_train_epoch_s", "time"),
    ("train_epoch_stage2_s", "train epoch, stage 2 (s)", None, "time"),
    ("train_img_per_s", "train images/s", None, "rate"),
    ("train_gmac_per_image", "train step GMAC/image", "anomalib_train_gmac_per_image", "amount"),
    ("train_page_faults_per_step", "train step page faults", "anomalib_train_page_faults_per_step", "amount"),
    ("train_kernel_cpu_s", "train epoch kernel CPU (s)", "anomalib_train_kernel_cpu_s", "time"),
    ("infer_img_per_s_b1", "inference images/s, batch 1", None, "rate"),
    ("infer_img_per_s_b32", "inference images/s, batch 32", "anomalib_infer_img_per_s_b32", "rate"),
    ("infer_gmac_per_image", "inference GMAC/image", "anomalib_infer_gmac_per_image", "amount"),
    ("peak_mem_mb", "peak memory (MB)", "anomalib_peak_mem_mb", "amount"),
    ("aupro_s", "AUPRO, test set (s)", None, "time"),
    ("pixel_auroc_s", "pixel AUROC, test set (s)", None, "time"),
    ("pro_rd4ad_s", "RD4AD PRO, test set (s)", None, "time"),
    ("image_auroc_s", "image AUROC (s)", None, "time"),
]


def _fmt(value: float) -> str:
    """Three significant figures or so: enough to compare runs, few enough to read."""
    if value >= 100:
        return f"{value:.0f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def figures(result: dict[str, Any]) -> pd.DataFrame:
    """One row per figure of ``result`` (strings, as printed); with anomalib, its column and the
    kit's ratio of times (a rate's ratio is inverted so that every ratio reads as kit / anomalib time)."""
    compared = "anomalib_train_epoch_s" in result
    rows = []
    for key, label, other, kind in ROWS:
        if key not in result:
            continue
        row = {"figure": label, "dhkd": _fmt(result[key])}
        if compared:
            row["anomalib RD"], row["dhkd / anomalib"] = "", ""
            if other and other in result:
                ratio = result[key] / result[other]
                if kind == "rate":
                    ratio = 1 / ratio
                row["anomalib RD"] = _fmt(result[other])
                row["dhkd / anomalib"] = f"{ratio:.3f}x" + (" time" if kind != "amount" else "")
        rows.append(row)
    return pd.DataFrame(rows).set_index("figure")


def describe(result: dict[str, Any]) -> str:
    """What was measured where: profile, model, data, machine and its load."""
    width = result.get("bottleneck_width", 1.0)
    return (f"{result['profile']} profile, {result['teacher']} ({result['teacher_weights']}), "
            + (f"bottleneck width {width} (RD4AD: 1.0), " if width != 1.0 else "")
            + f"{result['image_size']}x{result['image_size']}, batch {result['batch_size']}, {result['data']} "
            f"({result['n_train']} train / {result['n_test']} test), {result['device']} ({result['device_name']}), "
            f"{result['threads']} threads, compile {result['compile']}, allocator {result.get('allocator', 'default')}, "
            f"1-min load {result['load_1min_start']} at the start, {result['load_1min_end']} at the end"
            + (f", {result['load_1min_mean']:.2f} mean, {result['load_1min_max']:.2f} max" if "load_1min_mean" in result else "")
            + (f", {result['cpu_steal_pct']:.0f} % of the CPU time stolen by the hypervisor"
               if result.get("cpu_steal_pct") is not None else ""))


def format_table(result: dict[str, Any]) -> str:
    """What ``dhkd bench`` prints: the description line, then the figures."""
    return describe(result) + "\n\n" + markdown_table(figures(result))


def runs_table(results: list[dict[str, Any]]) -> str:
    """One Markdown row per bench run: the training-epoch and inference ratios side by side."""
    rows = []
    for r in results:
        compared = "anomalib_train_epoch_s" in r
        rows.append({
            "run (finished)": r.get("finished", "?"),
            "bottleneck width": f"{r.get('bottleneck_width', 1.0):g}",
            "allocator": f"`{r.get('allocator', 'default')}`",
            "kit epoch (s)": _fmt(r["train_epoch_s"]),
            "anomalib epoch (s)": _fmt(r["anomalib_train_epoch_s"]) if compared else "",
            "kit / anomalib, epoch": f"{r['train_epoch_ratio']:.3f}" if compared else "",
            "kit / anomalib, inference b32 (time)": f"{r['infer_time_ratio_b32']:.3f}" if compared else "",
            "1-min load, mean": f"{r['load_1min_mean']:.2f}" if "load_1min_mean" in r else "?",
            "CPU steal": f"{r['cpu_steal_pct']:.0f} %" if r.get("cpu_steal_pct") is not None else "?",
        })
    return markdown_table(pd.DataFrame(rows).set_index("run (finished)"))


def _setting(result: dict[str, Any]) -> tuple[str, str, float, str, str]:
    """What makes runs comparable: profile, teacher, bottleneck width, device, allocator."""
    return (result["profile"], result["teacher"], result.get("bottleneck_width", 1.0), result["device"],
            result.get("allocator", "default"))


def _setting_order(setting: tuple[str, str, float, str, str]) -> tuple[Any, ...]:
    """RD4AD's width first, the default allocator before tuned ones, so that the usual case leads."""
    width, allocator = setting[2], setting[4]
    return -width, allocator != "default", setting


def ratio_summary(results: list[dict[str, Any]]) -> str:
    """One bullet per setting with compared runs: the kit / anomalib epoch ratio's median, lowest
    and highest, and in how many runs it met :data:`EPOCH_RATIO_TARGET`. On a shared machine the
    spread between runs of one command is the figure's honest error bar."""
    by_setting: dict[tuple[str, str, float, str, str], list[float]] = {}
    for r in results:
        if "train_epoch_ratio" in r:
            by_setting.setdefault(_setting(r), []).append(r["train_epoch_ratio"])
    lines = []
    for setting in sorted(by_setting, key=_setting_order):
        (profile, teacher, width, device, allocator), ratios = setting, by_setting[setting]
        met = sum(ratio <= EPOCH_RATIO_TARGET for ratio in ratios)
        lines.append(f"- `{profile}` ({teacher}, {device}, allocator `{allocator}`), bottleneck width {width:g}: "
                     "kit / anomalib epoch time "
                     f"over {len(ratios)} run{'s' if len(ratios) > 1 else ''}: median {statistics.median(ratios):.3f}, "
                     f"lowest {min(ratios):.3f}, highest {max(ratios):.3f}; at most {EPOCH_RATIO_TARGET:g} "
                     f"(the target) in {met} of {len(ratios)}.")
    return "\n".join(lines)


def readme_section(paths: list[Path]) -> str:
    """The section between :data:`MARKERS`: every run in one summary table (by setting, then time)
    with the ratios' spread per setting, then the full table of the latest run of each setting."""
    results = [json.loads(Path(path).read_text()) for path in paths]
    results.sort(key=lambda r: (_setting_order(_setting(r)), r.get("finished", "")))
    summary = ratio_summary(results)
    parts = [runs_table(results) + "\n" + (f"\n{summary}\n" if summary else "")] if len(results) > 1 else []
    latest = {_setting(result): result for result in results}  # the last of each setting, in setting order
    for result in latest.values():
        parts.append(f"`{result.get('command', 'dhkd bench')}` (finished {result.get('finished', '?')}; "
                     f"torch {result['torch']}"
                     + (f", anomalib {result['anomalib_version']}" if "anomalib_version" in result else "")
                     + f"): {describe(result)}.\n\n{markdown_table(figures(result))}\n")
    parts.append("Written from the JSON files by `make bench-readme` (`python -m benchmarks.report`); "
                 "do not edit it by hand.\n")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Rewrite the bench section of a README from bench JSON files."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=main.__doc__)
    parser.add_argument("json", nargs="+", type=Path)
    parser.add_argument("--readme", type=Path, default=Path(__file__).parent / "README.md")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.json if not p.exists()]
    try:
        if missing:
            raise DhkdError(f"no bench JSON at {', '.join(missing)}", "make one with make bench (BENCH_JSON=...)")
        replace_between_markers(args.readme, readme_section(args.json), MARKERS)
    except DhkdError as error:
        print(f"benchmarks.report: {error}", file=sys.stderr)
        return 2
    print(f"wrote the bench section of {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
