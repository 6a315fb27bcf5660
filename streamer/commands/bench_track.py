"""``streamer bench track``: MediaPipe (per model and total) and SMPL-X fit speed on a real video."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import InputError
from ..tracking.mediapipe_runner import (
    HAND_LINGER_FRAMES,
    LIVE_FACE_INTERVAL,
    LIVE_HAND_SEARCH_INTERVAL,
    MediaPipeRunner,
)
from ..tracking.sources import VideoFileSource
from .bench import _machine, machine_text, summarize

#: The shared full-body test video, relative to the repository (``../shared/data`` beside the checkout).
SHARED_VIDEO = (
    Path(__file__).resolve().parents[2].parent / "shared" / "data" / "video" / "full_body_taichi.mp4"
)
WARMUP_FRAMES = 5  # graph start-up and the first detections are slower than steady-state tracking


def default_video(video: str | None) -> Path:
    """``--video`` as given (checked later, by the reader), or the shared test video, which must exist."""
    if video:
        return Path(video)
    if not SHARED_VIDEO.is_file():
        raise InputError(f"no --video given, and the shared test video is not at {SHARED_VIDEO}")
    return SHARED_VIDEO


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    """``streamer bench track``."""
    q = sub.add_parser(
        "track",
        help="MediaPipe and landmark->SMPL-X fit per frame on a video",
        description="Time MediaPipe and the landmark->SMPL-X fit on each frame of a video, as the live tracker runs them.",
    )
    q.add_argument("--video", help=f"video file (default: the shared test video, {SHARED_VIDEO.name})")
    q.add_argument(
        "--frames", type=int, default=150, help="frames to track, from the start (default: %(default)s)"
    )
    q.add_argument(
        "--models",
        default="holistic",
        help="MediaPipe models: holistic, or a comma list of pose, hands, face (default: %(default)s)",
    )
    q.add_argument(
        "--hand-search-interval",
        type=int,
        default=LIVE_HAND_SEARCH_INTERVAL,
        help="holistic: run the hand models every N-th frame while no hand was found in the last "
        f"{HAND_LINGER_FRAMES} frames (1: every frame, as MediaPipe's Holistic; default: %(default)s, "
        "as the live server)",
    )
    q.add_argument(
        "--face-interval",
        type=int,
        default=LIVE_FACE_INTERVAL,
        help="holistic: run the face models every N-th frame, the fit holding the face in between "
        "(1: every frame; default: %(default)s, as the live server)",
    )
    q.add_argument("--smplx-dir", help="folder with real SMPL-X files (default: built-in body model)")
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.set_defaults(func=run_track)


def run_track(args: argparse.Namespace) -> int:
    """Track the first ``--frames`` frames in video mode; time each MediaPipe graph and the fit."""
    from ..assets import load_body
    from ..tracking.fit import PoseFitter

    if args.frames <= WARMUP_FRAMES:
        raise InputError(
            f"--frames must be more than {WARMUP_FRAMES} (the warm-up frames), got {args.frames}"
        )
    for flag, value in (
        ("--hand-search-interval", args.hand_search_interval),
        ("--face-interval", args.face_interval),
    ):
        if value < 1:
            raise InputError(f"{flag} must be >= 1, got {value}")
    video = default_video(args.video)
    body = load_body(args.smplx_dir)
    per_stage: dict[str, list[float]] = {}
    tracked = frames = searched = with_hands = faces_searched = 0
    # Frames are decoded as they are tracked (keeping them all would take ~2.7 MB each); only
    # MediaPipe and the fit are timed, not decoding.
    with (
        VideoFileSource(video) as source,
        MediaPipeRunner(
            args.models,
            video=True,
            hand_search_interval=args.hand_search_interval,
            face_interval=args.face_interval,
        ) as runner,
    ):
        fitter = PoseFitter(body, K=None, fps=source.fps)
        size = f"{source.width}x{source.height}"
        for i, (t_ms, rgb) in enumerate(source):
            if i >= args.frames:
                break
            frame = runner.process(rgb, t_ms)
            fitter.fit(frame)
            frames += 1
            tracked += frame.has_person
            searched += frame.hands_searched
            faces_searched += frame.face_searched
            with_hands += frame.left_hand is not None or frame.right_hand is not None
            if i < WARMUP_FRAMES:
                continue
            for name, ms in frame.timings_ms.items():
                per_stage.setdefault(f"mediapipe:{name}", []).append(ms)
            per_stage.setdefault("fit", []).append(float(fitter.last_timings_ms["total"]))
            if not args.json and i % 30 == 0:
                print(f"  frame {i}/{args.frames}", file=sys.stderr)
    rows = [{"stage": stage, "frames": len(times), **summarize(times)} for stage, times in per_stage.items()]
    result = {
        "bench": "track",
        "machine": _machine(),
        "video": video.name,
        "size": size,
        "models": ",".join(runner.models),
        "frames": frames,
        "tracked_frames": tracked,
        "hands_searched_frames": searched,
        "frames_with_hands": with_hands,
        "face_searched_frames": faces_searched,
        "warmup_frames": WARMUP_FRAMES,
        "results": rows,
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"bench track  ({machine_text(result['machine'])})")
    print(f"  {video.name} {size}: {frames} frames, a person in {tracked}; models {result['models']}")
    print(f"  hand models ran on {searched} frames, found a hand in {with_hands}; face models on {faces_searched}")
    for r in rows:
        print(
            f"  {r['stage']:24s} median {r['median_ms']:8.2f} ms   "
            f"p10 {r['p10_ms']:8.2f}   p90 {r['p90_ms']:8.2f}"
        )
    return 0
