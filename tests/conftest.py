"""Shared fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def mvtec_root() -> Path:
    """The real MVTec AD root: $DHKD_MVTEC_ROOT, else ../shared/data/mvtec_ad; skips where absent."""
    env = os.environ.get("DHKD_MVTEC_ROOT")
    root = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mvtec_ad"
    if not root.is_dir():
        pytest.skip(f"real MVTec AD data not found at {root} (set DHKD_MVTEC_ROOT to the folder that holds bottle/)")
    return root
