"""The CPU tile rasterizer: a thin wrapper over the C++/OpenMP extension ``_cpu_raster``.

Semantics are gsplat 1.5.3 classic 3DGS rasterization (see ``base.py`` for the constants):
EWA projection, opacity-aware radii, 16x16 tiles, per-tile depth order, front-to-back
compositing with early stop. The extension releases the GIL, so renders can run in worker
threads; each call uses ``max_threads()`` OpenMP threads (one per core unless told otherwise).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from types import ModuleType

import numpy as np
import torch
from torch import Tensor

from ..avatar.gaussians import Gaussians
from ..errors import BackendUnavailableError, InputError
from .base import (
    ALPHA_MAX,
    ALPHA_MIN,
    EPS2D,
    FAR_PLANE,
    NEAR_PLANE,
    RADIUS_CLIP,
    T_MIN,
    Renderer,
    check_background,
)
from .camera import Camera


def load_extension() -> ModuleType:
    """The compiled ``_cpu_raster`` module.

    Raises:
        BackendUnavailableError: when the extension has not been built.
    """
    try:
        return importlib.import_module(f"{__package__}._cpu_raster")
    except ImportError as exc:
        raise BackendUnavailableError(
            "the CPU rasterizer extension streamer.render._cpu_raster is not built; "
            f"run `pip install -e .` in the repository root ({exc})"
        ) from None


def _as_array(t: Tensor) -> np.ndarray:
    """A C-contiguous float32 numpy view (no copy when the tensor already is one)."""
    return t.detach().to(torch.float32).contiguous().numpy()


def _camera_arrays(camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    return _as_array(camera.viewmat.cpu()), _as_array(camera.K.cpu())


#: The rasterization constants, in the extension's argument order.
_RASTER_SETTINGS = (EPS2D, NEAR_PLANE, FAR_PLANE, RADIUS_CLIP, ALPHA_MIN, ALPHA_MAX, T_MIN)


def _geometry(g: Gaussians) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """means, quats, scales, opacities as the extension takes them."""
    return _as_array(g.means), _as_array(g.quats), _as_array(g.scales), _as_array(g.opacities)


def _check_cpu(gaussians: Gaussians) -> None:
    if gaussians.device.type != "cpu":
        raise InputError(
            f"the cpu renderer needs Gaussians on the CPU, got them on {gaussians.device}; "
            "call gaussians.to('cpu') or use the 'cuda' backend"
        )


def default_threads() -> int:
    """OpenMP's own default team size: ``OMP_NUM_THREADS`` if set, else the cores this process may use.

    Not the calling thread's ``omp_get_max_threads()``: torch sets that to its intra-op thread count
    in every thread where it runs an op, so after ``torch.set_num_threads(1)`` (the stream server's
    setting) a renderer in such a thread silently ran on one thread.
    """
    first = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if first.isdigit() and int(first) > 0:
        return int(first)
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


class CpuRenderer(Renderer):
    """Renders on the CPU with the compiled tile rasterizer (thread-safe, stateless).

    Args:
        num_threads: OpenMP threads per render; 0 = :func:`default_threads` (one per core).
    """

    name = "cpu"

    def __init__(self, num_threads: int = 0) -> None:
        self._ext = load_extension()
        if num_threads < 0:
            raise InputError(f"num_threads must be >= 0, got {num_threads}")
        self.num_threads = int(num_threads)
        self._threads = self.num_threads or default_threads()

    def render(
        self, gaussians: Gaussians, camera: Camera, background: Sequence[float] = (1.0, 1.0, 1.0)
    ) -> tuple[Tensor, Tensor]:
        """Render one view.

        Args:
            gaussians: world-space Gaussians on the CPU (N may be 0).
            camera: the view (OpenCV axes, pixels).
            background: RGB in [0, 1] behind the Gaussians.

        Returns:
            rgb [H, W, 3] float32 in [0, 1] and alpha [H, W] float32 (1 - final transmittance), CPU.

        Raises:
            InputError: Gaussians not on the CPU, or a bad background.
        """
        _check_cpu(gaussians)
        bg = check_background(background)
        viewmat, K = _camera_arrays(camera)
        rgb, alpha = self._ext.rasterize(
            *_geometry(gaussians),
            _as_array(gaussians.colors),
            viewmat,
            K,
            camera.width,
            camera.height,
            list(bg),
            *_RASTER_SETTINGS,
            self._threads,
        )
        return torch.from_numpy(rgb), torch.from_numpy(alpha)

    def project(
        self, gaussians: Gaussians, camera: Camera, use_opacity: bool = True
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """EWA projection alone (the first stage of :meth:`render`), for tests and tools.

        Args:
            gaussians: world-space Gaussians on the CPU.
            camera: the view.
            use_opacity: opacity-aware radii (as rendering does); False: fixed 3.33-sigma radii.

        Returns:
            means2d [N, 2] (pixels), conics [N, 3] (inverse blurred 2D covariance a, b, c;
            pixels^-2), depths [N] (camera z, metres), radii [N, 2] int32 (pixels, x and y).
            Culled Gaussians have radii 0 and zeros in the other outputs.
        """
        _check_cpu(gaussians)
        viewmat, K = _camera_arrays(camera)
        out = self._ext.project(
            _as_array(gaussians.means),
            _as_array(gaussians.quats),
            _as_array(gaussians.scales),
            _as_array(gaussians.opacities) if use_opacity else None,
            viewmat,
            K,
            camera.width,
            camera.height,
            EPS2D,
            NEAR_PLANE,
            FAR_PLANE,
            RADIUS_CLIP,
            ALPHA_MIN,
            self._threads,
        )
        means2d, conics, depths, radii = (torch.from_numpy(a) for a in out)
        return means2d, conics, depths, radii

    def backproject(
        self, gaussians: Gaussians, camera: Camera, image: np.ndarray, weight: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The adjoint of rendering with respect to the colours, for fitting colours to a photo.

        A rendering is linear in the colours, ``rgb(p) = sum_i w_i(p) c_i + T(p) bg``. This walks
        the same fragments as :meth:`render` and returns, per Gaussian, ``sums[i] = sum_p w_i(p)
        image(p)`` (``W^T image``: the gradient of ``sum(rgb * image)`` with respect to ``c_i``)
        and ``mass[i] = sum_p w_i(p) weight(p)``. Pixels whose weight is 0 are skipped entirely.

        Args:
            gaussians: world-space Gaussians on the CPU (their colours are not used).
            camera: the view; ``image`` must have its size.
            image: [H, W, 3] float.
            weight: [H, W] float (default: ones).

        Returns:
            sums [N, 3] and mass [N], float32; zeros for Gaussians that reach no pixel.
        """
        _check_cpu(gaussians)
        H, W = camera.height, camera.width
        image = np.ascontiguousarray(image, dtype=np.float32)
        if image.shape != (H, W, 3):
            raise InputError(f"backproject: image must be [{H}, {W}, 3] (the camera's size), got {list(image.shape)}")
        weight = np.ones((H, W), np.float32) if weight is None else np.ascontiguousarray(weight, dtype=np.float32)
        if weight.shape != (H, W):
            raise InputError(f"backproject: weight must be [{H}, {W}], got {list(weight.shape)}")
        viewmat, K = _camera_arrays(camera)
        sums, mass = self._ext.backproject(
            *_geometry(gaussians), image, weight, viewmat, K, *_RASTER_SETTINGS, self._threads
        )
        return sums, mass

    def max_threads(self) -> int:
        """The number of OpenMP threads one render uses."""
        return self._threads
