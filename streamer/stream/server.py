"""The avatar server: HTTP pages, websocket signalling and aiortc peer connections on one port.

Example:
    >>> server = AvatarServer(ServerConfig(port=0))
    >>> await server.start()      # loads the body model and the avatar, binds the port
    >>> server.url                # 'http://127.0.0.1:PORT/'
    >>> await server.close()

Stages are created when their first peer joins and stopped when their last peer leaves; each
has its own pose source (webcam tracking, or the ``--motion`` file) and render worker. The
body model and the avatar are loaded once and shared.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from aiortc import RTCIceServer
from websockets.asyncio.server import Server, ServerConnection, serve

from ..errors import InputError, SignallingError, StreamError
from ..render.base import check_background
from .http import WS_PATH, HttpRoutes, default_web_root
from .ice import parse_ice_server
from .painter import AvatarPainter
from .pose_source import MotionPoseSource, PoseSource, TrackingPoseSource
from .protocol import MAX_KEY_CHARS, MAX_MESSAGE_BYTES, error_message
from .session import Session
from .stage import Stage
from .stats import PipelineStats
from .tasks import background

if TYPE_CHECKING:
    from ..avatar import Avatar
    from ..body import BodyModel
    from ..tracking.motion import Motion

logger = logging.getLogger(__name__)

#: websockets' own limit: larger messages close the connection (1009) before we see them; up to it
#: we answer with an error message ourselves (see protocol.MAX_MESSAGE_BYTES).
WS_MAX_SIZE = 16 * MAX_MESSAGE_BYTES
#: How long closing a websocket waits for the client's side of the closing handshake (websockets'
#: default is 10 s): a client that stopped answering must not hold up the server's shutdown.
WS_CLOSE_TIMEOUT_S = 2.0
#: ``--motion demo``: the built-in demo motion (no file, no webcam).
DEMO_MOTION = "demo"


@dataclass
class ServerConfig:
    """What ``streamer serve`` was asked for.

    Attributes:
        host, port: where to listen (port 0: any free port; see :attr:`AvatarServer.port`).
        avatar: an avatar ``.ply``; None for the built-in demo avatar.
        motion: a motion file that drives every stage (looped) instead of a webcam, or ``demo`` for
            the built-in demo motion; None for webcam tracking.
        ice_servers: ``stun:``/``turn:`` URLs (``turn:USER:PASS@host:port`` with credentials); none
            by default (host candidates only: a LAN or this machine).
        size: avatar video width and height, pixels.
        fps: avatar video frame rate.
        backend: renderer, ``auto``, ``cpu`` or ``cuda``.
        background: the avatar video's background, RGB in [0, 1] (a flat green for a chroma key when
            the video is captured into a video call).
        mirror: selfie view for webcam stages (the performer's right hand moves the avatar's left).
        models: MediaPipe models for tracking.
        smplx_dir: real SMPL-X files; None for the built-in body model.
        web_root: the web client's folder; None for ``clients/web`` of this source tree.
        certfile, keyfile: serve HTTPS/WSS (browsers allow webcams on plain HTTP only for localhost).
        torch_threads: torch intra-op threads (1: the workers already use the cores; more threads
            contend badly with tracking and encoding on a small machine).
        render_threads: OpenMP threads per CPU render (0: one per core). 1 by default: with live
            tracking on a small machine a second render thread takes the core MediaPipe needs
            (2 cores, ``bench stream``: p50 latency 139-145 ms with 2 threads against 115-120 with 1).
        max_stages, max_sessions: beyond these, new stages / sessions are refused (``busy``): each
            webcam stage runs its own tracking worker. Sessions count once they join a stage
            (sockets that never join are closed: :data:`MAX_UNJOINED`, ``JOIN_TIMEOUT_S``).
        performer_key: when set, only a client that sends it may perform (the performer page takes
            it from ``?key=``); viewers need none. None: anybody may perform. Key holders also get
            past the limits (:data:`KEY_HOLDER_RESERVE` more sessions, and a stage beyond
            ``max_stages``), so that others filling the server cannot lock its performer out.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    avatar: str | None = None
    motion: str | None = None
    ice_servers: list[str] = field(default_factory=list)
    size: int = 512
    fps: float = 30.0
    backend: str = "auto"
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    mirror: bool = True
    models: str = "holistic"
    smplx_dir: str | None = None
    web_root: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    torch_threads: int = 1
    render_threads: int = 1
    max_stages: int = 8
    max_sessions: int = 64
    performer_key: str | None = field(default=None, repr=False)


#: What a PEM certificate and a PEM private key (PKCS#8, RSA or EC) begin with.
PEM_CERT, PEM_KEY = b"-----BEGIN CERTIFICATE-----", b"PRIVATE KEY-----"
PEM_MAX_BYTES = 1 << 20  # looked for in the first MiB


def tls_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """A server TLS context from a PEM certificate (chain) and its unencrypted private key.

    Raises:
        InputError: a file that is missing, a folder, unreadable or not PEM, an encrypted key, or a
            key that does not belong to the certificate; the message names the file and says which.
    """
    from ..fileio import check_input

    def head(flag: str, name: str) -> bytes:  # a PEM file is kilobytes: a video given by mistake is not read
        with check_input(flag, name).open("rb") as f:
            return f.read(PEM_MAX_BYTES)

    if PEM_CERT not in head("--cert", certfile):
        raise InputError(f"--cert {certfile}: not a PEM certificate (no {PEM_CERT.decode()} line)")
    if PEM_KEY not in head("--key", keyfile):
        raise InputError(f"--key {keyfile}: not a PEM private key (no BEGIN ... PRIVATE KEY line)")

    def no_password() -> str:
        raise InputError(f"--key {keyfile} is encrypted; give an unencrypted key")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(certfile, keyfile, password=no_password)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise InputError(
                f"--key {keyfile} does not belong to the certificate --cert {certfile}"
            ) from None
        why = exc.reason or "not a certificate and its key"
        files = f"--cert {certfile} / --key {keyfile}"
        raise InputError(f"{files}: cannot serve HTTPS with them ({why})") from None
    except OSError as exc:
        files = f"--cert {certfile} / --key {keyfile}"
        raise InputError(f"{files}: cannot read them: {exc.strerror or exc}") from None
    return context


#: Sessions kept for performers with the performer key beyond ``max_sessions`` (when there is a key).
KEY_HOLDER_RESERVE = 4
#: Connections that have not joined yet, at most: beyond this the oldest is closed to make room.
#: Only joined sessions count against ``max_sessions``, so idle sockets cannot lock clients out:
#: a real client joins as soon as its socket opens, and a squatter's sockets are the oldest.
MAX_UNJOINED = 64
#: Shutting down waits this long (seconds) for connections that have not finished their handshake.
SHUTDOWN_WAIT_S = 1.0
#: ``--host`` values that listen on every interface (the printed URLs then name this machine).
EVERY_INTERFACE = ("", "0.0.0.0", "::")


@dataclass(eq=False)
class StageEntry:
    """A running stage and the sessions on it."""

    stage: Stage
    sessions: set[Session] = field(default_factory=set)
    performer: Session | None = None

    @property
    def peer_count(self) -> int:
        return sum(1 for s in self.sessions if s.track is not None)

    def snapshot(self) -> dict[str, Any]:
        """The stage's figures (:meth:`Stage.snapshot`), whether a performer is on it, and its sessions:
        for ``/stats`` and the data-channel stats message alike (a viewer's page says when nobody performs)."""
        snap = self.stage.snapshot(peers=self.peer_count)
        snap["performer"] = self.performer is not None
        snap["sessions"] = len(self.sessions)
        return snap


class AvatarServer:
    """HTTP + websockets signalling + aiortc, serving stages of one avatar.

    Args:
        config: what to serve.
        avatar, body, motion: already loaded assets (tests); None loads them from ``config``.
    """

    def __init__(
        self,
        config: ServerConfig,
        avatar: Avatar | None = None,
        body: BodyModel | None = None,
        motion: Motion | None = None,
    ) -> None:
        if config.size < 16 or config.size > 4096 or config.size % 2:
            raise InputError(f"--size must be an even number in [16, 4096], got {config.size}")
        if not 1.0 <= config.fps <= 120.0:
            raise InputError(f"--fps must be in [1, 120], got {config.fps}")
        if not 0 <= config.render_threads <= 256:
            raise InputError(f"--render-threads must be in [0, 256], got {config.render_threads}")
        for url in config.ice_servers:
            parse_ice_server(url)
        if config.performer_key is not None and not 1 <= len(config.performer_key) <= MAX_KEY_CHARS:
            raise InputError(f"--performer-key must be 1-{MAX_KEY_CHARS} characters")
        try:
            self.background = check_background(config.background)
        except InputError as exc:
            raise InputError(f"--background: {exc}") from None
        self.config = config
        self.web_root = Path(config.web_root) if config.web_root else default_web_root()
        if not (self.web_root / "index.html").is_file():
            raise StreamError(f"the web client is missing: no index.html in {self.web_root}")
        if bool(config.certfile) != bool(config.keyfile):
            raise InputError("--cert and --key go together")
        self._tls = None
        if config.certfile and config.keyfile:
            self._tls = tls_context(config.certfile, config.keyfile)
        self._avatar, self._body, self._motion = avatar, body, motion
        self.routes = HttpRoutes(self.web_root, self.stats)
        self.stages: dict[str, StageEntry] = {}
        self.sessions: set[Session] = set()
        self._replacing: set[asyncio.Future[None]] = set()  # replaced performers' sessions closing
        self._lock = asyncio.Lock()
        self._server: Server | None = None
        self._started = time.monotonic()
        self.port = config.port
        self.backend = config.backend

    # -- start / stop -------------------------------------------------------------------------------

    def _load(self) -> None:
        """Load the body model, the avatar and the motion (blocking)."""
        from ..assets import load_avatar_or_demo, load_body, load_motion_or_demo
        from ..render import resolve_backend

        if self.config.torch_threads > 0:
            torch.set_num_threads(self.config.torch_threads)
        self.backend = resolve_backend(self.config.backend)
        device = "cuda" if self.backend == "cuda" else "cpu"
        if self._body is None:
            self._body = load_body(self.config.smplx_dir)
        self._body = self._body.to(device)
        if self._avatar is None:
            self._avatar = load_avatar_or_demo(self.config.avatar, self._body)
        self._avatar = self._avatar.to(device)
        if self._motion is None and self.config.motion:
            self._motion = load_motion_or_demo(
                None if self.config.motion == DEMO_MOTION else self.config.motion
            )

    async def start(self) -> None:
        """Load the assets and start listening.

        Raises:
            StreamError: the port cannot be bound.
        """
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._load)
        try:
            self._server = await serve(
                self._handle,
                self.config.host,
                self.config.port,
                process_request=self.routes.process_request,
                max_size=WS_MAX_SIZE,
                close_timeout=WS_CLOSE_TIMEOUT_S,
                ssl=self._tls,
            )
        except (OSError, UnicodeError) as exc:  # UnicodeError: a host name that cannot be encoded
            reason = (
                exc.strerror if isinstance(exc, OSError) and exc.strerror else f"not a valid address ({exc})"
            )
            raise StreamError(f"cannot listen on {self.config.host}:{self.config.port}: {reason}") from None
        self.port = self._server.sockets[0].getsockname()[1]
        self._started = time.monotonic()
        logger.info("serving on %s", self.url)

    @property
    def url(self) -> str:
        """The performer page's URL."""
        host = self.config.host
        host = "127.0.0.1" if host in ("", "0.0.0.0") else ("[::1]" if host == "::" else host)
        scheme = "https" if self.config.certfile else "http"
        return f"{scheme}://{host}:{self.port}/"

    async def serve_forever(self) -> None:
        assert self._server is not None, "start() first"
        await self._server.serve_forever()

    async def close(self) -> None:
        """Close every session, stop every stage and stop listening."""
        if self._server is not None:
            self._server.close(close_connections=False)
        await asyncio.gather(*(s.close(1001, "server shutting down") for s in list(self.sessions)))
        async with self._lock:
            entries, self.stages = list(self.stages.values()), {}
        loop = asyncio.get_running_loop()
        for entry in entries:
            await loop.run_in_executor(None, entry.stage.stop)
        if self._server is not None:
            try:  # a connection still in its HTTP handshake (browsers open spare ones) holds this
                await asyncio.wait_for(self._server.wait_closed(), SHUTDOWN_WAIT_S)  # up to open_timeout
            except asyncio.TimeoutError:
                logger.info("stopped without waiting for connections that never finished their handshake")

    # -- sessions and stages -------------------------------------------------------------------------

    def ice_servers(self) -> list[RTCIceServer]:
        return [parse_ice_server(u) for u in self.config.ice_servers]

    async def _handle(self, ws: ServerConnection) -> None:
        if ws.request is None or not ws.request.path.startswith(WS_PATH):
            await ws.close(1008, "not found")
            return
        session = Session(self, ws)
        reserve = KEY_HOLDER_RESERVE if self.config.performer_key is not None else 0
        if self._joined() >= self.config.max_sessions + reserve:  # no room even for a key holder
            await ws.send(
                error_message("busy", f"the server serves its limit of {self.config.max_sessions} sessions")
            )
            await ws.close(1013, "busy")
            return
        unjoined = sorted((s for s in self.sessions if s.role is None), key=lambda s: s.opened)
        for idle in unjoined[: max(0, len(unjoined) + 1 - MAX_UNJOINED)]:
            idle.spawn_close("busy", "closed to make room: a client must join as soon as it connects")
        self.sessions.add(session)
        try:
            await session.run()
        finally:
            self.sessions.discard(session)

    def _joined(self, but: Session | None = None) -> int:
        """Sessions that joined (or are joining) a stage: what ``max_sessions`` limits."""
        return sum(1 for s in self.sessions if s.role is not None and s is not but)

    def _make_stage(self, name: str, loop: asyncio.AbstractEventLoop) -> Stage:
        """Build a stage (blocking: the pose source and the camera framing take a moment)."""
        from ..render import get_renderer

        assert self._body is not None and self._avatar is not None
        renderer = get_renderer(self.backend)
        if self.backend == "cpu" and self.config.render_threads > 0:
            from ..render.cpu import CpuRenderer

            renderer = CpuRenderer(num_threads=self.config.render_threads)
        stats = PipelineStats()
        source: PoseSource
        if self._motion is not None:
            source = MotionPoseSource(self._motion)
        else:
            source = TrackingPoseSource(
                self._body, stats, mirror=self.config.mirror, models=self.config.models
            )
        painter = AvatarPainter(
            self._avatar,
            self._body,
            renderer,
            self.config.size,
            source.framing_poses(),
            background=self.background,
            pin_root=source.kind == "webcam",
        )
        return Stage(name, painter, source, stats, self.config.fps, loop)

    async def join(self, session: Session, name: str, role: str, key_holder: bool = False) -> StageEntry:
        """Put a session on a stage (created on first use); a new performer replaces the old one.

        ``key_holder``: a performer with the server's performer key; it may use the sessions kept in
        reserve and start a stage beyond ``max_stages``.
        """
        replaced: Session | None = None
        joined = self._joined(but=session)
        room = self.config.max_sessions + (KEY_HOLDER_RESERVE if key_holder else 0)
        if joined >= room:  # key holders may use the reserve
            raise SignallingError(
                "busy", f"the server serves its limit of {self.config.max_sessions} sessions"
            )
        async with self._lock:
            entry = self.stages.get(name)
            if entry is None and len(self.stages) >= self.config.max_stages and not key_holder:
                raise SignallingError("busy", f"the server runs its limit of {self.config.max_stages} stages")
            if entry is None:
                loop = asyncio.get_running_loop()
                try:
                    stage = await loop.run_in_executor(None, self._make_stage, name, loop)
                except Exception as exc:
                    logger.exception("stage %s could not start", name)
                    raise SignallingError("internal", f"stage {name!r} could not start: {exc}") from None
                stage.start()
                entry = self.stages[name] = StageEntry(stage)
                logger.info("stage %s started (%s)", name, stage.source.kind)
            entry.sessions.add(session)
            if role == "performer":
                replaced, entry.performer = entry.performer, session
                if isinstance(entry.stage.source, TrackingPoseSource):
                    entry.stage.source.new_performer()
        if replaced is not None and replaced is not session:
            # Off the new performer's path: a stuck old client may take WS_CLOSE_TIMEOUT_S to close.
            task = background(replaced.replace())
            self._replacing.add(task)
            task.add_done_callback(self._replacing.discard)
        return entry

    async def leave(self, session: Session, entry: StageEntry) -> None:
        """Take a session off its stage; the last one out stops the stage."""
        async with self._lock:
            entry.sessions.discard(session)
            if entry.performer is session:
                entry.performer = None
            empty = not entry.sessions and self.stages.get(entry.stage.name) is entry
            if empty:
                del self.stages[entry.stage.name]
        if empty:
            await asyncio.get_running_loop().run_in_executor(None, entry.stage.stop)
            logger.info("stage %s stopped", entry.stage.name)

    # -- figures ------------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """``GET /stats``: the server and every running stage."""
        stages = {name: entry.snapshot() for name, entry in list(self.stages.items())}
        return {
            "server": {
                "url": self.url,
                "uptime_s": round(time.monotonic() - self._started, 1),
                "cpu_seconds": round(time.process_time(), 3),  # the process's, for CPU use over an interval
                "sessions": len(self.sessions),
                "backend": self.backend,
                "size": self.config.size,
                "fps": self.config.fps,
                "avatar": self.config.avatar or "demo",
                "source": "motion" if self._motion is not None or self.config.motion else "webcam",
            },
            "stages": stages,
        }


def this_machine_address() -> str | None:
    """The IPv4 address other machines most likely reach this one at (the default route's), or None.

    Connecting a UDP socket sends nothing; it only picks the outgoing interface.
    """
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: never routed anywhere real
            address = str(probe.getsockname()[0])
    except OSError:
        return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def announcement(url: str, host: str, performer_key: str | None, address: str | None) -> str:
    """What ``streamer serve`` prints: the pages to open, and for a server on every interface
    (``--host 0.0.0.0`` or ``::``) how another machine reaches it, since ``url`` names this one."""
    performer = url
    if performer_key is not None:
        performer += "?key=" + urllib.parse.quote(performer_key, safe="")
    text = f"streamer serve: open {performer} (performer), {url}view (viewer) or {url}xr (VR viewer)"
    if host in EVERY_INTERFACE:
        parts = urllib.parse.urlsplit(performer)
        there = f": {parts._replace(netloc=f'{address}:{parts.port}').geturl()}" if address else ""
        text += f"\n  from another machine, use this machine's address instead of {parts.hostname}{there}"
    return text


async def run_server(config: ServerConfig, ready: asyncio.Event | None = None) -> None:
    """Serve until cancelled (Ctrl+C); prints the URLs to open."""
    server = AvatarServer(config)
    await server.start()
    address = this_machine_address() if config.host in EVERY_INTERFACE else None
    print(announcement(server.url, config.host, config.performer_key, address), flush=True)
    if ready is not None:
        ready.set()
    try:
        await server.serve_forever()
    finally:
        await server.close()
