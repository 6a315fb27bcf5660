"""A video file encoded to VP8 once, up front, and sent as pre-encoded packets: a remote webcam.

In production a performer's browser decodes nothing and encodes its webcam on the performer's own
machine. A benchmark whose performer plays a file with :class:`~streamer.stream.client.VideoFileTrack`
instead decodes the file and encodes it again in real time *on the server's cores*, which on a
2-core machine competes with tracking. :class:`EncodedClipTrack` does that work before the
measurement: the clip is decoded, scaled and VP8-encoded into memory when the track is made, and
``recv()`` then hands aiortc one ready packet per frame period (aiortc packetizes pre-encoded
packets without encoding; the peer connection must negotiate VP8, see :attr:`codec_mime_type`).
The clip loops from its first packet, a keyframe.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from ..errors import SourceError
from ..tracking.sources import VideoFileSource
from .camera_encoder import VIDEO_CLOCK_RATE, VIDEO_TIME_BASE

#: Bit rate of the encoded clip (a webcam stream as aiortc would send it on a good link).
CLIP_BITRATE = 1_500_000
MAX_CLIP_SECONDS = 60.0


@dataclass
class EncodedClip:
    """A clip as VP8: one encoded frame per video frame, the first a keyframe, no hidden alt-ref frames."""

    packets: list[bytes]
    fps: float
    width: int
    height: int


def encode_clip(path: str | Path, max_side: int | None = 640, max_seconds: float = MAX_CLIP_SECONDS) -> EncodedClip:
    """Decode ``path``, scale it so the longer side is at most ``max_side`` (even sizes) and encode it as VP8.

    Raises:
        SourceError: the file cannot be read or has no frames.
    """
    packets: list[bytes] = []
    with VideoFileSource(path) as source:
        fps, width, height = source.fps, source.width, source.height
        scale = min(1.0, max_side / max(width, height)) if max_side else 1.0
        w, h = max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)
        codec = av.CodecContext.create("libvpx", "w")
        codec.width, codec.height, codec.pix_fmt = w, h, "yuv420p"
        codec.bit_rate = CLIP_BITRATE
        codec.time_base = Fraction(1, VIDEO_CLOCK_RATE)
        codec.gop_size = 1_000_000  # one keyframe, at the start (the loop restarts there)
        codec.options = {"deadline": "good", "cpu-used": "4", "lag-in-frames": "0", "auto-alt-ref": "0"}
        for index, (t_ms, rgb) in enumerate(source):
            if t_ms / 1000.0 > max_seconds:
                break
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(width=w, height=h, format="yuv420p")
            frame.pts = int(index * VIDEO_CLOCK_RATE / fps)
            frame.time_base = VIDEO_TIME_BASE
            packets.extend(bytes(p) for p in codec.encode(frame))
        packets.extend(bytes(p) for p in codec.encode(None))
    if not packets:
        raise SourceError(f"{path}: no video frames to send")
    return EncodedClip(packets, fps, w, h)


class EncodedClipTrack(MediaStreamTrack):
    """A video file as a remote webcam: VP8 packets encoded up front, sent in real time, looping.

    Args:
        clip: the encoded clip (:func:`encode_clip`; slow: run it before, e.g. in a thread).

    Attributes:
        frames_sent: packets handed to the sender.
        source_time: the clip time (seconds) of the packet sent last.
        codec_mime_type: the codec the connection must negotiate (``video/VP8``).
    """

    kind = "video"
    codec_mime_type = "video/VP8"

    def __init__(self, clip: EncodedClip) -> None:
        super().__init__()
        self.clip = clip
        self.fps = clip.fps
        self.frames_sent = 0
        self.source_time = 0.0
        self._t0: float | None = None

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        if self._t0 is None:
            self._t0 = time.monotonic()
        delay = self._t0 + self.frames_sent / self.fps - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        index = self.frames_sent % len(self.clip.packets)
        packet = av.Packet(self.clip.packets[index])
        packet.pts = int(self.frames_sent * VIDEO_CLOCK_RATE / self.fps)
        packet.time_base = VIDEO_TIME_BASE
        self.frames_sent += 1
        self.source_time = index / self.fps
        return packet
