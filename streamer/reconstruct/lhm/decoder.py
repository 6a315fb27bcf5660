"""Gaussian decoder: point features -> per-point Gaussian attributes (prefix ``renderer.``).

``mlp_net`` (Linear D->512, SiLU, Linear 512->512, SiLU, Linear 512->D) maps every point
feature, then ``gs_net.out_layers`` (one Linear D->k per attribute) predict:

==========  ===  =================================================  ===========================
head        k    activation                                         initialisation
==========  ===  =================================================  ===========================
shs         3    sigmoid -> RGB in [0, 1]                           PyTorch default
scaling     3    exp, clamp to [0, clip]; upper body clamp <= 0.02  W = 0, b = -5
xyz         3    (sigmoid - 0.5) * max_step -> offset, metres       W = 0, b = 0
opacity     1    sigmoid                                            W = 0, b = logit(0.1)
rotation    4    L2 normalise -> quaternion wxyz                    W = 0, b = (1, 0, 0, 0)
==========  ===  =================================================  ===========================

``clip`` follows a linear schedule during training and is its end value (0.05) at
inference. The decoder always runs in float32, also under autocast (it is cheap, and the
exponential of the scale head is sensitive).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...avatar.gaussians import Gaussians
from ...errors import InputError
from .config import LHMConfig
from .template import TemplateBuffers

#: Attribute heads in the order of the released state dict.
HEAD_CHANNELS: dict[str, int] = {"shs": 3, "scaling": 3, "xyz": 3, "opacity": 1, "rotation": 4}

INIT_SCALING_BIAS = -5.0
INIT_OPACITY = 0.1


@dataclass
class GaussianAttributes:
    """Per-query-point Gaussian attributes predicted by the network.

    Attributes:
        offsets: displacement from the query point, metres, canonical (big-pose) frame. [B, N, 3]
        colors: RGB in [0, 1]. [B, N, 3]
        opacities: in [0, 1]. [B, N]
        scales: linear standard deviations, metres, in [0, clip]. [B, N, 3]
        quats: unit quaternions, wxyz. [B, N, 4]
    """

    offsets: Tensor
    colors: Tensor
    opacities: Tensor
    scales: Tensor
    quats: Tensor

    def canonical_gaussians(self, query_points: Tensor, index: int = 0) -> Gaussians:
        """Gaussians of batch item ``index`` in the canonical big pose (means = points + offsets).

        Args:
            query_points: the query points the attributes were predicted for. [N, 3] or [B, N, 3]
        """
        pts = query_points if query_points.ndim == 2 else query_points[index]
        return Gaussians(
            means=(pts + self.offsets[index]).float(),
            quats=self.quats[index].float(),
            scales=self.scales[index].float(),
            opacities=self.opacities[index].float(),
            colors=self.colors[index].float(),
        )


class PointMLP(nn.Module):
    """``layers``: Linear(D, W), SiLU, [Linear(W, W), SiLU] * (h - 1), Linear(W, D); no output act."""

    def __init__(self, dim: int, width: int, hidden_layers: int) -> None:
        super().__init__()
        mods: list[nn.Module] = [nn.Linear(dim, width), nn.SiLU()]
        for _ in range(hidden_layers - 1):
            mods += [nn.Linear(width, width), nn.SiLU()]
        mods.append(nn.Linear(width, dim))
        self.layers = nn.Sequential(*mods)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.layers(x)
        return out


class GaussianHeads(nn.Module):
    """``out_layers.{shs,scaling,xyz,opacity,rotation}`` with the released activations."""

    def __init__(
        self, dim: int, xyz_offset_max_step: float, scale_clip: float, upper_body_scale_max: float
    ) -> None:
        super().__init__()
        self.out_layers = nn.ModuleDict({k: nn.Linear(dim, c) for k, c in HEAD_CHANNELS.items()})
        self.xyz_offset_max_step = xyz_offset_max_step
        self.scale_clip = scale_clip
        self.upper_body_scale_max = upper_body_scale_max
        self.reset_parameters()

    def head(self, name: str) -> nn.Linear:
        """The Linear layer of one attribute (``shs``, ``scaling``, ``xyz``, ``opacity``, ``rotation``)."""
        layer = self.out_layers[name]
        assert isinstance(layer, nn.Linear)
        return layer

    def reset_parameters(self) -> None:
        """The released initialisation (colour head keeps PyTorch's default)."""
        self.head("shs").reset_parameters()
        for name in ("scaling", "xyz", "opacity", "rotation"):
            nn.init.zeros_(self.head(name).weight)
            nn.init.zeros_(self.head(name).bias)
        with torch.no_grad():
            self.head("scaling").bias.fill_(INIT_SCALING_BIAS)
            self.head("opacity").bias.fill_(math.log(INIT_OPACITY / (1.0 - INIT_OPACITY)))
            self.head("rotation").bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))

    def forward(self, x: Tensor, upper_body: Tensor | None) -> GaussianAttributes:
        """Predict attributes.

        Args:
            x: per-point features. [B, N, D]
            upper_body: bool mask of upper-body points (their scales clamp harder), or None. [N]
        """
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            colors = torch.sigmoid(self.head("shs")(x))
            scales = torch.exp(self.head("scaling")(x)).clamp(0.0, self.scale_clip)
            if upper_body is not None:
                capped = scales.clamp(max=self.upper_body_scale_max)
                scales = torch.where(upper_body[None, :, None], capped, scales)
            offsets = (torch.sigmoid(self.head("xyz")(x)) - 0.5) * self.xyz_offset_max_step
            opacities = torch.sigmoid(self.head("opacity")(x)).squeeze(-1)
            quats = F.normalize(self.head("rotation")(x), dim=-1)
        return GaussianAttributes(
            offsets=offsets, colors=colors, opacities=opacities, scales=scales, quats=quats
        )


class GaussianDecoder(nn.Module):
    """``renderer``: template buffers (``smplx_model``), ``mlp_net`` and ``gs_net``."""

    def __init__(self, config: LHMConfig) -> None:
        super().__init__()
        self.smplx_model = TemplateBuffers(config)
        self.mlp_net = PointMLP(config.dim, config.gs_mlp_width, config.gs_mlp_hidden_layers)
        self.gs_net = GaussianHeads(
            config.dim, config.xyz_offset_max_step, config.scale_clip(None), config.upper_body_scale_max
        )
        self._config = config

    def set_training_step(self, step: int | None) -> None:
        """Set the scale clamp from the schedule (``None``: inference value)."""
        self.gs_net.scale_clip = self._config.scale_clip(step)

    def forward(self, features: Tensor, upper_body: Tensor | None = None) -> GaussianAttributes:
        """Decode point features.

        Args:
            features: transformer output. [B, N, D]
            upper_body: bool upper-body mask [N]; defaults to the template's ``is_upper_body``,
                which requires N to equal the template's point count.

        Raises:
            InputError: when no mask is given and N differs from the template's point count,
                or when the mask has the wrong shape.
        """
        if features.ndim != 3:
            raise InputError(f"GaussianDecoder: expected features [B, N, D], got {tuple(features.shape)}")
        n = features.shape[1]
        if upper_body is None:
            upper_body = self.smplx_model.is_upper_body
            if upper_body.shape[0] != n:
                raise InputError(
                    f"GaussianDecoder: {n} points but the template has {upper_body.shape[0]}; "
                    "pass upper_body explicitly"
                )
        elif upper_body.shape != (n,) or upper_body.dtype != torch.bool:
            raise InputError(
                f"GaussianDecoder: upper_body must be bool [{n}], "
                f"got {upper_body.dtype} {tuple(upper_body.shape)}"
            )
        with torch.autocast(device_type=features.device.type, enabled=False):
            hidden = self.mlp_net(features.float())
            out: GaussianAttributes = self.gs_net(hidden, upper_body.to(features.device))
        return out
