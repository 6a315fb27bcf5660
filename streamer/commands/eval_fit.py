"""``streamer eval fit``: how well the live fitter recovers known poses from synthetic landmarks.

For every frame of a motion, the body model's joints are the ground truth; the landmarks
MediaPipe would report for that body (the landmark model of :mod:`streamer.tracking.landmark_model`
plus Gaussian noise, world landmarks and image landmarks through a virtual 1280x720 camera with a
60 degree field of view) go through :class:`streamer.tracking.fit.PoseFitter` frame by frame, as
they would live. Reported:

* ``mpjpe_mm``: mean distance of the 22 body joints (pelvis + 21) after aligning the pelvis;
* ``pa_mpjpe_mm``: the same after a similarity (Procrustes) alignment of the 22 joints per frame;
* ``hand_mpjpe_mm``: mean distance of the 2 x 15 finger joints, each hand aligned at its wrist;
* ``ms_per_frame_fit``: median time of :meth:`PoseFitter.fit` per frame.

The person is kept 3.5 m in front of the camera (horizontal travel removed, so walking motions stay
in view). By default the fitter gets the motion's body shape, as a calibrated performer would
(``--uncalibrated`` fits with the model's mean shape instead).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any

import numpy as np

from ..errors import InputError

EVAL_WIDTH, EVAL_HEIGHT, EVAL_FOV_DEG, EVAL_DISTANCE_M = 1280, 720, 60.0, 3.5


def add_eval_parser(sub: argparse._SubParsersAction) -> None:
    """``streamer eval fit``."""
    p = sub.add_parser(
        "fit",
        help="fit synthetic landmarks of a known motion and report joint errors (mm) and fit speed",
        description="Synthesise the MediaPipe landmarks of every frame of a motion (with noise), fit them with the "
        "live fitter and compare the fitted joints to the true ones.",
    )
    p.add_argument("--motion", default="demo",
                   help="motion: our .npz, an AMASS .npz, an LHM smplx_params folder, 'demo' (built-in demo "
                   "motion, default) or 'random' (smooth random plausible poses)")
    p.add_argument("--noise-mm", type=float, default=10.0, help="landmark noise, standard deviation in mm (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed for noise and 'random' motions (default: %(default)s)")
    p.add_argument("--fps", type=float, default=30.0, help="tracking rate: the motion is resampled to it (default: %(default)s)")
    p.add_argument("--max-frames", type=int, help="evaluate at most this many frames")
    p.add_argument("--uncalibrated", action="store_true", help="fit with the mean body shape, not the motion's")
    p.add_argument("--smplx-dir", help="folder with real SMPL-X files (default: built-in body model)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=run)


def _load(spec: str, body: Any, seed: int, fps: float) -> Any:
    from ..tracking.demo_motion import demo_motion
    from ..tracking.motion import load_motion
    from ..tracking.pose_sampler import random_motion

    if spec == "demo":
        return demo_motion()
    if spec == "random":
        return random_motion(seed=seed, fps=fps)
    return load_motion(spec, body=body, fps=fps)


def place_in_view(body: Any, poses: Any, distance: float = EVAL_DISTANCE_M) -> Any:
    """Poses moved so the pelvis stays ``distance`` m in front of a camera at the origin looking down -Z."""
    import torch

    with torch.no_grad():
        pelvis = body.rest_joints(poses.betas)[..., 0, :]  # [T, 3]
    world = pelvis + poses.transl
    transl = poses.transl.clone()
    transl[:, 0] = -pelvis[:, 0]
    transl[:, 2] = -distance - pelvis[:, 2]
    transl[:, 1] = poses.transl[:, 1] - world[:, 1].mean()
    return poses.replace(transl=transl)


def _procrustes(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """pred aligned to gt by a similarity transform. [J, 3]"""
    from ..tracking.rotations import kabsch

    R, s, t = kabsch(pred, gt)
    return s * pred @ R.T + t


def evaluate(body: Any, motion: Any, noise_mm: float = 10.0, seed: int = 0, fps: float = 30.0,
             max_frames: int | None = None, calibrated: bool = True) -> dict[str, Any]:
    """Synthesise, fit and score a motion (see the module doc). Returns the report as a dict."""
    import torch

    from calibration.performer import PerformerProfile

    from ..tracking.fit import PoseFitter, default_intrinsics
    from ..tracking.landmark_model import synthesize_frames

    if noise_mm < 0 or not math.isfinite(noise_mm):
        raise InputError(f"--noise-mm must be a non-negative number, got {noise_mm}")
    if not (math.isfinite(fps) and fps > 0):
        raise InputError(f"--fps must be positive, got {fps}")
    count = max(1, round(len(motion) * fps / motion.fps))
    index = torch.clamp((torch.arange(count) * motion.fps / fps).round().long(), max=len(motion) - 1)
    if max_frames is not None:
        if max_frames < 1:
            raise InputError(f"--max-frames must be at least 1, got {max_frames}")
        index = index[:max_frames]
    poses = place_in_view(body, motion.poses[index])
    K = default_intrinsics(EVAL_WIDTH, EVAL_HEIGHT, EVAL_FOV_DEG)
    frames = synthesize_frames(body, poses, K, EVAL_WIDTH, EVAL_HEIGHT, noise_mm=noise_mm, seed=seed, fps=fps)
    profile = None
    if calibrated:
        profile = PerformerProfile(name="ground-truth", betas=poses.betas[0].tolist())
    fitter = PoseFitter(body, K=K, fps=fps, profile=profile)
    fitted, ms = [], []
    for frame in frames:
        fitted.append(fitter.fit(frame))
        ms.append(fitter.last_timings_ms["total"])
    from ..body.pose import SmplxPose

    fit = SmplxPose.stack(fitted)
    with torch.no_grad():
        _, j_gt = body.joint_transforms(poses)
        _, j_fit = body.joint_transforms(fit)
    j_gt, j_fit = j_gt.double().numpy(), j_fit.double().numpy()
    b_gt, b_fit = j_gt[:, :22] - j_gt[:, :1], j_fit[:, :22] - j_fit[:, :1]
    mpjpe = float(np.linalg.norm(b_fit - b_gt, axis=-1).mean())
    pa = float(np.mean([np.linalg.norm(_procrustes(f, g) - g, axis=-1).mean() for f, g in zip(j_fit[:, :22], j_gt[:, :22])]))
    hand_err = []
    for wrist, fingers in ((20, slice(25, 40)), (21, slice(40, 55))):
        hf = j_fit[:, fingers] - j_fit[:, wrist : wrist + 1]
        hg = j_gt[:, fingers] - j_gt[:, wrist : wrist + 1]
        hand_err.append(np.linalg.norm(hf - hg, axis=-1))
    return {
        "frames": len(frames),
        "fps": fps,
        "noise_mm": noise_mm,
        "calibrated": calibrated,
        "mpjpe_mm": round(1000 * mpjpe, 2),
        "pa_mpjpe_mm": round(1000 * pa, 2),
        "hand_mpjpe_mm": round(1000 * float(np.mean(hand_err)), 2),
        "ms_per_frame_fit": round(float(np.median(ms)), 3),
    }


def run(args: argparse.Namespace) -> int:
    from ..assets import load_body

    t0 = time.perf_counter()
    body = load_body(args.smplx_dir)
    motion = _load(args.motion, body, args.seed, args.fps)
    report = evaluate(body, motion, noise_mm=args.noise_mm, seed=args.seed, fps=args.fps,
                      max_frames=args.max_frames, calibrated=not args.uncalibrated)
    report = {"motion": args.motion, **report, "seconds": round(time.perf_counter() - t0, 2)}
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{report['frames']} frames of {args.motion} at {report['fps']:g} fps, noise {report['noise_mm']:g} mm: "
              f"MPJPE {report['mpjpe_mm']} mm, PA-MPJPE {report['pa_mpjpe_mm']} mm, hands {report['hand_mpjpe_mm']} mm, "
              f"fit {report['ms_per_frame_fit']} ms/frame", file=sys.stdout)
    return 0
