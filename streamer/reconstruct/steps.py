"""Named, timed steps of a reconstruction (the per-step split ``reconstruct --json`` reports)."""

from __future__ import annotations

import time
from collections.abc import Callable


class StepClock:
    """Times consecutive steps: ``clock("detect")`` ends the previous step and starts this one.

    Args:
        progress: called with each step's name when it starts (e.g. to move a progress bar).
    """

    def __init__(self, progress: Callable[[str], None] | None = None) -> None:
        self.progress = progress
        self.seconds: dict[str, float] = {}
        self._current: str | None = None
        self._started = time.perf_counter()

    def __call__(self, name: str) -> None:
        self._close()
        self._current, self._started = name, time.perf_counter()
        self.seconds[name] = 0.0
        if self.progress is not None:
            self.progress(name)

    def done(self) -> dict[str, float]:
        """End the last step; seconds per step, in order."""
        self._close()
        self._current = None
        return dict(self.seconds)

    def _close(self) -> None:
        if self._current is not None:
            self.seconds[self._current] = time.perf_counter() - self._started
