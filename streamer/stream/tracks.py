"""aiortc media tracks: the avatar video sent to each peer, and draining a peer's webcam track.

:class:`AvatarTrack` is what aiortc's ``RTCRtpSender`` pulls frames from. Its sender loop is
``recv() -> encode (executor thread) -> send RTP packets -> recv() ...``, so the time from one
``recv()`` returning to the next being called is that peer's encode-and-send time, and the next
call marks the previous frame as *sent*: server-added latency is measured up to that moment.
"""

from __future__ import annotations

import fractions
import logging
import time
from collections.abc import Callable
from typing import Any

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from .latest import BusClosed
from .stage import AvatarFrame, View
from .stats import PipelineStats, Rate, Rolling

logger = logging.getLogger(__name__)

VIDEO_CLOCK_RATE = 90000  # RTP video clock, Hz
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)


class AvatarTrack(MediaStreamTrack):
    """The avatar video of one view, for one peer connection.

    Args:
        view: the view whose pictures to send.
        stats: the stage's figures (encode times, latency, frames out, skipped frames).

    Attributes:
        fps, latency, encode: this peer's own rates and timings.
    """

    kind = "video"

    def __init__(self, view: View, stats: PipelineStats) -> None:
        super().__init__()
        self.view, self.stats = view, stats
        self.fps = Rate()
        self.latency = Rolling()
        self.encode = Rolling()
        self._created = time.monotonic()
        self._start: float | None = None
        self._last_pts = -1
        self._last_seq = 0
        self._skipped = 0
        self._last_pose_seq = -1
        self._pending: tuple[AvatarFrame, float] | None = None  # (frame handed out, when)

    def _sent(self, now: float) -> None:
        """The previous frame went out: record encode time and, for a new live pose, the latency."""
        if self._pending is None:
            return
        frame, handed_at = self._pending
        self._pending = None
        encode_ms = (now - handed_at) * 1000.0
        self.encode.add(encode_ms)
        self.stats.times["encode"].add(encode_ms)
        self.fps.tick(now)
        self.stats.frames_out.tick(now)
        if frame.pose_seq != self._last_pose_seq and not frame.repeat:
            self._last_pose_seq = frame.pose_seq
            # (a picture rendered before this peer joined would count the wait for the peer)
            if frame.live and frame.capture_time is not None and frame.rendered_at >= self._created:
                latency_ms = (now - frame.capture_time) * 1000.0
                self.latency.add(latency_ms)
                self.stats.latency.add(latency_ms)

    async def recv(self) -> av.VideoFrame:
        """The newest picture of the view as a ``yuv420p`` frame, paced by the stage's pacer."""
        if self.readyState != "live":
            raise MediaStreamError
        self._sent(time.monotonic())
        try:
            frame = await self.view.bus.next(self._last_seq)
        except BusClosed:
            self.stop()
            raise MediaStreamError from None
        skipped = self.view.bus.skipped
        if skipped > self._skipped:  # pictures replaced by newer ones before this peer took them
            self.stats.add_dropped(outputs=skipped - self._skipped)
            self._skipped = skipped
        self._last_seq = frame.seq
        now = time.monotonic()
        if self._start is None:
            self._start = now
        out = av.VideoFrame.from_ndarray(frame.i420, format="yuv420p")  # a copy: each encoder owns its frame
        pts = max(self._last_pts + 1, int((now - self._start) * VIDEO_CLOCK_RATE))
        out.pts, out.time_base = pts, VIDEO_TIME_BASE
        self._last_pts = pts
        handed_at = time.monotonic()
        if frame.pose_seq != self._last_pose_seq and not frame.repeat:
            self.stats.times["wait_send"].add((handed_at - frame.rendered_at) * 1000.0)
        self._pending = (frame, handed_at)
        return out

    def peer_stats(self) -> dict[str, object]:
        return {
            "fps": self.fps.per_second(),
            "latency_ms": self.latency.summary(),
            "encode_ms": self.encode.summary(),
        }


async def drain(track: MediaStreamTrack, on_frame: Callable[[Any, float], None] | None) -> None:
    """Take every frame from a remote track as soon as it is decoded (aiortc queues them unboundedly).

    ``on_frame(frame, received_at)`` gets each one with its ``time.monotonic()``; it must be quick
    (hand over to a worker). Returns when the track ends.
    """
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        if on_frame is not None:
            try:
                on_frame(frame, time.monotonic())
            except Exception:
                logger.exception("dropping a webcam frame: its handler failed")
