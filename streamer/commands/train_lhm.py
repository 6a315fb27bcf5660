"""``streamer train-lhm``: train an LHM network on (frames, masks, SMPL-X, cameras) folders.

Tiny on the CPU, from nothing (minutes with these defaults; docs/lhm-training.md has a smaller run)::

    streamer train-lhm --make-synthetic data/lhm-synth
    streamer train-lhm --config tiny --data data/lhm-synth --out runs/tiny --steps 200
    streamer train-lhm --config tiny --data data/lhm-synth --out runs/tiny --steps 400 --resume

Real sizes (MINI / 500M / 1B) on a CUDA GPU: prepare subject folders from videos (the format in
:mod:`streamer.reconstruct.lhm.train.data`: frames, person masks, per-frame SMPL-X parameters
and cameras, e.g. from a multi-view capture or a video tracker), then::

    streamer train-lhm --config 500M --data DATA --out runs/500m --sapiens sapiens_1b_epoch_173_torchscript.pt2 \\
        --dinov2 dinov2_vitl14_reg4_pretrain.pth --points 40000 --target-size 512 --batch 1 --steps 100000

Sapiens is the frozen body encoder (required: nothing is downloaded); ``--dinov2`` initialises
the head encoder (optional). On CUDA the head encoder and the transformer train in bf16 autocast,
the decoder in fp32; renders go through gsplat. The run folder is a weights folder for
``streamer reconstruct --method lhm``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import InputError


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``streamer train-lhm``."""
    p = sub.add_parser(
        "train-lhm",
        help="train an LHM network (tiny on the CPU from synthetic data; real sizes on CUDA)",
        description=(__doc__ or "").split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--make-synthetic", metavar="DIR", help="write synthetic training data (built-in body) to DIR and exit")
    p.add_argument("--subjects", type=int, default=2, help="--make-synthetic: subjects (default: %(default)s)")
    p.add_argument("--poses", type=int, default=4, help="--make-synthetic: poses per subject (default: %(default)s)")
    p.add_argument("--views", type=int, default=4, help="--make-synthetic: views per pose (default: %(default)s)")
    p.add_argument("--size", type=int, default=64, help="--make-synthetic: image side, pixels (default: %(default)s)")
    p.add_argument("--config", default="tiny", help="tiny, MINI, 500M or 1B (default: %(default)s)")
    p.add_argument("--data", help="training data: a subject folder or a folder of them")
    p.add_argument("--out", help="run folder (checkpoints, log, inference weights)")
    p.add_argument("--steps", type=int, default=200, help="total optimiser steps (default: %(default)s)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default: %(default)s)")
    p.add_argument("--batch", type=int, default=2, help="subjects per step (default: %(default)s)")
    p.add_argument("--targets", type=int, default=2, help="target frames per subject (default: %(default)s)")
    p.add_argument("--points", type=int, default=1024, help="canonical query points (default: %(default)s)")
    p.add_argument("--target-size", type=int, default=64, help="longer side of target renders, pixels (default: %(default)s)")
    p.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints (default: %(default)s)")
    p.add_argument("--lpips-weight", type=float, default=0.0, help="perceptual term (needs the lpips package; default off)")
    p.add_argument("--seed", type=int, default=0, help="random seed: synthetic data, weight initialisation, batch order (default: %(default)s)")
    p.add_argument("--workers", type=int, default=0, help="data loader worker processes (default: %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out up to --steps")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: %(default)s)")
    p.add_argument("--sapiens", metavar="FILE", help="Sapiens-1B TorchScript (required for MINI / 500M / 1B)")
    p.add_argument("--dinov2", metavar="FILE", help="DINOv2 ViT-L/14-reg weights to initialise the head encoder")
    p.add_argument("--smplx-dir", help="SMPL-X folder of the data's parameters (default: the built-in body)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..assets import load_body
    from ..reconstruct.lhm.train import LossWeights, TrainOptions, make_synthetic, train

    body = load_body(args.smplx_dir)
    if args.make_synthetic:
        folders = make_synthetic(args.make_synthetic, body, args.subjects, args.poses, args.views, args.size, seed=args.seed)
        out: dict[str, Any] = {"synthetic": [str(f) for f in folders]}
        print(json.dumps(out) if args.json else f"wrote {len(folders)} subjects to {args.make_synthetic}")
        return 0
    if not args.data or not args.out:
        raise InputError("train-lhm needs --data DIR and --out RUN_DIR (or --make-synthetic DIR)")
    opts = TrainOptions(
        config=args.config, steps=args.steps, lr=args.lr, batch=args.batch, targets=args.targets,
        points=args.points, target_size=args.target_size, checkpoint_every=args.checkpoint_every,
        seed=args.seed, device=args.device, workers=args.workers, weights=LossWeights(lpips=args.lpips_weight),
    )
    from tqdm import tqdm

    bar = tqdm(total=args.steps, desc="train-lhm", unit="step", file=sys.stderr, disable=None)

    def progress(step: int, values: dict[str, float]) -> None:
        bar.n = step
        bar.set_postfix(loss=f"{values['loss']:.4f}", refresh=False)
        bar.update(0)

    try:
        result = train(args.data, args.out, opts, body, resume=args.resume, sapiens=args.sapiens,
                       dinov2=args.dinov2, progress=progress)
    finally:
        bar.close()
    k = max(1, min(10, len(result.losses) // 4))
    summary = {
        "run_dir": str(result.run_dir),
        "device": result.device,
        "start_step": result.start_step,
        "step": result.step,
        "seconds": round(result.seconds, 2),
        "loss_first": sum(result.losses[:k]) / k if result.losses else None,
        "loss_last": sum(result.losses[-k:]) / k if result.losses else None,
        "losses": result.losses,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"steps {result.start_step}->{result.step} in {result.seconds:.1f} s on {result.device}; "
              f"loss {summary['loss_first']} -> {summary['loss_last']} (mean of {k} steps); run in {result.run_dir}")
    return 0
