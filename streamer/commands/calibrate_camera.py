"""``streamer calibrate camera``: camera intrinsics from a checkerboard or a field-of-view guess."""

from __future__ import annotations

import argparse
import json

from calibration.camera import (
    FOV_AXES,
    CameraIntrinsics,
    calibrate_checkerboard,
    calibration_images,
    intrinsics_from_fov,
    parse_pattern,
)

from ..errors import InputError
from ..fileio import check_output


def add_calibrate_parser(sub: argparse._SubParsersAction) -> None:
    """``streamer calibrate camera``."""
    p = sub.add_parser(
        "camera",
        help="camera intrinsics (K, distortion) from a checkerboard or a field-of-view guess",
        description="Compute camera intrinsics and save them as JSON for `streamer track --camera-json`. "
        "Either from a checkerboard (a video, a folder of images or image files, showing a printed board "
        "at several angles) or from a field-of-view guess.",
    )
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument(
        "--checkerboard",
        nargs="+",
        metavar="VIDEO_OR_IMAGES",
        help="a video, a folder of images, or image files showing the board",
    )
    how.add_argument(
        "--fov", type=float, metavar="DEG", help="field of view in degrees (a guess; no distortion)"
    )
    p.add_argument(
        "--pattern",
        default="9x6",
        help="inner corners per row x per column (a board of 10x7 squares is 9x6; default: %(default)s)",
    )
    p.add_argument(
        "--square-mm", type=float, default=25.0, help="side of one square in mm (default: %(default)s)"
    )
    p.add_argument("--max-views", type=int, default=40, help="most board views used (default: %(default)s)")
    p.add_argument("--size", metavar="WxH", help="image size in pixels (with --fov)")
    p.add_argument(
        "--fov-axis",
        choices=FOV_AXES,
        default="diagonal",
        help="what --fov spans; webcam data sheets quote the diagonal (default: %(default)s)",
    )
    p.add_argument("--out", "-o", required=True, help="output JSON file")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=run)


def parse_size(text: str) -> tuple[int, int]:
    """``"1280x720"`` -> (1280, 720)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise InputError(f"--size must look like 1280x720, got {text!r}") from None
    if w <= 0 or h <= 0:
        raise InputError(f"--size must be positive, got {text!r}")
    return w, h


def run(args: argparse.Namespace) -> int:
    intr: CameraIntrinsics
    check_output(args.out, (".json",))
    if args.fov is not None:
        if not args.size:
            raise InputError("--fov needs --size WxH (the image size the field of view belongs to)")
        w, h = parse_size(args.size)
        if not 0.0 < args.fov < 180.0:
            raise InputError(f"--fov must be in (0, 180) degrees, got {args.fov}")
        intr = intrinsics_from_fov(args.fov, w, h, axis=args.fov_axis)
    else:
        if args.max_views < 4:
            raise InputError(f"--max-views must be at least 4, got {args.max_views}")
        intr = calibrate_checkerboard(
            calibration_images(args.checkerboard),
            parse_pattern(args.pattern),
            args.square_mm,
            max_views=args.max_views,
        )
    intr.save(args.out)
    summary = {"output": str(args.out), **intr.to_dict()}
    if args.json:
        print(json.dumps(summary))
    else:
        K = intr.K
        rms = (
            ""
            if intr.rms_px is None
            else f", RMS reprojection error {intr.rms_px:.3f} px over {intr.views} views"
        )
        print(
            f"wrote {args.out}: {intr.width}x{intr.height}, fx {K[0, 0]:.1f} fy {K[1, 1]:.1f} "
            f"cx {K[0, 2]:.1f} cy {K[1, 2]:.1f} (fov {intr.fov_x_deg:.1f} x {intr.fov_y_deg:.1f} deg){rms}"
        )
    return 0
