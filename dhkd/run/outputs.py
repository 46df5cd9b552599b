"""The output folder of ``dhkd predict``: what it holds, how it is recognised, its PNGs.

::

    OUT/.dhkd-predict   written first: the folder is a predict output (never scored as input)
    OUT/scores.csv      path, score, flagged
    OUT/maps/NAME.png   the anomaly map in colour, at the image's own size
    OUT/overlays/NAME.png  that map over the image
    OUT/masks/NAME.png  white where the map is above the threshold

A folder holding the marker, or ``scores.csv`` beside ``maps/``, ``overlays/`` or ``masks/`` (one
written before the marker existed), is a predict output: :func:`is_output_folder`. A predict that
fails removes what it wrote (:class:`OutputFolder`), so no half-made folder is left.

The PNGs are made at full size with bounded memory: the map is upsampled once in float32, coloured
through a 256-entry uint8 table (matplotlib's jet, the same colours as ``colormaps["jet"]``) and
blended with the image a band of rows at a time, about 11 bytes a pixel in all (the image's 3
included), against about 58 when the colour map and overlay were float64 images.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dhkd.errors import DhkdError
from dhkd.io import atomic_write, atomic_write_text, inside, remove_stale_temporaries

MARKER_NAME = ".dhkd-predict"
SCORES_NAME = "scores.csv"
OUTPUT_FOLDERS = ("maps", "overlays", "masks")  # one PNG per image in each, named after the image
#: Image rows blended at a time in :func:`render`: bounds the float32 temporaries to a band.
BAND_ROWS = 256
OVERLAY_WEIGHT = 0.45  # the map's share of an overlay pixel (the image's: the rest)


def is_output_folder(folder: Path) -> bool:
    """Whether ``folder`` is one ``dhkd predict`` wrote (its marker, or scores.csv beside its PNG folders)."""
    folder = Path(folder)
    return (folder / MARKER_NAME).is_file() or ((folder / SCORES_NAME).is_file()
                                                 and any((folder / name).is_dir() for name in OUTPUT_FOLDERS))


def check_out(out: Path) -> None:
    """Refuse an ``--out`` that is a file, or a folder with a file where a PNG folder goes."""
    if out.exists() and not out.is_dir():
        raise DhkdError(f"--out {out} is a file, not a folder: dhkd predict writes a folder (scores.csv, "
                        f"{', '.join(OUTPUT_FOLDERS)})", f"give a folder, e.g. --out {out.with_suffix('')}-scored")
    for name in (*OUTPUT_FOLDERS, SCORES_NAME):
        target = out / name
        if name != SCORES_NAME and target.exists() and not target.is_dir():
            raise DhkdError(f"{target} is a file where dhkd predict writes the folder {name}/",
                            "choose another --out, or move that file away first")
        if name == SCORES_NAME and target.is_dir():
            raise DhkdError(f"{target} is a folder where dhkd predict writes {SCORES_NAME}",
                            "choose another --out, or move that folder away first")


class OutputFolder:
    """The folders and files one predict made under ``out``; on an error, those are removed again
    (files it wrote, then the folders it created, when empty), never anything it did not make."""

    def __init__(self, out: Path, folders: Sequence[str]) -> None:
        self.out, self.folders = Path(out), tuple(folders)
        self.created: list[Path] = []
        self.written: list[Path] = []

    def __enter__(self) -> "OutputFolder":
        check_out(self.out)
        for folder in (self.out, *(self.out / name for name in self.folders)):
            if not folder.is_dir():
                try:
                    folder.mkdir(parents=True)
                except OSError as error:
                    raise DhkdError(f"cannot make the output folder {folder}: {error.strerror or error}",
                                    "choose an output folder you can write to") from None
                self.created.append(folder)
            elif folder != self.out:
                remove_stale_temporaries(folder, any_name=True)  # once per folder, not per image
        marker = self.out / MARKER_NAME
        if not marker.exists():
            self.write_text(marker, "written by dhkd predict: the outputs of a scoring run, never scored as input\n")
        return self

    def write_text(self, path: Path, text: str) -> None:
        atomic_write_text(inside(path, self.out, "predict output"), text)
        self.written.append(path)

    def write_png(self, folder: str, name: str, pixels: np.ndarray) -> None:
        target = inside(self.out / folder / name, self.out, "predict output")
        atomic_write(target, lambda tmp: Image.fromarray(pixels).save(tmp, format="PNG"), clean=False)
        self.written.append(target)  # list.append is atomic: writer threads share it

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        if kind is None:
            return
        for path in self.written:
            try:
                path.unlink()
            except OSError:
                pass
        for folder in reversed(self.created):
            try:
                folder.rmdir()  # only when empty: what was there before stays
            except OSError:
                pass


def jet_table() -> np.ndarray:
    """uint8 (256, 3): ``colormaps["jet"]`` at its 256 levels, as ``(colormap(x)[..., :3] * 255).astype(uint8)``."""
    from matplotlib import colormaps

    return (colormaps["jet"](np.arange(256))[:, :3] * 255).astype(np.uint8)


def render(original: np.ndarray, amap: torch.Tensor, threshold: float, folders: Sequence[str],
           write: "OutputFolder", name: str, table: np.ndarray) -> None:
    """The PNGs of ``folders`` for one image, at the original's size, from the map's part over it.

    Colours: 0 at blue, the threshold at the middle green, twice the threshold and more at red.
    Each PNG is written and freed before the next is made."""
    height, width = original.shape[:2]
    full = F.interpolate(amap[None, None].float(), size=(height, width), mode="bilinear",
                         align_corners=False)[0, 0].numpy()
    scale = np.float32(2 * threshold if threshold > 0 else max(float(full.max()), 1e-12))
    colour = np.empty((height, width, 3), np.uint8) if {"maps", "overlays"} & set(folders) else None
    if colour is not None:
        for top in range(0, height, BAND_ROWS):
            band = full[top:top + BAND_ROWS]
            level = np.clip(band / scale, 0, 1) * np.float32(256)  # matplotlib: x * N, N - 1 at 1.0
            colour[top:top + BAND_ROWS] = table[np.minimum(level.astype(np.int32), 255)]
        if "maps" in folders:
            write.write_png("maps", name, colour)
        if "overlays" in folders:
            for top in range(0, height, BAND_ROWS):
                rows = slice(top, top + BAND_ROWS)
                blended = (np.float32(1 - OVERLAY_WEIGHT) * original[rows] + np.float32(OVERLAY_WEIGHT) * colour[rows])
                colour[rows] = np.rint(blended).astype(np.uint8)  # in place: the map's colours are written
            write.write_png("overlays", name, colour)
        del colour
    if "masks" in folders:
        write.write_png("masks", name, np.where(full > threshold, np.uint8(255), np.uint8(0)))


def output_root_of(path: Path) -> Path | None:
    """The predict output folder ``path`` lies in (or is), None when it lies in none."""
    for folder in (path, *path.parents):
        if folder.is_dir() and is_output_folder(folder):
            return folder
    return None


def same_or_inside(path: Path, folder: Path) -> bool:
    resolved, base = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    return resolved == base or base in resolved.parents
