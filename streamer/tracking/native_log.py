"""Holding back MediaPipe's start-up chatter on stderr.

MediaPipe's C++ side logs a dozen warning and info lines whenever a graph starts (``W0000 ...
inference_feedback_manager.cc:114] Feedback manager requires a model with a single signature ...``,
``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.``). They go straight to file descriptor 2
through absl logging, which no environment variable or Python setting turns down, and they say
nothing a user can act on. :func:`quiet_native_stderr` points descriptor 2 at a temporary file for
a short stretch (building the graphs, the first frame) and then writes back everything except those
lines: errors (``E``/``F`` lines) and anything Python printed meanwhile come out, a little late.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator

#: Lines dropped: absl/glog INFO and WARNING lines of C++ sources, and TF Lite's delegate notice
#: (wherever they start: a progress bar's last update has no line end of its own). TF Lite writes
#: its notice in pieces (``INFO: ``, the text, the line end), so a progress bar drawn from another
#: thread can land between them: the pieces go one by one.
NOISE = re.compile(
    rb"(?:(?:[IW]\d{4} [\d:.]+ +\d+ [\w./-]+:\d+\] "
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called)[^\n]*\n?)"
    rb"|(?:INFO: )?Created TensorFlow Lite XNNPACK delegate for CPU\.\n?"
    rb"|INFO: (?=\r)"
)

_lock = threading.RLock()  # descriptor 2 is one per process: one holder at a time
_depth = 0


def drop_noise(data: bytes) -> bytes:
    """``data`` without the :data:`NOISE` lines."""
    return NOISE.sub(b"", data)


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Hold what is written to descriptor 2 inside the block; write it back without the noise.

    Nested and concurrent uses are serialised (the outermost one holds). Where descriptor 2 cannot
    be duplicated (no stderr at all), the block runs as is.
    """
    global _depth
    with _lock:
        if _depth:
            _depth += 1
            try:
                yield
            finally:
                _depth -= 1
            return
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):
            yield
            return
        held = tempfile.TemporaryFile()  # noqa: SIM115 (closed below, after descriptor 2 is back)
        try:
            os.dup2(held.fileno(), 2)
            _depth = 1
            try:
                yield
            finally:
                _depth = 0
                with contextlib.suppress(OSError, ValueError, AttributeError):
                    sys.stderr.flush()
                os.dup2(saved, 2)
                held.seek(0)
                kept = drop_noise(held.read())
                if kept:
                    os.write(2, kept)
        finally:
            os.close(saved)
            held.close()
