"""Head-image encoder: DINOv2 backbone + fusion head (state-dict prefix ``encoder.``).

Four intermediate DINOv2 layers (ViT-L: blocks 4, 11, 17, 23, each passed through the final
norm, patch tokens only) are each projected by a 1x1 convolution, concatenated along channels
and fused by another 1x1 convolution: the head feature pyramid. A 448 x 448 head crop gives
32 x 32 = 1024 tokens of 1024 channels.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...errors import InputError
from .config import DinoV2Config
from .dinov2 import DinoVisionTransformer


class FusionHead(nn.Module):
    """``projects.{i}`` Conv1x1 D -> D per layer, ``output_conv`` Conv1x1 (n_layers * D) -> out."""

    def __init__(self, in_dim: int, n_layers: int, out_dim: int) -> None:
        super().__init__()
        self.projects = nn.ModuleList([nn.Conv2d(in_dim, in_dim, kernel_size=1) for _ in range(n_layers)])
        self.output_conv = nn.Conv2d(n_layers * in_dim, out_dim, kernel_size=1)

    def forward(self, layer_tokens: list[Tensor], grid_h: int, grid_w: int) -> Tensor:
        """Fuse per-layer patch tokens.

        Args:
            layer_tokens: one [B, grid_h * grid_w, D] tensor per fused layer (row-major patches).
            grid_h, grid_w: patch grid.

        Returns:
            fused tokens, row-major. [B, grid_h * grid_w, out_dim]
        """
        if len(layer_tokens) != len(self.projects):
            raise InputError(f"FusionHead: expected {len(self.projects)} layers, got {len(layer_tokens)}")
        maps = []
        for tokens, project in zip(layer_tokens, self.projects, strict=True):
            b, _, d = tokens.shape
            maps.append(project(tokens.transpose(1, 2).reshape(b, d, grid_h, grid_w)))
        fused: Tensor = self.output_conv(torch.cat(maps, dim=1))  # [B, out, h, w]
        return fused.flatten(2).transpose(1, 2)


class HeadEncoder(nn.Module):
    """Head crop -> head-context tokens. Keys ``model.*`` (DINOv2) and ``fusion_head.*``."""

    def __init__(self, config: DinoV2Config, out_dim: int) -> None:
        super().__init__()
        self.config = config
        self.model = DinoVisionTransformer(config)
        self.fusion_head = FusionHead(config.embed_dim, len(config.fused_layers), out_dim)

    def forward(self, images: Tensor) -> Tensor:
        """Encode head crops.

        Args:
            images: square RGB head crops in [0, 1], white padded, side a multiple of the patch
                size (official pipeline: 448; no mean/std normalisation). [B, 3, S, S]

        Returns:
            tokens [B, (S/14)^2, out_dim].
        """
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
            raise InputError(f"HeadEncoder: expected square images [B, 3, S, S], got {tuple(images.shape)}")
        p = self.config.patch_size
        grid = images.shape[-1] // p
        layers = self.model.intermediate_patch_tokens(images, self.config.fused_layers)
        out: Tensor = self.fusion_head(layers, grid, grid)
        return out
