"""The relaxed poses the tracker falls back to: standing with arms down, hands softly curled.

Used when parts of the person are not seen (no person: the whole body eases here; legs out of
view: the legs stand; a hand not found: it relaxes), and as the stand-in for the MANO mean hand
when reading AMASS files without a body model that carries one (see :mod:`.motion`).
All values are SMPL-X axis-angle (radians) relative to the parent joint, frame as in
:mod:`streamer.body.pose`.
"""

from __future__ import annotations

import numpy as np

from ..body.joints import JOINT_INDEX, NUM_BODY_JOINTS, NUM_HAND_JOINTS

def _bp(name: str) -> int:
    """Index into ``body_pose`` [21, 3] of a body joint."""
    return JOINT_INDEX[name] - 1


def relaxed_body_pose() -> np.ndarray:
    """Standing, arms hanging at the sides with elbows a little bent. [21, 3] float64"""
    body = np.zeros((NUM_BODY_JOINTS, 3))
    body[_bp("left_shoulder"), 2] = -1.2
    body[_bp("right_shoulder"), 2] = 1.2
    body[_bp("left_elbow"), 1] = -0.25
    body[_bp("right_elbow"), 1] = 0.25
    return body


def relaxed_hand_pose(side: str) -> np.ndarray:
    """A softly curled open hand, relative to the flat hand. [15, 3] float64

    Fingers flex towards the palm: about -Z for the left hand (fingers along +X, palm down in
    the T-pose) and +Z for the right. Joint order is SMPL-X's: index, middle, pinky, ring, thumb
    (three joints each, from the knuckle out).
    """
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    sign = -1.0 if side == "left" else 1.0
    hand = np.zeros((NUM_HAND_JOINTS, 3))
    curl = {"index": (0.15, 0.2, 0.1), "middle": (0.2, 0.25, 0.1), "pinky": (0.3, 0.3, 0.15), "ring": (0.25, 0.3, 0.12)}
    for f, name in enumerate(("index", "middle", "pinky", "ring")):
        hand[3 * f : 3 * f + 3, 2] = sign * np.array(curl[name])
    hand[12:15, 2] = sign * np.array([0.0, 0.1, 0.1])  # thumb: a slight bend at MCP and IP
    return hand
