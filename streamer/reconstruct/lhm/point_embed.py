"""Sinusoidal embedding of canonical query points (state-dict prefix ``pcl_embed.``)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ...errors import InputError


def point_frequency_basis(n_freqs: int) -> Tensor:
    """Block-diagonal frequency matrix of the point embedding.

    Column ``a * n_freqs + k`` holds ``2^k * pi`` in row ``a`` (axis x, y or z) and zeros
    elsewhere, so ``xyz @ basis`` lists the x frequencies, then y, then z.

    Returns:
        basis [3, 3 * n_freqs] float32, on the CPU.
    """
    freqs = torch.tensor([2.0**k * math.pi for k in range(n_freqs)], dtype=torch.float32, device="cpu")
    basis = torch.zeros(3, 3 * n_freqs, device="cpu")
    for axis in range(3):
        basis[axis, axis * n_freqs : (axis + 1) * n_freqs] = freqs
    return basis


class PointEmbed(nn.Module):
    """xyz -> [sin(xyz B), cos(xyz B), xyz] -> Linear -> LayerNorm.

    Keys: ``basis`` (persistent buffer [3, 3F]), ``mlp`` (Linear 6F+3 -> dim), ``norm``
    (LayerNorm(dim), eps 1e-5, affine). With F = 8 the feature has 51 channels.

    The sinusoids are always evaluated in float32 (even under autocast): the highest
    frequency is 128 pi rad/m, so bf16 positions would alias badly.
    """

    basis: Tensor

    def __init__(self, dim: int, n_freqs: int = 8) -> None:
        super().__init__()
        self.n_freqs = n_freqs
        # built on the CPU, then moved to the default device (cheap also under torch.device("meta"))
        self.register_buffer("basis", point_frequency_basis(n_freqs).to(torch.empty(0).device))
        self.mlp = nn.Linear(6 * n_freqs + 3, dim)
        self.norm = nn.LayerNorm(dim, eps=1e-5)

    def features(self, points: Tensor) -> Tensor:
        """Sinusoidal features. points [B, N, 3] -> [B, N, 6F + 3] float32."""
        with torch.autocast(device_type=points.device.type, enabled=False):
            pts = points.float()
            proj = pts @ self.basis.float()  # [B, N, 3F]
            return torch.cat([proj.sin(), proj.cos(), pts], dim=-1)

    def forward(self, points: Tensor) -> Tensor:
        """Embed query points.

        Args:
            points: canonical query points, metres. [B, N, 3]

        Returns:
            tokens [B, N, dim].
        """
        if points.ndim != 3 or points.shape[-1] != 3:
            raise InputError(f"PointEmbed: expected points [B, N, 3], got {tuple(points.shape)}")
        out: Tensor = self.norm(self.mlp(self.features(points)))
        return out
