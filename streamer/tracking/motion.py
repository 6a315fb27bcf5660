"""Motion files: a sequence of SMPL-X poses at a frame rate.

Our format is an ``.npz`` with one float32 array per :class:`SmplxPose` field, shaped
``[T, ...]``, plus ``fps`` (a scalar).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..body.pose import FIELDS, SmplxPose
from ..errors import MotionFormatError, PoseError
from ..fileio import atomic_path


@dataclass
class Motion:
    """T frames of SMPL-X poses (``poses`` batched [T, ...]) at ``fps`` frames per second."""

    poses: SmplxPose
    fps: float

    def __post_init__(self) -> None:
        if len(self.poses.batch_shape) != 1 or self.poses.batch_shape[0] < 1:
            raise MotionFormatError(f"a motion needs poses batched as [T, ...], T >= 1; got {self.poses.batch_shape}")
        if not (np.isfinite(self.fps) and 0 < self.fps <= 1000):
            raise MotionFormatError(f"fps must be in (0, 1000], got {self.fps}")
        self.fps = float(self.fps)

    def __len__(self) -> int:
        return len(self.poses)

    @property
    def seconds(self) -> float:
        return len(self) / self.fps

    def save(self, path: str | Path) -> Path:
        """Write our ``.npz`` format atomically."""
        path = Path(path)
        if path.suffix != ".npz":
            raise MotionFormatError(f"{path}: motion files are written as .npz")
        with atomic_path(path) as tmp:
            np.savez(tmp, fps=np.float32(self.fps), **self.poses.to_dict())
        return path


def load_motion(path: str | Path) -> Motion:
    """Read a motion file in our ``.npz`` format.

    Raises:
        MotionFormatError: missing file, not an npz, unknown keys, wrong shapes, NaN.
    """
    path = Path(path)
    if not path.exists():
        raise MotionFormatError(f"motion file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise MotionFormatError(f"{path}: not a readable .npz motion file ({exc})") from None
    if "fps" not in arrays:
        raise MotionFormatError(f"{path}: no 'fps' entry; not a streamer motion file")
    fps = float(np.asarray(arrays.pop("fps")).reshape(-1)[0])
    unknown = sorted(set(arrays) - set(FIELDS))
    if unknown:
        raise MotionFormatError(f"{path}: unknown keys {', '.join(unknown)}; expected SMPL-X fields {', '.join(FIELDS)}")
    if "body_pose" not in arrays or "global_orient" not in arrays:
        raise MotionFormatError(f"{path}: needs at least 'global_orient' and 'body_pose' arrays")
    try:
        poses = SmplxPose.from_dict(arrays)
    except PoseError as exc:
        raise MotionFormatError(f"{path}: {exc}") from None
    return Motion(poses=poses, fps=fps)
