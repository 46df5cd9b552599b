"""``dhkd export``: a trained run as one ONNX file, image in, anomaly map and image score out.

The file holds the whole scoring path of :func:`dhkd.run.evaluate.batch_maps`: the ImageNet
normalisation, the teacher, every addition the run has on, the student, the three ``1 - cos``
maps, their bilinear upsampling and sum, the Gaussian blur and the maximum. Its input is what
``dhkd predict`` feeds the model::

    images       uint8 (batch, 3, H, W)  RGB, each image brought to H x W as data.resize says (PIL bilinear)
    anomaly_map  float32 (batch, S, S)
    score        float32 (batch,)        the maximum of each map; flagged when above the threshold

The batch size is free. The file's metadata (:data:`METADATA_KEYS`) carries what a consumer
needs without the kit: the input size and normalisation, the output shapes, the recorded threshold
and how it was chosen, the kit version, the run's whole configuration, and its fingerprint
(:mod:`dhkd.run.fingerprint`: SHA-256 of the student's weights and of the scoring settings, and
torch eager's scores of the three check images), which ``dhkd predict`` checks before it trusts
the file. Every export is checked with
``onnx.checker`` and, where onnxruntime is installed, scored against torch eager on a few
images (:data:`MAP_TOLERANCE`); a file that disagrees is not written.

The graph is traced by torch's TorchScript exporter (``dynamo=False``), which needs only the
``onnx`` package; the dynamo exporter would need ``onnxscript`` as well.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from dhkd.config import Config, to_dict
from dhkd.data import IMAGENET_MEAN, IMAGENET_STD
from dhkd.errors import DhkdError
from dhkd.io import atomic_write
from dhkd.method import DHKD
from dhkd.method.anomaly_map import image_scores
from dhkd.run.evaluate import batch_maps, load_model
from dhkd.run.fingerprint import run_fingerprint
from dhkd.run.folder import METRICS_NAME

#: ONNX opset of the exported graph (onnxruntime 1.16 and later run it).
OPSET = 17
#: The value of the ``dhkd.format`` metadata key: what :mod:`dhkd.run.onnx_scoring` accepts.
FORMAT = "dhkd-scoring-graph/1"
INPUT_NAME = "images"
OUTPUT_NAMES = ("anomaly_map", "score")
#: Largest absolute difference allowed between the exported map and torch eager's. Maps are float32
#: of a few units and usually agree to about 1e-6 (rounding in another order); the exception is the
#: memory bank's hard shrinkage, a step at the weight 1/N: where a position's weight lies within
#: rounding of it (measured: 1 of MTD's 582 test images, a weight 1.7e-8 from the step), the item
#: drops in or out and the map moves locally by about 1.5e-4. 1e-3 stays far below what a map PNG
#: resolves (2 x threshold / 255) and scores, hence flags, agree to about 1e-6 (benchmarks/deploy.md).
MAP_TOLERANCE = 1e-3
#: The metadata keys every export carries (values are strings; JSON where structured).
METADATA_KEYS = ("dhkd.format", "dhkd.kit_version", "dhkd.input", "dhkd.outputs", "dhkd.threshold",
                 "dhkd.batch_size", "dhkd.check", "dhkd.fingerprint", "dhkd.config")
DEPLOY_EXTRA = "pip install 'dhkd[deploy]' (make setup installs it), or pip install onnx onnxruntime"


class ScoringGraph(nn.Module):
    """``uint8 images (B, 3, H, W) -> (anomaly maps (B, H, W), scores (B,))``, as ``dhkd predict`` scores."""

    def __init__(self, model: DHKD, config: Config) -> None:
        super().__init__()
        self.model = model
        self.config = config

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = batch_maps(self.model, images, self.config, torch.device("cpu")).float()
        return maps, image_scores(maps)


def export_run(run: str | Path, out: str | Path, opset: int = OPSET) -> dict[str, Any]:
    """Export the run in ``run`` to the ONNX file ``out``; returns what was written (path, bytes,
    opset, the check against torch eager, the threshold). Failures are :class:`DhkdError`."""
    onnx = require("onnx", "dhkd export")
    run, out = Path(run), Path(out)
    check_target(out)
    model, config = load_model(run, "cpu")
    model = model.to(memory_format=torch.contiguous_format)  # the file is for any consumer: plain NCHW weights
    graph = ScoringGraph(model, config).eval()
    size = config.data.shape
    height, width = size
    proto = trace(graph, size, opset, config)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as error:  # onnx.checker.ValidationError, shape inference errors
        raise DhkdError(f"the ONNX graph exported from {run} fails onnx.checker: {_first_line(error)}",
                        f"report it with {run}/config.yaml; meanwhile score with dhkd predict --engine torch") from None
    threshold = recorded_threshold(run)
    check = check_against_eager(graph, proto.SerializeToString(), size)
    with torch.no_grad():
        check_scores = [float(s) for s in graph(torch.from_numpy(check_images(size)))[1]]
    metadata = {
        "dhkd.format": FORMAT,
        "dhkd.kit_version": kit_version(),
        "dhkd.input": json.dumps({
            "name": INPUT_NAME, "dtype": "uint8", "shape": ["batch", 3, height, width], "channels": "RGB",
            "image_size": config.data.image_size, "resize_mode": config.data.resize, "resize": _resize_text(config),
            "normalisation": {"inside_graph": True, "scale": "1/255", "mean": list(IMAGENET_MEAN),
                              "std": list(IMAGENET_STD)}}),
        "dhkd.outputs": json.dumps({
            OUTPUT_NAMES[0]: {"dtype": "float32", "shape": ["batch", height, width],
                              "what": f"sum of the three 1 - cos maps, upsampled to {height} x {width} px, Gaussian "
                                      f"blur sigma {config.eval.blur_sigma:g}"},
            OUTPUT_NAMES[1]: {"dtype": "float32", "shape": ["batch"],
                              "what": "the maximum of the map; an image is flagged when its score is above the threshold"
                                      + ("; padding included: with the aspect kept, take the maximum of the map over the "
                                         "image's own part instead (as dhkd predict does)" if config.data.resize == "keep_aspect"
                                         else "")}}),
        "dhkd.threshold": json.dumps(threshold),
        "dhkd.batch_size": str(config.eval.batch_size),
        "dhkd.check": json.dumps(check),
        "dhkd.fingerprint": json.dumps({**run_fingerprint(run, config), "check_scores": check_scores}),
        "dhkd.config": yaml.safe_dump(to_dict(config), sort_keys=False),
    }
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    proto.producer_name, proto.producer_version = "dhkd", kit_version()
    proto.doc_string = (f"DHKD scoring graph of the run {run.name} ({config.model.teacher.name} teacher, profile "
                        f"{config.profile}): uint8 RGB images (batch, 3, {height}, {width}) -> anomaly_map, score")
    data = proto.SerializeToString()
    atomic_write(out, lambda tmp: tmp.write_bytes(data), size_hint=len(data))
    return {"path": str(out), "bytes": len(data), "opset": opset, "image_size": config.data.image_size,
            "height": height, "width": width, "resize": config.data.resize,
            "teacher": config.model.teacher.name, "threshold": threshold, "check": check}


def check_target(out: Path) -> None:
    """Refuse an ``--out`` that is a folder, or a file that is not one of the kit's exports (the kit
    never overwrites a file it cannot show it wrote)."""
    if out.is_dir():
        raise DhkdError(f"--out {out} is a folder; dhkd export writes one file",
                        f"name the file to write, e.g. --out {out / 'model.onnx'}")
    if out.exists() and not is_export(out):
        raise DhkdError(f"{out} exists and is not an ONNX file dhkd export wrote: it is left as it is",
                        "choose another --out, or move that file away first")


def is_export(path: Path) -> bool:
    """Whether ``path`` is an ONNX file with dhkd's format in its metadata."""
    onnx = require("onnx", "dhkd export")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # not protobuf, truncated, unreadable: not provably ours
        return False
    return any(p.key == "dhkd.format" and p.value.startswith("dhkd-scoring-graph/") for p in proto.metadata_props)


def _resize_text(config: Config) -> str:
    height, width = config.data.shape
    if config.data.resize == "keep_aspect":
        return (f"each image scaled by one factor to fit in {height} x {width} (height x width) with PIL's bilinear "
                "filter, centred, the rest filled by repeating its edge pixels, as dhkd predict does")
    return f"each image resized to {height} x {width} (height x width) with PIL's bilinear filter (aspect not kept), as dhkd predict does"


def trace(graph: ScoringGraph, size: tuple[int, int], opset: int, config: Config):
    """The traced graph as an ``onnx.ModelProto``; an exporter failure as the kit's error."""
    onnx = require("onnx", "dhkd export")
    example = torch.zeros(2, 3, *size, dtype=torch.uint8)  # 2, not 1: a traced 1 could pass for a constant
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
            torch.onnx.export(graph, (example,), buffer, dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                              output_names=list(OUTPUT_NAMES), do_constant_folding=True,
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAMES[0]: {0: "batch"},
                                            OUTPUT_NAMES[1]: {0: "batch"}})
    except Exception as error:  # torch.onnx.errors.* and tracer errors alike
        teacher = config.model.teacher.name
        on = [name for name in ("fusion", "attention", "memory") if getattr(config.model, name).enabled]
        raise DhkdError(f"torch could not export the scoring graph ({teacher} teacher, additions: "
                        f"{', '.join(on) or 'none'}, opset {opset}): {type(error).__name__}: {_first_line(error)}",
                        "try another --opset (17 is tested); meanwhile score with dhkd predict --engine torch") from None
    return onnx.load_from_string(buffer.getvalue())


def check_against_eager(graph: ScoringGraph, data: bytes, size: tuple[int, int]) -> dict[str, Any]:
    """Score three fixed images (noise, a gradient, a flat grey) with onnxruntime and with torch
    eager, at batch 3 and batch 1; the largest map difference, or a note where onnxruntime is absent."""
    try:
        import onnxruntime
    except ImportError:
        return {"checked": False, "why": "onnxruntime is not installed where the file was exported"}
    images = check_images(size)
    runtime = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        eager_maps, eager_scores = graph(torch.from_numpy(images))
    onnx_maps, onnx_scores = runtime.run(None, {INPUT_NAME: images})
    single = runtime.run(None, {INPUT_NAME: images[:1]})[0]
    map_difference = max(float(np.abs(onnx_maps - eager_maps.numpy()).max()),
                         float(np.abs(single - eager_maps[:1].numpy()).max()))
    score_difference = float(np.abs(onnx_scores - eager_scores.numpy()).max())
    if not map_difference <= MAP_TOLERANCE:
        raise DhkdError(f"the exported graph disagrees with torch eager: its maps differ by up to {map_difference:.3g} "
                        f"(allowed {MAP_TOLERANCE:g})",
                        "report it with the run's config.yaml; meanwhile score with dhkd predict --engine torch")
    return {"checked": True, "images": len(images), "max_map_difference": map_difference,
            "max_score_difference": score_difference, "tolerance": MAP_TOLERANCE,
            "onnxruntime": onnxruntime.__version__, "torch": torch.__version__}


def check_images(size: tuple[int, int]) -> np.ndarray:
    """uint8 ``(3, 3, H, W)``: seeded noise, a colour gradient and a flat grey image."""
    height, width = size
    noise = np.random.default_rng(0).integers(0, 256, (3, height, width), dtype=np.uint8)
    across, down = np.linspace(0, 255, width, dtype=np.float32), np.linspace(0, 255, height, dtype=np.float32)
    gradient = np.stack([np.broadcast_to(across, size), np.broadcast_to(down[:, None], size),
                         np.full(size, 128.0)]).astype(np.uint8)
    grey = np.full((3, height, width), 128, dtype=np.uint8)
    return np.ascontiguousarray(np.stack([noise, gradient, grey]))


def recorded_threshold(run: Path) -> dict[str, Any] | None:
    """The threshold ``dhkd evaluate`` recorded (value and how it was chosen), None if not evaluated."""
    path = run / METRICS_NAME
    try:
        recorded = json.loads(path.read_text()).get("threshold") if path.exists() else None
    except (OSError, ValueError):
        recorded = None
    if not isinstance(recorded, dict) or "value" not in recorded:
        return None
    return {"value": float(recorded["value"]), "how": str(recorded.get("how", "recorded by dhkd evaluate"))}


def require(module: str, who: str):
    """Import an optional deploy package, or say how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise DhkdError(f"{who} needs the {module} package, which is not installed", DEPLOY_EXTRA) from None


def kit_version() -> str:
    from dhkd import __version__

    return __version__


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
