"""``streamer reconstruct PHOTO -o avatar.ply``: one photo -> an animatable Gaussian avatar."""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

from ..errors import InputError

METHODS = ("fit",)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """``streamer reconstruct``."""
    p = sub.add_parser(
        "reconstruct",
        help="turn one photo of a person into an animatable Gaussian avatar (.ply)",
        description="Find the person, fit the body model, shape Gaussians to the silhouette, colour them from "
        "the photo, fill the unseen side and save the avatar in its canonical pose. Method 'fit' needs no "
        "downloaded weights.",
    )
    p.add_argument("photo", help="the photo: PNG, JPEG, WebP or BMP, one person, head and shoulders in view")
    p.add_argument(
        "-o", "--output", required=True, help="the avatar file to write (.ply, written atomically)"
    )
    p.add_argument(
        "--method", choices=METHODS, default="fit", help="reconstruction method (default: %(default)s)"
    )
    p.add_argument("--gaussians", type=int, default=40_000, help="number of Gaussians (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    p.add_argument("--strict", action="store_true", help="refuse photos with more than one person")
    p.add_argument("--smplx-dir", help="folder with real SMPL-X files (default: built-in body model)")
    p.add_argument(
        "--json", action="store_true", help="print output, gaussians, seconds and the per-step split as JSON"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..assets import load_body
    from ..reconstruct.fit import STEPS, reconstruct_photo
    from ..reconstruct.image import read_photo

    if not 100 <= args.gaussians <= 1_000_000:
        raise InputError(f"--gaussians must be between 100 and 1,000,000, got {args.gaussians}")
    output = Path(args.output)
    if output.is_dir():
        raise InputError(f"{output} is a folder; give the avatar file name (e.g. avatar.ply)")
    t0 = time.perf_counter()
    rgb = read_photo(args.photo)
    body = load_body(args.smplx_dir)
    t_read = time.perf_counter() - t0  # reading the photo and loading the body model
    bar = tqdm(total=len(STEPS), desc="reconstruct", unit="step", file=sys.stderr, disable=args.json or None)

    def step(name: str) -> None:
        bar.set_postfix_str(name)
        bar.update(0 if name == STEPS[0] else 1)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = reconstruct_photo(
                rgb,
                body,
                num_gaussians=args.gaussians,
                strict=args.strict,
                seed=args.seed,
                progress=step,
            )
        finally:
            bar.close()
    notes = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    for note in notes:
        print(f"streamer reconstruct: warning: {note}", file=sys.stderr)
    t_save = time.perf_counter()
    result.avatar.save(output)
    timings = {"read": t_read, **result.timings_s}
    timings["save"] = time.perf_counter() - t_save
    seconds = time.perf_counter() - t0
    if args.json:
        print(
            json.dumps(
                {
                    "output": str(output),
                    "method": args.method,
                    "gaussians": len(result.avatar),
                    "seconds": round(seconds, 3),
                    "steps_s": {k: round(v, 3) for k, v in timings.items()},
                    "seen_fraction": round(result.seen_fraction, 4),
                    "people": result.person.people,
                    "full_body": result.person.full_body,
                    "warnings": notes,
                }
            )
        )
    else:
        split = ", ".join(f"{k} {v:.2f}" for k, v in timings.items())
        print(f"wrote {output}: {len(result.avatar)} Gaussians in {seconds:.1f} s ({split})")
    return 0
