"""Exceptions raised by the streamer package.

Every error the package raises on purpose derives from :class:`StreamerError`::

    StreamerError
     ├── InputError (also ValueError)  bad data handed to us: shapes, NaN, options
     │    ├── PoseError                 an SmplxPose with wrong shapes or non-finite values
     │    ├── AvatarFormatError         a .ply that is truncated or not a 3DGS avatar
     │    ├── MotionFormatError         a motion file we cannot read
     │    ├── SourceError               a video file or camera that cannot be opened or decoded
     │    ├── CameraCalibrationError    camera intrinsics that cannot be computed or read
     │    └── ProfileError              a performer profile that is missing or corrupt
     ├── BodyModelError                 body model files missing or malformed
     ├── TrackingError                  landmark tracking cannot run as asked, or found nobody
     │    └── ModelUnavailableError     a MediaPipe model that is not bundled (would need a download)
     ├── BackendUnavailableError        a renderer backend that cannot run here
     ├── ReconstructionError            a photo that cannot become an avatar: unreadable, too large,
     │                                  nobody (or nobody whole enough) in it
     ├── StreamError                    the avatar server cannot start or serve as asked
     │    └── SignallingError           a bad signalling message (JSON, type, SDP, size, state)
     └── LHMError                       LHM checkpoints, encoders, manifests
                                        (tree in streamer/reconstruct/lhm/errors.py)
"""

from __future__ import annotations


class StreamerError(Exception):
    """Root of every error raised on purpose by this package."""


class StreamerWarning(UserWarning):
    """Something the person running a command should know (printed as ``streamer VERB: warning: ...``)."""


class InputError(StreamerError, ValueError):
    """Bad input: wrong shapes, non-finite values, unknown options."""


class PoseError(InputError):
    """An SMPL-X pose with wrong shapes or non-finite values."""


class AvatarFormatError(InputError):
    """An avatar file that is truncated, corrupt or not a 3DGS avatar."""


class MotionFormatError(InputError):
    """A motion file that cannot be read."""


class SourceError(InputError):
    """A video file or camera that cannot be opened, or a video that cannot be decoded."""


class CameraCalibrationError(InputError):
    """Camera intrinsics that cannot be computed (too few views) or a corrupt intrinsics file."""


class ProfileError(InputError):
    """A performer profile that is missing, unreadable or malformed (or a bad profile name)."""


class BodyModelError(StreamerError):
    """Body model files are missing or malformed."""


class BackendUnavailableError(StreamerError):
    """A renderer (or other) backend was requested that cannot run on this machine."""


class TrackingError(StreamerError):
    """Landmark tracking cannot run as asked, or found no person at all."""


class ModelUnavailableError(TrackingError):
    """A MediaPipe model that this install does not bundle (using it would need a download)."""


class ReconstructionError(StreamerError):
    """A photo that cannot be reconstructed: unreadable, unsupported, too large, or no usable person."""


class StreamError(StreamerError):
    """The avatar server cannot start (port in use, web client missing) or serve as asked."""


class SignallingError(StreamError):
    """A signalling message the server refuses; ``code`` names the reason for the client.

    Codes: ``bad_json``, ``bad_message``, ``unknown_type``, ``bad_sdp``, ``too_large``, ``bad_state``,
    ``busy``, ``timeout`` (no offer, or no media connection, in time), ``forbidden`` (a performer
    without the server's performer key), ``internal`` (and ``replaced``, sent when another performer
    takes the stage).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
