"""LHM training: torch SSIM, ASAP / ACAP, the data format, and ``streamer train-lhm`` on the CPU."""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from streamer.cli import main
from streamer.reconstruct.lhm.train import (
    ACAP_MARGIN,
    LHMTrainData,
    TrainDataError,
    acap_loss,
    asap_loss,
    load_subject,
    ssim,
)
from streamer.reconstruct.metrics import ssim as ssim_numpy


def test_torch_ssim_matches_numpy() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 24, 31, generator=g, dtype=torch.float64)
    b = (a + 0.15 * torch.randn(3, 24, 31, generator=g, dtype=torch.float64)).clamp(0, 1)
    want = ssim_numpy(a.permute(1, 2, 0).numpy(), b.permute(1, 2, 0).numpy())
    got = float(ssim(a[None], b[None]))
    assert got == pytest.approx(want, abs=1e-6)
    assert float(ssim(a[None], a[None])) == pytest.approx(1.0, abs=1e-9)
    x = b[None].clone().float().requires_grad_()
    ssim(x, a[None].float()).backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_asap_and_acap() -> None:
    g = torch.Generator().manual_seed(0)
    spheres = torch.full((2, 50, 3), 0.01) * torch.rand(2, 50, 1, generator=g)
    assert float(asap_loss(spheres)) == pytest.approx(0.0, abs=1e-15)
    flat = spheres.clone()
    flat[..., 2] *= 0.1
    assert float(asap_loss(flat)) > 0.0
    w = torch.ones(50)
    w[40:] = 5.0
    assert float(asap_loss(flat, w)) > float(asap_loss(flat))  # heavier head points

    assert ACAP_MARGIN == pytest.approx(1.8 / 32)
    d = torch.randn(2, 50, 3, generator=g)
    d = d / d.norm(dim=-1, keepdim=True)
    assert float(acap_loss(d * 0.9 * ACAP_MARGIN)) == 0.0
    beyond = [float(acap_loss(d * (ACAP_MARGIN + e))) for e in (0.01, 0.02, 0.05)]
    assert beyond[0] == pytest.approx(0.01, rel=1e-4)
    assert beyond[0] < beyond[1] < beyond[2]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lhm-synth")
    assert main(["train-lhm", "--make-synthetic", str(root), "--subjects", "2", "--poses", "3", "--views", "4"]) == 0
    return root


def test_loader_reads_synthetic_data(synthetic: Path, body) -> None:
    subjects = sorted(p for p in synthetic.iterdir() if p.is_dir())
    assert len(subjects) == 2
    s = load_subject(subjects[1])
    assert s.n_frames == 12 and s.source_frames == [0, 4, 8]
    assert float(s.betas.abs().sum()) > 0  # the second subject has its own shape
    rgb, mask = s.frame(5)
    assert rgb.shape == (64, 64, 3) and mask.shape == (64, 64)
    assert 0.03 < float((mask > 0.5).mean()) < 0.5  # a person, not an empty or full frame

    data = LHMTrainData(synthetic, body, body_side=64, head_side=28, targets=3, target_size=48)
    item = data[0]
    assert item["body"].shape == (3, 64, 64) and item["head"].shape == (3, 28, 28)
    # the body image is the person on white: white corners, darker centre
    assert float(item["body"][:, 0, 0].min()) > 0.99 and float(item["body"][:, 32, 28:36].mean()) < 0.9
    # the head crop is mostly head, not background
    assert float(item["head"].mean()) < 0.85
    assert len(item["targets"]) == 3
    t = item["targets"][0]
    assert t["image"].shape == (3, 48, 48) and t["mask"].shape == (48, 48)
    assert (t["camera"].width, t["camera"].height) == (48, 48)
    assert t["transforms"].shape == (55, 4, 4)


def test_loader_rejects_broken_folders(synthetic: Path, body, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(synthetic / "subject_000", broken / "subject_000")
    (broken / "subject_000" / "masks" / "00003.png").unlink()
    with pytest.raises(TrainDataError, match="00003.png.*mask 3 of 12"):
        LHMTrainData(broken, body, 64, 28)
    shutil.copy(synthetic / "subject_000" / "masks" / "00003.png", broken / "subject_000" / "masks" / "00003.png")
    cams = dict(np.load(broken / "subject_000" / "cameras.npz"))
    cams["K"] = cams["K"][:5]
    np.savez(broken / "subject_000" / "cameras.npz", **cams)
    with pytest.raises(TrainDataError, match=r"cameras.npz: expected K \[12, 3, 3\]"):
        load_subject(broken / "subject_000")
    with pytest.raises(TrainDataError, match="no subject folders"):
        LHMTrainData(tmp_path, body, 64, 28)
    (synthetic_copy := tmp_path / "corrupt" / "subject_000").parent.mkdir()
    shutil.copytree(synthetic / "subject_000", synthetic_copy)
    (synthetic_copy / "frames" / "00000.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(TrainDataError, match="00000.png: missing or not a readable image"):
        load_subject(synthetic_copy).frame(0)


def _train(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    assert main(["train-lhm", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_train_tiny_on_cpu_loss_falls_checkpoints_resumes_and_loads(
    synthetic: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from streamer.body.model import builtin_model_path
    from streamer.reconstruct.lhm.infer import LHMReconstructor
    from streamer.reconstruct.lhm.to_avatar import lhm_avatar
    from streamer.reconstruct.lhm.weights import checkpoint_config, locate_weights

    torch.manual_seed(0)
    run = tmp_path / "run"
    common = ["--config", "tiny", "--data", str(synthetic), "--out", str(run), "--points", "256",
              "--target-size", "48", "--lr", "3e-3", "--device", "cpu", "--checkpoint-every", "10"]
    out = _train([*common, "--steps", "30"], capsys)
    losses = out["losses"]
    assert out["start_step"] == 0 and out["step"] == 30 and len(losses) == 30
    first, last = np.mean(losses[:6]), np.mean(losses[-6:])
    assert last < 0.7 * first, (first, last, losses)
    for name in ("train_state.pt", "model.safetensors", "config.json", "sapiens_1b_epoch_173_torchscript.pt2"):
        assert (run / name).is_file(), name
    # a weights folder others can read: the network file gets the mode config.json gets, not 0o600
    mode = {name: (run / name).stat().st_mode & 0o777 for name in ("model.safetensors", "config.json", "train_state.pt")}
    assert len(set(mode.values())) == 1, mode
    assert not list(run.glob("*.tmp*")) and not list(run.glob(".*")), "no temporary files left"
    assert torch.load(run / "train_state.pt", weights_only=False)["step"] == 30
    assert len((run / "log.jsonl").read_text().splitlines()) == 30

    # resume: continues from the saved step with the saved optimiser state
    out2 = _train([*common, "--steps", "33", "--resume"], capsys)
    assert out2["start_step"] == 30 and out2["step"] == 33 and len(out2["losses"]) == 3
    assert np.mean(out2["losses"]) < first
    assert torch.load(run / "train_state.pt", weights_only=False)["step"] == 33

    # the run folder is an inference weights folder
    (run / "smplx").mkdir()
    shutil.copy(builtin_model_path(), run / "smplx" / "SMPLX_NEUTRAL.npz")
    weights = locate_weights(run)
    cfg = checkpoint_config(weights.checkpoint)
    assert cfg.name == "tiny" and cfg.n_query_points == 256
    rec = LHMReconstructor.load(weights, device="cpu")
    state = torch.load(run / "train_state.pt", weights_only=False)["network"]
    for k, v in rec.network.state_dict().items():
        assert torch.equal(v.cpu(), state[k]), k
    data = LHMTrainData(synthetic, rec.body, 64, 28)
    body_img, head_img = data.source_images(0, 0)
    with torch.no_grad():
        attrs = rec.network(body_img[None], head_img[None], rec.query.points, upper_body=rec.query.upper_body)
    avatar = lhm_avatar(attrs, rec.query, rec.body)
    assert len(avatar) == 256 and torch.isfinite(avatar.gaussians.means).all()


def test_train_real_size_needs_sapiens(synthetic: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train-lhm", "--config", "MINI", "--data", str(synthetic), "--out", str(tmp_path / "r"), "--steps", "1"])
    assert code == 2
    assert "needs --sapiens FILE" in capsys.readouterr().err


def test_training_renderer_matches_the_reference_and_has_gradients() -> None:
    """The dense float32 training rasterizer draws what the float64 reference draws (up to the
    T_MIN early stop it skips), and every Gaussian attribute gets a gradient."""
    from render_scenes import make_camera, make_scene

    from streamer.reconstruct.lhm.train.render import render_dense, render_train
    from streamer.render._reference import ReferenceRenderer

    camera = make_camera(40, 32, seed=2)
    g = make_scene("mixed", 60, seed=3)
    bg = (1.0, 1.0, 1.0)
    want_rgb, want_alpha = ReferenceRenderer().render(g, camera, bg)
    names = ("means", "quats", "scales", "opacities", "colors")
    fields = {k: getattr(g, k).clone().requires_grad_(True) for k in names}
    rgb, alpha = render_dense(**fields, camera=camera, background=torch.tensor(bg))
    assert float(want_alpha.mean()) > 0.1  # the scene covers the picture
    assert torch.allclose(rgb, want_rgb, atol=2e-3) and torch.allclose(alpha, want_alpha, atol=2e-3)
    (rgb.sum() + alpha.sum()).backward()
    for name, t in fields.items():
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0, name
    rgb2, _ = render_train(g, camera, torch.tensor(bg))  # the CPU dispatch is the same renderer
    assert torch.equal(rgb2, rgb.detach())


def test_lpips_refuses_to_download_its_vgg_backbone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``lpips`` would fetch torchvision's VGG16 when it is not cached: the term names the file instead."""
    from streamer.errors import InputError
    from streamer.reconstruct.lhm.train.losses import VGG16_WEIGHTS, Perceptual

    built: list[str] = []

    def fake_lpips(net: str, verbose: bool) -> torch.nn.Module:  # stands in for the package's network
        built.append(net)
        return torch.nn.Linear(1, 1)

    monkeypatch.setitem(sys.modules, "lpips", types.SimpleNamespace(LPIPS=fake_lpips))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(InputError, match=VGG16_WEIGHTS) as err:
        Perceptual(torch.device("cpu"))
    assert str(tmp_path) in str(err.value) and built == [], "refused before the network was built"

    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / VGG16_WEIGHTS).write_bytes(b"cached")
    Perceptual(torch.device("cpu"))
    assert built == ["vgg"]
