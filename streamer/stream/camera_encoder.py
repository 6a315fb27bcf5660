"""One encode per camera, codec and bit rate, shared by every peer on that stream.

A performer and the viewers on the stage camera see the same pictures. Encoding them once per
peer cost one encode per peer and picture (5-8 ms each at 512x512 on this CPU), on the cores that
also track and render. :class:`CameraEncoder` encodes each picture of a camera once, the first
time any peer asks for it, and keeps the last :data:`HISTORY` encoded pictures. Each peer's track
(:class:`~streamer.stream.tracks.AvatarTrack`) sends the camera's pictures *in order*: VP8 inter
frames refer to the picture before, so a peer that missed some (it was slow to take them) first
sends those it missed, back to back (bandwidth, no extra encode). A peer that starts, or fell
further behind than the history, or whose browser reports a loss (RTCP PLI), waits for a
keyframe, which it asks the encoder for.

A camera's stream is also encoded once per bit rate its peers use: each peer's rate follows its link
(:class:`~streamer.stream.bitrate.PeerBitrate`), one of a few fixed steps, so peers on good links
still share one encode. Peers negotiate VP8 or H.264 (:func:`available_codecs`; the
answer takes the first of them that the offer lists: Chromium gets VP8). H.264 (constrained
baseline, libx264) is for clients that decode it in hardware or have nothing else; a camera whose
peers use both codecs is encoded once per codec.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

import av
import numpy as np

from .bitrate import BITRATES

if TYPE_CHECKING:
    from .stage import AvatarFrame
    from .stats import PipelineStats

VP8, H264 = "video/VP8", "video/H264"
#: The codecs the avatar video can be sent in, and the encoder library of each.
CODEC_MIME_TYPES = (VP8, H264)
_LIBRARIES = {VP8: "libvpx", H264: "libx264"}


def available_codecs() -> tuple[str, ...]:
    """The codecs of :data:`CODEC_MIME_TYPES` that this install of PyAV can encode (a build without
    libx264 sends VP8 only), in that order."""
    return tuple(c for c in CODEC_MIME_TYPES if _LIBRARIES[c] in av.codecs_available)


#: A keyframe at least this often (seconds), so that a peer recovers from losses RTCP did not report.
KEYFRAME_INTERVAL_S = 3.0
#: Requested keyframes come at most this often (seconds); a request within it waits for its end.
#: Every peer of the camera gets them, and a keyframe costs several pictures' bits: one peer
#: asking again and again (a lossy link, a broken client) must not flood the others' streams.
KEYFRAME_MIN_GAP_S = 0.5
#: Encoded pictures kept for peers that fell behind.
HISTORY = 8
VIDEO_CLOCK_RATE = 90000
VIDEO_TIME_BASE = Fraction(1, VIDEO_CLOCK_RATE)
#: Every stream's timestamps count from here, so a peer moved to another stream (another camera or
#: bit rate) goes on forward in time (a browser holds back pictures whose time went backwards).
_CLOCK_ORIGIN = time.monotonic()


@dataclass(frozen=True)
class EncodedPicture:
    """One picture of a camera's stream.

    Attributes:
        index: position in the camera's stream (0, 1, 2, ...; each follows the one before).
        data: the encoded frame (a VP8 frame, or an H.264 access unit in Annex B form).
        pts: presentation time, 90 kHz ticks on a clock all streams share.
        keyframe: decodable on its own.
        frame: the picture it encodes (its timing fields feed the latency figures).
    """

    index: int
    data: bytes
    pts: int
    keyframe: bool
    frame: AvatarFrame

    def packet(self) -> av.Packet:
        """The picture as a packet for aiortc's sender (which only packetizes it)."""
        packet = av.Packet(self.data)
        packet.pts, packet.time_base = self.pts, VIDEO_TIME_BASE
        return packet


class CameraEncoder:
    """The stream of one camera in one codec at one bit rate: each picture encoded once, in the order
    peers ask for them.

    Thread-safe: tracks call :meth:`take` from executor threads.

    Args:
        stats: where the encode times go (``encode``, once per picture).
        codec: the stream's MIME type, one of :func:`available_codecs`.
        fps: the stage's output rate. H.264's rate control spends ``bitrate`` over this many
            pictures a second (libx264 budgets by the frame rate, not by the pictures' timestamps).
        bitrate: the stream's constant bit rate (bits/s).
    """

    def __init__(
        self,
        stats: PipelineStats | None = None,
        codec: str = VP8,
        fps: float = 30.0,
        bitrate: int = BITRATES[0],
    ) -> None:
        if codec not in available_codecs():
            raise ValueError(f"codec must be one of {available_codecs()} (this PyAV's), got {codec!r}")
        if bitrate <= 0:
            raise ValueError(f"bitrate must be positive, got {bitrate}")
        self.stats, self.codec, self.fps, self.bitrate = stats, codec, fps, int(bitrate)
        self._lock = threading.Lock()
        self._codec: av.VideoCodecContext | None = None
        self._history: deque[EncodedPicture] = deque(maxlen=HISTORY)
        self._next_index = 0
        self._want_keyframe = True
        self._last_keyframe = -1e9
        self.encoded = 0  # pictures encoded so far

    def request_keyframe(self) -> None:
        """Make the next picture a keyframe (a peer starts, or lost its reference)."""
        with self._lock:
            self._want_keyframe = True

    def take(self, frame: AvatarFrame, after: int | None) -> list[EncodedPicture]:
        """The stream up to ``frame`` for a peer that has sent everything up to index ``after``.

        Encodes ``frame`` unless it is in the stream already (or a newer picture is: then that one
        stands for it). Returns the pictures the peer must send next, oldest first, ending with
        ``frame``'s: those after ``after``; or, when ``after`` is None or no longer in the history,
        ``frame``'s picture alone if it is a keyframe. An empty list means the peer must wait: a
        keyframe is requested and comes with the next picture.
        """
        with self._lock:
            mine = next((p for p in self._history if p.frame.seq == frame.seq), None)
            if mine is None and self._history and self._history[-1].frame.seq > frame.seq:
                mine = self._history[-1]  # a newer picture is out already: never step back in time
            if mine is None:
                mine = self._encode(frame)
            if after is not None and self._history and self._history[0].index <= after + 1:
                return [p for p in self._history if after < p.index <= mine.index]
            if mine.keyframe:
                return [mine]
            self._want_keyframe = True
            return []

    def _encode(self, frame: AvatarFrame) -> EncodedPicture:
        size = frame.i420.shape[1]
        height = frame.i420.shape[0] * 2 // 3
        if self._codec is None or self._codec.width != size or self._codec.height != height:
            if self.codec == VP8:
                self._codec = _vp8_encoder(size, height, self.bitrate)
            else:
                self._codec = _h264_encoder(size, height, self.fps, self.bitrate)
            self._want_keyframe = True
        now = time.monotonic()
        since = now - self._last_keyframe
        keyframe = (self._want_keyframe and since >= KEYFRAME_MIN_GAP_S) or since >= KEYFRAME_INTERVAL_S
        video = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame.i420), format="yuv420p")
        last_pts = self._history[-1].pts if self._history else -1
        video.pts = max(last_pts + 1, int((now - _CLOCK_ORIGIN) * VIDEO_CLOCK_RATE))
        video.time_base = VIDEO_TIME_BASE
        if keyframe:
            video.pict_type = av.video.frame.PictureType.I
        t = time.perf_counter()
        data = b"".join(bytes(p) for p in self._codec.encode(video))
        if self.stats is not None:
            ms = (time.perf_counter() - t) * 1000.0
            self.stats.times["encode"].add(ms)
            self.stats.encode_times(self.codec).add(ms)
        is_key = (_is_vp8_keyframe if self.codec == VP8 else _is_h264_keyframe)(data)
        if is_key:
            self._want_keyframe, self._last_keyframe = False, now
        picture = EncodedPicture(self._next_index, data, video.pts, is_key, frame)
        self._next_index += 1
        self.encoded += 1
        self._history.append(picture)
        return picture


def _vp8_encoder(width: int, height: int, bitrate: int) -> av.VideoCodecContext:
    """A real-time VP8 encoder (aiortc's settings, constant bit rate, no lag)."""
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
    codec.bit_rate = bitrate
    codec.time_base = VIDEO_TIME_BASE
    codec.gop_size = 1_000_000  # keyframes when asked for (and every KEYFRAME_INTERVAL_S)
    codec.qmin, codec.qmax = 2, 56
    codec.options = {
        "bufsize": str(bitrate),
        "cpu-used": "-6",
        "deadline": "realtime",
        "lag-in-frames": "0",
        "minrate": str(bitrate),
        "maxrate": str(bitrate),
        "noise-sensitivity": "4",
        "overshoot-pct": "15",
        "partitions": "0",
        "static-thresh": "1",
        "undershoot-pct": "100",
    }
    codec.thread_count = 1
    return codec


def _is_vp8_keyframe(data: bytes) -> bool:
    """VP8 frame tag: bit 0 of the first byte is 0 for a keyframe (RFC 6386, 9.1)."""
    return bool(data) and not data[0] & 1


def _h264_encoder(width: int, height: int, fps: float, bitrate: int) -> av.VideoCodecContext:
    """A real-time H.264 encoder: libx264, constrained baseline (what WebRTC peers all decode), no
    lookahead or B-frames, IDR keyframes when asked for, ``bitrate`` at ``fps`` pictures a
    second. (Without a frame rate libx264 takes the 90 kHz clock for one and sends grey pictures of a
    few bytes.) The level is x264's, the lowest that fits: 3.0 at 512x512 and 30 fps. Browsers offer
    to receive level 3.1 (Chromium's 42e01f), which holds up to 960x960 at 30 fps; beyond that the
    stream needs more than the peer offered, which software decoders accept."""
    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
    codec.bit_rate = bitrate
    codec.time_base = VIDEO_TIME_BASE
    codec.framerate = Fraction(fps).limit_denominator(1001)
    codec.gop_size = 1_000_000
    codec.profile = "Baseline"
    codec.options = {
        "bufsize": str(bitrate),
        "forced-idr": "1",  # a forced keyframe is an IDR (with SPS and PPS): a peer can start there
        "maxrate": str(bitrate),
        "preset": "veryfast",
        "tune": "zerolatency",
    }
    codec.thread_count = 1
    return codec


def _is_h264_keyframe(data: bytes) -> bool:
    """An access unit (Annex B) holding an IDR slice (NAL unit type 5, ITU-T H.264 7.4.1.2)."""
    start = data.find(b"\x00\x00\x01")
    while start >= 0 and start + 3 < len(data):
        if data[start + 3] & 0x1F == 5:
            return True
        start = data.find(b"\x00\x00\x01", start + 3)
    return False
