"""A run's fingerprint: what ties an exported ONNX file to the weights and settings it was made from.

A file time says nothing about content (``cp -p`` restores an old checkpoint with an old time,
a copied file gets a new one), so ``dhkd export`` records a SHA-256 of the student's tensors and
one of the settings that shape the scoring graph (model, masking, data, eval), and ``dhkd
predict`` compares them with the run's before it trusts ``RUN/model.onnx`` or a ``--model`` file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from dhkd.config import Config, to_dict
from dhkd.run.checkpoint import load_checkpoint
from dhkd.run.folder import CHECKPOINT_NAME

#: The config sections the scoring graph depends on; training-only settings (epochs, lr) are not.
SCORING_SECTIONS = ("model", "masking", "data", "eval")


def weights_digest(student: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a student state dict: every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(student):
        tensor = student[name].detach().cpu()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        flat = tensor.flatten().clone()  # C order with unit stride, whatever the memory format (channels_last)
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()


def settings_digest(config: Config) -> str:
    """SHA-256 of the settings that shape the scoring graph (:data:`SCORING_SECTIONS`)."""
    tree = to_dict(config)
    chosen = {section: tree.get(section) for section in SCORING_SECTIONS}
    return hashlib.sha256(json.dumps(chosen, sort_keys=True, default=str).encode()).hexdigest()


def run_fingerprint(run: str | Path, config: Config) -> dict[str, Any]:
    """The fingerprint of the run in ``run`` with its configuration ``config``."""
    state = load_checkpoint(Path(run) / CHECKPOINT_NAME)
    return {"weights": weights_digest(state["student"]), "settings": settings_digest(config)}


def differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between a file's recorded fingerprint and a run's, in words (empty: the same)."""
    return [f"its {key} (SHA-256 {str(recorded.get(key))[:12]}...) are not the run's ({str(current[key])[:12]}...)"
            for key in ("weights", "settings") if recorded.get(key) != current[key]]
