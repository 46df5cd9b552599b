"""The training-free reference (benchmarks/reference.py): its coreset, its distances, one toy run."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from benchmarks import reference
from dhkd.config import load_config


def test_the_greedy_coreset_takes_one_patch_of_each_far_cluster() -> None:
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0] * 8, [50.0] * 8, [-50.0] * 8])
    points = torch.cat([c + 0.1 * torch.randn(200, 8, generator=generator) for c in centres])
    chosen = reference.greedy_coreset(points, 3 / len(points), torch.Generator().manual_seed(1))
    assert sorted(int(i) // 200 for i in chosen) == [0, 1, 2]  # k-centre: the farthest first, one per cluster


def test_nearest_distances_are_the_brute_force_ones() -> None:
    generator = torch.Generator().manual_seed(0)
    patches, memory = torch.randn(50, 6, generator=generator), torch.randn(7, 6, generator=generator)
    brute = torch.tensor([min(float((p - m).norm()) for m in memory) for p in patches])
    assert torch.allclose(reference.nearest_distances(patches, memory, chunk=16), brute, atol=1e-5)


def test_a_toy_run_writes_its_json_and_the_table(toy_root: Path, tmp_path: Path, capsys) -> None:
    assert reference.main(["--data", str(toy_root), "--category", "nut", "--profile", "smoke", "--seeds", "1 2",
                           "--results", str(tmp_path)]) == 0
    rows = [json.loads((tmp_path / "reference" / "nut" / f"seed{s}.json").read_text()) for s in (1, 2)]
    assert all(0.0 <= row[m] <= 1.0 for row in rows for m in reference.METRICS)
    assert rows[0]["memory_patches"] == round(0.01 * 8 * (load_config("smoke").data.image_size // 8) ** 2)
    out = capsys.readouterr().out
    assert "| PatchCore-style, no training | 2 |" in out and "image AUROC per kind" in out


def test_out_picks_the_results_folder_as_make_reproduce_does_and_a_recorded_seed_is_not_run_again(
        toy_root: Path, tmp_path: Path, capsys) -> None:
    arguments = ["--data", str(toy_root), "--categories", "nut", "--profile", "smoke", "--seeds", "1", "--out", str(tmp_path)]
    assert reference.main(arguments) == 0
    written = tmp_path / toy_root.name / "smoke" / "reference" / "nut" / "seed1.json"
    assert json.loads(written.read_text())["settings"]["resize"] == "squeeze"
    before = written.stat().st_mtime_ns
    assert reference.main(arguments) == 0
    assert "up to date" in capsys.readouterr().out and written.stat().st_mtime_ns == before
    assert reference.main(arguments + ["--set", "data.image_size=[64,96]", "--set", "data.resize=keep_aspect"]) == 0
    row = json.loads(written.read_text())
    assert row["settings"]["image_size"] == [64, 96] and row["memory_patches"] == round(0.01 * 8 * 8 * 12)
