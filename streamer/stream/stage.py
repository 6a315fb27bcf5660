"""A stage: one avatar, one pose source, any number of views, and the workers that feed them.

Two parts keep the output live while tracking and rendering take as long as they take:

* the **render worker** (a thread) wakes when the pose source has a new pose (or a viewer moved
  its camera, or for a motion file every frame period), skins the avatar once per new pose and
  renders once per distinct camera (viewers sharing the stage camera share the picture), at most
  ``fps`` times a second; it only replaces the newest picture per camera;
* the **pacer** (an asyncio task; it only hands over references) gives every view each new
  picture of its camera as soon as it is rendered, no closer than :data:`MIN_GAP_PERIODS` frame
  periods after the previous one, and the last picture again only after :data:`REPEAT_AFTER_PERIODS`
  periods without a new one (a keep-alive while a webcam stalls). Identical pictures are thus not
  encoded again and again: with a webcam the video runs at the tracking rate (capped at ``fps``),
  and the CPU that repeats would cost goes to tracking and rendering instead.

Each camera's pictures are encoded once per codec and bit rate in use
(:class:`~streamer.stream.camera_encoder.CameraEncoder`, from :meth:`Stage.encoder_for`), and every
peer's :class:`~streamer.stream.tracks.AvatarTrack` sends that stream. Views on the same camera get
the same repeats, so they stay one stream.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .bitrate import BITRATES
from .camera_encoder import VP8, CameraEncoder
from .latest import FrameBus
from .painter import AvatarPainter
from .pose_source import PoseSource
from .protocol import Orbit
from .stats import PipelineStats
from .tasks import background

logger = logging.getLogger(__name__)

_view_ids = itertools.count(1)

#: New pictures are handed to a view at once, but no closer than this many frame periods apart.
MIN_GAP_PERIODS = 0.75
#: After this many frame periods without a new picture, a view gets the last one again.
REPEAT_AFTER_PERIODS = 3.0
#: Render rounds the render worker may save up. Two: a source at exactly ``fps`` (a motion at the
#: stage's rate) always finds a token when its next frame falls due, so renders stay on its frames.
RENDER_BURST = 2.0
OrbitKey = tuple[float, float, float]
StreamKey = tuple[OrbitKey, str, int]  # a camera, a codec and a bit rate


class RenderBudget:
    """At most ``fps`` render rounds a second on average, with ``burst`` rounds saved up (a token bucket).

    A round that starts a little late does not push the next one back (as a minimum gap after the
    last round would), so renders keep in step with a motion's frames instead of drifting behind
    them and skipping one now and then. Times are ``time.monotonic()`` seconds, passed in so that
    the budget can be checked against any clock. It starts with one round: a second one at once
    would only wait for its hand-over (:data:`MIN_GAP_PERIODS`).
    """

    def __init__(self, fps: float, now: float, burst: float = RENDER_BURST) -> None:
        self.fps, self.burst = fps, burst
        self.tokens, self._refilled = 1.0, now

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self._refilled) * self.fps)
        self._refilled = max(self._refilled, now)

    def wait(self, now: float) -> float:
        """Seconds until a round may start (0.0: at once)."""
        self._refill(now)
        return max(0.0, (1.0 - self.tokens) / self.fps)

    def spend(self, now: float) -> None:
        """A round starts at ``now``."""
        self._refill(now)
        self.tokens -= 1.0


@dataclass(frozen=True)
class AvatarFrame:
    """One output picture and where it came from.

    Attributes:
        seq: increases with every picture rendered and every repeat handed over, stage-wide.
        i420: the picture, I420 planes stacked [size * 3 / 2, size] uint8 (shared: do not modify).
        pose_seq: the :class:`~streamer.stream.pose_source.PoseSample` it shows.
        capture_time: ``time.monotonic()`` when the webcam frame behind the pose was received.
        live: the pose was fitted to a fresh webcam frame (not held or easing to rest).
        rendered_at: ``time.monotonic()`` when the picture was ready.
        repeat: the pacer handed over a picture it had handed to this view before (no new pose).
    """

    seq: int
    i420: np.ndarray
    pose_seq: int
    capture_time: float | None
    live: bool
    rendered_at: float
    repeat: bool = False


@dataclass(eq=False)
class View:
    """One peer's camera on the stage, the codec and bit rate of its stream, and the feed of pictures
    for it."""

    id: int = field(default_factory=lambda: next(_view_ids))
    orbit: Orbit = field(default_factory=Orbit)
    codec: str = VP8  # MIME type (set once the peer's answer is made, before any picture is sent)
    bitrate: int = BITRATES[0]  # bits/s (follows the peer's link: Stage.set_bitrate)
    bus: FrameBus[AvatarFrame] = field(default_factory=FrameBus)
    last_original: int = 0  # seq of the newest picture handed over as new (not as a repeat)
    handed_at: float = 0.0  # time.monotonic() of the last hand-over (new or repeat)


class Stage:
    """One avatar driven by one pose source, rendered for its views.

    Args:
        name: the stage name (from the page URL).
        painter: skins and renders the avatar.
        source: the pose source (webcam tracking or a motion).
        stats: the stage's measurements (shared with the source and the tracks).
        fps: output frames per second (and the most renders per second).
        loop: the event loop the views' buses live on.
    """

    def __init__(
        self,
        name: str,
        painter: AvatarPainter,
        source: PoseSource,
        stats: PipelineStats,
        fps: float,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        if not 1.0 <= fps <= 120.0:
            raise ValueError(f"fps must be in [1, 120], got {fps}")
        self.name, self.painter, self.source, self.stats = name, painter, source, stats
        self.fps = float(fps)
        self.period = 1.0 / self.fps
        self.loop = loop
        self._views: dict[int, View] = {}
        self._latest: dict[OrbitKey, AvatarFrame] = {}  # newest picture per camera
        self._encoders: dict[StreamKey, CameraEncoder] = {}  # one per camera, codec and bit rate in use
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._seq = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._pacer: asyncio.Task[None] | None = None
        self._new_picture = asyncio.Event()
        self.render_error: str | None = None
        source.listen(self._wake.set)

    # -- views (event loop) --------------------------------------------------------------------

    def add_view(self) -> View:
        view = View()
        with self._lock:
            self._views[view.id] = view
        self._wake.set()
        return view

    def remove_view(self, view: View) -> None:
        with self._lock:
            self._views.pop(view.id, None)
            self._forget_encoders()
        view.bus.close()

    def encoder_for(self, view: View, previous: CameraEncoder | None = None) -> CameraEncoder:
        """The encoder of ``view``'s camera in the view's codec and bit rate (made on first use).

        ``previous``: the encoder the caller used so far. When the view moved to a camera nobody
        else uses and left one nobody else uses (a viewer orbiting alone), that encoder moves
        along: its stream goes on with inter frames instead of starting again at a keyframe.
        """
        with self._lock:
            key = _stream_key(view)
            encoder = self._encoders.get(key)
            if encoder is None:
                in_use = {_stream_key(v) for v in self._views.values()}
                old = next((k for k, e in self._encoders.items() if e is previous), None)
                if old is not None and old[1:] == key[1:] and old not in in_use:
                    encoder = self._encoders.pop(old)
                else:
                    encoder = CameraEncoder(self.stats, view.codec, self.fps, view.bitrate)
                self._encoders[key] = encoder
            self._forget_encoders()
            return encoder

    def _forget_encoders(self) -> None:
        """Drop the encoders of streams no view uses (call with the lock held)."""
        in_use = {_stream_key(v) for v in self._views.values()}
        for key in [k for k in self._encoders if k not in in_use]:
            del self._encoders[key]

    def set_bitrate(self, view: View, bitrate: int) -> None:
        """Send ``view`` the stream of its camera at ``bitrate`` (bits/s) from its next picture on."""
        with self._lock:
            view.bitrate = int(bitrate)

    def streams(self) -> list[dict[str, Any]]:
        """The streams being encoded: codec, bit rate and pictures so far (for the stats)."""
        with self._lock:
            return [
                {"codec": key[1], "bitrate": key[2], "encoded": encoder.encoded}
                for key, encoder in self._encoders.items()
            ]

    def set_orbit(self, view: View, orbit: Orbit) -> None:
        with self._lock:
            view.orbit = orbit
        self._wake.set()

    @property
    def view_count(self) -> int:
        with self._lock:
            return len(self._views)

    # -- life cycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the pose source, the render worker and the pacer (call on the event loop)."""
        self.source.start()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"render-{self.name}", daemon=True)
            self._thread.start()
            self._pacer = background(self._pace(), self.loop)

    def stop(self) -> None:
        """Stop the workers and wait for them (blocking: call it from an executor)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        self.source.stop()

    # -- event loop: pacing ----------------------------------------------------------------------

    async def _pace(self) -> None:
        """Hand every view each new picture of its camera at once, and the last one again after a silence."""
        min_gap, repeat_after = MIN_GAP_PERIODS * self.period, REPEAT_AFTER_PERIODS * self.period
        timeout = repeat_after
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._new_picture.wait(), timeout)
            except asyncio.TimeoutError:
                pass
            self._new_picture.clear()
            now = time.monotonic()
            next_due = now + repeat_after
            with self._lock:
                views = [(v, self._latest.get(v.orbit.key)) for v in self._views.values()]
            repeats: dict[int, AvatarFrame] = {}  # one repeat per picture: views on a camera share it
            for view, frame in views:
                if frame is None or view.bus.closed:
                    continue
                new = frame.seq != view.last_original
                due = view.handed_at + (min_gap if new else repeat_after)
                if now < due:
                    next_due = min(next_due, due)
                    continue
                if new:
                    view.last_original = frame.seq
                else:
                    if frame.seq not in repeats:
                        repeats[frame.seq] = dataclasses.replace(frame, seq=next(self._seq), repeat=True)
                    frame = repeats[frame.seq]
                view.handed_at = now
                view.bus.publish(frame)
            timeout = max(0.0, next_due - time.monotonic())

    # -- render worker ---------------------------------------------------------------------------------

    def _signal_new_picture(self) -> None:
        try:
            self.loop.call_soon_threadsafe(self._new_picture.set)
        except RuntimeError:  # the event loop is closed: the stage is going away
            pass

    def _run(self) -> None:
        posed: tuple[int, object] | None = None  # (pose seq, posed Gaussians)
        last_render = -1.0
        next_check = 0.0
        budget = RenderBudget(self.fps, time.monotonic())
        while not self._stop.is_set():
            # New pose, new camera or new view; a motion's pose also changes with time alone, so
            # look again when its next frame falls due (at most one frame period later).
            self._wake.wait(max(0.0, next_check - time.monotonic()))
            self._wake.clear()
            wait = budget.wait(time.monotonic())
            if wait > 0.0 and self._stop.wait(wait):
                break
            if self._stop.is_set():
                break
            now = time.monotonic()
            next_check = now + self.period
            with self._lock:
                views = [(v, v.orbit) for v in self._views.values()]
            if not views:
                with self._lock:
                    self._latest.clear()
                continue
            try:
                sample = self.source.latest()
                for key, group in _by_orbit(views).items():
                    with self._lock:
                        current = self._latest.get(key)
                    if current is not None and current.pose_seq == sample.seq:
                        continue  # nothing new for this camera: the pacer keeps its video going
                    if posed is None or posed[0] != sample.seq:
                        if sample.ready_at is not None:
                            self.stats.times["wait_render"].add((time.monotonic() - sample.ready_at) * 1000.0)
                        t = time.perf_counter()
                        posed = (sample.seq, self.painter.pose(sample.pose))
                        self.stats.times["lbs"].add((time.perf_counter() - t) * 1000.0)
                        self.stats.poses.tick()
                    if last_render < now:  # the first render of this round uses up a token
                        budget.spend(now)
                    last_render = time.monotonic()
                    next_check = last_render + self.period
                    t = time.perf_counter()
                    picture = self.painter.paint(posed[1], group[0][1])
                    self.stats.times["render"].add((time.perf_counter() - t) * 1000.0)
                    self.stats.renders.tick()
                    frame = AvatarFrame(
                        next(self._seq),
                        picture,
                        sample.seq,
                        sample.capture_time,
                        sample.live,
                        time.monotonic(),
                    )
                    with self._lock:
                        self._latest[key] = frame
                    self._signal_new_picture()
                due = self.source.next_pose_at()
                if due is not None:  # a motion: look again exactly when its next frame falls due
                    next_check = min(next_check, due)
                with self._lock:  # forget cameras nobody uses any more
                    keys = {o.key for _, o in views}
                    for key in [k for k in self._latest if k not in keys]:
                        del self._latest[key]
                self.render_error = None
            except Exception as exc:  # log, say so in the stats, keep serving
                if self.render_error is None:
                    logger.exception("stage %s: rendering failed", self.name)
                self.render_error = f"rendering failed: {exc}"
                self._stop.wait(0.5)

    # -- stats ----------------------------------------------------------------------------------------------

    def snapshot(self, peers: int) -> dict[str, Any]:
        """The stage's figures for ``/stats`` and the stats message."""
        snap = self.stats.snapshot(peers=peers)
        snap.update(
            {
                "source": self.source.kind,
                "target_fps": self.fps,
                "size": self.painter.size,
                "views": self.view_count,
                "streams": self.streams(),
                "error": self.render_error or self.source.error,
            }
        )
        return snap


def _by_orbit(views: list[tuple[View, Orbit]]) -> dict[OrbitKey, list[tuple[View, Orbit]]]:
    groups: dict[OrbitKey, list[tuple[View, Orbit]]] = {}
    for view, orbit in views:
        groups.setdefault(orbit.key, []).append((view, orbit))
    return groups


def _stream_key(view: View) -> StreamKey:
    return view.orbit.key, view.codec, view.bitrate
