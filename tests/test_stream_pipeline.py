"""The stage pipeline without networking: webcam tracking holds then eases to rest when the webcam
stalls; the render worker renders once per distinct camera; the pacer keeps every view at the
newest picture at once and repeats it (a keep-alive) while the pose does not change."""

from __future__ import annotations

import asyncio
import itertools
import time

import av
import numpy as np
import pytest
import torch
from stream_utils import require_shared_video

from streamer.render import get_renderer
from streamer.stream.painter import AvatarPainter
from streamer.stream.pose_source import MotionPoseSource, TrackingPoseSource
from streamer.stream.protocol import Orbit
from streamer.stream.stage import REPEAT_AFTER_PERIODS, Stage
from streamer.stream.stats import PipelineStats
from streamer.tracking.demo_motion import demo_motion
from streamer.tracking.sources import VideoFileSource

WATCH_DEADLINE_S = 120.0


def _arms(pose) -> torch.Tensor:
    """Shoulder and elbow rotations [4, 3] (body_pose rows of both shoulders and elbows)."""
    return pose.body_pose[[15, 16, 17, 18]]


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def _watch(
    painter, source, stats, fps: float, seconds: float | None = None, count: int | None = None
) -> list[tuple[float, object]]:
    """Run a stage with one view for ``seconds``, or until it has handed ``count`` pictures to the
    view (a slow machine takes longer, it does not fail: at most :data:`WATCH_DEADLINE_S`); every
    picture handed to the view, with its arrival time."""
    limit = seconds if seconds is not None else WATCH_DEADLINE_S

    async def main() -> list[tuple[float, object]]:
        stage = Stage("watch", painter, source, stats, fps=fps, loop=asyncio.get_running_loop())
        view = stage.add_view()
        stage.start()
        got = []
        try:
            seq = 0
            t0 = time.monotonic()
            while time.monotonic() - t0 < limit and (count is None or len(got) < count):
                frame = await asyncio.wait_for(view.bus.next(seq), 30)
                got.append((time.monotonic(), frame))
                seq = frame.seq
        finally:
            await asyncio.to_thread(stage.stop)
        return got

    return asyncio.run(main())


def test_tracking_holds_then_eases_to_rest_when_the_webcam_stalls(body) -> None:
    video = require_shared_video()
    frames = []
    with VideoFileSource(video) as source:  # the person mid-motion, arms wide (about 6.5 s)
        for t_ms, rgb in source:
            if t_ms >= 6300:
                frames.append(av.VideoFrame.from_ndarray(rgb[::2, ::2].copy(), format="rgb24"))
            if len(frames) >= 12:
                break
    stats = PipelineStats()
    tracker = TrackingPoseSource(body, stats, hold_s=3.0)  # a long hold: a slow machine cannot miss it
    rest = _arms(tracker.latest().pose)
    woken = []
    tracker.listen(lambda: woken.append(time.monotonic()))
    tracker.start()
    try:
        for frame in frames:  # 30 fps, faster than tracking: most are dropped, none queued
            tracker.feed(frame, time.monotonic())
            time.sleep(1 / 30)
        # every frame is either tracked or dropped (newest only): none waits in a queue
        assert _wait(lambda: stats.tracked.count + stats.dropped_in == 12, 120), "frames were not processed"
        assert stats.frames_in.count == 12 and stats.tracked.count >= 1
        # the last tracked frame is counted just before its pose is published: let it land
        last = [-1]

        def settled() -> bool:
            seq, last[0] = last[0], tracker.latest().seq
            return seq == last[0]

        assert _wait(lambda: settled() and settled(), 30)
        seen = tracker.latest()
        assert seen.live and seen.capture_time is not None and woken
        wide = _arms(seen.pose)
        assert float((wide - rest).norm()) > 0.5, "the tracked pose should differ from the rest pose"
        # webcam silent: first the pose holds ...
        time.sleep(0.3)
        held = tracker.latest()
        assert held.seq == seen.seq
        # ... then the fitter eases it back to rest (poses no longer count as live)
        assert _wait(
            lambda: float((_arms(tracker.latest().pose) - rest).norm()) < 0.25 * float((wide - rest).norm()),
            30,
        )
        assert not tracker.latest().live
        assert tracker.latest().capture_time == seen.capture_time  # still the last webcam frame's time
    finally:
        tracker.stop()
    assert tracker.error is None


def test_fitting_overlaps_tracking(body, monkeypatch) -> None:
    """The tracker hands landmarks to the fit thread and goes on with the next frame: while a frame
    is being fitted, the next one is tracked (the fit does not lower the tracking rate). Fits keep
    the tracked order."""
    import threading

    from streamer.tracking.landmarks import FrameLandmarks

    processed: list[float] = []
    cond = threading.Condition()
    stopping = False

    class FakeRunner:  # stands in for MediaPipe: nobody seen, instantly
        def __init__(self, models: str, video: bool, hand_search_interval: int = 1, face_interval: int = 1) -> None:
            pass

        def process(self, rgb: np.ndarray, t_ms: float) -> FrameLandmarks:
            with cond:
                processed.append(t_ms)
                cond.notify_all()
            return FrameLandmarks(rgb.shape[1], rgb.shape[0], timestamp_ms=t_ms)

        def close(self) -> None:
            pass

    monkeypatch.setattr("streamer.tracking.mediapipe_runner.MediaPipeRunner", FakeRunner)
    source = TrackingPoseSource(body, PipelineStats())
    fitted: list[tuple[float, bool]] = []
    real_fit = source._fitter.fit

    def fit_waiting_for_the_tracker(landmarks: FrameLandmarks):  # type: ignore[no-untyped-def]
        with cond:
            seen = len(processed)
            overlapped = cond.wait_for(lambda: len(processed) > seen or stopping, timeout=10.0) and not stopping
        fitted.append((landmarks.timestamp_ms, overlapped))
        return real_fit(landmarks)

    source._fitter.fit = fit_waiting_for_the_tracker  # type: ignore[method-assign]
    frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
    source.start()
    try:
        deadline = time.monotonic() + 60
        while len(fitted) < 4 and time.monotonic() < deadline:
            source.feed(frame, time.monotonic())
            time.sleep(0.01)
    finally:
        with cond:
            stopping = True
            cond.notify_all()
        source.stop()
    assert len(fitted) >= 4
    assert all(overlapped for _, overlapped in fitted[:4]), fitted  # a sequential fit would time out
    stamps = [t for t, _ in fitted]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert source.error is None


def test_a_new_performer_starts_the_fit_afresh(body) -> None:
    """``new_performer`` makes the fit thread forget the last person (pose, filters, fades) before
    the next frame it fits, and only then: frames already fitted are not redone."""
    import threading

    from streamer.tracking.landmarks import FrameLandmarks

    source = TrackingPoseSource(body, PipelineStats())
    calls: list[str] = []
    real_fit, real_reset = source._fitter.fit, source._fitter.reset
    source._fitter.fit = lambda lm: (calls.append(f"fit {lm.timestamp_ms:g}"), real_fit(lm))[1]  # type: ignore[method-assign]
    source._fitter.reset = lambda: (calls.append("reset"), real_reset())[0]  # type: ignore[method-assign]
    worker = threading.Thread(target=source._fit_loop)
    worker.start()
    source._to_fit.put((FrameLandmarks(64, 48, timestamp_ms=1.0), None, True))
    deadline = time.monotonic() + 60
    while calls != ["fit 1"] and time.monotonic() < deadline:
        time.sleep(0.01)
    source.new_performer()
    source._to_fit.put((FrameLandmarks(64, 48, timestamp_ms=2.0), None, True))
    source._to_fit.put((FrameLandmarks(64, 48, timestamp_ms=3.0), None, True))
    source._to_fit.put(None)
    worker.join(60)
    assert calls == ["fit 1", "reset", "fit 2", "fit 3"]


def test_fresh_wait_rule() -> None:
    from streamer.stream.pose_source import FRESH_MIN_FPS, FRESH_SLACK, fresh_wait

    interval = 1 / 30
    assert fresh_wait(0.005, interval, 0.010) == 0.0  # fresh enough: track it
    assert fresh_wait(0.025, interval, 0.010) == pytest.approx((1 + FRESH_SLACK) * interval - 0.025)
    assert fresh_wait(0.025, None, 0.010) == 0.0 and fresh_wait(0.025, interval, None) == 0.0  # unknown yet
    assert fresh_wait(0.2, interval, 0.010) == 0.0  # the next frame is overdue: a stalled webcam
    busy = 1 / FRESH_MIN_FPS - 0.005  # a tracker that needs (almost) its whole budget never waits
    assert fresh_wait(0.025, interval, busy) == 0.0


def test_tracker_waits_for_a_fresh_frame_instead_of_a_stale_one(body, monkeypatch) -> None:
    """A frame that was already most of a webcam interval old when the tracker came free is
    dropped for the next one, which is due shortly: tracking it gives a newer pose."""
    import threading

    from streamer.stream import pose_source
    from streamer.tracking.landmarks import FrameLandmarks

    processed: list[int] = []
    cond = threading.Condition()

    class FakeRunner:  # stands in for MediaPipe: records which frame it saw, instantly
        def __init__(self, models: str, video: bool, hand_search_interval: int = 1, face_interval: int = 1) -> None:
            pass

        def process(self, rgb: np.ndarray, t_ms: float) -> FrameLandmarks:
            with cond:
                processed.append(int(rgb[0, 0, 0]))
                cond.notify_all()
            return FrameLandmarks(rgb.shape[1], rgb.shape[0], timestamp_ms=t_ms)

        def close(self) -> None:
            pass

    def frame(value: int) -> av.VideoFrame:
        return av.VideoFrame.from_ndarray(np.full((16, 16, 3), value, np.uint8), format="rgb24")

    monkeypatch.setattr("streamer.tracking.mediapipe_runner.MediaPipeRunner", FakeRunner)
    # a 2.2 fps webcam, and room to wait long for its next frame (~1.9 s): a stalled thread on a
    # busy machine does not turn a wait into a timeout
    monkeypatch.setattr(pose_source, "FRESH_MIN_FPS", 0.2)
    monkeypatch.setattr(pose_source, "FRESH_SLACK", 4.0)
    stats = PipelineStats()
    source = TrackingPoseSource(body, stats)
    source.start()
    try:
        past = time.monotonic() - 10.0
        for k in range(5):  # a slow webcam long ago: the tracker learns the interval and its own speed
            source.feed(frame(k + 1), past + 0.45 * k)
            with cond:
                assert cond.wait_for(lambda k=k: len(processed) == k + 1, timeout=10.0)
        assert source.frame_interval == pytest.approx(0.45) and source.tracking_time is not None
        # stale: 320 ms of a 450 ms interval; the tracker waits for the next frame
        source.feed(frame(100), time.monotonic() - 0.32)
        assert _wait(lambda: not source._slot._full, 10.0)  # the tracker took it ...
        source.feed(frame(200), time.monotonic())  # ... and the next frame comes within its wait
        with cond:
            assert cond.wait_for(lambda: len(processed) == 6, timeout=10.0)
        time.sleep(0.3)
    finally:
        source.stop()
    assert processed == [1, 2, 3, 4, 5, 200], processed  # the stale frame was never tracked
    assert stats.dropped_in == 1 and stats.frames_in.count == 7


def test_stage_renders_once_per_camera_and_paces_every_view(body, demo_avatar) -> None:
    motion = demo_motion()
    source = MotionPoseSource(motion)
    painter = AvatarPainter(demo_avatar, body, get_renderer("cpu"), 64, source.framing_poses())
    skinned: list[int] = []  # one entry per call of painter.pose (LBS)
    pose_once = painter.pose

    def counting_pose(pose):
        skinned.append(1)
        return pose_once(pose)

    painter.pose = counting_pose  # type: ignore[method-assign]

    async def main() -> None:
        stats = PipelineStats()
        stage = Stage("t", painter, source, stats, fps=10.0, loop=asyncio.get_running_loop())
        a, b, c = stage.add_view(), stage.add_view(), stage.add_view()
        stage.set_orbit(c, Orbit(azimuth=90.0))
        stage.start()
        try:
            got: dict[int, list] = {a.id: [], b.id: [], c.id: []}

            async def read(view) -> None:
                seq = 0
                while True:
                    frame = await view.bus.next(seq)
                    seq = frame.seq
                    got[view.id].append(frame)

            readers = [asyncio.ensure_future(read(v)) for v in (a, b, c)]
            deadline = time.monotonic() + WATCH_DEADLINE_S
            while min(len(f) for f in got.values()) < 8 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            for r in readers:
                r.cancel()
        finally:
            await asyncio.to_thread(stage.stop)
        # a and b share the stage camera: the same pictures (one render), c has its own
        shared = {f.seq for f in got[a.id] if not f.repeat} & {f.seq for f in got[b.id] if not f.repeat}
        assert shared, "views on the same camera should share rendered pictures"
        assert not {f.seq for f in got[c.id]} & shared
        assert stats.renders.count <= 2 * stats.poses.count
        # two cameras: two renders per pose, but the avatar is skinned once per pose
        assert len(skinned) == stats.poses.count and stats.renders.count > 1.5 * len(skinned)
        for frames in got.values():
            assert len(frames) >= 5
            assert frames[0].i420.shape == (96, 64)
        assert not np.array_equal(got[a.id][-1].i420, got[c.id][-1].i420)

    asyncio.run(main())


def test_pacer_repeats_the_picture_while_the_pose_stands_still(body, demo_avatar) -> None:
    """A webcam stage with nobody sending: the pose never changes, the video keeps going with repeats."""

    stats = PipelineStats()
    source = TrackingPoseSource(body, stats)
    painter = AvatarPainter(demo_avatar, body, get_renderer("cpu"), 32, source.framing_poses(), pin_root=True)

    got = _watch(painter, source, stats, fps=20.0, count=10)
    frames = [f for _, f in got]
    assert stats.renders.count == 1  # one picture of the rest pose ...
    assert len(frames) == 10 and all(f.repeat for f in frames[1:])  # ... sent again and again
    assert all(not f.live for f in frames)
    # ... but only after REPEAT_AFTER_PERIODS frame periods each (not at every tick of the clock)
    gaps = np.diff([t for t, _ in got])
    assert gaps.min() >= 0.9 * REPEAT_AFTER_PERIODS / 20.0, gaps


def test_views_on_one_camera_get_the_same_repeats(body, demo_avatar) -> None:
    """Repeats are shared by the views of a camera (one picture, one encode for all its peers)."""
    stats = PipelineStats()
    source = TrackingPoseSource(body, stats)
    painter = AvatarPainter(demo_avatar, body, get_renderer("cpu"), 32, source.framing_poses(), pin_root=True)

    async def main() -> tuple[list[int], list[int]]:
        stage = Stage("r", painter, source, stats, fps=20.0, loop=asyncio.get_running_loop())
        a, b = stage.add_view(), stage.add_view()
        stage.start()
        seqs: dict[int, list[int]] = {a.id: [], b.id: []}

        async def read(view) -> None:  # type: ignore[no-untyped-def]
            seq = 0
            while len(seqs[view.id]) < 8:
                frame = await asyncio.wait_for(view.bus.next(seq), 30)
                seq = frame.seq
                seqs[view.id].append(seq)

        try:
            await asyncio.gather(read(a), read(b))
        finally:
            await asyncio.to_thread(stage.stop)
        return seqs[a.id], seqs[b.id]

    seen_a, seen_b = asyncio.run(main())
    assert seen_a == seen_b and len(set(seen_a)) == 8


def test_new_pictures_are_handed_over_at_once_and_not_repeated(body, demo_avatar) -> None:
    """A new picture goes out when it is rendered, not at the next tick of a clock; while new
    poses keep coming, no picture is sent twice (repeats would cost an encode each)."""
    source = MotionPoseSource(demo_motion())
    painter = AvatarPainter(demo_avatar, body, get_renderer("cpu"), 32, source.framing_poses())

    # 2 fps: a clock-driven pacer would hold each picture ~250 ms on average
    got = _watch(painter, source, PipelineStats(), fps=2.0, count=5)
    assert len(got) == 5
    assert not any(f.repeat for _, f in got)
    waits = sorted(t - f.rendered_at for t, f in got)
    assert waits[len(waits) // 2] < 0.1, f"pictures waited {waits} s before hand-over"


def test_a_motion_is_rendered_frame_by_frame(body, demo_avatar) -> None:
    """A motion at the stage's own rate: each picture shows a later motion frame than the one
    before, and no pose is rendered twice (how many frames a busy machine manages is left to the
    benchmarks; the schedule itself is checked on a simulated clock below)."""
    from streamer.tracking.motion import Motion

    demo = demo_motion()
    source = MotionPoseSource(Motion(demo.poses, fps=10.0))
    painter = AvatarPainter(demo_avatar, body, get_renderer("cpu"), 32, source.framing_poses())
    stats = PipelineStats()

    frames = [f for _, f in _watch(painter, source, stats, fps=10.0, count=12)]
    poses = [f.pose_seq for f in frames if not f.repeat]
    assert len(poses) >= 6, poses
    assert all(b > a for a, b in itertools.pairwise(poses)), poses
    assert stats.renders.count == stats.poses.count >= len(poses)  # one skinning and one render per motion frame


class _MinGap:
    """The rate limit the render budget replaced: no round sooner than a period after the last."""

    def __init__(self, fps: float, now: float) -> None:
        self.period, self.last = 1.0 / fps, -1e9

    def wait(self, now: float) -> float:
        return max(0.0, self.last + self.period - now)

    def spend(self, now: float) -> None:
        self.last = now


def _simulate_motion(budget_cls, fps: float = 10.0, seconds: float = 60.0, seed: int = 0) -> tuple[list[int], list[float]]:
    """The render worker's schedule for a motion at the stage's rate, on a simulated clock: the
    thread wakes 0-4 ms late (now and then 30 ms), a render takes 20-90% of a period. Returns the
    motion frames rendered and how late (s) each render started after its frame fell due."""
    rng = np.random.default_rng(seed)
    period = 1.0 / fps
    budget = budget_cls(fps, 0.0)
    t, next_check, shown, lags = 0.0, 0.0, [], []
    while t < seconds:
        t = max(t, next_check) + rng.uniform(0.0, 0.004) + (0.03 if rng.random() < 0.05 else 0.0)
        t += budget.wait(t)
        seq, next_check = int(t * fps), t + period
        if not shown or seq != shown[-1]:
            budget.spend(t)
            shown.append(seq)
            lags.append(t - seq / fps)
            t += rng.uniform(0.2, 0.9) * period
        next_check = min(next_check, (int(t * fps) + 1) / fps)  # when the next motion frame falls due
    return shown, lags


def test_render_budget_keeps_renders_in_step_with_a_motion() -> None:
    """No motion frame is skipped and each is rendered soon after it falls due, although the thread
    wakes a little late; the plain minimum gap it replaced drifts behind by a third of a period."""
    from streamer.stream.stage import RenderBudget

    for seed in range(3):
        shown, lags = _simulate_motion(RenderBudget, seed=seed)
        assert len(shown) > 590 and (np.diff(shown) == 1).mean() >= 0.99, seed
        assert np.median(lags) < 0.01, f"renders lag their frames by {np.median(lags) * 1000:.0f} ms"
        shown, lags = _simulate_motion(_MinGap, seed=seed)
        assert np.median(lags) > 0.03 and (np.diff(shown) > 1).any(), seed  # the drift this guards against


def test_render_budget_allows_fps_rounds_a_second_and_a_short_burst() -> None:
    from streamer.stream.stage import RENDER_BURST, RenderBudget

    budget = RenderBudget(10.0, now=100.0)
    assert budget.wait(100.0) == 0.0  # one round at the start ...
    budget.spend(100.0)
    assert budget.wait(100.0) == pytest.approx(0.1)  # ... then one per period
    assert budget.wait(100.05) == pytest.approx(0.05)
    budget.spend(100.1)
    assert budget.wait(100.1) == pytest.approx(0.1)
    assert budget.wait(200.0) == 0.0 and budget.tokens == RENDER_BURST  # idle time saves up no more than the burst
    for _ in range(int(RENDER_BURST)):  # saved-up rounds go at once
        assert budget.wait(200.0) == 0.0
        budget.spend(200.0)
    assert budget.wait(200.0) == pytest.approx(0.1)
    starts, t = [], 0.0
    budget = RenderBudget(10.0, now=0.0)
    while t < 10.0:  # a worker that asks as fast as it can
        t += budget.wait(t)
        budget.spend(t)
        starts.append(t)
        t += 0.001
    assert len(starts) <= 10.0 * 10 + RENDER_BURST + 1
