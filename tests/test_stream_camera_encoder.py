"""One encode per camera and codec (VP8, H.264): peers share it, catch up in order after a gap,
start at keyframes; the stage hands out one encoder per camera and codec; a peer's keyframe request
(RTCP PLI) reaches it."""

from __future__ import annotations

import asyncio
import itertools
import time

import av
import numpy as np
import pytest

from streamer.stream import camera_encoder
from streamer.stream.camera_encoder import CODEC_MIME_TYPES, H264, VP8, CameraEncoder
from streamer.stream.stage import AvatarFrame, View

SIZE = 64


class _SteadyClock:
    """Stands in for ``time`` in the encoder: each picture is stamped ``step`` (1/15 s) after the one
    before, however fast this machine encodes (rate control reads the frame rate from the
    timestamps, keyframes come by the clock)."""

    def __init__(self, step: float = 1 / 15) -> None:
        self.now, self.step = time.monotonic(), step

    def monotonic(self) -> float:
        self.now += self.step
        return self.now

    def perf_counter(self) -> float:
        return time.perf_counter()


@pytest.fixture
def steady_clock(monkeypatch: pytest.MonkeyPatch) -> _SteadyClock:
    clock = _SteadyClock()
    monkeypatch.setattr(camera_encoder, "time", clock)
    return clock


def _picture(k: int) -> np.ndarray:
    """A moving gradient with a bright square, as I420 planes stacked [SIZE * 3 / 2, SIZE]."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    luma = ((x * 3 + y * 2 + 7 * k) % 200 + 20).astype(np.uint8)
    luma[8 + k % 40 : 20 + k % 40, 10:22] = 235
    chroma = np.full((SIZE // 2, SIZE), 128, np.uint8)
    return np.concatenate([luma, chroma])


def _frame(seq: int) -> AvatarFrame:
    return AvatarFrame(seq, _picture(seq), pose_seq=seq, capture_time=None, live=False, rendered_at=time.monotonic())


def _psnr_luma(decoded: av.VideoFrame, seq: int) -> float:
    got = decoded.to_ndarray(format="yuv420p")[:SIZE].astype(float)
    mse = float(((got - _picture(seq)[:SIZE].astype(float)) ** 2).mean())
    return 10 * np.log10(255.0**2 / max(mse, 1e-9))


def _key(packet: av.Packet) -> bool:
    return camera_encoder._is_vp8_keyframe(bytes(packet))


def _decode(pictures, codec: str = VP8) -> list[av.VideoFrame]:  # type: ignore[no-untyped-def]
    """Decode a stream with FFmpeg's own decoders (not the encoders' libraries), flushed at the end."""
    decoder = av.CodecContext.create({VP8: "vp8", H264: "h264"}[codec], "r")
    out = []
    for p in pictures:
        out.extend(decoder.decode(p.packet()))
    out.extend(decoder.decode(None))
    return out


@pytest.mark.parametrize("codec", CODEC_MIME_TYPES)
def test_peers_on_a_camera_share_one_encode_and_catch_up_in_order(codec: str, steady_clock) -> None:
    encoder = CameraEncoder(codec=codec)
    a_sent, b_sent = [], []
    a_cursor = b_cursor = None
    for seq in range(1, 11):
        got = encoder.take(_frame(seq), a_cursor)  # peer a takes every picture
        a_sent += got
        a_cursor = got[-1].index
        if seq in (1, 4, 5, 9, 10):  # peer b is slow: it misses 2, 3, 6, 7 and 8
            got = encoder.take(_frame(seq), b_cursor)
            b_sent += got
            b_cursor = got[-1].index
    assert encoder.encoded == 10  # once per picture, not once per peer
    assert a_sent[0].keyframe and not any(p.keyframe for p in a_sent[1:])
    # b sent what it missed first, in order: the same stream as a, byte for byte
    assert [p.index for p in b_sent] == list(range(10))
    assert [p.data for p in b_sent] == [p.data for p in a_sent]
    decoded = _decode(b_sent, codec)
    assert len(decoded) == 10
    assert [bool(f.key_frame) for f in decoded] == [p.keyframe for p in b_sent]  # the decoder agrees
    assert min(_psnr_luma(f, seq) for f, seq in zip(decoded, range(1, 11))) > 28.0


@pytest.mark.parametrize("codec", CODEC_MIME_TYPES)
def test_a_new_peer_waits_for_a_keyframe_and_never_goes_back_in_time(codec: str, steady_clock) -> None:
    steady_clock.step = camera_encoder.KEYFRAME_MIN_GAP_S  # requested keyframes may come at every picture
    encoder = CameraEncoder(codec=codec)
    first = encoder.take(_frame(1), None)
    cursor = first[-1].index
    cursor = encoder.take(_frame(2), cursor)[-1].index
    assert encoder.take(_frame(2), None) == []  # joins on an inter frame: nothing yet ...
    late = encoder.take(_frame(3), None)  # ... the next picture is a keyframe, for everybody
    assert len(late) == 1 and late[0].keyframe
    assert [p.index for p in encoder.take(_frame(3), cursor)] == [2]  # the first peer goes on
    decoded = _decode(late, codec)  # decodable on its own
    assert len(decoded) == 1 and _psnr_luma(decoded[0], 3) > 28.0
    # a picture older than the newest one out (never encoded: a peer was slow to take it)
    # stands for the newest: no step back in time
    assert [p.frame.seq for p in encoder.take(_frame(7), 2)] == [7]  # a peer at picture 3 takes 7
    assert [p.frame.seq for p in encoder.take(_frame(6), 2)] == [7]  # another, at 3 too, 6: gets 7
    assert encoder.encoded == 4


@pytest.mark.parametrize("codec", CODEC_MIME_TYPES)
def test_a_peer_too_far_behind_restarts_at_a_keyframe(codec: str, steady_clock) -> None:
    encoder = CameraEncoder(codec=codec)
    behind = encoder.take(_frame(1), None)[-1].index  # this peer sent the first picture, then stalled
    other = behind
    for seq in range(2, camera_encoder.HISTORY + 4):  # another peer takes every picture
        other = encoder.take(_frame(seq), other)[-1].index
    # the stalled peer's next picture is no longer kept: it waits for a keyframe
    assert encoder.take(_frame(camera_encoder.HISTORY + 4), behind) == []
    again = encoder.take(_frame(camera_encoder.HISTORY + 5), behind)
    assert len(again) == 1 and again[0].keyframe


@pytest.mark.parametrize("codec", CODEC_MIME_TYPES)
def test_keyframe_requests_are_spaced_for_everybody(codec: str, steady_clock) -> None:
    """A peer asking for a keyframe at every picture (a broken client, a very lossy link) gets one
    every KEYFRAME_MIN_GAP_S, not one per picture: the camera's other peers share that stream."""
    encoder = CameraEncoder(codec=codec)
    keys = []
    for seq in range(1, 61):  # 4 s at 15 pictures a second
        encoder.request_keyframe()
        keys.append(encoder.take(_frame(seq), seq - 2 if seq > 1 else None)[-1].keyframe)
    gap = round(camera_encoder.KEYFRAME_MIN_GAP_S / steady_clock.step)  # pictures
    at = [i for i, k in enumerate(keys) if k]
    assert at[0] == 0 and all(b - a == gap for a, b in itertools.pairwise(at)), at
    assert len(at) == 1 + (len(keys) - 1) // gap  # as often as allowed: no request is lost


@pytest.mark.parametrize("codec", CODEC_MIME_TYPES)
def test_a_keyframe_comes_every_interval(monkeypatch, codec: str, steady_clock) -> None:
    steady_clock.step = 0.1  # 10 pictures a second
    monkeypatch.setattr(camera_encoder, "KEYFRAME_INTERVAL_S", 0.35)
    encoder = CameraEncoder(codec=codec)
    cursor, keys = None, []
    for seq in range(1, 9):
        got = encoder.take(_frame(seq), cursor)
        cursor = got[-1].index
        keys.append(got[-1].keyframe)
    assert keys == [True, False, False, False, True, False, False, False]


@pytest.mark.parametrize("codec", CODEC_MIME_TYPES)
def test_a_stream_keeps_to_its_bit_rate(codec: str, steady_clock) -> None:
    """Faint noise on a gradient takes all the bits it gets: a quarter of the rate gives well under
    half the bytes."""
    rng = np.random.default_rng(0)
    base = np.tile(np.linspace(40, 200, 256), (384, 1))
    pictures = [(base + rng.normal(0, 6, base.shape)).clip(0, 255).astype(np.uint8) for _ in range(30)]
    sizes = {}
    for rate in (1_000_000, 250_000):
        encoder = CameraEncoder(codec=codec, bitrate=rate)
        cursor, total = None, 0
        for seq, i420 in enumerate(pictures, start=1):
            got = encoder.take(AvatarFrame(seq, i420, seq, None, False, time.monotonic()), cursor)
            cursor, total = got[-1].index, total + sum(len(p.data) for p in got)
        sizes[rate] = total
    assert sizes[250_000] < 0.5 * sizes[1_000_000], sizes
    with pytest.raises(ValueError, match="bitrate"):
        CameraEncoder(codec=codec, bitrate=0)


@pytest.mark.parametrize("codec", CODEC_MIME_TYPES)
def test_streams_share_one_clock(codec: str) -> None:
    """A peer moved to another stream (another camera or bit rate) must go on forward in time: a
    stream started later carries later timestamps than one started earlier."""
    early = CameraEncoder(codec=codec)
    first = early.take(_frame(1), None)[0]
    time.sleep(0.05)
    later = CameraEncoder(codec=codec, bitrate=250_000)
    second = later.take(_frame(2), None)[0]
    assert second.pts - first.pts >= 0.04 * camera_encoder.VIDEO_CLOCK_RATE
    assert len(_decode([second], codec)) == 1


#: H.264's most macroblocks per picture by level_idc (ITU-T H.264 Table A-1).
_MAX_MACROBLOCKS = {
    9: 99, 10: 99, 11: 396, 12: 396, 13: 396, 20: 396, 21: 792, 22: 1620, 30: 1620, 31: 3600,
    32: 5120, 40: 8192, 41: 8192, 42: 8704, 50: 22080, 51: 36864, 52: 36864,
}


@pytest.mark.parametrize("size", [SIZE, 1024])
def test_h264_is_constrained_baseline_at_a_level_that_fits(size: int) -> None:
    """What WebRTC peers (hardware decoders included) must be able to decode: profile_idc 66 with
    constraint_set1 (constrained baseline), and a level whose picture size limit holds the picture."""
    encoder = CameraEncoder(codec=H264)
    i420 = np.zeros((size * 3 // 2, size), np.uint8)
    picture = encoder.take(AvatarFrame(1, i420, 1, None, False, time.monotonic()), None)[0]
    data = picture.data
    at = data.find(b"\x00\x00\x01\x67")  # the sequence parameter set (NAL type 7)
    assert picture.keyframe and at >= 0
    profile, flags, level = data[at + 4], data[at + 5], data[at + 6]
    assert profile == 66 and flags & 0x40, (profile, hex(flags))
    assert _MAX_MACROBLOCKS[level] >= (size // 16) ** 2, level


def test_stage_gives_one_encoder_per_camera(body, demo_avatar) -> None:
    from streamer.render import get_renderer
    from streamer.stream.painter import AvatarPainter
    from streamer.stream.pose_source import MotionPoseSource
    from streamer.stream.protocol import Orbit
    from streamer.stream.stage import Stage
    from streamer.stream.stats import PipelineStats
    from streamer.tracking.demo_motion import demo_motion

    async def main() -> None:
        source = MotionPoseSource(demo_motion())
        painter = AvatarPainter(demo_avatar, body, get_renderer("cpu"), 32, source.framing_poses())
        stage = Stage("t", painter, source, PipelineStats(), fps=10.0, loop=asyncio.get_running_loop())
        a, b = stage.add_view(), stage.add_view()
        shared = stage.encoder_for(a)
        assert stage.encoder_for(b) is shared  # the stage camera: one stream
        stage.set_orbit(b, Orbit(azimuth=30.0))
        mine = stage.encoder_for(b, shared)
        assert mine is not shared  # a still uses the stage camera's
        stage.set_orbit(b, Orbit(azimuth=60.0))
        assert stage.encoder_for(b, mine) is mine  # orbiting alone: the stream moves along
        stage.remove_view(a)
        assert stage.encoder_for(b, mine) is mine and len(stage._encoders) == 1
        # a peer on b's camera that negotiated H.264: its own stream of that camera
        c = stage.add_view()
        c.orbit, c.codec = b.orbit, H264
        h264 = stage.encoder_for(c)
        assert h264 is not mine and h264.codec == H264 and stage.encoder_for(b, mine) is mine
        stage.set_orbit(c, Orbit(azimuth=90.0))  # orbiting alone, it keeps its stream (and codec)
        assert stage.encoder_for(c, h264) is h264 and stage.encoder_for(b, mine) is mine
        stage.remove_view(c)
        assert list(stage._encoders.values()) == [mine]

    asyncio.run(main())


def test_a_peer_keyframe_request_reaches_the_track(steady_clock) -> None:
    """aiortc's sender notes an RTCP PLI in a private flag (only used when it encodes itself); the
    track reads and clears it and starts again at a keyframe. Fails if aiortc renames the flag."""
    from aiortc import RTCPeerConnection

    steady_clock.step = camera_encoder.KEYFRAME_MIN_GAP_S  # (requested keyframes are spaced by it)

    from streamer.stream.stats import PipelineStats
    from streamer.stream.tracks import AvatarTrack

    async def main() -> None:
        pc = RTCPeerConnection()
        try:
            sender = pc.addTransceiver("video", direction="sendonly").sender
            encoder, view = CameraEncoder(), View()
            track = AvatarTrack(view, PipelineStats(), lambda v, previous: encoder, lambda v, b: None)
            track.attach(sender)  # (fails if aiortc's sender lost a method the track wraps)
            view.bus.publish(_frame(1))
            first = await track.recv()
            view.bus.publish(_frame(2))
            second = await track.recv()
            assert _key(first) and not _key(second)
            sender._send_keyframe()  # what aiortc does on a PLI from the peer
            view.bus.publish(_frame(3))
            third = await asyncio.wait_for(track.recv(), 10)
            assert _key(third)
            assert not track._peer_wants_keyframe()  # cleared
        finally:
            await pc.close()

    asyncio.run(main())


def test_a_track_stops_with_its_view() -> None:
    from aiortc.mediastreams import MediaStreamError

    from streamer.stream.stats import PipelineStats
    from streamer.stream.tracks import AvatarTrack

    async def main() -> None:
        view = View()
        track = AvatarTrack(view, PipelineStats(), lambda v, previous: CameraEncoder(), lambda v, b: None)
        view.bus.close()
        with pytest.raises(MediaStreamError):
            await track.recv()
        assert track.readyState == "ended"

    asyncio.run(main())
