"""Shared fixtures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dhkd.data.toy import generate_toy

TOY_CATEGORY = "nut"


@pytest.fixture(scope="session")
def mvtec_root() -> Path:
    """The real MVTec AD root: $DHKD_MVTEC_ROOT, else ../shared/data/mvtec_ad; skips where absent."""
    env = os.environ.get("DHKD_MVTEC_ROOT")
    root = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mvtec_ad"
    if not root.is_dir():
        pytest.skip(f"real MVTec AD data not found at {root} (set DHKD_MVTEC_ROOT to the folder that holds bottle/)")
    return root


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny toy data set (one category, 64 px, 8 training images) made once per test module."""
    root = tmp_path_factory.mktemp("toy")
    generate_toy(root, image_size=64, n_train=8, n_test_good=2, n_test_per_defect=2, categories=[TOY_CATEGORY],
                 progress=False)
    return root


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
