"""benchmarks/: ``dhkd bench`` runs anywhere (synthetic data) and writes every promised figure;
the bench section of benchmarks/README.md is written from the JSON files; the profile tuner scores."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.bench import run_bench, synthetic_data
from benchmarks.report import MARKERS, format_table, readme_section
from benchmarks.report import main as report_main
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


@pytest.mark.slow
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
    assert result["command"] == f"dhkd bench --profile smoke --device cpu --json {out}"
    assert result["cpu_steal_pct"] is None or 0 <= result["cpu_steal_pct"] <= 100
    assert result["finished"].endswith("UTC")
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
    from dhkd.data.toy import generate_toy

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
    for key in ["train_page_faults_per_step", "anomalib_train_page_faults_per_step", "train_kernel_cpu_s",
                "anomalib_train_kernel_cpu_s"]:  # counted on the CPU, per side
        assert result[key] >= 0, key
    table = format_table(result)
    assert "anomalib RD" in table and "x time" in table


def test_bench_compare_anomalib_rejects_a_teacher_it_has_no_decoder_for() -> None:
    pytest.importorskip("anomalib")
    from dhkd.errors import DhkdError

    with pytest.raises(DhkdError, match="no decoder"):
        run_bench(load_config("smoke", ["train.epochs=1"]), "cpu", compare="anomalib", progress=False,
                  synthetic_sizes=(4, 4, 2))


def _compared_result() -> dict:
    """A bench result with anomalib's figures beside the kit's (the keys run_bench writes)."""
    return {"profile": "rd", "teacher": "wide_resnet50_2", "teacher_weights": "none", "bottleneck_width": 0.5,
            "image_size": 256, "batch_size": 16, "data": "synthetic", "n_train": 209, "n_test": 83, "device": "cpu",
            "device_name": "x86_64", "threads": 2, "compile": False, "load_1min_start": 2.0, "load_1min_end": 2.0,
            "torch": "2.14.1", "anomalib_version": "2.7.0", "command": "dhkd bench --profile rd", "finished": "today",
            "train_epoch_s": 70.0, "anomalib_train_epoch_s": 100.0, "infer_img_per_s_b32": 4.0,
            "anomalib_infer_img_per_s_b32": 2.0, "aupro_s": 0.15, "train_epoch_ratio": 0.7, "infer_time_ratio_b32": 0.5}


def _cells(text: str, first: str) -> list[str]:
    """The cells after the first one of the Markdown row that starts with ``first``."""
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first:
            return cells[1:]
    raise AssertionError(f"no row {first!r} in {text}")


def test_readme_section_is_written_from_the_json_between_the_markers(tmp_path: Path) -> None:
    result = tmp_path / "bench.json"
    result.write_text(json.dumps(_compared_result()))
    readme = tmp_path / "README.md"
    start, end = MARKERS
    readme.write_text(f"# kit\n\nbefore\n{start}\nold figures\n{end}\nafter\n")
    assert report_main([str(result), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "old figures" not in text and text.startswith("# kit\n\nbefore\n") and text.endswith(f"{end}\nafter\n")
    assert _cells(text, "train epoch (s)") == ["70.00", "100", "0.700x time"]  # kit / anomalib seconds
    assert _cells(text, "inference images/s, batch 32") == ["4.00", "2.00", "0.500x time"]  # a rate: the ratio of times
    assert _cells(text, "AUPRO, test set (s)") == ["0.150", "", ""]
    assert "`dhkd bench --profile rd` (finished today; torch 2.14.1, anomalib 2.7.0)" in text
    assert "bottleneck width 0.5 (RD4AD: 1.0)" in text


def test_readme_section_needs_its_markers_and_its_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = tmp_path / "bench.json"
    result.write_text(json.dumps(_compared_result()))
    readme = tmp_path / "README.md"
    readme.write_text("# kit\n")
    assert report_main([str(result), "--readme", str(readme)]) == 2
    assert MARKERS[0] in capsys.readouterr().err and readme.read_text() == "# kit\n"
    assert report_main([str(tmp_path / "missing.json"), "--readme", str(readme)]) == 2
    assert "make bench" in capsys.readouterr().err


def test_readme_section_lists_every_run_and_one_full_table_per_setting(tmp_path: Path) -> None:
    first, second, other = _compared_result(), _compared_result(), _compared_result()
    second.update(finished="tomorrow", train_epoch_s=80.0, train_epoch_ratio=0.8, cpu_steal_pct=40.0)
    other.update(finished="other", bottleneck_width=1.0)
    paths = []
    for name, result in [("a", first), ("b", second), ("c", other)]:
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(result))
    text = readme_section(paths)
    assert _cells(text, "today") == ["0.5", "`default`", "70.00", "100", "0.700", "0.500", "?", "?"]
    assert _cells(text, "tomorrow") == ["0.5", "`default`", "80.00", "100", "0.800", "0.500", "?", "40 %"]
    assert _cells(text, "other") == ["1", "`default`", "70.00", "100", "0.700", "0.500", "?", "?"]
    assert text.count("| figure ") == 2  # widths 0.5 and 1.0; the repeat run only in the summary
    assert "(finished tomorrow;" in text and "(finished today;" not in text  # the latest run's full table
    assert ("- `rd` (wide_resnet50_2, cpu, allocator `default`), bottleneck width 0.5: kit / anomalib epoch time over 2 runs: "
            "median 0.750, lowest 0.700, highest 0.800; at most 0.7 (the target) in 1 of 2.") in text
    assert ("- `rd` (wide_resnet50_2, cpu, allocator `default`), bottleneck width 1: kit / anomalib epoch time over 1 run: "
            "median 0.700") in text
    assert text.index("bottleneck width 1:") < text.index("bottleneck width 0.5:")  # RD4AD's first, as in the table


def test_runs_under_another_allocator_are_summarised_apart(tmp_path: Path) -> None:
    default, tuned = _compared_result(), _compared_result()
    tuned.update(finished="earlier", allocator="MALLOC_MMAP_MAX_=0", train_epoch_ratio=0.9)
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    for path, result in zip(paths, [default, tuned]):
        path.write_text(json.dumps(result))
    text = readme_section(paths)
    assert _cells(text, "earlier")[:5] == ["0.5", "`MALLOC_MMAP_MAX_=0`", "70.00", "100", "0.900"]
    assert "allocator `default`), bottleneck width 0.5: kit / anomalib epoch time over 1 run: median 0.700" in text
    assert "allocator `MALLOC_MMAP_MAX_=0`), bottleneck width 0.5: kit / anomalib epoch time over 1 run: median 0.900" in text
    assert text.count("| figure ") == 2 and "allocator MALLOC_MMAP_MAX_=0," in text
    assert text.index("allocator `default`)") < text.index("allocator `MALLOC_MMAP_MAX_=0`)")  # the default first


def test_allocator_setting_names_only_the_variables_that_are_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks.bench import ALLOCATOR_ENV, allocator_setting

    for name in ALLOCATOR_ENV:
        monkeypatch.delenv(name, raising=False)
    assert allocator_setting() == "default"
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "100000000000")
    monkeypatch.setenv("MALLOC_MMAP_MAX_", "0")
    monkeypatch.setenv("MALLOC_ARENA_MAX", "")
    assert allocator_setting() == "MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000"


def test_cpu_steal_is_the_stolen_share_of_the_ticks_between_readings() -> None:
    from benchmarks.bench import _cpu_times, _steal_percent

    assert _steal_percent((100, 1000), (150, 1200)) == 25.0
    assert _steal_percent(None, (150, 1200)) is None and _steal_percent((100, 1000), (100, 1000)) is None
    if Path("/proc/stat").exists():
        steal, total = _cpu_times()
        assert 0 <= steal <= total


def test_dhkd_bench_without_the_checkout_says_what_to_do(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """An installed package has no benchmarks/ beside it: one clear message, not an ImportError."""
    import dhkd.cli

    monkeypatch.setattr(dhkd.cli, "__file__", str(tmp_path / "site-packages" / "dhkd" / "cli.py"))
    assert cli_main(["bench", "--profile", "smoke", "--device", "cpu"]) == 2
    assert "not part of the installed package" in capsys.readouterr().err


def test_tune_profile_scores_at_the_chosen_epochs_and_tabulates(tmp_path: Path, one_thread: None) -> None:
    """The tool behind the offline profile's choices, on the smoke profile: two variants, one table."""
    from benchmarks import tune_profile
    from dhkd.data.toy import generate_toy

    generate_toy(tmp_path / "data", image_size=64, n_train=4, n_test_good=2, n_test_per_defect=1, categories=["nut"],
                 progress=False)
    out = tmp_path / "tuning"
    for name, sets in (("constant", []), ("cosine", ["--set", "train.lr_schedule=cosine"])):
        assert tune_profile.main(["--data-root", str(tmp_path / "data"), "--category", "nut", "--profile", "smoke",
                                  "--name", name, "--eval-at", "1,2", "--device", "cpu", "--out", str(out), *sets]) == 0
    records = [json.loads(line) for line in (out / "tuning.jsonl").read_text().splitlines()]
    assert [[row["epoch"] for row in r["scores"]] for r in records] == [[1, 2], [1, 2]]
    assert all(0 <= row["aupro"] <= 100 for r in records for row in r["scores"])
    lines = tune_profile.table(out).splitlines()
    assert len(lines) == 4 and lines[0].startswith("| variant") and "train.lr_schedule=cosine" in lines[3]


def test_per_scale_sums_to_the_evaluations_map(toy_root, tmp_path) -> None:
    """benchmarks/per_scale.py: its all-scales row is the kit's own map, so its metrics are evaluate's;
    it names the strides of the run's teacher stages and writes nothing into the run."""
    from benchmarks import per_scale
    from dhkd.config import load_config
    from dhkd.run.evaluate import evaluate_run
    from dhkd.run.folder import CURVE_NAME
    from dhkd.run.train import train

    config = load_config("smoke", ["train.epochs=2", "data.image_size=[64,96]"])
    run = train(config, toy_root, "nut", tmp_path / "run", device="cpu", progress=False)
    result = evaluate_run(run, device="cpu", progress=False, diagnostics=False)
    frame = per_scale.table(run, str(toy_root))
    assert list(frame.index) == ["stride 4", "stride 8", "stride 16", "stride 4 + 8 + 16 (the kit's map)",
                                 "stride 8 + 16 (the finest left out)"]
    kit = "stride 4 + 8 + 16 (the kit's map)"
    for column, metric in (("image AUROC", "image_auroc"), ("pixel AUROC", "pixel_auroc"), ("AUPRO", "aupro")):
        assert frame.loc[kit, column] == round(100 * result[metric], 1), column
    assert not (run / CURVE_NAME).exists()