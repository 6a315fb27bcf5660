"""Frame sources: a video file (PyAV) or a local camera (OpenCV), as iterators of RGB frames.

Every source yields ``(timestamp_ms, rgb)`` pairs: ``timestamp_ms`` a float in milliseconds from the
start of the source (the container's presentation time for files, a monotonic clock for cameras) and
``rgb`` a ``[H, W, 3] uint8`` array, C-contiguous, upright (a file's display rotation is applied).
Frames are as the camera sees them, *not* mirrored: selfie previews are the consumer's business.

A source is named by a string (:func:`open_source`): a path to a video file, or ``camera:N`` for the
OpenCV camera with index ``N``.

Example:
    >>> with open_source("clip.mp4") as src:
    ...     for t_ms, rgb in src:
    ...         ...
"""

from __future__ import annotations

import functools
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import numpy as np

from ..errors import InputError, SourceError

#: ``camera:N`` names the OpenCV camera with index N.
CAMERA_PATTERN = re.compile(r"^camera:(\d+)$")

Frame = tuple[float, np.ndarray]  # (timestamp_ms, [H, W, 3] uint8 RGB)


class FrameSource(ABC):
    """An iterable of ``(timestamp_ms, rgb [H, W, 3] uint8)`` frames; close it (or use ``with``) when done.

    Attributes:
        name: what the source was opened from (a path or ``camera:N``).
        width, height: frame size in pixels (after rotation).
        fps: nominal frame rate (frames per second).
        frame_count: frames in a file (from the container; may be an estimate), None for a camera.
    """

    name: str
    width: int
    height: int
    fps: float
    frame_count: int | None

    @property
    def is_live(self) -> bool:
        """True for a camera (endless, real-time), False for a file."""
        return self.frame_count is None

    @abstractmethod
    def __iter__(self) -> Iterator[Frame]: ...

    @abstractmethod
    def close(self) -> None:
        """Release the file or camera (idempotent)."""

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class VideoFileSource(FrameSource):
    """Decode a video file with PyAV (any container/codec FFmpeg reads).

    Raises:
        SourceError: the file is missing, not a video, or has no decodable video stream; also raised
            while iterating when decoding fails part-way (a corrupt stream).
    """

    def __init__(self, path: str | Path) -> None:
        import av

        self.path = Path(path)
        self.name = str(path)
        if not self.path.exists():
            raise SourceError(f"video file not found: {self.path}")
        if self.path.is_dir():
            raise SourceError(f"{self.path} is a folder, not a video file")
        try:
            self._container = av.open(str(self.path), mode="r")
        except (av.FFmpegError, OSError, ValueError) as exc:
            detail = getattr(exc, "strerror", None) or exc  # (FFmpeg's words without its error number)
            raise SourceError(f"{self.path}: not a readable video file ({detail})") from None
        if not self._container.streams.video:
            self._container.close()
            raise SourceError(f"{self.path}: the file has no video stream")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"  # frame-parallel decoding; order and timestamps are unchanged
        ctx = self._stream.codec_context
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = float(rate) if rate else 30.0
        if not (np.isfinite(self.fps) and 0 < self.fps <= 1000):
            self.fps = 30.0
        self.width, self.height = int(ctx.width), int(ctx.height)
        if self.width <= 0 or self.height <= 0:
            self._container.close()
            raise SourceError(
                f"{self.path}: video stream has no valid frame size ({self.width}x{self.height})"
            )
        count = int(self._stream.frames or 0)
        if count <= 0 and self._stream.duration and self._stream.time_base:
            count = round(float(self._stream.duration * self._stream.time_base) * self.fps)
        if count <= 0 and self._container.duration:  # WebM and Matroska give only the file's length
            count = round(self._container.duration / av.time_base * self.fps)
        self.frame_count = max(count, 0)
        self._closed = False
        self._started = False
        self._index = 0
        self._first_time: float | None = None
        self._rotation_k = 0  # quarter turns counter-clockwise, read from the first frame
        self._decoder = self._container.decode(self._stream)
        # Decode the first frame now: a corrupt file fails here, and the display rotation is known.
        try:
            first = self._next_frame()
        except BaseException:
            self.close()
            raise
        if first is None:
            self.close()
            raise SourceError(f"{self.path}: no frame could be decoded (corrupt or empty video)")
        self._first: Frame | None = first
        self.height, self.width = first[1].shape[:2]
        self.frame_count = max(self.frame_count, 1)

    def _next_frame(self) -> Frame | None:
        """Decode the next frame (None at the end), upright, with its time from the first frame."""
        import av

        try:
            frame = next(self._decoder, None)
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise SourceError(
                f"{self.name}: video cannot be decoded at frame {self._index} ({exc})"
            ) from None
        if frame is None:
            return None
        if self._index == 0:
            # FFmpeg's display matrix: rotate counter-clockwise by this many degrees to show upright.
            self._rotation_k = round(float(getattr(frame, "rotation", 0) or 0) / 90.0) % 4
        rgb: np.ndarray = frame.to_ndarray(format="rgb24")
        if self._rotation_k:
            rgb = np.ascontiguousarray(np.rot90(rgb, self._rotation_k))
        if frame.time is None:
            t_ms = self._index * 1000.0 / self.fps
        else:
            if self._first_time is None:
                self._first_time = float(frame.time)
            t_ms = (float(frame.time) - self._first_time) * 1000.0
        self._index += 1
        return t_ms, rgb

    def __iter__(self) -> Iterator[Frame]:
        if self._started:
            raise InputError(f"{self.name}: a video source can be iterated once; open it again to restart")
        self._started = True
        frame: Frame | None = self._first
        self._first = None
        while frame is not None:
            yield frame
            frame = self._next_frame()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._container.close()


class CameraSource(FrameSource):
    """A local camera through OpenCV ``VideoCapture``, read by a background thread.

    The thread keeps only the newest frame: a slow consumer gets the latest picture, never a backlog
    of stale ones (``dropped`` counts the frames it never saw). Iteration blocks until a frame newer
    than the last one handed out arrives, and ends when the camera stops delivering.

    Raises:
        SourceError: the camera cannot be opened or delivers no frame within ``open_timeout_s``.
    """

    def __init__(
        self, index: int, width: int | None = None, height: int | None = None, open_timeout_s: float = 5.0
    ) -> None:
        import cv2

        self.name = f"camera:{index}"
        self.frame_count = None
        # Silent: OpenCV's own warnings about the device; our error says it in words. (Some OpenCV
        # builds lack the log-level functions; they then print their warnings.)
        level = cv2.getLogLevel() if hasattr(cv2, "getLogLevel") else None
        if level is not None:
            cv2.setLogLevel(0)
        try:
            self._cap = cv2.VideoCapture(index)
        finally:
            if level is not None:
                cv2.setLogLevel(level)
        if not self._cap.isOpened():
            self._cap.release()
            raise SourceError(f"camera {index} is not available (no such device, or it is in use)")
        if width:
            self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        if height:
            self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0 < fps <= 1000 else 30.0
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._seq = 0  # frames read so far
        self._running = True
        self.dropped = 0
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._reader, name=f"{self.name}-reader", daemon=True)
        self._thread.start()
        with self._cond:
            self._cond.wait_for(lambda: self._latest is not None or not self._running, timeout=open_timeout_s)
            first = self._latest
        if first is None:
            self.close()
            raise SourceError(f"camera {index} opened but delivered no frame within {open_timeout_s:g} s")
        self.height, self.width = first[1].shape[:2]

    def _reader(self) -> None:
        import cv2

        while self._running:
            ok, bgr = self._cap.read()
            t_ms = (time.monotonic() - self._t0) * 1000.0
            with self._cond:
                if not ok or bgr is None:
                    self._running = False
                else:
                    self._latest = (t_ms, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                    self._seq += 1
                self._cond.notify_all()

    def __iter__(self) -> Iterator[Frame]:
        seen = 0
        while True:
            with self._cond:
                self._cond.wait_for(functools.partial(self._has_news, seen))
                if self._seq == seen:  # stopped with nothing new
                    return
                self.dropped += self._seq - seen - 1 if seen else 0
                seen = self._seq
                frame = self._latest
            assert frame is not None
            yield frame

    def _has_news(self, seen: int) -> bool:
        """A frame newer than the ``seen``-th has arrived, or the camera stopped (call holding the lock)."""
        return self._seq > seen or not self._running

    def close(self) -> None:
        with self._cond:
            self._running = False
            self._cond.notify_all()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
        self._cap.release()


def parse_camera(spec: str) -> int | None:
    """The camera index of a ``camera:N`` spec, or None for anything else."""
    m = CAMERA_PATTERN.match(spec.strip())
    return int(m.group(1)) if m else None


def open_source(spec: str | Path) -> FrameSource:
    """Open ``camera:N`` or a video file path.

    Raises:
        SourceError: the camera is unavailable or the file missing / unreadable.
    """
    text = str(spec)
    if text.startswith("camera:") and parse_camera(text) is None:
        raise SourceError(f"bad camera name {text!r}; use camera:N with N the camera index, e.g. camera:0")
    index = parse_camera(text)
    return CameraSource(index) if index is not None else VideoFileSource(text)


def frames_at(frames: Iterator[Frame], times_ms: Iterator[float]) -> Iterator[Frame]:
    """For each requested time, the last frame shown at that time (timestamp <= t + 0.5 ms).

    Synchronises a source to another clock (e.g. a motion's frame times) by dropping or repeating
    frames; both iterators must be in increasing time. The first frame is used for earlier times;
    once the source ends, its last frame is repeated.
    """
    it = iter(frames)
    current = next(it, None)
    if current is None:
        return
    upcoming = next(it, None)
    for t in times_ms:
        while upcoming is not None and upcoming[0] <= t + 0.5:
            current, upcoming = upcoming, next(it, None)
        yield current
