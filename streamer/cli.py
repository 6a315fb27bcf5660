"""The ``streamer`` console script: one sub-command per verb.

Each module in :mod:`streamer.commands` that defines ``add_parser(subparsers)`` adds a verb
(``streamer <verb>``). Modules may also define ``add_bench_parser(subparsers)`` or
``add_eval_parser(subparsers)`` to add sub-verbs under ``streamer bench`` / ``streamer eval``.
Every parser sets ``func=handler`` with ``handler(args) -> int`` (the exit code).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import pkgutil
import signal
import sys
import threading
import warnings
from collections.abc import Callable
from types import FrameType, ModuleType

from . import __version__, commands
from .errors import StreamerError, StreamerWarning

GROUPS = {
    "bench": "measure per-stage speed (medians in ms)",
    "eval": "measure quality against ground truth",
    "calibrate": "camera and performer calibration",
}


def _command_modules() -> list[ModuleType]:
    names = sorted(m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_"))
    return [importlib.import_module(f"{commands.__name__}.{name}") for name in names]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamer",
        description="Real-time animatable 3D Gaussian avatars: reconstruct, track, render, stream.",
    )
    parser.add_argument("--version", action="version", version=f"streamer {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    modules = _command_modules()
    for group, help_text in GROUPS.items():
        hook = f"add_{group}_parser"
        members = [m for m in modules if hasattr(m, hook)]
        if members:
            group_parser = sub.add_parser(group, help=help_text)
            group_sub = group_parser.add_subparsers(dest=f"{group}_verb", required=True, metavar="WHAT")
            for m in members:
                getattr(m, hook)(group_sub)
    for m in modules:
        if hasattr(m, "add_parser"):
            m.add_parser(sub)
    return parser


class _Terminated:
    """SIGTERM (``kill``, ``timeout``, a service stopping) handled as Ctrl-C: the command unwinds
    (outputs being written are removed, ``serve`` closes its sessions, a live ``track`` keeps what
    it recorded); then, if the command did not finish by itself, the process ends by the signal,
    as it would have without the handler."""

    def __init__(self) -> None:
        self.received = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.received = True
        raise KeyboardInterrupt


def _command_name(args: argparse.Namespace | None) -> str:
    """``streamer eval recon`` (as far as the arguments were parsed)."""
    words = (args.verb, getattr(args, f"{args.verb}_verb", None)) if args is not None else ()
    return " ".join(["streamer", *filter(None, words)])


def _say_our_warnings(command: str) -> Callable[..., None]:
    """A ``warnings.showwarning`` that prints :class:`StreamerWarning` as ``streamer VERB: warning:
    ...``, like the errors (Python's default shows a file, a line number and the line); other
    warnings keep their form."""
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
        if issubclass(category, StreamerWarning):
            print(f"{command}: warning: {message}", file=sys.stderr if file is None else file)
        else:
            default(message, category, filename, lineno, file, line)

    return show


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (errors: 2 with a one-line message; Ctrl-C: 130;
    SIGTERM: the same clean-up as Ctrl-C, then the process ends by the signal).

    Only on the main thread (the console script's) does it handle SIGTERM and print warnings its
    own way: both are the process's, not a call's.
    """
    in_main_thread = threading.current_thread() is threading.main_thread()
    terminated = _Terminated()
    # (a SIGTERM that the caller set to be ignored, or handles itself, is left so)
    takes_sigterm = in_main_thread and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    if takes_sigterm:
        signal.signal(signal.SIGTERM, terminated)
    shown = warnings.showwarning
    args: argparse.Namespace | None = None
    try:
        args = build_parser().parse_args(argv)  # (inside: Ctrl-C while the modules load is no traceback)
        if in_main_thread:
            warnings.showwarning = _say_our_warnings(_command_name(args))
        return int(args.func(args) or 0)
    except StreamerError as exc:
        print(f"{_command_name(args)}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("terminated" if terminated.received else "interrupted", file=sys.stderr)
        if terminated.received:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
        return 130
    finally:
        if in_main_thread:
            warnings.showwarning = shown
        if takes_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def console() -> None:
    """The console script's entry: :func:`main`, then the process's exit, sooner.

    With torch loaded, the garbage collector's last passes over everything the modules made took
    0.4 of the 0.6-0.8 s that Python spent ending the process after ``streamer reconstruct`` on
    2 cores. No object of ours needs them: the commands have closed their files and processes by
    now, and the operating system frees the memory. Freezing the heap skips them; everything else
    about the exit (atexit handlers, threads joined, streams flushed) stays as it was.
    """
    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    console()
