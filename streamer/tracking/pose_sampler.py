"""Plausible random SMPL-X poses and smooth random motions, for evaluating and testing the fitter.

Each body joint draws its local axis-angle components uniformly from ranges a person can reach
(knees only bend backwards, elbows only forwards, spines bend a little, and so on); left-side
ranges are written out and right-side ones are their mirror images ((x, y, z) -> (x, -y, -z)).
:func:`random_motion` blends such key poses with smoothsteps, a key every ``key_seconds``: not
recorded human motion, but continuous, with limbs crossing the whole reachable range.
"""

from __future__ import annotations

import numpy as np
import torch

from ..body.joints import JOINT_INDEX
from ..body.pose import SmplxPose
from .motion import Motion

# (x, y, z) ranges in radians per joint; left side or central joints.
_RANGES: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    "spine1": ((-0.15, 0.3), (-0.2, 0.2), (-0.15, 0.15)),
    "spine2": ((-0.1, 0.2), (-0.15, 0.15), (-0.1, 0.1)),
    "spine3": ((-0.1, 0.2), (-0.15, 0.15), (-0.1, 0.1)),
    "neck": ((-0.2, 0.3), (-0.4, 0.4), (-0.2, 0.2)),
    "head": ((-0.2, 0.3), (-0.4, 0.4), (-0.2, 0.2)),
    "left_collar": ((-0.1, 0.1), (-0.2, 0.15), (-0.2, 0.15)),
    "left_shoulder": ((-0.8, 0.8), (-1.0, 0.5), (-1.35, 0.5)),
    "left_elbow": ((-0.1, 0.1), (-2.1, 0.0), (-0.1, 0.1)),
    "left_wrist": ((-0.6, 0.6), (-0.4, 0.4), (-0.7, 0.6)),
    "left_hip": ((-1.3, 0.3), (-0.4, 0.4), (-0.15, 0.6)),
    "left_knee": ((0.0, 1.9), (-0.05, 0.05), (-0.05, 0.05)),
    "left_ankle": ((-0.35, 0.4), (-0.2, 0.2), (-0.2, 0.2)),
    "left_foot": ((-0.2, 0.3), (0.0, 0.0), (0.0, 0.0)),
}
_FINGER = ((-0.15, 0.15), (-0.1, 0.1), (-1.3, 0.1))  # left hand: curls about -z
_THUMB = ((-0.3, 0.3), (-0.4, 0.4), (-0.6, 0.3))


def _mirror(name: str) -> str:
    return name.replace("left", "right")


def sample_pose(rng: np.random.Generator, scale: float = 1.0, yaw: float = 1.2) -> SmplxPose:
    """One random plausible pose (single, ``batch_shape == ()``), rest translation.

    Args:
        rng: the random generator.
        scale: shrinks every range towards its middle-of-zero (1: full range).
        yaw: the body turns up to +-``yaw`` radians about the vertical (pitch and roll +-0.15).
    """
    body = np.zeros((21, 3))
    for name, ranges in _RANGES.items():
        lo, hi = np.array(ranges).T
        v = rng.uniform(lo, hi) * scale
        body[JOINT_INDEX[name] - 1] = v
        if "left" in name:
            body[JOINT_INDEX[_mirror(name)] - 1] = rng.uniform(lo, hi) * scale * np.array([1.0, -1.0, -1.0])
    hands = []
    for sign in (1.0, -1.0):  # left, right (mirrored)
        h = np.zeros((15, 3))
        lo, hi = np.array(_FINGER).T
        curl = rng.uniform(0.0, 1.0)  # fingers of a hand curl together, each with its own spread
        for f in range(4):
            for k in range(3):
                v = rng.uniform(lo, hi) * scale
                v[2] = (lo[2] + (hi[2] - lo[2]) * (1.0 - curl) + rng.normal() * 0.1) * scale
                h[3 * f + k] = v
        tlo, thi = np.array(_THUMB).T
        h[12:15] = rng.uniform(tlo, thi, size=(3, 3)) * scale
        hands.append(h * np.array([1.0, sign, sign]))
    orient = np.array([rng.uniform(-0.15, 0.15), rng.uniform(-yaw, yaw), rng.uniform(-0.15, 0.15)])
    jaw = np.array([rng.uniform(0.0, 0.3), 0.0, 0.0])
    return SmplxPose.zeros().replace(
        global_orient=_t(orient), body_pose=_t(body), left_hand_pose=_t(hands[0]), right_hand_pose=_t(hands[1]),
        jaw_pose=_t(jaw),
    )


def random_motion(seed: int = 0, seconds: float = 8.0, fps: float = 30.0, key_seconds: float = 0.8,
                  scale: float = 0.8) -> Motion:
    """A smooth motion through random plausible key poses (see the module doc)."""
    rng = np.random.default_rng(seed)
    n_keys = int(np.ceil(seconds / key_seconds)) + 2
    keys = SmplxPose.stack([sample_pose(rng, scale=scale) for _ in range(n_keys)])
    t = np.arange(int(round(seconds * fps))) / fps / key_seconds
    i = np.floor(t).astype(int)
    a = t - i
    a = torch.from_numpy((a * a * (3.0 - 2.0 * a)).astype(np.float32))
    fields = {}
    for name in ("global_orient", "body_pose", "left_hand_pose", "right_hand_pose", "jaw_pose"):
        k = getattr(keys, name)
        w = a.reshape((-1,) + (1,) * (k.dim() - 1))
        fields[name] = (1.0 - w) * k[i] + w * k[i + 1]
    return Motion(poses=SmplxPose.zeros(batch=len(t)).replace(**fields), fps=fps)


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, dtype=np.float32))
