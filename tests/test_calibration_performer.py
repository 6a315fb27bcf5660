"""Performer calibration: proportions, floor and neutral face from a rest pose; profile files."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from conftest import SHARED_VIDEO as VIDEO

from calibration.performer import (
    FORMAT,
    PerformerProfile,
    ProfileError,
    calibrate_performer,
    load_profile,
    profile_path,
    profiles_dir,
    save_profile,
)
from streamer.body import SmplxPose
from streamer.commands.eval_fit import place_in_view
from streamer.errors import StreamerError, TrackingError
from streamer.tracking.fit import PoseFitter, default_intrinsics
from streamer.tracking.landmark_model import LandmarkModel, posed_points, synthesize_frames
from streamer.tracking.rest_pose import relaxed_body_pose

W, H = 1280, 720
K = default_intrinsics(W, H)
BETAS = [1.0, 0.0, 0.8, 0.0, 1.2, -0.8, 0.0, 0.0, 0.0, 0.0]


@pytest.fixture()
def config_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config"


@pytest.fixture(scope="module")
def rest_frames(body):
    """Three seconds of a performer (known shape) standing still, mouth a little open."""
    n = 45
    rest = SmplxPose.zeros().replace(
        body_pose=torch.from_numpy(relaxed_body_pose().astype(np.float32)),
        jaw_pose=torch.tensor([0.12, 0.0, 0.0]),
        betas=torch.tensor(BETAS),
    )
    gt = place_in_view(body, SmplxPose.stack([rest] * n))
    return gt, synthesize_frames(body, gt, K, W, H, noise_mm=5.0, seed=2, fps=15.0)


def _segments(lm: LandmarkModel) -> np.ndarray:
    p = lm.pose_rest
    pairs = [(11, 13), (13, 15), (23, 25), (25, 27), (11, 12), (23, 24)]
    return np.array([np.linalg.norm(p[a] - p[b]) for a, b in pairs])


def test_calibration_recovers_proportions_floor_and_neutral_face(body, rest_frames):
    gt, frames = rest_frames
    profile = calibrate_performer(body, frames, "alice", K=K)
    assert profile.name == "alice" and profile.frames == len(frames)
    # Proportions: the calibrated body's limbs match the performer's within a centimetre
    # (the mean shape is off by several).
    want = _segments(LandmarkModel(body, np.array(BETAS)))
    got = _segments(LandmarkModel(body, np.array(profile.betas)))
    mean = _segments(LandmarkModel(body))
    assert np.abs(got - want).max() < 0.01 < np.abs(mean - want).max()
    # Floor: the lowest foot point of the performer, in the tracking world.
    feet = posed_points(body, gt[:1])["pose"][0, 29:33, 1]
    assert abs(profile.floor_y - float(feet.min())) < 0.03
    # Neutral face: the resting jaw opening is measured ...
    assert abs(profile.jaw - 0.12) < 0.03 and profile.face_points is not None
    # ... and removed: tracking with the profile shows a closed mouth for that face.
    fitted = PoseFitter(body, K=K, profile=profile, smoothing=False).fit(frames[0])
    plain = PoseFitter(body, K=K, smoothing=False).fit(frames[0])
    assert float(fitted.jaw_pose[0]) < 0.02 < float(plain.jaw_pose[0]) - 0.08
    assert float(fitted.expression.abs().max()) < 0.3
    assert torch.allclose(fitted.betas, torch.tensor(profile.betas, dtype=torch.float32))


def test_calibration_needs_a_person(body, rest_frames):
    from streamer.tracking.landmarks import FrameLandmarks

    _, frames = rest_frames
    empty = [FrameLandmarks(width=W, height=H, timestamp_ms=i * 33.0) for i in range(30)]
    with pytest.raises(TrackingError, match="at least 10 frames .* got 3 of 33"):
        calibrate_performer(body, empty + frames[:3], "bob")
    with pytest.raises(ProfileError, match="bad performer name"):
        calibrate_performer(body, frames, "../evil")


def test_profile_save_load_round_trip_atomic(config_home):
    profile = PerformerProfile(name="carol", betas=[0.5, -0.2], floor_y=-1.1, jaw=0.05,
                               eye_open={"left": 0.3, "right": 0.28}, gaze={"left": [0.0, 0.1, 0.0], "right": None},
                               face_points=[[0.0, 0.0, 0.0]] * 3, frames=40, stillness_mm=3.0)
    path = save_profile(profile)
    assert path == profile_path("carol") == profiles_dir() / "carol.json"
    assert str(path).startswith(str(config_home))
    assert [p.name for p in path.parent.iterdir()] == ["carol.json"]  # no temp files left behind
    data = json.loads(path.read_text())
    assert data["format"] == FORMAT and data["betas"] == [0.5, -0.2]
    back = load_profile("carol")
    assert back == profile
    assert load_profile(path) == profile  # by path too


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        (json.dumps({"format": "other", "version": 1}), "format is 'other'"),
        (json.dumps({"format": FORMAT, "version": 1, "name": "x", "betas": ["a"]}), "'betas' must be a list of finite numbers"),
        (json.dumps({"format": FORMAT, "version": 1, "name": "x", "betas": [], "floor_y": "low"}), "'floor_y' must be a number"),
        (json.dumps({"format": FORMAT, "version": 1, "name": "x", "betas": [], "face": {"eye_open": {"left": -1, "right": 0.3}}}),
         "face.eye_open"),
        (json.dumps({"format": FORMAT, "version": 2, "name": "x", "betas": []}), "version 2 is not supported"),
    ],
)
def test_corrupt_profile_gives_a_clear_error(config_home, content, message):
    path = profiles_dir() / "dave.json"
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.raises(ProfileError, match=message) as err:
        load_profile("dave")
    assert str(path) in str(err.value) and isinstance(err.value, StreamerError)


def test_missing_or_corrupt_profile_in_the_fitter(body, config_home):
    with pytest.raises(ProfileError, match="no performer profile 'nobody'"):
        PoseFitter(body, profile="nobody")
    (profiles_dir()).mkdir(parents=True)
    (profiles_dir() / "eve.json").write_text('{"format": "streamer-performer-profile"')
    with pytest.raises(ProfileError, match="corrupt performer profile"):
        PoseFitter(body, profile="eve")
    save_profile(PerformerProfile(name="eve", betas=[0.3]))
    assert float(PoseFitter(body, profile="eve").betas[0]) == pytest.approx(0.3)


@pytest.mark.slow
@pytest.mark.skipif(not VIDEO.exists(), reason="shared test video not present")
def test_calibrate_performer_command_on_the_video(body, tmp_path, config_home):
    """The command handler, called directly: one second of the real video's rest pose."""
    from streamer.commands.calibrate_performer import run

    out = tmp_path / "p.json"
    args = argparse.Namespace(source=str(VIDEO), name="taichi", start=0.0, seconds=1.0, models="holistic",
                              camera_json=None, smplx_dir=None, out=str(out), json=True)
    assert run(args) == 0
    profile = load_profile(out)
    assert profile.frames >= 25 and profile.floor_y is not None and -2.5 < profile.floor_y < 0.0
    assert profile.face_points is not None and all(abs(b) <= 3.0 for b in profile.betas)
    bad = argparse.Namespace(**{**vars(args), "name": "no/slash"})
    with pytest.raises(ProfileError):
        run(bad)
