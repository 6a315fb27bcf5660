"""Motion file readers: our .npz, AMASS .npz (SMPL-H and SMPL-X layouts) and LHM smplx_params folders."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from streamer.body import SmplxPose
from streamer.errors import MotionFormatError
from streamer.tracking.motion import AMASS_TO_WORLD, TEMPLATE_PELVIS, Motion, load_motion
from streamer.tracking.rest_pose import relaxed_hand_pose
from streamer.tracking.rotations import log_rot, rodrigues


def _amass(path, T=4, width=156, **extra):
    rng = np.random.default_rng(0)
    poses = rng.normal(scale=0.3, size=(T, width))
    poses[:, :3] = [math.pi / 2, 0.0, 0.0]  # SMPL's Y-up body stood up in AMASS's Z-up world
    trans = np.stack([np.linspace(0, 1, T), np.full(T, 2.0), np.full(T, 0.9)], axis=1)
    data = dict(poses=poses, trans=trans, mocap_framerate=np.array(120.0), betas=rng.normal(size=16),
                gender=np.array("male"), dmpls=np.zeros((T, 8)))
    data.update(extra)
    np.savez(path, **data)
    return poses, trans


def test_our_npz_round_trip_through_the_dispatcher(tmp_path):
    poses = SmplxPose.zeros(batch=3).replace(body_pose=torch.randn(3, 21, 3), transl=torch.randn(3, 3))
    back = load_motion(Motion(poses, fps=24).save(tmp_path / "ours.npz"))
    assert back.fps == 24 and torch.equal(back.poses.body_pose, poses.body_pose)
    assert torch.equal(back.poses.transl, poses.transl)


def test_amass_smplh_layout_up_axis_and_hands(tmp_path):
    poses, trans = _amass(tmp_path / "a.npz")
    zero = (np.zeros((15, 3)), np.zeros((15, 3)))
    m = load_motion(tmp_path / "a.npz", hand_mean=zero)
    assert len(m) == 4 and m.fps == 120.0 and m.poses.betas.shape == (4, 16)
    assert np.allclose(m.poses.body_pose.numpy(), poses[:, 3:66].reshape(4, 21, 3), atol=1e-6)
    assert np.allclose(m.poses.left_hand_pose.numpy(), poses[:, 66:111].reshape(4, 15, 3), atol=1e-6)
    assert np.allclose(m.poses.right_hand_pose.numpy(), poses[:, 111:156].reshape(4, 15, 3), atol=1e-6)
    # Standing up in Z-up is standing up in our Y-up world: no root rotation left.
    assert float(m.poses.global_orient.abs().max()) < 1e-5
    # The pelvis moves with the axes: world pelvis = A (trans + J0), re-rooted on J0.
    expected = (trans + TEMPLATE_PELVIS) @ AMASS_TO_WORLD.T - TEMPLATE_PELVIS
    assert np.allclose(m.poses.transl.numpy(), expected, atol=1e-5)
    assert np.allclose(m.poses.transl[0].numpy() + TEMPLATE_PELVIS, [0.0, 0.9 + 0.012, -(2.0 - 0.35)], atol=1e-5)
    # AMASS hands are relative to the mean hand: without one, the relaxed hand stands in.
    m2 = load_motion(tmp_path / "a.npz")
    assert np.allclose((m2.poses.left_hand_pose - m.poses.left_hand_pose).numpy(), relaxed_hand_pose("left")[None], atol=1e-6)


def test_amass_with_a_body_uses_its_mean_hand_and_pelvis(tmp_path, body, monkeypatch):
    from streamer.tracking.motion import mano_hand_mean

    _, trans = _amass(tmp_path / "a.npz")
    mean = mano_hand_mean(body)
    # (the built-in body's rest pelvis is the template's: move it, so that using it shows)
    rest_joints = body.rest_joints
    monkeypatch.setattr(body, "rest_joints", lambda *a, **k: rest_joints(*a, **k) + torch.tensor([0.1, 0.2, -0.3]))
    pelvis = body.rest_joints()[0].double().numpy()
    assert not np.allclose(pelvis, TEMPLATE_PELVIS, atol=0.05)
    m = load_motion(tmp_path / "a.npz", body=body)
    zero = load_motion(tmp_path / "a.npz", hand_mean=(np.zeros((15, 3)), np.zeros((15, 3))), body=body)
    assert mean is not None
    assert np.allclose((m.poses.right_hand_pose - zero.poses.right_hand_pose).numpy(), mean[1][None], atol=1e-6)
    expected = (trans + pelvis) @ AMASS_TO_WORLD.T - pelvis  # re-rooted on this body's pelvis
    assert np.allclose(m.poses.transl.numpy(), expected, atol=1e-5)


def test_amass_smplx_layout(tmp_path):
    poses, _ = _amass(tmp_path / "x.npz", width=165, mocap_frame_rate=np.array(60.0), surface_model_type=np.array("smplx"))
    data = dict(np.load(tmp_path / "x.npz"))
    del data["mocap_framerate"]
    np.savez(tmp_path / "x.npz", **data)
    m = load_motion(tmp_path / "x.npz", hand_mean=(np.zeros((15, 3)), np.zeros((15, 3))))
    assert m.fps == 60.0
    assert np.allclose(m.poses.jaw_pose.numpy(), poses[:, 66:69], atol=1e-6)
    assert np.allclose(m.poses.reye_pose.numpy(), poses[:, 72:75], atol=1e-6)
    assert np.allclose(m.poses.right_hand_pose.numpy(), poses[:, 120:165].reshape(-1, 15, 3), atol=1e-6)


def test_amass_errors_name_the_problem(tmp_path):
    _amass(tmp_path / "shape.npz", width=100)
    with pytest.raises(MotionFormatError, match=r"AMASS poses must be \[T, 156\].*got \[4, 100\]"):
        load_motion(tmp_path / "shape.npz")
    p, _ = _amass(tmp_path / "nan.npz")
    data = dict(np.load(tmp_path / "nan.npz"))
    data["poses"][2, 7] = np.nan
    np.savez(tmp_path / "nan.npz", **data)
    with pytest.raises(MotionFormatError, match=r"poses contains NaN.*\[2, 7\]"):
        load_motion(tmp_path / "nan.npz")
    _amass(tmp_path / "keys.npz", surprise=np.zeros(3))
    with pytest.raises(MotionFormatError, match="unknown keys surprise"):
        load_motion(tmp_path / "keys.npz")
    np.savez(tmp_path / "notrans.npz", poses=np.zeros((2, 156)), mocap_framerate=30.0)
    with pytest.raises(MotionFormatError, match="without 'trans'"):
        load_motion(tmp_path / "notrans.npz")
    np.savez(tmp_path / "other.npz", stuff=np.zeros(3))
    with pytest.raises(MotionFormatError, match="no 'fps' entry .* and no 'poses'"):
        load_motion(tmp_path / "other.npz")


def _lhm_frame(i: int) -> dict:
    return {
        "betas": [0.1] * 10,
        "root_pose": [math.pi, 0.0, 0.0],  # upright in the camera frame (y down)
        "body_pose": (np.full((21, 3), 0.01 * i)).tolist(),
        "jaw_pose": [0.2, 0.0, 0.0], "leye_pose": [0.0] * 3, "reye_pose": [0.0] * 3,
        "lhand_pose": [[0.1, 0.0, 0.0]] * 15, "rhand_pose": [0.0] * 45,
        "trans": [0.1, 0.2, 3.0 + i], "focal": [1000.0, 1000.0], "princpt": [360.0, 640.0],
        "img_size_wh": [720, 1280], "pad_ratio": 0.2,
    }  # fmt: skip


def _write_lhm(folder, frames, name: str = "{:05d}.json") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in frames:
        (folder / name.format(i)).write_text(json.dumps(frame))


def test_lhm_folder_order_frame_and_fields(tmp_path):
    # unpadded numbers: a plain sort would give 1, 10, 2
    frames = [(i, _lhm_frame(i)) for i in (1, 2, 10)]
    _write_lhm(tmp_path / "clip" / "smplx_params", frames, name="frame_{}.json")
    for where in (tmp_path / "clip", tmp_path / "clip" / "smplx_params"):
        m = load_motion(where, fps=25)
        assert len(m) == 3 and m.fps == 25
        # Natural order 1, 2, 10 (not 1, 10, 2).
        assert np.allclose(m.poses.body_pose[:, 0, 0].numpy(), [0.01, 0.02, 0.10], atol=1e-6)
        # Camera frame -> tracking world: the upright person has no root rotation left ...
        R = rodrigues(m.poses.global_orient.numpy().astype(float))
        assert np.allclose(R, np.eye(3), atol=1e-5)
        # ... and its pelvis (at J0 + trans in the camera frame) stands in front of the camera (-Z).
        world_pelvis = m.poses.transl.numpy() + TEMPLATE_PELVIS
        cam_pelvis = np.array([0.1, 0.2, 4.0]) + TEMPLATE_PELVIS  # frame 1: trans z = 3 + 1
        assert np.allclose(world_pelvis[0], cam_pelvis * [1, -1, -1], atol=1e-5)
        assert np.allclose(m.poses.left_hand_pose[:, :, 0].numpy(), 0.1, atol=1e-6)
        assert np.allclose(m.poses.jaw_pose[:, 0].numpy(), 0.2, atol=1e-6)
    assert len(load_motion(tmp_path / "clip" / "smplx_params" / "frame_2.json")) == 1
    assert load_motion(tmp_path / "clip").fps == 30.0  # LHM stores no rate: 30 by default


def test_lhm_errors_name_the_file_and_key(tmp_path):
    bad = _lhm_frame(0)
    bad["body_pose"] = [0.0] * 60
    _write_lhm(tmp_path / "a", [(1, bad)])
    with pytest.raises(MotionFormatError, match=r"00001.json: body_pose must hold 63 values, got 60"):
        load_motion(tmp_path / "a")
    nan = _lhm_frame(0)
    nan["trans"] = [0.0, float("nan"), 1.0]
    _write_lhm(tmp_path / "b", [(1, nan)])
    with pytest.raises(MotionFormatError, match="trans contains NaN"):
        load_motion(tmp_path / "b")
    extra = _lhm_frame(0)
    extra["mystery"] = 1
    _write_lhm(tmp_path / "c", [(1, extra)])
    with pytest.raises(MotionFormatError, match="unknown keys mystery"):
        load_motion(tmp_path / "c")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "00001.json").write_text("{not json")
    with pytest.raises(MotionFormatError, match="not a readable LHM"):
        load_motion(tmp_path / "d")
    (tmp_path / "e").mkdir()
    with pytest.raises(MotionFormatError, match="a folder without LHM smplx_params"):
        load_motion(tmp_path / "e")


def test_loaded_motions_drive_the_body(tmp_path, body):
    """What the readers return is a valid motion for the body model (finite joints, sane height)."""
    _amass(tmp_path / "a.npz")
    m = load_motion(tmp_path / "a.npz", body=body)
    with torch.no_grad():
        _, joints = body.joint_transforms(m.poses)
    assert torch.isfinite(joints).all()
    head_above_pelvis = joints[:, 15, 1] - joints[:, 0, 1]
    assert float(head_above_pelvis.min()) > 0.3  # upright after the Z-up -> Y-up turn
    rot = log_rot(rodrigues(m.poses.global_orient.numpy().astype(float)))
    assert np.isfinite(rot).all()
