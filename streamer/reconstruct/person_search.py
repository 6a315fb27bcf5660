"""Finding the person in a photo in a separate process, beside the caller's own start-up.

``streamer reconstruct`` spends its first seconds importing torch and loading the body model, and
about as long again finding the person (importing MediaPipe, then its pose and segmentation models:
:func:`.person.find_person`). Neither needs the other, so :class:`PersonSearch` runs the search in a
second process while the caller loads; on two cores that hides most of the search's time.

It pays only while that start-up is still ahead: once torch is imported in this process (a server,
the tests, a second photo) the search runs here, when its result is asked for.

The second process is a fresh interpreter (not a fork: a fork copies native thread pools in a state
the child cannot use) that runs :data:`_CHILD` and talks over two pipes of its own: it gets this
process's ``sys.path`` and the photo, and answers with the person. Unlike ``multiprocessing``'s
spawn it does not import the caller's main module again (a script without an
``if __name__ == "__main__"`` guard would run twice), and it starts in a session of its own, so
that Ctrl-C reaches only this process, which stops it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import warnings
from multiprocessing.connection import Connection
from types import TracebackType

import numpy as np

from ..errors import StreamerError
from .person import Person, find_person


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # (not on every platform)
        return os.cpu_count() or 1


def worth_a_process() -> bool:
    """Whether a separate process would hide the search: torch not yet imported here, 2+ CPUs (and
    a POSIX system, where a child process can be handed pipes)."""
    return "torch" not in sys.modules and _cpus() > 1 and os.name == "posix"


class PersonSearch:
    """:func:`.person.find_person` on a photo, in a separate process while the caller goes on.

    Use it as a context manager (leaving it stops the process) and call :meth:`result` once.

    Args:
        rgb: the photo, [H, W, 3] uint8 RGB.
        strict: as :func:`.person.find_person`.
        separate: search in a separate process (default: :func:`worth_a_process`); False: in this
            one, when :meth:`result` is called.

    Attributes:
        seconds: the search's own time in the separate process (None until its result came, or
            when it ran in this one).
    """

    def __init__(self, rgb: np.ndarray, strict: bool = False, separate: bool | None = None) -> None:
        self.rgb, self.strict = rgb, strict
        self.seconds: float | None = None
        self._process: subprocess.Popen[bytes] | None = None
        if not (worth_a_process() if separate is None else separate):
            return
        photo_in, photo_out = os.pipe()
        answers_in, answers_out = os.pipe()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(photo_in), str(answers_out), str(int(strict))],
                pass_fds=(photo_in, answers_out),
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError:  # (no process to be had: out of memory, a process limit) it runs here then
            for fd in (photo_in, photo_out, answers_in, answers_out):
                os.close(fd)
            return
        os.close(photo_in)  # (the second process's ends)
        os.close(answers_out)
        self._photo = Connection(photo_out, readable=False)
        self._answers = Connection(answers_in, writable=False)
        # The pixels go from a thread: a pipe holds 64 KiB, so sending them here would hold the caller
        # until the new process has started Python and asks for them.
        self._sender = threading.Thread(target=self._send_photo, name="person-search-photo", daemon=True)
        self._sender.start()

    def result(self) -> Person:
        """The person found (waiting for the separate process), its warnings shown here.

        Should that process end without an answer (killed, out of memory), the search runs again here.

        Raises:
            ReconstructionError: as :func:`.person.find_person`.
        """
        if self._process is None:
            return find_person(self.rgb, strict=self.strict)
        try:
            person, error, notes, seconds = self._answers.recv()
        except (EOFError, OSError):
            self.close()
            return find_person(self.rgb, strict=self.strict)
        self.close()
        self.seconds = seconds
        for message, category in notes:
            warnings.warn(message, category, stacklevel=2)
        if error is not None:
            raise error
        return person

    def close(self) -> None:
        """Stop the separate process (if any, and still running) and close its pipes."""
        if self._process is None:
            return
        if self._process.poll() is None:  # (after its answer it would only be tearing MediaPipe down)
            self._process.kill()
        self._process.wait()
        self._sender.join()  # (a send still under way has failed with the process gone)
        self._photo.close()
        self._answers.close()
        self._process = None

    def __enter__(self) -> PersonSearch:  # noqa: PYI034 (a final class, in effect)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _send_photo(self) -> None:
        try:
            self._photo.send(sys.path)
            self._photo.send(self.rgb)
        except OSError:  # the process is gone: result() searches here
            pass


#: The second process's program: this process's ``sys.path`` first (so that it imports the same
#: ``streamer``), then :func:`_search`. A caller gone before it is done ends it without a word.
_CHILD = """
import sys
from multiprocessing.connection import Connection
photo, answers = Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False)
try:
    sys.path[:] = photo.recv()
    from streamer.reconstruct.person_search import _search
    _search(photo, answers, sys.argv[3] == "1")
except (EOFError, BrokenPipeError):
    sys.exit(1)
"""


def _search(photo: Connection, answers: Connection, strict: bool) -> None:
    """The second process: receive the photo, send back (person, error, warnings, seconds)."""
    rgb = photo.recv()
    t0 = time.perf_counter()
    person, error = None, None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            person = find_person(rgb, strict=strict)
        except StreamerError as exc:  # (anything else ends the process with its traceback on stderr)
            error = exc
    notes = [(str(w.message), w.category) for w in caught]
    answers.send((person, error, notes, time.perf_counter() - t0))
