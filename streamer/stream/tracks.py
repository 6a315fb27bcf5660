"""aiortc media tracks: the avatar video sent to each peer, and draining a peer's webcam track.

:class:`AvatarTrack` is what aiortc's ``RTCRtpSender`` pulls from. It hands over pictures already
encoded by its camera's :class:`~streamer.stream.camera_encoder.CameraEncoder` (one encode per
camera, shared by its peers); the sender loop is ``recv() -> packetize -> send RTP packets ->
recv() ...``, so the next call marks the previous picture as *sent*: server-added latency is
measured up to that moment.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from .camera_encoder import CameraEncoder, EncodedPicture
from .latest import BusClosed
from .stage import AvatarFrame, View
from .stats import PipelineStats, Rate, Rolling

logger = logging.getLogger(__name__)

#: aiortc's RTCRtpSender sets this (private) flag when the peer asks for a keyframe (RTCP PLI/FIR);
#: it only acts on it when it encodes itself, so the track reads and clears it.
_SENDER_KEYFRAME_FLAG = "_RTCRtpSender__force_keyframe"


class AvatarTrack(MediaStreamTrack):
    """The avatar video of one view, for one peer connection, as encoded VP8 pictures.

    Args:
        view: the view whose pictures to send.
        stats: the stage's figures (latency, frames out, skipped frames).
        encoder_for: the stage's :meth:`~streamer.stream.stage.Stage.encoder_for` (the encoder of
            the view's camera, given the one the track used before).

    Attributes:
        sender: the ``RTCRtpSender`` sending this track (set after negotiation; used to notice the
            peer's keyframe requests).
        fps, latency, send: this peer's own rate, latency and time to packetize and send a picture.
    """

    kind = "video"

    def __init__(
        self,
        view: View,
        stats: PipelineStats,
        encoder_for: Callable[[View, CameraEncoder | None], CameraEncoder],
    ) -> None:
        super().__init__()
        self.view, self.stats, self._encoder_for = view, stats, encoder_for
        self.sender: Any = None
        self.fps = Rate()
        self.latency = Rolling()
        self.send = Rolling()
        self._created = time.monotonic()
        self._last_seq = 0
        self._skipped = 0
        self._last_pose_seq = -1
        self._encoder: CameraEncoder | None = None
        self._cursor: int | None = None  # index of the last picture of the encoder's stream sent
        self._queue: deque[EncodedPicture] = deque()  # pictures to send next, in order
        self._pending: tuple[AvatarFrame, float] | None = None  # (frame handed out, when)

    def _sent(self, now: float) -> None:
        """The previous picture went out: record the send time and, for a new live pose, the latency."""
        if self._pending is None:
            return
        frame, handed_at = self._pending
        self._pending = None
        self.send.add((now - handed_at) * 1000.0)
        self.fps.tick(now)
        self.stats.frames_out.tick(now)
        if frame.pose_seq != self._last_pose_seq and not frame.repeat:
            self._last_pose_seq = frame.pose_seq
            # (a picture rendered before this peer joined would count the wait for the peer)
            if frame.live and frame.capture_time is not None and frame.rendered_at >= self._created:
                latency_ms = (now - frame.capture_time) * 1000.0
                self.latency.add(latency_ms)
                self.stats.latency.add(latency_ms)

    def _peer_wants_keyframe(self) -> bool:
        if self.sender is not None and getattr(self.sender, _SENDER_KEYFRAME_FLAG, False):
            setattr(self.sender, _SENDER_KEYFRAME_FLAG, False)
            return True
        return False

    async def recv(self) -> av.Packet:
        """The next encoded picture of the view's camera (catching up in order after a gap)."""
        if self.readyState != "live":
            raise MediaStreamError
        self._sent(time.monotonic())
        loop = asyncio.get_running_loop()
        while not self._queue:
            if self._peer_wants_keyframe() and self._encoder is not None:
                self._encoder.request_keyframe()  # the next picture, for every peer of the camera
                self._cursor = None  # and nothing for this one until then
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
            encoder = self._encoder_for(self.view, self._encoder)
            if encoder is not self._encoder:  # a new camera: its stream starts at a keyframe
                self._encoder, self._cursor = encoder, None
            if frame.pose_seq != self._last_pose_seq and not frame.repeat:
                self.stats.times["wait_send"].add((time.monotonic() - frame.rendered_at) * 1000.0)
            self._queue.extend(await loop.run_in_executor(None, encoder.take, frame, self._cursor))
        picture = self._queue.popleft()
        self._cursor = picture.index
        self._pending = (picture.frame, time.monotonic())
        return picture.packet()

    def peer_stats(self) -> dict[str, object]:
        return {
            "fps": self.fps.per_second(),
            "latency_ms": self.latency.summary(),
            "send_ms": self.send.summary(),
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
