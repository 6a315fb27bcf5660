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


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (errors: 2 with a one-line message; Ctrl-C: 130;
    SIGTERM: 143, after the same clean-up)."""
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if in_main_thread else None
    args: argparse.Namespace | None = None
    try:
        args = build_parser().parse_args(argv)  # (inside: Ctrl-C while the modules load is no traceback)
        return int(args.func(args) or 0)
    except StreamerError as exc:
        words = (args.verb, getattr(args, f"{args.verb}_verb", None)) if args is not None else ()
        print(f"{' '.join(['streamer', *filter(None, words)])}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
