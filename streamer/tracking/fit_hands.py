"""Hand fit: the wrist's global rotation and 15 finger joints from MediaPipe's 21 hand landmarks.

Analytic and vectorised over the five fingers (about 0.1 ms a hand):

1. The palm frame (wrist -> middle knuckle, pinky knuckle -> index knuckle) of the observed hand
   against the same frame of the model's rest hand gives the hand's global rotation; the body fit
   uses it for the wrist and the forearm twist.
   Image-only landmarks (Holistic) get their depth rebuilt from the model's bone lengths at the
   body's scale (:func:`hand_points`), since MediaPipe's relative depth of hands is flattened.
2. Every finger bone's observed direction, expressed in that palm frame, is matched by the
   smallest rotation of the bone from its rest direction, joint by joint from the knuckle out
   (swing only: a finger has no visible twist). The rest directions are the model's own hand of
   that side, so left and right hands need no special cases.

Landmarks are the person's left / right hand (:mod:`.landmarks`); MediaPipe's world landmarks are
used when present, else the image landmarks (pixels with relative depth, same shape up to scale).
A hand off the optical axis is seen at an angle: its points are turned by the rotation from the
optical axis to the hand's viewing ray (perspective correction).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .landmark_model import FINGER_LANDMARKS, WORLD_TO_CAMERA, LandmarkModel, view_rotation
from .landmarks import HandLandmarks
from .rotations import cross, frame, rotation_between

WRIST, INDEX_MCP, MIDDLE_MCP, PINKY_MCP = 0, 5, 9, 17
#: Parent of each hand landmark in the hand's tree (the wrist is the root).
HAND_PARENTS = np.array([-1, 0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11, 0, 13, 14, 15, 0, 17, 18, 19])


@dataclass
class HandResult:
    """``rot`` [15, 3, 3] local finger rotations (SMPL-X hand joint order); ``wrist`` [3, 3] the
    observed global wrist rotation, tracking world."""

    rot: np.ndarray
    wrist: np.ndarray


def hand_points(hand: HandLandmarks, K: np.ndarray, bone_px: np.ndarray | None = None) -> np.ndarray | None:
    """The hand's 21 points in tracking-world axes (arbitrary origin and scale). [21, 3] or None

    World landmarks are used when present. Otherwise the image landmarks, whose relative depth is
    unreliable (often flattened): given ``bone_px`` (each bone's model length in pixels at the
    hand's depth, [21], 0 for the wrist), each bone's depth step is rebuilt so that its 3D length
    matches, keeping only the sign of MediaPipe's depth step (foreshortening, as in Taylor's
    reconstruction from a single view).
    """
    img = np.asarray(hand.image, dtype=np.float64)
    img_ok = img.shape == (21, 3) and np.isfinite(img).all()
    if hand.world is not None:
        pts = np.asarray(hand.world, dtype=np.float64)
    elif img_ok and bone_px is not None:
        pts = img.copy()
        par = HAND_PARENTS[1:]
        step2 = ((img[1:, :2] - img[par, :2]) ** 2).sum(axis=1)
        dz = np.sign(img[1:, 2] - img[par, 2]) * np.sqrt(np.maximum(bone_px[1:] ** 2 - step2, 0.0))
        z = np.zeros(21)
        for k in range(1, 21):  # the tree is ordered parents first
            z[k] = z[HAND_PARENTS[k]] + dz[k - 1]
        pts[:, 2] = z
    else:
        pts = img
    if pts.shape != (21, 3) or not np.isfinite(pts).all():
        return None
    pts = pts @ WORLD_TO_CAMERA.T  # camera axes -> tracking axes (x, -y, -z)
    if img_ok:
        pts = pts @ view_rotation(img[WRIST, :2], K).T
    return pts


class HandFitter:
    """Fits one side's hand for a body shape (see the module doc)."""

    def __init__(self, lm: LandmarkModel, side: str) -> None:
        self.side = side
        Q = lm.hand_rest[side]  # [21, 3]
        self.rest_frame = self._palm(Q)
        self.rest_dirs = Q[FINGER_LANDMARKS[:, 1:]] - Q[FINGER_LANDMARKS[:, :-1]]  # [5, 3, 3]
        self.bone_m = np.linalg.norm(Q - Q[np.maximum(HAND_PARENTS, 0)], axis=1)  # [21] metres, 0 for the wrist

    @staticmethod
    def _palm(X: np.ndarray) -> np.ndarray:
        return frame(X[MIDDLE_MCP] - X[WRIST], X[INDEX_MCP] - X[PINKY_MCP])

    def fit(self, hand: HandLandmarks, K: np.ndarray, px_per_m: float | None = None) -> HandResult | None:
        """The hand's pose, or None when the landmarks are unusable (degenerate, non-finite).

        Args:
            hand: the hand's landmarks.
            K: intrinsics [3, 3].
            px_per_m: image scale at the hand's depth (focal length / depth), when known (from
                the body fit): image-only landmarks then get their depth from the bone lengths.
        """
        bone_px = None
        if px_per_m is not None and hand.world is None:
            img = np.asarray(hand.image, dtype=np.float64)
            if img.shape == (21, 3) and np.isfinite(img).all():
                step = np.sqrt(((img[1:, :2] - img[HAND_PARENTS[1:], :2]) ** 2).sum(axis=1))
                # A bone never looks longer than it is: the hand is at least this close.
                scale = max(px_per_m, 1.02 * float(np.max(step / self.bone_m[1:])))
                bone_px = scale * self.bone_m
        X = hand_points(hand, K, bone_px)
        if X is None:
            return None
        fwd, across = X[MIDDLE_MCP] - X[WRIST], X[INDEX_MCP] - X[PINKY_MCP]
        c = cross(fwd, across)
        if float(c @ c) < 1e-12 * max(float(fwd @ fwd), 1e-12) ** 2:
            return None
        wrist = self._palm(X) @ self.rest_frame.T
        obs = (X[FINGER_LANDMARKS[:, 1:]] - X[FINGER_LANDMARKS[:, :-1]]) @ wrist  # palm frame, [5, 3, 3]
        rot = np.empty((5, 3, 3, 3))
        acc = np.broadcast_to(np.eye(3), (5, 3, 3))
        for k in range(3):
            target = np.einsum("fji,fj->fi", acc, obs[:, k])  # acc^T @ obs
            rot[:, k] = rotation_between(self.rest_dirs[:, k], target)
            acc = acc @ rot[:, k]
        return HandResult(rot=rot.reshape(15, 3, 3), wrist=wrist)
