"""The ``--method lhm`` path: query points, pre-processing, big pose -> avatar, weights lookup, CLI.

The end-to-end test runs the code users run (``streamer reconstruct --method lhm --weights DIR``)
with a tiny random-weight network, a tiny TorchScript stand-in for Sapiens and the built-in body
model in the place of the real SMPL-X file.
"""

from __future__ import annotations

import json
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, SHARED_VIDEO

from streamer.avatar import Avatar
from streamer.body.joints import JOINT_INDEX
from streamer.body.model import builtin_model_path
from streamer.cli import main
from streamer.reconstruct.lhm import PatchStandInEncoder, build_network, save_checkpoint
from streamer.reconstruct.lhm.config import TINY
from streamer.reconstruct.lhm.decoder import GaussianAttributes
from streamer.reconstruct.lhm.preprocess import body_image, crop_square, pad_square
from streamer.reconstruct.lhm.query_points import big_pose, big_pose_vertices, sample_query_points
from streamer.reconstruct.lhm.to_avatar import lhm_avatar
from streamer.reconstruct.lhm.weights import (
    SAPIENS_FILENAME,
    WeightsMissingError,
    checkpoint_config,
    locate_weights,
    write_config_marker,
)

PHOTOS = SHARED_DATA / "photos"


def make_weights(folder: Path, seed: int = 0) -> Path:
    """A complete tiny LHM weights folder: checkpoint + config marker, Sapiens stand-in, SMPL-X file."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    save_checkpoint(build_network(TINY), folder / "model.safetensors")
    write_config_marker(folder, TINY)
    with warnings.catch_warnings():  # torch.jit is deprecated, but Sapiens ships as TorchScript
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(PatchStandInEncoder.for_config(TINY)).save(str(folder / SAPIENS_FILENAME))
    (folder / "smplx").mkdir(exist_ok=True)
    shutil.copy(builtin_model_path(), folder / "smplx" / "SMPLX_NEUTRAL.npz")
    return folder


# -- query points ----------------------------------------------------------------------------


def test_query_points_split_parts_and_determinism(body) -> None:
    q = sample_query_points(body, 4000, seed=3)
    assert len(q) == 4000 and q.n_body == 3000
    assert torch.allclose(q.skin_weights.sum(1), torch.ones(4000), atol=1e-5)
    dominant = q.skin_weights.argmax(1)
    head_joints = torch.tensor([JOINT_INDEX[n] for n in ("head", "jaw", "left_eye", "right_eye")])
    assert torch.isin(dominant[3000:], head_joints).float().mean() > 0.95  # the last quarter is the head
    assert torch.isin(dominant[:3000], head_joints).float().mean() < 0.05
    # nearest vertex: the point lies within a few millimetres of it on the big-pose surface
    verts = big_pose_vertices(body)
    assert (verts[q.vertex] - q.points).norm(dim=1).max() < 0.05
    assert q.upper_body[:3000].float().mean() > 0.2 and q.upper_body[3000:].float().mean() < 0.05
    again = sample_query_points(body, 4000, seed=3)
    assert torch.equal(q.points, again.points)
    assert not torch.equal(q.points, sample_query_points(body, 4000, seed=4).points)


def test_big_pose_spreads_the_legs(body) -> None:
    pose = big_pose()
    assert pose.body_pose[JOINT_INDEX["left_hip"] - 1, 2] == pytest.approx(math.pi / 9)
    assert pose.body_pose[JOINT_INDEX["right_hip"] - 1, 2] == pytest.approx(-math.pi / 9)
    ankles = [JOINT_INDEX["left_ankle"], JOINT_INDEX["right_ankle"]]
    rest_gap = (body.rest_joints()[ankles[0], 0] - body.rest_joints()[ankles[1], 0]).item()
    _, joints = body.joint_transforms(pose)
    big_gap = (joints[ankles[0], 0] - joints[ankles[1], 0]).item()
    assert big_gap > rest_gap + 0.4  # each leg swings ~0.35 m outwards at the ankle


def test_avatar_from_zero_offsets_poses_back_onto_the_query_points(body) -> None:
    """Big pose -> zero pose -> (Avatar.pose with the big pose) is the identity on the points."""
    q = sample_query_points(body, 600, seed=0)
    n = len(q)
    attrs = GaussianAttributes(
        offsets=torch.zeros(1, n, 3),
        colors=torch.full((1, n, 3), 0.5),
        opacities=torch.full((1, n), 0.9),
        scales=torch.full((1, n, 3), 0.01),
        quats=torch.tensor([1.0, 0, 0, 0]).expand(1, n, 4).clone(),
    )
    avatar = lhm_avatar(attrs, q, body)
    assert (avatar.gaussians.means - q.points).abs().max() > 0.1  # legs moved back together
    posed = avatar.pose(body, big_pose())
    assert torch.allclose(posed.means, q.points, atol=1e-4)
    # with a shape, the canonical points move by the shape directions of their nearest vertex
    betas = torch.zeros(10)
    betas[0] = 2.0
    shaped = lhm_avatar(attrs, q, body, betas=betas)
    expected = avatar.gaussians.means + 2.0 * body.shapedirs[q.vertex, :, 0]
    assert torch.allclose(shaped.gaussians.means, expected, atol=1e-5)
    assert torch.equal(shaped.betas, betas)


# -- pre-processing --------------------------------------------------------------------------


def test_body_image_is_white_outside_the_person_and_square() -> None:
    rgb = np.zeros((50, 30, 3), np.uint8)
    rgb[..., 0] = 200
    mask = np.zeros((50, 30), np.float32)
    mask[10:40, 5:25] = 1.0
    img = body_image(rgb, mask, 20)
    assert img.shape == (3, 20, 20)
    assert torch.allclose(img[:, 0, 0], torch.ones(3), atol=1e-3)  # padding and background: white
    assert img[1, 10, 10] < 0.05 and abs(img[0, 10, 10] - 200 / 255) < 0.02  # the person keeps its colour
    assert pad_square(torch.zeros(3, 4, 2)).shape == (3, 4, 4)


def test_crop_square_pads_outside_the_image() -> None:
    img = torch.zeros(3, 10, 10)
    out = crop_square(img, (-5.0, -5.0, 5.0, 5.0))
    assert out.shape == (3, 10, 10)
    assert out[:, :5, :].min() == 1.0 and out[:, 5:, 5:].max() == 0.0


# -- weights lookup --------------------------------------------------------------------------


def test_missing_files_are_all_named(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"x")
    with pytest.raises(WeightsMissingError) as err:
        locate_weights(tmp_path)
    msg = str(err.value)
    assert "Sapiens-1B TorchScript" in msg and SAPIENS_FILENAME in msg
    assert "SMPL-X neutral model" in msg and "SMPLX_NEUTRAL.npz" in msg
    assert "LHM checkpoint" not in msg  # that one was found
    with pytest.raises(WeightsMissingError, match="weights folder not found"):
        locate_weights(tmp_path / "absent")


def test_official_layout_and_config_detection(tmp_path: Path) -> None:
    folder = make_weights(tmp_path / "w")
    official = tmp_path / "official"
    sapiens = official / "pretrained_models/sapiens/pretrained/checkpoints/sapiens_1b" / SAPIENS_FILENAME
    sapiens.parent.mkdir(parents=True)
    shutil.copy(folder / SAPIENS_FILENAME, sapiens)
    (official / "LHM-500M").mkdir()
    shutil.copy(folder / "model.safetensors", official / "LHM-500M" / "model.safetensors")
    w = locate_weights(official, smplx_dir=folder / "smplx")
    assert w.sapiens == sapiens and w.checkpoint.parent.name == "LHM-500M"
    assert w.smplx == folder / "smplx" / "SMPLX_NEUTRAL.npz"
    assert checkpoint_config(folder / "model.safetensors").name == "tiny"  # from config.json
    assert checkpoint_config(folder / "model.safetensors", "tiny").n_query_points == TINY.n_query_points
    with pytest.raises(Exception, match="matches no released LHM config"):
        checkpoint_config(w.checkpoint)  # no marker beside it, and tiny is not a release


# -- the command end to end --------------------------------------------------------------------


def test_reconstruct_method_lhm_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str], body) -> None:
    folder = make_weights(tmp_path / "weights")
    outs = []
    for name in ("woman_hat_bag.png", "studio_woman_skirt.png"):
        photo = PHOTOS / name
        if not photo.is_file():
            pytest.skip(f"shared photo {photo} not found")
        out = tmp_path / f"{name}.ply"
        code = main(["reconstruct", str(photo), "-o", str(out), "--method", "lhm", "--weights", str(folder), "--json"])
        report = json.loads(capsys.readouterr().out)
        assert code == 0
        assert report["method"] == "lhm" and report["gaussians"] == TINY.n_query_points
        assert set(report["steps_s"]) >= {"detect", "fit", "prepare", "network", "avatar", "save"}
        avatar = Avatar.load(out)
        assert len(avatar) == TINY.n_query_points
        outs.append(avatar)
    # the images flow through the network: two photos give two different avatars
    assert (outs[0].gaussians.colors - outs[1].gaussians.colors).abs().max() > 1e-4
    # the avatar animates like any other
    posed = outs[0].pose(body, big_pose())
    assert torch.isfinite(posed.means).all()


def test_eval_recon_and_animate_measure_an_lhm_avatar(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``eval recon`` / ``eval animate --method lhm --weights DIR``: the protocol runs on the network's
    avatar, posed with the weights' own body model (with real weights: LHM's figures on our data)."""
    folder = make_weights(tmp_path / "weights")
    photo = PHOTOS / "woman_hat_bag.png"
    if not photo.is_file() or not SHARED_VIDEO.is_file():
        pytest.skip("shared photo or video not found")
    lhm = ["--method", "lhm", "--weights", str(folder), "--json"]
    assert main(["eval", "recon", str(photo), *lhm]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["method"] == "lhm" and report["gaussians"] == TINY.n_query_points, report
    assert math.isfinite(report["psnr_db"]) and "seen_fraction" not in report  # (the fit method's figure)
    assert main(["eval", "animate", str(SHARED_VIDEO), "--max-frames", "2", *lhm]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["method"] == "lhm" and report["frames"] == 2 and math.isfinite(report["psnr_db"]), report
    assert report["gaussians"] == TINY.n_query_points  # the network's avatar, not the fit method's
    assert main(["eval", "recon", str(photo), "--weights", str(folder)]) == 2
    assert "--weights and --lhm-config belong to --method lhm" in capsys.readouterr().err
    # The random network's 64 faint Gaussians cover no pixel, but they stand where the person does:
    # evaluated with the weights' own body model, in the photo's fitted pose and camera.
    from streamer.reconstruct.evaluate import evaluate_photo
    from streamer.reconstruct.image import read_photo
    from streamer.reconstruct.lhm.infer import LHMReconstructor

    net = LHMReconstructor.load(locate_weights(str(folder), None), device="cpu")
    ev = evaluate_photo(read_photo(photo), net.body, reconstruct=lambda rgb, crop=None: net(rgb, crop=crop))
    posed = ev.recon.avatar.pose(net.body, ev.recon.pose)
    K, V = ev.recon.camera.K.double().numpy(), ev.recon.camera.viewmat.double().numpy()
    uvw = (posed.means.double().numpy() @ V[:3, :3].T + V[:3, 3]) @ K.T
    u, v = (uvw[:, :2] / uvw[:, 2:]).astype(int).T
    mask = ev.recon.person.mask > 0.5
    ok = (u >= 0) & (u < mask.shape[1]) & (v >= 0) & (v < mask.shape[0])
    assert ok.all() and mask[v, u].mean() > 0.75, mask[v[ok], u[ok]].mean()


def test_reconstruct_method_lhm_missing_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photo = PHOTOS / "woman_hat_bag.png"
    out = tmp_path / "a.ply"
    (tmp_path / "w").mkdir()
    assert main(["reconstruct", str(photo), "-o", str(out), "--method", "lhm", "--weights", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert "model.safetensors" in err and SAPIENS_FILENAME in err and "SMPLX_NEUTRAL.npz" in err
    assert not out.exists()
    assert main(["reconstruct", str(photo), "-o", str(out), "--method", "lhm"]) == 2
    assert "--weights" in capsys.readouterr().err
    assert main(["reconstruct", str(photo), "-o", str(out), "--weights", str(tmp_path)]) == 2
    assert "belong to --method lhm" in capsys.readouterr().err
    assert main(["reconstruct", str(photo), "-o", str(out), "--device", "cuda"]) == 2
    assert "--device cuda belongs to --method lhm (the fit method runs on the CPU)" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        (SAPIENS_FILENAME, "not a loadable TorchScript archive"),
        ("model.safetensors", "cannot read"),
        ("smplx/SMPLX_NEUTRAL.npz", "not a loadable SMPL-X .npz"),
    ],
)
def test_reconstruct_method_lhm_broken_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], broken: str, message: str
) -> None:
    """A corrupt file among the user's weights is a clear error (exit 2), not a traceback, and no avatar is written."""
    folder = make_weights(tmp_path / "weights")
    (folder / broken).write_bytes(b"not what it should be")
    out = tmp_path / "a.ply"
    photo = PHOTOS / "woman_hat_bag.png"
    assert main(["reconstruct", str(photo), "-o", str(out), "--method", "lhm", "--weights", str(folder)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert not out.exists()
