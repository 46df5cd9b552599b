"""Where a run computes and in what precision: the device, its clock, seeds, autocast and layout.

Everything that trains, evaluates, predicts or benchmarks asks here, so that ``--device auto``,
``train.amp`` and ``train.channels_last`` mean the same thing everywhere.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from dhkd.errors import DhkdError


def resolve_device(device: str | None = "auto") -> torch.device:
    """``auto`` picks CUDA when there is a GPU; asking for CUDA without one is an error, not a fallback."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise DhkdError(f"unknown device '{device}'", "use --device cpu, cuda, cuda:N or auto") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise DhkdError(f"--device {device} asked for a GPU, but torch sees none on this machine",
                        "use --device cpu (or auto), or install a CUDA build of torch on a machine with a GPU")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise DhkdError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s), numbered from 0",
                        "use --device cuda (the first GPU) or cuda:N with N from nvidia-smi's list")
    return resolved


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a wall-clock reading covers it (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seed_everything(seed: int) -> None:
    """Seed torch's global RNGs (weight init); the data order has its own generator."""
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA for the student only (``train.amp``, off by default); a no-op on
    the CPU, where bf16 convolutions are slower."""
    if device.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def set_memory_format(model: nn.Module, channels_last: bool) -> nn.Module:
    """Prepare ``model`` for channels-last (NHWC) activations, which the callers feed it.

    A convolution whose input is NHWC gives NHWC output, so the activations stay NHWC through
    the network. The weights go NHWC as well, on CUDA (cuDNN's NHWC kernels want them so) and
    on the CPU, where oneDNN returns weight gradients in the activations' layout and an NCHW
    weight would take a layout copy of its gradient every step.
    """
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model
