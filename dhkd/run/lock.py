"""Run locks: one writer per run or results folder at a time.

Two trainings (or two ``make reproduce``) writing the same folder at once would overwrite
each other's checkpoints and tables. The first takes an exclusive ``fcntl.flock`` on
``.dhkd.lock`` in the folder and writes its PID, host, start time and command into it; the
second refuses, naming the first. The kernel holds the lock, not the file: a crash or
``kill -9`` releases it with the process, so a folder is never locked for good, and there is no
"is the holder still alive?" guess that two takers could race on.

Release removes the file while still holding the lock. A taker that opened the old file just
before sees, once it holds the lock, that the path now names another file (or none) and tries
again, so two processes never hold "the" lock at once. On a network file system flock is as
good as the server's lock support (NFSv4 and Linux's NFS client emulate it with POSIX locks).
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from dhkd.errors import DhkdError

LOCK_NAME = ".dhkd.lock"

_held: dict[Path, int] = {}  # lock path -> open descriptor, for the locks this process holds
_held_guard = threading.Lock()


class FolderBusy(DhkdError):
    """Another live process holds the folder's lock."""


def _describe(holder: dict[str, Any]) -> str:
    return (f"process {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"
            f"{': ' + holder['command'] if holder.get('command') else ''}")


def _read(path: Path) -> dict[str, Any]:
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _same_file(fd: int, path: Path) -> bool:
    try:
        mine, now = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (mine.st_dev, mine.st_ino) == (now.st_dev, now.st_ino)


def holds(folder: str | Path) -> bool:
    """Whether this process holds ``folder``'s lock."""
    return (Path(folder) / LOCK_NAME).absolute() in _held


def acquire(folder: Path, what: str = "run folder") -> Path:
    """Take ``folder``'s lock or raise :class:`FolderBusy` naming its holder; returns the lock's path."""
    folder = Path(folder)
    path = folder / LOCK_NAME
    if path.absolute() in _held:
        raise FolderBusy(f"this process already holds the lock of {folder}", "do not nest two runs on one folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DhkdError(f"cannot write to the {what} {folder} ({error.strerror})", "choose a folder you can write to") from None
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
          "command": " ".join(sys.argv)[:300]}
    for _ in range(100):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)  # the umask decides the mode
        except OSError as error:
            raise DhkdError(f"cannot write to the {what} {folder} ({error.strerror})",
                            "choose a folder you can write to") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = _read(path)
            if not holder:
                raise FolderBusy(f"another process is taking the lock of the {what} {folder} right now",
                                 "wait for it to finish, or write elsewhere") from None
            raise FolderBusy(f"the {what} {folder} is in use by {_describe(holder)}",
                             "wait for it to finish, or write elsewhere (the lock goes with that process, "
                             "however it ends)") from None
        if not _same_file(fd, path):  # released (and removed) between our open and our lock
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(me).encode())
        with _held_guard:
            _held[path.absolute()] = fd
        return path
    raise FolderBusy(f"could not take the lock {path}: other processes keep taking it", "try again in a moment")


def release(path: Path) -> None:
    """Remove and release our lock (nothing if this process does not hold it)."""
    with _held_guard:
        fd = _held.pop(Path(path).absolute(), None)
    if fd is None:
        return
    try:
        if _same_file(fd, Path(path)):
            Path(path).unlink(missing_ok=True)  # still locked: a taker that opened it retries on a new file
    finally:
        os.close(fd)  # closing the last descriptor releases the flock


@contextmanager
def folder_lock(folder: str | Path, what: str = "run folder") -> Iterator[Path]:
    """Hold ``folder``'s lock for the duration of the ``with`` block."""
    path = acquire(Path(folder), what)
    try:
        yield path
    finally:
        release(path)
