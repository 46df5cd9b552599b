"""User-facing errors.

Anything a user can fix (a wrong path, a missing mask, a bad ``--set`` value) raises
:class:`DhkdError`. The CLI prints its message and exits non-zero without a traceback, so
the message itself must say what is wrong, where, and what to do about it.
"""

from __future__ import annotations


class DhkdError(Exception):
    """A problem with the user's input or environment, explained in plain words.

    Args:
        what: what is wrong, naming the path or value concerned.
        fix: what the user can do about it (optional).
    """

    def __init__(self, what: str, fix: str | None = None) -> None:
        self.what = what
        self.fix = fix
        super().__init__(what if fix is None else f"{what}\n  fix: {fix}")
