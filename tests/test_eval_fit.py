"""``streamer eval fit``: report keys, the accuracy target on the demo motion, other motion formats."""

from __future__ import annotations

import json

import numpy as np
import pytest

from streamer.cli import main
from streamer.commands.eval_fit import evaluate
from streamer.tracking.demo_motion import demo_motion
from streamer.tracking.motion import load_motion

KEYS = {"frames", "fps", "noise_mm", "calibrated", "mpjpe_mm", "pa_mpjpe_mm", "hand_mpjpe_mm", "ms_per_frame_fit"}


def test_demo_motion_meets_the_target(body):
    report = evaluate(body, demo_motion(), noise_mm=10.0, max_frames=90)
    assert KEYS <= set(report) and report["frames"] == 90
    assert report["mpjpe_mm"] <= 25.0 and report["pa_mpjpe_mm"] <= report["mpjpe_mm"]
    assert 0 < report["hand_mpjpe_mm"] < 30.0 and report["ms_per_frame_fit"] > 0
    clean = evaluate(body, demo_motion(), noise_mm=0.0, max_frames=30)
    assert clean["mpjpe_mm"] < report["mpjpe_mm"]  # noise costs accuracy: the metric is live


def test_cli_json_keys(capsys, body):
    assert main(["eval", "fit", "--motion", "random", "--max-frames", "12", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert KEYS | {"motion", "seconds"} <= set(report) and report["frames"] == 12 and report["motion"] == "random"


def test_amass_and_lhm_motions_are_accepted(tmp_path, body):
    T = 6
    poses = np.zeros((T, 156))
    poses[:, 0] = np.pi / 2  # standing, AMASS Z-up
    poses[:, 3 * 16 + 2] = np.linspace(-0.5, -1.0, T)  # left shoulder moving
    np.savez(tmp_path / "amass.npz", poses=poses, trans=np.zeros((T, 3)), mocap_framerate=np.array(60.0), betas=np.zeros(16))
    r = evaluate(body, load_motion(tmp_path / "amass.npz", body=body), fps=30.0)
    assert r["frames"] == 3 and np.isfinite(r["mpjpe_mm"])
    folder = tmp_path / "lhm" / "smplx_params"
    folder.mkdir(parents=True)
    for i in range(3):
        frame = {"root_pose": [np.pi, 0, 0], "body_pose": [0.0] * 63, "trans": [0.0, 0.0, 3.0], "betas": [0.0] * 10}
        (folder / f"{i:05d}.json").write_text(json.dumps(frame))
    r = evaluate(body, load_motion(tmp_path / "lhm", body=body, fps=30.0))
    assert r["frames"] == 3 and r["mpjpe_mm"] < 25.0


def test_bad_motion_file_is_a_clean_error(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    assert main(["eval", "fit", "--motion", str(bad)]) == 2
    assert "bad.npz: not a .npz motion file" in capsys.readouterr().err
    assert main(["eval", "fit", "--noise-mm", "-1", "--max-frames", "2"]) == 2


@pytest.mark.parametrize("noise", [0.0, 10.0])
def test_reports_are_reproducible(body, noise):
    a = evaluate(body, demo_motion(), noise_mm=noise, seed=4, max_frames=8)
    b = evaluate(body, demo_motion(), noise_mm=noise, seed=4, max_frames=8)
    assert a["mpjpe_mm"] == b["mpjpe_mm"] and a["hand_mpjpe_mm"] == b["hand_mpjpe_mm"]
