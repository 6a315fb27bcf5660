"""aiortc media tracks: the avatar video sent to each peer, and draining a peer's webcam track.

:class:`AvatarTrack` is what aiortc's ``RTCRtpSender`` pulls from. It hands over pictures already
encoded by the :class:`~streamer.stream.camera_encoder.CameraEncoder` of its stream (one encode
per camera, codec and bit rate, shared by the peers on it); the sender loop is ``recv() ->
packetize -> send RTP packets -> recv() ...``, so the next call marks the previous picture as
*sent*: server-added latency is measured up to that moment. The track also reads its peer's
bandwidth estimates (RTCP REMB) and loss reports (RTCP receiver reports) and moves the peer to the
stream of its camera at the bit rate its link carries
(:class:`~streamer.stream.bitrate.PeerBitrate`).
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
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, RtcpRrPacket, RtcpSrPacket, unpack_remb_fci

from .bitrate import PeerBitrate
from .camera_encoder import CameraEncoder, EncodedPicture
from .latest import BusClosed
from .stage import AvatarFrame, View
from .stats import PipelineStats, Rate, Rolling

logger = logging.getLogger(__name__)

#: aiortc's RTCRtpSender sets this (private) flag when the peer asks for a keyframe (RTCP PLI/FIR);
#: it only acts on it when it encodes itself, so the track reads and clears it.
_SENDER_KEYFRAME_FLAG = "_RTCRtpSender__force_keyframe"
#: Pictures in a row that may fail to encode before the track gives up (about a second at 30 fps):
#: an exception escaping ``recv`` would end aiortc's sender loop and freeze the peer's video for good.
MAX_FAILED_PICTURES = 30


class AvatarTrack(MediaStreamTrack):
    """The avatar video of one view, for one peer connection, as encoded pictures.

    Args:
        view: the view whose pictures to send.
        stats: the stage's figures (latency, frames out, skipped frames).
        encoder_for: the stage's :meth:`~streamer.stream.stage.Stage.encoder_for` (the encoder of
            the view's stream, given the one the track used before).
        set_bitrate: the stage's :meth:`~streamer.stream.stage.Stage.set_bitrate` (called when the
            peer's link calls for another rate).
        on_failure: called with the error when pictures keep failing to encode
            (:data:`MAX_FAILED_PICTURES` in a row) and the track ends; the session closes then, so
            that the client reconnects instead of watching a frozen picture. A single failure is
            logged and the track starts again at the next keyframe.

    Attributes:
        sender: the ``RTCRtpSender`` sending this track (set by :meth:`attach`; used to notice the
            peer's keyframe requests and bandwidth estimates).
        fps, latency, send: this peer's own rate, latency and time to packetize and send a picture.
        link: this peer's bit rate (adapted to its estimates) and resend budget.
    """

    kind = "video"

    def __init__(
        self,
        view: View,
        stats: PipelineStats,
        encoder_for: Callable[[View, CameraEncoder | None], CameraEncoder],
        set_bitrate: Callable[[View, int], None],
        on_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        super().__init__()
        self.view, self.stats, self._encoder_for = view, stats, encoder_for
        self._set_bitrate, self._on_failure = set_bitrate, on_failure
        self._failed = 0  # pictures in a row that failed to encode
        self.sender: Any = None
        self.fps = Rate()
        self.latency = Rolling()
        self.send = Rolling()
        self.link = PeerBitrate()
        self._created = time.monotonic()
        self._last_seq = 0
        self._skipped = 0
        self._last_pose_seq = -1
        self._encoder: CameraEncoder | None = None
        self._cursor: int | None = None  # index of the last picture of the encoder's stream sent
        self._queue: deque[EncodedPicture] = deque()  # pictures to send next, in order
        self._pending: tuple[AvatarFrame, float] | None = None  # (frame handed out, when)

    def attach(self, sender: Any) -> None:
        """Send through ``sender`` (aiortc's ``RTCRtpSender`` of the peer's video section).

        aiortc hands a REMB to the sender's own encoder only, and reads receiver reports only for
        its stats; this track encodes elsewhere, so it listens to the sender's RTCP as well
        (aiortc's transport calls ``_handle_rtcp_packet`` on the sender for every RTCP packet about
        its stream). The sender's resends go through the peer's budget
        (:meth:`~streamer.stream.bitrate.PeerBitrate.may_resend`).
        """
        self.sender = sender
        handle, resend = sender._handle_rtcp_packet, sender._retransmit

        async def handle_rtcp(packet: Any) -> None:
            if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
                self._on_remb(packet.fci)
            elif isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
                self._on_reports(packet.reports)
            await handle(packet)

        async def budgeted_resend(seq: int) -> None:
            if self.link.may_resend():
                await resend(seq)

        sender._handle_rtcp_packet = handle_rtcp
        sender._retransmit = budgeted_resend

    def _on_remb(self, fci: bytes) -> None:
        try:
            bps, ssrcs = unpack_remb_fci(fci)
        except ValueError:  # not a REMB (another application-layer feedback)
            return
        if self.sender is None or self.sender._ssrc not in ssrcs:
            return
        self.link.estimate(bps)
        self._follow_link()

    def _on_reports(self, reports: list[Any]) -> None:
        if self.sender is None:
            return
        for report in reports:
            if report.ssrc == self.sender._ssrc:
                self.link.report(report.highest_sequence, report.packets_lost)
                self._follow_link()

    def _follow_link(self) -> None:
        """Move the view to the stream at the peer's rate, if that changed."""
        if self.link.bitrate != self.view.bitrate:
            logger.info(
                "view %d: %d kbit/s (its peer estimates %s kbit/s, loses %s)",
                self.view.id,
                self.link.bitrate // 1000,
                "?" if self.link.estimate_bps is None else self.link.estimate_bps // 1000,
                "?" if self.link.loss is None else f"{self.link.loss:.0%}",
            )
            self._set_bitrate(self.view, self.link.bitrate)

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
            try:
                encoder = self._encoder_for(self.view, self._encoder)
                if encoder is not self._encoder:  # a new camera: its stream starts at a keyframe
                    self._encoder, self._cursor = encoder, None
                if frame.pose_seq != self._last_pose_seq and not frame.repeat:
                    self.stats.times["wait_send"].add((time.monotonic() - frame.rendered_at) * 1000.0)
                self._queue.extend(await loop.run_in_executor(None, encoder.take, frame, self._cursor))
            except Exception as exc:
                self._picture_failed(exc)
                continue
            self._failed = 0
        picture = self._queue.popleft()
        self._cursor = picture.index
        self.link.sent(len(picture.data))
        self._pending = (picture.frame, time.monotonic())
        return picture.packet()

    def _picture_failed(self, exc: Exception) -> None:
        """Skip the picture and start again at a keyframe; end the track if it keeps failing."""
        self._failed += 1
        if self._failed == 1:
            logger.exception("view %d: a picture failed to encode; skipped", self.view.id)
        self._cursor = None
        if self._encoder is not None:
            self._encoder.request_keyframe()
        if self._failed >= MAX_FAILED_PICTURES:
            logger.error(
                "view %d: %d pictures in a row failed to encode; the track ends", self.view.id, self._failed
            )
            self.stop()
            if self._on_failure is not None:
                self._on_failure(exc)
            raise MediaStreamError from exc

    def peer_stats(self) -> dict[str, object]:
        return {
            "fps": self.fps.per_second(),
            "latency_ms": self.latency.summary(),
            "send_ms": self.send.summary(),
            **self.link.summary(),
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
