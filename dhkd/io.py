"""Atomic file writes: a temporary file in the same folder, then a rename.

A kill at any moment leaves either the previous good file or the new one, never half of one.
A full disk or an unwritable folder leaves the previous file as well, and ends in a
:class:`DhkdError` naming the path and, for a full disk, how much space the file needed.
The new file gets the replaced file's mode, or the umask's for a new one (never mkstemp's 0600).
A temporary file is named after its path and its writer's PID (``.NAME.PID.XXXX.tmp``): one left
by a killed writer is removed by the next write of that path, once that PID no longer runs.

:func:`plain_name` and :func:`inside` are the checks that keep every write under the folder the
user gave: a name from a file or the command line is one plain path part, and a joined path
stays under its folder.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

from dhkd.errors import DhkdError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
NOT_ALLOWED = (errno.EACCES, errno.EPERM, errno.EROFS)
#: How torch.save's writer (PyTorchStreamWriter) says that a write came up short (a full disk, a quota).
SHORT_WRITE_SIGNS = ("unexpected pos", "file write failed")


_umask_guard = threading.Lock()
def plain_name_problem(name: object) -> str | None:
    """Why ``name`` is not one plain path part (None when it is): a name that becomes a folder
    may hold no ``/`` or ``\\``, may not be empty, ``.``/``..`` or start with a dot."""
    if not isinstance(name, str) or not name.strip():
        return "it is empty"
    if "/" in name or "\\" in name or "\0" in name:
        return "it holds a path separator"
    if name.startswith("."):
        return "it starts with a dot"
    if name != name.strip() or len(name) > 100:
        return "it has spaces around it or is over 100 characters"
    return None


def plain_name(name: str, what: str, fix: str) -> str:
    """``name`` when it is one plain path part (:func:`plain_name_problem`), else a :class:`DhkdError`."""
    problem = plain_name_problem(name)
    if problem:
        raise DhkdError(f"{what} {name!r} is not a plain name ({problem}): it becomes a folder name, "
                        "which must stay inside the output folder", fix)
    return name


def inside(path: Path, folder: Path, what: str = "output") -> Path:
    """``path`` when it lies under ``folder`` (after resolving ``..`` and links), else a :class:`DhkdError`."""
    resolved, base = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    if resolved != base and base not in resolved.parents:
        raise DhkdError(f"refused to write the {what} {path}: it is outside the folder {folder}",
                        "this is a bug in the kit or a planted link; please report it")
    return Path(path)


def current_umask() -> int:
    with _umask_guard:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _new_mode(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o7777  # the replaced file's
    except OSError:
        return 0o666 & ~current_umask()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(path: Path, any_name: bool = False) -> list[Path]:
    """Temporary files of ``path`` (with ``any_name``: of any file in the folder ``path``) left by
    writers that were killed (their PID no longer runs)."""
    folder = Path(path) if any_name else Path(path).parent
    name = r".+" if any_name else re.escape(Path(path).name)
    pattern = re.compile(rf"\.{name}\.(\d+)\.[^.]+\.tmp")
    removed = []
    try:
        candidates = list(folder.iterdir())
    except OSError:
        return removed
    for candidate in candidates:
        match = pattern.fullmatch(candidate.name)
        if match and int(match.group(1)) != os.getpid() and not _pid_alive(int(match.group(1))):
            try:
                candidate.unlink()
                removed.append(candidate)
            except OSError:
                pass
    return removed


def atomic_write(path: Path, write: Callable[[Path], None], size_hint: int | None = None,
                 clean: bool = True) -> None:
    """Call ``write(tmp_path)`` and move the result onto ``path`` in one rename.

    ``size_hint``: about how many bytes the file takes (said when the disk is full). ``clean``:
    first remove the temporaries of ``path`` that killed writers left (a writer of many files in
    one folder passes False and calls :func:`remove_stale_temporaries` once for the folder)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if clean:
            remove_stale_temporaries(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise write_error(path, error, size_hint) from None
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, _new_mode(path))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        if error.errno not in NO_SPACE + NOT_ALLOWED:
            raise
        written = os.path.getsize(tmp) if os.path.exists(tmp) else 0
        raise write_error(path, error, max(size_hint or 0, written) or None, at_least=size_hint is None) from None
    except RuntimeError as error:  # torch.save's C++ writer: a short write is "unexpected pos", no errno
        if not any(sign in str(error) for sign in SHORT_WRITE_SIGNS):
            raise
        raise short_write_error(path, error, size_hint) from None
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


def short_write_error(path: Path, error: RuntimeError, needed: int | None) -> DhkdError:
    """A :class:`DhkdError` for a writer that stopped partway without an errno (torch.save's C++ writer):
    a full disk when the space left is less than the file needs, else named as it is."""
    free = _free_bytes(path.parent)
    if needed and free is not None and free < needed:
        return write_error(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), needed)
    kept = " (the previous file is unchanged)" if path.exists() else ""
    first = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
    return DhkdError(f"the write of {path} stopped partway ({first}){kept}; a full disk or quota is the usual cause"
                     + (f" ({_size(free)} free there)" if free is not None else ""),
                     "free space on that disk (or raise the quota), or write to another folder")


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
