"""``streamer reconstruct PHOTO -o avatar.ply``: one photo -> an animatable Gaussian avatar."""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError, ReconstructionError, StreamerWarning
from ..fileio import check_output
from .thread_cpu import process_age_s

if TYPE_CHECKING:
    from ..body.model import BodyModel
    from ..reconstruct.person_search import PersonSearch

METHODS = ("fit", "lhm")
#: The Gaussians a --gaussians option may ask for (a few hundred show a body; a million fill the
#: memory of a CPU render).
GAUSSIAN_RANGE = (100, 1_000_000)


def check_gaussians(count: int) -> int:
    """``count`` if it is in :data:`GAUSSIAN_RANGE`, else an InputError (shared by the commands that reconstruct)."""
    low, high = GAUSSIAN_RANGE
    if not low <= count <= high:
        raise InputError(f"--gaussians must be between {low:,} and {high:,}, got {count}")
    return count


GAUSSIANS_HELP = (
    "fit: Gaussians on the body surface (default: %(default)s); small discs are added along the outline "
    "and where hair or cloth reaches past it (4,500-8,600 on the shared photos at the default, fewer "
    "with fewer Gaussians); lhm uses the checkpoint's query-point count"
)


def add_method_options(p: argparse.ArgumentParser) -> None:
    """``--method``, ``--weights``, ``--device`` and ``--lhm-config``: for every command that reconstructs."""
    p.add_argument(
        "--method", choices=METHODS, default="fit", help="reconstruction method (default: %(default)s)"
    )
    p.add_argument(
        "--weights",
        help="lhm: folder with model.safetensors, sapiens_1b_epoch_173_torchscript.pt2 and "
        "smplx/SMPLX_NEUTRAL.npz",
    )
    p.add_argument(
        "--device",
        default="auto",
        help="lhm: auto (CUDA when present), cpu or cuda[:N] (default: %(default)s)",
    )
    p.add_argument(
        "--lhm-config",
        help="lhm: force the architecture (MINI, 500M, 1B, tiny); default: read from the checkpoint",
    )


def check_method_options(args: argparse.Namespace) -> None:
    """Refuse method options that do not go together, before any work."""
    if args.method == "fit" and (args.weights is not None or args.lhm_config is not None):
        raise InputError("--weights and --lhm-config belong to --method lhm")
    if args.method == "fit" and args.device != "auto":  # it would be ignored without a word
        raise InputError(f"--device {args.device} belongs to --method lhm (the fit method runs on the CPU)")
    if args.method == "lhm" and args.weights is None:
        raise InputError(
            "--method lhm needs --weights DIR: the folder with model.safetensors, "
            "sapiens_1b_epoch_173_torchscript.pt2 and smplx/SMPLX_NEUTRAL.npz (nothing is downloaded)"
        )


@dataclass
class Method:
    """A reconstruction method, its models loaded.

    Attributes:
        reconstruct: ``reconstruct(rgb, crop=None, progress=None, search=None)`` -> a result with
            ``avatar``, ``pose``, ``camera``, ``person`` and ``timings_s``; ``crop`` is a fixed 5:3
            box (photo pixels) instead of one around the person; ``search()`` gives the person
            (default: found on ``rgb`` then), e.g. a :class:`.person_search.PersonSearch`'s result.
        body: the body model its avatars are skinned to (pose them with this one).
        steps: the names ``progress`` is called with, in order.
    """

    reconstruct: Callable[..., Any]
    body: BodyModel
    steps: tuple[str, ...]


def load_method(args: argparse.Namespace, command: str = "reconstruct") -> Method:
    """The method ``args`` ask for (``--method``, ``--weights``, ...), its models loaded now."""
    strict, seed = getattr(args, "strict", False), getattr(args, "seed", 0)
    if args.method == "lhm":
        from ..reconstruct.lhm.infer import STEPS as LHM_STEPS
        from ..reconstruct.lhm.infer import LHMReconstructor
        from ..reconstruct.lhm.weights import locate_weights

        weights = locate_weights(args.weights, args.smplx_dir)
        lhm = LHMReconstructor.load(weights, device=args.device, config=args.lhm_config, seed=seed)
        if lhm.device.type == "cpu" and lhm.config.name != "tiny":
            print(
                f"streamer {command}: note: LHM-{lhm.config.name} runs on the CPU here (no CUDA GPU): "
                "expect minutes per photo and several GB of memory",
                file=sys.stderr,
            )

        return Method(partial(lhm, strict=strict), lhm.body, LHM_STEPS)

    from ..assets import load_body
    from ..reconstruct.fit import STEPS, reconstruct_photo

    body = load_body(args.smplx_dir)

    run_fit = partial(reconstruct_photo, body=body, num_gaussians=args.gaussians, strict=strict, seed=seed)
    return Method(run_fit, body, STEPS)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """``streamer reconstruct``."""
    p = sub.add_parser(
        "reconstruct",
        help="turn one photo of a person into an animatable Gaussian avatar (.ply)",
        description="Find the person, fit the body model, shape Gaussians to the silhouette, colour them from "
        "the photo, fill the unseen side and save the avatar in its canonical pose. Method 'fit' needs no "
        "downloaded weights. Method 'lhm' runs the LHM network with your own files (--weights DIR: "
        "model.safetensors, the Sapiens-1B TorchScript and smplx/SMPLX_NEUTRAL.npz); nothing is downloaded.",
    )
    p.add_argument(
        "photo",
        help="the photo: PNG, JPEG, WebP or BMP, one person, at least the head and both shoulders in view "
        "(the whole body gives the best avatar: what the photo leaves out comes from the body model)",
    )
    p.add_argument(
        "-o", "--output", required=True, help="the avatar file to write (.ply, written atomically)"
    )
    add_method_options(p)
    p.add_argument(
        "--gaussians",
        type=int,
        default=40_000,
        help=GAUSSIANS_HELP,
    )
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    p.add_argument("--strict", action="store_true", help="refuse photos with more than one person")
    p.add_argument(
        "--smplx-dir", help="folder with real SMPL-X files (fit default: built-in body model; lhm default: WEIGHTS/smplx)"
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print output, gaussians, seconds (from the command's start), startup_s (Python's start-up "
        "and the imports before it), the per-step split (steps_s) and detect_beside_read_s as JSON: the "
        "person search runs in a second process while the models load, and steps_s's detect is then "
        "only the wait for it",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..reconstruct.image import read_photo
    from ..reconstruct.person_search import PersonSearch

    check_method_options(args)
    check_gaussians(args.gaussians)
    output = check_output(args.output, (".ply",))
    t0 = time.perf_counter()
    startup = process_age_s()  # Python's start-up and the imports, before this command's clock
    rgb = read_photo(args.photo)
    with PersonSearch(rgb, strict=args.strict) as search:  # beside the model loading, where that pays
        method = load_method(args)
        t_read = time.perf_counter() - t0  # reading the photo and loading the model
        result, notes = _reconstruct(args, method, rgb, search)
    t_save = time.perf_counter()
    result.avatar.save(output)
    timings = {"read": t_read, **result.timings_s}
    timings["save"] = time.perf_counter() - t_save
    seconds = time.perf_counter() - t0
    if args.json:
        report = {
            "output": str(output),
            "method": args.method,
            "gaussians": len(result.avatar),
            "seconds": round(seconds, 3),
            "startup_s": None if startup is None else round(startup, 3),
            "steps_s": {k: round(v, 3) for k, v in timings.items()},
            "detect_beside_read_s": None if search.seconds is None else round(search.seconds, 3),
            "people": result.person.people,
            "full_body": result.person.full_body,
            "warnings": notes,
        }
        if hasattr(result, "seen_fraction"):
            report["seen_fraction"] = round(result.seen_fraction, 4)
        print(json.dumps(report))
    else:
        split = ", ".join(f"{k} {v:.2f}" for k, v in timings.items())
        if search.seconds is not None:
            split += f"; the person search took {search.seconds:.2f} beside read"
        print(f"wrote {output}: {len(result.avatar)} Gaussians in {seconds:.1f} s ({split})")
    return 0


def _reconstruct(
    args: argparse.Namespace, method: Method, rgb: np.ndarray, search: PersonSearch
) -> tuple[Any, list[str]]:
    """Run ``method`` on the photo with a progress bar; the result and the texts of our warnings."""
    from tqdm import tqdm

    steps = method.steps
    bar = tqdm(total=len(steps), desc="reconstruct", unit="step", file=sys.stderr, disable=args.json or None)

    def step(name: str) -> None:
        bar.set_postfix_str(name)
        bar.update(0 if name == steps[0] else 1)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = method.reconstruct(rgb, progress=step, search=search.result)
        except ReconstructionError as exc:  # say which photo (the steps do not know its name)
            raise ReconstructionError(f"{args.photo}: {exc}") from None
        finally:
            bar.close()
    notes = [str(w.message) for w in caught if issubclass(w.category, StreamerWarning)]  # (for --json)
    for w in caught:  # shown as they would have been without the recording (ours: see streamer.cli)
        warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return result, notes
