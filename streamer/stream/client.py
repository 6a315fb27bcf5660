"""A Python client of the avatar server (aiortc + websockets): ``bench stream`` and the tests use it.

:class:`VideoFileTrack` plays a video file as a webcam (real-time pacing, optional looping and
downscaling); :class:`StreamClient` joins a stage as performer or viewer, negotiates with the
server and drains the avatar video it gets back (:class:`ReceivedFrames`).

Example:
    >>> client = StreamClient("http://127.0.0.1:8080/", "performer", source=VideoFileTrack("clip.mp4"))
    >>> await client.connect()
    >>> await asyncio.sleep(5); client.received.count
    >>> await client.close()
"""

from __future__ import annotations

import asyncio
import json
import queue
import ssl as ssl_module
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import av
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
    sdp,
)
from aiortc.mediastreams import MediaStreamError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from ..errors import SourceError, StreamError
from ..tracking.sources import VideoFileSource
from .camera_encoder import VIDEO_CLOCK_RATE, VIDEO_TIME_BASE
from .tracks import drain

PREFETCH_FRAMES = 8


class VideoFileTrack(MediaStreamTrack):
    """A video file sent as if it were a webcam.

    Frames are decoded by a background thread (a few frames ahead) and sent at the file's frame
    rate by the wall clock, ``pts`` on the 90 kHz clock.

    Args:
        path: the video file.
        max_side: downscale so that the longer side is at most this many pixels (even sizes).
        start_s, end_s: the part of the file to play (seconds; None: to the end).
        loop: start again at ``start_s`` after ``end_s`` (else the track ends).
        hold: send the first frame over and over until :meth:`play` (e.g. until tracking runs).

    Attributes:
        source_time: the clip time (seconds, from the file's start) of the frame sent last.
        frames_sent: frames handed to the encoder.
    """

    kind = "video"

    def __init__(
        self,
        path: str | Path,
        max_side: int | None = 640,
        start_s: float = 0.0,
        end_s: float | None = None,
        loop: bool = True,
        hold: bool = False,
    ) -> None:
        super().__init__()
        probe = VideoFileSource(path)  # fails early (SourceError) on a missing or broken file
        self.fps, width, height = probe.fps, probe.width, probe.height
        probe.close()
        scale = min(1.0, max_side / max(width, height)) if max_side else 1.0
        self.width, self.height = max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)
        self.path, self.start_s, self.end_s, self.loop = Path(path), start_s, end_s, loop
        self.source_time = start_s
        self.frames_sent = 0
        self._queue: queue.Queue[tuple[float, av.VideoFrame] | None] = queue.Queue(maxsize=PREFETCH_FRAMES)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._decode, name="video-file-track", daemon=True)
        self._thread.start()
        self._t0: float | None = None
        self._held: tuple[float, av.VideoFrame] | None = None
        self._playing = threading.Event()
        if not hold:
            self._playing.set()
        self.error: str | None = None

    def play(self) -> None:
        """Start playing after ``hold``."""
        self._playing.set()

    def _put(self, item: tuple[float, av.VideoFrame] | None) -> bool:
        """Queue an item, waiting while the queue is full; False once stopped."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _decode(self) -> None:
        try:
            while not self._stop.is_set():
                sent_any = False
                with VideoFileSource(self.path) as source:
                    for t_ms, rgb in source:
                        t = t_ms / 1000.0
                        if t < self.start_s:
                            continue
                        if self.end_s is not None and t > self.end_s:
                            break
                        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                            width=self.width, height=self.height, format="yuv420p"
                        )
                        if not self._put((t, frame)):
                            return
                        sent_any = True
                if not self.loop or not sent_any:
                    break
        except SourceError as exc:
            self.error = str(exc)
        finally:
            self._put(None)  # the end of the clip (dropped when stopped: recv() ends by itself then)

    def _next(self) -> tuple[float, av.VideoFrame] | None:
        """The next decoded frame (blocking, in an executor thread); None once stopped or at the end."""
        while not self._stop.is_set():
            try:
                return self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
        return None

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if not self._playing.is_set():
            if self._held is None:
                self._held = await asyncio.get_running_loop().run_in_executor(None, self._next)
            item = self._held
            if item is not None:  # a copy: the encoder owns each frame it is given
                item = (item[0], av.VideoFrame.from_ndarray(item[1].to_ndarray(), format="yuv420p"))
        elif self._held is not None:
            item, self._held = self._held, None
        else:
            item = await asyncio.get_running_loop().run_in_executor(None, self._next)
        if item is None:
            self.stop()
            raise MediaStreamError
        source_time, frame = item
        if self._t0 is None:
            self._t0 = time.monotonic()
        due = self._t0 + self.frames_sent / self.fps
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        frame.pts = int(self.frames_sent * VIDEO_CLOCK_RATE / self.fps)
        frame.time_base = VIDEO_TIME_BASE
        self.frames_sent += 1
        self.source_time = source_time
        return frame

    def stop(self) -> None:
        self._stop.set()
        super().stop()


@dataclass
class Received:
    """One avatar frame as the client got it."""

    received_at: float  # time.monotonic()
    rgb: np.ndarray  # [H, W, 3] uint8 (downscaled by ``keep_scale``)
    source_time: float | None  # the performer's clip time when it arrived (None for viewers)


class ReceivedFrames:
    """Counts decoded avatar frames and keeps every ``keep_every``-th one (small RGB copies)."""

    def __init__(self, keep_every: int = 0, keep_scale: int = 4, keep_max: int = 2000) -> None:
        self.count = 0
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.size: tuple[int, int] | None = None
        self.keep_every, self.keep_scale = keep_every, keep_scale
        self.kept: deque[Received] = deque(maxlen=keep_max)
        self.clock: VideoFileTrack | None = None

    def on_frame(self, frame: Any, received_at: float) -> None:
        self.count += 1
        self.first_at = received_at if self.first_at is None else self.first_at
        self.last_at = received_at
        self.size = (int(frame.width), int(frame.height))
        if self.keep_every and self.count % self.keep_every == 0:
            rgb = frame.to_ndarray(format="rgb24")[:: self.keep_scale, :: self.keep_scale].copy()
            clock = self.clock.source_time if self.clock is not None else None
            self.kept.append(Received(received_at, rgb, clock))


def _known_codecs(codecs: tuple[str, ...] | str) -> tuple[str, ...]:
    """``codecs`` spelled as aiortc spells them (``video/h264`` -> ``video/H264``); ValueError if
    one is not aiortc's or none is given. A single name may come as a plain string."""
    codecs = (codecs,) if isinstance(codecs, str) else tuple(codecs)
    known = {c.mimeType.lower(): c.mimeType for c in RTCRtpSender.getCapabilities("video").codecs}
    unknown = [c for c in codecs if c.lower() not in known or c.lower() == "video/rtx"]
    if unknown or not codecs:
        choices = sorted(set(known.values()) - {"video/rtx"})
        raise ValueError(f"video codecs must be some of {choices}, got {list(codecs)}")
    return tuple(known[c.lower()] for c in codecs)


def _source_codecs(source: MediaStreamTrack | None) -> tuple[str, ...] | None:
    """A track of pre-encoded packets can be sent only in its own codec."""
    mime = getattr(source, "codec_mime_type", None)
    return None if mime is None else (mime,)


def ws_url(page_url: str) -> str:
    """``http://host:port/...`` -> ``ws://host:port/ws`` (https -> wss)."""
    parts = urlsplit(page_url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None:
        raise StreamError(f"not an http(s) or ws(s) URL: {page_url!r}")
    return urlunsplit((scheme, parts.netloc, "/ws", "", ""))


def stats_url(page_url: str) -> str:
    """``http://host:port/...`` (any page, or its ws URL) -> ``http://host:port/stats`` (https kept)."""
    ws = urlsplit(ws_url(page_url))
    return urlunsplit(({"ws": "http", "wss": "https"}[ws.scheme], ws.netloc, "/stats", "", ""))


class StreamClient:
    """One performer or viewer connection to the avatar server.

    Args:
        url: the server's page URL (``http://host:port/``).
        role: ``performer`` or ``viewer``.
        stage: the stage name.
        source: the webcam track a performer sends (None: receive only). A track of pre-encoded
            packets names its codec in ``codec_mime_type``; the offer then proposes only that one.
        received: where the avatar frames go (default: count only).
        codecs: the video codecs to offer, in order (MIME types, e.g. ``("video/H264",)``; None:
            aiortc's, or the source's ``codec_mime_type``). One list serves both directions.
        key: the server's performer key (``streamer serve --performer-key``), sent on joining.
        ssl: the TLS context for a ``https`` server (None: the system's trusted certificates).
    """

    def __init__(
        self,
        url: str,
        role: str,
        stage: str = "main",
        source: MediaStreamTrack | None = None,
        received: ReceivedFrames | None = None,
        codecs: tuple[str, ...] | None = None,
        key: str | None = None,
        ssl: ssl_module.SSLContext | None = None,
    ) -> None:
        self.url, self.role, self.stage, self.source = ws_url(url), role, stage, source
        self.ssl = ssl
        self.codecs = _known_codecs(codecs) if codecs is not None else _source_codecs(source)
        self.key = key
        self.received = received or ReceivedFrames()
        if isinstance(source, VideoFileTrack) and self.received.clock is None:
            self.received.clock = source
        self.ws: ClientConnection | None = None
        self.pc: RTCPeerConnection | None = None
        self.channel: Any = None
        self.joined: dict[str, Any] = {}
        self.stats: dict[str, Any] | None = None
        self.errors: list[dict[str, Any]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._track_ready = asyncio.Event()

    async def _expect(self, kind: str, timeout: float) -> dict[str, Any]:
        """The next message of type ``kind`` (an ``error`` message raises StreamError)."""
        ws = self.ws
        assert ws is not None

        async def wait() -> dict[str, Any]:
            while True:
                msg = json.loads(await ws.recv())
                if msg.get("type") == "error":
                    self.errors.append(msg)
                    raise StreamError(f"server refused: {msg.get('code')}: {msg.get('message')}")
                if msg.get("type") == kind:
                    return msg

        return await asyncio.wait_for(wait(), timeout)

    async def connect(self, timeout: float = 60.0) -> None:
        """Join the stage and negotiate the peer connection (offline: no ICE servers).

        Raises:
            StreamError: the server refused (its error message is in :attr:`errors`).
            TimeoutError: no answer within ``timeout`` seconds.
        """
        tls = {"ssl": self.ssl} if self.ssl is not None and self.url.startswith("wss:") else {}
        self.ws = await connect(self.url, max_size=2**22, **tls)
        join = {"type": "join", "role": self.role, "stage": self.stage}
        if self.key:
            join["key"] = self.key
        await self.ws.send(json.dumps(join))
        self.joined = await self._expect("joined", timeout)
        pc = self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video":
                self._tasks.append(asyncio.ensure_future(drain(track, self.received.on_frame)))
                self._track_ready.set()

        if self.source is not None:
            sender = pc.addTrack(self.source)
            transceiver = next(t for t in pc.getTransceivers() if t.sender is sender)
        else:
            transceiver = pc.addTransceiver("video", direction="recvonly")
        if self.codecs is not None:  # those codecs only, in that order
            wanted = [*self.codecs, "video/rtx"]
            codecs = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType in wanted]
            transceiver.setCodecPreferences(sorted(codecs, key=lambda c: wanted.index(c.mimeType)))
        self.channel = pc.createDataChannel("control")
        self.channel.on("message", self._on_control)
        await pc.setLocalDescription(await pc.createOffer())
        await self.ws.send(json.dumps({"type": "offer", "sdp": pc.localDescription.sdp}))
        answer = await self._expect("answer", timeout)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        self._tasks.append(asyncio.ensure_future(self._read_ws()))

    @property
    def video_codec(self) -> str | None:
        """The avatar video's codec (MIME type) as the answer settled it; None before the answer."""
        if self.pc is None or self.pc.remoteDescription is None:
            return None
        for media in sdp.SessionDescription.parse(self.pc.remoteDescription.sdp).media:
            if media.kind == "video":
                return next((c.mimeType for c in media.rtp.codecs if c.mimeType != "video/rtx"), None)
        return None

    async def _read_ws(self) -> None:
        assert self.ws is not None
        try:
            async for data in self.ws:
                msg = json.loads(data)
                if msg.get("type") == "error":
                    self.errors.append(msg)
        except (ConnectionClosed, ValueError):
            return

    def _on_control(self, data: str | bytes) -> None:
        try:
            msg = json.loads(data)
        except ValueError:
            return
        if msg.get("type") == "stats":
            self.stats = msg
        elif msg.get("type") == "error":
            self.errors.append(msg)

    def send_control(self, msg: dict[str, Any]) -> bool:
        """Send a data-channel message; False while the channel is not open."""
        if self.channel is None or self.channel.readyState != "open":
            return False
        self.channel.send(json.dumps(msg))
        return True

    async def fresh_stats(self, timeout: float = 10.0) -> dict[str, Any] | None:
        """Ask the server for a stats message now and wait for it (None if none came in ``timeout``)."""
        self.stats = None
        if not self.send_control({"type": "stats"}):
            return None
        deadline = time.monotonic() + timeout
        while self.stats is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.stats

    async def wait_frames(self, count: int, timeout: float) -> int:
        """Wait until ``count`` avatar frames arrived in total; returns the count reached."""
        deadline = time.monotonic() + timeout
        while self.received.count < count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.received.count

    async def close(self) -> None:
        """Leave: close the peer connection and the websocket (idempotent)."""
        for task in self._tasks:
            task.cancel()
        if self.pc is not None:
            pc, self.pc = self.pc, None
            await pc.close()
        if self.ws is not None:
            ws, self.ws = self.ws, None
            await ws.close()
