"""Performer calibration: body proportions, floor height and neutral face from a rest pose.

A performer stands a few seconds in a relaxed rest pose, facing the camera. From the landmarks of
those frames (a list of :class:`~streamer.tracking.landmarks.FrameLandmarks`, so this runs
without video):

* **body proportions**: the body model's shape coefficients (betas) whose landmark model best
  matches the median lengths of rigid segments in MediaPipe's metric world landmarks (shoulder
  and hip width, upper arms, forearms, thighs, shanks, trunk, feet), by regularised Gauss-Newton
  (the landmark points are linear in the betas, the lengths are not);
* **floor height**: the median height of the lowest heel / toe point of the body fitted with
  those proportions, in the tracking world (camera at the origin, +Y up; about minus the camera
  height);
* **neutral face**: median jaw opening, eye openness, gaze and face-point positions, which the
  fitter subtracts so that this face reads as closed jaw, open eyes, zero expression.

Profiles are JSON files named after the performer in ``$XDG_CONFIG_HOME/streamer/profiles``
(default ``~/.config/streamer/profiles``), written atomically::

    {"format": "streamer-performer-profile", "version": 1, "name": "alice",
     "betas": [...], "floor_y": -1.21,
     "face": {"jaw": 0.02, "eye_open": {"left": 0.3, "right": 0.31},
              "gaze": {"left": [x, y, z], "right": [x, y, z]}, "points": [[x, y, z], ...]},
     "frames": 90, "stillness_mm": 4.2, "created": "2025-01-01T12:00:00+00:00"}

A missing or corrupt profile raises :class:`ProfileError` naming the file and the problem.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from streamer.errors import ProfileError, TrackingError
from streamer.fileio import atomic_write_bytes

FORMAT = "streamer-performer-profile"
VERSION = 1
#: Fewest usable frames (a person with a visible trunk) a calibration needs.
MIN_FRAMES = 10
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: Rigid segments (MediaPipe pose landmark indices; a tuple is the mean of its landmarks).
SEGMENTS: tuple[tuple[Any, Any], ...] = (
    (11, 12), (23, 24), (11, 13), (12, 14), (13, 15), (14, 16), (23, 25), (24, 26), (25, 27), (26, 28),
    ((11, 12), (23, 24)), (29, 31), (30, 32),
)  # fmt: skip
BETA_LIMIT = 3.0


def _open_eye() -> dict[str, float]:
    from streamer.tracking.fit_face import OPEN_EYE_RATIO

    return {"left": OPEN_EYE_RATIO, "right": OPEN_EYE_RATIO}


@dataclass
class PerformerProfile:
    """A performer's calibration (see the module doc).

    Attributes:
        name: the performer's name (file name of the profile).
        betas: body shape coefficients of the body model, [B].
        floor_y: floor height in the tracking world, metres, or None (feet not seen).
        jaw: neutral jaw opening, radians.
        eye_open: neutral eye openness (lid gap / eye width) per side.
        gaze: neutral eye rotations (axis-angle [3]) per side, or None without iris landmarks.
        face_points: neutral face points in the head frame, metres, [F, 3] (landmark model order), or None.
        frames: frames the calibration used; stillness_mm: median landmark wobble over them.
    """

    name: str
    betas: list[float] = field(default_factory=list)
    floor_y: float | None = None
    jaw: float = 0.0
    eye_open: dict[str, float] = field(default_factory=_open_eye)
    gaze: dict[str, list[float] | None] = field(default_factory=lambda: {"left": None, "right": None})
    face_points: list[list[float]] | None = None
    frames: int = 0
    stillness_mm: float | None = None
    created: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "name": self.name,
            "betas": [float(b) for b in self.betas],
            "floor_y": None if self.floor_y is None else float(self.floor_y),
            "face": {
                "jaw": float(self.jaw),
                "eye_open": {k: float(v) for k, v in self.eye_open.items()},
                "gaze": {k: (None if v is None else [float(x) for x in v]) for k, v in self.gaze.items()},
                "points": self.face_points,
            },
            "frames": int(self.frames),
            "stillness_mm": self.stillness_mm,
            "created": self.created,
        }

    @classmethod
    def from_json(cls, data: Any, source: str = "profile") -> "PerformerProfile":
        """Validate and build a profile from parsed JSON.

        Raises:
            ProfileError: naming ``source`` and the first problem found.
        """

        def bad(msg: str) -> ProfileError:
            return ProfileError(f"{source}: corrupt performer profile: {msg}")

        if not isinstance(data, dict):
            raise bad("not a JSON object")
        if data.get("format") != FORMAT:
            raise bad(f"format is {data.get('format')!r}, expected {FORMAT!r}")
        if data.get("version") != VERSION:
            raise bad(f"version {data.get('version')!r} is not supported (expected {VERSION})")
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise bad("'name' must be a non-empty string")
        betas = _numbers(data.get("betas"), "betas", bad, max_len=400)
        floor = data.get("floor_y")
        if floor is not None and not _is_number(floor):
            raise bad("'floor_y' must be a number or null")
        face = data.get("face", {})
        if not isinstance(face, dict):
            raise bad("'face' must be an object")
        jaw = face.get("jaw", 0.0)
        if not _is_number(jaw):
            raise bad("'face.jaw' must be a number")
        eye_open = face.get("eye_open", _open_eye())
        if not isinstance(eye_open, dict) or set(eye_open) != {"left", "right"} or not all(
            _is_number(v) and v > 0 for v in eye_open.values()
        ):
            raise bad("'face.eye_open' must map left and right to positive numbers")
        gaze_in = face.get("gaze", {"left": None, "right": None})
        if not isinstance(gaze_in, dict) or not set(gaze_in) <= {"left", "right"}:
            raise bad("'face.gaze' must map left / right to [x, y, z] or null")
        gaze = {s: (None if gaze_in.get(s) is None else _numbers(gaze_in[s], f"face.gaze.{s}", bad, length=3)) for s in ("left", "right")}
        points = face.get("points")
        if points is not None:
            if not isinstance(points, list) or not points:
                raise bad("'face.points' must be a list of [x, y, z] or null")
            points = [_numbers(p, "face.points", bad, length=3) for p in points]
        frames = data.get("frames", 0)
        if not isinstance(frames, int) or frames < 0:
            raise bad("'frames' must be a non-negative integer")
        still = data.get("stillness_mm")
        if still is not None and not _is_number(still):
            raise bad("'stillness_mm' must be a number or null")
        return cls(name=name, betas=betas, floor_y=None if floor is None else float(floor), jaw=float(jaw),
                   eye_open={k: float(v) for k, v in eye_open.items()}, gaze=gaze, face_points=points,
                   frames=frames, stillness_mm=None if still is None else float(still), created=str(data.get("created", "")))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _numbers(v: Any, name: str, bad: Any, length: int | None = None, max_len: int | None = None) -> list[float]:
    if not isinstance(v, list) or not all(_is_number(x) for x in v):
        raise bad(f"'{name}' must be a list of finite numbers")
    if length is not None and len(v) != length:
        raise bad(f"'{name}' must hold {length} numbers, got {len(v)}")
    if max_len is not None and len(v) > max_len:
        raise bad(f"'{name}' holds {len(v)} numbers, more than {max_len}")
    return [float(x) for x in v]


# -- where profiles live ------------------------------------------------------------------------


def profiles_dir() -> Path:
    """``$XDG_CONFIG_HOME/streamer/profiles`` (default ``~/.config/streamer/profiles``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "streamer" / "profiles"


def check_name(name: str) -> str:
    """A performer name usable as a file name (letters, digits, ``_ . -``; at most 64).

    Raises:
        ProfileError: naming the rule.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ProfileError(
            f"bad performer name {name!r}: use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    return name


def profile_path(name: str) -> Path:
    """Where the profile called ``name`` lives."""
    return profiles_dir() / f"{check_name(name)}.json"


def save_profile(profile: PerformerProfile, path: str | Path | None = None) -> Path:
    """Write a profile atomically (default: :func:`profile_path` of its name). Returns the path."""
    target = profile_path(profile.name) if path is None else Path(path)
    atomic_write_bytes(target, (json.dumps(profile.to_json(), indent=1) + "\n").encode())
    return target


def load_profile(name_or_path: str | Path) -> PerformerProfile:
    """A profile by name (in :func:`profiles_dir`) or by the path of its JSON file.

    Raises:
        ProfileError: no such profile, unreadable, not JSON, or malformed.
    """
    text = str(name_or_path)
    is_path = isinstance(name_or_path, Path) or text.endswith(".json") or os.sep in text or "/" in text
    path = Path(text).expanduser() if is_path else profile_path(text)
    if not path.is_file():
        where = f"{path}" if is_path else f"{text!r} in {path.parent}"
        raise ProfileError(f"no performer profile {where}; create one with `streamer calibrate performer`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path}: cannot read performer profile ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ProfileError(f"{path}: corrupt performer profile: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    return PerformerProfile.from_json(data, source=str(path))


# -- the calibration ------------------------------------------------------------------------------


def _usable(frames: Sequence[Any]) -> list[Any]:
    out = []
    for f in frames:
        p = f.pose
        if p is None:
            continue
        w, v = np.asarray(p.world, np.float64), np.asarray(p.visibility, np.float64)
        if w.shape == (33, 3) and np.isfinite(w).all() and v.shape == (33,) and v[[11, 12, 23, 24]].min() > 0.5:
            out.append(f)
    return out


def _segment_matrix() -> np.ndarray:
    C = np.zeros((len(SEGMENTS), 33))
    for s, (a, b) in enumerate(SEGMENTS):
        for end, sign in ((a, -1.0), (b, 1.0)):
            idx = end if isinstance(end, tuple) else (end,)
            for i in idx:
                C[s, i] += sign / len(idx)
    return C


def fit_betas(body: Any, frames: Sequence[Any], ridge: float = 1e-4, iterations: int = 6) -> np.ndarray:
    """Shape coefficients matching the median segment lengths of the frames' world landmarks. [B]

    Minimises ``sum_s w_s (|C_s P(beta)| - L_s)^2 + ridge |beta|^2`` over the landmark model's rest
    points ``P(beta)`` (linear in beta), each segment weighted by how often it was seen.
    """
    from streamer.tracking.landmark_model import LandmarkModel

    C = _segment_matrix()
    lengths, weights = [], []
    for s in range(len(SEGMENTS)):
        idx = np.flatnonzero(C[s])
        vals = [float(np.linalg.norm(C[s] @ np.asarray(f.pose.world, np.float64))) for f in frames
                if np.asarray(f.pose.visibility)[idx].min() > 0.5]
        lengths.append(np.median(vals) if vals else 0.0)
        weights.append(len(vals) / max(len(frames), 1))
    L, w = np.array(lengths), np.array(weights)
    B = body.num_betas
    base = LandmarkModel(body).pose_rest
    dirs = np.stack([LandmarkModel(body, np.eye(B)[i]).pose_rest - base for i in range(B)], axis=-1)  # [33, 3, B]
    seg0 = C @ base  # [S, 3]
    segd = np.einsum("sk,kcb->scb", C, dirs)  # [S, 3, B]
    beta = np.zeros(B)
    for _ in range(iterations):
        v = seg0 + segd @ beta
        ell = np.linalg.norm(v, axis=1)
        J = np.einsum("sc,scb->sb", v / np.maximum(ell, 1e-9)[:, None], segd)  # d length / d beta
        r = ell - L
        H = (J * w[:, None]).T @ J + ridge * np.eye(B)
        g = (J * w[:, None]).T @ r + ridge * beta
        beta = np.clip(beta - np.linalg.lstsq(H, g, rcond=None)[0], -BETA_LIMIT, BETA_LIMIT)
    return beta


def calibrate_performer(body: Any, frames: Sequence[Any], name: str, K: Any = None,
                        fit_shape: bool = True) -> PerformerProfile:
    """A performer profile from frames of a rest pose (see the module doc).

    Args:
        body: the body model the profile is for.
        frames: landmarks of a few seconds of the performer standing still, facing the camera.
        name: the performer's name.
        K: camera intrinsics [3, 3] (None: the fitter's field-of-view guess).
        fit_shape: estimate betas (False keeps the mean shape).

    Raises:
        ProfileError: a bad name.
        TrackingError: fewer than :data:`MIN_FRAMES` frames show a person with a visible trunk.
    """
    import torch

    from streamer.body.pose import SmplxPose
    from streamer.tracking.fit import PoseFitter
    from streamer.tracking.landmark_model import posed_points

    check_name(name)
    usable = _usable(frames)
    if len(usable) < MIN_FRAMES:
        raise TrackingError(
            f"performer calibration needs at least {MIN_FRAMES} frames showing a person with shoulders and hips "
            f"in view; got {len(usable)} of {len(frames)}"
        )
    betas = fit_betas(body, usable) if fit_shape else np.zeros(body.num_betas)
    profile = PerformerProfile(name=name, betas=[float(b) for b in betas], frames=len(usable))
    world = np.stack([np.asarray(f.pose.world, np.float64) for f in usable])
    profile.stillness_mm = round(1000.0 * float(np.median(np.linalg.norm(world - np.median(world, axis=0), axis=-1))), 2)
    fitter = PoseFitter(body, K=K, profile=profile, smoothing=False)
    poses, faces = [], []
    for f in usable:
        poses.append(fitter.fit(f))
        if f.face is not None:
            res = fitter.face_fitter.fit(f.face, fitter.K)
            if res is not None:
                faces.append(res)
    # Floor: the lowest heel / toe point of the fitted body, in frames where the feet are seen.
    feet = [29, 30, 31, 32]
    with torch.no_grad():
        pts = posed_points(body, SmplxPose.stack(poses))["pose"]  # [T, 33, 3]
    seen = np.array([np.asarray(f.pose.visibility)[feet].min() > 0.5 for f in usable])
    if seen.any():
        profile.floor_y = float(np.median(pts[seen][:, feet, 1].min(axis=1)))
    if faces:
        profile.jaw = float(np.median([r.jaw for r in faces]))
        profile.eye_open = {s: float(np.median([r.eye_open[s] for r in faces])) for s in ("left", "right")}
        for s in ("left", "right"):
            g = [r.gaze[s] for r in faces if s in r.gaze]
            profile.gaze[s] = np.median(np.stack(g), axis=0).tolist() if g else None
        profile.face_points = np.median(np.stack([r.local for r in faces]), axis=0).tolist()
    profile.created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return profile
