"""Frame sources: video files through PyAV (generated here and the shared video), cameras, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_VIDEO as VIDEO

from streamer.errors import InputError, SourceError
from streamer.render.video import VideoWriter
from streamer.tracking.sources import VideoFileSource, frames_at, open_source, parse_camera


def write_ramp_video(
    path: Path, frames: int = 12, width: int = 96, height: int = 64, fps: float = 24.0
) -> Path:
    """Frame i is a flat grey of level 16 * i mod 256 (plus a white square on the left so rotation would show)."""
    with VideoWriter(path, width, height, fps=fps, crf=0) as w:
        for i in range(frames):
            rgb = np.full((height, width, 3), (16 * i) % 256, np.uint8)
            rgb[8:24, 8:24] = 255
            w.write(rgb)
    return path


def test_video_file_frames_timestamps_and_size(tmp_path):
    path = write_ramp_video(tmp_path / "ramp.mp4")
    with open_source(path) as src:
        assert isinstance(src, VideoFileSource) and not src.is_live
        assert (src.width, src.height, src.fps, src.frame_count) == (96, 64, 24.0, 12)
        frames = list(src)
    assert len(frames) == 12
    times = np.array([t for t, _ in frames])
    assert times[0] == 0.0 and np.allclose(np.diff(times), 1000 / 24, atol=0.01)
    for i, (_, rgb) in enumerate(frames):
        assert rgb.shape == (64, 96, 3) and rgb.dtype == np.uint8 and rgb.flags.c_contiguous
        assert abs(float(np.median(rgb[40:, 40:])) - 16 * i) <= 3  # in order, decoded correctly
        assert rgb[10:20, 10:20].min() > 230  # upright: the square stays top-left


def test_webm_frame_count_comes_from_the_files_length(tmp_path):
    import av

    path = tmp_path / "clip.webm"
    with av.open(str(path), "w", format="webm") as out:
        stream = out.add_stream("libvpx", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(45):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 5 * i, np.uint8), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    with VideoFileSource(path) as src:  # WebM stores no frame count: a progress bar needs one
        assert src.frame_count == 45 and len(list(src)) == 45


def test_a_video_is_iterated_once(tmp_path):
    with VideoFileSource(write_ramp_video(tmp_path / "v.mp4", frames=3)) as src:
        assert len(list(src)) == 3
        with pytest.raises(InputError, match="iterated once"):
            list(src)


@pytest.mark.skipif(not VIDEO.exists(), reason="shared video not found beside the repository")
def test_shared_video_header_and_first_frames():
    with VideoFileSource(VIDEO) as src:
        assert (src.width, src.height, src.frame_count) == (720, 1280, 301)
        assert src.fps == pytest.approx(30.0)
        first = [item for _, item in zip(range(5), src)]
    assert [round(t, 3) for t, _ in first] == [0.0, 33.333, 66.667, 100.0, 133.333]
    assert first[0][1].shape == (1280, 720, 3)
    assert first[0][1].std() > 20  # a real picture, not a blank frame


def test_missing_folder_and_non_video_files(tmp_path):
    with pytest.raises(SourceError, match="video file not found"):
        open_source(tmp_path / "nope.mp4")
    with pytest.raises(SourceError, match="is a folder"):
        open_source(tmp_path)
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    with pytest.raises(SourceError, match="not a readable video file"):
        open_source(text)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(SourceError, match="not a readable video file"):
        open_source(empty)


def test_corrupt_videos_give_clear_errors(tmp_path):
    good = write_ramp_video(tmp_path / "good.mp4", frames=30, width=128, height=96)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.mp4"  # the index (moov) is written last: cut it off
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match="truncated.mp4"), open_source(truncated) as src:
        list(src)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    with pytest.raises(SourceError, match="garbage.mp4"):
        open_source(garbage)


def test_camera_names_and_unavailable_camera():
    assert parse_camera("camera:0") == 0 and parse_camera("camera:12") == 12
    assert parse_camera("video.mp4") is None and parse_camera("camera:") is None
    with pytest.raises(SourceError, match="bad camera name"):
        open_source("camera:front")
    with pytest.raises(SourceError, match="camera 97 is not available"):
        open_source("camera:97")


def test_unavailable_camera_with_an_opencv_without_log_levels(monkeypatch):
    """Some OpenCV builds have no getLogLevel/setLogLevel: the camera is still refused in words."""
    import cv2

    monkeypatch.delattr(cv2, "getLogLevel", raising=False)
    monkeypatch.delattr(cv2, "setLogLevel", raising=False)
    with pytest.raises(SourceError, match="camera 97 is not available"):
        open_source("camera:97")


def test_frames_at_repeats_and_drops_to_follow_another_clock():
    frames = [(t, np.full((1, 1, 3), i, np.uint8)) for i, t in enumerate([0.0, 40.0, 80.0, 120.0])]
    # A 50 fps clock over a 25 fps source: each frame is shown twice; past the end the last one stays.
    shown = [
        int(rgb[0, 0, 0]) for _, rgb in frames_at(iter(frames), iter([0, 20, 40, 60, 80, 100, 120, 140, 160]))
    ]
    assert shown == [0, 0, 1, 1, 2, 2, 3, 3, 3]
    # A slower clock drops frames; a time just before a frame (within 0.5 ms rounding) takes it.
    shown = [int(rgb[0, 0, 0]) for _, rgb in frames_at(iter(frames), iter([0, 79.6, 120]))]
    assert shown == [0, 2, 3]
    assert list(frames_at(iter([]), iter([0.0]))) == []


def test_display_rotation_is_applied(tmp_path):
    """A phone video stored landscape with a 90-degree display matrix comes out upright (portrait)."""
    import struct

    import av

    path = tmp_path / "phone.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        for _ in range(3):
            img = np.zeros((32, 64, 3), np.uint8)
            img[:, :32, 0] = 255  # stored: red on the left half
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    data = bytearray(path.read_bytes())
    identity = struct.pack(">9i", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    at = data.find(identity, data.find(b"tkhd"))
    assert at > 0
    # the matrix a phone writes for a portrait recording: show the picture turned 90 degrees clockwise
    data[at : at + 36] = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
    path.write_bytes(bytes(data))
    with VideoFileSource(path) as src:
        assert (src.width, src.height) == (32, 64)
        _, rgb = next(iter(src))
    assert rgb.shape == (64, 32, 3) and rgb.flags["C_CONTIGUOUS"]
    assert rgb[:28, :, 0].mean() > 200 and rgb[36:, :, 0].mean() < 50  # the left half is now on top
