"""``dhkd bench``: the command runs anywhere (synthetic data) and writes every promised figure."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dhkd.bench import format_table, run_bench, synthetic_data
from dhkd.cli import main as cli_main
from dhkd.config import load_config

REQUIRED = ["train_epoch_s", "teacher_cache_s", "infer_img_per_s_b1", "infer_img_per_s_b32", "peak_mem_mb",
            "aupro_s", "pixel_auroc_s", "pro_rd4ad_s"]


@pytest.fixture
def one_thread():
    """In-process runs on one thread (see one_thread_env), restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def one_thread_env() -> dict[str, str]:
    """One thread: on a small shared CPU, two OpenMP threads wait on each other whenever another process runs."""
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def test_bench_smoke_cli_writes_positive_figures(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "dhkd.cli", "bench", "--profile", "smoke", "--device", "cpu",
                           "--json", str(out)], cwd=tmp_path, env=one_thread_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())
    for key in REQUIRED + ["train_epoch_stage2_s", "projected_train_s", "decode_s"]:
        assert isinstance(result[key], (int, float)) and result[key] > 0, (key, result.get(key))
    assert result["data"] == "synthetic" and (result["n_train"], result["n_test"]) == (209, 83)
    assert result["profile"] == "smoke" and result["device"] == "cpu" and result["batch_size"] == 4
    assert 0 <= result["aupro_value"] <= 1 and 0 <= result["pixel_auroc_value"] <= 1
    assert "anomalib_train_epoch_s" not in result
    # the table is printed too
    assert "train epoch (s)" in done.stdout and "AUPRO, test set (s)" in done.stdout


def test_synthetic_data_has_bottles_shapes() -> None:
    train, test = synthetic_data(32)
    assert train.shape == (209, 3, 32, 32) and train.dtype == torch.uint8
    assert test.images.shape == (83, 3, 32, 32) and test.masks.shape == (83, 32, 32)
    assert int(test.labels.sum()) == 63 and test.defect_types.count("good") == 20
    per_image = test.masks.flatten(1).any(1)
    assert torch.equal(per_image, test.labels.bool())  # good images have empty masks, defective ones a defect
    assert torch.equal(synthetic_data(32)[0], train)  # deterministic


def test_bench_data_root_needs_category(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(["bench", "--profile", "smoke", "--device", "cpu", "--data-root", str(tmp_path)])
    assert code == 2
    assert "--data-root and --category go together" in capsys.readouterr().err


def test_bench_on_a_real_layout(tmp_path: Path, one_thread: None) -> None:
    """--data-root/--category decode the real splits (here a tiny toy category)."""
    from dhkd.toy import generate_toy

    generate_toy(tmp_path, image_size=64, n_train=4, n_test_good=2, n_test_per_defect=1, categories=["nut"],
                 progress=False)
    result = run_bench(load_config("smoke", ["train.epochs=1"]), "cpu", tmp_path, "nut", progress=False)
    assert result["data"].endswith("nut") and result["n_train"] == 4
    assert "train_epoch_stage2_s" not in result  # one epoch: no masking stage
    assert all(result[key] > 0 for key in REQUIRED)


@pytest.mark.skipif(importlib.util.find_spec("anomalib") is None, reason="anomalib is not installed (the bench extra)")
def test_bench_compare_anomalib_writes_its_figures_and_ratios(one_thread: None) -> None:
    config = load_config("smoke", ["model.teacher.name=resnet18", "masking.enabled=false"])
    result = run_bench(config, "cpu", compare="anomalib", progress=False, synthetic_sizes=(12, 6, 2))
    for key in REQUIRED + ["anomalib_train_epoch_s", "anomalib_infer_img_per_s_b32", "train_epoch_ratio",
                           "infer_time_ratio_b32"]:
        assert result[key] > 0, key
    assert result["train_epoch_ratio"] == pytest.approx(result["train_epoch_s"] / result["anomalib_train_epoch_s"], rel=1e-3)
    table = format_table(result)
    assert "anomalib RD" in table and "x time" in table


def test_bench_compare_anomalib_rejects_a_teacher_it_has_no_decoder_for() -> None:
    pytest.importorskip("anomalib")
    from dhkd.errors import DhkdError

    with pytest.raises(DhkdError, match="no decoder"):
        run_bench(load_config("smoke", ["train.epochs=1"]), "cpu", compare="anomalib", progress=False,
                  synthetic_sizes=(4, 4, 2))
