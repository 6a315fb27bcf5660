"""Rendering Gaussians: one interface (:func:`render`), backends cuda (gsplat), cpu, reference."""

from __future__ import annotations

import functools
from typing import Sequence

import torch
from torch import Tensor

from ..avatar.gaussians import Gaussians
from ..errors import BackendUnavailableError, InputError
from .base import BACKENDS, Backend, Renderer
from .camera import Camera

__all__ = ["Camera", "Renderer", "Backend", "render", "get_renderer", "resolve_backend"]


def resolve_backend(backend: str = "auto") -> str:
    """``auto`` -> ``cuda`` when a CUDA GPU is usable, else ``cpu``; others checked and returned."""
    if backend not in BACKENDS:
        raise InputError(f"unknown render backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if backend == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError("render backend 'cuda' needs a CUDA GPU; none is available (use 'cpu')")
    return backend


@functools.lru_cache(maxsize=None)
def get_renderer(backend: str = "auto") -> Renderer:
    """The renderer for a backend name (instances are cached and thread-safe)."""
    name = resolve_backend(backend)
    if name == "cuda":
        from .gsplat_backend import GsplatRenderer

        return GsplatRenderer()
    if name == "cpu":
        from .cpu import CpuRenderer

        return CpuRenderer()
    from ._reference import ReferenceRenderer

    return ReferenceRenderer()


def render(
    gaussians: Gaussians,
    camera: Camera | Sequence[Camera],
    background: Sequence[float] = (1.0, 1.0, 1.0),
    backend: str = "auto",
) -> tuple[Tensor, Tensor]:
    """Render Gaussians from one camera (-> [H, W, 3], [H, W]) or a list ([C, H, W, 3], [C, H, W]).

    Example:
        >>> rgb, alpha = render(posed, Camera.look_at((0, 1, 3), (0, 1, 0), 512, 512), backend="cpu")
    """
    renderer = get_renderer(backend)
    if isinstance(camera, Camera):
        return renderer.render(gaussians, camera, background)
    views = [renderer.render(gaussians, cam, background) for cam in camera]
    if not views:
        raise InputError("render: empty list of cameras")
    return torch.stack([v[0] for v in views]), torch.stack([v[1] for v in views])
