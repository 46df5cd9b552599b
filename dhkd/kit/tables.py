"""Results tables: the kit's numbers beside the published ones, rebuilt from JSON every time.

Sources, and nothing else:

- ``dhkd/kit/paper/image_auroc.csv`` and ``pixel_auroc.csv``: the two results tables of the DHKD
  authors' README (per category, with their average), parsed by :func:`parse_authors_readme`
  and committed; ``dhkd tables paper --source README.md`` writes them again from a
  copy of that README.
- ``dhkd/kit/paper/averages.csv``: the 15-category averages the papers themselves give (the TBD
  2024 abstract for DHKD, RD4AD's paper for RD4AD), the only published PRO numbers. They
  differ from the README's averages, so the tables show both.
- ``RESULTS/<category>.json``: one file per category, written by :mod:`dhkd.kit.reproduce` after
  that category's notebooks succeeded.

Every table, CSV and Markdown file is a pure function of those files, so :func:`verify` can
rebuild them and point at any number that was edited by hand. Files are written atomically:
an interrupted run leaves the previous tables or the new ones, never half of one.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from dhkd.config import ABLATION_VARIANTS
from dhkd.data import MVTEC_CATEGORIES
from dhkd.errors import DhkdError
from dhkd.io import atomic_write, atomic_write_text, replace_between_markers

PAPER_DIR = Path(__file__).parent / "paper"

#: The authors' display names that are not simply the folder name with a capital letter.
DISPLAY_TO_FOLDER = {"mental nut": "metal_nut"}

#: metric key in the JSON files -> table title
METRICS = {
    "image_auroc": "Image AUROC (%)",
    "pixel_auroc": "Pixel AUROC (%)",
    "aupro": "PRO (%)",
}
PAPER_COLUMNS = ("DHKD (published)", "RD4AD (published)")
KIT, DELTA = "Kit", "Δ vs DHKD"
KIT_PRO_RD4AD = "Kit, RD4AD's PRO"
AVERAGE = "Average"
#: The two published 15-category averages, which disagree: the authors' README and the papers.
README_AVERAGE = "Average in the DHKD authors' README"
PAPERS_AVERAGE = "Average in the papers"
PUBLISHED = (README_AVERAGE, PAPERS_AVERAGE)

TABLES_DIR = "tables"
MARKDOWN_NAME = "results.md"
FIGURE_NAME = "results.png"
README_START = "<!-- results:start -->"
README_END = "<!-- results:end -->"
README_MARKERS = (README_START, README_END)


# ----------------------------------------------------------------------------- the paper


def parse_authors_readme(text: str) -> dict[str, list[dict[str, str]]]:
    """The DHKD authors' README's two Markdown tables as rows of strings, exactly as printed.

    Returns ``{"image_auroc": rows, "pixel_auroc": rows}`` (the first table is image AUROC,
    the second pixel AUROC). Each row has ``category`` (the MVTec AD folder name, or
    ``average``), ``name`` (the README's display name) and one key per method column, in the
    README's order.
    """
    tables: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in text.splitlines() + [""]:
        line = line.strip()
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", cell) for cell in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    if len(tables) != 2:
        raise DhkdError(f"expected the authors' README to hold two Markdown tables, found {len(tables)}")
    parsed = {}
    for key, (header, *body) in zip(("image_auroc", "pixel_auroc"), tables):
        methods = header[1:]
        rows = []
        for cells in body:
            name, values = cells[0], cells[1:]
            if len(values) != len(methods):
                raise DhkdError(f"table row {name!r} has {len(values)} values for {len(methods)} methods")
            rows.append({"category": folder_name(name), "name": name, **dict(zip(methods, values))})
        folders = [row["category"] for row in rows if row["category"] != "average"]
        if tuple(folders) != MVTEC_CATEGORIES:
            raise DhkdError(f"the {key} table lists {folders}, not MVTec AD's 15 categories in the known order")
        parsed[key] = rows
    return parsed


def folder_name(display: str) -> str:
    """``"Mental nut" -> "metal_nut"``, ``"Grid" -> "grid"``, ``"Average" -> "average"``."""
    lowered = display.strip().lower()
    return DISPLAY_TO_FOLDER.get(lowered, lowered.replace(" ", "_"))


def paper_csv_text(rows: list[dict[str, str]]) -> str:
    """The committed CSV form of one parsed table (so that a test can compare it with a fresh parse)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_paper_csvs(source: Path, out_dir: Path = PAPER_DIR) -> list[Path]:
    """Parse the authors' README at ``source``; write ``image_auroc.csv`` and ``pixel_auroc.csv``."""
    written = []
    for key, rows in parse_authors_readme(Path(source).read_text()).items():
        path = Path(out_dir) / f"{key}.csv"
        atomic_write_text(path, paper_csv_text(rows))
        written.append(path)
    return written


def paper_numbers(metric: str) -> pd.DataFrame:
    """The authors' README per category. Index: folder names plus ``average``; columns
    :data:`PAPER_COLUMNS` (its "Ours" and "Rkd" columns; "Rkd" is RD4AD, Deng & Li, CVPR 2022).
    No per-category PRO is published, so for ``aupro`` every number is NaN."""
    if metric == "aupro":
        return pd.DataFrame(math.nan, index=[*MVTEC_CATEGORIES, "average"], columns=list(PAPER_COLUMNS))
    frame = pd.read_csv(PAPER_DIR / f"{metric}.csv").set_index("category")
    return frame.rename(columns={"Ours": PAPER_COLUMNS[0], "Rkd": PAPER_COLUMNS[1]})[list(PAPER_COLUMNS)].astype(float)


def published_averages(metric: str) -> dict[str, tuple[float, float]]:
    """The two published 15-category averages of ``metric`` as (DHKD, RD4AD), by row label:
    the authors' README's Average row and the papers' own (``averages.csv``)."""
    papers = pd.read_csv(PAPER_DIR / "averages.csv").set_index("method")[metric].astype(float)
    readme = paper_numbers(metric).loc["average"]
    return {README_AVERAGE: (float(readme[PAPER_COLUMNS[0]]), float(readme[PAPER_COLUMNS[1]])),
            PAPERS_AVERAGE: (float(papers["DHKD"]), float(papers["RD4AD"]))}


# ----------------------------------------------------------------------------- the kit


def load_results(results_dir: str | Path) -> list[dict[str, Any]]:
    """Every ``<category>.json`` in ``results_dir``: MVTec AD categories in the authors' order, then others."""
    results_dir = Path(results_dir)
    found = {}
    for path in sorted(results_dir.glob("*.json")):
        data = json.loads(path.read_text())
        if "image_auroc" in data and "category" in data:
            found[data["category"]] = data
    order = [c for c in MVTEC_CATEGORIES if c in found] + sorted(set(found) - set(MVTEC_CATEGORIES))
    return [found[c] for c in order]


def _percent(value: Any) -> float:
    return float("nan") if value is None else round(100.0 * float(value), 1)


def build_tables(results: list[dict[str, Any]]) -> dict[str, pd.DataFrame]:
    """One DataFrame per metric: category rows, then the average rows; numbers in percent, 1 decimal.

    Kit numbers are rounded to one decimal first and the difference is taken between the
    printed numbers, so every printed Δ is exactly the difference of the printed columns.
    """
    if not results:
        raise DhkdError("no results to tabulate", "run `make reproduce` first; it writes one JSON per category")
    categories = [r["category"] for r in results]
    all_mvtec = set(MVTEC_CATEGORIES) <= set(categories)
    tables = {}
    for metric in METRICS:
        paper = paper_numbers(metric)
        rows = []
        for result in results:
            category = result["category"]
            ours, rd = (paper.loc[category].tolist() if category in paper.index else [math.nan, math.nan])
            row = {"Category": category, PAPER_COLUMNS[0]: ours, PAPER_COLUMNS[1]: rd, KIT: _percent(result.get(metric))}
            if metric == "aupro":
                row[KIT_PRO_RD4AD] = _percent(result.get("pro_rd4ad"))
            rows.append(row)
        frame = pd.DataFrame(rows)
        average = {"Category": f"{AVERAGE} ({len(results)} listed)"}
        for column in frame.columns[1:]:
            values = frame[column]
            # the paper's columns are averaged only where the paper has every listed category
            average[column] = round(values.mean(), 1) if values.notna().all() else math.nan
        summary = [average] if len(results) > 1 else []
        for label, (dhkd, rd) in published_averages(metric).items():
            published = {"Category": label, PAPER_COLUMNS[0]: dhkd, PAPER_COLUMNS[1]: rd}
            for column in frame.columns[3:]:
                published[column] = average[column] if all_mvtec else math.nan
            summary.append(published)
        frame = pd.concat([frame, pd.DataFrame(summary)], ignore_index=True)
        compared = KIT_PRO_RD4AD if metric == "aupro" else KIT
        frame[DELTA] = (frame[compared] - frame[PAPER_COLUMNS[0]]).round(1)
        tables[metric] = frame.set_index("Category")
    return tables


def provenance(results: list[dict[str, Any]]) -> dict[str, str]:
    """What the numbers were made with, as short strings (from the JSON files alone)."""

    def distinct(key: str, default: str = "?") -> str:
        values = sorted({str(r.get(key, default)) for r in results})
        return ", ".join(values)

    finished = sorted(str(r.get("finished_at", "")) for r in results)
    if all("parameters" in r for r in results):
        data = ", ".join(sorted({f"{r['parameters'].get('dataset', '?')} (`{r['parameters'].get('data', '?')}`)"
                                 for r in results}))
    else:
        data = distinct("data_root")
    return {
        "data": data,
        "data_root": distinct("data_root"),
        "profile": distinct("profile"),
        "teacher": distinct("teacher"),
        "device": distinct("device"),
        "epochs": distinct("epochs"),
        "categories": str(len(results)),
        "finished": finished[-1] if finished and finished[-1] else "?",
    }


# ----------------------------------------------------------------------------- rendering


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.1f}"
    return str(value)


def markdown_table(frame: pd.DataFrame, signed: Iterable[str] = (DELTA,)) -> str:
    """A GitHub Markdown table; numbers right-aligned with one decimal, Δ with a sign, NaN as –."""
    signed = set(signed)
    header = [frame.index.name or ""] + list(frame.columns)
    rows = []
    for name, values in frame.iterrows():
        cells = [str(name)]
        for column, value in values.items():
            if column in signed and isinstance(value, float) and not math.isnan(value):
                cells.append(f"{value:+.1f}")
            else:
                cells.append(_cell(value))
        rows.append(cells)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |",
             "| " + " | ".join(["-" * widths[0]] + ["-" * (w - 1) + ":" for w in widths[1:]]) + " |"]
    for cells in rows:
        lines.append("| " + " | ".join([cells[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]) + " |")
    return "\n".join(lines)


def csv_text(frame: pd.DataFrame) -> str:
    """The table as CSV, one decimal, empty where there is no number."""
    return frame.to_csv(float_format="%.1f", lineterminator="\n")


def notes(results: list[dict[str, Any]]) -> list[str]:
    """What the reader of the tables must know: the rows, the columns, what is missing and why."""
    categories = [r["category"] for r in results]
    others = [c for c in categories if c not in MVTEC_CATEGORIES]
    lines = [f"*{PAPER_COLUMNS[0]}* and *{PAPER_COLUMNS[1]}* per category are the \"Ours\" and \"Rkd\" "
             "columns of the results tables in the DHKD authors' README (Tong, Li & Song; \"Rkd\" is RD4AD, "
             f"reverse distillation); {DELTA} = {KIT} − {PAPER_COLUMNS[0]}, in points."]
    if len(categories) > 1:
        lines.append(f"*{AVERAGE}* is the kit's mean over the {len(categories)} categories listed; the published "
                     "columns are averaged over the same categories, where every one of them has a number.")
    lines.append(f"The published 15-category averages disagree, so both are shown: *{README_AVERAGE}* is that "
                 f"README's Average row; *{PAPERS_AVERAGE}* gives DHKD's from the abstract of the IEEE Trans. Big "
                 "Data 2024 paper and RD4AD's from its CVPR 2022 paper. The kit's number appears in these rows only "
                 "when all 15 MVTec AD categories were run.")
    if others:
        what = "is not an MVTec AD category" if len(others) == 1 else "are not MVTec AD categories"
        from_files = sorted({f"`{r.get('parameters', {}).get('data', '?')}`" for r in results
                             if r["category"] in others and r.get("dataset")})
        if not from_files:
            lines.append(f"{', '.join(others)} {what} (the kit's toy data set): nothing is published for "
                         f"{'it' if len(others) == 1 else 'them'} (–). A few CPU epochs on the toy set show that the "
                         "pipeline works end to end; they say nothing about how well DHKD detects anomalies.")
        else:
            lines.append(f"{', '.join(others)} {what} (from the data-set file {', '.join(from_files)}): the DHKD "
                         f"papers publish nothing for {'it' if len(others) == 1 else 'them'} (–).")
    lines.append("PRO: no per-category PRO is published, only the papers' averages. *Kit* is the official MVTec AD "
                 "AUPRO (integrated up to FPR 0.3); *Kit, RD4AD's PRO* is what RD4AD's code computes, and Δ "
                 "compares that one, assuming (the kit's interpretation) that DHKD, built on RD4AD, used RD4AD's "
                 "code.")
    return lines


def render_markdown(results: list[dict[str, Any]], tables: dict[str, pd.DataFrame], level: int = 2) -> str:
    """All three tables with their provenance line and notes, as one Markdown document body."""
    p = provenance(results)
    hashes = "#" * level
    out = [f"Made by `make reproduce` (finished {p['finished']}) on **{p['data']}** ({p['categories']} "
           f"categor{'y' if p['categories'] == '1' else 'ies'}), profile **{p['profile']}**, teacher "
           f"**{p['teacher']}**, device **{p['device']}**, **{p['epochs']}** epochs. Numbers in percent.", ""]
    for metric, title in METRICS.items():
        out += [f"{hashes} {title}", "", markdown_table(tables[metric]), ""]
    for result in results:
        if result.get("dataset") and result.get("per_defect"):
            out += [f"{hashes} Per kind: {result['category']} (%)", "", markdown_table(per_kind_table(result), signed=()), ""]
    out += [f"- {line}" for line in notes(results)] + [""]
    return "\n".join(out)


def per_kind_table(result: dict[str, Any]) -> pd.DataFrame:
    """A data set's scores per defect kind (each kind against the normal test images), in percent."""
    rows = []
    for kind, scores in result["per_defect"].items():
        rows.append({"Kind": kind, "Images": str(scores["n"]), "Image AUROC": _percent(scores["image_auroc"]),
                     "Pixel AUROC": _percent(scores["pixel_auroc"]), "AUPRO": _percent(scores["aupro"]),
                     "Without mask": str(scores.get("without_mask", 0))})
    return pd.DataFrame(rows).set_index("Kind")


def results_figure(tables: dict[str, pd.DataFrame], results: list[dict[str, Any]] | None = None):
    """One row of panels per metric: this run's categories on the left, the published
    15-category averages on the right, on axes of their own, so that a run on a few categories
    (or on the toy set) is never read as a rival to the published averages. ``results`` (the
    JSON files) add a caption saying on what data and for how many epochs the kit ran."""
    from matplotlib.figure import Figure

    index = list(tables["image_auroc"].index)
    published = [r for r in index if r in PUBLISHED]
    run_rows = [r for r in index if r not in PUBLISHED]
    toy = not any(r in MVTEC_CATEGORIES for r in run_rows)
    figure = Figure(figsize=(max(7.5, 4.0 + 0.8 * len(run_rows)), 9.5), layout="constrained")
    axes = figure.subplots(len(METRICS), 2, squeeze=False, gridspec_kw={"width_ratios": [max(2, len(run_rows)), 2]})
    for (left, right), (metric, title) in zip(axes, METRICS.items()):
        frame = tables[metric]
        columns = [*PAPER_COLUMNS, KIT_PRO_RD4AD if metric == "aupro" else KIT]
        _bars(left, frame, run_rows, columns, [r.split(" (")[0] for r in run_rows])
        left.set_title(f"{title}: this run" + (" (toy data set)" if toy else ""))
        _bars(right, frame, published, columns, ["authors' README", "papers"])
        right.set_title("published, 15 categories", fontsize="medium")
    handles = {label: handle for ax in axes.flat for handle, label in zip(*ax.get_legend_handles_labels())}
    order = [label for label in (*PAPER_COLUMNS, KIT, KIT_PRO_RD4AD) if label in handles]
    axes[0][1].legend([handles[label] for label in order], order, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                      fontsize="small", frameon=False)
    caption = []
    if results:
        p = provenance(results)
        caption.append(f"Kit: profile {p['profile']}, {p['epochs']} epochs, on {p['data'].replace('`', '')}.")
    if toy:
        caption.append("On the toy data set a few epochs show that the pipeline works end to end; "
                       "those numbers say nothing about how DHKD compares with the published averages.")
    if caption:
        figure.supxlabel(textwrap.fill(" ".join(caption), 110), fontsize="small")
    return figure


def _bars(ax: Any, frame: pd.DataFrame, rows: list[str], columns: list[str], labels: list[str]) -> None:
    """Grouped bars of the ``columns`` that have numbers for ``rows`` of ``frame`` (each column
    keeps its colour), the y axis fitted to what is shown."""
    colours = dict(zip(columns, ["#4c72b0", "#8da0cb", "#dd8452"]))
    shown = [column for column in columns if frame.loc[rows, column].notna().any()] or columns
    width = 0.8 / len(shown)
    for j, column in enumerate(shown):
        values = frame.loc[rows, column].to_numpy(dtype=float)
        offset = (j - (len(shown) - 1) / 2) * width
        ax.bar([i + offset for i in range(len(rows))], values, width, label=column, color=colours[column])
    finite = frame.loc[rows, columns].stack().dropna()
    low = 5.0 * math.floor((float(finite.min()) - 5.0) / 5.0) if len(finite) else 0.0
    ax.set_ylim(max(0.0, min(low, 90.0)), 100.5)
    ax.set_xticks(range(len(rows)), labels, rotation=30, ha="right")
    ax.set_ylabel("%")
    ax.grid(axis="y", alpha=0.3)


# ----------------------------------------------------------------------------- files


def expected_files(results_dir: str | Path) -> dict[str, str]:
    """Relative path -> text of every table file the JSON files in ``results_dir`` imply."""
    results = load_results(results_dir)
    tables = build_tables(results)
    files = {f"{TABLES_DIR}/{metric}.csv": csv_text(frame) for metric, frame in tables.items()}
    files[f"{TABLES_DIR}/{MARKDOWN_NAME}"] = "# Results\n\n" + render_markdown(results, tables)
    return files


def write_tables(results_dir: str | Path, readme: str | Path | None = None) -> list[Path]:
    """Rebuild every table (CSV, Markdown, PNG) from the JSON files; optionally the README section."""
    results_dir = Path(results_dir)
    written = []
    for relative, text in expected_files(results_dir).items():
        atomic_write_text(results_dir / relative, text)
        written.append(results_dir / relative)
    results = load_results(results_dir)
    figure = results_figure(build_tables(results), results)
    atomic_write(results_dir / TABLES_DIR / FIGURE_NAME, lambda tmp: figure.savefig(tmp, format="png", dpi=110))
    written.append(results_dir / TABLES_DIR / FIGURE_NAME)
    if readme is not None:
        replace_between_markers(Path(readme), readme_section(results_dir), README_MARKERS)
        written.append(Path(readme))
    return written


def verify(results_dir: str | Path) -> list[str]:
    """Problems found when rebuilding the tables from the JSON files; empty when all match.

    A number typed into a table by hand, a stale table or a missing file is reported with
    the file and the first line that differs.
    """
    results_dir = Path(results_dir)
    problems = []
    for relative, text in expected_files(results_dir).items():
        path = results_dir / relative
        if not path.exists():
            problems.append(f"{path} is missing")
            continue
        actual = path.read_text()
        if actual != text:
            problems.append(f"{path} differs from what its JSON files give: {_first_difference(actual, text)}")
    if not (results_dir / TABLES_DIR / FIGURE_NAME).exists():
        problems.append(f"{results_dir / TABLES_DIR / FIGURE_NAME} is missing")
    return problems


def _first_difference(actual: str, expected: str) -> str:
    for number, (a, e) in enumerate(zip(actual.splitlines(), expected.splitlines()), start=1):
        if a != e:
            return f"line {number} is {a.strip()!r}, expected {e.strip()!r}"
    return f"{len(actual.splitlines())} lines instead of {len(expected.splitlines())}"


def readme_section(results_dir: str | Path) -> str:
    """The README's results section body (between the markers)."""
    results_dir = Path(results_dir)
    results = load_results(results_dir)
    text = render_markdown(results, build_tables(results), level=3)
    return (f"{text}\nTables as CSV, the figure and the executed notebooks (also as HTML) are in "
            f"`{results_dir.as_posix()}/`. Written by `make reproduce README=1`; do not edit it by hand.\n")


# ----------------------------------------------------------------------------- ablation


ABLATION_METRICS = {"image_auroc": "Image AUROC", "pixel_auroc": "Pixel AUROC", "aupro": "AUPRO",
                    "pro_rd4ad": "PRO (RD4AD code)"}
BASELINE_KEY = "rd"
INERT = "Inert additions"
RESTORATION = "Masking restoration"  # diagnostics: share of a corruption the student undoes (RD's row: the reference)
#: The row of the training-free detector on the same teacher (benchmarks/reference.py writes its JSON files).
REFERENCE_TITLE = "PatchCore-style, no training"
REFERENCE_DIR = "reference"


def ablation_table(results: list[dict[str, Any]], baseline: str = BASELINE_KEY,
                   reference: list[dict[str, Any]] | None = None) -> pd.DataFrame:
    """One row per ablation variant (in the order first given), over every seed of its results,
    and a last row for the training-free ``reference`` where given (:func:`load_reference`).

    Per metric (in percent): the mean over seeds, its standard deviation (``std``, over seeds,
    n - 1 in the denominator; empty with one seed), the mean difference to the baseline variant
    (``Δ``, paired: variant minus baseline of the same seed) and that difference's standard
    deviation over seeds (``Δ std``), the spread that says whether a difference is more than
    noise. Then which seeds ran, the mean training seconds, the masking probe's mean restoration
    (:mod:`dhkd.run.diagnostics`; compare each row with RD's) and the additions the diagnostics call
    inert, with how many seeds did so. The reference's Δ is its mean minus the baseline's mean (its
    seeds only draw its coreset, so nothing pairs them with a training seed) and its ``Train s`` the
    seconds it took to build its memory and score the test split.
    """
    frame = _per_seed_frame(results)
    base = frame[frame["key"] == baseline].set_index("seed") if baseline in set(frame["key"]) else None
    rows = []
    for key in dict.fromkeys(frame["key"]):
        runs = frame[frame["key"] == key].set_index("seed")
        row: dict[str, Any] = {"Variant": runs["variant"].iloc[0]}
        for column in ABLATION_METRICS.values():
            row[column] = runs[column].mean()
            row[f"{column} std"] = runs[column].std()
            paired = (runs[column] - base[column]).dropna() if base is not None else pd.Series(dtype=float)
            row[f"Δ {column}"] = paired.mean() if len(paired) else math.nan
            row[f"Δ {column} std"] = paired.std() if len(paired) > 1 else math.nan
        row["Seeds"] = len(runs)
        row["Train s"] = round(float(runs["Train s"].mean()), 1)
        row[RESTORATION] = round(float(runs[RESTORATION].astype(float).mean()), 3)
        row[INERT] = _inert_summary(runs["inert"].tolist())
        rows.append(row)
    reference = _same_teacher(reference, results)
    if reference:
        rows.append(_reference_row(reference, base))
    table = pd.DataFrame(rows).set_index("Variant")
    numeric = [c for c in table.columns if c not in ("Seeds", "Train s", INERT, RESTORATION)]
    table[numeric] = table[numeric].astype(float).round(3)
    return table


def _reference_row(reference: list[dict[str, Any]], base: pd.DataFrame | None) -> dict[str, Any]:
    """The reference's row of :func:`ablation_table` (Δ unpaired: mean minus the baseline's mean)."""
    row: dict[str, Any] = {"Variant": REFERENCE_TITLE}
    for name, column in ABLATION_METRICS.items():
        values = pd.Series([100.0 * float(r[name]) if r.get(name) is not None else math.nan for r in reference])
        row[column], row[f"{column} std"] = values.mean(), values.std()
        row[f"Δ {column}"] = values.mean() - base[column].mean() if base is not None else math.nan
        row[f"Δ {column} std"] = math.nan
    row["Seeds"] = len(reference)
    row["Train s"] = round(float(pd.Series([sum((r.get("seconds") or {}).values()) for r in reference]).mean()), 1)
    row[RESTORATION], row[INERT] = math.nan, "–"
    return row


def load_reference(results_dir: str | Path) -> dict[str, list[dict[str, Any]]]:
    """The training-free reference's per-seed JSON files under ``results_dir/reference``
    (``<category>/seed<N>.json``, as ``python -m benchmarks.reference --results`` writes them), per category."""
    found: dict[str, list[dict[str, Any]]] = {}
    for path in sorted((Path(results_dir) / REFERENCE_DIR).glob("*/seed*.json")):
        found.setdefault(path.parent.name, []).append(json.loads(path.read_text()))
    return found


def _same_teacher(reference: list[dict[str, Any]] | None, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The reference runs made with the ablation's teacher (the same results folder: the same profile)."""
    teachers = {r.get("teacher") for r in results}
    return [r for r in reference or [] if r.get("teacher") in teachers]


def _per_seed_frame(results: list[dict[str, Any]]) -> pd.DataFrame:
    from dhkd.run.diagnostics import judge  # the current thresholds, also for runs recorded earlier

    rows = []
    for result in results:
        diagnostics = result.get("diagnostics")
        row = {"key": result.get("key", result["variant"]), "variant": result["variant"], "seed": result.get("seed", 0),
               "Train s": float(result.get("train_seconds") or math.nan),
               "inert": None if diagnostics is None else judge(diagnostics),
               RESTORATION: (diagnostics or {}).get("masking", {}).get("restoration", math.nan)}
        row.update({column: 100.0 * float(result[name]) if result.get(name) is not None else math.nan
                    for name, column in ABLATION_METRICS.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def _inert_summary(per_seed: list[list[str] | None]) -> str:
    """``"attention 3/3, fusion 1/3"``: how many seeds' diagnostics call each addition inert."""
    known = [inert for inert in per_seed if inert is not None]
    if not known:
        return "–"
    counts: dict[str, int] = {}
    for inert in known:
        for name in inert:
            counts[name] = counts.get(name, 0) + 1
    return ", ".join(f"{name} {count}/{len(known)}" for name, count in counts.items()) or "none"


def ablation_markdown(table: pd.DataFrame) -> str:
    """The ablation table as Markdown: ``mean ± std`` per metric, ``Δ ± std`` to RD, then seeds,
    training seconds and inert additions."""
    shown = pd.DataFrame(index=table.index)
    for column in ABLATION_METRICS.values():
        shown[column] = [_plus_minus(m, s) for m, s in zip(table[column], table[f"{column} std"])]
        shown[f"Δ {column}"] = [_plus_minus(m, s, signed=True)
                                for m, s in zip(table[f"Δ {column}"], table[f"Δ {column} std"])]
    for column in ("Seeds", "Train s", RESTORATION, INERT):
        shown[column] = [_cell_2(v) for v in table[column]] if column == RESTORATION else table[column]
    return markdown_table(shown, signed=())


#: The diagnostics shown per ablation variant: column -> (addition, how to read it from its record).
DIAGNOSTIC_COLUMNS = {
    "Fusion borrowed": ("fusion", lambda d: max(d["borrowed_share"])),
    "Fusion weights off 0.5": ("fusion", lambda d: d["mixing_max_deviation"]),
    "Attention spread": ("attention", lambda d: max(site["spread"] for site in d["sites"].values())),
    "Memory read-out": ("memory", lambda d: d["readout_share"]),
    "Memory items": ("memory", lambda d: d["effective_items"]),
}


def ablation_diagnostics(results: list[dict[str, Any]]) -> pd.DataFrame:
    """Per variant, the mean over seeds of each module's main diagnostic (:mod:`dhkd.run.diagnostics`),
    only for the modules the variant switches on (the masking stage's restoration is a column of
    :func:`ablation_table`). Shares are fractions; the fusion's and the attention's are the largest
    over scales and sites, as the inert rules read them."""
    rows = [{"Variant": result["variant"], **{column: _diagnostic(result, addition, read)
                                              for column, (addition, read) in DIAGNOSTIC_COLUMNS.items()}}
            for result in results]
    return pd.DataFrame(rows).groupby("Variant", sort=False).mean().round(3)  # the mean skips NaN


def _diagnostic(result: dict[str, Any], addition: str, read) -> float:
    """One figure of a variant's recorded diagnostics; NaN where the addition is off or unrecorded."""
    entry = (result.get("diagnostics") or {}).get(addition) or {}
    try:
        return float(read(entry)) if entry.get("enabled") else math.nan
    except (KeyError, TypeError, ValueError):
        return math.nan


def ablation_diagnostics_markdown(results: list[dict[str, Any]]) -> str:
    """:func:`ablation_diagnostics` as Markdown (``–`` where an addition is off), with a heading line."""
    frame = ablation_diagnostics(results)
    shown = frame.apply(lambda column: [_cell_2(v) if column.name != "Memory items" else
                                        ("–" if math.isnan(v) else f"{v:.1f}") for v in column])
    from dhkd.run import diagnostics

    limits = (f"fusion borrowed {diagnostics.FUSION_MIN_BORROWED_SHARE}, attention spread "
              f"{diagnostics.ATTENTION_MIN_SPREAD}, memory read-out {diagnostics.MEMORY_MIN_READOUT_SHARE} or "
              f"{diagnostics.MEMORY_MIN_EFFECTIVE_ITEMS:g} items; masking: restoration below "
              f"{diagnostics.MASKING_MIN_RESTORATION}, in the table above")
    return (f"\n\n*What each module does* (mean over seeds; inert below {limits}):\n\n"
            + markdown_table(shown, signed=()))


def ablation_section(results: list[dict[str, Any]], reference: list[dict[str, Any]] | None = None) -> str:
    """One category's ablation as ``make ablation`` writes it: the table (with the training-free
    reference's row where its results are given), the all-minus-masking line, how far DHKD is
    from the reference, and the per-module diagnostics."""
    return (ablation_markdown(ablation_table(results, reference=reference)) + ablation_contrast(results)
            + reference_contrast(results, reference) + ablation_diagnostics_markdown(results))


def reference_contrast(results: list[dict[str, Any]], reference: list[dict[str, Any]] | None,
                       variant: str = "all") -> str:
    """A line under the ablation table: ``variant`` minus the training-free reference, per metric,
    the difference of the means ± the root of the summed variances (unpaired). Empty without either."""
    runs = [r for r in results if r.get("key") == variant]
    reference = _same_teacher(reference, results)
    if not runs or not reference:
        return ""
    cells = []
    for name, column in ABLATION_METRICS.items():
        ours = pd.Series([100.0 * float(r[name]) for r in runs if r.get(name) is not None])
        theirs = pd.Series([100.0 * float(r[name]) for r in reference if r.get(name) is not None])
        spread = math.sqrt(ours.var() + theirs.var()) if len(ours) > 1 and len(theirs) > 1 else math.nan
        cells.append(f"{column} {_plus_minus(ours.mean() - theirs.mean(), spread, signed=True)}")
    return (f"\n\n*{runs[0]['variant']} minus the training-free reference* ({REFERENCE_TITLE}: the same teacher's "
            "features, nearest neighbours among a coreset of the training patches; its Train s is the time to build "
            "its memory and score the test split; difference of the means ± the root of the summed variances): "
            + ", ".join(cells) + ".")


def ablation_contrast(results: list[dict[str, Any]], variant: str = "all", baseline: str = "masking") -> str:
    """A line under the ablation table: ``variant`` minus ``baseline`` of the same seed, mean ± std.

    The default asks what DHKD's three TBD-2024 additions (fusion, attention, memory) add beyond
    the KBS-2023 masking stage alone. Empty when either variant is missing.
    """
    keys = {result.get("key") for result in results}
    if variant not in keys or baseline not in keys:
        return ""
    table = ablation_table(results, baseline=baseline)
    titles = {result.get("key"): result["variant"] for result in results}
    row = table.loc[titles[variant]]
    cells = [f"{column} {_plus_minus(row[f'Δ {column}'], row[f'Δ {column} std'], signed=True)}"
             for column in ABLATION_METRICS.values()]
    return (f"\n\n*{titles[variant]} minus {titles[baseline]}* (paired by seed, mean ± std): "
            + ", ".join(cells) + ".")


def _cell_2(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.2f}"


def _plus_minus(mean: float, std: float, signed: bool = False) -> str:
    if math.isnan(mean):
        return "–"
    text = f"{mean:+.2f}" if signed else f"{mean:.2f}"
    return text if math.isnan(std) else f"{text} ± {std:.2f}"


def load_ablation(results_dir: str | Path) -> dict[str, list[dict[str, Any]]]:
    """Every variant-and-seed JSON under ``results_dir/ablation`` (as ``make ablation`` writes
    them: ``<category>/seed<N>/<variant>.json``), per category."""

    root = Path(results_dir) / "ablation"
    found: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(root.glob("*/seed*/*.json")):
        found.setdefault(path.parent.parent.name, []).append(json.loads(path.read_text()))
    order = {key: i for i, key in enumerate(ABLATION_VARIANTS)}  # the table's rows in the ablation's order
    return {category: sorted(results, key=lambda r: (order.get(r.get("key"), len(order)), r.get("seed", 0)))
            for category, results in found.items()}


def ablation_report(results_dir: str | Path) -> str:
    """Markdown of every category's ablation table in a results folder, for notebook 07."""
    found = load_ablation(results_dir)
    if not found:
        return f"No ablation results in {Path(results_dir) / 'ablation'}: run `make ablation` first."
    reference = load_reference(results_dir)
    sections = []
    for category, results in found.items():
        sections.append(f"**{category}**\n\n{ablation_section(results, reference.get(category))}")
    return "\n\n".join(sections)


# ----------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``dhkd tables``'s sub-commands: paper, build, verify."""
    commands = parser.add_subparsers(dest="tables_command", required=True)
    paper = commands.add_parser("paper", help="parse the DHKD authors' README into dhkd/kit/paper/*.csv")
    paper.add_argument("--source", type=Path, required=True, help="a copy of the DHKD authors' README.md")
    build = commands.add_parser("build", help="rebuild the tables of a results folder from its JSON files")
    build.add_argument("results", type=Path)
    build.add_argument("--readme", type=Path)
    check = commands.add_parser("verify", help="check that a results folder's tables match its JSON files")
    check.add_argument("results", type=Path)


def run_command(args: argparse.Namespace) -> int:
    """``dhkd tables paper | build | verify``; 1 when verify finds a difference."""
    if args.tables_command == "paper":
        for path in write_paper_csvs(args.source):
            print(f"wrote {path}")
    elif args.tables_command == "build":
        for path in write_tables(args.results, args.readme):
            print(f"wrote {path}")
    else:
        problems = verify(args.results)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            return 1
        print(f"the tables in {args.results} match its JSON files")
    return 0
