"""The pre-encoded webcam of ``bench stream``: a faithful VP8 stream, paced and looping."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import av
import numpy as np
import pytest

from streamer.errors import SourceError
from streamer.reconstruct.metrics import psnr
from streamer.stream.encoded_clip import EncodedClipTrack, encode_clip
from streamer.stream.camera_encoder import VIDEO_CLOCK_RATE, VIDEO_TIME_BASE

FPS = 20
N = 12


def frame_image(i: int) -> np.ndarray:
    """A gradient with a bright square that moves 6 pixels a frame."""
    img = np.zeros((96, 160, 3), np.uint8)
    img[..., 1] = np.linspace(0, 200, 160, dtype=np.uint8)[None]
    img[30:60, 10 + 6 * i : 40 + 6 * i] = 255
    return img


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "moving.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        stream.options = {"crf": "10"}
        for i in range(N):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame_image(i), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def test_encode_clip_is_a_decodable_vp8_stream(clip_file: Path) -> None:
    clip = encode_clip(clip_file, max_side=80)
    assert (clip.width, clip.height) == (80, 48) and clip.fps == pytest.approx(FPS)
    assert len(clip.packets) == N  # one packet per frame: no hidden alt-ref frames
    decoder = av.CodecContext.create("vp8", "r")
    shown = []
    for data in clip.packets:
        shown += [f.to_ndarray(format="rgb24") for f in decoder.decode(av.Packet(data))]
    assert len(shown) == N
    for i, img in enumerate(shown):  # the picture of each frame, scaled to 80 x 48
        want = frame_image(i)[::2, ::2].astype(np.float64) / 255
        assert psnr(img / 255.0, want) > 24.0, i
    # the first packet alone decodes (a keyframe): the loop restarts there
    again = av.CodecContext.create("vp8", "r").decode(av.Packet(clip.packets[0]))
    assert len(again) == 1


def test_track_paces_and_loops(clip_file: Path) -> None:
    clip = encode_clip(clip_file, max_side=80)
    track = EncodedClipTrack(clip)
    assert track.codec_mime_type == "video/VP8"

    async def take(n: int) -> list[av.Packet]:
        return [await track.recv() for _ in range(n)]

    t0 = time.monotonic()
    packets = asyncio.run(take(N + 3))
    elapsed = time.monotonic() - t0
    assert elapsed >= (N + 2) / FPS * 0.95  # real time: one packet per frame period
    assert [bytes(p) for p in packets[N:]] == clip.packets[:3]  # looped to the keyframe
    assert [p.pts for p in packets] == [int(i * VIDEO_CLOCK_RATE / FPS) for i in range(N + 3)]
    assert all(p.time_base == VIDEO_TIME_BASE for p in packets)
    assert track.frames_sent == N + 3


def test_encode_clip_refuses_a_broken_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(SourceError):
        encode_clip(bad)
