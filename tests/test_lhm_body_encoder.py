"""The Sapiens body-encoder interface: TorchScript loading, stand-ins, and the network wiring."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from streamer.errors import InputError
from streamer.reconstruct.lhm import (
    BodyEncoder,
    EncoderNotFoundError,
    LHMNetwork,
    PatchStandInEncoder,
    count_parameters,
    load_sapiens_torchscript,
)
from streamer.reconstruct.lhm.body_encoder import SAPIENS_MEAN, SAPIENS_STD
from streamer.reconstruct.lhm.config import TINY


def test_missing_torchscript_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "sapiens_1b_epoch_173_torchscript.pt2"
    with pytest.raises(EncoderNotFoundError, match=f"expected a TorchScript file at {path}"):
        load_sapiens_torchscript(path)
    with pytest.raises(FileNotFoundError, match="not downloaded automatically"):
        load_sapiens_torchscript(path)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_torchscript_stand_in_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    backbone = PatchStandInEncoder.for_config(TINY)
    path = tmp_path / "stand_in.pt"
    torch.jit.script(backbone).save(str(path))  # type: ignore[no-untyped-call]
    loaded = load_sapiens_torchscript(path)
    encoder = BodyEncoder.for_config(loaded, TINY)
    images = torch.rand(2, 3, 64, 64)
    tokens = encoder(images)
    assert tokens.shape == (2, TINY.body_tokens, TINY.body_feat_dim) and tokens.dtype == torch.float32
    # normalisation with the Sapiens mean/std, then row-major flattening of the feature map
    mean = torch.tensor(SAPIENS_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(SAPIENS_STD).view(1, 3, 1, 1)
    fmap = backbone((images - mean) / std)[0]
    torch.testing.assert_close(tokens, fmap.flatten(2).transpose(1, 2))
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not encoder.backbone.training


def test_wrong_backbone_outputs_are_refused() -> None:
    wrong_width = BodyEncoder(PatchStandInEncoder(8, 16), feat_dim=48, n_tokens=16, resolution=64)
    with pytest.raises(InputError, match=r"backbone must return \[B, 48, h, w\]"):
        wrong_width(torch.rand(1, 3, 64, 64))
    wrong_grid = BodyEncoder(PatchStandInEncoder(48, 8), feat_dim=48, n_tokens=16, resolution=64)
    with pytest.raises(InputError, match="gave 64 tokens, the network expects 16"):
        wrong_grid(torch.rand(1, 3, 64, 64))
    with pytest.raises(InputError, match=r"needs 16 x 48"):
        LHMNetwork(TINY).attach_body_encoder(BodyEncoder(PatchStandInEncoder(48, 8), 48, 64, 64))
    with pytest.raises(InputError, match="expected a BodyEncoder"):
        LHMNetwork(TINY).attach_body_encoder(PatchStandInEncoder.for_config(TINY))  # type: ignore[arg-type]


def test_attached_encoder_is_outside_the_state_dict_but_follows_moves() -> None:
    net = LHMNetwork(TINY)
    keys, params = set(net.state_dict()), count_parameters(net)
    net.attach_body_encoder(BodyEncoder.for_config(PatchStandInEncoder.for_config(TINY), TINY))
    assert set(net.state_dict()) == keys and count_parameters(net) == params
    net.to(torch.float64)
    assert net.body_encoder is not None
    assert net.body_encoder.backbone.proj.weight.dtype == torch.float64  # type: ignore[union-attr]
    assert net.pcl_embed.mlp.weight.dtype == torch.float64
