"""Checkpoints: written atomically, read with ``weights_only=True``, checked against the config.

A checkpoint holds only tensors and plain Python values (no pickled classes), so loading one
never runs code, and a file carrying pickled code is refused with a clear message.
"""

from __future__ import annotations

import copy
import pickle
from pathlib import Path
from typing import Any

import torch

from dhkd.config import Config, to_dict, upgrade_run_tree
from dhkd.errors import DhkdError
from dhkd.io import atomic_write

FORMAT_VERSION = 1

#: Config sections that must match for a checkpoint to be resumed or evaluated with a config.
#: ``train.epochs`` may differ (a run can be extended), everything that shapes the model may not.
MATCHING_KEYS = ("model", "masking", "data", "train.batch_size", "train.lr", "train.lr_schedule", "train.betas", "train.seed", "train.loss")


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (tensors and plain values) to ``path`` atomically."""
    state = {"format": FORMAT_VERSION, **state}
    atomic_write(Path(path), lambda tmp: torch.save(state, tmp), size_hint=_tensor_bytes(state))


def _tensor_bytes(value: Any) -> int:
    """The bytes of the tensors in ``value`` (nested dicts and lists): about a checkpoint's size."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(v) for v in value)
    return 0


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely; every failure becomes a :class:`DhkdError` saying what to do."""
    path = Path(path)
    if not path.exists():
        raise DhkdError(f"no checkpoint at {path}", "train first (dhkd train ... --out RUN_DIR), or check the run folder")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise DhkdError(
            f"refused to load {path}: it carries pickled Python objects, not only tensors and plain values "
            "(torch.load with weights_only=True will not run code from a file)",
            "only checkpoints written by dhkd are accepted; retrain, or re-save the weights as a plain state_dict",
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise DhkdError(f"checkpoint {path} is truncated or corrupt ({type(error).__name__}: {str(error).splitlines()[0]})",
                        "delete it and train again (or resume from an older copy)") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION or "student" not in state:
        raise DhkdError(f"{path} is not a dhkd checkpoint (format {FORMAT_VERSION})", "point --run at a folder made by dhkd train")
    lacking = [key for key, kind in REQUIRED_PIECES.items() if not isinstance(state.get(key), kind)]
    if lacking:
        raise DhkdError(f"checkpoint {path} lacks {', '.join(lacking)}: another version of the kit wrote it, or it was "
                        "edited", "train the run again with this kit (or resume from a checkpoint it wrote)")
    return state


#: What every checkpoint holds besides its format, and of what type (a dict: a state dict or a config tree).
REQUIRED_PIECES = {"student": dict, "config": dict}


def check_compatible(state: dict[str, Any], config: Config, path: Path) -> None:
    """Refuse a checkpoint made with another teacher or another model/training config."""
    current = _flatten(to_dict(config))
    # a setting added after the checkpoint was made has its default there (e.g. model.teacher.stages)
    saved = {**_flatten(to_dict(Config())), **_flatten(upgrade_run_tree(copy.deepcopy(state["config"])))}
    differences = [
        f"{key}: checkpoint has {saved.get(key)!r}, this run has {current.get(key)!r}"
        for key in sorted(set(saved) | set(current))
        if key.startswith(MATCHING_KEYS) and saved.get(key) != current.get(key)
    ]
    if differences:
        shown = "\n    ".join(differences[:8])
        raise DhkdError(f"checkpoint {path} was made with another config:\n    {shown}",
                        "resume with the same --profile and --set options, or use a new --out folder")


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = list(value) if isinstance(value, tuple) else value
    return flat
