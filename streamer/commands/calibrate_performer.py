"""``streamer calibrate performer``: body proportions, floor and neutral face from a rest pose."""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from ..errors import InputError, TrackingError
from ..fileio import check_output


def add_calibrate_parser(sub: argparse._SubParsersAction) -> None:
    """``streamer calibrate performer``."""
    p = sub.add_parser(
        "performer",
        help="a performer profile (proportions, floor, neutral face) from a few seconds of standing still",
        description="Stand relaxed, arms down, facing the camera, face neutral (mouth closed, eyes open, looking "
        "at the camera) for a few seconds. The profile is saved under the performer's name in the user config "
        "folder and used by `streamer track --profile NAME`.",
    )
    p.add_argument("source", metavar="VIDEO_OR_CAMERA", help="a video file, or camera:N for a live camera")
    p.add_argument("--name", required=True, help="performer name (letters, digits, '_', '.', '-')")
    p.add_argument("--start", type=float, default=0.0, help="seconds to skip first (time to get into pose; default: %(default)s)")
    p.add_argument("--seconds", type=float, default=3.0, help="seconds of rest pose to use (default: %(default)s)")
    p.add_argument("--models", default="holistic", help="MediaPipe models (default: %(default)s)")
    p.add_argument("--camera-json", help="camera intrinsics from `streamer calibrate camera` (default: a FOV guess)")
    p.add_argument("--smplx-dir", help="folder with real SMPL-X files (default: built-in body model)")
    p.add_argument("--out", "-o", help="write the profile here instead of the user config folder")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from calibration.performer import calibrate_performer, check_name, profile_path, save_profile

    from ..assets import load_body
    from ..tracking.mediapipe_runner import MediaPipeRunner
    from ..tracking.sources import open_source

    check_name(args.name)  # a bad name or output fails before the camera opens
    if args.out is not None:
        check_output(args.out, (".json",))
    if not (args.seconds > 0 and args.start >= 0):
        raise InputError(f"--seconds must be positive and --start non-negative, got {args.seconds}, {args.start}")
    t0 = time.perf_counter()
    frames = []
    with open_source(args.source) as source:
        K = None
        if args.camera_json:
            from calibration.camera import load_intrinsics

            K = load_intrinsics(args.camera_json).scaled_to(source.width, source.height).K
        body = load_body(args.smplx_dir)
        first: float | None = None
        with MediaPipeRunner(args.models, video=True) as runner:
            for t_ms, rgb in source:
                first = t_ms if first is None else first
                elapsed = (t_ms - first) / 1000.0
                if elapsed < args.start:
                    continue
                if elapsed >= args.start + args.seconds:
                    break
                frames.append(runner.process(rgb, t_ms))
    if not frames:
        raise TrackingError(f"{args.source}: no frames between {args.start:g} s and {args.start + args.seconds:g} s")
    profile = calibrate_performer(body, frames, args.name, K=None if K is None else np.asarray(K))
    path = save_profile(profile, args.out)
    summary = {
        "profile": str(path),
        "name": profile.name,
        "frames": len(frames),
        "frames_used": profile.frames,
        "stillness_mm": profile.stillness_mm,
        "floor_y": profile.floor_y,
        "betas": [round(b, 3) for b in profile.betas],
        "face": profile.face_points is not None,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        where = "" if args.out else f" (default location {profile_path(profile.name).parent})"
        print(f"wrote {path}{where}: {profile.frames} of {len(frames)} frames used, floor at y = "
              f"{'unknown' if profile.floor_y is None else f'{profile.floor_y:.3f} m'}, "
              f"neutral face {'measured' if profile.face_points is not None else 'not seen'}")
        if profile.stillness_mm is not None and profile.stillness_mm > 40:
            print(f"warning: the performer moved ({profile.stillness_mm:.0f} mm median wobble); "
                  "stand still for a better calibration")
    return 0
