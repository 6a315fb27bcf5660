"""Seeded random Gaussian scenes and cameras shared by the renderer tests."""

from __future__ import annotations

import math

import torch

from streamer.avatar.gaussians import Gaussians
from streamer.render.camera import Camera

#: scene kinds understood by :func:`make_scene`
KINDS = ("mixed", "opaque_stack", "offscreen", "tiny_huge", "anisotropic")


def random_quats(n: int, gen: torch.Generator) -> torch.Tensor:
    """Uniformly random unit quaternions (wxyz). [n, 4]"""
    q = torch.randn(n, 4, generator=gen)
    return q / q.norm(dim=-1, keepdim=True)


def make_camera(width: int, height: int, seed: int = 0) -> Camera:
    """A camera at about 3 m on the +Z side looking at the origin, slightly rotated, with an
    off-centre principal point (so the Jacobian clamp limits differ on each side)."""
    gen = torch.Generator().manual_seed(seed)
    eye = torch.tensor([0.4, 0.3, 3.0]) + 0.3 * torch.randn(3, generator=gen)
    cam = Camera.look_at(eye.tolist(), (0.0, 0.0, 0.0), width, height, fov_y_deg=50.0)
    K = cam.K.clone()
    K[0, 2] += 0.07 * width
    K[1, 2] -= 0.05 * height
    K[0, 0] *= 1.05  # non-square pixels
    return Camera(K=K, viewmat=cam.viewmat, width=width, height=height)


def make_scene(kind: str, n: int, seed: int = 0) -> Gaussians:
    """Random Gaussians around the origin (the camera of :func:`make_camera` looks at it).

    Kinds: ``mixed`` (log-uniform sizes, any opacity), ``opaque_stack`` (overlapping nearly opaque
    Gaussians: early stop), ``offscreen`` (a third outside the view, some behind the camera or at
    the near plane), ``tiny_huge`` (sub-pixel and screen-filling), ``anisotropic`` (needles/discs).
    """
    gen = torch.Generator().manual_seed(seed)

    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=gen)

    means = uniform(-1.0, 1.0, n, 3)
    log_scales = uniform(math.log(0.005), math.log(0.2), n, 3)
    opacities = uniform(0.02, 1.0, n)
    if kind == "mixed":
        pass
    elif kind == "opaque_stack":
        means = 0.15 * torch.randn(n, 3, generator=gen)
        log_scales = uniform(math.log(0.03), math.log(0.3), n, 3)
        opacities = uniform(0.9, 1.0, n)
        opacities[: n // 4] = 1.0  # alpha clamps at ALPHA_MAX
    elif kind == "offscreen":
        means = uniform(-4.0, 4.0, n, 3)
        means[: n // 6, 2] = uniform(2.95, 6.0, n // 6)  # around and behind a camera at z ~ 3
    elif kind == "tiny_huge":
        log_scales = torch.where(
            torch.rand(n, 1, generator=gen) < 0.5,
            uniform(math.log(1e-5), math.log(1e-3), n, 3),
            uniform(math.log(0.3), math.log(3.0), n, 3),
        )
        opacities = uniform(0.02, 0.3, n)
    elif kind == "anisotropic":
        log_scales[:, 0] = uniform(math.log(0.1), math.log(0.5), n)
        log_scales[:, 1:] = uniform(math.log(0.0005), math.log(0.01), n, 2)
    else:
        raise ValueError(f"unknown scene kind {kind!r}")
    return Gaussians(
        means=means.float(),
        quats=random_quats(n, gen),
        scales=log_scales.exp().float(),
        opacities=opacities.float(),
        colors=torch.rand(n, 3, generator=gen),
    )
