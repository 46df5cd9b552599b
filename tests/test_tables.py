"""Results tables: the paper CSVs come from the DHKD authors' README, the kit's tables from the JSON files alone."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import pandas as pd
import pytest

from dhkd import cli
from dhkd.kit import tables
from dhkd.data import MVTEC_CATEGORIES

#: A copy of the DHKD authors' README (outside the repository; the test skips without it).
AUTHORS_README = Path(os.environ.get("DHKD_AUTHORS_README", Path(__file__).resolve().parents[2] / "shared" / "seeds"
                                     / "000_613416427124e7f6.txt"))
DHKD, RD = tables.PAPER_COLUMNS


def write_result(folder: Path, category: str, image: float, pixel: float, aupro: float, pro: float, **extra) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    result = {"category": category, "image_auroc": image, "pixel_auroc": pixel, "aupro": aupro, "pro_rd4ad": pro,
              "profile": "offline", "teacher": "efficientnet_lite0", "device": "cpu", "epochs": 10,
              "data_root": "/data", "finished_at": "2025-01-01 00:00 UTC", **extra}
    (folder / f"{category}.json").write_text(json.dumps(result))


@pytest.fixture
def results(tmp_path: Path) -> Path:
    folder = tmp_path / "results"
    write_result(folder, "nut", 0.81234, 0.9, 0.7, 0.75)  # toy: not in the paper
    write_result(folder, "bottle", 0.99612, 0.98049, 0.95, 0.96)
    write_result(folder, "grid", 0.97, 0.99, 0.9, 0.93)
    (folder / "notes.json").write_text("{}")  # not a result: ignored
    return folder


# ----------------------------------------------------------------------------- the paper


def test_paper_csvs_are_what_the_parser_makes_of_the_authors_readme() -> None:
    if not AUTHORS_README.exists():
        pytest.skip(f"no copy of the DHKD authors' README at {AUTHORS_README} (set DHKD_AUTHORS_README)")
    for key, rows in tables.parse_authors_readme(AUTHORS_README.read_text()).items():
        assert (tables.PAPER_DIR / f"{key}.csv").read_text() == tables.paper_csv_text(rows), (
            f"dhkd/kit/paper/{key}.csv differs from the authors' README; run dhkd tables paper --source ...")


def test_paper_csvs_hold_the_authors_tables() -> None:
    image = pd.read_csv(tables.PAPER_DIR / "image_auroc.csv")
    pixel = pd.read_csv(tables.PAPER_DIR / "pixel_auroc.csv")
    for frame in (image, pixel):
        assert tuple(frame["category"][:-1]) == MVTEC_CATEGORIES
        assert frame["category"].iloc[-1] == "average"
    assert list(image.columns) == ["category", "name", "Arnet", "Draem", "Different", "Padim", "Cflow", "Cs-flow",
                                   "Stpm", "Rkd", "Ours"]
    assert list(pixel.columns) == ["category", "name", "mkd", "Spade", "Padim", "riad", "Cutpaste", "Ikd", "Rkd", "Ours"]
    assert image.set_index("category").loc["average", "Ours"] == 99.3
    assert pixel.set_index("category").loc["average", "Ours"] == 98.6
    assert image.set_index("category").loc["metal_nut", "name"] == "Mental nut"
    assert tables.published_averages("aupro")[tables.PAPERS_AVERAGE] == (95.0, 93.9)


def test_the_two_published_averages_are_both_kept() -> None:
    """The authors' README and the papers disagree on the averages; neither replaces the other."""
    assert tables.published_averages("image_auroc") == {tables.README_AVERAGE: (99.3, 98.2), tables.PAPERS_AVERAGE: (98.1, 98.5)}
    assert tables.published_averages("pixel_auroc") == {tables.README_AVERAGE: (98.6, 97.8), tables.PAPERS_AVERAGE: (98.3, 97.8)}
    readme_pro = tables.published_averages("aupro")[tables.README_AVERAGE]
    assert all(math.isnan(v) for v in readme_pro)  # the README publishes no PRO


def test_parse_rejects_a_readme_without_two_tables() -> None:
    with pytest.raises(tables.DhkdError, match="two Markdown tables"):
        tables.parse_authors_readme("| a | b |\n| - | - |\n| 1 | 2 |\n")


# ----------------------------------------------------------------------------- the kit


def test_tables_are_built_from_the_json_files(results: Path) -> None:
    tables.write_tables(results)
    image = pd.read_csv(results / "tables" / "image_auroc.csv", index_col=0)
    # the authors' order (textures first), then categories the paper does not have
    assert list(image.index[:3]) == ["grid", "bottle", "nut"]
    assert image.loc["bottle", "Kit"] == 99.6
    assert image.loc["bottle", DHKD] == 99.7
    assert image.loc["bottle", RD] == 100.0
    assert image.loc["bottle", tables.DELTA] == -0.1
    assert image.loc["nut", "Kit"] == 81.2
    assert math.isnan(image.loc["nut", DHKD]) and math.isnan(image.loc["nut", tables.DELTA])
    average = image.loc["Average (3 listed)"]
    assert average["Kit"] == round((99.6 + 97.0 + 81.2) / 3, 1)
    assert math.isnan(average[DHKD])  # the paper has no nut
    published = image.loc[tables.README_AVERAGE]
    assert published[DHKD] == 99.3 and math.isnan(published["Kit"])  # only 3 of 15 categories ran
    assert image.loc[tables.PAPERS_AVERAGE, DHKD] == 98.1
    pro = pd.read_csv(results / "tables" / "aupro.csv", index_col=0)
    assert pro.loc["bottle", "Kit"] == 95.0 and pro.loc["bottle", "Kit, RD4AD's PRO"] == 96.0
    assert pro.loc[tables.PAPERS_AVERAGE, DHKD] == 95.0 and math.isnan(pro.loc[tables.README_AVERAGE, DHKD])
    markdown = (results / "tables" / "results.md").read_text()
    assert "nut is not an MVTec AD category" in markdown and "the seed" not in markdown
    assert "| bottle " in markdown and "99.6" in markdown and "-0.1" in markdown
    assert (results / "tables" / "results.png").stat().st_size > 10_000
    assert tables.verify(results) == []


def test_the_average_row_uses_the_paper_where_it_has_every_category(tmp_path: Path) -> None:
    folder = tmp_path / "mvtec"
    write_result(folder, "bottle", 1.0, 0.99, 0.9, 0.9)
    write_result(folder, "grid", 1.0, 0.99, 0.9, 0.9)
    image = tables.build_tables(tables.load_results(folder))["image_auroc"]
    assert image.loc["Average (2 listed)", DHKD] == round((99.7 + 99.8) / 2, 1)
    assert image.loc["Average (2 listed)", tables.DELTA] == round(100.0 - round((99.7 + 99.8) / 2, 1), 1)


def test_all_fifteen_categories_fill_the_published_row(tmp_path: Path) -> None:
    folder = tmp_path / "full"
    for category in MVTEC_CATEGORIES:
        write_result(folder, category, 0.99, 0.98, 0.93, 0.95)
    built = tables.build_tables(tables.load_results(folder))
    published = built["image_auroc"].loc[tables.README_AVERAGE]
    assert published["Kit"] == 99.0 and published[tables.DELTA] == round(99.0 - 99.3, 1)
    assert built["image_auroc"].loc[tables.PAPERS_AVERAGE, tables.DELTA] == round(99.0 - 98.1, 1)
    assert built["aupro"].loc[tables.PAPERS_AVERAGE, tables.DELTA] == 0.0  # 95.0 (RD4AD's PRO) - 95.0


@pytest.mark.parametrize("name", ["tables/results.md", "tables/image_auroc.csv", "tables/aupro.csv"])
def test_a_hand_edited_number_is_caught(results: Path, name: str) -> None:
    tables.write_tables(results)
    path = results / name
    text = path.read_text()
    assert "99.6" in text or "95.0" in text
    edited = text.replace("99.6", "99.9", 1) if "99.6" in text else text.replace("95.0", "97.0", 1)
    path.write_text(edited)
    problems = tables.verify(results)
    assert len(problems) == 1 and name.split("/")[1] in problems[0] and "expected" in problems[0]
    assert cli.main(["tables", "verify", str(results)]) == 1


def test_a_changed_json_makes_the_tables_stale(results: Path) -> None:
    tables.write_tables(results)
    write_result(results, "bottle", 0.5, 0.5, 0.5, 0.5)
    assert tables.verify(results)  # every table still shows the old bottle
    tables.write_tables(results)
    assert tables.verify(results) == []


def test_a_missing_table_is_reported(results: Path) -> None:
    tables.write_tables(results)
    (results / "tables" / "pixel_auroc.csv").unlink()
    assert any("pixel_auroc.csv is missing" in p for p in tables.verify(results))


def test_no_results_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(tables.DhkdError, match="make reproduce"):
        tables.write_tables(tmp_path)


def test_markdown_table_format() -> None:
    frame = pd.DataFrame({"Kit": [99.04, math.nan], tables.DELTA: [0.3, -1.5]}, index=pd.Index(["a", "b"], name="Category"))
    lines = tables.markdown_table(frame).splitlines()
    assert lines[0] == "| Category | Kit  | Δ vs DHKD |"
    assert lines[1] == "| -------- | ---: | --------: |"
    assert lines[2] == "| a        | 99.0 |      +0.3 |"
    assert lines[3] == "| b        |    – |      -1.5 |"


# ----------------------------------------------------------------------------- README


def test_readme_section_is_replaced_between_the_markers(results: Path, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# Kit\n\n## Results\n\n{tables.README_START}\nold numbers\n{tables.README_END}\n\n## Citation\n")
    tables.write_tables(results, readme)
    text = readme.read_text()
    assert "old numbers" not in text and "## Citation" in text and text.startswith("# Kit")
    assert text.count(tables.README_START) == 1 and "teacher **efficientnet_lite0**" in text
    assert "| bottle " in text
    once = text
    tables.write_tables(results, readme)
    assert readme.read_text() == once


def test_readme_without_markers_is_a_clear_error_and_stays_as_it_was(results: Path, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# Kit\n")
    with pytest.raises(tables.DhkdError, match="markers"):
        tables.write_tables(results, readme)
    assert readme.read_text() == "# Kit\n"


def test_the_figure_keeps_the_published_averages_on_axes_of_their_own(results: Path) -> None:
    built = tables.build_tables(tables.load_results(results))
    figure = tables.results_figure(built, tables.load_results(results))
    axes = figure.get_axes()
    assert len(axes) == 2 * len(tables.METRICS)
    run_labels = [t.get_text() for t in axes[0].get_xticklabels()]
    published_labels = [t.get_text() for t in axes[1].get_xticklabels()]
    assert "nut" in run_labels and not any("README" in label for label in run_labels)
    assert published_labels == ["authors' README", "papers"]


def test_csv_is_plain(results: Path) -> None:
    tables.write_tables(results)
    with open(results / "tables" / "pixel_auroc.csv") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["Category", DHKD, RD, "Kit", tables.DELTA]
    assert rows[1] == ["grid", "98.1", "99.3", "99.0", "0.9"]


# ----------------------------------------------------------------------------- ablation


def test_ablation_table() -> None:
    frame = tables.ablation_table([
        {"variant": "RD (baseline)", "image_auroc": 0.9, "pixel_auroc": 0.95, "aupro": 0.8, "pro_rd4ad": 0.85,
         "train_seconds": 12.34},
        {"variant": "all (DHKD)", "image_auroc": 0.95, "pixel_auroc": 0.96, "aupro": 0.82, "pro_rd4ad": 0.86,
         "train_seconds": 20.0},
    ])
    assert list(frame.index) == ["RD (baseline)", "all (DHKD)"]
    assert frame.loc["all (DHKD)", "Image AUROC"] == 95.0 and frame.loc["RD (baseline)", "Train s"] == 12.3


def _run(key: str, seed: int, image: float, pixel: float, inert: list[str] | None = None) -> dict:
    variant = {"rd": "RD (baseline)", "memory": "+ memory bank"}[key]
    result = {"key": key, "variant": variant, "seed": seed, "image_auroc": image, "pixel_auroc": pixel,
              "aupro": 0.5, "pro_rd4ad": 0.6, "train_seconds": 10.0}
    if inert is not None:  # recorded figures: the memory's read-out share makes it inert or not
        memory = {"enabled": key == "memory", "readout_share": 0.01 if "memory" in inert else 0.3, "effective_items": 40.0}
        result["diagnostics"] = {"inert": inert, "memory": memory, "masking": {"restoration": 0.7 + seed - 111}}
    return result


def test_multi_seed_ablation_mean_std_and_paired_difference_by_hand() -> None:
    """Three seeds: RD image AUROC 70, 74, 72; memory 73, 74, 78. By hand: RD mean 72, std 2 (n - 1);
    memory mean 75, std sqrt(((73-75)^2 + (74-75)^2 + (78-75)^2) / 2) = sqrt(7); paired differences
    3, 0, 6: mean 3, std 3. Pixel AUROC is 80 for every run: std 0, difference 0 ± 0."""
    results = [_run("rd", 111, 0.70, 0.8, []), _run("rd", 112, 0.74, 0.8, []), _run("rd", 113, 0.72, 0.8, []),
               _run("memory", 111, 0.73, 0.8, ["memory"]), _run("memory", 112, 0.74, 0.8, []),
               _run("memory", 113, 0.78, 0.8, ["memory"])]
    frame = tables.ablation_table(results)
    assert list(frame.index) == ["RD (baseline)", "+ memory bank"]
    rd, memory = frame.loc["RD (baseline)"], frame.loc["+ memory bank"]
    assert rd["Image AUROC"] == pytest.approx(72.0) and rd["Image AUROC std"] == pytest.approx(2.0)
    assert memory["Image AUROC"] == pytest.approx(75.0) and memory["Image AUROC std"] == pytest.approx(7 ** 0.5, abs=1e-3)
    assert memory["Δ Image AUROC"] == pytest.approx(3.0) and memory["Δ Image AUROC std"] == pytest.approx(3.0)
    assert rd["Δ Image AUROC"] == 0.0 and rd["Δ Image AUROC std"] == 0.0
    assert memory["Pixel AUROC std"] == 0.0 and memory["Δ Pixel AUROC"] == 0.0
    assert memory["Seeds"] == 3 and memory["Inert additions"] == "memory 2/3" and rd["Inert additions"] == "none"
    assert memory["Masking restoration"] == pytest.approx(1.7)  # 0.7, 1.7 and 2.7
    markdown = tables.ablation_markdown(frame)
    assert "75.00 ± 2.65" in markdown and "+3.00 ± 3.00" in markdown and "72.00 ± 2.00" in markdown


def test_one_seed_ablation_has_no_spread_and_pairs_only_matching_seeds() -> None:
    frame = tables.ablation_table([_run("rd", 111, 0.70, 0.8), _run("memory", 111, 0.75, 0.8),
                                   _run("memory", 112, 0.85, 0.8)])
    memory = frame.loc["+ memory bank"]
    assert memory["Image AUROC"] == pytest.approx(80.0)  # both seeds of the variant
    assert memory["Δ Image AUROC"] == pytest.approx(5.0)  # only seed 111 has an RD partner
    assert math.isnan(memory["Δ Image AUROC std"]) and math.isnan(frame.loc["RD (baseline)", "Image AUROC std"])
    assert "70.00 |" in tables.ablation_markdown(frame) and frame.loc["RD (baseline)", "Inert additions"] == "–"


def _reference(seed: int, image: float, teacher: str = "t") -> dict:
    return {"method": "patchcore", "seed": seed, "teacher": teacher, "image_auroc": image, "pixel_auroc": 0.9,
            "aupro": 0.7, "pro_rd4ad": 0.8, "seconds": {"coreset": 4.0, "test": 1.0}}


def test_the_reference_row_sits_under_the_variants_with_an_unpaired_difference_by_hand() -> None:
    """RD image AUROC 70, 74, 72 (mean 72); the reference 80, 84 (mean 82, std sqrt(8)): Δ = 82 - 72 = 10,
    unpaired, so no ± (its seeds draw a coreset, not a training). all (DHKD) - reference: RD's numbers
    stand in for all's here (key all): 72 - 82 = -10 ± sqrt(4 + 8) = 3.46."""
    results = [{**_run("rd", seed, image, 0.8), "teacher": "t"} for seed, image in ((111, 0.70), (112, 0.74), (113, 0.72))]
    reference = [_reference(1, 0.80), _reference(2, 0.84), _reference(3, 0.5, teacher="other")]  # another teacher: left out
    frame = tables.ablation_table(results, reference=reference)
    row = frame.loc[tables.REFERENCE_TITLE]
    assert list(frame.index)[-1] == tables.REFERENCE_TITLE and row["Seeds"] == 2
    assert row["Image AUROC"] == pytest.approx(82.0) and row["Image AUROC std"] == pytest.approx(8 ** 0.5, abs=1e-3)
    assert row["Δ Image AUROC"] == pytest.approx(10.0) and math.isnan(row["Δ Image AUROC std"]) and row["Train s"] == 5.0
    everything = [{**r, "key": "all", "variant": "all (DHKD)"} for r in results]
    line = tables.reference_contrast(everything, reference)
    assert "all (DHKD) minus the training-free reference" in line and "Image AUROC -10.00 ± 3.46" in line
    section = tables.ablation_section(results, reference)
    assert "+10.00 |" in section and tables.REFERENCE_TITLE in section
    assert tables.REFERENCE_TITLE not in tables.ablation_section(results)  # no reference files: no row


def test_load_reference_reads_the_files_the_reference_writes(tmp_path: Path) -> None:
    folder = tmp_path / "reference" / "nut"
    folder.mkdir(parents=True)
    for seed in (111, 112):
        (folder / f"seed{seed}.json").write_text(json.dumps(_reference(seed, 0.8)))
    assert [r["seed"] for r in tables.load_reference(tmp_path)["nut"]] == [111, 112]
    assert tables.load_reference(tmp_path / "nowhere") == {}
