"""``dhkd train`` under torchrun: two CPU processes, gloo, DistributedDataParallel.

Only rank 0 writes the run folder; both ranks leave the process group cleanly; the result
evaluates like any single-process run.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch.distributed

from dhkd.run.evaluate import evaluate_run
from dhkd.run.train import Distributed

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is needed")


def torchrun(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """``torchrun --standalone --nproc_per_node=2 -m dhkd.cli ARGS`` (torchrun sets OMP_NUM_THREADS=1 per rank)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "dhkd.cli", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.torchrun
def test_torchrun_two_cpu_processes_train_and_evaluate(toy_root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    started = time.perf_counter()
    done = torchrun("train", "--data-root", str(toy_root), "--category", "nut", "--profile", "smoke",
                    "--out", str(run_dir), "--quiet", "--device", "cpu", cwd=tmp_path)
    seconds = time.perf_counter() - started
    assert done.returncode == 0, done.stdout + done.stderr
    assert seconds < 120, f"torchrun training took {seconds:.0f} s"

    # rank 0 wrote the run; nothing else was left behind (no probe or temporary files of either rank)
    assert sorted(p.name for p in run_dir.iterdir()) == [".dhkd-run", "checkpoint.pt", "config.yaml", "history.csv", "run.json", "start.pt"]
    info = json.loads((run_dir / "run.json").read_text())
    assert info["world_size"] == 2 and info["status"] == "done" and info["epochs_done"] == 2
    rows = list(csv.DictReader((run_dir / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert [int(r["stage"]) for r in rows] == [1, 2]  # smoke: the second epoch is the masking stage
    assert all(float(r["loss"]) > 0 for r in rows)
    assert "Traceback" not in done.stderr
    assert done.stdout.count("trained nut") == 1, "only rank 0 reports"

    result = evaluate_run(run_dir, device="cpu", json_path=tmp_path / "metrics.json", progress=False)
    assert result["n_test"] == 2 + 2 * len(result["per_defect"]) and result["n_defective"] > 0
    for key in ("image_auroc", "pixel_auroc", "aupro"):
        assert 0.0 <= result[key] <= 1.0


@pytest.mark.torchrun
def test_torchrun_resume_continues_the_run(toy_root: Path, tmp_path: Path) -> None:
    """A torchrun run extended with --resume picks up rank 0's checkpoint on every rank."""
    run_dir = tmp_path / "run"
    first = torchrun("train", "--data-root", str(toy_root), "--category", "nut", "--profile", "smoke",
                     "--out", str(run_dir), "--quiet", "--device", "cpu", "--epochs", "2", cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    second = torchrun("train", "--data-root", str(toy_root), "--category", "nut", "--profile", "smoke",
                      "--out", str(run_dir), "--quiet", "--device", "cpu", "--epochs", "3", "--resume", cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    info = json.loads((run_dir / "run.json").read_text())
    assert info["epochs_done"] == 3 and info["world_size"] == 2


@pytest.mark.torchrun
def test_torchrun_into_an_existing_run_stops_every_rank(toy_root: Path, tmp_path: Path) -> None:
    """Without --resume a finished run folder is refused by every rank at once (no rank left waiting)."""
    run_dir = tmp_path / "run"
    args = ("train", "--data-root", str(toy_root), "--category", "nut", "--profile", "smoke", "--out", str(run_dir),
            "--quiet", "--device", "cpu", "--epochs", "2")  # smoke: one epoch per stage
    assert torchrun(*args, cwd=tmp_path).returncode == 0
    again = torchrun(*args, cwd=tmp_path, timeout=120)
    assert again.returncode != 0
    assert again.stderr.count("already holds a run") == 2 and "--resume" in again.stderr


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _any_flag(rank: int, world: int, port: int, results: "mp.Queue") -> None:  # noqa: F821
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    dist = Distributed(rank=rank, world=world)
    results.put((rank, dist.any(rank == 1, torch.device("cpu")), dist.any(False, torch.device("cpu"))))
    dist.close()


@pytest.mark.torchrun
def test_a_stop_flag_on_one_rank_stops_all_ranks() -> None:
    """The per-step stop check: a signal that reached rank 1 only is seen by rank 0 too."""
    import torch.multiprocessing as mp

    port = _free_port()
    context = mp.get_context("spawn")
    results = context.Queue()
    processes = [context.Process(target=_any_flag, args=(rank, 2, port, results)) for rank in range(2)]
    for process in processes:
        process.start()
    seen = sorted(results.get(timeout=60) for _ in processes)
    for process in processes:
        process.join(timeout=30)
    assert seen == [(0, True, False), (1, True, False)]


def _sharded_cache(rank: int, world: int, port: int, out_dir: str, results: "mp.Queue") -> None:  # noqa: F821
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    from dhkd.config import load_config
    from dhkd.run.train import Trainer

    images = torch.randint(0, 256, (7, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    trainer = Trainer(load_config("smoke"), ".", "bench", Path(out_dir) / f"rank{rank}", device="cpu", progress=False)
    trainer.prepare(images=images)  # each rank computes its shard of the cache; all_gather fills in the rest
    gathered = trainer.cache
    trainer.dist = Distributed()  # the same cache as one process would compute it, for comparison
    alone = trainer.teacher_cache()
    same = [bool(torch.allclose(g, a, rtol=1e-5, atol=1e-6)) for g, a in zip(gathered, alone, strict=True)]
    results.put((rank, [tuple(g.shape) for g in gathered], same))
    torch.distributed.destroy_process_group()


@pytest.mark.torchrun
def test_teacher_cache_is_split_over_ranks_and_gathered(tmp_path: Path) -> None:
    """Each rank computes the teacher features of its own slice of the training images (7 images
    over 2 ranks: 4 and 3, padded to 4); after the all_gather every rank holds all 7, equal to a
    single process's cache."""
    import torch.multiprocessing as mp

    port = _free_port()
    context = mp.get_context("spawn")
    results = context.Queue()
    processes = [context.Process(target=_sharded_cache, args=(rank, 2, port, str(tmp_path), results))
                 for rank in range(2)]
    for process in processes:
        process.start()
    seen = sorted(results.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(timeout=30)
    for rank, shapes, same in seen:
        assert all(shape[0] == 7 for shape in shapes), (rank, shapes)
        assert all(same), (rank, same)
    assert [rank for rank, _, _ in seen] == [0, 1]


def test_shards_cover_every_image_once_in_order() -> None:
    for n, world in [(7, 2), (209, 8), (3, 4), (16, 1)]:
        shards = [Distributed(rank=r, world=world).shard(n, torch.device("cpu")) for r in range(world)]
        assert len({len(s) for s in shards}) == 1  # equal lengths, as all_gather needs
        assert torch.cat(shards)[:n].tolist() == list(range(n))
