"""Shared fixtures and helpers.

The expensive things are made once per session and shared: the toy data set (``toy_root``),
a trained and evaluated smoke run on it (``toy_run``, read only: a test that writes copies it)
and one full reproduce run (``tiny_reproduce``). ``make test`` leaves out the tests marked
``slow``, ``kernel``, ``ui`` and ``torchrun`` (pyproject.toml declares them), ``make test-all``
runs everything."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from dhkd.data.toy import generate_toy

TOY_CATEGORY = "nut"
CHECKOUT = Path(__file__).resolve().parents[1]
# A test that makes the shared reproduce run (two minutes on a quiet machine) may take this long;
# every other test has pyproject.toml's default timeout.
REPRODUCE_TIMEOUT_S = 900


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The first test to ask for ``tiny_reproduce`` pays for making it: give those tests more time."""
    for item in items:
        if "tiny_reproduce" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.timeout(REPRODUCE_TIMEOUT_S))


@pytest.fixture(scope="session")
def mvtec_root() -> Path:
    """The real MVTec AD root: $DHKD_MVTEC_ROOT, else ../shared/data/mvtec_ad; skips where absent."""
    env = os.environ.get("DHKD_MVTEC_ROOT")
    root = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mvtec_ad"
    if not root.is_dir():
        pytest.skip(f"real MVTec AD data not found at {root} (set DHKD_MVTEC_ROOT to the folder that holds bottle/)")
    return root


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny toy data set (one category, 64 px, 8 training images) made once per session; tests
    only read it (one that changes the data copies it first)."""
    root = tmp_path_factory.mktemp("toy")
    generate_toy(root, image_size=64, n_train=8, n_test_good=2, n_test_per_defect=2, categories=[TOY_CATEGORY],
                 progress=False)
    return root


def train_args(root: Path, out: Path, *extra: str) -> list[str]:
    """``dhkd train`` arguments for the toy nut under the smoke profile, quiet."""
    return ["train", "--data-root", str(root), "--category", TOY_CATEGORY, "--profile", "smoke", "--out", str(out),
            "--quiet", *extra]


def _tree_state(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.fixture(scope="session")
def toy_run(toy_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A smoke run of the toy nut (two epochs, one per stage), trained and evaluated through the
    CLI once per session and shared by every suite that needs a trained run. It is read only: a
    test that writes into a run copies it (``copy_run``); the session's end checks nothing in it
    changed, so a test that forgets fails instead of quietly changing what the others see."""
    run = tmp_path_factory.mktemp("toy_run") / "smoke"
    from dhkd import cli

    assert cli.main(train_args(toy_root, run, "--epochs", "2", "--device", "cpu")) == 0
    assert cli.main(["evaluate", "--run", str(run), "--json", str(run.parent / "metrics.json"), "--device", "cpu",
                     "--quiet"]) == 0
    before = _tree_state(run)
    yield run
    after = _tree_state(run)
    changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
    assert not changed, f"a test changed the shared toy_run (copy it with copy_run first): {changed}"


def copy_run(run: Path, folder: Path, name: str = "run copy") -> Path:
    """A copy of ``run`` under ``folder``, for a test that writes into it."""
    target = folder / name
    shutil.copytree(run, target)
    return target


def lock_holder(folder: Path, command: str = "dhkd train ...") -> subprocess.Popen:
    """A process, run as ``command``, that takes ``folder``'s lock and sleeps; returns once it holds it."""
    code = ("import sys, time; from pathlib import Path; from dhkd.run.lock import acquire; "
            f"sys.argv = [{command!r}]; acquire(Path({str(folder)!r})); "
            "print('locked', flush=True); time.sleep(60)")
    path = os.pathsep.join(filter(None, [str(CHECKOUT), os.environ.get("PYTHONPATH")]))
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": path})
    assert process.stdout.readline().strip() == "locked"
    return process


def run_reproduce(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``dhkd reproduce ARGS`` in a fresh process, run from ``cwd``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "dhkd.cli", "reproduce", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.fixture(scope="session")
def tiny_reproduce(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The toy nut at 64 px (8 training images), and one full reproduce run on it (smoke profile,
    2 epochs, untrained teacher; about two minutes): every notebook executed, as make reproduce does.
    Made once per test session: the notebook tests and the book's browser test share it."""
    from dhkd.kit import tables

    root = tmp_path_factory.mktemp("reproduce")
    data = root / "toy"
    generate_toy(data, image_size=64, n_train=8, n_test_good=3, n_test_per_defect=2, categories=["nut"], progress=False)
    readme = root / "README.md"
    readme.write_text(f"# Kit\n\n## Results\n\n{tables.README_START}\n{tables.README_END}\n\n## Citation\n")
    args = ["--data", "toy", "--categories", "nut", "--profile", "smoke", "--device", "cpu",  # as typed, from root
            "--out", "results", "--readme", "README.md"]
    first = run_reproduce(*args, cwd=root)
    return {"root": root, "data": data, "readme": readme, "args": args, "first": first,
            "results": root / "results" / "toy" / "smoke"}
