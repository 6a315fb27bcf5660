"""Errors raised by the LHM network package.

They hang under the package root :class:`streamer.errors.StreamerError`::

    StreamerError
     └── LHMError                        anything LHM-specific that is not bad user input
          ├── CheckpointNotFoundError    (also FileNotFoundError) no checkpoint where expected
          ├── CheckpointFormatError      a file that is not a readable state dict
          ├── CheckpointMismatchError    keys / shapes differ from the network (strict load)
          ├── EncoderNotFoundError       (also FileNotFoundError) the Sapiens TorchScript is missing
          └── ManifestError              a manifest json we cannot read

Bad tensors or options handed to the network raise :class:`streamer.errors.InputError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...errors import StreamerError

if TYPE_CHECKING:  # pragma: no cover
    from .state_dict_diff import StateDictDiff


class LHMError(StreamerError):
    """Root of the LHM-specific errors."""


class CheckpointNotFoundError(LHMError, FileNotFoundError):
    """No checkpoint file at the path where one was expected."""


class CheckpointFormatError(LHMError):
    """A checkpoint file that cannot be read as a flat state dict of tensors."""


class CheckpointMismatchError(LHMError):
    """A checkpoint whose keys or shapes do not match the network (strict load).

    Attributes:
        diff: the full comparison; ``str(error)`` names the first offending keys.
    """

    def __init__(self, message: str, diff: StateDictDiff) -> None:
        super().__init__(message)
        self.diff = diff


class EncoderNotFoundError(LHMError, FileNotFoundError):
    """The user-supplied Sapiens TorchScript file is missing."""


class EncoderFormatError(LHMError):
    """A Sapiens file that exists but is not a loadable TorchScript archive."""


class ManifestError(LHMError):
    """A state-dict manifest json that is missing or malformed."""
