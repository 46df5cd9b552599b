"""docs/method.md stays true to the code: its settings table lists every configuration field with
the default and the values of the paper, rd and offline profiles."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from dhkd.config import Config, load_config

METHOD = Path(__file__).resolve().parents[1] / "docs" / "method.md"
PROFILES = ("paper", "rd", "offline")


def _fields(node: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf setting of a config as ``section.key`` -> value."""
    leaves = {}
    for field in dataclasses.fields(node):
        value = getattr(node, field.name)
        if dataclasses.is_dataclass(value):
            leaves.update(_fields(value, f"{prefix}{field.name}."))
        elif field.name != "profile":
            leaves[f"{prefix}{field.name}"] = value
    return leaves


def _shown(value: Any) -> str:
    """A value as the table writes it (YAML's spelling of booleans)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _settings_table() -> dict[str, list[str]]:
    rows = {}
    for line in METHOD.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 6:
            rows[cells[0].strip("`")] = cells[1:5]
    return rows


def test_every_setting_is_documented_with_its_default_and_profile_values() -> None:
    table = _settings_table()
    default = _fields(Config())
    profiles = [_fields(load_config(name)) for name in PROFILES]
    assert sorted(table) == sorted(default), "docs/method.md's settings table and dhkd/config.py list other settings"
    for key, cells in table.items():
        expected = [_shown(default[key])] + [_shown(profile[key]) for profile in profiles]
        assert cells == expected, f"{key}: docs/method.md says {cells}, the code {expected}"
