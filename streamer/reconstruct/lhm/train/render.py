"""Differentiable rendering of posed Gaussians for training.

* CUDA: ``gsplat.rasterization`` (differentiable), with the product's rasterization constants
  (:func:`streamer.render.gsplat_backend.gsplat_arguments`).
* CPU: :func:`render_dense`, a dense torch rasterizer. It follows the definition of
  :mod:`streamer.render._reference` (its EWA projection, :func:`~streamer.render._reference.ewa_project`,
  the same alpha clamps and front-to-back compositing) but runs vectorised in float32 with
  autograd: every Gaussian is evaluated at every pixel and composited with a cumulative
  product over the depth order. The only departure is that compositing does not stop once the
  transmittance falls below ``T_MIN`` (a difference of at most ``T_MIN`` per pixel). Cost is
  O(pixels x Gaussians): meant for small training renders (64 x 64, a few thousand Gaussians).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ....avatar.gaussians import Gaussians
from ....render._reference import ewa_project
from ....render.base import ALPHA_MAX, ALPHA_MIN
from ....render.camera import Camera


def render_dense(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4]
    scales: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    colors: Tensor,  # [N, 3]
    camera: Camera,
    background: Tensor,  # [3]
) -> tuple[Tensor, Tensor]:
    """Render one view with gradients to every attribute.

    Args:
        means: world centres, metres. [N, 3]
        quats: wxyz (normalised here). [N, 4]
        scales: linear standard deviations, metres. [N, 3]
        opacities: in [0, 1]. [N]
        colors: RGB in [0, 1]. [N, 3]
        camera: the view (matrices moved to the means' device).
        background: RGB in [0, 1]. [3]

    Returns:
        rgb [H, W, 3] and alpha [H, W], float32.
    """
    dev = means.device
    W, H = camera.width, camera.height
    means2d, conics, z, live = ewa_project(
        means, quats, scales, camera.viewmat.to(dev), camera.K.to(dev), W, H
    )
    mx, my = means2d.unbind(-1)
    ca, cb, cc = conics[:, 0, 0], conics[:, 0, 1], conics[:, 1, 1]

    order = torch.argsort(torch.where(live, z, torch.full_like(z, float("inf"))).detach())
    order = order[live[order]]
    ys, xs = torch.meshgrid(
        torch.arange(H, device=dev, dtype=means.dtype) + 0.5,
        torch.arange(W, device=dev, dtype=means.dtype) + 0.5,
        indexing="ij",
    )
    px, py = xs.reshape(1, -1), ys.reshape(1, -1)  # [1, P]
    dx = px - mx[order, None]
    dy = py - my[order, None]
    sigma = 0.5 * (ca[order, None] * dx * dx + cc[order, None] * dy * dy) + cb[order, None] * dx * dy
    alpha = (opacities[order, None] * torch.exp(-sigma.clamp_min(0.0))).clamp(max=ALPHA_MAX)
    alpha = torch.where((sigma >= 0) & (alpha >= ALPHA_MIN), alpha, torch.zeros_like(alpha))  # [N', P]
    trans = torch.cumprod(1.0 - alpha, dim=0)
    before = torch.cat([torch.ones_like(trans[:1]), trans[:-1]], dim=0)
    weight = alpha * before  # [N', P]
    rgb = weight.T @ colors[order] + trans[-1:].T * background if len(order) else background.expand(H * W, 3)
    alpha_out = 1.0 - trans[-1] if len(order) else torch.zeros(H * W, device=dev)
    return rgb.reshape(H, W, 3), alpha_out.reshape(H, W)


def render_train(gaussians: Gaussians, camera: Camera, background: Tensor) -> tuple[Tensor, Tensor]:
    """Differentiable render: gsplat on CUDA, :func:`render_dense` elsewhere.

    Returns:
        rgb [H, W, 3] and alpha [H, W] float32 on the Gaussians' device.
    """
    g = gaussians
    if g.means.is_cuda:
        import gsplat  # type: ignore[import-untyped]

        from ....render.gsplat_backend import gsplat_arguments

        colors, alphas, _ = gsplat.rasterization(**gsplat_arguments(g, camera, background))
        return colors[0], alphas[0, ..., 0]
    return render_dense(g.means, g.quats, g.scales, g.opacities, g.colors, camera, background)
