"""Bad input and interruption, through the real CLI: one clear message, never a traceback.

``BAD_RUNS`` is the table of bad inputs tried at the command line (the data-set problems
themselves are tabled in ``test_data.py``). Each row: a name, a function that prepares the
case and returns the CLI arguments, and a fragment the message must contain.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
import torch

from dhkd import cli
from dhkd.checkpoint import load_checkpoint
from dhkd.errors import DhkdError
from dhkd.toy import generate_toy

CATEGORY = "nut"


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("toy")
    generate_toy(root, image_size=64, n_train=8, n_test_good=2, n_test_per_defect=2, categories=[CATEGORY],
                 progress=False)
    return root


@pytest.fixture(scope="module")
def trained_run(toy_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "smoke"
    assert cli.main(["train", "--data-root", str(toy_root), "--category", CATEGORY, "--profile", "smoke",
                     "--out", str(run), "--epochs", "1", "--quiet"]) == 0
    return run


def train_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data-root", str(root), "--category", CATEGORY, "--profile", "smoke", "--out", str(out),
            "--quiet", *extra]


def copy_run(run: Path, tmp: Path) -> Path:
    target = tmp / "run copy"
    shutil.copytree(run, target)
    return target


def truncated_checkpoint(root: Path, run: Path, tmp: Path) -> list[str]:
    target = copy_run(run, tmp)
    data = (target / "checkpoint.pt").read_bytes()
    (target / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    return ["evaluate", "--run", str(target), "--json", str(tmp / "m.json")]


class Payload:
    """A class instance: pickling it stores a reference to code."""

    def __reduce__(self):  # noqa: D105
        return (print, ("this should never run",))


def pickled_code_checkpoint(root: Path, run: Path, tmp: Path) -> list[str]:
    target = copy_run(run, tmp)
    state = torch.load(target / "checkpoint.pt", weights_only=True)
    state["extra"] = Payload()
    torch.save(state, target / "checkpoint.pt")
    return ["evaluate", "--run", str(target), "--json", str(tmp / "m.json")]


def unwritable_output(root: Path, run: Path, tmp: Path) -> list[str]:
    blocker = tmp / "a file"
    blocker.write_text("not a folder")
    return train_args(root, blocker / "run")


BAD_RUNS: list[tuple[str, Callable[[Path, Path, Path], list[str]], str]] = [
    ("data root missing", lambda root, run, tmp: train_args(tmp / "nowhere", tmp / "out"), "dhkd data toy"),
    ("category misspelt", lambda root, run, tmp: train_args(root, tmp / "o")[:4] + ["nutt"] + train_args(root, tmp / "o")[5:],
     "did you mean 'nut'"),
    ("unknown profile", lambda root, run, tmp: train_args(root, tmp / "o")[:6] + ["papr"] + train_args(root, tmp / "o")[7:],
     "did you mean 'paper'"),
    ("unknown --set key", lambda root, run, tmp: train_args(root, tmp / "o", "--set", "train.epoch=3"),
     "did you mean 'train.epochs'"),
    ("--set value of the wrong type", lambda root, run, tmp: train_args(root, tmp / "o", "--set", "train.epochs=many"),
     "must be of type int"),
    ("--set without '='", lambda root, run, tmp: train_args(root, tmp / "o", "--set", "train.epochs"),
     "section.key=value"),
    ("unknown learning-rate schedule", lambda root, run, tmp: train_args(root, tmp / "o", "--set", "train.lr_schedule=step"),
     "train.lr_schedule"),
    ("--device cuda without a GPU", lambda root, run, tmp: train_args(root, tmp / "o", "--device", "cuda"),
     "sees none"),
    ("checkpoint from another teacher",
     lambda root, run, tmp: train_args(root, copy_run(run, tmp), "--resume", "--set", "model.teacher.name=resnet18"),
     "model.teacher.name"),
    ("checkpoint from another config",
     lambda root, run, tmp: train_args(root, copy_run(run, tmp), "--resume", "--set", "model.memory.enabled=false"),
     "model.memory.enabled"),
    ("training into a finished run without --resume", lambda root, run, tmp: train_args(root, copy_run(run, tmp)),
     "--resume"),
    ("truncated checkpoint", truncated_checkpoint, "truncated or corrupt"),
    ("checkpoint carrying pickled code", pickled_code_checkpoint, "refused"),
    ("output folder that cannot be written", unwritable_output, "cannot write"),
    ("evaluate a folder that is not a run", lambda root, run, tmp: ["evaluate", "--run", str(tmp), "--json", str(tmp / "m.json")],
     "not a dhkd run folder"),
]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the --device cuda case needs a machine without a GPU")
@pytest.mark.parametrize("name,prepare,fragment", BAD_RUNS, ids=[row[0] for row in BAD_RUNS])
def test_bad_input_gives_one_clear_message(name, prepare, fragment, toy_root, trained_run, tmp_path, capsys) -> None:
    args = prepare(toy_root, trained_run, tmp_path)
    code = cli.main(args)
    err = capsys.readouterr().err
    print(f"{name}: {err.strip()}")  # the table of messages, shown with pytest -s
    assert code == cli.EXIT_ERROR
    assert err.startswith("dhkd: ")
    assert "Traceback" not in err
    assert fragment in err


def test_debug_flag_shows_the_traceback(tmp_path) -> None:
    with pytest.raises(DhkdError):
        cli.main(["--debug", *train_args(tmp_path / "nowhere", tmp_path / "out")])


def test_bad_category_fails_before_training_starts(toy_root, tmp_path) -> None:
    broken = tmp_path / "data"
    shutil.copytree(toy_root, broken)
    mask = next((broken / CATEGORY / "ground_truth").rglob("*_mask.png"))
    mask.unlink()  # a defective *test* image loses its mask
    started = time.perf_counter()
    assert cli.main(train_args(broken, tmp_path / "out")) == cli.EXIT_ERROR
    assert time.perf_counter() - started < 10
    assert not (tmp_path / "out" / "checkpoint.pt").exists()


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(toy_root, tmp_path, monkeypatch) -> None:
    from dhkd import train as train_module

    out = tmp_path / "run"
    assert cli.main(train_args(toy_root, out, "--epochs", "1")) == 0
    good = load_checkpoint(out / "checkpoint.pt")
    real_loss = train_module.distillation_loss
    monkeypatch.setattr(train_module, "distillation_loss", lambda *a, **k: real_loss(*a, **k) * float("nan"))
    with pytest.raises(DhkdError, match=r"became nan.*last good checkpoint \(epoch 1\)"):
        cli.main(["--debug", *train_args(toy_root, out, "--epochs", "2", "--resume")])
    kept = load_checkpoint(out / "checkpoint.pt")
    assert kept["epoch"] == 1
    assert all(torch.equal(kept["student"][k], good["student"][k]) for k in good["student"])
    assert json.loads((out / "run.json").read_text())["status"] == "diverged"


def run_cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "dhkd.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.parametrize("signum, schedule", [(signal.SIGINT, "constant"), (signal.SIGTERM, "cosine")],
                         ids=["SIGINT", "SIGTERM-cosine-lr"])
def test_interrupted_then_resumed_run_equals_an_uninterrupted_one(toy_root, tmp_path, signum, schedule) -> None:
    epochs = ["--epochs", "4", "--set", "train.batch_size=2", "--set", f"train.lr_schedule={schedule}"]
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert cli.main(train_args(toy_root, straight, *epochs)) == 0

    process = run_cli(*train_args(toy_root, stopped, *epochs))
    deadline = time.time() + 120
    while not (stopped / "history.csv").exists():  # first epoch done: stop it mid-run
        assert process.poll() is None and time.time() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    assert process.returncode == cli.EXIT_INTERRUPTED, err
    assert "--resume" in err and "Traceback" not in err
    assert json.loads((stopped / "run.json").read_text())["status"] == "interrupted"

    assert cli.main(train_args(toy_root, stopped, *epochs, "--resume")) == 0
    a, b = load_checkpoint(straight / "checkpoint.pt"), load_checkpoint(stopped / "checkpoint.pt")
    assert a["epoch"] == b["epoch"] == 4
    for key in a["student"]:
        assert torch.allclose(a["student"][key].float(), b["student"][key].float(), atol=1e-6), key
    metrics = []
    for run in (straight, stopped):
        assert cli.main(["evaluate", "--run", str(run), "--json", str(run / "m.json"), "--quiet"]) == 0
        metrics.append(json.loads((run / "m.json").read_text()))
    print({k: (metrics[0][k], metrics[1][k]) for k in ("image_auroc", "pixel_auroc", "aupro", "pro_rd4ad")})
    for key in ("image_auroc", "pixel_auroc", "aupro", "pro_rd4ad"):
        assert metrics[0][key] == pytest.approx(metrics[1][key], abs=1e-6)


def test_kill_during_checkpoint_write_leaves_the_previous_file(trained_run, tmp_path, monkeypatch) -> None:
    from dhkd import checkpoint as checkpoint_module

    target = copy_run(trained_run, tmp_path)
    before = (target / "checkpoint.pt").read_bytes()

    def dying_save(state, path):
        Path(path).write_bytes(b"half a checkpoint")
        raise KeyboardInterrupt  # the process is killed mid-write

    monkeypatch.setattr(checkpoint_module.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        checkpoint_module.save_checkpoint(target / "checkpoint.pt", {"student": {}})
    assert (target / "checkpoint.pt").read_bytes() == before
    assert [p.name for p in target.iterdir() if p.name.endswith(".tmp")] == []


def test_cosine_learning_rate_falls_from_lr_to_zero_over_the_run() -> None:
    from dhkd.config import load_config
    from dhkd.train import learning_rate

    config = load_config("smoke", ["train.epochs=4", "train.lr=0.004", "train.lr_schedule=cosine"])
    assert learning_rate(config, 0, 0, 10) == pytest.approx(0.004)
    assert learning_rate(config, 2, 0, 10) == pytest.approx(0.002)  # half way
    assert learning_rate(config, 3, 9, 10) == pytest.approx(0.004 * 0.5 * (1 + math.cos(math.pi * 39 / 40)))
    steps = [learning_rate(config, e, s, 10) for e in range(4) for s in range(10)]
    assert all(a > b > 0 for a, b in zip(steps, steps[1:]))
    constant = load_config("smoke", ["train.lr=0.004", "train.lr_schedule=constant"])
    assert {learning_rate(constant, e, s, 10) for e in range(2) for s in range(10)} == {0.004}


def test_schedule_plot_shows_every_step_by_stage() -> None:
    from dhkd import plots
    from dhkd.config import load_config

    config = load_config("smoke", ["train.epochs=4", "train.lr_schedule=cosine"])  # smoke: half the epochs in stage 2
    lines = plots.schedule(config, batches_per_epoch=3).axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["stage 1: clean inputs", "stage 2: masked inputs"]
    assert [len(line.get_xdata()) for line in lines] == [6, 6]
    assert lines[0].get_ydata()[0] == pytest.approx(config.train.lr) and lines[1].get_ydata()[-1] < 0.05 * config.train.lr
