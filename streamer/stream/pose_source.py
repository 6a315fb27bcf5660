"""Where a stage's poses come from: a performer's webcam (tracked and fitted in worker threads) or a motion file.

Both give the render worker the newest :class:`PoseSample` on demand (:meth:`PoseSource.latest`),
never a queue: tracking runs as fast as it can, rendering runs at the output rate.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..body import BodyModel, SmplxPose
from ..tracking.landmarks import FrameLandmarks
from ..tracking.motion import Motion
from .latest import LatestSlot
from .stats import PipelineStats

logger = logging.getLogger(__name__)

#: Webcam silent this long (seconds): the avatar holds its last pose, then eases to rest.
HOLD_S = 0.5
#: While easing to rest, poses are updated at this rate (Hz) for this long (seconds).
EASE_HZ = 15.0
EASE_S = 2.0
#: Tracked frames waiting for the fit thread at most (it is ~10x faster than tracking: never reached
#: in practice; a full queue makes the tracker wait rather than pile up).
FIT_BACKLOG = 4
#: Frame size assumed for the fitter's intrinsics before any webcam frame arrived.
DEFAULT_FRAME = (640, 480)
#: When the tracker comes free, a webcam frame older than this fraction of the webcam's frame
#: interval is stale: if the next frame is due within the interval (plus :data:`FRESH_SLACK` for
#: jitter) and the tracker can afford the idle time, it waits for that one instead. The newest frame
#: is on average half an interval old when the tracker comes free; a fresh one takes that off the
#: latency of every pose fitted to it.
FRESH_AFTER = 0.6
FRESH_SLACK = 0.15
#: ... but only while the tracker still tracks at least this many frames a second (the idle time
#: comes out of its cycle: a tracker that needs the whole budget never waits).
FRESH_MIN_FPS = 20.0


def fresh_wait(age: float, interval: float | None, busy: float | None) -> float:
    """Seconds to wait for the next webcam frame instead of tracking one ``age`` seconds old.

    Args:
        age: seconds since the newest frame was received.
        interval: the webcam's frame interval, seconds (None: not known yet; never wait).
        busy: seconds the tracker takes per frame (None: not known yet; never wait).

    Zero when the frame is fresh enough, when the next one is overdue already (a stalled or slower
    webcam), or when waiting would take the tracking rate under :data:`FRESH_MIN_FPS`.
    """
    if interval is None or busy is None or interval <= 0.0 or age <= FRESH_AFTER * interval:
        return 0.0
    wait = (1.0 + FRESH_SLACK) * interval - age
    if wait <= 0.0 or busy + wait > 1.0 / FRESH_MIN_FPS:
        return 0.0
    return wait


@dataclass(frozen=True)
class PoseSample:
    """One pose for the renderer.

    Attributes:
        seq: increases with every new pose (the renderer re-renders only when it changes).
        pose: SMPL-X parameters (no batch dim).
        capture_time: ``time.monotonic()`` seconds when the webcam frame this pose was fitted to was
            taken from aiortc's receive queue (for a motion: when the motion frame fell due); None
            before the first one.
        live: True when fitted to a fresh webcam frame (or played from a motion); False while the
            avatar holds or eases to rest. Only live poses count in the latency figures.
        ready_at: ``time.monotonic()`` when the pose was ready (None: unknown).
    """

    seq: int
    pose: SmplxPose
    capture_time: float | None
    live: bool
    ready_at: float | None = None


class PoseSource(ABC):
    """The pose of one stage over time."""

    #: ``webcam`` or ``motion`` (what the web client tells the person).
    kind: str

    _listener: Callable[[], None] | None = None

    def listen(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` (from the worker thread) whenever a new pose is ready."""
        self._listener = callback

    def start(self) -> None:
        """Start any worker (idempotent)."""

    def stop(self) -> None:
        """Stop and join any worker (blocking; idempotent)."""

    @abstractmethod
    def latest(self) -> PoseSample:
        """The newest pose."""

    def next_pose_at(self) -> float | None:
        """``time.monotonic()`` when the pose changes next by itself (a motion), or None (a listener
        call says when a new pose is ready)."""
        return None

    @abstractmethod
    def framing_poses(self) -> SmplxPose:
        """Poses [T, ...] the stage camera should keep in view."""

    @property
    def error(self) -> str | None:
        """Why the source stopped working, if it did."""
        return None


class MotionPoseSource(PoseSource):
    """A motion file played in a loop at its own frame rate, by the wall clock."""

    kind = "motion"

    def __init__(self, motion: Motion) -> None:
        self.motion = motion
        self._t0 = time.monotonic()

    def latest(self) -> PoseSample:
        index = max(0, int((time.monotonic() - self._t0) * self.motion.fps))
        return PoseSample(
            seq=index,
            pose=self.motion.poses[index % len(self.motion)],
            capture_time=self._t0 + index / self.motion.fps,
            live=True,
            ready_at=self._t0 + index / self.motion.fps,
        )

    def next_pose_at(self) -> float:
        index = max(0, int((time.monotonic() - self._t0) * self.motion.fps))
        return self._t0 + (index + 1) / self.motion.fps

    def framing_poses(self) -> SmplxPose:
        step = max(1, len(self.motion) // 24)
        return self.motion.poses[::step]


class TrackingPoseSource(PoseSource):
    """Webcam frames -> MediaPipe (tracking thread) -> SMPL-X fit (fit thread), newest frame only.

    :meth:`feed` (any thread; the asyncio receiver) offers each decoded webcam frame; the tracking
    thread takes the newest, so frames that arrive while it is busy are dropped (counted in
    ``stats.dropped_in``), never queued. When it comes free and the newest frame is already most of
    a webcam interval old, it waits for the next one if it can afford to (:func:`fresh_wait`). It
    hands each frame's landmarks to the fit thread, in order (the fitter's filters need every one),
    and goes straight on to the next frame: tracking one frame overlaps fitting the one before, so
    the fit does not lower the tracking rate. When no frame comes for :data:`HOLD_S` the avatar
    holds its pose, then the fitter eases it to rest (it is fed frames where nobody is seen).

    Args:
        body: the body model to fit.
        stats: where timings (``tracking``, ``fit``) and counters go.
        mirror: selfie view (the performer's right hand moves the avatar's left, as in a mirror).
        models: MediaPipe models (see :class:`~streamer.tracking.mediapipe_runner.MediaPipeRunner`).
        hold_s: seconds of webcam silence before the avatar starts easing to rest.
    """

    kind = "webcam"

    def __init__(
        self,
        body: BodyModel,
        stats: PipelineStats,
        mirror: bool = True,
        models: str = "holistic",
        hold_s: float = HOLD_S,
    ) -> None:
        from ..tracking.fit import PoseFitter

        self.body, self.stats, self.models, self.hold_s = body, stats, models, hold_s
        self._fitter = PoseFitter(body, K=None, mirror=mirror)
        rest = self._fitter.fit(FrameLandmarks(*DEFAULT_FRAME, timestamp_ms=0.0))
        self._fitter.reset()
        self._rest = rest
        self._sample = PoseSample(seq=0, pose=rest, capture_time=None, live=False)
        self._lock = threading.Lock()
        self._slot: LatestSlot[tuple[Any, float]] = LatestSlot()
        # landmarks to fit, in order: (landmarks, capture time, live); None ends the fit thread
        self._to_fit: queue.Queue[tuple[FrameLandmarks, float | None, bool] | None] = queue.Queue(FIT_BACKLOG)
        self._thread: threading.Thread | None = None
        self._fit_thread: threading.Thread | None = None
        self._error: str | None = None
        self._t0 = time.monotonic()
        self._last_fed: float | None = None
        self._reset_fit = threading.Event()  # set by new_performer, honoured by the fit thread
        #: running estimates (seconds): the webcam's frame interval, from the arrival times, and the
        #: tracker's time per frame
        self.frame_interval: float | None = None
        self.tracking_time: float | None = None

    # -- any thread ----------------------------------------------------------------------------

    def new_performer(self) -> None:
        """Another person performs from now on: the fit forgets the last one's pose, filters and
        fades before the next frame (the avatar eases in from rest, as at the start)."""
        self._reset_fit.set()

    def feed(self, frame: Any, received_at: float) -> None:
        """Offer a decoded webcam frame (``av.VideoFrame``) taken from aiortc at ``received_at``."""
        self.stats.frames_in.tick(received_at)
        if self._last_fed is not None and 0.0 < received_at - self._last_fed < 0.5:
            self.frame_interval = _ema(self.frame_interval, received_at - self._last_fed)
        self._last_fed = received_at
        if self._slot.put((frame, received_at)):
            self.stats.add_dropped(inputs=1)

    def latest(self) -> PoseSample:
        with self._lock:
            return self._sample

    def framing_poses(self) -> SmplxPose:
        """The relaxed rest pose and the T-pose (arms spread): the body fills the picture's height."""
        zero = SmplxPose.zeros(
            num_betas=self._rest.betas.shape[-1], num_expression=self._rest.expression.shape[-1]
        )
        return SmplxPose.stack([self._rest, zero.replace(betas=self._rest.betas)])

    @property
    def error(self) -> str | None:
        return self._error

    def start(self) -> None:
        if self._thread is None:
            self._fit_thread = threading.Thread(target=self._fit_loop, name="pose-fit", daemon=True)
            self._fit_thread.start()
            self._thread = threading.Thread(target=self._run, name="tracking", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._slot.close()
        if self._thread is not None:
            self._thread.join()  # it ends the fit thread on its way out
        if self._fit_thread is not None:
            self._fit_thread.join()

    # -- worker thread ---------------------------------------------------------------------------

    def _publish(self, pose: SmplxPose, capture_time: float | None, live: bool) -> None:
        with self._lock:
            self._sample = PoseSample(self._sample.seq + 1, pose, capture_time, live, time.monotonic())
        if self._listener is not None:
            self._listener()

    def _run(self) -> None:
        from ..tracking.mediapipe_runner import LIVE_FACE_INTERVAL, LIVE_HAND_SEARCH_INTERVAL, MediaPipeRunner

        try:
            runner = MediaPipeRunner(
                self.models,
                video=True,
                hand_search_interval=LIVE_HAND_SEARCH_INTERVAL,
                face_interval=LIVE_FACE_INTERVAL,
            )
        except Exception as exc:  # a model that is not bundled, a broken install: say so in the stats
            logger.exception("MediaPipe could not start; the avatar stays at rest")
            self._error = f"tracking unavailable: {exc}"
            self._to_fit.put(None)
            return
        last_ms = -1.0
        last_frame_at: float | None = None  # when the last webcam frame was taken or tracked
        last_ease = 0.0
        failures = 0
        size = DEFAULT_FRAME
        try:
            while True:
                item = self._slot.get(timeout=1.0 / EASE_HZ)
                now = time.monotonic()
                if item is None:
                    if self._slot.closed:
                        break
                    # Webcam silent: hold the pose, then ease to rest by fitting "nobody seen".
                    silent = now - (last_frame_at if last_frame_at is not None else now)
                    if last_frame_at is None or silent < self.hold_s or silent > self.hold_s + EASE_S:
                        continue
                    if now - last_ease >= 1.0 / EASE_HZ:
                        last_ease = now
                        last_ms = max(last_ms + 1.0, (now - self._t0) * 1000.0)
                        self._to_fit.put((FrameLandmarks(*size, timestamp_ms=last_ms), None, False))
                    continue
                frame, received_at = item
                wait = fresh_wait(now - received_at, self.frame_interval, self.tracking_time)
                if wait > 0.0:
                    newer = self._slot.get(timeout=wait)
                    if newer is not None:  # the stale frame is dropped, the fresh one tracked
                        self.stats.add_dropped(inputs=1)
                        frame, received_at = newer
                        now = time.monotonic()
                last_frame_at = received_at
                self.stats.times["wait_tracking"].add((now - received_at) * 1000.0)
                try:
                    t = time.perf_counter()
                    rgb = frame.to_ndarray(format="rgb24")
                    size = (rgb.shape[1], rgb.shape[0])
                    # MediaPipe's video mode needs strictly increasing timestamps (also across reconnects).
                    last_ms = max(last_ms + 1.0, (received_at - self._t0) * 1000.0)
                    landmarks = runner.process(rgb, last_ms)
                    busy = time.perf_counter() - t
                    self.stats.times["tracking"].add(busy * 1000.0)
                    self.tracking_time = _ema(self.tracking_time, busy)
                except Exception:
                    failures += 1
                    if failures == 1 or failures % 100 == 0:  # the first with its traceback, then a count
                        logger.exception(
                            "tracking failed on a webcam frame (%d so far); skipping it", failures
                        )
                    continue
                self._to_fit.put((landmarks, received_at, True))
                last_frame_at = time.monotonic()  # silence counts from the last frame tracked
        except Exception as exc:
            logger.exception("tracking worker stopped")
            self._error = f"tracking stopped: {exc}"
        finally:
            self._to_fit.put(None)
            runner.close()

    def _fit_loop(self) -> None:
        """Fit each tracked frame's landmarks in order and publish the pose."""
        failures = 0
        while True:
            item = self._to_fit.get()
            if item is None:
                return
            landmarks, capture_time, live = item
            if self._reset_fit.is_set():
                self._reset_fit.clear()
                self._fitter.reset()
            try:
                t = time.perf_counter()
                pose = self._fitter.fit(landmarks)
                if live:
                    self.stats.times["fit"].add((time.perf_counter() - t) * 1000.0)
            except Exception:
                failures += 1
                if failures == 1 or failures % 100 == 0:
                    logger.exception("fitting failed on a tracked frame (%d so far); skipping it", failures)
                continue
            if live:
                self.stats.tracked.tick()
                self._publish(pose, capture_time, live=True)
            else:  # easing to rest: keep the capture time of the last live pose
                self._publish(pose, self.latest().capture_time, live=False)


def _ema(average: float | None, value: float, rate: float = 0.1) -> float:
    """A running average: ``value`` the first time, then moved ``rate`` of the way to each new value."""
    return value if average is None else average + rate * (value - average)
