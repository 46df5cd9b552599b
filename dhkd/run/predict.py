"""``dhkd predict``: score new images with a trained run, as a factory would.

For each image: its score (the maximum of its anomaly map, as in evaluation; with the aspect kept,
of the image's own part, not its padding), whether it is flagged (score above the threshold), and
three PNGs at the image's own size (the map's part over the image, resized back to it): the anomaly map in
colour (jet, 0 at blue, the threshold at the middle green, twice the threshold and more at red),
an overlay of that map on the image, and the binary mask (white where the map is above the
threshold). ``scores.csv`` lists path, score, flagged.

The default threshold is the one ``dhkd evaluate`` recorded in the run's metrics.json, chosen
from the defect-free test images only (see :func:`dhkd.run.evaluate.normal_threshold`): a factory
has good parts to calibrate on, rarely labelled defects.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from dhkd.data.files import IMAGE_SUFFIXES, Item, check_item, is_ignored, open_image, raise_problems, run_parallel, to_8bit
from dhkd.data.fit import Fit
from dhkd.errors import DhkdError
from dhkd.run.evaluate import batch_maps, load_model
from dhkd.run.folder import METRICS_NAME
from dhkd.io import atomic_write, atomic_write_text, inside, plain_name, remove_stale_temporaries
from dhkd.run.device import resolve_device
from dhkd.run.onnx_scoring import OnnxScorer, check_engine, check_matches_run, open_onnx, run_onnx

SCORES_NAME = "scores.csv"
OUTPUT_FOLDERS = ("maps", "overlays", "masks")  # one PNG per image in each, named after the image


def predict(run: str | Path | None, inputs: Sequence[str | Path] | str | Path, out: str | Path | None = None,
            threshold: float | None = None, device: str = "auto", batch_size: int | None = None,
            progress: bool = True, engine: str = "torch", model: str | Path | None = None) -> pd.DataFrame:
    """Score image files and folders with the run in ``run``; write the outputs to ``out`` (if given).

    ``engine``: torch (eager, the run's checkpoint) or onnxruntime (the run's ``dhkd export``, made
    on first use as ``RUN/model.onnx``; or the file ``model``, which needs no run folder and brings
    its recorded threshold). Returns a table with the columns path, score, flagged; ``table.attrs``
    holds the threshold, how it was chosen, the engine, and the images per second (decoding and
    writing included, model loading not).
    """
    engine = check_engine("onnxruntime" if model is not None else engine)
    if run is None and model is None:
        raise DhkdError("nothing to score with: no run and no model file", "give --run RUN, or --model FILE.onnx")
    run = Path(run) if run is not None else None
    inputs = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    paths = collect_images(inputs)
    given = (float(threshold), "given") if threshold is not None else run_threshold(run) if run is not None else None
    _, bad = run_parallel(check_item, [Item(p, "good", None) for p in paths], "checking", progress=False)
    raise_problems(bad, "the images to score")
    if engine == "onnxruntime":
        scorer = open_onnx(model if model is not None else run_onnx(run, progress), device)
        if model is not None and run is not None:
            check_matches_run(scorer, run)
        fit, default_batch = scorer.fit, scorer.batch_size
        score_batch = lambda squares: torch.from_numpy(scorer.maps(squares)[0])  # noqa: E731
    else:
        resolved = resolve_device(device)
        torch_model, config = load_model(run, resolved)
        fit, default_batch = config.data.fit(), config.eval.batch_size
        score_batch = lambda squares: batch_maps(torch_model, torch.from_numpy(squares).to(resolved), config,  # noqa: E731
                                                 resolved).float()
    threshold, how = given if given is not None else file_threshold(scorer)
    batch = max(1, batch_size or default_batch)
    names = output_names(paths)
    out = Path(out) if out is not None else None
    if out is not None:
        for folder in OUTPUT_FOLDERS:
            (out / folder).mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(out / folder, any_name=True)  # once per folder, not per image
    scores: list[float] = []
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=4) as pool, tqdm(total=len(paths), desc="predict", unit="img",
                                                          disable=not progress) as bar:
        writes = []
        for start in range(0, len(paths), batch):
            chunk = paths[start:start + batch]
            originals, inputs = zip(*pool.map(lambda p: _decode(p, fit), chunk))
            maps = score_batch(np.stack(inputs)).cpu()
            boxes = [fit.box(original.shape[1], original.shape[0]) for original in originals]
            own = [amap[top:top + h, left:left + w] for amap, (top, left, h, w) in zip(maps, boxes)]  # padding cut off
            scores += [float(part.max()) for part in own]
            if out is not None:
                for original, part, name in zip(originals, own, names[start:start + batch]):
                    writes.append(pool.submit(_write_outputs, out, name, original, part, threshold))
            bar.update(len(chunk))
        for write in writes:
            write.result()
    seconds = time.perf_counter() - started
    table = pd.DataFrame({"path": [str(p) for p in paths], "score": scores,
                          "flagged": [score > threshold for score in scores]})
    table.attrs.update({"threshold": threshold, "threshold_how": how, "engine": engine, "seconds": seconds,
                        "images_per_second": len(paths) / seconds if seconds > 0 else float("inf")})
    if out is not None:
        atomic_write_text(out / SCORES_NAME, table.to_csv(index=False))
    return table


def collect_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Image files given, and the images in folders given (recursively, sorted); problems as one error."""
    found: list[Path] = []
    for given in map(Path, inputs):
        if given.is_dir():
            found += sorted(p for p in given.rglob("*")
                            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not any(map(_is_ignored_part, p.parts)))
        elif given.is_file():
            if given.suffix.lower() not in IMAGE_SUFFIXES:
                raise DhkdError(f"{given} is not an image (suffix {given.suffix or '(none)'!r})",
                                f"give image files ({', '.join(IMAGE_SUFFIXES)}) or folders of them")
            found.append(given)
        else:
            raise DhkdError(f"{given} does not exist", "give image files or folders of images")
    if not found:
        raise DhkdError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, inputs))}",
                        "give image files or folders that hold images")
    return list(dict.fromkeys(found))


def _is_ignored_part(part: str) -> bool:
    return is_ignored(Path(part))


def run_threshold(run: Path) -> tuple[float, str]:
    """The threshold ``dhkd evaluate`` recorded in the run, and how it was chosen."""
    path = run / METRICS_NAME
    recorded = json.loads(path.read_text()).get("threshold") if path.exists() else None
    if not recorded:
        raise DhkdError(f"the run {run} has no recorded threshold (it was not evaluated with this version)",
                        f"evaluate it first (dhkd evaluate --run {run} --json {run}/metrics.json) or pass --threshold T")
    return float(recorded["value"]), recorded["how"]


def file_threshold(scorer: OnnxScorer) -> tuple[float, str]:
    """The threshold an exported file recorded, and how it was chosen."""
    if scorer.threshold is None:
        raise DhkdError(f"{scorer.path} records no threshold (its run was not evaluated before dhkd export)",
                        "pass --threshold T, or evaluate the run and export it again")
    return float(scorer.threshold["value"]), scorer.threshold["how"]


def output_names(paths: Sequence[Path]) -> list[str]:
    """A PNG name per image, unique and one plain file name (never a path): its stem, with the
    folders above it added (``a__x``) where stems repeat, its suffix (``x_jpg``) where only that
    differs, and a number where names still collide (also on a case-insensitive disk)."""
    if not paths:
        return []
    parts = [list(Path(os.path.abspath(p)).parts[1:]) for p in paths]  # no root: never absolute
    suffixes = [Path(p).suffix.lstrip(".").lower() for p in paths]
    names = [Path(p[-1]).stem for p in parts]  # when nothing below tells them apart: numbered
    tries = [(depth, with_suffix) for with_suffix in (False, True) for depth in range(1, max(map(len, parts)) + 1)]
    for depth, with_suffix in tries:
        candidates = ["__".join(p[-depth:-1] + [Path(p[-1]).stem + (f"_{suffix}" if with_suffix and suffix else "")])
                      for p, suffix in zip(parts, suffixes)]
        if len({n.lower() for n in candidates}) == len(candidates):
            names = candidates
            break
    used: set[str] = set()
    unique = []
    for name in names:
        name = name.lstrip(".") or "image"  # no hidden files
        candidate, n = name, 1
        while candidate.lower() in used:
            n += 1
            candidate = f"{name}-{n}"
        used.add(candidate.lower())
        unique.append(plain_name(f"{candidate}.png", "an output name", "rename the image"))
    return unique


def _decode(path: Path, fit: Fit) -> tuple[np.ndarray, np.ndarray]:
    """The image as 8-bit RGB at its own size (HWC) and brought to the model's input (CHW)."""
    rgb = to_8bit(open_image(path, "image", decode=True)).convert("RGB")
    return np.asarray(rgb), np.ascontiguousarray(fit.image(rgb).transpose(2, 0, 1))


def _write_outputs(out: Path, name: str, original: np.ndarray, amap: torch.Tensor, threshold: float) -> None:
    """Map, overlay and mask PNGs at the original image's size, from the map's part over the image."""
    from matplotlib import colormaps

    height, width = original.shape[:2]
    full = F.interpolate(amap[None, None], size=(height, width), mode="bilinear", align_corners=False)[0, 0].numpy()
    scale = 2 * threshold if threshold > 0 else max(float(full.max()), 1e-12)
    colour = (colormaps["jet"](np.clip(full / scale, 0, 1))[..., :3] * 255).astype(np.uint8)
    overlay = (0.55 * original + 0.45 * colour).round().astype(np.uint8)
    for folder, pixels in (("maps", colour), ("overlays", overlay), ("masks", ((full > threshold) * 255).astype(np.uint8))):
        target = inside(out / folder / name, out, "predict output")
        atomic_write(target, lambda tmp, pixels=pixels: Image.fromarray(pixels).save(tmp, format="PNG"), clean=False)
