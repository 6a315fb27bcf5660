"""One signalling session: a websocket, at most one peer connection, one role on one stage.

The websocket is the session's lifeline: when it closes (or the peer connection fails) the session
is freed (peer connection closed, view removed, stage released). Every refused message is
answered with an ``error`` message and the session ends; the server keeps serving the others.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription, sdp
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from ..errors import SignallingError
from . import protocol
from .camera_encoder import H264, available_codecs
from .ice import browser_ice_servers
from .pose_source import TrackingPoseSource
from .protocol import Bye, Join, Offer, Orbit, Ping, StatsRequest
from .tasks import background
from .tracks import AvatarTrack, drain

if TYPE_CHECKING:
    from .server import AvatarServer, StageEntry

logger = logging.getLogger(__name__)

STATS_INTERVAL_S = 1.0
#: Stats asked for on the data channel are sent at most this often (seconds); a request within it
#: is answered at its end. A snapshot sorts every timing window: a flood must not eat the loop.
STATS_MIN_GAP_S = 0.2
#: A client that has not sent its offer this long after connecting is refused (``timeout``): a
#: joined stage holds threads, and the stage limit would let a few idle sockets lock everyone out.
#: Generous: the web page asks for the camera between ``joined`` and its offer, and a person may
#: take a while to answer the browser's permission prompt.
OFFER_TIMEOUT_S = 120.0
#: A client sends ``join`` as soon as its socket opens; one that has not after this long is refused
#: (``timeout``): idle sockets must not hold the server's connections.
JOIN_TIMEOUT_S = 10.0
#: A client that has had its answer this long without a media connection is refused (``timeout``):
#: it never started ICE, or ICE found no path (a firewall, no TURN server). aiortc's own checks
#: would hold the session about a minute; browsers give up after about 30 s, the web page after 20.
CONNECT_TIMEOUT_S = 30.0
#: A performer without the right key waits this long for its refusal (key guessing goes slowly).
FORBIDDEN_DELAY_S = 1.0
#: Close codes: policy violation (refused message), message too big, server error.
CLOSE_REFUSED, CLOSE_TOO_BIG, CLOSE_ERROR = 1008, 1009, 1011

_session_ids = itertools.count(1)


class Session:
    """The server side of one client (performer or viewer)."""

    def __init__(self, server: AvatarServer, ws: ServerConnection) -> None:
        self.server, self.ws = server, ws
        self.id = f"s{next(_session_ids)}"
        self.role: str | None = None
        self.entry: StageEntry | None = None
        self.pc: RTCPeerConnection | None = None
        self.track: AvatarTrack | None = None
        self.channel: Any = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False  # no more messages are handled
        self._connected = False  # the peer connection has reached "connected" at least once
        self._freed = False  # close() has run (or is running)
        self._done = asyncio.Event()  # close() has finished
        self.opened = time.monotonic()
        self._stats_sent_at = -1e9  # when stats last answered a request
        self._stats_due = False  # a request waits for STATS_MIN_GAP_S to pass

    # -- message loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the websocket until it closes or a message is refused; always frees the session."""
        code, reason = 1000, ""
        self._spawn(self._expect("join", JOIN_TIMEOUT_S, lambda: self.role is not None))
        self._spawn(self._expect("offer", OFFER_TIMEOUT_S, lambda: self.pc is not None))
        try:
            async for data in self.ws:
                await self._dispatch(protocol.parse_client_message(data))
                if self._closed:  # "bye", or the session was closed meanwhile
                    break
        except SignallingError as exc:
            logger.info("session %s: refused: %s (%s)", self.id, exc, exc.code)
            code = CLOSE_TOO_BIG if exc.code == "too_large" else CLOSE_REFUSED
            reason = exc.code
            await self._send_quietly(protocol.error_message(exc.code, str(exc)))
        except ConnectionClosed:
            pass
        except Exception as exc:
            logger.exception("session %s: unexpected error", self.id)
            code, reason = CLOSE_ERROR, "internal"
            await self._send_quietly(protocol.error_message("internal", f"server error: {exc}"))
        finally:
            await self.close(code, reason)

    async def _dispatch(self, msg: protocol.ClientMessage) -> None:
        if isinstance(msg, Join):
            await self._join(msg)
        elif isinstance(msg, Offer):
            await self._offer(msg)
        elif isinstance(msg, Ping):
            await self.ws.send(protocol.message("pong"))
        elif isinstance(msg, Bye):
            self._closed = True

    async def _join(self, msg: Join) -> None:
        if self.entry is not None:
            raise SignallingError("bad_state", "already joined a stage; one 'join' per session")
        key = self.server.config.performer_key
        key_holder = msg.role == "performer" and key is not None and _same_key(msg.key, key)
        if msg.role == "performer" and key is not None and not key_holder:
            await asyncio.sleep(FORBIDDEN_DELAY_S)
            raise SignallingError(
                "forbidden",
                "this server lets only holders of its performer key perform: open the performer URL that "
                "'streamer serve' printed (it ends in ?key=...); viewers need no key",
            )
        self.role = msg.role
        entry = await self.server.join(self, msg.stage, msg.role, key_holder)
        if self._freed:  # replaced or closed while joining: close() could not leave the stage for us
            await self.server.leave(self, entry)
            return
        self.entry = entry
        stage = self.entry.stage
        await self.ws.send(
            protocol.message(
                "joined",
                session=self.id,
                stage=stage.name,
                role=msg.role,
                source=stage.source.kind,
                ice_servers=browser_ice_servers(self.server.config.ice_servers),
                size=stage.painter.size,
                fps=stage.fps,
                background=list(stage.painter.background),
            )
        )

    async def _offer(self, msg: Offer) -> None:
        if self.entry is None:
            raise SignallingError("bad_state", "send 'join' before 'offer'")
        if self.pc is not None:
            raise SignallingError("bad_state", "one 'offer' per session; reconnect to renegotiate")
        stage = self.entry.stage
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self.server.ice_servers()))
        self.pc = pc
        feed = None
        if self.role == "performer" and isinstance(stage.source, TrackingPoseSource):
            source, entry = stage.source, self.entry

            def feed(frame: Any, received_at: float) -> None:
                # A replaced performer's webcam runs on until its session closes: only the stage's
                # performer may feed the tracker, or two people would alternate in one avatar.
                if entry.performer is self:
                    source.feed(frame, received_at)

        @pc.on("track")
        def on_track(track: Any) -> None:
            # Drain every incoming track (aiortc queues decoded frames without bound); only the
            # performer's video feeds tracking.
            self._spawn(drain(track, feed if track.kind == "video" else None))

        @pc.on("datachannel")
        def on_datachannel(channel: Any) -> None:
            self.channel = channel
            channel.on("message", self._on_control)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            logger.info("session %s: connection %s", self.id, pc.connectionState)
            self._connected |= pc.connectionState == "connected"
            if pc.connectionState in ("failed", "closed") and not self._closed:
                self._spawn(self.close(CLOSE_ERROR, f"connection {pc.connectionState}"))

        # The avatar goes out as a shared stream (VP8 or H.264): the video section may use only those,
        # in the offer's order. Only a performer's video comes in: a viewer's answer is sendonly, so
        # that no viewer can make the server receive and decode a stream it has no use for.
        video = pc.addTransceiver("video", direction="sendrecv" if self.role == "performer" else "sendonly")
        video.setCodecPreferences(_codec_preferences(msg.sdp))
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=msg.sdp, type="offer"))
        except Exception as exc:  # aiortc's SDP parser raises many kinds of errors on bad input
            if self._freed:  # closed meanwhile: the peer connection went with it
                return
            if video.mid is not None and "video description" in str(exc):
                raise SignallingError("bad_sdp", _no_common_codec()) from None
            # (an assert in aiortc's parser carries no message)
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else "aiortc's SDP parser rejected it"
            raise SignallingError("bad_sdp", f"invalid SDP offer: {detail}"[:500]) from None
        if self._freed:  # replaced or closed meanwhile (resolving the offer's candidates takes time)
            return
        if video.mid is None:
            raise SignallingError("bad_sdp", "the offer has no video section; offer to receive video")
        self.track = AvatarTrack(
            stage.add_view(), stage.stats, stage.encoder_for, stage.set_bitrate, on_failure=self._track_failed
        )
        self.track.attach(video.sender)
        video.sender.replaceTrack(self.track)
        try:
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception:
            if self._freed:  # closed meanwhile (close() removed the view: self.track was set)
                return
            raise
        if self._freed:
            return
        self.track.view.codec = _answer_codec(pc.localDescription.sdp, video.mid)
        await self.ws.send(protocol.message("answer", sdp=pc.localDescription.sdp))
        self._spawn(self._push_stats())
        self._spawn(self._expect_connection())

    async def _expect(self, what: str, seconds: float, came: Callable[[], bool]) -> None:
        """Refuse the session (``timeout``) unless ``came()`` is true ``seconds`` after connecting."""
        await asyncio.sleep(seconds)
        if not came() and not self._closed:
            logger.info("session %s: refused: no %s within %g s", self.id, what, seconds)
            await self._refuse(
                "timeout", f"no {what} within {seconds:g} s of connecting; reconnect to try again"
            )

    def spawn_close(self, code: str, message: str, close_code: int = CLOSE_REFUSED) -> None:
        """Refuse the session from outside its own tasks (the server making room, a failed track)."""
        if not self._closed:
            self._spawn(self._refuse(code, message, close_code))

    async def _refuse(self, code: str, message: str, close_code: int = CLOSE_REFUSED) -> None:
        await self._send_quietly(protocol.error_message(code, message))
        await self.close(close_code, code)

    def _track_failed(self, exc: BaseException) -> None:
        self.spawn_close("internal", f"server error: the avatar video failed ({exc}); reconnect", CLOSE_ERROR)

    async def _expect_connection(self) -> None:
        await asyncio.sleep(CONNECT_TIMEOUT_S)
        pc = self.pc
        # (the state is read too: "connected" may have been reached with its event not yet handled)
        if not self._connected and not self._closed and pc is not None and pc.connectionState != "connected":
            logger.info("session %s: refused: no media connection within %g s", self.id, CONNECT_TIMEOUT_S)
            message = (
                f"no media connection within {CONNECT_TIMEOUT_S:g} s of the answer (ICE found no path "
                "between you and the server: a firewall? try a TURN server); reconnect to try again"
            )
            await self._refuse("timeout", message)

    # -- data channel ------------------------------------------------------------------------------

    def _on_control(self, data: str | bytes) -> None:
        # Runs inside aiortc's receive loop: an exception escaping here would end the peer connection.
        try:
            msg = protocol.parse_control_message(data)
            if isinstance(msg, Orbit) and self.entry is not None and self.track is not None:
                self.entry.stage.set_orbit(self.track.view, msg)
            elif isinstance(msg, StatsRequest):
                self._stats_requested()
        except SignallingError as exc:
            self._send_control(protocol.error_message(exc.code, str(exc)))
        except Exception as exc:
            logger.exception("session %s: data channel message failed", self.id)
            self._send_control(protocol.error_message("internal", f"server error: {exc}"))

    def _stats_requested(self) -> None:
        if self._stats_due:  # an answer is on its way: this request shares it
            return
        wait = self._stats_sent_at + STATS_MIN_GAP_S - time.monotonic()
        if wait <= 0:
            self._answer_stats()
        else:  # later requests within the gap share this answer
            # (A busy loop can run the timer late: a request that came first then found the gap over
            # and was answered, and the timer answered again a few milliseconds later.)
            self._stats_due = True
            asyncio.get_running_loop().call_later(wait, self._answer_stats)

    def _answer_stats(self) -> None:
        self._stats_due = False
        self._stats_sent_at = time.monotonic()
        self._send_control(self._stats_message())

    def _send_control(self, text: str) -> None:
        channel = self.channel
        if channel is not None and channel.readyState == "open":
            try:
                channel.send(text)
            except Exception:  # the channel closed under us: the session ends by itself
                logger.debug("session %s: data channel send failed", self.id)

    def _stats_message(self) -> str:
        entry = self.entry
        stage = entry.snapshot() if entry is not None else None
        peer = self.track.peer_stats() if self.track is not None else None
        return json.dumps({"type": "stats", "role": self.role, "stage": stage, "peer": peer})

    async def _push_stats(self) -> None:
        while not self._closed:
            await asyncio.sleep(STATS_INTERVAL_S)
            self._send_control(self._stats_message())

    # -- clean-up ---------------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = background(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_quietly(self, text: str) -> None:
        """Send if the websocket still can (it may be gone: that is why we are closing)."""
        try:
            await self.ws.send(text)
        except (ConnectionClosed, OSError, RuntimeError):
            logger.debug("session %s: could not send %s", self.id, text[:80])

    async def replace(self) -> None:
        """Another performer took this stage: say so and end the session."""
        await self._send_quietly(protocol.error_message("replaced", "another performer joined this stage"))
        await self.close(CLOSE_REFUSED, "replaced")

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Free everything the session holds (idempotent, never raises)."""
        if self._freed:
            if asyncio.current_task() not in self._tasks:  # a clean-up task must not wait for itself
                await self._done.wait()
            return
        self._freed = self._closed = True
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        try:
            if self.entry is not None and self.track is not None:
                self.entry.stage.remove_view(self.track.view)
            if self.pc is not None:
                pc, self.pc = self.pc, None
                await pc.close()
        except Exception:
            logger.exception("session %s: closing the peer connection failed", self.id)
        if self.entry is not None:
            entry, self.entry = self.entry, None
            await self.server.leave(self, entry)
        try:
            await self.ws.close(code, reason)
        except (ConnectionClosed, OSError, RuntimeError):
            logger.debug("session %s: websocket already gone", self.id)
        self._done.set()


def _no_common_codec() -> str:
    """Why an offer's video section was refused: no codec in common."""
    h264 = ", or H.264 constrained baseline with packetization-mode=1" if H264 in available_codecs() else ""
    return f"the offer's video section has no codec the avatar can be sent in: VP8{h264}"


def _codec_preferences(offer: str) -> list[Any]:
    """aiortc's codecs that this server encodes (VP8, H.264 when PyAV has libx264; with RTX), in the
    order the offer's first video section lists them.

    Preferences keep the answer to codecs we encode (aiortc would also take one it adds later), and
    aiortc orders an answer by them: sorted as the offer lists its codecs, the client's first choice
    wins (a browser's ``setCodecPreferences``, the pages' ``?codec=``). VP8 goes first when the offer
    cannot be read (aiortc then refuses it with its own words).
    """
    order: list[str] = []
    try:
        media = next(m for m in sdp.SessionDescription.parse(offer).media if m.kind == "video")
        order = [c.mimeType.lower() for c in media.rtp.codecs]
    except Exception as exc:  # noqa: BLE001 (aiortc's parser raises many kinds; setRemoteDescription reports it)
        logger.debug("offer's codec order unreadable (%s); VP8 first", type(exc).__name__)
    wanted = (*available_codecs(), "video/rtx")
    codecs = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType in wanted]
    rank: dict[str, int] = {}
    for i, mime in enumerate(order):
        rank.setdefault(mime, i)  # a codec's first mention counts
    return sorted(codecs, key=lambda c: rank.get(c.mimeType.lower(), len(order)))


def _answer_codec(answer: str, mid: str | None) -> str:
    """The video codec an answer settled on: the first of its section ``mid`` (aiortc's sender uses it)."""
    for media in sdp.SessionDescription.parse(answer).media:
        if media.kind == "video" and media.rtp.muxId == mid:
            first = next((c.mimeType for c in media.rtp.codecs if c.mimeType != "video/rtx"), None)
            if first is None or first not in available_codecs():
                raise SignallingError(
                    "internal", f"the answer chose {first}, which this server does not encode"
                )
            return first
    raise SignallingError("internal", "the answer has no video section")


def _same_key(given: str | None, key: str) -> bool:
    """Compare a performer key in constant time (no timing hint of how much of it was right)."""
    return given is not None and hmac.compare_digest(given.encode(), key.encode())
