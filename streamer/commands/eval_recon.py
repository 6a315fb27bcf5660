"""``streamer eval recon PHOTO`` and ``streamer eval animate VIDEO``: reconstruction quality.

* ``recon``: reconstruct the photo, re-render the avatar in the photo's pose and camera, and compare
  with the photo inside the person mask (PSNR dB, SSIM, mask IoU); ``--sheet`` saves a contact sheet
  (photo, re-render, front, side, back).
* ``animate``: LHM's Table-2 protocol on a video: reconstruct from the first frame, track the others,
  drive the avatar with the tracked poses, render with the video's camera, compare per frame inside
  the person mask; mean and per-frame figures. ``--sheet`` saves evenly spaced frames and the worst
  one above the avatar in their tracked poses (:mod:`..reconstruct.animation_sheet`).

Both measure the ``fit`` method by default, or with ``--method lhm --weights DIR`` the LHM network
(:func:`.reconstruct.load_method`, as ``streamer reconstruct`` loads it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING

from ..errors import InputError, ReconstructionError
from .reconstruct import (
    GAUSSIANS_HELP,
    add_method_options,
    check_gaussians,
    check_method_options,
    load_method,
)

if TYPE_CHECKING:
    import numpy as np


def add_eval_parser(sub: argparse._SubParsersAction) -> None:
    """``streamer eval recon`` and ``streamer eval animate``."""
    p = sub.add_parser(
        "recon",
        help="reconstruct a photo and compare its re-rendering with the photo (PSNR, SSIM, mask IoU)",
        description="Reconstruct the photo (--method, default fit), render the avatar in the fitted pose with the "
        "photo's camera and compare with the photo inside the person mask.",
    )
    p.add_argument("photo", help="the photo (PNG, JPEG, WebP, BMP)")
    p.add_argument("--sheet", help="save a contact sheet (.png): photo, re-render, front, side, back")
    p.add_argument("--gaussians", type=int, default=40_000, help=GAUSSIANS_HELP)
    p.add_argument("--backend", default="cpu", help="render backend: cpu, cuda, auto (default: %(default)s)")
    p.add_argument(
        "--smplx-dir",
        help="folder with real SMPL-X files (fit default: built-in body model; lhm default: WEIGHTS/smplx)",
    )
    add_method_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_recon)

    p = sub.add_parser(
        "animate",
        help="LHM's animation protocol on a video: reconstruct frame 0, drive with tracked poses, compare",
        description="Reconstruct from the first frame, track the others, render the avatar in every tracked pose "
        "with the video's camera and compare inside the person mask (PSNR, SSIM, mask IoU per frame and mean).",
    )
    p.add_argument("video", help="a video file with one person")
    p.add_argument("--max-frames", type=int, help="evaluate at most this many frames after the first")
    p.add_argument("--stride", type=int, default=1, help="evaluate every N-th frame (default: %(default)s)")
    p.add_argument("--gaussians", type=int, default=40_000, help=GAUSSIANS_HELP)
    p.add_argument("--backend", default="cpu", help="render backend: cpu, cuda, auto (default: %(default)s)")
    p.add_argument(
        "--smplx-dir",
        help="folder with real SMPL-X files (fit default: built-in body model; lhm default: WEIGHTS/smplx)",
    )
    add_method_options(p)
    p.add_argument(
        "--no-smoothing",
        action="store_true",
        help="fit each frame without the live fitter's One Euro filtering",
    )
    p.add_argument(
        "--no-refine",
        action="store_true",
        help="drive the avatar with the live fitter's poses as they are (no offline refinement to the person mask)",
    )
    p.add_argument(
        "--no-photometric",
        action="store_true",
        help="refine the poses to the person mask and landmarks only, not to the frame's colours "
        "(1.2-2 s a frame faster, up to three times that where a kept pose is aligned again)",
    )
    p.add_argument("--per-frame", action="store_true", help="include the per-frame figures in the JSON")
    p.add_argument(
        "--sheet",
        help="save a contact sheet (.png): evenly spaced frames and the worst one, above the avatar in "
        "their poses",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_animate)


def run_recon(args: argparse.Namespace) -> int:
    from ..fileio import check_output
    from ..reconstruct.evaluate import as_float, contact_sheet, evaluate_photo
    from ..reconstruct.image import read_photo
    from ..render import resolve_backend

    check_method_options(args)
    check_gaussians(args.gaussians)
    backend = resolve_backend(args.backend)  # a bad or unavailable backend fails before the work
    if args.sheet:
        check_output(args.sheet, (".png",))
    t0 = time.perf_counter()
    rgb = read_photo(args.photo)
    method = load_method(args, "eval recon")
    body = method.body
    try:
        ev = evaluate_photo(rgb, body, backend=backend, reconstruct=method.reconstruct)
    except ReconstructionError as exc:  # say which photo (the steps do not know its name)
        raise ReconstructionError(f"{args.photo}: {exc}") from None
    result = {k: as_float(v) for k, v in ev.scores.items()}
    result["method"] = args.method
    result["reconstruct_s"] = {k: round(v, 3) for k, v in ev.recon.timings_s.items()}
    if args.sheet:
        _write_sheet(args.sheet, contact_sheet(ev, body, backend=backend))
        result["sheet"] = str(args.sheet)
    result["seconds"] = round(time.perf_counter() - t0, 3)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{args.photo}: PSNR {result['psnr_db']} dB, SSIM {result['ssim']}, mask IoU {result['mask_iou']} "
            f"(inside the person mask; {result['gaussians']} Gaussians, {result['seconds']} s)"
        )
        if args.sheet:
            print(f"wrote the contact sheet {args.sheet}")
    return 0


def _write_sheet(path: str, rgb: np.ndarray) -> None:
    """Write a contact sheet ([H, W, 3] uint8 RGB) as PNG, atomically."""
    import cv2

    from ..fileio import atomic_path

    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), rgb[:, :, ::-1]):
            raise InputError(f"cannot write the contact sheet {path}")


def run_animate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..fileio import check_output
    from ..reconstruct.animation_sheet import AnimationSheet
    from ..reconstruct.evaluate import as_float, evaluate_video
    from ..render import resolve_backend

    if args.max_frames is not None and args.max_frames < 1:
        raise InputError(f"--max-frames must be >= 1, got {args.max_frames}")
    if args.stride < 1:
        raise InputError(f"--stride must be >= 1, got {args.stride}")
    check_method_options(args)
    check_gaussians(args.gaussians)
    backend = resolve_backend(args.backend)
    if args.sheet:
        check_output(args.sheet, (".png",))
    sheet = AnimationSheet() if args.sheet else None
    t0 = time.perf_counter()
    method = load_method(args, "eval animate")
    bar = tqdm(desc="eval animate", unit="frame", file=sys.stderr, disable=args.json or None)
    try:
        ev, recon = evaluate_video(
            args.video,
            method.body,
            max_frames=args.max_frames,
            stride=args.stride,
            backend=backend,
            smoothing=not args.no_smoothing,
            refine=not args.no_refine,
            photometric=not args.no_photometric,
            progress=lambda n: bar.update(1),
            on_frame=None if sheet is None else sheet.add,
            reconstruct=method.reconstruct,
        )
    finally:
        bar.close()
    if not ev.frames:
        raise InputError(f"{args.video}: no frame after the first had a person to compare")
    result: dict = {k: as_float(v) for k, v in ev.mean().items()}
    result["frames"] = len(ev.frames)
    result["method"] = args.method
    result["gaussians"] = len(recon.avatar)
    result["refined"] = not args.no_refine
    result["photometric"] = not (args.no_refine or args.no_photometric)
    if result["photometric"]:  # frames whose colour-aligned pose passed its check
        result["photometric_kept"] = sum(int(f.get("photometric", 0)) for f in ev.frames)
    if sheet is not None:
        _write_sheet(args.sheet, sheet.image())
        result["sheet"] = str(args.sheet)
        result["sheet_frames"] = [index for index, _, _ in sheet.chosen()]
        result["sheet_worst"] = next((index for index, _, worst in sheet.chosen() if worst), None)
    result["seconds"] = round(time.perf_counter() - t0, 3)
    if args.per_frame:
        result["per_frame"] = [{k: as_float(v) for k, v in f.items()} for f in ev.frames]
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{args.video}: mean PSNR {result['psnr_db']} dB, SSIM {result['ssim']}, mask IoU {result['mask_iou']} "
            f"over {result['frames']} frames ({result['seconds']} s)"
        )
        if result["photometric"]:
            print(
                f"poses fitted to each frame's colours: kept in {result['photometric_kept']} of "
                f"{result['frames']} frames (the others: the silhouette's pose, which agreed better)"
            )
        if sheet is not None:
            print(
                f"wrote the contact sheet {args.sheet} (frames {result['sheet_frames']}, "
                f"the worst {result['sheet_worst']})"
            )
    return 0
