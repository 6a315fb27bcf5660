"""The renderer interface shared by every backend."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal, Sequence

from torch import Tensor

from ..avatar.gaussians import Gaussians
from ..errors import InputError
from .camera import Camera

Backend = Literal["auto", "cpu", "cuda", "reference"]
BACKENDS: tuple[str, ...] = ("auto", "cpu", "cuda", "reference")

#: Rasterization constants shared by every backend (gsplat's classic mode).
EPS2D = 0.3  # added to the 2D covariance diagonal (pixels^2): a one-pixel low-pass blur
ALPHA_MAX = 0.999  # alpha = min(ALPHA_MAX, opacity * exp(-sigma))
ALPHA_MIN = 1.0 / 255.0  # fragments with a smaller alpha are skipped
T_MIN = 1e-4  # compositing stops before a fragment would bring transmittance <= T_MIN
NEAR_PLANE = 0.01  # metres; Gaussians with camera z below are culled
FAR_PLANE = 1e10
RADIUS_CLIP = 0.0  # pixels; Gaussians whose x and y radii are both <= this are culled
TILE_SIZE = 16


class Renderer(ABC):
    """Draws Gaussians from one camera into an RGB image and an alpha mask."""

    name: str = "base"

    @abstractmethod
    def render(
        self, gaussians: Gaussians, camera: Camera, background: Sequence[float]
    ) -> tuple[Tensor, Tensor]:
        """Render one view.

        Args:
            gaussians: world-space Gaussians (N may be 0).
            camera: the view.
            background: RGB in [0, 1], composited behind the Gaussians.

        Returns:
            rgb [H, W, 3] float32 in [0, 1] and alpha [H, W] float32 (= 1 - final transmittance),
            on the Gaussians' device.
        """


def check_background(background: Sequence[float]) -> tuple[float, float, float]:
    """Validate a background colour; returns it as a float triple."""
    try:
        bg = tuple(float(c) for c in background)
    except (TypeError, ValueError):
        raise InputError(f"background must be 3 numbers in [0, 1], got {background!r}") from None
    if len(bg) != 3 or not all(0.0 <= c <= 1.0 for c in bg):
        raise InputError(f"background must be 3 numbers in [0, 1], got {background!r}")
    return bg  # type: ignore[return-value]
