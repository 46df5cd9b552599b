"""Atomic file writes: a temporary file in the same folder, then a rename.

A kill at any moment leaves either the previous good file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from dhkd.errors import DhkdError


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` and move the result onto ``path`` in one rename."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise DhkdError(f"cannot write to {path.parent}: {error.strerror}", "choose an output folder you can write to") from None
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def replace_between_markers(path: Path, body: str, markers: tuple[str, str]) -> None:
    """Replace what lies between the two marker lines of a text file (a README's generated
    section) with ``body``, atomically; everything outside the markers stays as it is."""
    path = Path(path)
    start, end = markers
    text = path.read_text() if path.exists() else ""
    if start not in text or end not in text.split(start, 1)[-1]:
        raise DhkdError(f"{path} has no {start} ... {end} markers",
                        "put the two marker lines where the generated section belongs")
    before, rest = text.split(start, 1)
    _, after = rest.split(end, 1)
    atomic_write_text(path, f"{before}{start}\n{body.rstrip()}\n{end}{after}")
