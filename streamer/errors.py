"""Exceptions raised by the streamer package.

Every error the package raises on purpose derives from :class:`StreamerError`::

    StreamerError
     ├── InputError (also ValueError)  bad data handed to us: shapes, NaN, options
     │    ├── PoseError                 an SmplxPose with wrong shapes or non-finite values
     │    ├── AvatarFormatError         a .ply that is truncated or not a 3DGS avatar
     │    └── MotionFormatError         a motion file we cannot read
     ├── BodyModelError                 body model files missing or malformed
     └── BackendUnavailableError        a renderer backend that cannot run here
"""

from __future__ import annotations


class StreamerError(Exception):
    """Root of every error raised on purpose by this package."""


class InputError(StreamerError, ValueError):
    """Bad input: wrong shapes, non-finite values, unknown options."""


class PoseError(InputError):
    """An SMPL-X pose with wrong shapes or non-finite values."""


class AvatarFormatError(InputError):
    """An avatar file that is truncated, corrupt or not a 3DGS avatar."""


class MotionFormatError(InputError):
    """A motion file that cannot be read."""


class BodyModelError(StreamerError):
    """Body model files are missing or malformed."""


class BackendUnavailableError(StreamerError):
    """A renderer (or other) backend was requested that cannot run on this machine."""
