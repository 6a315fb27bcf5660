"""Temporal filters for live tracking: the One Euro filter and per-part presence fades.

* :class:`OneEuroFilter` (Casiez, Roussel and Vogel, CHI 2012): an exponential smoother whose
  cut-off frequency rises with the signal's speed, so a still pose does not jitter and a fast
  one does not lag. Here it runs on groups of values (a joint's quaternion, the translation)
  with one speed per group, and on quaternions it keeps the hemisphere continuous.
* :class:`Fade`: a weight in [0, 1] that ramps towards 1 while a part (body, a leg, a hand, the
  face) is seen and towards 0 while it is not, eased with a smoothstep. The fitter blends each
  part between its last seen value and its fallback with it, so parts never jump or freeze.

Times are seconds; frequencies hertz.
"""

from __future__ import annotations

import math

import numpy as np

from .rotations import align_hemisphere


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray:
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff))
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """One Euro filter on arrays shaped [G, D] (G groups of D values, one speed per group).

    Args:
        min_cutoff: cut-off at rest, Hz (lower: smoother when still).
        beta: cut-off increase per unit of speed (group norm of the derivative, units/s).
        d_cutoff: cut-off of the derivative estimate, Hz.
        quaternion: groups are unit quaternions wxyz: keep them in the previous output's
            hemisphere and renormalise the output.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.5, d_cutoff: float = 1.0, quaternion: bool = False) -> None:
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError(f"One Euro filter needs min_cutoff > 0, d_cutoff > 0, beta >= 0; got {min_cutoff}, {d_cutoff}, {beta}")
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.quaternion = quaternion
        self.reset()

    def reset(self) -> None:
        """Forget the past: the next sample passes through unchanged."""
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None

    def __call__(self, x: np.ndarray, dt: float) -> np.ndarray:
        """Filter one sample ``x`` [G, D] taken ``dt`` seconds after the previous one."""
        x = np.asarray(x, dtype=np.float64)
        if self._x is None or self._x.shape != x.shape or dt <= 0:
            self._x, self._dx = x.copy(), np.zeros_like(x)
            return x.copy()
        if self.quaternion:
            x = align_hemisphere(x, self._x)
        dx = (x - self._x) / dt
        self._dx = self._dx + _alpha(self.d_cutoff, dt) * (dx - self._dx)
        speed = np.linalg.norm(self._dx, axis=-1, keepdims=True)
        a = _alpha(self.min_cutoff + self.beta * speed, dt)
        out = self._x + a * (x - self._x)
        if self.quaternion:
            out = out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
        self._x = out
        return out.copy()


class Fade:
    """A part's blend weight: after each switch (seen <-> unseen) the part blends from a snapshot
    of what was shown to its new target, the weight ramping 0 -> 1 over ``fade_in`` s (the part
    reappeared) or ``fade_out`` s (it went missing), eased with a smoothstep.

    Attributes:
        seen: whether the part was seen at the last update.
        level: the linear ramp in [0, 1]; ``weight`` is its smoothstep.
    """

    def __init__(self, fade_in: float, fade_out: float) -> None:
        if fade_in <= 0 or fade_out <= 0:
            raise ValueError(f"fade times must be positive, got {fade_in}, {fade_out}")
        self.fade_in, self.fade_out = fade_in, fade_out
        self.seen = False
        self.level = 1.0

    def update(self, seen: bool, dt: float) -> tuple[bool, float]:
        """Advance by ``dt`` seconds. Returns (switched: the caller must snapshot now, weight)."""
        switched = seen != self.seen
        if switched:
            self.seen, self.level = seen, 0.0
        self.level = min(1.0, self.level + dt / (self.fade_in if seen else self.fade_out))
        return switched, self.weight

    @property
    def weight(self) -> float:
        x = self.level
        return x * x * (3.0 - 2.0 * x)
