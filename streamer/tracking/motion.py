"""Motion files: a sequence of SMPL-X poses at a frame rate.

Our format is an ``.npz`` with one float32 array per :class:`SmplxPose` field, shaped
``[T, ...]``, plus ``fps`` (a scalar). :func:`load_motion` also reads, telling them apart by
content:

* **AMASS** ``.npz`` (SMPL-H ``poses`` [T, 156]: root, 21 body, 15 left-hand and 15 right-hand
  joints; or the SMPL-X release's [T, 165]: root, 21 body, jaw, two eyes, both hands), with
  ``trans`` [T, 3], ``mocap_framerate`` (``mocap_frame_rate`` in the SMPL-X release) and
  ``betas``. AMASS is Z-up: poses are turned into our Y-up world (x stays, y <- z, z <- -y).
  AMASS hand poses are relative to the MANO *mean* hand (``flat_hand_mean=False``), ours to the
  flat hand, so the mean hand is added: the body model's own ``hands_mean{l,r}`` when a body is
  given (real SMPL-X files carry MANO's), else the relaxed hand of :mod:`.rest_pose` as a
  stand-in. AMASS betas belong to SMPL-H's shape space; they are kept as they are.
* **LHM** ``smplx_params/`` folders (one JSON per frame, as LHM's video-to-motion tool writes
  them: ``root_pose``, ``body_pose``, ``jaw_pose``, ``leye_pose``, ``reye_pose``, ``lhand_pose``,
  ``rhand_pose``, ``betas``, ``trans``, optional ``expr``, and camera metadata ``focal``,
  ``princpt``, ``img_size_wh``, ``pad_ratio`` that is ignored), or a single such JSON. LHM
  poses are in the camera frame (OpenCV, y down); they are turned into the tracking world of
  :mod:`.landmark_model` (the camera frame turned 180 degrees about x: +Y up). Hands are flat-hand
  relative (LHM builds SMPL-X with ``flat_hand_mean=True``). JSON carries no frame rate: ``fps``
  (default 30) gives it.

Turning a pose's root by a world rotation R also moves its translation, because SMPL-X rotates
about the rest pelvis ``J0``: ``transl' = R (transl + J0) - J0``. ``J0`` is the body model's rest
pelvis when a body is given, else SMPL-X's template pelvis (:data:`TEMPLATE_PELVIS`).
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..body.pose import FIELDS, SmplxPose
from ..errors import MotionFormatError, PoseError
from ..fileio import atomic_path

if TYPE_CHECKING:
    from ..body.model import BodyModel

#: SMPL-X template pelvis (rest joint 0, metres) used to re-root translations without a body model.
TEMPLATE_PELVIS = np.array([0.0, -0.35, 0.012])
#: Larger numbers in a motion file are an error (they overflow float32 skinning into NaN).
MAX_ABS_VALUE = 1e5
#: AMASS (Z-up) -> our world (Y-up): x stays, y <- z, z <- -y.
AMASS_TO_WORLD = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
#: LHM camera frame (OpenCV) -> tracking world: turned 180 degrees about x.
LHM_TO_WORLD = np.diag([1.0, -1.0, -1.0])
#: Keys an AMASS file may carry besides the pose arrays we read (ignored).
AMASS_METADATA = frozenset(
    {"gender", "dmpls", "marker_data", "marker_labels", "surface_model_type", "num_betas", "root_orient",
     "pose_body", "pose_hand", "pose_jaw", "pose_eye", "markers_latent", "latent_labels", "markers_latent_vids",
     "mocap_time_length", "num_dmpls", "markers", "labels", "markers_obs", "labels_obs", "markers_sim"}
)
AMASS_POSE_KEYS = frozenset({"poses", "trans", "betas", "mocap_framerate", "mocap_frame_rate"})
#: LHM JSON keys: pose arrays (name -> (our field, values per frame)) and ignored camera metadata.
LHM_FIELDS: dict[str, tuple[str, int]] = {
    "root_pose": ("global_orient", 3), "body_pose": ("body_pose", 63), "jaw_pose": ("jaw_pose", 3),
    "leye_pose": ("leye_pose", 3), "reye_pose": ("reye_pose", 3), "lhand_pose": ("left_hand_pose", 45),
    "rhand_pose": ("right_hand_pose", 45), "trans": ("transl", 3),
}  # fmt: skip
LHM_METADATA = frozenset({"focal", "princpt", "img_size_wh", "pad_ratio"})


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


def load_motion(
    path: str | Path,
    *,
    body: "BodyModel | None" = None,
    fps: float | None = None,
    hand_mean: tuple[np.ndarray, np.ndarray] | None = None,
) -> Motion:
    """Read a motion: our ``.npz``, an AMASS ``.npz`` or an LHM ``smplx_params`` folder / JSON.

    Args:
        path: the file or folder.
        body: the body model the motion will drive; gives the rest pelvis for re-rooting AMASS and
            LHM translations and (real SMPL-X files) MANO's mean hand for AMASS hands.
        fps: frame rate for LHM folders (default 30); ignored for files that store one.
        hand_mean: (left, right) mean hand poses [15, 3] to add to AMASS hands, overriding ``body``.

    Raises:
        MotionFormatError: missing file, unreadable or unknown format, unknown keys, wrong
            shapes, NaN; the message names the file and the key.
    """
    path = Path(path)
    if not path.exists():
        raise MotionFormatError(f"motion file not found: {path}")
    try:
        return _load(path, body, fps, hand_mean)
    except MotionFormatError as exc:  # every message names the file
        if str(exc).startswith(str(path)):
            raise
        raise MotionFormatError(f"{path}: {exc}") from None


def _load(
    path: Path, body: "BodyModel | None", fps: float | None, hand_mean: tuple[np.ndarray, np.ndarray] | None
) -> Motion:
    if path.is_dir() or path.suffix.lower() == ".json":
        return _load_lhm(path, body, 30.0 if fps is None else fps)
    try:
        with open(path, "rb") as fh:
            magic = fh.read(2)
    except OSError as exc:
        raise MotionFormatError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if magic != b"PK":
        raise MotionFormatError(f"{path}: not a .npz motion file (a .npz is a zip archive of arrays)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise MotionFormatError(f"{path}: not a readable .npz motion file ({exc})") from None
    if "fps" in arrays:
        return _load_ours(path, arrays)
    if "poses" in arrays:
        return _load_amass(path, arrays, body, hand_mean)
    raise MotionFormatError(
        f"{path}: no 'fps' entry (streamer motion) and no 'poses' (AMASS); keys: {', '.join(sorted(arrays)) or 'none'}"
    )


def _load_ours(path: Path, arrays: dict[str, np.ndarray]) -> Motion:
    fps = _scalar(path, "fps", arrays.pop("fps"))
    unknown = sorted(set(arrays) - set(FIELDS))
    if unknown:
        raise MotionFormatError(f"{path}: unknown keys {', '.join(unknown)}; expected SMPL-X fields {', '.join(FIELDS)}")
    if "body_pose" not in arrays or "global_orient" not in arrays:
        raise MotionFormatError(f"{path}: needs at least 'global_orient' and 'body_pose' arrays")
    try:
        poses = SmplxPose.from_dict({k: _numeric(path, k, v) for k, v in arrays.items()})
    except PoseError as exc:
        raise MotionFormatError(f"{path}: {exc}") from None
    return Motion(poses=poses, fps=fps)


def _finite(path: Path | str, name: str, value: np.ndarray) -> np.ndarray:
    if not np.isfinite(value).all():
        bad = np.argwhere(~np.isfinite(value))[0].tolist()
        raise MotionFormatError(f"{path}: {name} contains NaN or infinite values (first at index {bad})")
    return value


def _numeric(path: Path | str, name: str, value: Any) -> np.ndarray:
    """``value`` as float64, refused unless real numbers, finite and of a plausible size (radians,
    metres, frames per second: nothing near :data:`MAX_ABS_VALUE`)."""
    try:
        raw = np.asarray(value)
        if raw.dtype.kind not in "biuf":  # complex, strings, objects
            raise TypeError(raw.dtype)
        arr = raw.astype(np.float64)
    except (TypeError, ValueError):
        raise MotionFormatError(f"{path}: {name} is not numeric") from None
    _finite(path, name, arr)
    if arr.size and np.abs(arr).max() > MAX_ABS_VALUE:
        raise MotionFormatError(
            f"{path}: {name} holds values up to {np.abs(arr).max():.3g}; poses are angles in radians and "
            "translations in metres"
        )
    return arr


def _scalar(path: Path | str, name: str, value: Any) -> float:
    arr = _numeric(path, name, value)
    if arr.size != 1:
        raise MotionFormatError(f"{path}: {name} must be one number, got an array of shape {arr.shape}")
    return float(arr.reshape(-1)[0])


def _pelvis(body: "BodyModel | None") -> np.ndarray:
    if body is None:
        return TEMPLATE_PELVIS
    with torch.no_grad():
        return body.rest_joints()[0].double().cpu().numpy()


def _reroot(R: np.ndarray, orient: np.ndarray, transl: np.ndarray, pelvis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Turn whole poses by the world rotation R. orient [T, 3] axis-angle, transl [T, 3]."""
    from .rotations import log_rot, rodrigues

    return log_rot(R @ rodrigues(orient)), (transl + pelvis) @ R.T - pelvis


def mano_hand_mean(body: "BodyModel") -> tuple[np.ndarray, np.ndarray] | None:
    """The (left, right) mean hand poses [15, 3] stored in a body model's file, if it has them."""
    try:
        with np.load(body.npz_path, allow_pickle=True) as data:
            if "hands_meanl" in data.files and "hands_meanr" in data.files:
                return (np.asarray(data["hands_meanl"], np.float64).reshape(15, 3),
                        np.asarray(data["hands_meanr"], np.float64).reshape(15, 3))
    except (OSError, ValueError, zipfile.BadZipFile):
        return None
    return None


def _load_amass(path: Path, arrays: dict[str, np.ndarray], body: "BodyModel | None",
                hand_mean: tuple[np.ndarray, np.ndarray] | None) -> Motion:
    from .rest_pose import relaxed_hand_pose

    unknown = sorted(set(arrays) - AMASS_POSE_KEYS - AMASS_METADATA)
    if unknown:
        raise MotionFormatError(f"{path}: unknown keys {', '.join(unknown)} in an AMASS file")
    poses = _numeric(path, "poses", arrays["poses"])
    if poses.ndim != 2 or poses.shape[1] not in (156, 165) or len(poses) < 1:
        raise MotionFormatError(
            f"{path}: AMASS poses must be [T, 156] (SMPL-H) or [T, 165] (SMPL-X), got {list(poses.shape)}"
        )
    T = len(poses)
    if "trans" not in arrays:
        raise MotionFormatError(f"{path}: AMASS file without 'trans'")
    trans = _numeric(path, "trans", arrays["trans"])
    if trans.shape != (T, 3):
        raise MotionFormatError(f"{path}: trans must be [{T}, 3] to match poses, got {list(trans.shape)}")
    rate_key = "mocap_framerate" if "mocap_framerate" in arrays else "mocap_frame_rate"
    if rate_key not in arrays:
        raise MotionFormatError(f"{path}: AMASS file without 'mocap_framerate' (or 'mocap_frame_rate')")
    fps = _scalar(path, rate_key, arrays[rate_key])
    betas = _numeric(path, "betas", arrays["betas"]).reshape(-1) if "betas" in arrays else np.zeros(10)
    p = poses.reshape(T, -1, 3)
    if p.shape[1] == 52:  # SMPL-H: root, 21 body, 15 + 15 hand joints
        jaw = leye = reye = np.zeros((T, 3))
        lhand, rhand = p[:, 22:37], p[:, 37:52]
    else:  # SMPL-X: root, 21 body, jaw, left eye, right eye, 15 + 15 hand joints
        jaw, leye, reye = p[:, 22], p[:, 23], p[:, 24]
        lhand, rhand = p[:, 25:40], p[:, 40:55]
    mean = hand_mean or (mano_hand_mean(body) if body is not None else None)
    if mean is None:
        mean = (relaxed_hand_pose("left"), relaxed_hand_pose("right"))
    orient, transl = _reroot(AMASS_TO_WORLD, p[:, 0], trans, _pelvis(body))
    fields = {
        "global_orient": orient, "body_pose": p[:, 1:22], "jaw_pose": jaw, "leye_pose": leye, "reye_pose": reye,
        "left_hand_pose": lhand + np.asarray(mean[0]).reshape(15, 3),
        "right_hand_pose": rhand + np.asarray(mean[1]).reshape(15, 3),
        "betas": np.broadcast_to(betas, (T, len(betas))), "transl": transl,
        "expression": np.zeros((T, 10)),
    }  # fmt: skip
    try:
        return Motion(poses=SmplxPose.from_dict({k: np.asarray(v, np.float32) for k, v in fields.items()}), fps=fps)
    except PoseError as exc:
        raise MotionFormatError(f"{path}: {exc}") from None


def _frame_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    folder = path / "smplx_params" if (path / "smplx_params").is_dir() else path
    files = [f for f in folder.iterdir() if f.suffix.lower() == ".json" and f.is_file()]
    if not files:
        raise MotionFormatError(
            f"{path}: a folder without LHM smplx_params/*.json frames (a motion is a .npz file, "
            "from streamer track or AMASS, or LHM's folder of per-frame .json files)"
        )

    def key(f: Path) -> tuple:
        return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", f.stem))

    return sorted(files, key=key)


def _load_lhm(path: Path, body: "BodyModel | None", fps: float) -> Motion:
    files = _frame_files(path)
    columns: dict[str, list[np.ndarray]] = {field: [] for field, _ in LHM_FIELDS.values()}
    columns["betas"], columns["expression"] = [], []
    for f in files:
        try:
            frame = json.loads(f.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MotionFormatError(f"{f}: not a readable LHM smplx_params JSON ({exc})") from None
        if not isinstance(frame, dict):
            raise MotionFormatError(f"{f}: an LHM frame must be a JSON object of SMPL-X parameters")
        unknown = sorted(set(frame) - set(LHM_FIELDS) - LHM_METADATA - {"betas", "expr"})
        if unknown:
            raise MotionFormatError(f"{f}: unknown keys {', '.join(unknown)} in an LHM frame")
        for key in ("root_pose", "body_pose"):
            if key not in frame:
                raise MotionFormatError(f"{f}: LHM frame without '{key}'")
        for key, (field, size) in LHM_FIELDS.items():
            value = _numeric(f, key, frame.get(key, np.zeros(size))).reshape(-1)
            if value.size != size:
                raise MotionFormatError(f"{f}: {key} must hold {size} values, got {value.size}")
            columns[field].append(value)
        columns["betas"].append(_numeric(f, "betas", frame.get("betas", np.zeros(10))).reshape(-1))
        columns["expression"].append(_numeric(f, "expr", frame.get("expr", np.zeros(10))).reshape(-1))
    for name in ("betas", "expression"):
        sizes = {len(v) for v in columns[name]}
        if len(sizes) > 1:
            raise MotionFormatError(f"{path}: {name} length differs between frames ({sorted(sizes)})")
    T = len(files)
    data = {k: np.stack(v) for k, v in columns.items()}
    data["body_pose"] = data["body_pose"].reshape(T, 21, 3)
    data["left_hand_pose"] = data["left_hand_pose"].reshape(T, 15, 3)
    data["right_hand_pose"] = data["right_hand_pose"].reshape(T, 15, 3)
    data["global_orient"], data["transl"] = _reroot(LHM_TO_WORLD, data["global_orient"], data["transl"], _pelvis(body))
    try:
        return Motion(poses=SmplxPose.from_dict({k: np.asarray(v, np.float32) for k, v in data.items()}), fps=fps)
    except PoseError as exc:
        raise MotionFormatError(f"{path}: {exc}") from None
