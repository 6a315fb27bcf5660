"""DINOv2 vision transformer with register tokens (the head-image backbone, ``encoder.model.``).

Written from the published architecture (ViT-L/14, 4 registers, LayerScale, pre-norm blocks,
exact-GELU MLP, LayerNorm eps 1e-6) with the parameter names of the released state dicts:
``cls_token``, ``pos_embed``, ``register_tokens``, ``patch_embed.proj``,
``blocks.{i}.{norm1,attn.qkv,attn.proj,ls1.gamma,norm2,mlp.fc1,mlp.fc2,ls2.gamma}``, ``norm``.
There is no ``mask_token`` (LHM removed it).

Token order inside the network: ``[cls, registers..., patches...]``; the positional embedding
is added to ``[cls, patches]`` before the registers are inserted.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import InputError
from .config import DinoV2Config


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens. [B, 3, H, W] -> [B, (H/p) * (W/p), D]"""

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: Tensor) -> Tensor:
        out: Tensor = self.proj(images).flatten(2).transpose(1, 2)
        return out


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused qkv projection. [B, L, D] -> [B, L, D]"""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # [B, H, L, hd]
        out: Tensor = self.proj(attn.transpose(1, 2).reshape(b, n, d))
        return out


class Mlp(nn.Module):
    """fc1 -> GELU (exact) -> fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.fc2(F.gelu(self.fc1(x)))
        return out


class LayerScale(nn.Module):
    """Per-channel learned residual scale ``gamma`` [D]."""

    def __init__(self, dim: int, init: float) -> None:
        super().__init__()
        self.init = init
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm ViT block: x + ls1(attn(norm1 x)); x + ls2(mlp(norm2 x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, layer_scale_init: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = SelfAttention(dim, num_heads)
        self.ls1 = LayerScale(dim, layer_scale_init)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, layer_scale_init)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        out: Tensor = x + self.ls2(self.mlp(self.norm2(x)))
        return out


class DinoVisionTransformer(nn.Module):
    """DINOv2 backbone returning normed patch tokens of chosen blocks."""

    def __init__(self, config: DinoV2Config) -> None:
        super().__init__()
        self.config = config
        d = config.embed_dim
        self.patch_size = config.patch_size
        self.num_register_tokens = config.num_register_tokens
        self.patch_embed = PatchEmbed(config.patch_size, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, config.pos_grid**2 + 1, d))
        self.register_tokens = nn.Parameter(torch.zeros(1, config.num_register_tokens, d))
        self.blocks = nn.ModuleList(
            [
                Block(d, config.num_heads, config.mlp_ratio, config.layer_scale_init)
                for _ in range(config.depth)
            ]
        )
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """DINOv2's initialisation (only matters when training without pretrained weights)."""
        if self.pos_embed.is_meta:  # nothing to initialise; trunc_normal_ on meta is slow to set up
            return
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        nn.init.normal_(self.register_tokens, std=1e-6)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def interpolate_pos_encoding(self, grid_h: int, grid_w: int) -> Tensor:
        """Positional embedding for a ``grid_h x grid_w`` patch grid.

        The stored ``pos_grid^2`` patch embeddings are resized in float32 with (antialiased)
        bicubic interpolation by the scale factor ``(grid + offset) / pos_grid``, as the
        register models do; the stored table is returned unchanged for the native square grid.

        Returns:
            [1, 1 + grid_h * grid_w, D] in the dtype of ``pos_embed``.
        """
        m = self.config.pos_grid
        if grid_h == m and grid_w == m:
            return self.pos_embed
        d = self.pos_embed.shape[-1]
        table = self.pos_embed.float()
        patch = table[:, 1:].reshape(1, m, m, d).permute(0, 3, 1, 2)
        off = self.config.interpolate_offset
        patch = F.interpolate(
            patch,
            scale_factor=((grid_h + off) / m, (grid_w + off) / m),
            mode="bicubic",
            antialias=self.config.interpolate_antialias,
        )
        if patch.shape[-2:] != (grid_h, grid_w):  # float rounding of the scale factor
            patch = F.interpolate(
                table[:, 1:].reshape(1, m, m, d).permute(0, 3, 1, 2),
                size=(grid_h, grid_w),
                mode="bicubic",
                antialias=self.config.interpolate_antialias,
            )
        patch = patch.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, d)
        return torch.cat([table[:, :1], patch], dim=1).to(self.pos_embed.dtype)

    def prepare_tokens(self, images: Tensor) -> Tensor:
        """Images [B, 3, H, W] -> tokens [B, 1 + R + (H/p)(W/p), D] (cls, registers, patches)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise InputError(f"DINOv2: expected images [B, 3, H, W], got {tuple(images.shape)}")
        b, _, h, w = images.shape
        p = self.patch_size
        if h % p or w % p:
            raise InputError(f"DINOv2: image size {h}x{w} is not a multiple of the patch size {p}")
        x = self.patch_embed(images)
        x = torch.cat([self.cls_token.expand(b, -1, -1).to(x.dtype), x], dim=1)
        x = x + self.interpolate_pos_encoding(h // p, w // p).to(x.dtype)
        regs = self.register_tokens.expand(b, -1, -1).to(x.dtype)
        return torch.cat([x[:, :1], regs, x[:, 1:]], dim=1)

    def intermediate_patch_tokens(self, images: Tensor, layers: Sequence[int]) -> list[Tensor]:
        """Final-normed patch tokens after the given blocks.

        Args:
            images: RGB in [0, 1] (no mean/std normalisation in LHM). [B, 3, H, W]
            layers: block indices, ascending.

        Returns:
            one [B, (H/p)(W/p), D] tensor per requested block (class and register tokens dropped).
        """
        wanted = list(layers)
        if not wanted or any(not 0 <= i < len(self.blocks) for i in wanted):
            raise InputError(f"DINOv2: layers {wanted} outside 0..{len(self.blocks) - 1}")
        x = self.prepare_tokens(images)
        outputs: list[Tensor] = []
        skip = 1 + self.num_register_tokens
        for i, block in enumerate(self.blocks[: max(wanted) + 1]):
            x = block(x)
            if i in wanted:
                outputs.append(self.norm(x)[:, skip:])
        return outputs
