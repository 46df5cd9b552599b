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

from conftest import TOY_CATEGORY as CATEGORY, copy_run, lock_holder, train_args
from dhkd import cli
from dhkd.run.checkpoint import load_checkpoint
from dhkd.errors import DhkdError

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
def test_bad_input_gives_one_clear_message(name, prepare, fragment, toy_root, toy_run, tmp_path, capsys) -> None:
    args = prepare(toy_root, toy_run, tmp_path)
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


@pytest.mark.slow
def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(toy_root, tmp_path, monkeypatch) -> None:
    from dhkd.run import train as train_module

    out = tmp_path / "run"
    one_stage = ("--set", "masking.enabled=false")  # so that one epoch is a valid run
    assert cli.main(train_args(toy_root, out, "--epochs", "1", *one_stage)) == 0
    good = load_checkpoint(out / "checkpoint.pt")
    real_loss = train_module.distillation_loss
    monkeypatch.setattr(train_module, "distillation_loss", lambda *a, **k: real_loss(*a, **k) * float("nan"))
    with pytest.raises(DhkdError, match=r"became nan.*last good checkpoint \(epoch 1\)"):
        cli.main(["--debug", *train_args(toy_root, out, "--epochs", "2", "--resume", *one_stage)])
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
@pytest.mark.slow
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


def test_kill_during_checkpoint_write_leaves_the_previous_file(toy_run, tmp_path, monkeypatch) -> None:
    from dhkd.run import checkpoint as checkpoint_module

    target = copy_run(toy_run, tmp_path)
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
    from dhkd.run.train import learning_rate

    config = load_config("smoke", ["train.epochs=4", "train.lr=0.004", "train.lr_schedule=cosine"])
    assert learning_rate(config, 0, 0, 10) == pytest.approx(0.004)
    assert learning_rate(config, 2, 0, 10) == pytest.approx(0.002)  # half way
    assert learning_rate(config, 3, 9, 10) == pytest.approx(0.004 * 0.5 * (1 + math.cos(math.pi * 39 / 40)))
    steps = [learning_rate(config, e, s, 10) for e in range(4) for s in range(10)]
    assert all(a > b > 0 for a, b in zip(steps, steps[1:]))
    constant = load_config("smoke", ["train.lr=0.004", "train.lr_schedule=constant"])
    assert {learning_rate(constant, e, s, 10) for e in range(2) for s in range(10)} == {0.004}


def test_schedule_plot_shows_every_step_by_stage() -> None:
    from dhkd.notebook import plots
    from dhkd.config import load_config

    config = load_config("smoke", ["train.epochs=4", "train.lr_schedule=cosine"])  # smoke: half the epochs in stage 2
    lines = plots.schedule(config, batches_per_epoch=3).axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["stage 1: clean inputs", "stage 2: masked inputs"]
    assert [len(line.get_xdata()) for line in lines] == [6, 6]
    assert lines[0].get_ydata()[0] == pytest.approx(config.train.lr) and lines[1].get_ydata()[-1] < 0.05 * config.train.lr


# ----------------------------------------------------------------------------- unfinished and foreign runs


def test_evaluating_an_unfinished_run_says_so_and_records_the_epochs(toy_root, tmp_path, monkeypatch, capsys) -> None:
    from dhkd.run import train as train_module

    real_end = train_module.Trainer._end_epoch

    def killed_after_the_first_epoch(self, position, stage, batches):
        real_end(self, position, stage, batches)
        raise KeyboardInterrupt  # the process dies after epoch 1 of 2: no graceful stop

    monkeypatch.setattr(train_module.Trainer, "_end_epoch", killed_after_the_first_epoch)
    out = tmp_path / "run"
    assert cli.main(train_args(toy_root, out)) == cli.EXIT_INTERRUPTED
    monkeypatch.undo()
    assert not (out / ".dhkd.lock").exists(), "the lock goes with the process"
    assert cli.main(["evaluate", "--run", str(out), "--json", str(tmp_path / "m.json"), "--quiet"]) == 0
    err = capsys.readouterr().err
    print(err)
    assert "did not finish its training: 1 of 2 epochs" in err and "--resume" in err
    result = json.loads((tmp_path / "m.json").read_text())
    assert (result["epochs_done"], result["epochs"], result["finished"]) == (1, 2, False)


def test_evaluating_a_finished_run_records_it_finished(toy_run, tmp_path, capsys) -> None:
    target = copy_run(toy_run, tmp_path)
    assert cli.main(["evaluate", "--run", str(target), "--json", str(tmp_path / "m.json"), "--quiet"]) == 0
    assert "warning" not in capsys.readouterr().err
    result = json.loads((tmp_path / "m.json").read_text())
    assert (result["epochs_done"], result["epochs"], result["finished"]) == (2, 2, True)


def test_evaluating_a_run_whose_data_moved_names_what_is_missing(toy_root, toy_run, tmp_path, capsys) -> None:
    target = copy_run(toy_run, tmp_path)
    info = json.loads((target / "run.json").read_text())
    info["data_root"] = str(tmp_path / "old disk" / "toy")  # trained on data that has since moved
    (target / "run.json").write_text(json.dumps(info))
    assert cli.main(["evaluate", "--run", str(target), "--json", str(tmp_path / "m.json")]) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    print(err)
    assert "gone or moved" in err and str(tmp_path / "old disk" / "toy") in err and "--data-root" in err
    assert cli.main(["evaluate", "--run", str(target), "--data-root", str(toy_root), "--json", str(tmp_path / "m.json"),
                     "--quiet"]) == 0
    (target / "run.json").write_text("{\"categ")  # damaged
    assert cli.main(["evaluate", "--run", str(target), "--json", str(tmp_path / "m.json")]) == cli.EXIT_ERROR
    assert "is damaged" in capsys.readouterr().err


# ----------------------------------------------------------------------------- one writer per folder


@pytest.mark.slow
def test_a_second_training_into_the_same_folder_refuses_naming_the_first(toy_root, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    first = run_cli(*train_args(toy_root, out, "--epochs", "4"))
    try:
        deadline = time.time() + 120
        while not (out / ".dhkd.lock").exists():
            assert first.poll() is None and time.time() < deadline, first.communicate()
            time.sleep(0.05)
        assert cli.main(train_args(toy_root, out, "--resume")) == cli.EXIT_ERROR
        err = capsys.readouterr().err
        print(err)
        assert f"in use by process {first.pid}" in err and f"train --data-root {toy_root}" in err
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=120)
    assert not (out / ".dhkd.lock").exists()


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path) -> None:
    from dhkd.run.lock import FolderBusy, acquire, release

    folder = tmp_path / "run"
    process = lock_holder(folder)
    with pytest.raises(FolderBusy, match=f"process {process.pid}"):
        acquire(folder)
    process.kill()
    process.wait()  # crashed: the lock file stays behind, the kernel's lock does not
    assert (folder / ".dhkd.lock").exists()
    path = acquire(folder)
    assert json.loads(path.read_text())["pid"] == os.getpid()
    with pytest.raises(FolderBusy, match="already holds"):
        acquire(folder)
    release(path)
    assert not path.exists()
    (folder / ".dhkd.lock").write_text("garbage")  # a file nobody holds a lock on: free
    release(acquire(folder))


def test_a_second_make_reproduce_on_the_same_results_refuses(toy_root, tmp_path, capsys) -> None:
    results = tmp_path / "results"
    target = results / toy_root.name / "smoke"
    target.mkdir(parents=True)
    process = lock_holder(target, "dhkd reproduce ...")
    try:
        code = cli.main(["reproduce", "--data", str(toy_root), "--categories", CATEGORY, "--profile", "smoke", "--out",
                               str(results), "--device", "cpu"])
        err = capsys.readouterr().err
        print(err)
        assert code == 1 and f"results folder {target} is in use by process {process.pid}" in err
    finally:
        process.kill()
        process.wait()


# ----------------------------------------------------------------------------- make reproduce checks first


REPRODUCE_INPUTS = [  # (what, extra arguments, fragment of the message)
    ("DEVICE=cuda without a GPU", ["--device", "cuda"], "DEVICE=cuda: it asked for a GPU"),
    ("DEVICE misspelt", ["--device", "gpu"], "DEVICE=gpu: unknown device"),
    ("DEVICES not numbers", ["--devices", "0,a"], "DEVICES must list GPU numbers"),
    ("DEVICES twice", ["--devices", "0,0"], "names a GPU twice"),
    ("DEVICES beyond the GPUs", ["--devices", "0,1", "--device", "auto"], "CUDA GPU(s)"),
    ("CATEGORIES misspelt", ["--categories", "nutt"], "did you mean 'nut'"),
    ("EPOCHS not a number", ["--epochs", "ten"], "EPOCHS must be a positive whole number"),
    ("EPOCHS zero", ["--epochs", "0"], "EPOCHS must be a positive whole number"),
    ("EPOCHS leaving stage 2 empty", ["--epochs", "1"], "leaves stage 2 (masking) empty"),
    ("PROFILE misspelt", ["--profile", "smok"], "did you mean 'smoke'"),
    ("PROFILE file with a bad value", ["--profile", "BAD_PROFILE"], "train.lr=-1.0 is out of range"),
    ("DATA missing", ["--data", "MISSING"], "does not exist"),
    ("RESULTS not a folder", ["--out", "A_FILE"], "cannot write the results"),
    ("ablation, EPOCHS leaving its masking variant one stage", ["--ablation", "--profile", "rd", "--epochs", "1"],
     "variant '+ masking stage' cannot run"),
]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the device rows need a machine without a GPU")
@pytest.mark.parametrize("name,extra,fragment", REPRODUCE_INPUTS, ids=[row[0] for row in REPRODUCE_INPUTS])
def test_make_reproduce_checks_every_input_before_the_first_notebook(name, extra, fragment, toy_root, tmp_path,
                                                                      monkeypatch, capsys) -> None:
    from dhkd.kit import reproduce
    from dhkd.run import train as train_module

    def must_not_run(*args, **kwargs):
        raise AssertionError("a notebook or a training started before the inputs were checked")

    monkeypatch.setattr(reproduce, "execute", must_not_run)
    monkeypatch.setattr(train_module, "train", must_not_run)
    (tmp_path / "bad.yaml").write_text("inherits: smoke\ntrain: {lr: -1}\n")
    (tmp_path / "a file").write_text("")
    swap = {"BAD_PROFILE": str(tmp_path / "bad.yaml"), "MISSING": str(tmp_path / "missing"), "A_FILE": str(tmp_path / "a file")}
    args = {"--data": str(toy_root), "--categories": CATEGORY, "--profile": "smoke", "--epochs": "2", "--device": "cpu",
            "--out": str(tmp_path / "results")}
    flags = [a for a in extra if a == "--ablation"]
    pairs = [a for a in extra if a != "--ablation"]
    args.update({key: swap.get(value, value) for key, value in zip(pairs[::2], pairs[1::2])})
    code = cli.main(["reproduce", *[part for pair in args.items() for part in pair], *flags])
    err = capsys.readouterr().err
    print(f"{name}: {err.strip()}")
    assert code == 1 and "Traceback" not in err and "fix:" in err
    assert fragment in err


# ----------------------------------------------------------------------------- full disks, unwritable folders


def failing_fsync(code: int):
    def fsync(fd: int) -> None:
        raise OSError(code, os.strerror(code))

    return fsync


def test_full_disk_during_a_checkpoint_keeps_the_previous_one(toy_run, tmp_path, monkeypatch) -> None:
    import errno

    from dhkd.run import checkpoint as checkpoint_module
    from dhkd import io

    target = copy_run(toy_run, tmp_path)
    before = (target / "checkpoint.pt").read_bytes()
    state = torch.load(target / "checkpoint.pt", weights_only=True)
    monkeypatch.setattr(io.os, "fsync", failing_fsync(errno.ENOSPC))
    with pytest.raises(DhkdError) as caught:
        checkpoint_module.save_checkpoint(target / "checkpoint.pt", state)
    message = str(caught.value)
    print(message)
    assert f"no space left on the device to write {target / 'checkpoint.pt'}" in message
    assert "previous file is unchanged" in message and "it needs about" in message and "are free there" in message
    assert (target / "checkpoint.pt").read_bytes() == before
    assert [p.name for p in target.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("code,fragment", [("EACCES", "permission denied"), ("EROFS", "the file system is read-only")])
def test_unwritable_places_name_the_path(toy_run, tmp_path, monkeypatch, code, fragment) -> None:
    import errno

    from dhkd import io
    from dhkd.run.evaluate import load_predictions, save_predictions

    target = copy_run(toy_run, tmp_path)
    assert cli.main(["evaluate", "--run", str(target), "--json", str(tmp_path / "m.json"), "--quiet"]) == 0
    before = (target / "predictions.npz").read_bytes()
    monkeypatch.setattr(io.os, "fsync", failing_fsync(getattr(errno, code)))
    with pytest.raises(DhkdError, match=f"cannot write {target / 'predictions.npz'}: {fragment}"):
        save_predictions(target / "predictions.npz", load_predictions(target))
    assert (target / "predictions.npz").read_bytes() == before


def test_full_disk_during_table_writes_and_training_is_one_message(toy_root, tmp_path, monkeypatch, capsys) -> None:
    import errno

    from dhkd import io
    from dhkd.kit import tables

    results = tmp_path / "results"
    results.mkdir()
    (results / "nut.json").write_text(json.dumps({
        "category": "nut", "image_auroc": 0.9, "pixel_auroc": 0.9, "aupro": 0.8, "pro_rd4ad": 0.8, "profile": "smoke",
        "teacher": "efficientnet_lite0", "device": "cpu", "epochs": 2, "data_root": "/data", "finished_at": "today"}))
    tables.write_tables(results)
    before = (results / "tables" / "image_auroc.csv").read_text()
    (results / "nut.json").write_text((results / "nut.json").read_text().replace("0.9,", "0.95,"))
    monkeypatch.setattr(io.os, "fsync", failing_fsync(errno.ENOSPC))
    with pytest.raises(DhkdError, match=r"no space left on the device to write .*tables/image_auroc.csv .*needs about"):
        tables.write_tables(results)
    assert (results / "tables" / "image_auroc.csv").read_text() == before
    assert cli.main(train_args(toy_root, tmp_path / "run")) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("dhkd: no space left on the device to write") and "Traceback" not in err


def test_a_read_only_run_folder_is_named(toy_run, tmp_path, capsys) -> None:
    target = copy_run(toy_run, tmp_path)
    os.chmod(target, 0o555)
    try:
        if os.access(target, os.W_OK):
            pytest.skip("running as root: a read-only folder is still writable (the EACCES/EROFS cases cover it)")
        assert cli.main(["evaluate", "--run", str(target), "--json", str(tmp_path / "m.json"), "--quiet"]) == cli.EXIT_ERROR
        assert f"cannot write {target}" in capsys.readouterr().err
    finally:
        os.chmod(target, 0o755)


def test_a_full_disk_during_torch_save_itself_is_one_message(toy_run, tmp_path, monkeypatch, capsys) -> None:
    """The write fails for real: the temporary file is /dev/full, where every write is ENOSPC, and
    torch.save's C++ writer reports it as a RuntimeError (unexpected pos), not an OSError."""
    import shutil
    import tempfile

    from dhkd import io
    from dhkd.run import checkpoint as checkpoint_module

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    target = copy_run(toy_run, tmp_path)
    before = (target / "checkpoint.pt").read_bytes()
    state = torch.load(target / "checkpoint.pt", weights_only=True)
    real_mkstemp, real_chmod = tempfile.mkstemp, os.chmod

    def mkstemp_on_a_full_disk(**kwargs):
        fd, name = real_mkstemp(**kwargs)
        os.close(fd)
        os.unlink(name)
        os.symlink("/dev/full", name)
        return os.open(os.devnull, os.O_RDONLY), name

    def chmod(path, mode, **kwargs):
        assert os.path.realpath(path) != "/dev/full", "never change /dev/full"
        return real_chmod(path, mode, **kwargs)

    monkeypatch.setattr(io.tempfile, "mkstemp", mkstemp_on_a_full_disk)
    monkeypatch.setattr(io.os, "chmod", chmod)
    usage = shutil.disk_usage(target)
    monkeypatch.setattr(io.shutil, "disk_usage", lambda folder: usage._replace(free=0))  # the disk as it is when full
    with pytest.raises(DhkdError) as caught:
        checkpoint_module.save_checkpoint(target / "checkpoint.pt", state)
    message = str(caught.value)
    assert f"no space left on the device to write {target / 'checkpoint.pt'}" in message and "it needs about" in message
    assert (target / "checkpoint.pt").read_bytes() == before
    assert [p.name for p in target.iterdir() if p.name.endswith(".tmp")] == []
    monkeypatch.setattr(io.shutil, "disk_usage", lambda folder: usage)  # space left: a short write named as such
    with pytest.raises(DhkdError, match=r"stopped partway \(.*unexpected pos.*\).*a full disk or quota"):
        checkpoint_module.save_checkpoint(target / "checkpoint.pt", state)
    with pytest.raises(RuntimeError, match="a bug"):  # any other RuntimeError is not dressed up as a full disk
        io.atomic_write(target / "x.bin", lambda tmp: (_ for _ in ()).throw(RuntimeError("a bug")))


@pytest.mark.parametrize("damage, fragment", [
    ("no config", "lacks config: another version of the kit wrote it"),
    ("config not a tree", "lacks config"),
    ("a student tensor missing", "do not fit the model its config describes: Error(s) in loading state_dict"),
    ("an extra student tensor", "do not fit the model its config describes"),
])
def test_a_checkpoint_missing_pieces_is_one_message(damage, fragment, toy_run, toy_root, tmp_path, capsys) -> None:
    from dhkd.run.checkpoint import save_checkpoint

    target = copy_run(toy_run, tmp_path)
    state = torch.load(target / "checkpoint.pt", weights_only=True)
    state.pop("format")
    if damage == "no config":
        state.pop("config")
    elif damage == "config not a tree":
        state["config"] = "smoke"
    elif damage == "a student tensor missing":
        state["student"].pop(next(iter(state["student"])))
    else:
        state["student"]["extra.weight"] = torch.zeros(1)
    save_checkpoint(target / "checkpoint.pt", state)
    for command in (["evaluate", "--run", str(target), "--json", str(tmp_path / "m.json"), "--quiet"],
                    ["predict", "--run", str(target), str(toy_root / CATEGORY / "test" / "good"), "--out", str(tmp_path / "p"), "--quiet",
                     "--threshold", "1"]):
        assert cli.main(command) == cli.EXIT_ERROR
        err = capsys.readouterr().err
        assert err.startswith("dhkd: ") and fragment in err and "Traceback" not in err and "fix: " in err, err
    assert not (tmp_path / "p").exists()
