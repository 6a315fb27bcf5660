"""Writing rendered frames to a video file with PyAV (H.264 in MP4 by default)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np
import torch

from ..errors import InputError
from ..fileio import atomic_path


class VideoWriter:
    """Encode RGB frames into a video file; the file appears atomically on :meth:`close`.

    Example:
        >>> with VideoWriter("out.mp4", 512, 512, fps=30) as w:
        ...     w.write(rgb)  # [H, W, 3] float in [0, 1] or uint8
    """

    def __init__(self, path: str | Path, width: int, height: int, fps: float = 30.0, codec: str = "libx264",
                 crf: int = 20) -> None:
        if width % 2 or height % 2:
            raise InputError(f"video size must be even for yuv420p, got {width}x{height}")
        self.path = Path(path)
        self._tmp_ctx = atomic_path(self.path)
        self._tmp = self._tmp_ctx.__enter__()
        try:
            self._container = av.open(str(self._tmp), mode="w")
            rate = Fraction(fps).limit_denominator(1001)
            self._stream = self._container.add_stream(codec, rate=rate)
            self._stream.width, self._stream.height = width, height
            self._stream.pix_fmt = "yuv420p"
            if codec == "libx264":
                self._stream.options = {"crf": str(crf), "preset": "veryfast"}
        except BaseException as exc:  # (Ctrl-C or SIGTERM while the encoder opens included)
            self._tmp_ctx.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self.frames = 0
        self._aborted = False

    def write(self, rgb: torch.Tensor | np.ndarray) -> None:
        """Append one frame, [H, W, 3] float in [0, 1] or uint8."""
        if isinstance(rgb, torch.Tensor):
            rgb = rgb.detach().cpu().numpy()
        if rgb.dtype != np.uint8:
            rgb = (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        if rgb.shape != (self._stream.height, self._stream.width, 3):
            raise InputError(f"frame shape {rgb.shape} != ({self._stream.height}, {self._stream.width}, 3)")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        except OSError as exc:
            self._write_failed(exc)
        self.frames += 1

    def close(self) -> Path:
        """Flush the encoder and move the finished file into place."""
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
        except OSError as exc:
            self._write_failed(exc)
        self._tmp_ctx.__exit__(None, None, None)
        return self.path

    def _write_failed(self, exc: OSError) -> None:
        """A full disk or an I/O error: drop the partial file and say which output failed."""
        self.abort(exc)
        raise InputError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def abort(self, exc: BaseException | None = None) -> None:
        """Drop the partial file."""
        self._aborted = True
        try:
            self._container.close()
        except OSError:
            pass  # the partial file goes anyway; a full disk cannot take the trailer either
        finally:
            err = exc or RuntimeError("aborted")
            try:
                self._tmp_ctx.__exit__(type(err), err, err.__traceback__)
            except BaseException:
                pass

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if ev is None:
            self.close()
        elif not self._aborted:
            self.abort(ev)
