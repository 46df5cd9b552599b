"""Scoring with an exported run (``dhkd export``) in onnxruntime: ``dhkd predict --engine onnxruntime``.

Only ``onnxruntime`` and numpy are needed to score; the file's metadata says the image size, the
default batch size and the recorded threshold. A file that is not ONNX, ONNX that ``dhkd
export`` did not write, or one whose metadata are incomplete, do not parse or disagree with its graph,
is refused with the kit's error rather than scored with wrong inputs; and a file must score the three
check images as torch eager did when it was exported (its fingerprint records those scores), so a
foreign graph with copied metadata is refused too. ``RUN/model.onnx`` is made again when its
recorded fingerprint (weights and scoring settings) or threshold is not the run's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dhkd.data import Fit, as_fit
from dhkd.errors import DhkdError
from dhkd.config import read_config
from dhkd.run.export import (FORMAT, INPUT_NAME, MAP_TOLERANCE, METADATA_KEYS, OUTPUT_NAMES, check_images, export_run,
                             recorded_threshold, require)
from dhkd.run.fingerprint import differences, run_fingerprint
from dhkd.run.folder import CONFIG_NAME, ONNX_NAME

ENGINES = ("torch", "onnxruntime")
EXPORT_AGAIN = "export the run again with this kit: dhkd export --run RUN --out FILE.onnx"


@dataclass
class OnnxScorer:
    """An exported scoring graph loaded by onnxruntime: ``maps(uint8 (B, 3, H, W))``; ``fit`` says how
    an image is brought to that shape (as the run was trained)."""

    path: Path
    runtime: Any
    fit: Fit
    batch_size: int
    threshold: dict[str, Any] | None
    fingerprint: dict[str, Any]
    metadata: dict[str, str] = field(repr=False)

    def maps(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 ``(B, 3, H, W)`` -> anomaly maps ``(B, H, W)`` and scores ``(B,)``, float32; outputs
        of another shape (a graph that is not what its metadata say) are the kit's error."""
        if images.dtype != np.uint8 or images.shape[1:] != (3, *self.fit.shape):
            raise ValueError(f"{self.path} scores uint8 (B, 3, {self.fit.height}, {self.fit.width}) images, "
                             f"got {images.dtype} {tuple(images.shape)}")
        maps, scores = self.runtime.run(list(OUTPUT_NAMES), {INPUT_NAME: np.ascontiguousarray(images)})
        wanted = ((len(images), *self.fit.shape), (len(images),))
        if (np.shape(maps), np.shape(scores)) != wanted:
            raise DhkdError(f"{self.path} gave outputs of shapes {np.shape(maps)} and {np.shape(scores)} for "
                            f"{len(images)} images of {self.fit.height} x {self.fit.width} px (expected {wanted[0]} "
                            f"and {wanted[1]}): the graph is not what its metadata describe", EXPORT_AGAIN)
        return np.asarray(maps, dtype=np.float32), np.asarray(scores, dtype=np.float32)


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
                        f"outputs {outputs} (expected [{INPUT_NAME!r}] and {list(OUTPUT_NAMES)})", EXPORT_AGAIN)
    fit, batch_size, threshold, fingerprint = read_metadata(path, metadata)
    check_graph_shapes(path, runtime, fit)
    scorer = OnnxScorer(path, runtime, fit, batch_size, threshold, fingerprint, metadata)
    check_scores(scorer)
    return scorer


def read_metadata(path: Path, metadata: dict[str, str]) -> tuple[Fit, int, dict[str, Any] | None, dict[str, Any]]:
    """The input fit, default batch size, threshold and fingerprint a file's metadata records,
    each checked (present, parsed, consistent with the others); else one :class:`DhkdError`."""
    missing = [key for key in METADATA_KEYS if key not in metadata]
    if missing:
        raise DhkdError(f"{path} has incomplete dhkd metadata (no {', '.join(missing)}): it was written by an older "
                        "kit or changed since, and nothing ties it to the weights it claims to score with", EXPORT_AGAIN)

    def bad(key: str, why: str) -> DhkdError:
        return DhkdError(f"{path} has bad dhkd metadata: {key} {why} (it reads {metadata[key][:120]!r})", EXPORT_AGAIN)

    def parsed(key: str, null: bool = False) -> Any:
        try:
            value = json.loads(metadata[key])
        except ValueError:
            raise bad(key, "is not JSON") from None
        if not isinstance(value, dict) and not (null and value is None):
            raise bad(key, "is not a JSON object" + (" or null" if null else ""))
        return value

    described = parsed("dhkd.input")
    try:
        fit = as_fit(described["image_size"], keep_aspect=described.get("resize_mode") == "keep_aspect")
    except (KeyError, ValueError, TypeError):
        raise bad("dhkd.input", "has no valid image_size (a positive whole number or [height, width])") from None
    if described.get("shape") != ["batch", 3, *fit.shape]:
        raise bad("dhkd.input", f"says image_size {described['image_size']!r} but shape {described.get('shape')!r}")
    shapes = {name: (value.get("shape") if isinstance(value, dict) else None)
              for name, value in parsed("dhkd.outputs").items()}
    if shapes != {OUTPUT_NAMES[0]: ["batch", *fit.shape], OUTPUT_NAMES[1]: ["batch"]}:
        raise bad("dhkd.outputs", f"does not give the shapes ['batch', {fit.height}, {fit.width}] and ['batch'] "
                  f"of a {fit.height} x {fit.width} input (it gives {shapes})")
    if not metadata["dhkd.batch_size"].isdigit() or int(metadata["dhkd.batch_size"]) < 1:
        raise bad("dhkd.batch_size", "is not a positive whole number")
    threshold = parsed("dhkd.threshold", null=True)
    if threshold is not None and not (_finite(threshold.get("value")) and isinstance(threshold.get("how"), str)):
        raise bad("dhkd.threshold", "has no finite number value and text how")
    fingerprint = parsed("dhkd.fingerprint")
    scores = fingerprint.get("check_scores")
    if (not all(isinstance(fingerprint.get(key), str) and len(fingerprint[key]) == 64 for key in ("weights", "settings"))
            or not isinstance(scores, list) or len(scores) != len(check_images((1, 1))) or not all(map(_finite, scores))):
        raise bad("dhkd.fingerprint", "lacks the SHA-256 weights and settings and the check images' scores")
    return fit, int(metadata["dhkd.batch_size"]), threshold, fingerprint


def check_graph_shapes(path: Path, runtime: Any, fit: Fit) -> None:
    """Refuse a graph whose declared input or output shapes are not those of its metadata's input size."""
    expected = {INPUT_NAME: ["batch", 3, *fit.shape], OUTPUT_NAMES[0]: ["batch", *fit.shape], OUTPUT_NAMES[1]: ["batch"]}
    for node in [*runtime.get_inputs(), *runtime.get_outputs()]:
        declared, wanted = list(node.shape), expected[node.name]
        fixed = [(d, w) for d, w in zip(declared, wanted) if isinstance(d, int) and isinstance(w, int)]
        if len(declared) != len(wanted) or any(d != w for d, w in fixed):
            raise DhkdError(f"{path}'s graph declares {node.name} of shape {declared}, but its metadata describe a "
                            f"{fit.height} x {fit.width} input (expected {wanted})", EXPORT_AGAIN)


def check_scores(scorer: OnnxScorer) -> None:
    """Score the three check images and compare with the scores torch eager gave at export: a graph
    that is not the one the metadata describe (another model, a constant) fails here."""
    expected = np.array(scorer.fingerprint["check_scores"], dtype=np.float64)
    _, scores = scorer.maps(check_images(scorer.fit.shape))
    worst = float(np.abs(scores - expected).max())
    if not worst <= MAP_TOLERANCE:
        raise DhkdError(f"{scorer.path} does not score as the model it was exported from: its scores of the three check "
                        f"images differ by {worst:.3g} from those recorded at export (allowed {MAP_TOLERANCE:g})",
                        EXPORT_AGAIN)


def check_matches_run(scorer: OnnxScorer, run: Path) -> None:
    """Refuse a file whose fingerprint is not the run's (scored with ``--run`` and ``--model`` together)."""
    wrong = differences(scorer.fingerprint, _current_fingerprint(run))
    if wrong:
        raise DhkdError(f"{scorer.path} was not exported from the run {run}: {'; '.join(wrong)}",
                        f"export that run (dhkd export --run {run} --out FILE.onnx), or drop --run or --model")


def run_onnx(run: str | Path, progress: bool = True) -> Path:
    """The run's own export ``RUN/model.onnx``, made (again) when it is missing, or when its recorded
    fingerprint or threshold are not the run's (:mod:`dhkd.run.fingerprint`; never judged by file times)."""
    run = Path(run)
    path = run / ONNX_NAME
    why = "it is missing" if not path.exists() else _stale(path, run)
    if why is None:
        return path
    if progress:
        print(f"exporting {run} to {path} for onnxruntime (dhkd export): {why}")
    export_run(run, path)
    return path


def _stale(path: Path, run: Path) -> str | None:
    """Why the run's export must be made again, None when it is up to date."""
    onnx = require("onnx", "the onnxruntime engine")
    try:
        metadata = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        recorded = json.loads(metadata["dhkd.fingerprint"])
        threshold = json.loads(metadata["dhkd.threshold"])
    except Exception:  # unreadable, older format, no fingerprint: made again
        return "it records no fingerprint"
    wrong = differences(recorded, _current_fingerprint(run)) if isinstance(recorded, dict) else ["no fingerprint"]
    if wrong:
        return "; ".join(wrong)
    if threshold != recorded_threshold(run):
        return "its recorded threshold is not the run's"
    return None


def _current_fingerprint(run: Path) -> dict[str, Any]:
    return run_fingerprint(run, read_config(run / CONFIG_NAME))


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))


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
