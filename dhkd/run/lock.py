"""Run locks: one writer per run or results folder at a time.

Two trainings (or two ``make reproduce``) writing the same folder at once would overwrite
each other's checkpoints and tables. The first takes ``.dhkd.lock`` in the folder (created
atomically, holding its PID, host, start time and command); the second refuses, naming the
first. A lock whose process is gone (same host, PID no longer running, or running but
started after the lock was written: a reused PID) is taken over, so a crash or ``kill -9``
never leaves a folder locked for good (nor does a lock file left unreadable).
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from dhkd.errors import DhkdError

LOCK_NAME = ".dhkd.lock"
FRESH_SECONDS = 10  # an unreadable lock younger than this may be one being written: not taken over


class FolderBusy(DhkdError):
    """Another live process holds the folder's lock."""


def _process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux ``/proc``), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _alive(holder: dict[str, Any]) -> bool:
    """Whether the process that wrote ``holder`` still runs (assumed so on another host)."""
    if holder.get("host") != socket.gethostname():
        return True
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by someone else
    started = _process_start(pid)
    return started is None or holder.get("process_start") in (None, started)


def _describe(holder: dict[str, Any]) -> str:
    return (f"process {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"
            f"{': ' + holder['command'] if holder.get('command') else ''}")


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return float("inf")


def _read(path: Path) -> dict[str, Any] | None:
    try:
        holder = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # half-written or garbage: treated as a dead holder
    return holder if isinstance(holder, dict) else {}


def acquire(folder: Path, what: str = "run folder") -> Path:
    """Take ``folder``'s lock or raise :class:`FolderBusy` naming its holder; returns the lock's path."""
    path = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DhkdError(f"cannot write to the {what} {folder} ({error.strerror})", "choose a folder you can write to") from None
    me = {"pid": os.getpid(), "host": socket.gethostname(), "process_start": _process_start(os.getpid()),
          "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
          "command": " ".join(sys.argv)[:300]}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except OSError as error:
            if not isinstance(error, FileExistsError):
                raise DhkdError(f"cannot write to the {what} {folder} ({error.strerror})",
                                "choose a folder you can write to") from None
            holder = _read(path)
            if holder is None:
                continue  # released meanwhile: try again
            if holder.get("pid") == os.getpid() and holder.get("host") == me["host"]:
                raise FolderBusy(f"this process already holds the lock of {folder}", "do not nest two runs on one folder")
            if not holder and _age(path) < FRESH_SECONDS:
                raise FolderBusy(f"another process is taking the lock of the {what} {folder} right now",
                                 "wait for it to finish, or write elsewhere")
            if holder and _alive(holder):
                raise FolderBusy(f"the {what} {folder} is in use by {_describe(holder)}",
                                 f"wait for it to finish, or write elsewhere; if that process is gone for good "
                                 f"(another machine sharing the folder), delete {path}")
            stale = path.with_name(f"{LOCK_NAME}.stale-{os.getpid()}")
            try:
                os.replace(path, stale)  # one of several racing takers wins the rename
                stale.unlink()
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w") as handle:
            json.dump(me, handle)
        return path
    raise FolderBusy(f"could not take the lock {path}: other processes keep taking it", "try again in a moment")


def release(path: Path) -> None:
    """Remove our lock (only if it is still ours)."""
    holder = _read(path)
    if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


@contextmanager
def folder_lock(folder: str | Path, what: str = "run folder") -> Iterator[Path]:
    """Hold ``folder``'s lock for the duration of the ``with`` block."""
    path = acquire(Path(folder), what)
    try:
        yield path
    finally:
        release(path)
