"""A slow, dense, float64 reference renderer (tests), and the EWA projection LHM training shares.

Written from the definition of classic 3DGS rasterization, independently of the C++ code: every
Gaussian in front of the camera is evaluated at every pixel (no radii, tiles or culling boxes:
those only skip fragments whose alpha is below ``ALPHA_MIN`` anyway), one global depth order.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..avatar.gaussians import Gaussians
from .base import ALPHA_MAX, ALPHA_MIN, EPS2D, FAR_PLANE, NEAR_PLANE, T_MIN, Renderer, check_background
from .camera import Camera


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Rotation matrices of wxyz quaternions (normalised here). [N, 4] -> [N, 3, 3]"""
    w, x, y, z = (quats / quats.norm(dim=-1, keepdim=True)).unbind(-1)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return torch.stack([torch.stack(r, -1) for r in rows], -2)


def ewa_project(
    means: Tensor, quats: Tensor, scales: Tensor, viewmat: Tensor, K: Tensor, width: int, height: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """EWA projection of raw tensors, in their dtype and on their device, differentiable.

    Shared by this reference (float64) and LHM training's dense rasterizer (float32, autograd).

    Returns:
        means2d [N, 2] pixels, conics [N, 2, 2] (inverse of the 2D covariance + EPS2D * I),
        depths [N] camera z in metres, and a mask [N] of Gaussians between the near and far planes.
        Entries outside the mask are meaningless.
    """
    means_c = means @ viewmat[:3, :3].T + viewmat[:3, 3]  # [N, 3] camera frame
    x, y, z = means_c.unbind(-1)
    in_range = (z >= NEAR_PLANE) & (z <= FAR_PLANE)
    z = torch.where(in_range, z, torch.ones_like(z))  # keep the maths finite for culled ones

    M = quat_to_rotmat(quats) * scales[:, None, :]
    cov_c = viewmat[:3, :3] @ (M @ M.transpose(1, 2)) @ viewmat[:3, :3].T  # [N, 3, 3]

    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    W, H = width, height
    # The Jacobian is evaluated with x/z, y/z clamped to 0.3 * tan(fov/2) beyond the image border.
    u = torch.minimum(torch.maximum(x / z, -(cx / fx + 0.15 * W / fx)), (W - cx) / fx + 0.15 * W / fx)
    v = torch.minimum(torch.maximum(y / z, -(cy / fy + 0.15 * H / fy)), (H - cy) / fy + 0.15 * H / fy)
    zero = torch.zeros_like(z)
    J = torch.stack(
        [torch.stack([fx / z, zero, -fx * u / z], -1), torch.stack([zero, fy / z, -fy * v / z], -1)], -2
    )  # [N, 2, 3]
    cov2d = J @ cov_c @ J.transpose(1, 2) + EPS2D * torch.eye(2, dtype=means.dtype, device=means.device)
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], -1)
    return means2d, torch.linalg.inv(cov2d), means_c[:, 2], in_range


def project(gaussians: Gaussians, camera: Camera) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """EWA projection of Gaussians in float64 on the CPU (see :func:`ewa_project`)."""
    f64 = torch.float64
    g = gaussians
    return ewa_project(
        g.means.to(f64).cpu(),
        g.quats.to(f64).cpu(),
        g.scales.to(f64).cpu(),
        camera.viewmat.to(f64).cpu(),
        camera.K.to(f64).cpu(),
        camera.width,
        camera.height,
    )


class ReferenceRenderer(Renderer):
    """Dense float64 rasterizer: O(pixels x Gaussians), for checking the fast backends."""

    name = "reference"

    def render(
        self, gaussians: Gaussians, camera: Camera, background: Sequence[float] = (1.0, 1.0, 1.0)
    ) -> tuple[Tensor, Tensor]:
        """Render one view -> rgb [H, W, 3], alpha [H, W] float32 on the Gaussians' device."""
        bg = torch.tensor(check_background(background), dtype=torch.float64)
        W, H = camera.width, camera.height
        means2d, conics, depths, keep = project(gaussians, camera)
        opacities = gaussians.opacities.to(torch.float64).cpu()
        colors = gaussians.colors.to(torch.float64).cpu()

        # pixel centres at +0.5, [P, 2]
        ys, xs = torch.meshgrid(
            torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij"
        )
        pix = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1) + 0.5

        T = torch.ones(H * W, dtype=torch.float64)  # transmittance
        rgb = torch.zeros(H * W, 3, dtype=torch.float64)
        done = torch.zeros(H * W, dtype=torch.bool)
        ids = torch.nonzero(keep).flatten()
        order = ids[torch.sort(depths[ids], stable=True).indices]  # front to back
        for chunk in order.split(256):  # alpha of 256 Gaussians at every pixel at a time, [C, P]
            dx = pix[:, 0] - means2d[chunk, 0, None]
            dy = pix[:, 1] - means2d[chunk, 1, None]
            con = conics[chunk]
            sigma = (
                0.5 * (con[:, 0, 0, None] * dx * dx + con[:, 1, 1, None] * dy * dy)
                + con[:, 0, 1, None] * dx * dy
            )
            alphas = (opacities[chunk, None] * torch.exp(-sigma)).clamp(max=ALPHA_MAX)
            lives = (sigma >= 0) & (alphas >= ALPHA_MIN)
            for alpha, live, color in zip(alphas, lives, colors[chunk]):
                live = live & ~done
                next_T = T * (1 - alpha)
                stop = live & (next_T <= T_MIN)  # the pixel is finished *before* this fragment
                done |= stop
                take = live & ~stop
                rgb += torch.where(take, alpha * T, 0.0)[:, None] * color
                T = torch.where(take, next_T, T)
        rgb += T[:, None] * bg
        device = gaussians.device
        return (
            rgb.reshape(H, W, 3).to(device=device, dtype=torch.float32),
            (1 - T).reshape(H, W).to(device=device, dtype=torch.float32),
        )
