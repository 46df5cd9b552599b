"""A ``with`` block that calls a method every few seconds on a daemon thread while it runs."""

from __future__ import annotations

import threading
from typing import Any


class Periodic:
    """Calls :meth:`tick` every ``every`` seconds while the ``with`` block runs (and once more
    at its end when ``final_tick``). The work inside the block stays in the calling thread, so
    Ctrl-C reaches it as usual."""

    final_tick = False

    def __init__(self, every: float) -> None:
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def tick(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.tick()

    def __enter__(self) -> "Periodic":
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()
        if self.final_tick:
            self.tick()
