"""``streamer render``: animate an avatar with a motion and write a video."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputError
from ..fileio import check_output

# (torch and the modules that need it load when the command runs: ``streamer --help`` stays quick)
if TYPE_CHECKING:
    from ..avatar import Avatar
    from ..body import BodyModel
    from ..render import Camera
    from ..tracking.motion import Motion

#: Containers that take H.264 (what :class:`~streamer.render.video.VideoWriter` encodes).
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov")
MAX_FPS = 240.0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "render",
        help="render an avatar animated by a motion to a video file",
        description="Render an avatar (default: the built-in demo avatar) animated by a motion "
        "(default: the built-in demo motion) to an MP4 file, from a fixed camera framing the body.",
    )
    p.add_argument("--avatar", help="avatar .ply (default: built-in demo avatar)")
    p.add_argument("--motion", help="motion .npz (default: built-in demo motion)")
    p.add_argument("--out", "-o", default="demo.mp4", help="output video, .mp4, .mkv or .mov (default: %(default)s)")
    p.add_argument("--size", type=int, default=512, help="the avatar's square frame, pixels (default: %(default)s; --overlay adds the video's frames beside it)")
    p.add_argument("--fps", type=float, help="output frame rate (default: the motion's)")
    p.add_argument("--backend", default="auto", choices=["auto", "cpu", "cuda"], help="renderer (default: %(default)s)")
    p.add_argument("--background", default="1,1,1", help="background RGB in [0,1] (default: %(default)s)")
    p.add_argument("--smplx-dir", help="folder with real SMPL-X files (default: built-in body model)")
    p.add_argument("--overlay", metavar="VIDEO",
                   help="show this video's frames beside the avatar, in sync (e.g. the video --motion was tracked from)")
    p.add_argument("--json", action="store_true", help="print a JSON summary instead of a progress bar")
    p.set_defaults(func=run)


def framing_camera(avatar: Avatar, body: BodyModel, motion: Motion, size: int) -> Camera:
    """A fixed camera in front of the body that keeps every frame of the motion in view."""
    from ..render import Camera

    step = max(1, len(motion) // 24)
    sample = motion.poses[::step]
    means, _ = avatar.pose_tensors(body, sample)
    return Camera.framing(means.reshape(-1, 3), size, size, margin=1.1)


def overlay_frames(video: str, times_ms: list[float], height: int) -> tuple[int, Iterator[np.ndarray]]:
    """Frames of ``video`` shown at ``times_ms``, scaled to ``height``: (their even width, [height, w, 3] uint8)."""
    import cv2

    from ..tracking.sources import VideoFileSource, frames_at

    source = VideoFileSource(video)
    width = max(2, round(source.width * height / source.height / 2) * 2)

    def frames() -> Iterator[np.ndarray]:
        with source:
            for _, rgb in frames_at(iter(source), iter(times_ms)):
                yield cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)

    return width, frames()


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from ..assets import load_avatar_or_demo, load_body, load_motion_or_demo
    from ..render import get_renderer, resolve_backend
    from ..render.base import check_background
    from ..render.video import VideoWriter

    if args.size < 16 or args.size > 4096 or args.size % 2:
        raise InputError(f"--size must be an even number in [16, 4096], got {args.size}")
    if args.fps is not None and not 0 < args.fps <= MAX_FPS:
        raise InputError(f"--fps must be in (0, {MAX_FPS:g}], got {args.fps:g}")
    check_output(args.out, VIDEO_SUFFIXES)
    background = check_background(args.background.split(","))
    backend = resolve_backend(args.backend)
    device = "cuda" if backend == "cuda" else "cpu"
    t0 = time.perf_counter()
    body = load_body(args.smplx_dir).to(device)
    avatar = load_avatar_or_demo(args.avatar, body).to(device)
    motion = load_motion_or_demo(args.motion)
    poses = motion.poses  # on the CPU, where the joints' transforms are fast (see Avatar.pose_tensors)
    camera = framing_camera(avatar, body, motion, args.size).to(device)
    renderer = get_renderer(backend)
    fps = args.fps if args.fps is not None else motion.fps
    # Resample the motion to the output rate (nearest frame).
    count = max(1, round(len(motion) * fps / motion.fps))
    index = torch.clamp((torch.arange(count) * motion.fps / fps).round().long(), max=len(motion) - 1)
    render_ms = []
    side_width, side = 0, None
    if args.overlay:  # the video frame at each motion frame's time goes left of the avatar
        side_width, side = overlay_frames(args.overlay, (index * 1000.0 / motion.fps).tolist(), args.size)
    with VideoWriter(args.out, side_width + args.size, args.size, fps=fps) as writer:
        for i in tqdm(index.tolist(), desc="render", unit="frame", disable=args.json, file=sys.stderr):
            posed = avatar.pose(body, poses[i])
            t = time.perf_counter()
            rgb, _ = renderer.render(posed, camera, background)
            render_ms.append((time.perf_counter() - t) * 1e3)
            if side is not None:
                rgb = np.concatenate([next(side), (rgb.clamp(0, 1) * 255 + 0.5).byte().cpu().numpy()], axis=1)
            writer.write(rgb)
    summary = {
        "output": str(args.out),
        "frames": count,
        "fps": fps,
        "size": args.size,
        "width": side_width + args.size,  # (with --overlay the video's frames sit beside the avatar)
        "height": args.size,
        "overlay": args.overlay,
        "backend": backend,
        "gaussians": len(avatar),
        "render_ms_median": round(sorted(render_ms)[len(render_ms) // 2], 3),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        size = f"{summary['width']}x{summary['height']}"
        print(f"wrote {args.out}: {count} frames at {fps:g} fps, {size}, backend {backend}")
    return 0
