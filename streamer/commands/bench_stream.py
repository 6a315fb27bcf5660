"""``streamer bench stream``: the whole live pipeline over loopback WebRTC, measured.

An avatar server runs in this process (its own event loop and workers); a performer client sends a
video file as its webcam (real time, looping) and a viewer client watches, both real aiortc peers
over loopback. After a warm-up the server's figures are reset and collected for ``--seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError, StreamError
from .bench import YARDSTICK, _machine, machine_text, yardstick_ms
from .bench_track import SHARED_VIDEO, default_video

if TYPE_CHECKING:
    from ..stream.background import ServerThread

#: Most seconds to wait for the first tracked webcam frame (MediaPipe start-up on a busy machine).
FIRST_POSE_TIMEOUT_S = 120.0
#: ``--viewer-codec`` names -> MIME types (``streamer.stream.camera_encoder.CODEC_MIME_TYPES``, not
#: imported here: it loads PyAV, and building the parser should not).
VIEWER_CODECS = {"vp8": "video/VP8", "h264": "video/H264"}


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    """``streamer bench stream``."""
    q = sub.add_parser(
        "stream",
        help="performer + viewer over loopback WebRTC: fps, latency, drops, stage times",
        description="Run the avatar server and a real aiortc performer and viewer in this process over "
        "loopback; the performer sends a video's frames as its webcam. Reports fps, server-added latency, "
        "dropped frames and per-stage medians.",
    )
    q.add_argument(
        "--video", help=f"video sent as the performer's webcam (default: the shared {SHARED_VIDEO.name})"
    )
    q.add_argument(
        "--seconds", type=float, default=20.0, help="measured seconds after warm-up (default: %(default)s)"
    )
    q.add_argument(
        "--warmup",
        type=float,
        default=3.0,
        help="seconds after the first tracked frame before measuring (default: %(default)s)",
    )
    q.add_argument(
        "--viewers", type=int, default=1, help="viewer clients besides the performer (default: %(default)s)"
    )
    q.add_argument(
        "--webcam-size",
        type=int,
        default=640,
        help="longer side of the webcam frames sent, pixels (default: %(default)s)",
    )
    q.add_argument(
        "--client-encode",
        action="store_true",
        help="the performer decodes and VP8-encodes the video in real time in this process (default: "
        "encoded once before measuring, as a remote webcam whose encoding happens on its own machine)",
    )
    q.add_argument(
        "--viewer-codec",
        default="vp8",
        choices=sorted(VIEWER_CODECS),
        help="the codec the viewers offer (default: %(default)s; the performer's stream stays VP8, so h264 "
        "encodes each picture twice, as a stage with a browser and an H.264-only client does)",
    )
    q.add_argument("--size", type=int, default=512, help="avatar video size (default: %(default)s)")
    q.add_argument("--fps", type=float, default=30.0, help="avatar video frame rate (default: %(default)s)")
    q.add_argument(
        "--backend", default="auto", choices=["auto", "cpu", "cuda"], help="renderer (default: %(default)s)"
    )
    q.add_argument("--models", default="holistic", help="MediaPipe models (default: %(default)s)")
    q.add_argument(
        "--render-threads",
        type=int,
        default=1,
        help="OpenMP threads per CPU render (default: %(default)s, as serve; 0 = one per core)",
    )
    q.add_argument(
        "--motion",
        metavar="M",
        help="drive the avatar from a motion file ('demo': the built-in one) instead of the video (no tracking)",
    )
    q.add_argument("--avatar", metavar="A.ply", help="avatar (default: the built-in demo avatar)")
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.set_defaults(func=run_stream)


def _p50(summary: dict[str, Any]) -> float | None:
    return summary.get("p50")


@dataclass
class Measured:
    """What one measurement window gave."""

    snapshot: dict[str, Any]  # the stage's figures (Stage.snapshot)
    received_fps: list[float]  # avatar frames per second per client (performer first)
    webcam_sent_fps: float
    cpu_cores: float  # this process's CPU time over wall time (server and clients)
    cpu_by_thread: dict[str, float]  # percent of one core per thread group (ThreadCpu)
    elapsed: float
    counts: dict[str, int]
    codecs: list[str | None]  # the avatar video's codec per client (performer first)


async def _measure(st: ServerThread, args: argparse.Namespace, video: Path | None) -> Measured:
    """Connect the clients, wait for the first avatar frame, warm up, then measure for ``args.seconds``.

    The server's own state (its stages, their figures) is read on the server's event loop through
    :meth:`ServerThread.call`, never from this (the clients') loop.
    """
    from ..stream.client import StreamClient, VideoFileTrack
    from ..stream.encoded_clip import EncodedClipTrack, encode_clip
    from .thread_cpu import ThreadCpu

    source: VideoFileTrack | EncodedClipTrack | None = None
    if video is not None and args.client_encode:
        source = VideoFileTrack(video, max_side=args.webcam_size, loop=True)
    elif video is not None:
        source = EncodedClipTrack(await asyncio.to_thread(encode_clip, video, args.webcam_size))
    performer = StreamClient(st.url, "performer", source=source)
    codecs = (VIEWER_CODECS[args.viewer_codec],)
    viewers = [StreamClient(st.url, "viewer", codecs=codecs) for _ in range(args.viewers)]
    server = st.server
    assert server is not None
    clients = [performer, *viewers]
    try:
        for c in clients:
            await c.connect(timeout=120.0)
        entry = await asyncio.to_thread(st.call, lambda: server.stages["main"])
        stats = entry.stage.stats  # thread-safe counters, read from here
        deadline = time.monotonic() + FIRST_POSE_TIMEOUT_S
        while (stats.tracked.count == 0 and args.motion is None) or performer.received.count == 0:
            if time.monotonic() > deadline:
                raise StreamError("no avatar frame or tracked webcam frame within 120 s; see the server log")
            await asyncio.sleep(0.1)
        await asyncio.sleep(args.warmup)
        await asyncio.to_thread(st.call, stats.reset)
        counts0 = [c.received.count for c in clients]
        sent0 = source.frames_sent if source is not None else 0
        threads = ThreadCpu()
        threads.start()
        cpu0, t0 = time.process_time(), time.monotonic()
        await asyncio.sleep(args.seconds)
        elapsed = time.monotonic() - t0
        by_thread = threads.shares(elapsed)
        snapshot = await asyncio.to_thread(st.call, lambda: entry.stage.snapshot(peers=entry.peer_count))
        return Measured(
            snapshot=snapshot,
            received_fps=[(c.received.count - n0) / elapsed for c, n0 in zip(clients, counts0)],
            webcam_sent_fps=((source.frames_sent - sent0) / elapsed) if source is not None else 0.0,
            cpu_cores=(time.process_time() - cpu0) / elapsed,
            cpu_by_thread=by_thread,
            elapsed=elapsed,
            codecs=[c.video_codec for c in clients],
            counts={
                "sent": stats.frames_out.count,
                "tracked": stats.tracked.count,
                "frames_in": stats.frames_in.count,
                "renders": stats.renders.count,
                "poses": stats.poses.count,
            },
        )
    finally:
        for c in clients:
            await c.close()
        if source is not None:
            source.stop()


def run_stream(args: argparse.Namespace) -> int:
    from ..assets import load_body
    from ..fileio import check_input
    from ..stream.background import ServerThread
    from ..stream.server import DEMO_MOTION, ServerConfig

    if args.seconds <= 0 or args.warmup < 0:
        raise InputError("--seconds must be positive and --warmup not negative")
    if args.viewers < 0:
        raise InputError(f"--viewers must be >= 0, got {args.viewers}")
    video: Path | None = None
    if args.motion is None:
        video = default_video(args.video)
    # Files the server would only open after the yardstick's few seconds: say now when they are not there.
    for flag, name in (("--video", video), ("--avatar", args.avatar), ("--motion", args.motion)):
        if name is not None and not (flag == "--motion" and name == DEMO_MOTION):
            check_input(flag, name)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("websockets").setLevel(logging.ERROR)
    config = ServerConfig(
        port=0,
        size=args.size,
        fps=args.fps,
        backend=args.backend,
        models=args.models,
        render_threads=args.render_threads,
        motion=args.motion,
        avatar=args.avatar,
    )
    if not args.json:
        print("bench stream: timing the yardstick, then starting the server and the clients ...", file=sys.stderr)
    yardstick = yardstick_ms(load_body(None))  # before the server: this machine's speed today, undisturbed
    with ServerThread(config) as st:
        assert st.server is not None
        result = asyncio.run(_measure(st, args, video))
        backend = st.server.backend
    snap = result.snapshot
    stage_ms = {name: _p50(s) for name, s in snap["stages_ms"].items()}
    wait_ms = {name: _p50(s) for name, s in snap["waits_ms"].items()}
    counts = result.counts
    elapsed = result.elapsed
    peers = 1 + args.viewers
    out = {
        "bench": "stream",
        "machine": {**_machine(), "torch_threads": config.torch_threads},  # the server's, not this thread's
        "load_average_1min": round(os.getloadavg()[0], 2),
        "yardstick_render_ms": round(yardstick, 2),
        "backend": backend,
        "source": "motion" if args.motion else Path(video).name,  # type: ignore[arg-type]
        "webcam": None if args.motion else ("encoded in this process" if args.client_encode else "pre-encoded VP8"),
        "size": args.size,
        "target_fps": args.fps,
        "viewers": args.viewers,
        "viewer_codec": args.viewer_codec,
        "video_codec_per_client": result.codecs,
        "seconds": round(elapsed, 2),
        "fps": round(min(result.received_fps), 2),
        "fps_per_client": [round(f, 2) for f in result.received_fps],
        "server_fps": round(counts["sent"] / elapsed / peers, 2),
        "new_poses_per_s": round(counts["poses"] / elapsed, 2),
        "renders_per_s": round(counts["renders"] / elapsed, 2),
        "webcam_fps_sent": round(result.webcam_sent_fps, 2),
        "webcam_fps_received": round(counts["frames_in"] / elapsed, 2),
        "tracked_per_s": round(counts["tracked"] / elapsed, 2),
        "latency_ms_p50": snap["latency_ms"]["p50"],
        "latency_ms_p95": snap["latency_ms"]["p95"],
        "latency_samples": snap["latency_ms"]["n"],
        "dropped_frames": snap["dropped_frames"],
        "dropped_output_frames": snap["dropped_output_frames"],
        **{f"{name}_ms_p50": value for name, value in stage_ms.items()},
        **{f"{name}_ms_p50": value for name, value in wait_ms.items()},
        "encode_ms_p50_by_codec": {name: _p50(times) for name, times in snap["encode_ms_by_codec"].items()},
        "process_cpu_cores": round(result.cpu_cores, 2),
        "cpu_percent_by_thread": result.cpu_by_thread,
    }
    if args.json:
        print(json.dumps(out))
        return 0
    count, size = YARDSTICK
    print(
        f"bench stream  ({machine_text(out['machine'])}, load {out['load_average_1min']}; "
        f"yardstick: {count // 1000}k "
        f"Gaussians rendered at {size}x{size} in {out['yardstick_render_ms']} ms)"
    )
    print(
        f"  {out['source']} -> {args.size}x{args.size} avatar, backend {backend}, 1 performer + {args.viewers} viewer(s), "
        f"{out['seconds']} s"
    )
    print(
        f"  fps {out['fps']} (per client {out['fps_per_client']}; new poses {out['new_poses_per_s']}/s, "
        f"tracked {out['tracked_per_s']}/s of {out['webcam_fps_received']}/s received)"
    )
    print(
        f"  latency_ms p50 {out['latency_ms_p50']}  p95 {out['latency_ms_p95']}  ({out['latency_samples']} samples)"
    )
    print(
        f"  dropped_frames {out['dropped_frames']} webcam frames (not queued), {out['dropped_output_frames']} output"
    )
    print("  stage medians ms: " + "  ".join(f"{k} {v}" for k, v in stage_ms.items()))
    print("  waits medians ms: " + "  ".join(f"{k} {v}" for k, v in wait_ms.items()))
    by_codec = "  ".join(f"{k} {v}" for k, v in out["encode_ms_p50_by_codec"].items())
    print(f"  encode medians ms by codec: {by_codec}  (clients got {', '.join(map(str, result.codecs))})")
    print(f"  process CPU {out['process_cpu_cores']} cores (server and clients)")
    if result.cpu_by_thread:
        shares = "  ".join(f"{k} {v}" for k, v in result.cpu_by_thread.items())
        print(f"  CPU by thread, % of one core: {shares}")
    return 0
