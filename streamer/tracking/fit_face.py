"""Face fit: head rotation, jaw opening, eye openness and gaze from Face Mesh landmarks.

* **Head**: a scaled rigid fit (Umeyama) of the rigid face points of :mod:`.landmark_model`
  (eye corners, nose bridge and tip, forehead, cheek edges) to the observed ones; Face Mesh's
  image landmarks (x, y pixels, z relative depth on the x scale) are nearly a scaled orthographic
  view of the face along its viewing ray; they are turned by the rotation from the optical axis
  to that ray (perspective correction) before the fit.
* **Jaw**: the gap between the inner lips (13 above, 14 below) in the head frame, in metres
  (by the fitted scale), turned into the jaw rotation about x that opens the lower lip that far.
* **Eyes**: openness = eyelid gap / eye width per eye (about 0.29 open for the landmark model;
  near 0 closed); gaze (with iris refinement, 478 landmarks): the iris centre's offset from the
  eyeball centre in the head frame gives the eye rotation (``leye_pose`` / ``reye_pose``,
  relative to the head).

The raw measurements are returned; the caller subtracts a performer's neutral face baselines.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..body.joints import JOINT_INDEX
from .landmark_model import EYEBALL_RADIUS, FACE_IRIS, FACE_POINTS, FACE_RIGID, WORLD_TO_CAMERA, LandmarkModel, view_rotation
from .landmarks import FaceLandmarks
from .rotations import kabsch, rotation_between, log_rot

def _open_eye_ratio() -> float:
    p = {i: np.array(pos) for i, (_, pos) in FACE_POINTS.items()}
    return float((p[386][1] - p[374][1]) / np.linalg.norm(p[263] - p[362]))


#: Openness (lid gap / eye width) of an open eye in the landmark model; blinks are relative to it.
OPEN_EYE_RATIO = _open_eye_ratio()


@dataclass
class FaceResult:
    """One frame's face measurements.

    Attributes:
        head: global head rotation, tracking world. [3, 3]
        jaw: jaw opening, radians about x (>= 0; not baseline-corrected).
        eye_open: per side, lid gap / eye width (not baseline-corrected).
        gaze: per side, the eye's rotation relative to the head, axis-angle [3], if irises are present.
        rms: rigid-fit residual, metres (a quality measure).
        local: the observed face points of :data:`~.landmark_model.FACE_POINTS` in the head's
            rest frame, metres. [F, 3]
    """

    head: np.ndarray
    jaw: float
    eye_open: dict[str, float]
    gaze: dict[str, np.ndarray] = field(default_factory=dict)
    rms: float = 0.0
    local: np.ndarray | None = None


class FaceFitter:
    """Face measurements for one body shape (see the module doc)."""

    def __init__(self, lm: LandmarkModel) -> None:
        self.lm = lm
        idx = {int(i): k for k, i in enumerate(lm.face_index)}
        self.idx = idx
        self.rigid = np.array([idx[i] for i in FACE_RIGID])
        self.rigid_ids = np.array(FACE_RIGID)
        rest = lm.face_rest
        self.rest_rigid = rest[self.rigid]
        jaw = lm.rest_joints[JOINT_INDEX["jaw"]]
        self.lip_arm = rest[idx[14]] - jaw  # lower lip about the jaw joint, [3]
        self.eye_centre = lm.eye_centres
        self.open_gap = float(rest[idx[386], 1] - rest[idx[374], 1])  # open eye's lid gap, metres
        self.eye_radius = EYEBALL_RADIUS

    def fit(self, face: FaceLandmarks, K: np.ndarray) -> FaceResult | None:
        """Measurements of one face, or None when the landmarks are unusable."""
        img = np.asarray(face.image, dtype=np.float64)
        if img.ndim != 2 or img.shape[0] < 468 or img.shape[1] != 3:
            return None
        ids = self.lm.face_index
        pts = img[ids]
        if not np.isfinite(pts).all():
            return None
        R_view = view_rotation(img[ids[self.idx[168]], :2], K)
        X = pts @ WORLD_TO_CAMERA.T @ R_view.T  # tracking axes, pixels
        R, s, t = kabsch(self.rest_rigid, X[self.rigid])
        if not np.isfinite(R).all() or s <= 0:
            return None
        local = (X - t) @ R / s  # observed points in the head's rest frame, metres
        rms = float(np.sqrt(np.mean(np.sum((local[self.rigid] - self.rest_rigid) ** 2, axis=1))))
        idx = self.idx
        # Jaw: the lower lip has dropped by the lip gap; solve the jaw angle that does that.
        # Turning the lower lip (arm v from the jaw joint) by theta about x drops it by
        # v_z sin(theta) + v_y (1 - cos(theta)) = r sin(theta - phi) + v_y.
        gap = float(local[idx[13], 1] - local[idx[14], 1])
        vy, vz = float(self.lip_arm[1]), float(self.lip_arm[2])
        radius, phi = float(np.hypot(vy, vz)), float(np.arctan2(vy, vz))
        jaw = max(0.0, phi + float(np.arcsin(np.clip((gap - vy) / radius, -1.0, 1.0))))
        eye_open = {}
        for side, (outer, inner, upper, lower) in (("right", (33, 133, 159, 145)), ("left", (263, 362, 386, 374))):
            width = float(np.linalg.norm(local[idx[outer]] - local[idx[inner]]))
            eye_open[side] = float(local[idx[upper], 1] - local[idx[lower], 1]) / max(width, 1e-6)
        gaze: dict[str, np.ndarray] = {}
        if img.shape[0] >= 478:
            for side, i in FACE_IRIS.items():
                iris = (img[i] @ WORLD_TO_CAMERA.T @ R_view.T - t) @ R / s
                off = (iris - self.eye_centre[side])[:2] / self.eye_radius
                n = float(np.hypot(*off))
                if n > 0.95:
                    off = off * (0.95 / n)
                d = np.array([off[0], off[1], np.sqrt(max(1.0 - off @ off, 0.0))])
                gaze[side] = log_rot(rotation_between(np.array([0.0, 0.0, 1.0]), d))
        return FaceResult(head=R, jaw=jaw, eye_open=eye_open, gaze=gaze, rms=rms, local=local)
