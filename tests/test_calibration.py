"""The predict threshold is calibrated on defect-free images that neither training nor the test split holds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from conftest import TOY_CATEGORY
from dhkd import cli
from dhkd.config import load_config, read_config, to_dict
from dhkd.data import load_split
from dhkd.data.holdout import held_out_count, hold_out
from dhkd.data.load import items_of
from dhkd.errors import DhkdError
from dhkd.run.evaluate import load_model, score_split


def test_held_out_count_keeps_one_on_each_side() -> None:
    assert [held_out_count(n, 0.1) for n in (0, 1, 2, 8, 60, 209)] == [0, 0, 1, 1, 6, 21]
    assert held_out_count(10, 0.0) == 0 and held_out_count(10, 0.99) == 9


def test_hold_out_is_a_deterministic_partition() -> None:
    items = list(range(20))
    kept, held = hold_out(items, 0.25, seed=0)
    assert sorted(kept + held) == items and not set(kept) & set(held) and len(held) == 5
    assert (kept, held) == hold_out(items, 0.25, seed=0) and held != hold_out(items, 0.25, seed=1)[1]


def test_calibration_split_is_the_training_images_left_out(toy_root: Path) -> None:
    every, _, _ = items_of(toy_root, TOY_CATEGORY, ["train"])
    train, _, _ = items_of(toy_root, TOY_CATEGORY, ["train"], 0.25)
    calibration, _, _ = items_of(toy_root, TOY_CATEGORY, ["calibration"], 0.25)
    assert len(calibration) == 2 and not {i.path for i in train} & {i.path for i in calibration}
    assert sorted(i.path for i in train + calibration) == sorted(i.path for i in every)
    with pytest.raises(DhkdError, match="calibration split is empty"):
        items_of(toy_root, TOY_CATEGORY, ["calibration"], 0.0)


def test_a_run_made_before_the_setting_held_nothing_back(tmp_path: Path) -> None:
    config = load_config("smoke")
    assert config.data.calibration_share > 0  # the default holds images back
    tree = to_dict(config)
    del tree["data"]["calibration_share"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(tree))
    assert read_config(tmp_path / "config.yaml").data.calibration_share == 0.0


def _train_and_evaluate(root: Path, run: Path, *sets: str) -> dict:
    extra = [arg for s in sets for arg in ("--set", s)]
    assert cli.main(["train", "--data-root", str(root), "--category", TOY_CATEGORY, "--profile", "smoke", "--epochs", "2",
                     "--out", str(run), "--quiet", "--device", "cpu", *extra]) == 0
    assert cli.main(["evaluate", "--run", str(run), "--json", str(run / "m.json"), "--quiet", "--device", "cpu"]) == 0
    return json.loads((run / "m.json").read_text())


def test_threshold_comes_from_images_neither_trained_on_nor_tested(toy_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = _train_and_evaluate(toy_root, run, "data.calibration_share=0.25")
    info = json.loads((run / "run.json").read_text())
    assert info["train_images"] == 6 and info["calibration_images"] == 2
    threshold = result["threshold"]
    assert threshold["images"] == "calibration" and threshold["n_normal"] == 2 and "held back" in threshold["how"]
    model, config = load_model(run, "cpu")
    held = load_split(toy_root, TOY_CATEGORY, "calibration", config.data.fit(), progress=False, calibration_share=0.25)
    scores = score_split(model, held, config, torch.device("cpu"), progress=False).scores
    assert threshold["value"] == pytest.approx(float(torch.quantile(scores, config.eval.threshold_quantile)), rel=1e-6)
    test_paths = set(load_split(toy_root, TOY_CATEGORY, "test", 64, progress=False).paths)
    assert not set(held.paths) & test_paths


def test_without_held_back_images_the_threshold_says_it_is_fitted_to_the_test(toy_root: Path, tmp_path: Path) -> None:
    result = _train_and_evaluate(toy_root, tmp_path / "run", "data.calibration_share=0")
    threshold = result["threshold"]
    assert threshold["images"] == "test" and threshold["n_normal"] == 2 and "judged on" in threshold["how"]
