"""LHM numerics: golden values from the official implementation, and the documented quirks.

The golden digests were produced by running the official aigc3d/LHM modules (at b31e76a, with
diffusers 0.32.0) on the deterministic tiny network below (body context of 4096 tokens, since
the official blocks cut the context at that hard-coded index). Each digest is a handful of
fixed random projections of a whole output tensor, so any numerical change shows up.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import pytest
import torch
from torch import nn

from streamer.reconstruct.lhm.config import TINY, body_split
from streamer.reconstruct.lhm.mbht import (
    AdaLayerNormContinuous,
    AdaLayerNormZero,
    BodyHeadBlock,
    JointTransformerBlock,
)
from streamer.reconstruct.lhm.model import LHMNetwork
from streamer.reconstruct.lhm.point_embed import PointEmbed

GOLDEN = {
    "head_tokens_28": [18.6030341, -29.6713961, -2.8690243, 0.9144412],
    "head_tokens_42": [-8.747167, -38.0716623, 10.6822802, -20.118284],
    "head_tokens_56": [-49.0013772, -46.9692958, 8.6358501, -78.7296333],
    "features": [
        0.242081,
        11.3137865,
        5.5534684,
        -20.5317776,
        -4.8048077,
        -74.9136005,
        16.3466313,
        -33.1917269,
    ],
    "offsets": [-1.0080594, -2.5569071, 0.9401929, -0.9683508],
    "colors": [-18.8544907, 12.8860643, 10.1488082, 7.3744404],
    "opacities": [-6.8729499, -12.2500979, 0.4407967, 5.4865427],
    "scales": [-0.7188491, 0.3600463, 0.126762, 0.3205684],
    "quats": [-9.2703355, 9.5290442, -17.2990274, 18.2588495],
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def fill_deterministic(net: LHMNetwork, seed: int = 1234) -> None:
    """Weights from a seeded generator: W ~ N(0, 1/fan_in), norm gains ~ 1, other vectors ~ 0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            r = torch.randn(p.shape, generator=g)
            if p.ndim >= 2:
                p.copy_(r / math.sqrt(p[0].numel()))
            elif name.endswith(".weight") and "norm" in name.split(".")[-2] or name.endswith(".gamma"):
                p.copy_(1.0 + 0.1 * r)
            else:
                p.copy_(0.1 * r)
        net.renderer.gs_net.head("scaling").bias.sub_(4.0)  # keep some scales below the clamps


def digest(t: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn((n, *t.shape), generator=g, dtype=torch.float64)
    return (w * t.double()).flatten(1).sum(1)


def _close(name: str, value: torch.Tensor) -> None:
    torch.testing.assert_close(value, torch.tensor(GOLDEN[name], dtype=torch.float64), rtol=1e-4, atol=2e-4)


def test_matches_official_implementation() -> None:
    cfg = dataclasses.replace(TINY, body_tokens=4096)
    net = LHMNetwork(cfg).eval()
    fill_deterministic(net)
    g = torch.Generator().manual_seed(99)
    upper = torch.rand(cfg.n_query_points, generator=g) < 0.5
    heads = {s: torch.rand(2, 3, s, s, generator=g) for s in (28, 42, 56)}
    body_tokens = torch.randn(2, 4096, cfg.body_feat_dim, generator=g)
    points = torch.randn(2, cfg.n_query_points, 3, generator=g) * 0.4
    with torch.no_grad():
        head_tokens = {s: net.encoder(img) for s, img in heads.items()}
        for s, tokens in head_tokens.items():  # 42 = stored 3x3 grid; 28 and 56 interpolate it
            _close(f"head_tokens_{s}", digest(tokens, 4, 1))
        cond, temb = net.context(body_tokens, head_tokens[28])
        features = net.point_features(points, cond, temb)
        _close("features", digest(features, 8, 2))
        out = net.renderer(features, upper)
    for name in ("offsets", "colors", "opacities", "scales", "quats"):
        _close(name, digest(getattr(out, name), 4, 3))


# -- documented facts, one by one ---------------------------------------------------------


def test_point_embedding_layout() -> None:
    emb = PointEmbed(dim=8)
    assert emb.basis.shape == (3, 24)
    freqs = torch.tensor([2.0**k * math.pi for k in range(8)])
    torch.testing.assert_close(emb.basis[1, 8:16], freqs)
    assert emb.basis[0, 8:].abs().sum() == 0 and emb.basis[2, :16].abs().sum() == 0
    p = torch.tensor([[[0.1, -0.2, 0.3]]])
    feat = emb.features(p)
    assert feat.shape == (1, 1, 51)
    torch.testing.assert_close(feat[0, 0, 8 + 3], torch.sin(-0.2 * 8 * torch.tensor(math.pi)))  # sin, y, k=3
    torch.testing.assert_close(feat[0, 0, 24 + 16], torch.cos(0.3 * torch.tensor(math.pi)))  # cos, z, k=0
    torch.testing.assert_close(feat[0, 0, 48:], p[0, 0])
    assert emb.norm.eps == 1e-5


def test_adaln_chunk_orders() -> None:
    d = 4
    zero = AdaLayerNormZero(d)
    cont = AdaLayerNormContinuous(d)
    x = torch.randn(1, 3, d)
    temb = torch.zeros(1, d)  # SiLU(0) = 0, so the factors are the biases
    with torch.no_grad():
        zero.linear.weight.zero_()
        # shift_msa = 0, scale_msa = 1, gate_msa = 2, shift_mlp = 3, scale_mlp = 4, gate_mlp = 5
        zero.linear.bias.copy_(torch.arange(6.0).repeat_interleave(d))
        cont.linear.weight.zero_()
        cont.linear.bias.copy_(torch.tensor([2.0, 7.0]).repeat_interleave(d))  # scale=2, shift=7
    mod = zero(x, temb)
    ln = torch.nn.functional.layer_norm(x, (d,), eps=1e-6)
    torch.testing.assert_close(mod.x, ln * 2.0 + 0.0)
    assert mod.gate_msa.unique().item() == 2 and mod.shift_mlp.unique().item() == 3
    assert mod.scale_mlp.unique().item() == 4 and mod.gate_mlp.unique().item() == 5
    torch.testing.assert_close(cont(x, temb), ln * 3.0 + 7.0)


def test_context_feed_forward_residual_is_added_twice() -> None:
    torch.manual_seed(0)
    block = JointTransformerBlock(8, 2, 1e-6, context_pre_only=False)
    with torch.no_grad():  # all context modulation factors zero: gates 0, shift 0, scale 0
        block.norm1_context.linear.weight.zero_()
        block.norm1_context.linear.bias.zero_()
    x, c, temb = torch.randn(1, 5, 8), torch.randn(1, 3, 8), torch.randn(1, 8)
    _, c_out = block(x, c, temb)
    ln = torch.nn.functional.layer_norm(c, (8,), eps=1e-6)
    assert block.ff_context is not None
    torch.testing.assert_close(c_out, c + block.ff_context(ln))  # gated term vanished, ungated one stays


def test_context_pre_only_shortcut_is_exact() -> None:
    torch.manual_seed(0)
    block = JointTransformerBlock(8, 2, 1e-6, context_pre_only=True)
    assert block.ff_context is None and block.attn.to_add_out is None
    x, c = torch.randn(2, 5, 8), torch.randn(2, 7, 8)
    shortcut, none = block.attn(x, c, need_context=False)
    full, c_rows = block.attn(x, c, need_context=True)
    assert none is None and c_rows is not None and c_rows.shape == (2, 7, 8)
    torch.testing.assert_close(shortcut, full)
    out, ctx = block(x, c, torch.randn(2, 8))
    assert ctx is None and out.shape == x.shape


def test_body_head_split_and_embedding_halves() -> None:
    torch.manual_seed(0)
    layer = BodyHeadBlock(8, 2, 1e-6, context_pre_only=False)
    seen: dict[str, tuple[torch.Tensor, ...]] = {}

    def spy(name: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], None]:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            seen[name] = args

        return hook

    layer.head_dit.register_forward_pre_hook(spy("head"))
    layer.body_dit.register_forward_pre_hook(spy("body"))
    n, n_ctx_body = 10, 6
    x, c, temb = torch.randn(1, n, 8), torch.randn(1, 9, 8), torch.randn(1, 16)
    x_out, c_out = layer(x, c, temb, n_ctx_body)
    assert body_split(n) == 7
    head_x, head_c, head_t = seen["head"]
    body_x, body_c, body_t = seen["body"]
    torch.testing.assert_close(head_x, x[:, 7:])
    torch.testing.assert_close(head_c, c[:, 6:])
    torch.testing.assert_close(head_t, temb[:, 8:])
    torch.testing.assert_close(body_c, c[:, :6])
    torch.testing.assert_close(body_t, temb[:, :8])
    torch.testing.assert_close(body_x[:, :7], x[:, :7])  # body points untouched by the head block
    assert not torch.allclose(body_x[:, 7:], x[:, 7:])  # head points already updated
    assert x_out.shape == x.shape and c_out is not None and c_out.shape == c.shape


def test_dinov2_native_grid_keeps_the_stored_table() -> None:
    net = LHMNetwork(TINY)
    dino = net.encoder.model
    assert dino.interpolate_pos_encoding(3, 3) is dino.pos_embed
    resized = dino.interpolate_pos_encoding(2, 2)
    assert resized.shape == (1, 5, TINY.dino.embed_dim)
    torch.testing.assert_close(resized[:, 0], dino.pos_embed[:, 0])  # class position is never resized
    tokens = dino.prepare_tokens(torch.rand(1, 3, 28, 28))
    assert tokens.shape == (1, 1 + 4 + 4, TINY.dino.embed_dim)
    torch.testing.assert_close(tokens[:, 1:5], dino.register_tokens)  # registers carry no position
    assert [t.shape[1] for t in dino.intermediate_patch_tokens(torch.rand(1, 3, 28, 28), [0, 3])] == [4, 4]


@pytest.mark.parametrize("head_side", [28, 56])
def test_head_tokens_follow_the_image_grid(head_side: int) -> None:
    net = LHMNetwork(TINY)
    assert net.encoder(torch.rand(1, 3, head_side, head_side)).shape == (
        1,
        (head_side // 14) ** 2,
        TINY.head_feat_dim,
    )
