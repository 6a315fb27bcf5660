"""``streamer track``: a video file or camera -> MediaPipe landmarks -> SMPL-X poses -> a motion file."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from ..errors import InputError, TrackingError
from ..fileio import check_output
from ..tracking.landmarks import FrameLandmarks
from ..tracking.mediapipe_runner import MediaPipeRunner
from ..tracking.sources import FrameSource, open_source

if TYPE_CHECKING:
    from calibration.camera import CameraIntrinsics

    from ..body import SmplxPose
    from ..tracking.fit import PoseFitter


#: A file that yields fewer of the frames its header declares is reported as likely truncated
#: (the count of some containers is an estimate from the duration, hence the margin).
SHORT_VIDEO_FRACTION = 0.95


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "track",
        help="track a person in a video or camera and write the SMPL-X motion",
        description="Run MediaPipe (pose, hands, face) on every frame of a video file or camera (camera:N), "
        "fit SMPL-X to the landmarks and write the motion as .npz (one pose per frame; a variable-frame-rate "
        "video is resampled to a steady rate). "
        "Stop a camera with Ctrl+C; what was tracked so far is written.",
    )
    p.add_argument("source", metavar="VIDEO_OR_CAMERA", help="a video file, or camera:N for camera index N")
    p.add_argument("--out", "-o", required=True, help="output motion .npz")
    p.add_argument(
        "--mirror",
        action="store_true",
        help="mirror the performer (selfie view: their right hand moves the avatar's left)",
    )
    p.add_argument(
        "--camera-json",
        metavar="K.json",
        help="camera intrinsics from `streamer calibrate camera` (default: a field-of-view guess)",
    )
    p.add_argument("--profile", help="performer profile name or JSON (from `streamer calibrate performer`)")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    p.add_argument(
        "--models",
        default="holistic",
        help="MediaPipe models: holistic, or a comma list of pose, hands, face (default: %(default)s)",
    )
    p.add_argument("--smplx-dir", help="folder with real SMPL-X files (default: built-in body model)")
    p.add_argument("--json", action="store_true", help="print a JSON summary (no progress bar for files)")
    p.set_defaults(func=run)


@dataclass
class TrackResult:
    """What :func:`track_frames` collected: one pose per frame and per-frame timings (ms)."""

    poses: list[SmplxPose] = field(default_factory=list)
    tracked: int = 0
    mediapipe_ms: list[float] = field(default_factory=list)
    fit_ms: list[float] = field(default_factory=list)
    model_ms: dict[str, list[float]] = field(default_factory=dict)
    times_ms: list[float] = field(default_factory=list)  # each frame's time in the source
    first_person: int | None = None  # the first frame with a person
    interrupted: bool = False

    @property
    def frames(self) -> int:
        return len(self.poses)

    @property
    def first_ms(self) -> float | None:
        return self.times_ms[0] if self.times_ms else None

    @property
    def last_ms(self) -> float | None:
        return self.times_ms[-1] if self.times_ms else None


def undistort_landmarks(frame: FrameLandmarks, intrinsics: CameraIntrinsics) -> None:
    """Move the pixel landmarks of ``frame`` (in place) to where a distortion-free camera sees them."""
    if not intrinsics.has_distortion:
        return
    parts = [frame.pose, frame.left_hand, frame.right_hand, frame.face]
    for part in parts:
        if part is not None:
            part.image[:, :2] = intrinsics.undistort_points(part.image[:, :2])


def track_frames(
    source: FrameSource,
    runner: MediaPipeRunner,
    fitter: PoseFitter,
    max_frames: int | None = None,
    intrinsics: CameraIntrinsics | None = None,
    progress: bool = True,
) -> TrackResult:
    """Run MediaPipe and the fitter over a source; Ctrl+C stops a live camera early (not a file).

    The frames before the person first appears take their first pose: live, the avatar waits at
    rest where the camera's default framing puts it, but a motion file knows where they will be,
    and should not start with a jump there.

    Args:
        source: frames to track.
        runner: MediaPipe in video mode.
        fitter: turns each frame's landmarks into a pose (``fit``) and reports ``last_timings_ms``.
        max_frames: stop after this many frames (None: until the source ends).
        intrinsics: when given with distortion, landmarks are undistorted before fitting.
        progress: a tqdm bar on stderr.
    """
    result = TrackResult()
    total = source.frame_count if max_frames is None else min(max_frames, source.frame_count or max_frames)
    bar = tqdm(total=total, desc="track", unit="frame", file=sys.stderr, disable=not progress)
    try:
        for t_ms, rgb in source:
            frame = runner.process(rgb, t_ms)
            if intrinsics is not None:
                undistort_landmarks(frame, intrinsics)
            t = time.perf_counter()
            pose = fitter.fit(frame)
            fit_wall_ms = (time.perf_counter() - t) * 1000.0
            timings = getattr(fitter, "last_timings_ms", None) or {}
            if frame.has_person and result.first_person is None:
                result.first_person = result.frames
                result.poses = [pose] * result.frames  # back-fill the empty frames before
            result.poses.append(pose)
            result.tracked += frame.has_person
            result.mediapipe_ms.append(frame.timings_ms["total"])
            result.fit_ms.append(float(timings.get("total", fit_wall_ms)))
            for name, ms in frame.timings_ms.items():
                if name != "total":
                    result.model_ms.setdefault(name, []).append(ms)
            result.times_ms.append(float(t_ms))
            # (every 10th frame: the postfix redraws the bar; the last frame's count is set below)
            bar.set_postfix(tracked=result.tracked, refresh=False)
            bar.update(1)
            if max_frames is not None and result.frames >= max_frames:
                break
    except KeyboardInterrupt:
        if not source.is_live:
            raise
        result.interrupted = True
    finally:
        bar.close()
    return result


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def _motion_fps(source: FrameSource, result: TrackResult) -> float:
    """A file's frame rate; for a camera, the rate frames were actually tracked at."""
    if not source.is_live or result.frames < 2 or result.first_ms is None or result.last_ms is None:
        return source.fps
    span_s = (result.last_ms - result.first_ms) / 1000.0
    return float(np.clip((result.frames - 1) / span_s, 1.0, 1000.0)) if span_s > 0 else source.fps


def uniform_poses(poses: list[SmplxPose], times_ms: list[float], fps: float) -> tuple[list[SmplxPose], bool]:
    """The poses on a uniform ``fps`` grid from the first frame's time to the last's.

    A motion file has one rate; a phone's variable-frame-rate video (30 fps in daylight, 15 in the
    dark) or a camera that skipped frames does not. There each grid time takes the pose of the
    nearest frame, so the motion keeps the video's timing. Returns ``(poses, resampled)``; the
    poses are returned as they are when every frame already lies within half a frame of its grid time.
    """
    t = np.asarray(times_ms, dtype=np.float64)
    step = 1000.0 / fps
    count = round(float(t[-1] - t[0]) / step) + 1 if len(t) else 0
    grid = t[0] + step * np.arange(count) if len(t) else t
    if count == len(t) and np.all(np.abs(t - grid) <= 0.5 * step):
        return poses, False
    right = np.clip(np.searchsorted(t, grid), 1, len(t) - 1)
    nearest = np.where(grid - t[right - 1] <= t[right] - grid, right - 1, right)
    return [poses[i] for i in nearest], True


def run(args: argparse.Namespace) -> int:
    from ..assets import load_body
    from ..body import SmplxPose
    from ..tracking.fit import PoseFitter
    from ..tracking.motion import Motion

    if args.max_frames is not None and args.max_frames < 1:
        raise InputError(f"--max-frames must be at least 1, got {args.max_frames}")
    check_output(args.out, (".npz",))
    t0 = time.perf_counter()
    with open_source(args.source) as source:  # bad sources and camera files fail before the slow set-up
        intrinsics = None
        if args.camera_json:
            from calibration.camera import load_intrinsics

            intrinsics = load_intrinsics(args.camera_json).scaled_to(source.width, source.height)
        K = None if intrinsics is None else intrinsics.K.astype(np.float32)
        body = load_body(args.smplx_dir)
        fitter = PoseFitter(body, K=K, mirror=args.mirror, profile=args.profile, fps=source.fps)
        with MediaPipeRunner(args.models, video=True) as runner:
            result = track_frames(
                source, runner, fitter, args.max_frames, intrinsics, progress=source.is_live or not args.json
            )
        fps = _motion_fps(source, result)
        size = (source.width, source.height)
    if result.frames == 0:
        raise TrackingError(f"{args.source}: no frames were read; nothing written")
    if result.frames == 1 and not source.is_live and not result.interrupted and args.max_frames != 1:
        raise TrackingError(
            f"{args.source}: a single frame (a still image, not a video): a motion needs a video; "
            "nothing written"
        )
    if result.tracked == 0:
        raise TrackingError(
            f"{args.source}: no person found in any of the {result.frames} frames (a black or empty video, "
            "or the person is too small or out of view); nothing written"
        )
    declared = None if source.is_live else source.frame_count
    wanted = declared if args.max_frames is None or declared is None else min(args.max_frames, declared)
    if wanted and not result.interrupted and result.frames < SHORT_VIDEO_FRACTION * wanted:
        print(
            f"streamer track: warning: {args.source} ended after {result.frames} of the {wanted} frames its "
            "header declares (a truncated file?); the motion has what was read",
            file=sys.stderr,
        )
    poses, resampled = uniform_poses(result.poses, result.times_ms, fps)
    motion = Motion(poses=SmplxPose.stack(poses), fps=fps)
    motion.save(args.out)
    summary = {
        "output": str(args.out),
        "source": str(args.source),
        "frames": result.frames,
        "frames_declared": declared,
        "motion_frames": len(poses),
        "resampled": resampled,
        "tracked_frames": result.tracked,
        "first_person_frame": result.first_person,
        "fps": round(fps, 3),
        "width": size[0],
        "height": size[1],
        "models": ",".join(runner.models),
        "mirror": bool(args.mirror),
        "camera": str(args.camera_json) if args.camera_json else "fov-guess",
        "profile": args.profile,
        "ms_per_frame_mediapipe": _median(result.mediapipe_ms),
        "ms_per_frame_fit": _median(result.fit_ms),
        "ms_per_frame_by_model": {k: _median(v) for k, v in result.model_ms.items()},
        "interrupted": result.interrupted,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        if resampled:
            print(
                f"the video's frame rate varies: its {result.frames} frames were resampled to "
                f"{len(poses)} at a steady {fps:g} fps, keeping their timing"
            )
        print(
            f"wrote {args.out}: {len(poses)} frames at {fps:g} fps, a person in {result.tracked}; "
            f"median MediaPipe {summary['ms_per_frame_mediapipe']} ms, "
            f"fit {summary['ms_per_frame_fit']} ms per frame"
        )
    return 0
