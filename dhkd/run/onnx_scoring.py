"""Scoring with an exported run (``dhkd export``) in onnxruntime: ``dhkd predict --engine onnxruntime``.

Only ``onnxruntime`` and numpy are needed to score; the file's metadata says the image size, the
default batch size and the recorded threshold. A file that is not ONNX, or ONNX that ``dhkd
export`` did not write, is refused with the kit's error rather than scored with wrong inputs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dhkd.data import Fit, as_fit
from dhkd.errors import DhkdError
from dhkd.run.export import DEPLOY_EXTRA, FORMAT, INPUT_NAME, OUTPUT_NAMES, export_run, require
from dhkd.run.folder import CHECKPOINT_NAME, CONFIG_NAME, METRICS_NAME, ONNX_NAME

ENGINES = ("torch", "onnxruntime")


@dataclass
class OnnxScorer:
    """An exported scoring graph loaded by onnxruntime: ``maps(uint8 (B, 3, H, W))``; ``fit`` says how
    an image is brought to that shape (as the run was trained)."""

    path: Path
    runtime: Any
    fit: Fit
    batch_size: int
    threshold: dict[str, Any] | None
    metadata: dict[str, str] = field(repr=False)

    def maps(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 ``(B, 3, H, W)`` -> anomaly maps ``(B, H, W)`` and scores ``(B,)``, float32."""
        if images.dtype != np.uint8 or images.shape[1:] != (3, *self.fit.shape):
            raise ValueError(f"{self.path} scores uint8 (B, 3, {self.fit.height}, {self.fit.width}) images, "
                             f"got {images.dtype} {tuple(images.shape)}")
        maps, scores = self.runtime.run(list(OUTPUT_NAMES), {INPUT_NAME: np.ascontiguousarray(images)})
        return maps, scores


def check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise DhkdError(f"unknown engine {engine!r}", f"use one of {', '.join(ENGINES)}")
    return engine


def open_onnx(path: str | Path, device: str = "auto", threads: int | None = None) -> OnnxScorer:
    """An exported file, checked to be one of ``dhkd export``'s, loaded by onnxruntime.

    ``device``: auto and cpu run on the CPU (auto takes CUDA when onnxruntime-gpu sees a GPU);
    cuda asks for onnxruntime's CUDA provider and is an error without it. ``threads``: onnxruntime's
    intra-op threads (default: its own choice, one per physical core)."""
    ort = require("onnxruntime", "the onnxruntime engine")
    path = Path(path)
    if not path.is_file():
        raise DhkdError(f"no ONNX file at {path}", "export a run first: dhkd export --run RUN --out FILE.onnx")
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    providers = _providers(ort, device)
    try:
        runtime = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as error:  # onnxruntime raises InvalidProtobuf, Fail, InvalidGraph, ... from its C++ core
        raise DhkdError(f"{path} is not an ONNX file onnxruntime can load (corrupt, truncated or another format): "
                        f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300]}",
                        "export the run again: dhkd export --run RUN --out FILE.onnx") from None
    metadata = dict(runtime.get_modelmeta().custom_metadata_map)
    if metadata.get("dhkd.format") != FORMAT:
        found = f"format {metadata['dhkd.format']!r}" if "dhkd.format" in metadata else "no dhkd metadata"
        raise DhkdError(f"{path} is an ONNX file, but not one dhkd export wrote for this kit ({found}; this kit reads "
                        f"{FORMAT!r})", "export the run with this kit: dhkd export --run RUN --out FILE.onnx")
    inputs = runtime.get_inputs()
    outputs = [o.name for o in runtime.get_outputs()]
    if [i.name for i in inputs] != [INPUT_NAME] or outputs != list(OUTPUT_NAMES):
        raise DhkdError(f"{path} says it is a dhkd export but its graph has inputs {[i.name for i in inputs]} and "
                        f"outputs {outputs} (expected [{INPUT_NAME!r}] and {list(OUTPUT_NAMES)})",
                        "export the run again: dhkd export --run RUN --out FILE.onnx")
    described = json.loads(metadata["dhkd.input"])
    threshold = json.loads(metadata.get("dhkd.threshold", "null"))
    fit = as_fit(described["image_size"], keep_aspect=described.get("resize_mode") == "keep_aspect")
    return OnnxScorer(path, runtime, fit, int(metadata.get("dhkd.batch_size", 1)), threshold, metadata)


def run_onnx(run: str | Path, progress: bool = True) -> Path:
    """The run's own export ``RUN/model.onnx``, made (again) when it is missing or older than the
    run's checkpoint, configuration or evaluation."""
    run = Path(run)
    path = run / ONNX_NAME
    sources = [run / name for name in (CHECKPOINT_NAME, CONFIG_NAME, METRICS_NAME) if (run / name).exists()]
    if path.exists() and all(path.stat().st_mtime >= source.stat().st_mtime for source in sources):
        return path
    if progress:
        print(f"exporting {run} to {path} for onnxruntime (dhkd export)")
    export_run(run, path)
    return path


def _providers(ort: Any, device: str) -> list[str]:
    available = ort.get_available_providers()
    if device in (None, "auto"):
        return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in available:
            raise DhkdError(f"--device {device} with the onnxruntime engine needs onnxruntime's CUDA provider "
                            f"(this onnxruntime has {', '.join(available)})",
                            "install onnxruntime-gpu instead of onnxruntime, or use --device cpu")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise DhkdError(f"unknown device '{device}' for the onnxruntime engine", "use --device cpu, cuda or auto")
