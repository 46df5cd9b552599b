"""The settings the MTD measurements point at: which teacher stages are distilled
(``model.teacher.stages``), which scales the map sums (``eval.scales``), checkpoints kept along
the way (``train.keep_every``) and ``dhkd curve``, which scores them with the kit's own map and metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import TOY_CATEGORY
from dhkd import cli
from dhkd.config import load_config, to_dict, training_config
from dhkd.errors import DhkdError
from dhkd.method.anomaly_map import anomaly_map, gaussian_blur, scale_maps
from dhkd.method.teacher import STAGE_CHANNELS, Teacher
from dhkd.run.checkpoint import check_compatible
from dhkd.run.curve import curve_points, read_curve, score_curve
from dhkd.run.evaluate import evaluate_run
from dhkd.run.folder import CURVE_NAME, kept_checkpoints
from dhkd.run.train import train


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_lite0"])
def test_deeper_stages_give_strides_8_16_32_with_the_stage_channels(name: str) -> None:
    teacher = Teacher(name, "none", (2, 3, 4))
    features = teacher(torch.zeros(1, 3, 128, 128))
    assert [tuple(f.shape[1:]) for f in features] == [(c, 128 // s, 128 // s) for c, s in
                                                      zip(STAGE_CHANNELS[name][1:], (8, 16, 32))]
    assert teacher.channels == STAGE_CHANNELS[name][1:] and teacher.strides == (8, 16, 32)


def test_the_deeper_teacher_taps_the_same_features_one_stage_on() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 128, 128)
    default, deeper = Teacher("efficientnet_lite0", "imagenet"), Teacher("efficientnet_lite0", "imagenet", (2, 3, 4))
    with torch.no_grad():
        a, b = default(x), deeper(x)
    assert torch.equal(a[1], b[0]) and torch.equal(a[2], b[1])  # stride 8 and 16: the very same tensors
    assert b[2].shape[1] == 320


@pytest.mark.parametrize("override, words", [
    ("model.teacher.stages=[1, 3, 4]", "three consecutive stages"),
    ("model.teacher.stages=[3, 4, 5]", "item 3"),
    ("eval.scales=[2, 2]", "at most once"),
    ("eval.scales=[]", "at least one"),
    ("eval.scales=[0]", "out of range"),
])
def test_bad_stages_and_scales_are_refused_with_a_fix(override: str, words: str) -> None:
    with pytest.raises(DhkdError) as error:
        load_config("offline", [override])
    assert words in str(error.value.what) and error.value.fix


def test_deeper_stages_need_an_input_that_is_a_multiple_of_64() -> None:
    with pytest.raises(DhkdError) as error:
        load_config("offline", ["model.teacher.stages=[2, 3, 4]", "data.image_size=[288, 224]"])
    assert "multiple of 64" in error.value.what and "[256, 256]" in error.value.fix
    assert load_config("offline", ["model.teacher.stages=[2, 3, 4]", "data.image_size=[320, 256]"]).data.shape == (320, 256)


def test_the_map_of_chosen_scales_is_the_blurred_sum_of_those_scales_alone() -> None:
    torch.manual_seed(1)
    teacher = [torch.randn(2, c, 32 // s, 32 // s) for c, s in ((4, 1), (6, 2), (8, 4))]
    student = [t + 0.5 * torch.randn_like(t) for t in teacher]
    by_hand = gaussian_blur(scale_maps(teacher, student, 32)[:, 1:].sum(dim=1), 4.0)
    assert torch.allclose(anomaly_map(teacher, student, 32, 4.0, scales=(2, 3)), by_hand, atol=1e-6)
    assert torch.allclose(anomaly_map(teacher, student, 32, 4.0, scales=(1, 2, 3)), anomaly_map(teacher, student, 32, 4.0))


def test_a_checkpoint_made_before_a_setting_existed_reads_as_its_default(tmp_path: Path) -> None:
    config = training_config("smoke", 2)
    saved = to_dict(config)
    del saved["model"]["teacher"]["stages"]
    check_compatible({"config": saved}, config, tmp_path / "old.pt")  # the default [1, 2, 3]: compatible
    deeper = load_config("smoke", ["model.teacher.stages=[2, 3, 4]"])
    with pytest.raises(DhkdError, match="model.teacher.stages"):
        check_compatible({"config": saved}, deeper, tmp_path / "old.pt")
    # a run from before data.calibration_share held nothing back: its config.yaml reads as 0, so must its checkpoint
    del saved["data"]["calibration_share"]
    check_compatible({"config": saved}, load_config("smoke", ["data.calibration_share=0"]), tmp_path / "old.pt")
    with pytest.raises(DhkdError, match="calibration_share"):
        check_compatible({"config": saved}, load_config("smoke"), tmp_path / "old.pt")


@pytest.fixture(scope="module")
def kept_run(toy_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("curve") / TOY_CATEGORY
    # stages 2-4 at 64 px: a 1 x 1 bottleneck, one embedding vector per image, fewer than the smoke profile's 8 items
    config = load_config("smoke", ["train.epochs=4", "train.keep_every=2", "model.teacher.stages=[2, 3, 4]",
                                   "model.memory.items=4"])
    train(config, toy_root, TOY_CATEGORY, out, device="cpu", progress=False)
    return out


def test_keep_every_keeps_the_student_of_every_nth_epoch(kept_run: Path) -> None:
    assert [epoch for epoch, _ in kept_checkpoints(kept_run)] == [2, 4]
    assert [epoch for epoch, _ in curve_points(kept_run)] == [2, 4]  # the final checkpoint is epoch 4's


def test_the_curve_scores_the_last_epoch_exactly_as_dhkd_evaluate(kept_run: Path, tmp_path: Path) -> None:
    rows = score_curve(kept_run, device="cpu", scale_sets=[(1, 2, 3), (2, 3)], progress=False)
    assert [(r["epoch"], r["scales"]) for r in rows] == [(2, "1+2+3"), (2, "2+3"), (4, "1+2+3"), (4, "2+3")]
    evaluated = evaluate_run(kept_run, device="cpu", json_path=tmp_path / "m.json", progress=False, diagnostics=False)
    last = rows[2]
    for metric in ("image_auroc", "pixel_auroc", "aupro"):
        assert last[metric] == pytest.approx(evaluated[metric], abs=1e-9), metric
    for kind, value in evaluated["per_defect"].items():
        assert last[f"image_auroc/{kind}"] == pytest.approx(value["image_auroc"], abs=1e-9)
    assert rows[0]["image_auroc"] != rows[2]["image_auroc"] or rows[0]["pixel_auroc"] != rows[2]["pixel_auroc"]
    read = read_curve(kept_run)
    assert [r["epoch"] for r in read] == [2, 2, 4, 4] and read[2]["aupro"] == pytest.approx(last["aupro"], abs=1e-6)


def test_dhkd_curve_prints_the_table_and_says_it_is_a_diagnostic(kept_run: Path, capsys) -> None:
    assert cli.main(["curve", "--run", str(kept_run), "--scales", "2,3", "--device", "cpu", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "image AUROC" in out and "2+3" in out and "diagnostic" in out
    assert (kept_run / CURVE_NAME).exists()
    assert cli.main(["curve", "--run", str(kept_run), "--scales", "2,4", "--quiet"]) == 2
    assert "--scales 2,4" in capsys.readouterr().err


def test_a_folder_without_checkpoints_says_how_to_keep_them(tmp_path: Path) -> None:
    with pytest.raises(DhkdError) as error:
        curve_points(tmp_path)
    assert "train.keep_every" in error.value.fix


def test_a_folder_of_curves_reads_back_as_tables(kept_run: Path, tmp_path: Path) -> None:
    import shutil

    from dhkd.kit.curves import curve_table, last_epoch, load_curves, scales_table

    score_curve(kept_run, device="cpu", scale_sets=[(1, 2, 3), (2, 3)], progress=False)
    folder = tmp_path / "curves"
    for name in ("a", "b"):
        (folder / name).mkdir(parents=True)
        shutil.copy(kept_run / CURVE_NAME, folder / name / CURVE_NAME)
    curves = load_curves(folder)
    rows = read_curve(kept_run)
    table = curve_table(curves, metric="aupro")
    assert list(table.columns) == ["a", "b"] and list(table.index) == [2, 4]
    assert table.loc[4, "a"] == pytest.approx(100 * rows[2]["aupro"])
    assert curve_table(curves, "2+3").loc[2, "b"] == pytest.approx(100 * rows[1]["image_auroc"])
    assert last_epoch(curves["a"])["epoch"] == 4
    assert list(scales_table(curves["a"]).index) == ["1+2+3", "2+3"]
    with pytest.raises(ValueError, match="no rows with scales"):
        curve_table(curves, "1")
