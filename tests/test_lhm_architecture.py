"""LHM network layout against the released state dicts, and the tiny forward pass on CPU."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from streamer.avatar.gaussians import Gaussians
from streamer.errors import InputError
from streamer.reconstruct.lhm import (
    BodyEncoder,
    LHMNetwork,
    PatchStandInEncoder,
    build_network,
    count_parameters,
)
from streamer.reconstruct.lhm.config import CONFIGS, TINY, get_config
from streamer.reconstruct.lhm.decoder import HEAD_CHANNELS
from streamer.reconstruct.lhm.mbht import BodyHeadBlock
from streamer.reconstruct.lhm.model import ENCODER_PREFIX
from streamer.reconstruct.lhm.state_dict_diff import module_layout

MANIFEST = Path(__file__).resolve().parents[1].parent / "shared" / "lhm" / "lhm_state_dict_manifest.json"

# NOTES.md table: all parameters / parameters without encoder.*
PUBLISHED_COUNTS = {
    "MINI": (442_314_510, 129_549_070),
    "500M": (668_992_782, 356_227_342),
    "1B": (1_424_587_022, 1_111_821_582),
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    if not MANIFEST.is_file():
        pytest.skip(f"LHM state-dict manifest not found at {MANIFEST} (shared/lhm beside the repo root)")
    data: dict[str, Any] = json.loads(MANIFEST.read_text())
    return data


@pytest.fixture(scope="module")
def meta_networks() -> dict[str, LHMNetwork]:
    return {name: build_network(get_config(name), "meta") for name in PUBLISHED_COUNTS}


@pytest.mark.parametrize("name", list(PUBLISHED_COUNTS))
def test_state_dict_equals_manifest(
    name: str, manifest: dict[str, Any], meta_networks: dict[str, LHMNetwork]
) -> None:
    expected = {k: tuple(v) for k, v in manifest[name].items() if k != "_meta"}
    shapes, dtypes = module_layout(meta_networks[name])
    assert list(shapes) == list(expected)  # same keys, same order
    assert shapes == expected
    buffers = manifest[name]["_meta"]["buffers"]
    assert {k: v["dtype"] for k, v in buffers.items()} == {k: dtypes[k] for k in buffers}
    assert set(buffers) == {k for k, _ in meta_networks[name].named_buffers()}


@pytest.mark.parametrize("name", list(PUBLISHED_COUNTS))
def test_parameter_counts(name: str, meta_networks: dict[str, LHMNetwork], manifest: dict[str, Any]) -> None:
    net = meta_networks[name]
    total, without_encoder = PUBLISHED_COUNTS[name]
    assert count_parameters(net) == total
    assert count_parameters(net, (ENCODER_PREFIX,)) == without_encoder
    assert manifest[name]["_meta"]["total_parameters"] == total
    # buffers are state but not parameters: basis and the SMPL-X template are excluded
    assert all(p.device.type == "meta" for p in net.parameters())


def test_meta_build_is_cheap_and_sapiens_is_not_in_the_state_dict(
    meta_networks: dict[str, LHMNetwork],
) -> None:
    net = meta_networks["MINI"]
    assert not any(k.startswith("fine_encoder") for k in net.state_dict())
    assert net.body_encoder is None
    first, last = net.transformer.layers[0], net.transformer.layers[-1]
    assert isinstance(first, BodyHeadBlock) and isinstance(last, BodyHeadBlock)
    assert last.body_dit.attn.to_add_out is None and last.body_dit.ff_context is None
    assert first.body_dit.attn.to_add_out is not None


def test_config_lookup() -> None:
    assert get_config("mini") is CONFIGS["MINI"]
    assert get_config("1b").transformer_layers == 15
    assert get_config("500M").n_body_points == 30000
    assert CONFIGS["MINI"].n_body_points == 15000
    with pytest.raises(InputError, match="unknown LHM config 'XL'"):
        get_config("XL")


def test_scale_clip_schedule() -> None:
    cfg = CONFIGS["1B"]
    assert cfg.scale_clip(None) == 0.05
    assert cfg.scale_clip(0) == 0.01
    assert cfg.scale_clip(10_000_000) == 0.05
    assert cfg.scale_clip(1550) == pytest.approx(0.03)


# -- tiny forward pass --------------------------------------------------------------------


def _tiny_network(seed: int = 0) -> LHMNetwork:
    torch.manual_seed(seed)
    stand_in = BodyEncoder.for_config(PatchStandInEncoder.for_config(TINY), TINY)
    net = LHMNetwork(TINY, stand_in).eval()
    # random heads so the activations and clamps are exercised (the released init is constant)
    with torch.no_grad():
        for name in HEAD_CHANNELS:
            layer = net.renderer.gs_net.head(name)
            layer.weight.normal_(0.0, 1.0)
            layer.bias.normal_(0.0, 1.0)
        net.renderer.smplx_model.is_upper_body[: TINY.n_query_points // 2] = True
    return net


def _inputs(batch: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    body = torch.rand(batch, 3, TINY.body_resolution, TINY.body_resolution, generator=g)
    head = torch.rand(batch, 3, TINY.dino.input_resolution, TINY.dino.input_resolution, generator=g)
    points = torch.randn(TINY.n_query_points, 3, generator=g) * 0.5
    return body, head, points


def test_tiny_forward_shapes_and_ranges() -> None:
    net = _tiny_network()
    body, head, points = _inputs()
    with torch.no_grad():
        out = net(body, head, points)
    n = TINY.n_query_points
    assert out.offsets.shape == (2, n, 3)
    assert out.colors.shape == (2, n, 3)
    assert out.opacities.shape == (2, n)
    assert out.scales.shape == (2, n, 3)
    assert out.quats.shape == (2, n, 4)
    for t in vars(out).values():
        assert t.dtype == torch.float32 and torch.isfinite(t).all()
    assert out.colors.min() >= 0 and out.colors.max() <= 1
    assert out.opacities.min() >= 0 and out.opacities.max() <= 1
    assert out.scales.min() >= 0 and out.scales.max() <= TINY.scale_clip(None) + 1e-7
    assert out.scales.max() > 0.03  # the general clamp is reachable ...
    upper = net.renderer.smplx_model.is_upper_body
    # ... and the upper body is capped harder
    assert out.scales[:, upper].max() <= TINY.upper_body_scale_max + 1e-7
    assert out.offsets.abs().max() <= TINY.xyz_offset_max_step / 2
    torch.testing.assert_close(out.quats.norm(dim=-1), torch.ones(2, n))
    # different images give different Gaussians (the encoders are wired in)
    body2 = body.flip(0)
    with torch.no_grad():
        out2 = net(body2, head, points)
    assert not torch.allclose(out.colors, out2.colors)


def test_released_initialisation_of_heads() -> None:
    torch.manual_seed(0)
    net = LHMNetwork(TINY, BodyEncoder.for_config(PatchStandInEncoder.for_config(TINY), TINY)).eval()
    body, head, points = _inputs(1)
    with torch.no_grad():
        out = net(body, head, points)
    torch.testing.assert_close(out.offsets, torch.zeros_like(out.offsets))
    torch.testing.assert_close(out.opacities, torch.full_like(out.opacities, 0.1))
    torch.testing.assert_close(out.scales, torch.full_like(out.scales, float(torch.exp(torch.tensor(-5.0)))))
    torch.testing.assert_close(out.quats, torch.tensor([1.0, 0.0, 0.0, 0.0]).expand_as(out.quats))


def test_batched_points_and_gaussians_bridge() -> None:
    net = _tiny_network()
    body, head, points = _inputs()
    batched = torch.stack([points, points * 0.5])
    with torch.no_grad():
        shared = net(body, head, points)
        per_item = net(body, head, batched)
    torch.testing.assert_close(shared.colors[0], per_item.colors[0])
    assert not torch.allclose(shared.colors[1], per_item.colors[1])
    g = per_item.canonical_gaussians(batched, index=1)
    assert isinstance(g, Gaussians) and len(g) == TINY.n_query_points
    torch.testing.assert_close(g.means, batched[1] + per_item.offsets[1])


def test_forward_input_errors() -> None:
    net = _tiny_network()
    body, head, points = _inputs()
    with pytest.raises(InputError, match="query points"):
        net(body, head, points[:, :2])
    with pytest.raises(InputError, match="template has 64"):
        net(body, head, points[:10])
    with pytest.raises(InputError, match="BodyEncoder: expected images"):
        net(body[:, :, :32], head, points)
    with pytest.raises(InputError, match="head images"):
        net(body, head[:1], points)
    with pytest.raises(InputError, match="precision"):
        net(body, head, points, precision="fp8")
    with pytest.raises(InputError, match="no body encoder"):
        LHMNetwork(TINY)(body, head, points)
    # an explicit mask lifts the point-count restriction
    with torch.no_grad():
        out = net(body, head, points[:10], upper_body=torch.zeros(10, dtype=torch.bool))
    assert out.colors.shape == (2, 10, 3)


def test_bf16_autocast_path_runs_and_stays_close() -> None:
    net = _tiny_network()
    body, head, points = _inputs()
    seen: list[torch.dtype] = []
    net.transformer.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    with torch.no_grad():
        full = net(body, head, points)  # auto on CPU = fp32
        half = net(body, head, points, precision="bf16")
    assert seen == [torch.float32, torch.bfloat16]
    for name, value in vars(half).items():
        assert value.dtype == torch.float32, name  # the decoder always runs in float32
        torch.testing.assert_close(value, getattr(full, name), atol=0.02, rtol=0.05)


def test_gradients_flow_and_checkpointing_matches() -> None:
    body, head, points = _inputs(1)

    def grads(checkpointing: bool) -> dict[str, torch.Tensor]:
        net = _tiny_network()
        net.train()
        net.transformer.gradient_checkpointing = checkpointing
        out = net(body, head, points)
        (out.colors.sum() + out.offsets.square().sum() + out.scales.sum()).backward()
        return {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}

    plain, ckpt = grads(False), grads(True)
    assert any(n.startswith("encoder.model.blocks.0.") for n in plain)  # DINOv2 is trained
    assert any(n.startswith("transformer.layers.0.head_dit.") for n in plain)
    assert "motion_embed_mlp.0.weight" in plain and "pcl_embed.mlp.weight" in plain
    assert plain.keys() == ckpt.keys()
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], msg=name)
