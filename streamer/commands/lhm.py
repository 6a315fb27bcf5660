"""``streamer lhm info|check-manifest|check-checkpoint``: the LHM network's tools."""

from ..reconstruct.lhm.cli import add_lhm_commands as add_parser

__all__ = ["add_parser"]
