"""Shared fixtures."""

from __future__ import annotations

import os
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
