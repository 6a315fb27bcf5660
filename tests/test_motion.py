"""Motion files (our .npz) and the built-in demo motion."""

import numpy as np
import pytest
import torch

from streamer.body import SmplxPose
from streamer.errors import MotionFormatError
from streamer.tracking.demo_motion import demo_motion
from streamer.tracking.motion import Motion, load_motion


def test_round_trip(tmp_path):
    zero = SmplxPose.zeros(batch=5)
    poses = SmplxPose.from_dict({k: torch.randn(v.shape) for k, v in zero.to_dict().items()})
    path = Motion(poses, fps=25).save(tmp_path / "m.npz")
    back = load_motion(path)
    assert back.fps == 25 and len(back) == 5
    for key, value in poses.to_dict().items():  # every field survives, not just body_pose
        assert np.array_equal(back.poses.to_dict()[key], value), key
    with np.load(path) as data:  # one array per SmplxPose field, [T, ...], plus fps
        assert data["body_pose"].shape == (5, 21, 3) and data["betas"].shape == (5, 10)
        assert float(data["fps"]) == 25


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(MotionFormatError, match="motion file not found"):
        load_motion(tmp_path / "nope.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(MotionFormatError, match=r"^\S*bad.npz: not a .npz motion file \(a .npz is a zip archive"):
        load_motion(bad)
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"PK\x03\x04 but cut short")
    with pytest.raises(MotionFormatError, match="not a readable .npz"):
        load_motion(broken)
    np.savez(tmp_path / "nofps.npz", body_pose=np.zeros((2, 21, 3)), global_orient=np.zeros((2, 3)))
    with pytest.raises(MotionFormatError, match="no 'fps' entry"):
        load_motion(tmp_path / "nofps.npz")
    np.savez(tmp_path / "keys.npz", fps=30, body_pose=np.zeros((2, 21, 3)), global_orient=np.zeros((2, 3)), wat=1)
    with pytest.raises(MotionFormatError, match="unknown keys wat"):
        load_motion(tmp_path / "keys.npz")
    np.savez(tmp_path / "shape.npz", fps=30, body_pose=np.zeros((2, 20, 3)), global_orient=np.zeros((2, 3)))
    with pytest.raises(MotionFormatError, match=r"body_pose: expected shape \(2, 21, 3\)"):
        load_motion(tmp_path / "shape.npz")
    nan = np.zeros((2, 21, 3))
    nan[1, 4, 2] = np.nan
    np.savez(tmp_path / "nan.npz", fps=30, body_pose=nan, global_orient=np.zeros((2, 3)))
    with pytest.raises(MotionFormatError, match=r"nan.npz: body_pose contains NaN .*index \[1, 4, 2\]"):
        load_motion(tmp_path / "nan.npz")


@pytest.mark.parametrize(
    "fields, words",
    [
        ({"fps": np.zeros(0)}, "fps must be one number, got an array of shape \\(0,\\)"),
        ({"fps": np.array("abc")}, "fps is not numeric"),
        ({"fps": 0.0}, "fps must be in \\(0, 1000\\], got 0.0"),
        ({"global_orient": np.full((2, 3), "x")}, "global_orient is not numeric"),
        ({"global_orient": np.zeros((2, 3), complex)}, "global_orient is not numeric"),
        ({"global_orient": np.full((2, 3), 1e30)}, "global_orient holds values up to 1e\\+30"),
    ],
)
def test_broken_fields_are_refused_naming_the_file(tmp_path, fields, words) -> None:
    """Each field of a motion file is checked (type, size, magnitude) before anything uses it, and
    the message names the file: no IndexError from an empty fps, no NaN camera from huge angles."""
    arrays = {"fps": 30.0, "body_pose": np.zeros((2, 21, 3)), "global_orient": np.zeros((2, 3)), **fields}
    np.savez(tmp_path / "m.npz", **arrays)
    with pytest.raises(MotionFormatError, match=f"m.npz: {words}"):
        load_motion(tmp_path / "m.npz")


def test_demo_motion_moves_naturally():
    m = demo_motion()
    assert m.fps == 30 and m.seconds >= 5
    bp = m.poses.body_pose
    # Waving early: the right elbow (body_pose index 18) swings; walking later: the knees bend.
    assert float(bp[:60, 18, 2].std()) > 0.1
    assert float(bp[90:140, 3, 0].max()) > 1.0 and float(bp[90:140, 4, 0].max()) > 1.0
    # Turning at the end: the body yaws both ways.
    yaw = m.poses.global_orient[150:, 1]
    assert float(yaw.max()) > 0.5 and float(yaw.min()) < -0.5
    # Smooth: no frame-to-frame jump above 0.25 rad (7.5 rad/s, a brisk human limb) anywhere.
    assert float((m.poses.full_pose()[1:] - m.poses.full_pose()[:-1]).abs().max()) < 0.25
