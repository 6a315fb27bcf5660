"""The ``streamer`` console script: one sub-command per verb.

Each module in :mod:`streamer.commands` that defines ``add_parser(subparsers)`` adds a verb
(``streamer <verb>``). Modules may also define ``add_bench_parser(subparsers)`` or
``add_eval_parser(subparsers)`` to add sub-verbs under ``streamer bench`` / ``streamer eval``.
Every parser sets ``func=handler`` with ``handler(args) -> int`` (the exit code).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import signal
import sys
import threading
import warnings
from pathlib import Path
from types import FrameType, ModuleType

from . import __version__, commands
from .errors import StreamerError

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


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM (``kill``, ``timeout``, a service stopping) unwinds like Ctrl-C: output files being
    written are removed instead of left half-written under their temporary names."""
    raise SystemExit(128 + signum)


def _command_name(args: argparse.Namespace | None) -> str:
    """``streamer eval recon`` (as far as the arguments were parsed)."""
    words = (args.verb, getattr(args, f"{args.verb}_verb", None)) if args is not None else ()
    return " ".join(["streamer", *filter(None, words)])


def _say_our_warnings(command: str) -> None:
    """Warnings raised by streamer's own code print as ``streamer VERB: warning: ...``, like its errors
    (Python's default shows a file, a line number and the line); other libraries' keep their form."""
    package = Path(__file__).resolve().parent
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
        if issubclass(category, UserWarning) and Path(filename).resolve().is_relative_to(package):
            print(f"{command}: warning: {message}", file=sys.stderr if file is None else file)
        else:
            default(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (errors: 2 with a one-line message; Ctrl-C: 130;
    SIGTERM: 143, after the same clean-up)."""
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if in_main_thread else None
    args: argparse.Namespace | None = None
    shown = warnings.showwarning
    try:
        args = build_parser().parse_args(argv)  # (inside: Ctrl-C while the modules load is no traceback)
        _say_our_warnings(_command_name(args))
        return int(args.func(args) or 0)
    except StreamerError as exc:
        print(f"{_command_name(args)}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = shown
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
