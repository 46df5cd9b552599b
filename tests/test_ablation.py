"""make ablation: every variant per seed, resumable, one table per category with mean and spread."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from dhkd import reproduce, tables
from dhkd.errors import DhkdError
from dhkd.toy import generate_toy


@pytest.mark.slow
def test_ablation_trains_every_variant_per_seed_resumes_and_writes_one_table(tmp_path: Path, monkeypatch) -> None:
    """Two seeds; the first training is killed after its first epoch and resumes from there; a
    finished variant and seed is skipped; the table's means are the seeds' means."""
    from dhkd.train import Trainer

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
    assert [row["Variant"] for row in rows] == [title for title, _ in reproduce.VARIANTS.values()]
    per_seed = {(seed, key): json.loads((folder / "nut" / f"seed{seed}" / f"{key}.json").read_text())
                for seed in (1, 2) for key in reproduce.VARIANTS}
    assert all(result["seed"] == seed and "diagnostics" in result for (seed, _), result in per_seed.items())
    for row, key in zip(rows, reproduce.VARIANTS):
        values = [100 * per_seed[(seed, key)]["image_auroc"] for seed in (1, 2)]
        paired = [100 * (per_seed[(seed, key)]["image_auroc"] - per_seed[(seed, "rd")]["image_auroc"]) for seed in (1, 2)]
        assert float(row["Image AUROC"]) == pytest.approx(sum(values) / 2, abs=1e-3)
        assert float(row["Image AUROC std"]) == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5, abs=1e-3)
        assert float(row["Δ Image AUROC"]) == pytest.approx(sum(paired) / 2, abs=1e-3)
        assert row["Seeds"] == "2"
    configs = {key: (folder / "nut" / "seed2" / "runs" / key / "config.yaml").read_text() for key in reproduce.VARIANTS}
    assert "fusion:\n    enabled: false" in configs["rd"] and "fusion:\n    enabled: true" in configs["fusion"]
    assert "memory:\n    enabled: false" in configs["fusion"] and "memory:\n    enabled: true" in configs["all"]
    assert "seed: 2" in configs["rd"]

    (folder / "nut" / "seed2" / "masking.json").unlink()
    again: list[str] = []
    reproduce.run_ablation(plan, say=lambda *a, **k: again.append(" ".join(map(str, a))), seeds=[1, 2])
    assert sum("up to date, skipped" in line for line in again) == 2 * len(reproduce.VARIANTS) - 1
    assert "seeds 1 2" in (folder / "ablation.md").read_text()
    assert "nut" in tables.ablation_report(plan.results)


def test_seeds_are_whole_numbers_listed_once() -> None:
    assert reproduce.parse_seeds("111 112, 113") == [111, 112, 113] and reproduce.parse_seeds(" ") == []
    with pytest.raises(DhkdError, match="whole numbers"):
        reproduce.parse_seeds("111 abc")
    with pytest.raises(DhkdError, match="twice"):
        reproduce.parse_seeds("1 1")
