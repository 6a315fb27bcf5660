"""CPU time per thread of this process over a window, grouped by thread name (Linux ``/proc``).

``bench stream`` reports it so that a figure like "tracking 55 ms" can be read against who used
the cores meanwhile: MediaPipe's graph threads, the renderer, the fit, the event loops, the video
decoders. Python threads are named by ``threading`` (``tracking``, ``pose-fit``, ``render-main``);
native ones by their kernel name (MediaPipe's ``mediapipe/<n>``); numbered siblings are grouped
(``asyncio_0``, ``asyncio_1`` -> ``asyncio``). Native threads without a name of their own (the
OpenMP workers of the renderer and the skinning, torch's) share ``unnamed native``.

:func:`process_age_s` says how long ago this process started, for commands whose own clock starts
after Python's start-up and the imports (torch alone takes 1.5-3 s).
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

TASKS = Path("/proc/self/task")
_NUMBERED = re.compile(r"([/_-]\d+)+$")
UNNAMED = "unnamed native"


def process_age_s() -> float | None:
    """Seconds since this process started (``/proc/self/stat`` against the boot clock; None elsewhere)."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, after pid and (comm)
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    return age if age >= 0.0 else None  # a sandbox whose /proc does not follow the boot clock


def group_name(name: str) -> str:
    """``mediapipe/784`` -> ``mediapipe``, ``asyncio_0`` -> ``asyncio``, ``ThreadPoolExecutor-0_1`` ->
    ``ThreadPoolExecutor``; other names unchanged."""
    return _NUMBERED.sub("", name) or name


def _ticks(tid: str) -> int | None:
    """User + system CPU time of one thread, clock ticks (None: the thread has ended)."""
    try:
        stat = (TASKS / tid / "stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state is field 3
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


def _kernel_name(tid: str) -> str:
    try:
        return (TASKS / tid / "comm").read_text().strip()
    except OSError:
        return ""


class ThreadCpu:
    """CPU time per thread group between :meth:`start` and :meth:`shares` (threads alive at the end).

    ``available`` is False where ``/proc/self/task`` does not exist (not Linux): :meth:`shares`
    then gives an empty dict.
    """

    def __init__(self) -> None:
        self.available = TASKS.is_dir()
        self._start: dict[str, int] = {}
        self._hz = os.sysconf("SC_CLK_TCK") if self.available else 100

    def _snapshot(self) -> dict[str, int]:
        out = {}
        for entry in TASKS.iterdir() if self.available else ():
            ticks = _ticks(entry.name)
            if ticks is not None:
                out[entry.name] = ticks
        return out

    def start(self) -> None:
        self._start = self._snapshot()

    def shares(self, seconds: float) -> dict[str, float]:
        """Percent of one core per thread group over the last ``seconds`` (largest first).

        A thread started during the window counts from its start; one that ended is missing.
        """
        if not self.available or seconds <= 0:
            return {}
        python_names = {str(t.native_id): t.name for t in threading.enumerate() if t.native_id is not None}
        process_name = _kernel_name(str(os.getpid()))
        totals: dict[str, int] = {}
        for tid, ticks in self._snapshot().items():
            if tid in python_names:
                group = group_name(python_names[tid])
            else:  # a native thread without a name of its own carries the process's name
                kernel = _kernel_name(tid)
                group = UNNAMED if not kernel or kernel == process_name else group_name(kernel)
            totals[group] = totals.get(group, 0) + ticks - self._start.get(tid, 0)
        percent = {k: round(100.0 * v / self._hz / seconds, 1) for k, v in totals.items() if v > 0}
        return dict(sorted(percent.items(), key=lambda kv: -kv[1]))
