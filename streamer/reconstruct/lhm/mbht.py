"""Multimodal Body-Head Transformer (state-dict prefix ``transformer.``).

Each MBHT layer holds two SD3-style joint ("MM-DiT") blocks: ``head_dit`` lets the head
query points (the last quarter) attend jointly with the head-image context, then
``body_dit`` lets all points attend jointly with the body-image context. Both blocks are
modulated (adaptive LayerNorm zero) by a global embedding of the body image (``temb``: its
first half drives the body block, its second half the head block).

Facts this module reproduces, including the quirks of the released model:

* context = ``linear_cond_proj(cat[body tokens, zero-padded head tokens])``; it is split at
  the number of body tokens (4096 for Sapiens at 1024 px) into body and head context;
* points split at ``int(0.75 N)`` into body and head points;
* AdaLN-zero: ``Linear(SiLU(temb))`` chunked as shift_msa, scale_msa, gate_msa, shift_mlp,
  scale_mlp, gate_mlp over a LayerNorm without affine (eps 1e-6);
* joint attention: q/k/v of the points and add_q/k/v of the context (with bias), RMSNorm of
  q, k, added q, added k per head (weights [head_dim], eps 1e-6), one softmax over
  ``[points, context]``, ``to_out.0`` for points and ``to_add_out`` for the context;
* feed-forward: Linear(4x) -> GELU(tanh) -> Linear;
* QUIRK: the context feed-forward residual is added twice,
  ``c += c_gate_mlp * ff(c_n)`` then ``c += ff(c_n)``;
* the last layer is *context pre-only*: its context norm is AdaLN-continuous
  (``Linear(SiLU(temb))`` chunked as scale, shift), it has no ``to_add_out`` / ``ff_context``
  and the context is not updated (its ``add_q_proj`` / ``norm_added_q`` weights exist but
  cannot influence the output);
* final ``norm``: LayerNorm(dim, eps 1e-6) with affine.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import InputError
from .config import body_split


class RMSNorm(nn.Module):
    """RMS normalisation over the last axis with a learned gain ``weight`` [dim].

    Statistics are computed in float32; the result has the input dtype.
    """

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * self.weight.float()).to(x.dtype)


class ZeroModulation(NamedTuple):
    """Output of :class:`AdaLayerNormZero`: the modulated input and the remaining factors [B, D]."""

    x: Tensor
    gate_msa: Tensor
    shift_mlp: Tensor
    scale_mlp: Tensor
    gate_mlp: Tensor


class AdaLayerNormZero(nn.Module):
    """adaLN-zero: ``linear`` [D -> 6D] on SiLU(temb); LayerNorm without affine, eps 1e-6."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, 6 * dim)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)

    def forward(self, x: Tensor, temb: Tensor) -> ZeroModulation:
        """x [B, L, D], temb [B, D] -> (norm(x) * (1 + scale_msa) + shift_msa, gates/shifts [B, D])."""
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.linear(F.silu(temb)).chunk(
            6, dim=1
        )
        x = self.norm(x) * (1 + scale_msa[:, None]) + shift_msa[:, None]
        return ZeroModulation(x, gate_msa, shift_mlp, scale_mlp, gate_mlp)


class AdaLayerNormContinuous(nn.Module):
    """Scale/shift-only adaptive LayerNorm: ``linear`` [D -> 2D] chunked as (scale, shift)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, 2 * dim)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        """x [B, L, D], temb [B, D] -> [B, L, D]."""
        scale, shift = self.linear(F.silu(temb).to(x.dtype)).chunk(2, dim=1)
        out: Tensor = self.norm(x) * (1 + scale[:, None]) + shift[:, None]
        return out


class TanhGELUProjection(nn.Module):
    """``proj`` Linear followed by GELU with the tanh approximation."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.proj(x), approximate="tanh")


class FeedForward(nn.Module):
    """``net.0.proj`` Linear(D, 4D) + GELU(tanh), ``net.2`` Linear(4D, D). [B, L, D] -> [B, L, D]"""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        # index 1 is the (inactive) dropout slot; kept so the keys read net.0 / net.2
        self.net = nn.Sequential(
            TanhGELUProjection(dim, mult * dim), nn.Identity(), nn.Linear(mult * dim, dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.net(x)
        return out


class JointAttention(nn.Module):
    """Joint self-attention over ``[points, context]`` with QK RMSNorm.

    Args:
        dim: token width (points and context).
        num_heads: heads (head dim = dim / heads).
        eps: RMSNorm epsilon.
        context_pre_only: no ``to_add_out`` (the context output is not used).
    """

    def __init__(self, dim: int, num_heads: int, eps: float, context_pre_only: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.context_pre_only = context_pre_only
        head_dim = dim // num_heads
        self.norm_q = RMSNorm(head_dim, eps)
        self.norm_k = RMSNorm(head_dim, eps)
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.add_k_proj = nn.Linear(dim, dim)
        self.add_v_proj = nn.Linear(dim, dim)
        self.add_q_proj = nn.Linear(dim, dim)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])
        self.to_add_out = None if context_pre_only else nn.Linear(dim, dim)
        self.norm_added_q = RMSNorm(head_dim, eps)
        self.norm_added_k = RMSNorm(head_dim, eps)

    def _heads(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)  # [B, H, L, hd]

    def forward(
        self, x: Tensor, context: Tensor, need_context: bool | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Attend.

        Args:
            x: normalised point tokens. [B, N, D]
            context: normalised context tokens. [B, M, D]
            need_context: compute the context output; defaults to ``not context_pre_only``.
                Without it only the point rows of the joint attention are evaluated, which gives
                the same point outputs (softmax is per query row) at a fraction of the cost.

        Returns:
            point output [B, N, D] and context output [B, M, D] (None when not needed).
        """
        if need_context is None:
            need_context = not self.context_pre_only
        b, n, _ = x.shape
        q = self.norm_q(self._heads(self.to_q(x)))
        k = torch.cat(
            [
                self.norm_k(self._heads(self.to_k(x))),
                self.norm_added_k(self._heads(self.add_k_proj(context))),
            ],
            2,
        )
        v = torch.cat([self._heads(self.to_v(x)), self._heads(self.add_v_proj(context))], dim=2)
        if need_context:
            q = torch.cat([q, self.norm_added_q(self._heads(self.add_q_proj(context)))], dim=2)
        out = F.scaled_dot_product_attention(q, k, v)  # [B, H, Lq, hd]
        out = out.transpose(1, 2).reshape(b, out.shape[2], -1)
        x_out = self.to_out[0](out[:, :n])
        c_out = None
        if need_context:
            c_out = out[:, n:]
            if self.to_add_out is not None:
                c_out = self.to_add_out(c_out)
        return x_out, c_out


class JointTransformerBlock(nn.Module):
    """One SD3-style joint block (``head_dit`` / ``body_dit``)."""

    def __init__(self, dim: int, num_heads: int, eps: float, context_pre_only: bool) -> None:
        super().__init__()
        self.context_pre_only = context_pre_only
        self.norm1 = AdaLayerNormZero(dim)
        self.norm1_context: AdaLayerNormZero | AdaLayerNormContinuous = (
            AdaLayerNormContinuous(dim) if context_pre_only else AdaLayerNormZero(dim)
        )
        self.attn = JointAttention(dim, num_heads, eps, context_pre_only)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=eps)
        self.ff = FeedForward(dim)
        self.norm2_context = (
            None if context_pre_only else nn.LayerNorm(dim, elementwise_affine=False, eps=eps)
        )
        self.ff_context = None if context_pre_only else FeedForward(dim)

    def forward(self, x: Tensor, context: Tensor, temb: Tensor) -> tuple[Tensor, Tensor | None]:
        """x [B, N, D], context [B, M, D], temb [B, D] -> (x [B, N, D], context [B, M, D] or None)."""
        mod = self.norm1(x, temb)
        if isinstance(self.norm1_context, AdaLayerNormContinuous):
            attn_x, attn_c = self.attn(mod.x, self.norm1_context(context, temb), need_context=False)
            cmod = None
        else:
            cmod = self.norm1_context(context, temb)
            attn_x, attn_c = self.attn(mod.x, cmod.x, need_context=True)

        x = x + mod.gate_msa[:, None] * attn_x
        h = self.norm2(x) * (1 + mod.scale_mlp[:, None]) + mod.shift_mlp[:, None]
        x = x + mod.gate_mlp[:, None] * self.ff(h)

        if cmod is None:
            return x, None
        assert self.norm2_context is not None and self.ff_context is not None and attn_c is not None
        context = context + cmod.gate_msa[:, None] * attn_c
        hc = self.norm2_context(context) * (1 + cmod.scale_mlp[:, None]) + cmod.shift_mlp[:, None]
        ff_c = self.ff_context(hc)
        context = context + cmod.gate_mlp[:, None] * ff_c
        context = context + ff_c  # QUIRK of the released model: the residual is added a second time
        return x, context


class BodyHeadBlock(nn.Module):
    """One MBHT layer: ``head_dit`` on the head points, then ``body_dit`` on all points."""

    def __init__(self, dim: int, num_heads: int, eps: float, context_pre_only: bool) -> None:
        super().__init__()
        self.head_dit = JointTransformerBlock(dim, num_heads, eps, context_pre_only)
        self.body_dit = JointTransformerBlock(dim, num_heads, eps, context_pre_only)

    def forward(
        self, x: Tensor, context: Tensor, temb: Tensor, n_body_context: int
    ) -> tuple[Tensor, Tensor | None]:
        """Run one layer.

        Args:
            x: point tokens, body points first. [B, N, D]
            context: projected image context, body tokens first. [B, M, D]
            temb: global embedding, body half then head half. [B, 2D]
            n_body_context: body-context tokens at the start of ``context``.

        Returns:
            x [B, N, D] and the updated context [B, M, D] (None for a context-pre-only layer).
        """
        n_body = body_split(x.shape[1])
        half = temb.shape[1] // 2
        body_temb, head_temb = temb[:, :half], temb[:, half:]
        body_ctx, head_ctx = context[:, :n_body_context], context[:, n_body_context:]
        head_x, head_ctx_out = self.head_dit(x[:, n_body:], head_ctx, head_temb)
        x = torch.cat([x[:, :n_body], head_x], dim=1)
        x, body_ctx_out = self.body_dit(x, body_ctx, body_temb)
        if body_ctx_out is None or head_ctx_out is None:
            return x, None
        return x, torch.cat([body_ctx_out, head_ctx_out], dim=1)


class MBHTransformer(nn.Module):
    """The stack of MBHT layers with context projection and final norm.

    Keys: ``layers.{i}.{head_dit,body_dit}.*``, ``norm`` (LayerNorm with affine),
    ``linear_cond_proj`` (Linear cond_dim -> dim).
    """

    def __init__(self, n_layers: int, dim: int, num_heads: int, cond_dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [BodyHeadBlock(dim, num_heads, eps, context_pre_only=i == n_layers - 1) for i in range(n_layers)]
        )
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.linear_cond_proj = nn.Linear(cond_dim, dim)
        self.gradient_checkpointing = False

    def forward(self, x: Tensor, cond: Tensor, temb: Tensor, n_body_context: int) -> Tensor:
        """Transform query-point tokens.

        Args:
            x: embedded query points, body points first. [B, N, D]
            cond: image context, ``n_body_context`` body tokens then head tokens. [B, M, cond_dim]
            temb: global embedding. [B, 2D]
            n_body_context: body tokens in ``cond``.

        Returns:
            point features after the final LayerNorm. [B, N, D]
        """
        d = x.shape[-1]
        if temb.ndim != 2 or temb.shape[1] != 2 * d or temb.shape[0] != x.shape[0]:
            raise InputError(f"MBHT: expected temb [{x.shape[0]}, {2 * d}], got {tuple(temb.shape)}")
        if cond.ndim != 3 or cond.shape[0] != x.shape[0] or not 0 < n_body_context < cond.shape[1]:
            raise InputError(f"MBHT: bad context {tuple(cond.shape)} for {n_body_context} body tokens")
        context: Tensor | None = self.linear_cond_proj(cond)
        for layer in self.layers:
            assert context is not None  # only the last layer returns None
            if self.gradient_checkpointing and self.training:
                x, context = torch.utils.checkpoint.checkpoint(
                    layer, x, context, temb, n_body_context, use_reentrant=False
                )
            else:
                x, context = layer(x, context, temb, n_body_context)
        out: Tensor = self.norm(x)
        return out
