"""Atomic file writes: a temporary file in the same folder, then a rename.

A kill at any moment leaves either the previous good file or the new one, never half of one.
A full disk or an unwritable folder leaves the previous file as well, and ends in a
:class:`DhkdError` naming the path and, for a full disk, how much space the file needed.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from dhkd.errors import DhkdError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
NOT_ALLOWED = (errno.EACCES, errno.EPERM, errno.EROFS)


def atomic_write(path: Path, write: Callable[[Path], None], size_hint: int | None = None) -> None:
    """Call ``write(tmp_path)`` and move the result onto ``path`` in one rename.

    ``size_hint``: about how many bytes the file takes (said when the disk is full)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise write_error(path, error, size_hint) from None
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        if error.errno not in NO_SPACE + NOT_ALLOWED:
            raise
        written = os.path.getsize(tmp) if os.path.exists(tmp) else 0
        raise write_error(path, error, max(size_hint or 0, written) or None, at_least=size_hint is None) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_error(path: Path, error: OSError, needed: int | None = None, at_least: bool = False) -> DhkdError:
    """A :class:`DhkdError` for a failed write of ``path``: which path, why, and the space it needed."""
    kept = " (the previous file is unchanged)" if path.exists() else ""
    if error.errno in NO_SPACE:
        free = _free_bytes(path.parent)
        need = f"; it needs {'at least ' if at_least else 'about '}{_size(needed)}" if needed else ""
        have = f", {_size(free)} are free there" if free is not None else ""
        return DhkdError(f"no space left on the device to write {path}{kept}{need}{have}",
                         f"free space on that disk (or raise the quota), or write to another folder")
    if error.errno in NOT_ALLOWED:
        why = "the file system is read-only" if error.errno == errno.EROFS else "permission denied"
        return DhkdError(f"cannot write {path}: {why}{kept}", "choose an output folder you can write to, "
                         "or make this one writable")
    return DhkdError(f"cannot write {path}: {error.strerror or error}{kept}", "choose an output folder you can write to")


def _free_bytes(folder: Path) -> int | None:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def atomic_write_text(path: Path, text: str) -> None:
    data = text.encode()
    atomic_write(path, lambda tmp: tmp.write_bytes(data), size_hint=len(data))


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
