"""Strict loading of LHM checkpoints: round trips and clear errors naming the keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from streamer.errors import InputError
from streamer.reconstruct.lhm import (
    CHECKPOINT_FILENAME,
    CheckpointFormatError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    LHMNetwork,
    build_network,
    load_checkpoint,
    read_layout,
    save_checkpoint,
)
from streamer.reconstruct.lhm.checkpoint import TEMPLATE_PREFIX, detect_config
from streamer.reconstruct.lhm.config import CONFIGS, TINY
from streamer.reconstruct.lhm.state_dict_diff import module_layout


def _source() -> LHMNetwork:
    torch.manual_seed(1)
    net = LHMNetwork(TINY)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p))
        net.renderer.smplx_model.is_upper_body[::3] = True
        net.get_buffer("renderer.smplx_model.smplx_layer.parents").copy_(torch.arange(-1, 54))
    return net


def _assert_same(a: LHMNetwork, b: LHMNetwork) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype, k
        assert torch.equal(sa[k], sb[k]), k


def _safetensors_or_skip() -> None:
    pytest.importorskip("safetensors", reason="safetensors is not installed (needed for model.safetensors)")


def test_safetensors_round_trip_strict(tmp_path: Path) -> None:
    _safetensors_or_skip()
    src = _source()
    path = save_checkpoint(src, tmp_path)
    assert path == tmp_path / CHECKPOINT_FILENAME
    dst = LHMNetwork(TINY)
    report = load_checkpoint(dst, tmp_path)  # the directory resolves to model.safetensors
    assert report.diff.ok and report.path == path
    assert len(report.loaded) == len(src.state_dict())
    _assert_same(src, dst)
    shapes, dtypes = read_layout(path)
    assert shapes == module_layout(src)[0]
    assert dtypes[TEMPLATE_PREFIX + "is_upper_body"] == "bool"


def test_torch_round_trip_into_meta_network(tmp_path: Path) -> None:
    src = _source()
    path = save_checkpoint(src, tmp_path / "weights.pt")
    dst = build_network(TINY, "meta")
    load_checkpoint(dst, path)
    assert all(t.device.type == "cpu" for t in dst.state_dict().values())
    _assert_same(src, dst)


def _tampered(tmp_path: Path, change: str) -> Path:
    state = _source().state_dict()
    if change == "missing":
        del state["transformer.layers.1.body_dit.attn.to_q.weight"]
    elif change == "extra":
        state["transformer.layers.1.body_dit.attn.to_add_out.weight"] = torch.zeros(32, 32)
    elif change == "shape":
        state["pcl_embed.mlp.weight"] = torch.zeros(32, 50)
    path = tmp_path / f"{change}.pt"
    torch.save(state, path)
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("missing", r"missing 1 key\(s\): transformer\.layers\.1\.body_dit\.attn\.to_q\.weight"),
        ("extra", r"unexpected 1 key\(s\): transformer\.layers\.1\.body_dit\.attn\.to_add_out\.weight"),
        (
            "shape",
            r"shape mismatch in 1 key\(s\): pcl_embed\.mlp\.weight expected \[32, 51\] found \[32, 50\]",
        ),
    ],
)
def test_mismatch_errors_name_the_key(tmp_path: Path, change: str, message: str) -> None:
    path = _tampered(tmp_path, change)
    dst = LHMNetwork(TINY)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(CheckpointMismatchError, match=message) as info:
        load_checkpoint(dst, path)
    assert str(path) in str(info.value) and "tiny network" in str(info.value)
    assert not info.value.diff.ok
    for k, v in dst.state_dict().items():  # nothing was loaded
        assert torch.equal(v, before[k]), k


def test_non_strict_load_reports_and_loads_the_rest(tmp_path: Path) -> None:
    path = _tampered(tmp_path, "shape")
    dst = LHMNetwork(TINY)
    report = load_checkpoint(dst, path, strict=False)
    assert list(report.diff.shape_mismatch) == ["pcl_embed.mlp.weight"]
    assert "pcl_embed.mlp.weight" not in report.loaded
    src = _source()
    assert torch.equal(dst.transformer.norm.weight, src.transformer.norm.weight)


def test_missing_template_buffers_can_be_tolerated(tmp_path: Path) -> None:
    state = {k: v for k, v in _source().state_dict().items() if not k.startswith(TEMPLATE_PREFIX)}
    path = tmp_path / "no_template.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointMismatchError, match="renderer.smplx_model"):
        load_checkpoint(LHMNetwork(TINY), path)
    dst = build_network(TINY, "meta")
    report = load_checkpoint(dst, path, allow_missing_prefixes=(TEMPLATE_PREFIX,))
    assert len(report.tolerated_missing) == 31
    assert dst.renderer.smplx_model.voxel_ws.device.type == "cpu"
    assert not dst.renderer.smplx_model.is_upper_body.any()


def test_missing_file_errors_name_the_expected_path(tmp_path: Path) -> None:
    with pytest.raises(
        CheckpointNotFoundError, match=f"expected {CHECKPOINT_FILENAME} in the directory {tmp_path}"
    ):
        load_checkpoint(LHMNetwork(TINY), tmp_path)
    missing = tmp_path / "LHM-1B" / CHECKPOINT_FILENAME
    with pytest.raises(FileNotFoundError, match=f"{missing} does not exist"):
        read_layout(missing)


def test_unreadable_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointFormatError, match="bad.pt"):
        read_layout(bad)
    torch.save({"a": 1}, tmp_path / "notensors.pt")
    with pytest.raises(CheckpointFormatError, match="flat state dict"):
        read_layout(tmp_path / "notensors.pt")
    with pytest.raises(InputError, match="suffix"):
        save_checkpoint(LHMNetwork(TINY), tmp_path / "weights.npz")


def test_detect_released_config_from_layout() -> None:
    for name in ("MINI", "500M", "1B"):
        shapes, _ = module_layout(build_network(CONFIGS[name], "meta"))
        assert detect_config(shapes) is CONFIGS[name]
    with pytest.raises(InputError, match="matches no released LHM config"):
        detect_config(module_layout(build_network(TINY, "meta"))[0])
