"""The ``streamer`` console script: one sub-command per verb."""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .errors import StreamerError


def build_parser() -> argparse.ArgumentParser:
    from .commands import bench, render

    parser = argparse.ArgumentParser(
        prog="streamer",
        description="Real-time animatable 3D Gaussian avatars: reconstruct, track, render, stream.",
    )
    parser.add_argument("--version", action="version", version=f"streamer {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    render.add_parser(sub)
    bench.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (errors: 2 with a one-line message)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except StreamerError as exc:
        print(f"streamer {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
