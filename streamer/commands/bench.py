"""``streamer bench render|lbs``: per-stage speed figures (medians, ms) as text or one JSON object."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import InputError

# (torch and the modules that need it load when a bench runs: ``streamer --help`` stays quick)
if TYPE_CHECKING:
    from ..avatar import Gaussians
    from ..body import BodyModel
    from ..render import Renderer

BENCH_POSE_FRAME = 75  # a frame of the demo motion with the arm raised mid-wave


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    """``streamer bench render`` and ``streamer bench lbs``."""
    for name, func, default_counts, helptext in (
        ("render", run_render, "10000,40000,200000", "rasterize the posed demo avatar"),
        ("lbs", run_lbs, "10000,40000,200000", "linear blend skinning of the demo avatar"),
    ):
        q = sub.add_parser(name, help=helptext, description=f"{helptext[0].upper()}{helptext[1:]}: medians in ms.")
        q.add_argument("--backends", default="all", help="comma list (cpu,cuda) or 'all' available (default: %(default)s)")
        q.add_argument("--counts", default=default_counts, help="Gaussian counts (default: %(default)s)")
        q.add_argument("--repeats", type=int, default=30, help="timed runs per case (default: %(default)s)")
        q.add_argument("--warmup", type=int, default=3, help="untimed runs first (default: %(default)s)")
        q.add_argument("--smplx-dir", help="folder with real SMPL-X files (default: built-in body model)")
        q.add_argument("--json", action="store_true", help="print one JSON object")
        if name == "render":
            q.add_argument(
                "--sizes",
                default="256,512,1024",
                help="square frame sizes (default: %(default)s). Every count is timed at 512 (or the first "
                "size given without 512) and every size at 40000 (or the first count), not the full grid",
            )
        q.set_defaults(func=func)


#: The most Gaussians a case may ask for (200k is the largest default; 100M would need ~100 GiB).
MAX_COUNT = 5_000_000


def _ints(text: str, option: str, low: int, high: int, even: bool = False) -> list[int]:
    """A comma list of integers in [low, high] (even ones when ``even``), or an InputError naming ``option``."""
    kind = "even integers" if even else "integers"
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{option} must be a comma-separated list of {kind}, got {text!r}") from None
    if not values or min(values) < low or max(values) > high or (even and any(v % 2 for v in values)):
        raise InputError(f"{option} must be {kind} in [{low}, {high}], got {text!r}")
    return values


def _check_repeats(args: argparse.Namespace) -> None:
    if args.repeats < 1 or args.warmup < 0:
        raise InputError(f"--repeats must be >= 1 and --warmup >= 0, got {args.repeats} and {args.warmup}")


def _backends(text: str) -> list[str]:
    import torch

    from ..render import resolve_backend

    if text == "all":
        return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    return [resolve_backend(b.strip()) for b in text.split(",")]


def time_ms(fn: Callable[[], object], repeats: int, warmup: int, cuda: bool) -> dict[str, float]:
    """Median and spread of ``fn`` in milliseconds (CUDA-synchronised when ``cuda``)."""
    import torch

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, repeats)):
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1e3)
    return summarize(times)


def summarize(times_ms: list[float]) -> dict[str, float]:
    """Median, 10th and 90th percentile of timings in ms, rounded to us (the same interpolated
    percentiles as the streaming stats, :func:`streamer.stream.stats.percentile`)."""
    from ..stream.stats import percentile

    times = list(times_ms)
    return {
        "median_ms": round(statistics.median(times), 3),
        "p10_ms": round(percentile(times, 10.0) or 0.0, 3),
        "p90_ms": round(percentile(times, 90.0) or 0.0, 3),
    }


def _machine() -> dict[str, object]:
    import torch

    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def machine_text(machine: dict[str, object]) -> str:
    """What :func:`_machine` found, in words: ``2 CPUs, 1 torch threads, no GPU``."""
    gpu = f", GPU {machine['gpu']}" if machine["gpu"] else ", no GPU"
    return f"{machine['cpus']} CPUs, {machine['torch_threads']} torch threads{gpu}"


def _report(kind: str, rows: list[dict], args: argparse.Namespace) -> int:
    result = {"bench": kind, "machine": _machine(), "results": rows}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"bench {kind}  ({machine_text(result['machine'])})")
    for r in rows:
        case = "  ".join(f"{k}={r[k]}" for k in r if not k.endswith("_ms"))
        print(f"  {case:48s} median {r['median_ms']:8.2f} ms   p10 {r['p10_ms']:8.2f}   p90 {r['p90_ms']:8.2f}")
    return 0


#: The yardstick of the README's speed table: the demo avatar with this many Gaussians rendered at
#: this size on the CPU (the machines here vary by 1.5x from day to day; figures of one day compare).
YARDSTICK = (40000, 512)


def _time_render(
    renderer: Renderer, posed: Gaussians, size: int, device: str, repeats: int, warmup: int
) -> dict[str, float]:
    from ..render import Camera

    cam = Camera.framing(posed.means, size, size, margin=1.05)
    g, c = posed.to(device), cam.to(device)
    return time_ms(lambda: renderer.render(g, c, (1.0, 1.0, 1.0)), repeats, warmup, device == "cuda")


def _posed_demo(body: BodyModel, count: int) -> Gaussians:
    from ..avatar.demo import build_demo_avatar
    from ..tracking.demo_motion import demo_motion

    return build_demo_avatar(body, num_gaussians=count).pose(body, demo_motion().poses[BENCH_POSE_FRAME])


def yardstick_ms(body: BodyModel, repeats: int = 20) -> float:
    """Median ms of the :data:`YARDSTICK` render on the CPU (one per core), as ``bench render`` times it."""
    from ..render import get_renderer

    count, size = YARDSTICK
    return _time_render(get_renderer("cpu"), _posed_demo(body, count), size, "cpu", repeats, 3)["median_ms"]


def run_render(args: argparse.Namespace) -> int:
    """Rasterize the demo avatar, posed mid-wave and framed to fill the image."""
    from ..assets import load_body
    from ..render import get_renderer

    body = load_body(args.smplx_dir)
    rows = []
    counts = _ints(args.counts, "--counts", 1, MAX_COUNT)
    sizes = _ints(args.sizes, "--sizes", 16, 4096, even=True)
    _check_repeats(args)
    # Scaling with count at the middle size, and with size at the middle count (the full grid adds little).
    mid_count, mid_size = (40000 if 40000 in counts else counts[0]), (512 if 512 in sizes else sizes[0])
    cases = sorted({(n, mid_size) for n in counts} | {(mid_count, s) for s in sizes})
    for backend in _backends(args.backends):
        device = "cuda" if backend == "cuda" else "cpu"
        renderer = get_renderer(backend)
        for count in sorted({c[0] for c in cases}):
            posed = _posed_demo(body, count)
            for size in sorted({c[1] for c in cases if c[0] == count}):
                stats = _time_render(renderer, posed, size, device, args.repeats, args.warmup)
                rows.append({"backend": backend, "gaussians": count, "size": size, **stats})
                if not args.json:
                    print(f"  {backend} {count} @ {size}: {stats['median_ms']:.2f} ms", file=sys.stderr)
    return _report("render", rows, args)


def run_lbs(args: argparse.Namespace) -> int:
    """Skin the demo avatar into one pose (positions and orientations)."""
    import torch

    from ..assets import load_body
    from ..avatar.demo import build_demo_avatar
    from ..tracking.demo_motion import demo_motion

    body = load_body(args.smplx_dir)
    counts = _ints(args.counts, "--counts", 1, MAX_COUNT)
    _check_repeats(args)
    pose = demo_motion().poses[BENCH_POSE_FRAME]
    rows = []
    for backend in _backends(args.backends):
        device = "cuda" if backend == "cuda" else "cpu"
        b = body.to(device)
        for count in counts:
            avatar = build_demo_avatar(body, num_gaussians=count).to(device)
            with torch.inference_mode():
                # The pose stays on the CPU, as the server keeps its live poses (see Avatar.pose_tensors).
                stats = time_ms(lambda: avatar.pose_tensors(b, pose), args.repeats, args.warmup, device == "cuda")
            rows.append({"device": device, "gaussians": count, **stats})
    return _report("lbs", rows, args)
