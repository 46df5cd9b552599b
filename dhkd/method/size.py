"""Image sizes as the method's functions take them: one side (a square) or ``(height, width)``."""

from __future__ import annotations

Size = int | tuple[int, int]


def pair(size: Size) -> tuple[int, int]:
    """``(height, width)`` of a size given as one side or as a pair."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
