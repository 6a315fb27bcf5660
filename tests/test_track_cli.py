"""``streamer track``, ``streamer bench track`` and ``streamer render --overlay``, end to end."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import MACHINE_HEADER
from conftest import SHARED_VIDEO as VIDEO

from calibration.camera import CameraIntrinsics, intrinsics_from_fov
from streamer.body import SmplxPose
from streamer.cli import main
from streamer.commands.track import track_frames, undistort_landmarks, uniform_poses
from streamer.render.video import VideoWriter
from streamer.tracking.landmarks import FaceLandmarks, FrameLandmarks, HandLandmarks, PoseLandmarks
from streamer.tracking.mediapipe_runner import MediaPipeRunner
from streamer.tracking.motion import Motion, load_motion
from streamer.tracking.sources import FrameSource, VideoFileSource

needs_video = pytest.mark.skipif(not VIDEO.exists(), reason="shared video not found beside the repository")


def write_video(
    path: Path, levels: list[int], width: int = 160, height: int = 120, fps: float = 30.0
) -> Path:
    """A video whose frame i is a flat grey of ``levels[i]`` (0 everywhere: a black video)."""
    with VideoWriter(path, width, height, fps=fps, crf=0) as w:
        for level in levels:
            w.write(np.full((height, width, 3), level, np.uint8))
    return path


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@needs_video
def test_track_writes_a_motion_of_the_first_60_frames(tmp_path, capsys):
    camera = tmp_path / "K.json"
    intrinsics_from_fov(65.0, 720, 1280).save(camera)
    out = tmp_path / "motion.npz"
    code = main(
        ["track", str(VIDEO), "-o", str(out), "--max-frames", "60", "--camera-json", str(camera), "--json"]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    for key in ("frames", "tracked_frames", "ms_per_frame_mediapipe", "ms_per_frame_fit", "output"):
        assert key in summary
    assert summary["frames"] == 60 and summary["tracked_frames"] >= 58
    assert summary["output"] == str(out) and summary["fps"] == 30.0
    assert summary["ms_per_frame_mediapipe"] > 0 and summary["ms_per_frame_fit"] > 0
    assert set(summary["ms_per_frame_by_model"]) == {"holistic"}
    assert summary["frames_declared"] >= 300 and "warning" not in capsys.readouterr().err  # 60 asked, 60 read
    motion = load_motion(out)
    assert len(motion) == 60 and motion.fps == 30.0
    assert np.isfinite(motion.poses.body_pose.numpy()).all()
    # A person moving their arms: the body is not stuck in one pose.
    assert float(motion.poses.body_pose.std(0).max()) > 0.01


@needs_video
def test_a_truncated_video_is_tracked_as_far_as_it_goes_with_a_warning(tmp_path, capsys):
    """A file cut short (a copy that stopped) decodes to its end: the motion keeps what was read,
    and the command says the file held fewer frames than its header declares."""
    import av

    whole, cut = tmp_path / "whole.mp4", tmp_path / "cut.mp4"
    with av.open(str(VIDEO)) as src, av.open(str(whole), "w", options={"movflags": "faststart"}) as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])  # the index first, as streamed files have
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 12])
    out = tmp_path / "motion.npz"
    assert main(["track", str(cut), "-o", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    declared = summary["frames_declared"]
    assert declared >= 300 and 0 < summary["frames"] < 100
    assert f"ended after {summary['frames']} of the {declared} frames its header declares" in captured.err
    assert len(load_motion(out)) == summary["motion_frames"]


def test_black_video_fails_clearly_and_writes_nothing(tmp_path, capsys):
    video = write_video(tmp_path / "black.mp4", [0] * 8)
    out = tmp_path / "motion.npz"
    assert main(["track", str(video), "-o", str(out), "--json"]) == 2
    err = capsys.readouterr().err
    assert "no person found in any of the 8 frames" in err and "nothing written" in err
    assert not out.exists() and leftovers(tmp_path) == []


@needs_video
def test_a_still_photo_is_not_taken_for_a_video(tmp_path, capsys):
    """FFmpeg opens a PNG as a one-frame video: a motion of one frame is no motion."""
    import shutil

    photo = shutil.copy(VIDEO.parent.parent / "photos" / "woman_hat_bag.png", tmp_path / "photo.png")
    out = tmp_path / "motion.npz"
    assert main(["track", str(photo), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "photo.png: a single frame (a still image, not a video): a motion needs a video" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.png"]


def test_bad_inputs_fail_before_tracking(tmp_path, capsys):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    out = tmp_path / "m.npz"
    assert main(["track", str(corrupt), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "corrupt.mp4: not a readable video file (Invalid data found" in err and "Errno" not in err, err
    video = write_video(tmp_path / "grey.mp4", [128] * 2)
    square = tmp_path / "square.json"
    intrinsics_from_fov(60.0, 480, 480).save(square)
    assert main(["track", str(video), "-o", str(out), "--camera-json", str(square)]) == 2
    assert "different aspect ratio" in capsys.readouterr().err
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert main(["track", str(video), "-o", str(out), "--camera-json", str(broken)]) == 2
    assert "not a readable JSON file" in capsys.readouterr().err
    assert main(["track", str(video), "-o", str(out), "--max-frames", "0"]) == 2
    assert main(["track", str(video), "-o", str(tmp_path / "m.json")]) == 2
    assert main(["track", "camera:96", "-o", str(out)]) == 2
    assert "camera 96 is not available" in capsys.readouterr().err
    assert not out.exists()


def test_a_missing_camera_is_one_line_of_ours(tmp_path, capfd):
    """OpenCV's own warnings about the device (written by its C++ side) stay out of the way."""
    assert main(["track", "camera:95", "-o", str(tmp_path / "m.npz")]) == 2
    err = capfd.readouterr().err
    assert err.strip().splitlines() == ["streamer track: error: camera 95 is not available (no such device, or it is in use)"]


class _LiveSource(FrameSource):
    """A 'camera' that delivers a few black frames, then the user presses Ctrl+C."""

    def __init__(self, frames: int) -> None:
        self.name, self.width, self.height, self.fps, self.frame_count = "fake", 64, 48, 30.0, None
        self._frames = frames

    def __iter__(self) -> Iterator[tuple[float, np.ndarray]]:
        for i in range(self._frames):
            yield i * 50.0, np.zeros((48, 64, 3), np.uint8)
        raise KeyboardInterrupt

    def close(self) -> None:
        pass


class _RestFitter:
    def __init__(self) -> None:
        self.last_timings_ms: dict[str, float] = {}

    def fit(self, frame: FrameLandmarks) -> SmplxPose:
        self.last_timings_ms = {"total": 0.5}
        return SmplxPose.zeros()


def test_ctrl_c_stops_a_camera_and_keeps_what_was_tracked():
    with MediaPipeRunner("pose", video=True) as runner:
        result = track_frames(_LiveSource(3), runner, _RestFitter(), progress=False)
    assert result.interrupted and result.frames == 3 and result.tracked == 0
    assert result.fit_ms == [0.5, 0.5, 0.5] and len(result.mediapipe_ms) == 3
    assert (result.first_ms, result.last_ms) == (0.0, 100.0)


class _EmptyRoomFirst(FrameSource):
    """Four black frames (a fade in), then the shared video's first four."""

    def __init__(self) -> None:
        self.name, self.width, self.height, self.fps, self.frame_count = "fade-in", 720, 1280, 30.0, 8

    def __iter__(self) -> Iterator[tuple[float, np.ndarray]]:
        with VideoFileSource(VIDEO) as video:
            person = [rgb for _, (_, rgb) in zip(range(4), video)]
        for i, rgb in enumerate([np.zeros_like(person[0])] * 4 + person):
            yield i * 1000.0 / 30.0, rgb

    def close(self) -> None:
        pass


@needs_video
def test_frames_before_the_person_appears_take_their_first_pose(body):
    """A motion file must not start at the default placement and jump to the person at first sight."""
    from streamer.tracking.fit import PoseFitter

    with MediaPipeRunner("holistic", video=True) as runner:
        result = track_frames(_EmptyRoomFirst(), runner, PoseFitter(body, fps=30.0), progress=False)
    assert result.frames == 8 and result.first_person == 4 and result.tracked >= 4
    first = result.poses[4]
    for pose in result.poses[:4]:
        assert pose is first
    rest = PoseFitter(body, fps=30.0).fit(FrameLandmarks(width=720, height=1280, timestamp_ms=0.0))
    assert float((rest.transl - first.transl).norm()) > 0.3  # what the empty frames showed before (1.36 m)
    assert float((result.poses[5].transl - first.transl).norm()) < 0.1  # no jump after either


def test_undistort_landmarks_moves_every_part():
    intr = CameraIntrinsics(
        K=[[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]],
        width=640,
        height=480,
        dist=[-0.3, 0.1, 0.0, 0.0, 0.0],
    )
    corner = np.array([[600.0, 450.0, 1.0]], np.float32)  # far from the centre: barrel distortion matters
    frame = FrameLandmarks(
        width=640,
        height=480,
        timestamp_ms=0.0,
        pose=PoseLandmarks(
            image=np.repeat(corner, 33, 0),
            world=np.zeros((33, 3), np.float32),
            visibility=np.ones(33, np.float32),
        ),
        left_hand=HandLandmarks(image=np.repeat(corner, 21, 0), world=None),
        face=FaceLandmarks(image=np.repeat(corner, 478, 0)),
    )
    undistort_landmarks(frame, intr)
    expected = intr.undistort_points(corner[:, :2])[0]
    assert np.linalg.norm(expected - corner[0, :2]) > 5
    for part in (frame.pose, frame.left_hand, frame.face):
        assert np.allclose(part.image[:, :2], expected) and np.all(part.image[:, 2] == 1.0)  # depth untouched


@needs_video
def test_bench_track_reports_mediapipe_and_fit(capsys):
    assert main(["bench", "track", "--frames", "10", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["bench"] == "track" and result["frames"] == 10 and result["tracked_frames"] >= 9
    stages = {row["stage"]: row for row in result["results"]}
    assert set(stages) == {"mediapipe:holistic", "mediapipe:total", "fit"}
    assert all(row["median_ms"] > 0 and row["frames"] == 5 for row in stages.values())
    assert main(["bench", "track", "--frames", "6"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert re.fullmatch(MACHINE_HEADER.format(verb="track"), header), header


def test_render_overlay_puts_the_synchronised_video_beside_the_avatar(tmp_path, capsys):
    """The video's frame k (grey level 40 * k) sits left of the avatar rendered from motion frame k
    (an arm that rises frame by frame: each right-hand tile is the plain render of the same frame)."""
    import torch

    levels = [40 * k for k in range(6)]
    video = write_video(tmp_path / "src.mp4", levels, width=96, height=64, fps=24.0)
    poses = SmplxPose.zeros(batch=6)
    poses.body_pose[:, 15, 2] = torch.linspace(-1.2, 1.2, 6)  # the left arm rises
    motion = Motion(poses, fps=24.0).save(tmp_path / "m.npz")
    out, plain = tmp_path / "overlay.mp4", tmp_path / "plain.mp4"
    common = ["render", "--motion", str(motion), "--size", "64", "--backend", "cpu", "--json"]
    assert main([*common, "--overlay", str(video), "-o", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["overlay"] == str(video) and (summary["width"], summary["height"]) == (96 + 64, 64)
    assert main([*common, "-o", str(plain)]) == 0
    capsys.readouterr()
    with VideoFileSource(out) as src:
        assert (src.width, src.height) == (96 + 64, 64)
        frames = [rgb.astype(np.float32) for _, rgb in src]
    with VideoFileSource(plain) as src:
        renders = [rgb.astype(np.float32) for _, rgb in src]
    assert len(frames) == len(renders) == 6
    for k, rgb in enumerate(frames):
        assert abs(float(np.median(rgb[:, :90])) - levels[k]) <= 4, k
        # the avatar beside it is motion frame k's, not another frame's
        gaps = [float(np.abs(rgb[:, 96:] - r).mean()) for r in renders]
        assert int(np.argmin(gaps)) == k, (k, gaps)
    # --fps 12: every other frame, of both the video and the motion, still side by side
    assert main([*common, "--overlay", str(video), "--fps", "12", "-o", str(out)]) == 0
    capsys.readouterr()
    with VideoFileSource(out) as src:
        halved = [rgb.astype(np.float32) for _, rgb in src]
    assert len(halved) == 3
    for j, rgb in enumerate(halved):
        assert abs(float(np.median(rgb[:, :90])) - levels[2 * j]) <= 4, j
        gaps = [float(np.abs(rgb[:, 96:] - r).mean()) for r in renders]
        assert int(np.argmin(gaps)) == 2 * j, (j, gaps)


def test_a_variable_frame_rate_is_resampled_keeping_the_timing() -> None:
    rng = np.random.default_rng(0)
    steady = list(1000.0 * np.arange(60) / 30.0 + rng.uniform(-5, 5, 60))  # a camera's jitter
    poses = list(range(60))  # stand-ins: only their order matters
    same, resampled = uniform_poses(poses, steady, 30.0)
    assert same is poses and not resampled
    # a phone in the dark: 1 s at 30 fps, then 2 s at 15 fps; the file's average rate is about 20
    times = list(1000.0 * np.arange(30) / 30.0) + list(1000.0 + 1000.0 * np.arange(30) / 15.0)
    fps = (len(times) - 1) / (times[-1] / 1000.0)
    out, resampled = uniform_poses(list(range(60)), times, fps)
    assert resampled and len(out) == round(times[-1] / (1000.0 / fps)) + 1
    grid = np.arange(len(out)) * 1000.0 / fps
    picked = np.array(times)[out]
    assert np.abs(picked - grid).max() <= 1000.0 / 15.0 / 2 + 1e-9  # within half a frame of its time
    assert out == sorted(out) and out[0] == 0 and out[-1] == 59
