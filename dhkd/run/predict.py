"""``dhkd predict``: score new images with a trained run, as a factory would.

For each image: its score (the maximum of its anomaly map, as in evaluation; with the aspect kept,
of the image's own part, not its padding), whether it is flagged (score above the threshold), and
three PNGs at the image's own size (the map's part over the image, resized back to it): the anomaly map in
colour (jet, 0 at blue, the threshold at the middle green, twice the threshold and more at red),
an overlay of that map on the image, and the binary mask (white where the map is above the
threshold). ``scores.csv`` lists path, score, flagged.

The default threshold is the one ``dhkd evaluate`` recorded in the run's metrics.json, chosen
from defect-free images alone, held back from training (see :func:`dhkd.run.evaluate.normal_threshold`):
a factory has good parts to calibrate on, rarely labelled defects.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import json
import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm.auto import tqdm

from dhkd.data.files import (IMAGE_SUFFIXES, WORKERS, BadFile, Item, image_size_of, is_ignored, open_image,
                             raise_problems, run_parallel, to_8bit)
from dhkd.data.fit import Fit
from dhkd.errors import DhkdError
from dhkd.run.evaluate import batch_maps, load_model
from dhkd.run.folder import METRICS_NAME
from dhkd.io import plain_name
from dhkd.run.device import resolve_device
from dhkd.run.onnx_scoring import OnnxScorer, check_engine, check_matches_run, open_onnx, run_onnx
from dhkd.run.outputs import (OUTPUT_FOLDERS, SCORES_NAME, OutputFolder, check_out, is_output_folder, jet_table,
                              output_root_of, render, same_or_inside)

#: The largest image predict decodes by default (100 megapixels, e.g. 10000 x 10000): memory for
#: one image at full size is about 11 bytes a pixel (1.1 GB here); ``--max-pixels`` raises it.
MAX_PIXELS = 100_000_000
#: Originals of up to this many pixels are kept from decoding to writing their PNGs; larger ones
#: are decoded again when written, one at a time (:data:`LARGE` holds at most one in memory).
KEEP_PIXELS = 4_000_000
#: Images whose PNGs may wait to be written, per image of a batch: bounds what waits in memory.
QUEUED_PER_BATCH_IMAGE = 2


def predict(run: str | Path | None, inputs: Sequence[str | Path] | str | Path, out: str | Path | None = None,
            threshold: float | None = None, device: str = "auto", batch_size: int | None = None,
            progress: bool = True, engine: str = "torch", model: str | Path | None = None,
            max_pixels: int = MAX_PIXELS, outputs: Sequence[str] = OUTPUT_FOLDERS) -> pd.DataFrame:
    """Score image files and folders with the run in ``run``; write the outputs to ``out`` (if given).

    ``engine``: torch (eager, the run's checkpoint) or onnxruntime (the run's ``dhkd export``, made
    on first use as ``RUN/model.onnx``; or the file ``model``, which needs no run folder and brings
    its recorded threshold). ``max_pixels``: the largest image accepted (:data:`MAX_PIXELS`).
    ``outputs``: which PNG folders to write (any of maps, overlays, masks; none for scores.csv only).
    Folders that are predict outputs (``out`` itself, or any with a ``.dhkd-predict`` marker) are
    never scored. Returns a table with the columns path, score, flagged; ``table.attrs`` holds the
    threshold, how it was chosen, the engine, and the images per second (decoding and writing
    included, model loading not). A failure leaves nothing it wrote behind.
    """
    engine = check_engine("onnxruntime" if model is not None else engine)
    if run is None and model is None:
        raise DhkdError("nothing to score with: no run and no model file", "give --run RUN, or --model FILE.onnx")
    outputs = check_outputs(outputs)
    run = Path(run) if run is not None else None
    out = Path(out) if out is not None else None
    if out is not None:
        check_out(out)
    inputs = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    paths = collect_images(inputs, out)
    given = (float(threshold), "given") if threshold is not None else run_threshold(run) if run is not None else None
    with pixel_limit(max_pixels):  # PIL checks its own limit on opening a file, before check_pixels can say more
        sizes, bad = run_parallel(image_size_of, [Item(p, "good", None) for p in paths], "checking", progress=False)
    raise_problems(bad, "the images to score")
    check_pixels(paths, sizes, max_pixels)
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
    started = time.perf_counter()
    with pixel_limit(max_pixels), (OutputFolder(out, outputs) if out is not None else nullcontext()) as folder:
        scores = _score_all(paths, sizes, fit, score_batch, batch, folder, names, threshold, outputs, progress)
        seconds = time.perf_counter() - started
        table = pd.DataFrame({"path": [str(p) for p in paths], "score": scores,
                              "flagged": [score > threshold for score in scores]})
        table.attrs.update({"threshold": threshold, "threshold_how": how, "engine": engine, "seconds": seconds,
                            "images_per_second": len(paths) / seconds if seconds > 0 else float("inf")})
        if folder is not None:
            folder.write_text(out / SCORES_NAME, table.to_csv(index=False))
    return table


def _score_all(paths: list[Path], sizes: list[tuple[int, int]], fit: Fit, score_batch, batch: int,
               folder: OutputFolder | None, names: list[str], threshold: float, outputs: tuple[str, ...],
               progress: bool) -> list[float]:
    """Decode, score and (with a folder) write every image; the scores in order.

    Decoding runs on a few threads, the model on the caller's, the PNGs on two writer threads, at
    most :data:`QUEUED_PER_BATCH_IMAGE` batches behind; a large original (over :data:`KEEP_PIXELS`)
    is never kept between decoding and writing, and only one is in memory at a time."""
    scores: list[float] = []
    keep = folder is not None and bool(outputs)
    table = jet_table() if keep else None
    with ThreadPoolExecutor(max_workers=WORKERS) as decoders, ThreadPoolExecutor(max_workers=2) as writers, \
            tqdm(total=len(paths), desc="predict", unit="img", disable=not progress) as bar:
        waiting: deque = deque()
        for start in range(0, len(paths), batch):
            chunk = list(zip(paths[start:start + batch], sizes[start:start + batch]))
            decoded = list(decoders.map(lambda ps: _decode(ps[0], fit, keep, _large(ps[1])), chunk))
            maps = score_batch(np.stack([square for square, _ in decoded])).cpu()
            for (path, (width, height)), (_, original), amap, name in zip(chunk, decoded, maps, names[start:start + batch]):
                top, left, h, w = fit.box(width, height)
                own = amap[top:top + h, left:left + w]  # padding cut off
                scores.append(float(own.max()))
                if keep:
                    waiting.append(writers.submit(_write, folder, path, original, own, threshold, outputs, name, table))
            while len(waiting) > QUEUED_PER_BATCH_IMAGE * batch:
                waiting.popleft().result()
            bar.update(len(chunk))
        while waiting:
            waiting.popleft().result()
    return scores


LARGE = threading.BoundedSemaphore(1)  # held while a large original (over KEEP_PIXELS) is in memory


def _large(size: tuple[int, int]) -> bool:
    return size[0] * size[1] > KEEP_PIXELS


def _decode(path: Path, fit: Fit, keep: bool, large: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """The image brought to the model's input (CHW), and its 8-bit RGB original (HWC) when ``keep``
    and it is not ``large`` (a large one is decoded alone, and again when its PNGs are written)."""
    with (LARGE if large else nullcontext()):
        rgb = _rgb(path)
        square = np.ascontiguousarray(fit.image(rgb).transpose(2, 0, 1))
        original = np.asarray(rgb) if keep and not large else None
        del rgb
        if large:
            release_freed_memory()
        return square, original


def _write(folder: OutputFolder, path: Path, original: np.ndarray | None, amap: torch.Tensor, threshold: float,
           outputs: tuple[str, ...], name: str, table: np.ndarray) -> None:
    """One image's PNGs; a large original (not kept) decoded again, alone."""
    if original is not None:
        render(original, amap, threshold, outputs, folder, name, table)
        return
    with LARGE:
        render(np.asarray(_rgb(path)), amap, threshold, outputs, folder, name, table)
        release_freed_memory()


def release_freed_memory() -> None:
    """Hand the memory a large image freed back to the system (glibc's malloc_trim): otherwise each
    decoding and writer thread's malloc arena keeps its share, and four 6000 x 6000 images peaked
    at 0.5 GB above one (measured with /usr/bin/time -v). A no-op where the C library has no malloc_trim."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl)
        return None


def _rgb(path: Path) -> Image.Image:
    """The image as 8-bit RGB (no copy when it is already); a file that fails to decode is the kit's error."""
    try:
        img = to_8bit(open_image(path, "image", decode=True))
    except BadFile as bad:
        raise DhkdError(bad.problem.what + " (found while decoding it; nothing was written)", bad.problem.fix) from None
    return img if img.mode == "RGB" else img.convert("RGB")


def check_outputs(outputs: Sequence[str]) -> tuple[str, ...]:
    """The PNG folders asked for, each one of :data:`OUTPUT_FOLDERS`."""
    outputs = tuple(dict.fromkeys(outputs))
    unknown = [name for name in outputs if name not in OUTPUT_FOLDERS]
    if unknown:
        raise DhkdError(f"unknown output {', '.join(map(repr, unknown))}",
                        f"choose from {', '.join(OUTPUT_FOLDERS)} (or none for scores.csv only)")
    return outputs


def check_pixels(paths: Sequence[Path], sizes: Sequence[tuple[int, int]], max_pixels: int) -> None:
    """Refuse images over ``max_pixels`` before any is decoded, naming them and how much memory they need."""
    large = [(p, s) for p, s in zip(paths, sizes) if s[0] * s[1] > max_pixels]
    if large:
        path, (width, height) = max(large, key=lambda ps: ps[1][0] * ps[1][1])
        raise DhkdError(f"{len(large)} image(s) are over dhkd predict's limit of {max_pixels:,} pixels, the largest "
                        f"{path} ({width} x {height} = {width * height:,}); scoring one at full size needs about "
                        f"{BYTES_PER_PIXEL * width * height / 2**30:.1f} GiB",
                        f"pass --max-pixels {width * height} if the memory is there, or downscale the images first")


#: Peak memory per pixel of one image handled at full size (decoded image, map, colours, PNG buffers), measured.
BYTES_PER_PIXEL = 11


@contextmanager
def pixel_limit(max_pixels: int) -> Iterator[None]:
    """PIL's decompression-bomb limit at least ``max_pixels`` while predict decodes (it was checked)."""
    before = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max(before or 0, max_pixels) if before is not None else None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = before


def collect_images(inputs: Sequence[str | Path], out: Path | None = None) -> list[Path]:
    """Image files given, and the images in folders given (recursively, sorted); problems as one error.

    Never predict's own outputs: ``out`` and any folder :func:`dhkd.run.outputs.is_output_folder`
    recognises are left out of folders walked, and refused when given."""
    found: list[Path] = []
    for given in map(Path, inputs):
        root = output_root_of(given) if given.exists() else None
        if root is not None or (out is not None and given.exists() and same_or_inside(given, out)):
            raise DhkdError(f"{given} is (in) the output folder of dhkd predict ({root or out}): its PNGs are "
                            "scores, not images to score", "give the folders of the images themselves")
        if given.is_dir():
            found += sorted(_walk(given, out))
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
    found = list(dict.fromkeys(found))
    check_text_names(found)
    return found


def _walk(folder: Path, out: Path | None) -> Iterator[Path]:
    """The image files under ``folder``, not descending into hidden folders or predict outputs."""
    skip = os.path.realpath(out) if out is not None else None
    for top, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not _is_ignored_part(d) and os.path.realpath(os.path.join(top, d)) != skip
                         and not is_output_folder(Path(top, d)))
        for name in files:
            path = Path(top, name)
            if path.suffix.lower() in IMAGE_SUFFIXES and not _is_ignored_part(name) and path.is_file():
                yield path


def check_text_names(paths: Sequence[Path]) -> None:
    """Refuse file names that are not text (not UTF-8): scores.csv names every image, so one such
    name would fail only after every PNG was written."""
    wrong = []
    for path in paths:
        try:
            str(path).encode("utf-8")
        except UnicodeEncodeError:
            wrong.append(os.fsencode(path).decode("utf-8", "backslashreplace"))
    if wrong:
        raise DhkdError(f"{len(wrong)} image name(s) are not valid UTF-8 text, e.g. {wrong[0]}: scores.csv could not "
                        "name them", "rename them to UTF-8 (e.g. convmv -f latin1 -t utf8 --notest FILES)")


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
