"""Nothing lost, nothing written outside its folder, data sets larger than memory (issue 24).

Each test pins one finding: the writer stays inside the folder it was given, the kit deletes
nothing it cannot show it made, the run lock has no take-over race, a foreign run is checked
before a model is built, and a training set too large for memory is streamed or refused.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TOY_CATEGORY as CATEGORY, lock_holder, train_args
from dhkd import cli
from dhkd.errors import DhkdError


def tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# ----------------------------------------------------------------------------- 1. never outside its folder


def test_predict_names_are_unique_plain_file_names() -> None:
    from dhkd.run.predict import output_names

    names = output_names([Path("/data/a/x.png"), Path("/data/a/x.jpg"), Path("/data/b/x.png"), Path("/data/b/X.PNG"),
                          Path("../.hidden.png")])
    assert len({n.lower() for n in names}) == len(names), names
    for name in names:
        assert "/" not in name and not name.startswith(".") and name.endswith(".png"), name
    assert output_names([Path("/data/a/x.png"), Path("/data/a/x.jpg")]) == ["x_png.png", "x_jpg.png"]


def test_predict_writes_only_under_out_and_overwrites_nothing_it_scored(toy_run, toy_root, tmp_path) -> None:
    from dhkd.run.predict import predict

    images = tmp_path / "in"
    images.mkdir()
    source = next((toy_root / CATEGORY / "test" / "good").glob("*.png"))
    Image.open(source).save(images / "x.png")
    Image.open(source).convert("RGB").save(images / "x.jpg")
    out = tmp_path / "out"
    table = predict(toy_run, [images], out=out, threshold=1.0, device="cpu", progress=False)
    assert len(table) == 2
    assert tree(out) == {".dhkd-predict", "maps", "overlays", "masks", "scores.csv", *(f"{f}/x_{s}.png" for f in ("maps", "overlays", "masks")
                                                                       for s in ("png", "jpg"))}
    assert not Path("/__data__a__x.png").exists()


def test_a_profile_name_that_is_a_path_is_refused(tmp_path) -> None:
    from dhkd.config import load_config

    for bad in ("/some/where", "..", "a/b", "", ".hidden"):
        profile = tmp_path / "p.yaml"
        profile.write_text(f"inherits: smoke\nprofile: {json.dumps(bad)}\n")
        with pytest.raises(DhkdError, match="not a plain name"):
            load_config(str(profile))
    with pytest.raises(DhkdError, match="not a plain name"):
        load_config("smoke", ["profile=../../x"])


@pytest.mark.parametrize("tool, name", [("tune_profile", ".."), ("tune_profile", "/tmp/elsewhere"),
                                        ("tune_profile", "a/../../b"), ("screen_additions", "..")])
@pytest.mark.slow
def test_benchmark_names_are_plain(tool, name, toy_root, tmp_path) -> None:
    keep = tmp_path / "keep.txt"
    keep.write_text("mine")
    result = subprocess.run([sys.executable, "-m", f"benchmarks.{tool}", "--data-root", str(toy_root), "--category",
                             CATEGORY, "--profile", "smoke", "--out", str(tmp_path / "out"), "--name", name],
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert result.returncode != 0
    assert "plain name" in result.stderr or "--name is required" in result.stderr, result.stderr[-2000:]
    assert keep.read_text() == "mine"  # with --name .. the old tools removed tmp_path itself


def test_a_masks_template_may_not_leave_the_root(tmp_path) -> None:
    from dhkd.data.dataset_file import from_dict

    with pytest.raises(DhkdError, match="masks template .* leaves the root"):
        from_dict({"name": "x", "root": ".", "normal": "good/*.png", "abnormal": "bad/*.png",
                   "masks": "../outside/{stem}.png"}, tmp_path)
    with pytest.raises(DhkdError, match="masks template .* leaves the root"):
        from_dict({"name": "x", "root": ".", "normal": "good/*.png", "abnormal": "bad/*.png",
                   "masks": "/etc/{stem}.png"}, tmp_path)


def test_inside_refuses_a_path_that_leaves_its_folder(tmp_path) -> None:
    from dhkd.io import inside

    assert inside(tmp_path / "a" / "b.png", tmp_path) == tmp_path / "a" / "b.png"
    with pytest.raises(DhkdError, match="outside the folder"):
        inside(tmp_path / ".." / "b.png", tmp_path)
    (tmp_path / "link").symlink_to("/tmp")
    with pytest.raises(DhkdError, match="outside the folder"):
        inside(tmp_path / "link" / "b.png", tmp_path)


# ----------------------------------------------------------------------------- 2. never deletes what it cannot prove it made


def test_a_run_of_another_config_is_moved_aside_not_deleted(toy_run, toy_root, tmp_path, capsys) -> None:
    import shutil

    from dhkd.config import load_config
    from dhkd.run.folder import prepare_run_dir

    run = tmp_path / "run"
    shutil.copytree(toy_run, run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    config = load_config("smoke", ["train.epochs=4"])
    assert prepare_run_dir(run, config) is False
    assert "moved an earlier run of another configuration aside" in capsys.readouterr().out
    replaced = [p for p in run.iterdir() if p.name.startswith(".replaced-")]
    assert len(replaced) == 1
    assert {p.name: p.read_bytes() for p in replaced[0].iterdir() if p.is_file()} == before
    assert not (run / "checkpoint.pt").exists()


def test_replaced_runs_are_counted_and_removed_only_on_request(toy_run, tmp_path, capsys) -> None:
    import shutil

    from dhkd.config import load_config
    from dhkd.run.folder import folder_bytes, move_aside, prepare_run_dir

    run = tmp_path / "run"
    shutil.copytree(toy_run, run)
    size = folder_bytes(run)
    first = move_aside(run)
    shutil.copytree(toy_run, run, dirs_exist_ok=True)
    assert prepare_run_dir(run, load_config("smoke", ["train.epochs=4"])) is False
    said = capsys.readouterr().out
    assert f"{run} keeps 2 replaced runs in .replaced-*/ ({2 * size / 1e6:.1f} MB)" in said and "dhkd runs clean" in said
    planted = run / ".replaced-mine"
    planted.mkdir()
    (planted / "notes.txt").write_text("not a run")
    assert cli.main(["runs", "clean", str(run)]) == 0
    listed = capsys.readouterr().out
    assert sum(line.endswith("  kept") for line in listed.splitlines()) == 2
    assert "left: not provably a run dhkd moved aside" in listed
    assert first.exists()  # listing removes nothing
    assert cli.main(["runs", "clean", str(run), "--yes"]) == 0
    assert "removed" in capsys.readouterr().out
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".replaced-")) == [".replaced-mine"]
    assert (planted / "notes.txt").read_text() == "not a run"


def test_an_unreadable_config_is_never_a_reason_to_delete(toy_run, tmp_path) -> None:
    import shutil

    from dhkd.config import load_config
    from dhkd.run.folder import prepare_run_dir

    run = tmp_path / "run"
    shutil.copytree(toy_run, run)
    (run / "config.yaml").write_text((run / "config.yaml").read_text() + "new_section_of_a_later_kit: 1\n")
    before = tree(run)
    with pytest.raises(DhkdError, match="cannot be read.*left as it is"):
        prepare_run_dir(run, load_config("smoke", ["train.epochs=2"]))
    assert tree(run) == before


def test_replacing_a_run_waits_for_its_lock(toy_run, tmp_path) -> None:
    import shutil

    from dhkd.run.folder import move_aside
    from dhkd.run.lock import FolderBusy

    run = tmp_path / "run"
    shutil.copytree(toy_run, run)
    holder = lock_holder(run)
    try:
        with pytest.raises(FolderBusy, match=f"process {holder.pid}"):
            move_aside(run)  # what FORCE=1 and prepare_run_dir do: never under another's feet
        assert (run / "checkpoint.pt").exists()
    finally:
        holder.kill()
        holder.wait()
    assert move_aside(run) is not None and not (run / "checkpoint.pt").exists()


def test_force_moves_the_earlier_run_aside(tmp_path) -> None:
    source = Path("dhkd/kit/reproduce.py").read_text()
    assert "rmtree(plan.runs" not in source and "rmtree(run_dir" not in source
    assert source.count("move_aside(") >= 2


def test_train_refuses_files_it_did_not_write(toy_root, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    out.mkdir()
    for name in ("config.yaml", "run.json", "history.csv"):
        (out / name).write_text(f"my own {name}\n")
    assert cli.main(train_args(toy_root, out, "--epochs", "2")) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert "not written by dhkd train" in err and "config.yaml" in err, err
    for name in ("config.yaml", "run.json", "history.csv"):
        assert (out / name).read_text() == f"my own {name}\n"


def test_toy_keeps_a_readme_it_did_not_write(tmp_path) -> None:
    from dhkd.data.toy import generate_toy

    (tmp_path / "README.txt").write_text("my notes\n")
    generate_toy(tmp_path, image_size=32, n_train=2, n_test_good=1, n_test_per_defect=1, categories=["nut"],
                 progress=False)
    assert (tmp_path / "README.txt").read_text() == "my notes\n"
    fresh = tmp_path / "fresh"
    generate_toy(fresh, image_size=32, n_train=2, n_test_good=1, n_test_per_defect=1, categories=["nut"],
                 progress=False)
    assert (fresh / "README.txt").read_text().startswith("dhkd toy data set")


def test_a_hand_placed_archive_is_kept(tmp_path, monkeypatch) -> None:
    from dhkd.data import download

    archive = tmp_path / download.ARCHIVE_NAME
    archive.write_bytes(b"the user's 4.9 GB")
    monkeypatch.setattr(download, "_verify", lambda *a, **k: None)
    monkeypatch.setattr(download, "extract_categories", lambda *a, **k: None)
    monkeypatch.setattr(download, "_refuse_partial_categories", lambda *a, **k: None)
    download.download_mvtec(tmp_path, categories=["bottle"], progress=False)
    assert archive.read_bytes() == b"the user's 4.9 GB"


def test_atomic_writes_keep_modes_and_clean_up_after_a_kill(tmp_path) -> None:
    from dhkd.io import atomic_write_text

    readme = tmp_path / "README.md"
    readme.write_text("old\n")
    readme.chmod(0o644)
    atomic_write_text(readme, "new\n")
    assert stat.S_IMODE(readme.stat().st_mode) == 0o644
    readme.chmod(0o664)
    atomic_write_text(readme, "newer\n")
    assert stat.S_IMODE(readme.stat().st_mode) == 0o664
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "new.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == 0o640
    # a writer killed mid-write (SIGKILL: no finally) leaves its temporary; the next write removes it
    code = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from dhkd.io import atomic_write
        def write(tmp):
            tmp.write_text("half")
            os.kill(os.getpid(), signal.SIGKILL)
        atomic_write(Path({str(readme)!r}), write)
    """)
    subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": os.getcwd()})
    stray = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(stray) == 1 and readme.read_text() == "newer\n"
    atomic_write_text(readme, "after\n")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------- killed before the first checkpoint


@pytest.mark.slow
def test_a_run_killed_before_its_first_checkpoint_says_so(toy_root, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "dhkd.cli", *train_args(toy_root, out, "--epochs", "40")],
                               env={**os.environ, "PYTHONPATH": os.getcwd()})
    deadline = time.time() + 120
    while not (out / "config.yaml").exists():
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "checkpoint.pt").exists(), "the test needs a kill before the first checkpoint"
    for args in (["evaluate", "--run", str(out), "--json", str(tmp_path / "m.json")], train_args(toy_root, out, "--resume")):
        assert cli.main(args) == cli.EXIT_ERROR
        err = capsys.readouterr().err
        assert "stopped before its first checkpoint" in err and "without --resume" in err, err
    assert cli.main(train_args(toy_root, out, "--epochs", "2")) == 0  # started again, as the message says
    assert (out / "checkpoint.pt").exists()


# ----------------------------------------------------------------------------- 3. a lock the kernel releases


RACER = """
import os, random, sys, time
from pathlib import Path
from dhkd.run.lock import FolderBusy, acquire, release
folder, start, rounds = Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
random.seed(os.getpid())
while time.time() < start:
    pass
held = crashed = 0
for _ in range(rounds):
    if random.random() < 0.3:  # a holder that dies holding the lock (kill -9: no release)
        child = os.fork()
        if child == 0:
            try:
                acquire(folder)
            except FolderBusy:
                os._exit(1)
            os._exit(0)
        crashed += os.waitpid(child, 0)[1] == 0
        continue
    try:
        path = acquire(folder)
    except FolderBusy:
        continue
    held += 1
    try:
        fd = os.open(folder / "inside", os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # fails while another holds it too
    except FileExistsError:
        print("TWO HOLDERS", flush=True)
        sys.exit(3)
    time.sleep(0.0005)
    os.close(fd)
    os.unlink(folder / "inside")
    release(path)
print(held, crashed)
"""


@pytest.mark.slow
def test_two_takers_never_both_hold_the_lock(tmp_path) -> None:
    """Three processes take and release one folder's lock 600 times each, while forked holders die
    holding it (as after kill -9), so that takers race on a lock whose holder is gone: the old
    read-then-rename take-over let two processes hold it in about half of such runs."""
    script = tmp_path / "racer.py"
    script.write_text(RACER)
    for attempt in range(3):
        folder = tmp_path / f"run{attempt}"
        folder.mkdir()
        start = time.time() + 1.0
        racers = [subprocess.Popen([sys.executable, str(script), str(folder), str(start), "600"], stdout=subprocess.PIPE,
                                   text=True, env={**os.environ, "PYTHONPATH": os.getcwd()}) for _ in range(3)]
        outputs = [racer.communicate(timeout=120)[0] for racer in racers]
        assert all(racer.returncode == 0 for racer in racers), outputs
        held, crashed = (sum(int(output.split()[i]) for output in outputs) for i in (0, 1))
        assert held > 0 and crashed > 0, outputs


def test_a_lock_goes_with_a_killed_holder(tmp_path) -> None:
    from dhkd.run.lock import acquire, release

    folder = tmp_path / "run"
    holder = lock_holder(folder)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    release(acquire(folder))


# ----------------------------------------------------------------------------- 4. foreign runs validated


@pytest.mark.parametrize("old, new, message", [("image_size: 64", "image_size: 1000000", "data.image_size"),
                                              ("name: efficientnet_lite0", "name: resnet1800", "model.teacher.name"),
                                              ("profile: smoke", "profile: /some/where", "not a plain name")])
def test_a_foreign_run_is_checked_before_a_model_is_built(toy_run, tmp_path, monkeypatch, old, new, message) -> None:
    import shutil

    from dhkd.run import build, evaluate

    run = tmp_path / "run"
    shutil.copytree(toy_run, run)
    text = (run / "config.yaml").read_text()
    assert old in text, text
    (run / "config.yaml").write_text(text.replace(old, new))

    def never(*args, **kwargs):
        raise AssertionError("a model was built from an unchecked config")

    monkeypatch.setattr(evaluate, "build_model", never)
    monkeypatch.setattr(build, "build_model", never)
    with pytest.raises(DhkdError, match=f"run config .*{message}"):
        evaluate.load_model(run, "cpu")


# ----------------------------------------------------------------------------- 5. data sets larger than memory


def test_the_estimate_streams_or_refuses_with_the_setting() -> None:
    from dhkd.config import load_config
    from dhkd.run.budget import feature_bytes, plan_data

    paper = load_config("paper")
    assert feature_bytes(paper) == 4 * (256 * 64 * 64 + 512 * 32 * 32 + 1024 * 16 * 16)  # 7.3 MB per image
    cpu, gb = torch.device("cpu"), 10 ** 9
    plan = plan_data(paper, 200, cpu, available=24 * gb)
    assert (plan.stream, plan.cache) == (False, True)
    plan = plan_data(paper, 20_000, cpu, available=24 * gb)  # 147 GB of features, 3.9 GB of images
    assert (plan.stream, plan.cache) == (False, False) and "146.8 GB" in plan.note
    plan = plan_data(paper, 200_000, cpu, available=24 * gb)
    assert (plan.stream, plan.cache) == (True, False) and "per batch" in plan.note
    off = load_config("paper", ["train.stream=off"])
    with pytest.raises(DhkdError, match=r"does not fit in memory: 20000 training images .*146.8 GB.*\n.*train.stream=on"):
        plan_data(off, 20_000, cpu, available=24 * gb)


def test_memory_that_cannot_be_measured_is_assumed_small_and_said(monkeypatch) -> None:
    from dhkd.config import load_config
    from dhkd.run import budget

    monkeypatch.setattr(budget, "available_bytes", lambda device: None)  # no /proc/meminfo, no cgroup
    paper, cpu = load_config("paper"), torch.device("cpu")
    plan = budget.plan_data(paper, 100_000, cpu)
    assert (plan.stream, plan.cache, plan.held_bytes) == (True, False, 0) and plan.available is None
    assert "could not be measured" in plan.note and budget.gigabytes(budget.UNKNOWN_BYTES) in plan.note
    small = budget.plan_data(paper, 10, cpu)
    assert not small.stream and "could not be measured" in small.note  # fits even in the assumed memory: said
    stride, note = budget.pixel_stride(100_000, (256, 256), cpu)
    assert stride > 1 and "could not be measured" in note


def test_a_cuda_plan_counts_the_host_memory_the_images_pass_through() -> None:
    from dhkd.config import load_config
    from dhkd.run.budget import DATA_SHARE, image_bytes, plan_data

    config, cuda = load_config("paper", ["train.cache_teacher_features=false"]), torch.device("cuda")
    n = 20_000
    roomy = int(4 * n * image_bytes(config) / DATA_SHARE)
    assert not plan_data(config, n, cuda, available=roomy, host=roomy).stream
    plan = plan_data(config, n, cuda, available=roomy, host=n * image_bytes(config))  # the GPU has room, the host not
    assert plan.stream and "on the host, which the images pass through" in plan.note


def test_streaming_the_training_split_holds_no_masks(toy_root) -> None:
    from dhkd.data import stream_split

    train = stream_split(toy_root, CATEGORY, "train", 64, progress=False)
    assert train.masks.shape == (len(train), 64, 64) and not train.masks.any()
    assert train.masks.untyped_storage().nbytes() == 64 * 64  # one plane, not one per image
    test = stream_split(toy_root, CATEGORY, "test", 64, progress=False)
    assert test.masks.untyped_storage().nbytes() == len(test) * 64 * 64 and test.masks.any()


def test_evaluation_subsamples_the_pixel_metrics_when_the_maps_would_not_fit(toy_run, tmp_path, monkeypatch) -> None:
    """Pixel metrics need every map at once: past the memory budget every s-th pixel is kept (said
    on stderr and in metrics.json); the image scores still come from the full maps."""
    import shutil

    from dhkd.run import budget, evaluate

    assert budget.pixel_stride(100, (256, 256), torch.device("cpu"), available=10 ** 12) == (1, "")
    stride, note = budget.pixel_stride(20_000, (256, 256), torch.device("cpu"), available=8 * 10 ** 9)
    # by hand: 20,000 x 256² x 24 bytes = 31.5 GB at full size, 4 GB allowed (half of 8); stride 2
    # keeps 128² (7.9 GB), stride 3 keeps 86² (3.55 GB)
    assert stride == 3 and "one pixel in 3 along each side" in note and "31.5 GB" in note
    run = tmp_path / "run"
    shutil.copytree(toy_run, run)
    full = json.loads((toy_run / "metrics.json").read_text())
    monkeypatch.setattr(evaluate, "pixel_stride", lambda n, shape, device: budget.pixel_stride(
        n, shape, device, available=n * shape[0] * shape[1] * budget.EVAL_PIXEL_BYTES))  # half of the maps fit
    result = evaluate.evaluate_run(run, device="cpu", progress=False, diagnostics=False)
    assert result["pixel_stride"] == 2 and full.get("pixel_stride", 1) == 1
    assert result["image_auroc"] == full["image_auroc"]  # image scores from the full maps
    assert result["pixel_auroc"] == pytest.approx(full["pixel_auroc"], abs=0.02)
    predictions = evaluate.load_predictions(run)
    assert predictions.maps.shape[-1] == -(-evaluate.load_model(run, "cpu")[1].data.shape[1] // 2)


@pytest.mark.slow
def test_streamed_training_matches_in_memory_training(toy_root, tmp_path) -> None:
    from dhkd.config import load_config
    from dhkd.run.checkpoint import load_checkpoint
    from dhkd.run.train import train

    runs = {}
    for mode in ("off", "on"):
        config = load_config("smoke", ["train.epochs=2", f"train.stream={mode}", "train.cache_teacher_features=false"])
        runs[mode] = train(config, toy_root, CATEGORY, tmp_path / mode, device="cpu", progress=False)
    info = json.loads((runs["on"] / "run.json").read_text())
    assert info["data_plan"]["stream"] is True and info["data_plan"]["held_bytes"] == 0
    a, b = (load_checkpoint(runs[m] / "checkpoint.pt")["student"] for m in ("off", "on"))
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-5), key


def test_evaluation_streams_the_test_split_and_decodes_few_training_images(toy_run, tmp_path, monkeypatch) -> None:
    import shutil

    from dhkd.data import files
    from dhkd.run.evaluate import evaluate_run

    run = tmp_path / "run"
    shutil.copytree(toy_run, run)
    reference = json.loads((toy_run / "metrics.json").read_text())
    decoded = []
    real = files.read_item
    monkeypatch.setattr(files, "read_item", lambda item, size: decoded.append(item.path) or real(item, size))
    from dhkd.data import load as load_module
    monkeypatch.setattr(load_module, "read_item", lambda item, size: decoded.append(item.path) or real(item, size))
    result = evaluate_run(run, device="cpu", progress=False)
    for key in ("image_auroc", "pixel_auroc", "aupro"):
        assert result[key] == pytest.approx(reference[key], abs=1e-6)
    train_decoded = [p for p in decoded if "/train/" in str(p)]
    assert 0 < len(train_decoded) <= 16


def test_a_decompression_bomb_is_named(tmp_path, monkeypatch) -> None:
    from dhkd.data.files import BadFile, open_image

    path = tmp_path / "bomb.png"
    Image.new("L", (2000, 2000)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(BadFile) as caught:
        open_image(path, "image", decode=True)
    assert "decompression bomb" in caught.value.problem.what and "corrupt" not in caught.value.problem.what


def test_a_jpeg_is_checked_without_a_full_decode(tmp_path) -> None:
    from dhkd.data.files import BadFile, open_image

    path = tmp_path / "a.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (512, 640, 3), dtype=np.uint8)).save(path, quality=90)
    header = open_image(path, "image", decode=False)
    assert header.size == (640, 512) and header.mode == "RGB"
    (tmp_path / "cut.jpg").write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(BadFile, match="truncated"):
        open_image(tmp_path / "cut.jpg", "image", decode=False)


def test_streamed_images_are_the_loaded_images(toy_root) -> None:
    from dhkd.data import load_split, stream_split

    loaded, streamed = (load(toy_root, CATEGORY, "test", 64, progress=False) for load in (load_split, stream_split))
    assert torch.equal(loaded.masks, streamed.masks) and torch.equal(loaded.labels, streamed.labels)
    assert len(streamed) == len(loaded)
    order = torch.randperm(len(loaded))
    streamed.images.prefetch(order[:3])
    streamed.images.prefetch(order[3:])
    assert torch.equal(streamed.images[order[:3]], loaded.images[order[:3]])  # the older prefetch is kept
    assert torch.equal(streamed.images[order[3:]], loaded.images[order[3:]])
    assert torch.equal(streamed.images[1:4], loaded.images[1:4])


def test_a_tiff_is_checked_from_its_header_and_decoded_once(tmp_path, monkeypatch) -> None:
    """Checking a TIFF reads its tags, not its pixels: a truncated copy is caught all the same."""
    from PIL import TiffImagePlugin

    from dhkd.data.files import BadFile, open_image

    path = tmp_path / "tile.tif"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 80, 3), dtype=np.uint8)).save(path)
    truncated = tmp_path / "cut.tif"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    def no_decoding(self):  # the check must not decode
        raise AssertionError("decoded while checking")

    with monkeypatch.context() as patch:
        patch.setattr(TiffImagePlugin.TiffImageFile, "load", no_decoding)
        assert open_image(path, "image", decode=False).size == (80, 120)
        with pytest.raises(BadFile, match="truncated"):
            open_image(truncated, "image", decode=False)
    assert open_image(path, "image", decode=True).size == (80, 120)
