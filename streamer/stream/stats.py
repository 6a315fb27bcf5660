"""Rolling per-stage timings, rates and latency percentiles (thread-safe, no I/O).

Every worker records into a :class:`PipelineStats`; ``/stats`` and the data-channel stats message
show :meth:`PipelineStats.snapshot`. Times are milliseconds; rates are per second over the last
:data:`RATE_WINDOW_S` seconds; percentiles cover the last :data:`WINDOW` samples.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

WINDOW = 1800  # samples kept per timing (a minute at 30 fps)
RATE_WINDOW_S = 3.0

#: Per-frame stage timings, in pipeline order.
STAGES = ("tracking", "fit", "lbs", "render", "encode")
#: Where a frame waits between stages (ms): webcam frame received -> tracking starts, pose ready ->
#: render starts, picture ready -> its peer's sender takes it.
WAITS = ("wait_tracking", "wait_render", "wait_send")


def percentile(values: Iterable[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100, linear interpolation) of ``values``; None when empty."""
    data = sorted(values)
    if not data:
        return None
    pos = (len(data) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


class Rolling:
    """The last :data:`WINDOW` samples of one quantity."""

    def __init__(self, size: int = WINDOW) -> None:
        self._values: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()
        self.count = 0

    def add(self, value: float) -> None:
        with self._lock:
            self._values.append(float(value))
            self.count += 1

    def values(self) -> list[float]:
        with self._lock:
            return list(self._values)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self.count = 0

    def summary(self) -> dict[str, float | None]:
        """``p50``, ``p95`` and the number of samples in the window."""
        values = self.values()
        return {
            "p50": _round(percentile(values, 50)),
            "p95": _round(percentile(values, 95)),
            "n": len(values),
        }


class Rate:
    """Events per second over the last ``window`` seconds (monotonic clock)."""

    def __init__(self, window: float = RATE_WINDOW_S) -> None:
        self.window = window
        self._times: deque[float] = deque()
        self._lock = threading.Lock()
        self._first: float | None = None
        self.count = 0

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._first = now if self._first is None else self._first
            self._times.append(now)
            self.count += 1
            self._trim(now)

    def clear(self) -> None:
        with self._lock:
            self._times.clear()
            self._first = None
            self.count = 0

    def _trim(self, now: float) -> None:
        while self._times and self._times[0] < now - self.window:
            self._times.popleft()

    def per_second(self, now: float | None = None) -> float:
        """Events in the window over the window's length (shorter while the first window fills)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._trim(now)
            if self._first is None:
                return 0.0
            span = min(self.window, now - self._first)
            return round(len(self._times) / span, 2) if span > 0.2 else 0.0


class PipelineStats:
    """What one stage measures: stage timings, latency, rates and dropped-frame counters.

    Attributes:
        times: per name in :data:`STAGES` and :data:`WAITS`, rolling milliseconds.
        encode_by_codec: the ``encode`` times again, per codec (``VP8``, ``H264``; see :meth:`encode_times`).
        latency: server-added latency, ms: webcam frame taken from aiortc's receive queue (or a motion
            pose sampled) -> the first avatar frame showing it handed to the network, per peer.
        frames_in: webcam frames received. tracked: webcam frames tracked. poses: new poses skinned.
        frames_out: avatar frames sent (all peers). renders: images rendered.
        dropped_in: webcam frames dropped unprocessed (a newer one arrived first).
        dropped_out: avatar frames a peer skipped because a newer one was ready.
    """

    def __init__(self) -> None:
        self.times = {name: Rolling() for name in STAGES + WAITS}
        self.encode_by_codec: dict[str, Rolling] = {}
        self.latency = Rolling()
        self.frames_in = Rate()
        self.tracked = Rate()
        self.poses = Rate()
        self.renders = Rate()
        self.frames_out = Rate()
        self._lock = threading.Lock()
        self.dropped_in = 0
        self.dropped_out = 0
        self.started = time.monotonic()

    def encode_times(self, codec: str) -> Rolling:
        """The encode times of one codec (a MIME type such as ``video/VP8``), made on first use."""
        name = codec.rpartition("/")[2]
        with self._lock:
            return self.encode_by_codec.setdefault(name, Rolling())

    def reset(self) -> None:
        """Forget everything measured so far (benchmarks: start measuring after a warm-up)."""
        with self._lock:
            by_codec = list(self.encode_by_codec.values())
        for rolling in [*self.times.values(), *by_codec, self.latency]:
            rolling.clear()
        for rate in (self.frames_in, self.tracked, self.poses, self.renders, self.frames_out):
            rate.clear()
        with self._lock:
            self.dropped_in = self.dropped_out = 0
        self.started = time.monotonic()

    def add_dropped(self, inputs: int = 0, outputs: int = 0) -> None:
        with self._lock:
            self.dropped_in += inputs
            self.dropped_out += outputs

    def snapshot(self, peers: int = 1) -> dict[str, Any]:
        """A JSON-ready summary; ``peers`` turns the all-peers output rate into a per-peer ``fps``."""
        now = time.monotonic()
        out_rate = self.frames_out.per_second(now)
        with self._lock:
            by_codec = sorted(self.encode_by_codec.items())
        return {
            "fps": round(out_rate / max(1, peers), 2),
            "frames_out_per_s": out_rate,
            "poses_per_s": self.poses.per_second(now),
            "renders_per_s": self.renders.per_second(now),
            "webcam_fps": self.frames_in.per_second(now),
            "tracked_per_s": self.tracked.per_second(now),
            "frames_in": self.frames_in.count,
            "frames_tracked": self.tracked.count,
            "frames_sent": self.frames_out.count,
            "dropped_frames": self.dropped_in,
            "dropped_output_frames": self.dropped_out,
            "latency_ms": self.latency.summary(),
            "stages_ms": {name: self.times[name].summary() for name in STAGES},
            "waits_ms": {name: self.times[name].summary() for name in WAITS},
            "encode_ms_by_codec": {name: times.summary() for name, times in by_codec},
            "uptime_s": round(now - self.started, 1),
        }
