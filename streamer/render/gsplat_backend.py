"""The CUDA backend: gsplat's classic 3DGS rasterization (gsplat 1.5.3).

``gsplat`` imports on a CPU-only machine but its first call fails, so it is imported lazily and
this renderer refuses to run without CUDA. The CPU rasterizer (``cpu.py``) implements the same
settings: eps2d blur, near/far planes, no radius clip, opacity-aware radii, 16x16 tiles.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..avatar.gaussians import Gaussians
from ..errors import BackendUnavailableError, InputError
from .base import EPS2D, FAR_PLANE, NEAR_PLANE, RADIUS_CLIP, TILE_SIZE, Renderer, check_background
from .camera import Camera


class GsplatRenderer(Renderer):
    """Renders on a CUDA GPU with ``gsplat.rasterization`` (stateless; thread-safe as torch is)."""

    name = "cuda"

    def render(
        self, gaussians: Gaussians, camera: Camera, background: Sequence[float] = (1.0, 1.0, 1.0)
    ) -> tuple[Tensor, Tensor]:
        """Render one view.

        Args:
            gaussians: world-space Gaussians on a CUDA device (N may be 0).
            camera: the view (OpenCV axes, pixels); moved to the Gaussians' device.
            background: RGB in [0, 1] behind the Gaussians.

        Returns:
            rgb [H, W, 3] float32 and alpha [H, W] float32 (1 - final transmittance), on the
            Gaussians' device.

        Raises:
            BackendUnavailableError: no CUDA GPU.
            InputError: Gaussians not on a CUDA device, or a bad background.
        """
        bg = check_background(background)
        if not torch.cuda.is_available():
            raise BackendUnavailableError(
                "render backend 'cuda' needs a CUDA GPU; none is available (use 'cpu')"
            )
        device = gaussians.device
        if device.type != "cuda":
            raise InputError(
                f"the cuda renderer needs Gaussians on a CUDA device, got them on {device}; "
                "call gaussians.to('cuda') once (not per frame) or use the 'cpu' backend"
            )
        W, H = camera.width, camera.height
        bg_t = torch.tensor(bg, dtype=torch.float32, device=device)
        if len(gaussians) == 0:  # nothing to rasterize (gsplat's kernels need N > 0)
            return bg_t.expand(H, W, 3).clone(), torch.zeros(H, W, dtype=torch.float32, device=device)

        import gsplat  # type: ignore[import-untyped]  # lazily: slow, and useless without CUDA

        with torch.no_grad():
            colors, alphas, _ = gsplat.rasterization(**gsplat_arguments(gaussians, camera, bg_t))
        # colors [1, H, W, 3], alphas [1, H, W, 1]
        return colors[0], alphas[0, ..., 0]


def gsplat_arguments(gaussians: Gaussians, camera: Camera, background: Tensor) -> dict[str, Any]:
    """Keyword arguments of ``gsplat.rasterization`` for one view with our semantics.

    Args:
        gaussians: on the render device.
        camera: the view; its matrices are moved to the Gaussians' device.
        background: RGB [3] float32 on the Gaussians' device.

    Returns:
        The arguments; gsplat then returns colors [1, H, W, 3] and alphas [1, H, W, 1].
    """
    device = gaussians.device
    return {
        "means": gaussians.means,  # [N, 3]
        "quats": gaussians.quats,  # [N, 4] wxyz
        "scales": gaussians.scales,  # [N, 3]
        "opacities": gaussians.opacities,  # [N]
        "colors": gaussians.colors,  # [N, 3] RGB
        "viewmats": camera.viewmat.to(device=device, dtype=torch.float32)[None],  # [1, 4, 4]
        "Ks": camera.K.to(device=device, dtype=torch.float32)[None],  # [1, 3, 3]
        "width": camera.width,
        "height": camera.height,
        "near_plane": NEAR_PLANE,
        "far_plane": FAR_PLANE,
        "radius_clip": RADIUS_CLIP,
        "eps2d": EPS2D,
        "sh_degree": None,  # colors are RGB values, not SH coefficients
        "packed": False,
        "tile_size": TILE_SIZE,
        "backgrounds": background[None],  # [1, 3]
        "render_mode": "RGB",
        "rasterize_mode": "classic",
    }
