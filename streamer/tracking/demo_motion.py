"""The built-in demo motion: waving, walking in place and turning, generated procedurally."""

from __future__ import annotations

import math

import numpy as np
import torch

from ..body.joints import JOINT_INDEX
from ..body.pose import SmplxPose
from .motion import Motion

DEMO_FPS = 30.0
DEMO_SECONDS = 8.0


def _bp(name: str) -> int:
    """Index into ``body_pose`` [21, 3] of a body joint."""
    return JOINT_INDEX[name] - 1


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def demo_motion(fps: float = DEMO_FPS, seconds: float = DEMO_SECONDS) -> Motion:
    """A few seconds of natural movement from a relaxed stance.

    Phases (cross-faded over half a second): 0-2.5 s the right hand waves; 2.5-5 s walking in
    place with arm swing; 5-8 s turning the whole body left and right while looking around.
    """
    t = np.arange(int(round(fps * seconds)), dtype=np.float64) / fps
    n = len(t)
    body = np.zeros((n, 21, 3))
    orient = np.zeros((n, 3))
    transl = np.zeros((n, 3))
    jaw = np.zeros((n, 3))
    # Relaxed stance: arms down at the sides, elbows slightly bent forward, breathing.
    breath = 0.03 * np.sin(2 * math.pi * 0.25 * t)
    body[:, _bp("left_shoulder"), 2] = -1.2
    body[:, _bp("right_shoulder"), 2] = 1.2
    body[:, _bp("left_elbow"), 1] = -0.35
    body[:, _bp("right_elbow"), 1] = 0.35
    body[:, _bp("spine3"), 0] = breath
    # Phase weights.
    wave = 1 - _smoothstep((t - 2.25) / 0.5)
    walk = _smoothstep((t - 2.25) / 0.5) * (1 - _smoothstep((t - 4.75) / 0.5))
    turn = _smoothstep((t - 4.75) / 0.5)
    # Waving: right upper arm raised to the side, forearm up, swinging side to side.
    swing = 0.35 * np.sin(2 * math.pi * 1.8 * t)
    rs, re = _bp("right_shoulder"), _bp("right_elbow")
    body[:, rs, 2] = (1 - wave) * body[:, rs, 2] + wave * -0.25
    body[:, rs, 1] = wave * 0.25
    body[:, re, 2] = wave * (-1.45 + swing)
    body[:, re, 1] = (1 - wave) * body[:, re, 1]
    body[:, _bp("right_wrist"), 2] = wave * 0.6 * swing
    body[:, _bp("head"), 2] = wave * 0.08 * np.sin(2 * math.pi * 0.5 * t)
    jaw[:, 0] = wave * 0.12 * np.clip(np.sin(2 * math.pi * 1.2 * t), 0, None)  # talking
    # Walking in place: hips flex (negative x brings the knee forward), knees bend back.
    phase = 2 * math.pi * 0.8 * (t - 2.5)
    for side, offset in (("left", 0.0), ("right", math.pi)):
        lift = np.clip(np.sin(phase + offset), 0, None) ** 2  # smooth lift and set-down
        body[:, _bp(f"{side}_hip"), 0] += walk * -0.75 * lift
        body[:, _bp(f"{side}_knee"), 0] += walk * 1.15 * lift
        body[:, _bp(f"{side}_ankle"), 0] += walk * -0.25 * lift
        # Opposite arm swings forward: rotation about the world X axis at the shoulder.
        sign = 1.0 if side == "left" else -1.0
        body[:, _bp(f"{side}_shoulder"), 0] += walk * 0.35 * sign * np.sin(phase + math.pi + offset)
    transl[:, 1] = walk * 0.015 * np.abs(np.sin(phase))
    body[:, _bp("spine2"), 1] += walk * 0.08 * np.sin(phase)
    # Turning: the whole body yaws, the head leads, the arms follow a little.
    yaw = turn * 0.8 * np.sin(2 * math.pi * (t - 4.75) / 3.0)
    orient[:, 1] = yaw
    body[:, _bp("head"), 1] += turn * 0.3 * np.sin(2 * math.pi * (t - 4.55) / 3.0)
    body[:, _bp("neck"), 1] += turn * 0.1 * np.sin(2 * math.pi * (t - 4.55) / 3.0)
    body[:, _bp("left_shoulder"), 2] += turn * 0.2 * np.sin(2 * math.pi * (t - 4.9) / 3.0)
    body[:, _bp("right_shoulder"), 2] += turn * 0.2 * np.sin(2 * math.pi * (t - 4.9) / 3.0)
    poses = SmplxPose.zeros(batch=n).replace(
        global_orient=_f32(orient), body_pose=_f32(body), jaw_pose=_f32(jaw), transl=_f32(transl)
    )
    return Motion(poses=poses, fps=fps)



def _f32(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a.astype(np.float32))
