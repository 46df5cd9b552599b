"""make ablation: every variant per seed, resumable, one table per category with mean and spread."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from dhkd.config import ABLATION_VARIANTS
from dhkd.kit import reproduce
from dhkd.kit import tables
from dhkd.errors import DhkdError
from dhkd.data.toy import generate_toy


@pytest.mark.slow
def test_ablation_trains_every_variant_per_seed_resumes_and_writes_one_table(tmp_path: Path, monkeypatch) -> None:
    """Two seeds; the first training is killed after its first epoch and resumes from there; a
    finished variant and seed is skipped; the table's means are the seeds' means."""
    from dhkd.run.train import Trainer

    data = tmp_path / "toy"
    generate_toy(data, image_size=64, n_train=4, n_test_good=2, n_test_per_defect=1, categories=["nut"], progress=False)
    plan = reproduce.make_plan(data, ["nut"], "smoke", None, "cpu", tmp_path / "results")  # smoke: 2 epochs
    end_epoch = Trainer._end_epoch

    def killed_after_one_epoch(self, position, stage, batches):
        end_epoch(self, position, stage, batches)
        raise RuntimeError("killed")

    monkeypatch.setattr(Trainer, "_end_epoch", killed_after_one_epoch)
    with pytest.raises(RuntimeError, match="killed"):
        reproduce.run_ablation(plan, say=lambda *a, **k: None, seeds=[1, 2])
    monkeypatch.setattr(Trainer, "_end_epoch", end_epoch)
    folder = plan.results / "ablation"
    first_run = folder / "nut" / "seed1" / "runs" / "rd"
    before_kill = (first_run / "history.csv").read_text().splitlines()
    assert len(before_kill) == 2  # header and epoch 1

    written = reproduce.run_ablation(plan, say=lambda *a, **k: None, seeds=[1, 2])
    assert (first_run / "history.csv").read_text().splitlines()[:2] == before_kill  # resumed, not restarted
    assert folder / "nut.md" in written and (folder / "ablation.md").exists()
    with open(folder / "nut.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["Variant"] for row in rows] == [title for title, _ in ABLATION_VARIANTS.values()]
    per_seed = {(seed, key): json.loads((folder / "nut" / f"seed{seed}" / f"{key}.json").read_text())
                for seed in (1, 2) for key in ABLATION_VARIANTS}
    assert all(result["seed"] == seed and "diagnostics" in result for (seed, _), result in per_seed.items())
    for row, key in zip(rows, ABLATION_VARIANTS):
        values = [100 * per_seed[(seed, key)]["image_auroc"] for seed in (1, 2)]
        paired = [100 * (per_seed[(seed, key)]["image_auroc"] - per_seed[(seed, "rd")]["image_auroc"]) for seed in (1, 2)]
        assert float(row["Image AUROC"]) == pytest.approx(sum(values) / 2, abs=1e-3)
        assert float(row["Image AUROC std"]) == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5, abs=1e-3)
        assert float(row["Δ Image AUROC"]) == pytest.approx(sum(paired) / 2, abs=1e-3)
        assert row["Seeds"] == "2"
    configs = {key: (folder / "nut" / "seed2" / "runs" / key / "config.yaml").read_text() for key in ABLATION_VARIANTS}
    assert "fusion:\n    enabled: false" in configs["rd"] and "fusion:\n    enabled: true" in configs["fusion"]
    assert "memory:\n    enabled: false" in configs["fusion"] and "memory:\n    enabled: true" in configs["all"]
    assert "seed: 2" in configs["rd"]

    assert "*all (DHKD) minus + masking stage*" in (folder / "nut.md").read_text()

    (folder / "nut" / "seed2" / "masking.json").unlink()
    planned: list[str] = []
    assert reproduce.run_ablation(plan, say=lambda *a, **k: planned.append(" ".join(map(str, a))), seeds=[1, 2],
                                  dry_run=True) == []
    assert [line for line in planned if "would train" in line] == ["[11/12] nut · seed 2 · + masking stage: "
                                                                   "would train and evaluate"]
    subset: list[str] = []
    reproduce.run_ablation(plan, say=lambda *a, **k: subset.append(" ".join(map(str, a))), seeds=[1, 2],
                           variants=["rd", "all"])
    assert sum("up to date, skipped" in line for line in subset) == 4
    with open(folder / "nut.csv", newline="") as handle:
        assert [row["Variant"] for row in csv.DictReader(handle)] == ["RD (baseline)", "all (DHKD)"]
    again: list[str] = []
    reproduce.run_ablation(plan, say=lambda *a, **k: again.append(" ".join(map(str, a))), seeds=[1, 2])
    assert sum("up to date, skipped" in line for line in again) == 2 * len(ABLATION_VARIANTS) - 1
    assert "seeds 1 2" in (folder / "ablation.md").read_text()
    assert "nut" in tables.ablation_report(plan.results)


def test_seeds_are_whole_numbers_listed_once() -> None:
    assert reproduce.parse_seeds("111 112, 113") == [111, 112, 113] and reproduce.parse_seeds(" ") == []
    with pytest.raises(DhkdError, match="whole numbers"):
        reproduce.parse_seeds("111 abc")
    with pytest.raises(DhkdError, match="twice"):
        reproduce.parse_seeds("1 1")


def test_variants_are_named_from_the_ablation_and_kept_in_its_order() -> None:
    assert reproduce.parse_variants("all, rd") == ["rd", "all"] and reproduce.parse_variants("") == []
    with pytest.raises(DhkdError, match="'fusoin'") as error:
        reproduce.parse_variants("rd fusoin")
    assert "rd fusion attention memory masking all" in error.value.fix


def test_contrast_of_all_against_masking_is_paired_by_seed() -> None:
    """Hand-computed: all - masking per seed is +2 and +4 image points, so +3.00 ± 1.41."""
    def result(key: str, seed: int, image: float) -> dict:
        return {"key": key, "variant": ABLATION_VARIANTS[key][0], "seed": seed, "image_auroc": image,
                "pixel_auroc": 0.9, "aupro": 0.5, "pro_rd4ad": 0.5, "train_seconds": 1.0}
    results = [result("rd", 1, 0.70), result("rd", 2, 0.72), result("masking", 1, 0.74), result("masking", 2, 0.70),
               result("all", 1, 0.76), result("all", 2, 0.74)]
    line = tables.ablation_contrast(results)
    assert "*all (DHKD) minus + masking stage*" in line and "Image AUROC +3.00 ± 1.41" in line
    assert "Pixel AUROC +0.00 ± 0.00" in line
    assert tables.ablation_contrast(results[:4]) == ""


def test_readme_gets_one_ablation_block_per_results_folder(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{reproduce.ABLATION_NEXT}\nafter\n")
    reproduce.write_ablation_readme(readme, "results/mtd/offline", "first table")
    reproduce.write_ablation_readme(readme, "results/bottle/offline", "bottle table")
    reproduce.write_ablation_readme(readme, "results/mtd/offline", "second table")
    text = readme.read_text()
    assert "first table" not in text and text.index("second table") < text.index("bottle table")
    assert text.count("<!-- ablation:results/mtd/offline:start -->") == 1 and text.endswith(f"{reproduce.ABLATION_NEXT}\nafter\n")
    plain = tmp_path / "PLAIN.md"
    plain.write_text("no markers\n")
    with pytest.raises(DhkdError, match="ablation:next"):
        reproduce.write_ablation_readme(plain, "results/mtd/offline", "table")


def test_diagnostics_table_averages_seeds_and_leaves_switched_off_modules_empty() -> None:
    def result(key: str, seed: int, borrowed: float, readout: float) -> dict:
        return {"key": key, "variant": ABLATION_VARIANTS[key][0], "seed": seed, "diagnostics": {
            "fusion": {"enabled": key == "all", "borrowed_share": [0.1, borrowed, 0.2], "mixing_max_deviation": 0.04},
            "attention": {"enabled": False}, "memory": {"enabled": True, "readout_share": readout, "effective_items": 40.0},
            "masking": {"enabled": False}}}
    frame = tables.ablation_diagnostics([result("memory", 1, 0.5, 0.30), result("memory", 2, 0.5, 0.40),
                                         result("all", 1, 0.6, 0.20), result("all", 2, 0.8, 0.20)])
    assert frame.loc["+ memory bank", "Memory read-out"] == pytest.approx(0.35)
    assert frame.loc["all (DHKD)", "Fusion borrowed"] == pytest.approx(0.7)  # the largest scale, averaged
    assert frame.loc["+ memory bank"].isna()["Fusion borrowed"] and frame["Attention spread"].isna().all()
