"""`streamer render` end to end: a real MP4 of the avatar, and clean failures."""

import signal
import subprocess
import sys
import time

import av
import numpy as np
import pytest
import torch

from streamer.body import SmplxPose
from streamer.cli import main
from streamer.tracking.motion import Motion


def _short_motion(path, frames=6):
    poses = SmplxPose.zeros(batch=frames)
    poses.body_pose[:, 15, 2] = torch.linspace(-1.2, 0.0, frames)  # left arm rises
    return Motion(poses, fps=10).save(path)


def test_render_writes_a_playable_mp4_in_which_the_avatar_moves(tmp_path, demo_avatar):
    avatar = demo_avatar.save(tmp_path / "a.ply")
    motion = _short_motion(tmp_path / "m.npz")
    out = tmp_path / "out.mp4"
    assert main(["render", "--avatar", str(avatar), "--motion", str(motion), "--out", str(out),
                 "--size", "96", "--backend", "cpu", "--json"]) == 0
    with av.open(str(out)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 6 and frames[0].shape == (96, 96, 3)
    first, last = frames[0].astype(int), frames[-1].astype(int)
    assert (first < 200).any(axis=-1).mean() > 0.05  # the avatar covers part of the white frame
    assert np.abs(first - last).mean() > 1.0  # and it moved


def test_missing_avatar_is_a_clean_error_and_leaves_no_file(tmp_path):
    out = tmp_path / "out.mp4"
    proc = subprocess.run(
        [sys.executable, "-m", "streamer.cli", "render", "--avatar", str(tmp_path / "nope.ply"), "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2
    assert "streamer render: error:" in proc.stderr and "nope.ply" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("sig", "code", "words"),
    [(signal.SIGTERM, -signal.SIGTERM, "terminated"), (signal.SIGINT, 130, "interrupted")],
    ids=["term", "int"],
)
def test_a_render_stopped_midway_leaves_the_old_file_and_nothing_else(tmp_path, sig, code, words):
    """``kill`` (or a service stop, or ``timeout``) and Ctrl-C while frames are written: the half-written
    temporary file goes, an existing output stays as it was. After its clean-up a SIGTERM still ends
    the process by the signal, as a service manager expects."""
    out = tmp_path / "out.mp4"
    out.write_bytes(b"the previous render")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamer.cli", "render", "--out", str(out), "--size", "512"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not any(p.name.endswith(".tmp.mp4") for p in tmp_path.iterdir()):  # writing frames
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    assert err.rstrip().endswith(words) and "Traceback" not in err, err
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"] and out.read_bytes() == b"the previous render"


def test_bad_background_is_a_clean_error(tmp_path, capsys):
    out = tmp_path / "out.mp4"
    assert main(["render", "--background", "1,x,1", "--out", str(out), "--size", "32"]) == 2
    assert "background must be 3 numbers in [0, 1]" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "args, words",
    [
        (["--out", "clip.webm"], "clip.webm: the output must end in .mp4, .mkv or .mov"),
        (["--out", "afile/clip.mp4"], "cannot write afile/clip.mp4: afile is not a folder"),
        (["--fps", "0"], "--fps must be in (0, 240], got 0"),
        (["--fps", "-5"], "--fps must be in (0, 240], got -5"),
        (["--size", "0"], "--size must be an even number in [16, 4096], got 0"),
    ],
)
def test_bad_render_options_are_clean_errors_before_any_work(tmp_path, monkeypatch, capsys, args, words):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("a file, not a folder")
    assert main(["render", *args]) == 2
    assert f"streamer render: error: {words}" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
