"""The MediaPipe runner: real MediaPipe on the shared photos and video, model checks, hand sides."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import SHARED_DATA
from conftest import SHARED_VIDEO as VIDEO

from streamer.errors import InputError, ModelUnavailableError, TrackingError
from streamer.tracking.landmarks import FrameLandmarks, HandLandmarks, PoseLandmarks
from streamer.tracking.mediapipe_runner import (
    HAND_LINGER_FRAMES,
    LIVE_FACE_INTERVAL,
    LIVE_HAND_SEARCH_INTERVAL,
    MediaPipeRunner,
    assign_hands,
    mediapipe_modules_dir,
    parse_models,
)
from streamer.tracking.sources import VideoFileSource

PHOTOS = sorted((SHARED_DATA / "photos").glob("*")) if (SHARED_DATA / "photos").is_dir() else []
needs_photos = pytest.mark.skipif(not PHOTOS, reason="shared photos not found beside the repository")
needs_video = pytest.mark.skipif(not VIDEO.exists(), reason="shared video not found beside the repository")

# MediaPipe pose landmark indices.
L_SHOULDER, R_SHOULDER, L_WRIST, R_WRIST, L_HIP, R_HIP = 11, 12, 15, 16, 23, 24


def read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


# -- settings and refusals --------------------------------------------------------------------


def test_parse_models():
    assert parse_models("holistic") == ("holistic",)
    assert parse_models("face, pose") == ("pose", "face")
    assert parse_models(["hands"]) == ("hands",)
    with pytest.raises(InputError, match="unknown MediaPipe model 'pose_heavy'"):
        parse_models("pose_heavy")
    with pytest.raises(InputError, match="do not combine"):
        parse_models("holistic,pose")
    with pytest.raises(InputError, match="no MediaPipe model"):
        parse_models("")


@pytest.mark.parametrize("complexity", [0, 2])
@pytest.mark.parametrize("models", ["pose", "holistic"])
def test_unbundled_pose_models_are_refused_without_download(complexity, models):
    name = {0: "pose_landmark_lite.tflite", 2: "pose_landmark_heavy.tflite"}[complexity]
    target = mediapipe_modules_dir() / "pose_landmark" / name
    if target.exists():
        pytest.skip(f"{name} was installed into this MediaPipe by hand")
    with pytest.raises(ModelUnavailableError, match=rf"model_complexity={complexity}.*download") as info:
        MediaPipeRunner(models, model_complexity=complexity)
    assert name in str(info.value)
    assert not target.exists()  # nothing was fetched


def test_bad_settings():
    with pytest.raises(InputError, match="0, 1 or 2"):
        MediaPipeRunner("pose", model_complexity=3)
    with pytest.raises(InputError, match="0 or 1"):
        MediaPipeRunner("hands", hand_complexity=2)
    with pytest.raises(InputError, match="min_detection_confidence"):
        MediaPipeRunner("pose", min_detection_confidence=1.5)
    with pytest.raises(InputError, match="segmentation needs"):
        MediaPipeRunner("hands,face", segmentation=True)
    with pytest.raises(InputError, match="hand_search_interval"):
        MediaPipeRunner("holistic", hand_search_interval=0)


def test_bad_frames_and_closed_runner():
    runner = MediaPipeRunner("pose", video=False)
    with pytest.raises(InputError, match=r"\[H, W, 3\] uint8"):
        runner.process(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(InputError, match=r"\[H, W, 3\] uint8"):
        runner.process(np.zeros((64, 64), np.uint8))
    runner.close()
    runner.close()  # idempotent
    with pytest.raises(TrackingError, match="closed"):
        runner.process(np.zeros((64, 64, 3), np.uint8))


def test_black_frame_has_no_person():
    with MediaPipeRunner("holistic", video=False) as runner:
        frame = runner.process(np.zeros((240, 320, 3), np.uint8), timestamp_ms=12.5)
    assert not frame.has_person and frame.pose is None
    assert frame.left_hand is None and frame.right_hand is None and frame.face is None
    assert (frame.width, frame.height, frame.timestamp_ms) == (320, 240, 12.5)
    assert set(frame.timings_ms) == {"holistic", "total"}
    assert frame.hands_searched  # image mode: Holistic's hand models run on every photo
    with MediaPipeRunner("pose,face", video=True) as runner:
        assert not runner.process(np.zeros((240, 320, 3), np.uint8)).hands_searched  # no hand model


# -- hand sides ---------------------------------------------------------------------------------


def _hand_at(x: float, y: float, size: float = 20.0, score: float = 0.9) -> HandLandmarks:
    image = np.zeros((21, 3), np.float32)
    image[:, 0], image[:, 1] = x, y
    image[9, 1] = y - size  # middle knuckle above the wrist: the hand's scale
    return HandLandmarks(image=image, world=None, score=score)


def _pose_with_wrists(left: tuple[float, float], right: tuple[float, float]) -> PoseLandmarks:
    image = np.zeros((33, 3), np.float32)
    image[L_WRIST, :2], image[R_WRIST, :2] = left, right
    return PoseLandmarks(image=image, world=np.zeros((33, 3), np.float32), visibility=np.ones(33, np.float32))


def test_assign_hands_follows_the_pose_wrists_not_the_labels():
    pose = _pose_with_wrists(left=(300, 200), right=(100, 200))  # front-facing: left wrist on the image right
    near_left, near_right = _hand_at(305, 195), _hand_at(95, 205)
    # Labels deliberately wrong: the wrists decide.
    left, right = assign_hands([(near_left, "Left"), (near_right, "Left")], pose)
    assert left is near_left and right is near_right
    # Someone else's hand far from both wrists is dropped.
    stranger = _hand_at(600, 50)
    left, right = assign_hands([(stranger, "Right"), (near_right, "Left")], pose)
    assert left is None and right is near_right


def test_assign_hands_without_pose_swaps_the_selfie_labels():
    a, b = _hand_at(300, 200), _hand_at(100, 200)
    # MediaPipe Hands labels assume a mirrored image: "Right" on an un-mirrored frame is the person's left.
    left, right = assign_hands([(a, "Right"), (b, "Left")], None)
    assert left is a and right is b
    assert assign_hands([], None) == (None, None)


# -- real photos ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo_results() -> dict[str, FrameLandmarks]:
    with MediaPipeRunner("holistic", video=False) as runner:
        return {p.name: runner.process(read_rgb(p)) for p in PHOTOS}


@needs_photos
def test_a_person_in_every_photo_with_sane_landmarks(photo_results):
    assert len(photo_results) == 4
    for name, frame in photo_results.items():
        assert frame.has_person, name
        pose = frame.pose
        assert pose.image.shape == (33, 3) and pose.image.dtype == np.float32
        assert pose.world.shape == (33, 3) and pose.visibility.shape == (33,)
        seen = pose.visibility > 0.5
        assert seen[[L_SHOULDER, R_SHOULDER]].all(), name
        # Head, arms and hips (0-24) are in every photo; MediaPipe extrapolates legs cut off by the border.
        xy = pose.image[:25][seen[:25], :2]
        assert (xy[:, 0] >= 0).all() and (xy[:, 0] <= frame.width).all(), name
        assert (xy[:, 1] >= 0).all() and (xy[:, 1] <= frame.height).all(), name
        # Front-facing people: the person's left shoulder is on the image right.
        assert pose.image[L_SHOULDER, 0] > pose.image[R_SHOULDER, 0], name
        # World landmarks are metric: an adult's shoulders are 0.2-0.6 m apart, the hips near the origin.
        shoulders = float(np.linalg.norm(pose.world[L_SHOULDER] - pose.world[R_SHOULDER]))
        assert 0.2 < shoulders < 0.6, (name, shoulders)
        assert np.linalg.norm(pose.world[[L_HIP, R_HIP]].mean(0)) < 0.1, name
        # World x follows the image: the left shoulder has the larger x too.
        assert pose.world[L_SHOULDER, 0] > pose.world[R_SHOULDER, 0], name
        assert frame.face is not None and frame.face.image.shape == (478, 3), name  # iris-refined mesh
        assert frame.timings_ms["holistic"] > 0 and frame.timings_ms["total"] >= frame.timings_ms["holistic"]


@needs_photos
def test_person_mask_on_request(photo_results):
    """``segmentation=True`` adds the pose model's person mask: it covers the person's torso and
    head, leaves the photo's corners out, and the landmarks are those of the runner without it."""
    photo = PHOTOS[0]
    rgb = read_rgb(photo)
    assert photo_results[photo.name].segmentation is None  # only when asked for
    for models in ("holistic", "pose"):
        with MediaPipeRunner(models, video=False, segmentation=True) as runner:
            frame = runner.process(rgb)
        mask = frame.segmentation
        assert mask is not None and mask.shape == rgb.shape[:2] and mask.dtype == np.float32
        assert 0.0 <= mask.min() and mask.max() <= 1.0
        xy = frame.pose.image[[0, L_SHOULDER, R_SHOULDER, L_HIP, R_HIP], :2].astype(int)
        chest = frame.pose.image[[L_SHOULDER, R_SHOULDER, L_HIP, R_HIP], :2].mean(0).astype(int)
        assert (mask[xy[:, 1], xy[:, 0]] > 0.5).mean() >= 0.8 and mask[chest[1], chest[0]] > 0.9
        assert mask[:8, :8].max() < 0.5 and mask[:8, -8:].max() < 0.5
        if models == "holistic":
            assert np.allclose(frame.pose.image, photo_results[photo.name].pose.image, atol=1.0)


@needs_photos
def test_hands_are_the_persons_sides_in_every_mode():
    """studio_woman_skirt: both hands hang beside the body; her right hand is on the image left."""
    rgb = read_rgb(SHARED_DATA / "photos" / "studio_woman_skirt.png")
    with MediaPipeRunner("pose,hands,face", video=False) as runner:
        frame = runner.process(rgb)
    assert set(frame.timings_ms) == {"pose", "hands", "face", "total"}
    pose = frame.pose
    assert frame.left_hand is not None and frame.right_hand is not None
    for hand, wrist in ((frame.left_hand, L_WRIST), (frame.right_hand, R_WRIST)):
        assert np.linalg.norm(hand.image[0, :2] - pose.image[wrist, :2]) < 40  # pixels
        assert hand.world is not None and hand.world.shape == (21, 3)
    # Hands alone (no pose to match): the handedness labels, un-mirrored, give the same answer.
    with MediaPipeRunner("hands", video=False) as runner:
        alone = runner.process(rgb)
    centre_x = pose.image[[L_SHOULDER, R_SHOULDER], 0].mean()
    assert alone.right_hand is not None and alone.right_hand.image[0, 0] < centre_x
    if alone.left_hand is not None:
        assert alone.left_hand.image[0, 0] > centre_x
    # Holistic labels its hands by the pose's wrists.
    with MediaPipeRunner("holistic", video=False) as runner:
        holistic = runner.process(rgb)
    assert holistic.right_hand is not None
    assert np.linalg.norm(holistic.right_hand.image[0, :2] - pose.image[R_WRIST, :2]) < 40


# -- real video ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def video_frames() -> list[FrameLandmarks]:
    """Holistic in video mode over all 301 frames of the shared video (about 15 s on 2 cores)."""
    out = []
    with VideoFileSource(VIDEO) as source, MediaPipeRunner("holistic", video=True) as runner:
        for t_ms, rgb in source:
            frame = runner.process(rgb, t_ms)
            frame.face = None  # keep the fixture small
            out.append(frame)
    return out


@needs_video
@pytest.mark.slow
def test_video_pose_in_at_least_98_percent_of_frames(video_frames):
    assert len(video_frames) == 301
    tracked = sum(f.has_person for f in video_frames)
    assert tracked >= 0.98 * len(video_frames), tracked
    times = [f.timestamp_ms for f in video_frames]
    assert np.allclose(np.diff(times), 1000 / 30, atol=0.5)


@needs_video
@pytest.mark.slow
def test_video_landmarks_stay_in_frame_and_hands_sit_on_their_wrists(video_frames):
    hands = 0
    for f in video_frames:
        if f.pose is None:
            continue
        # Pixels, not normalised: head, arms and hips (0-24) stay within the frame give or take 5% (an
        # elbow or a hand reaches past the border in a few frames; a foot steps out for longer).
        xy = f.pose.image[:25][f.pose.visibility[:25] > 0.5, :2]
        margin = 0.05 * f.width
        assert (
            (xy >= -margin).all()
            and (xy[:, 0] <= f.width + margin).all()
            and (xy[:, 1] <= f.height + margin).all()
        )
        for hand, own, other in ((f.left_hand, L_WRIST, R_WRIST), (f.right_hand, R_WRIST, L_WRIST)):
            if hand is not None:
                hands += 1
                gap_own = np.linalg.norm(hand.image[0, :2] - f.pose.image[own, :2])
                gap_other = np.linalg.norm(hand.image[0, :2] - f.pose.image[other, :2])
                assert gap_own < gap_other
    assert hands >= 10  # the hands are small in this video but found in part of it


class _ScriptedHolistic:
    """Stands in for the gated Holistic graph: a hand is in view on the frames in ``visible``, and is
    found there only if the runner asked for the hand models."""

    def __init__(self, visible: set[int]) -> None:
        self.visible, self.asked, self.asked_face, self.frame = visible, [], [], 0

    def process(self, rgb: np.ndarray, hands: bool = True, face: bool = True):
        from types import SimpleNamespace

        self.asked.append(hands)
        self.asked_face.append(face)
        point = SimpleNamespace(x=0.5, y=0.5, z=0.0)
        hand = SimpleNamespace(landmark=[point] * 21) if hands and self.frame in self.visible else None
        self.frame += 1
        return SimpleNamespace(
            pose_landmarks=None,
            pose_world_landmarks=None,
            left_hand_landmarks=hand,
            right_hand_landmarks=None,
            face_landmarks=SimpleNamespace(landmark=[point] * 478) if face else None,
        )

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_hand_models_run_every_few_frames_until_a_hand_then_every_frame_for_a_while():
    """interval 3, linger 6: searched on frames 0, 3, 6, 9; a hand found on 9 and 10 keeps them on
    through 16; then every 3rd frame again (19). After reset() the next frame is searched."""
    assert (LIVE_HAND_SEARCH_INTERVAL, HAND_LINGER_FRAMES) == (3, 6)
    runner = MediaPipeRunner("holistic", video=True, hand_search_interval=LIVE_HAND_SEARCH_INTERVAL)
    runner.close()
    graph = _ScriptedHolistic(visible={4, 9, 10})  # on frame 4 the hand is in view but not looked for
    runner._graphs = {"holistic": graph}
    rgb = np.zeros((8, 8, 3), np.uint8)
    frames = [runner.process(rgb, float(i)) for i in range(20)]
    T, F = True, False
    expected = [T, F, F, T, F, F, T, F, F, T, T, T, T, T, T, T, T, F, F, T]
    assert graph.asked == expected
    assert [f.hands_searched for f in frames] == expected
    assert [f.left_hand is not None for f in frames] == [i in (9, 10) for i in range(20)]
    runner.reset()
    runner.process(rgb, 20.0)
    assert graph.asked[-1]
    # image mode and interval 1 look on every frame
    for video, interval in ((False, LIVE_HAND_SEARCH_INTERVAL), (True, 1)):
        runner = MediaPipeRunner("holistic", video=video, hand_search_interval=interval)
        runner.close()
        runner._graphs = {"holistic": _ScriptedHolistic(visible=set())}
        assert all(runner.process(rgb, float(i)).hands_searched for i in range(7))


def test_face_models_run_every_face_interval_frames():
    """face_interval 2 (live): the face models run on frames 0, 2, 4, ... and only those frames have a
    face; hands are decided on their own. After reset() the next frame runs them; image mode and
    interval 1 run them on every frame."""
    assert LIVE_FACE_INTERVAL == 2
    runner = MediaPipeRunner("holistic", video=True, hand_search_interval=3, face_interval=LIVE_FACE_INTERVAL)
    runner.close()
    graph = _ScriptedHolistic(visible=set())
    runner._graphs = {"holistic": graph}
    rgb = np.zeros((8, 8, 3), np.uint8)
    frames = [runner.process(rgb, float(i)) for i in range(7)]
    expected = [i % 2 == 0 for i in range(7)]
    assert graph.asked_face == expected
    assert [f.face_searched for f in frames] == expected
    assert [f.face is not None for f in frames] == expected
    assert graph.asked == [i % 3 == 0 for i in range(7)]  # the hand schedule is its own
    runner.process(rgb, 7.0)  # frame 7: skipped ...
    runner.reset()
    runner.process(rgb, 8.0)  # ... and after a reset the face models run at once
    assert graph.asked_face[-2:] == [False, True]
    for video, interval in ((False, LIVE_FACE_INTERVAL), (True, 1)):
        runner = MediaPipeRunner("holistic", video=video, face_interval=interval)
        runner.close()
        runner._graphs = {"holistic": _ScriptedHolistic(visible=set())}
        assert all(runner.process(rgb, float(i)).face_searched for i in range(5))
    with pytest.raises(InputError, match="face_interval"):
        MediaPipeRunner("holistic", face_interval=0)


@needs_video
@pytest.mark.slow
def test_the_live_hand_search_on_the_shared_video():
    """The hands of the shared video come and go: the live setting skips the hand models often,
    never on a frame that then has a hand, and still finds hands."""
    searched = found = frames = 0
    with (
        VideoFileSource(VIDEO) as source,
        MediaPipeRunner("holistic", hand_search_interval=LIVE_HAND_SEARCH_INTERVAL) as runner,
    ):
        for i, (t_ms, rgb) in enumerate(source):
            if i == 150:
                break
            f = runner.process(rgb, t_ms)
            hand = f.left_hand is not None or f.right_hand is not None
            assert f.hands_searched or not hand
            searched += f.hands_searched
            found += hand
            frames += 1
    assert 0.2 * frames < searched < 0.8 * frames
    assert found >= 5


@needs_video
def test_holistic_with_its_hand_gate_open_is_mediapipes_holistic():
    """hand_search_interval=1 runs MediaPipe's own Holistic graph: the same landmarks, frame by frame."""
    import mediapipe as mp

    reference = mp.solutions.holistic.Holistic(static_image_mode=False, refine_face_landmarks=True)
    compared = 0
    with VideoFileSource(VIDEO) as source, MediaPipeRunner("holistic", hand_search_interval=1) as runner:
        for i, (t_ms, rgb) in enumerate(source):
            if i == 12:
                break
            rgb = cv2.resize(rgb, (rgb.shape[1] // 2, rgb.shape[0] // 2), interpolation=cv2.INTER_AREA)
            ref = reference.process(rgb)
            ours = runner.process(rgb, t_ms)
            assert ours.hands_searched
            assert (ref.pose_landmarks is None) == (ours.pose is None)
            assert (ref.face_landmarks is None) == (ours.face is None)
            assert (ref.left_hand_landmarks is None) == (ours.left_hand is None)
            assert (ref.right_hand_landmarks is None) == (ours.right_hand is None)
            if ours.pose is not None:
                xy = np.array([[p.x * rgb.shape[1], p.y * rgb.shape[0]] for p in ref.pose_landmarks.landmark])
                assert np.abs(xy - ours.pose.image[:, :2]).max() < 0.01  # pixels
                compared += 1
            for theirs, mine in (
                (ref.face_landmarks, ours.face),
                (ref.left_hand_landmarks, ours.left_hand),
                (ref.right_hand_landmarks, ours.right_hand),
            ):
                if mine is not None:
                    xy = np.array([[p.x * rgb.shape[1], p.y * rgb.shape[0]] for p in theirs.landmark])
                    assert np.abs(xy - mine.image[:, :2]).max() < 0.01
    reference.close()
    assert compared >= 10


@needs_photos
def test_a_closed_hand_or_face_gate_leaves_the_other_branches():
    """The gated Holistic graph: with its hand branch shut it still tracks the body and the face;
    with its face branch shut, the body and the hands."""
    from streamer.tracking.holistic_graph import GatedHolistic

    rgb = read_rgb(SHARED_DATA / "photos" / "studio_woman_skirt.png")
    graph = GatedHolistic(static_image_mode=True)
    try:
        shut = graph.process(rgb, hands=False)
        open_ = graph.process(rgb, hands=True)
        faceless = graph.process(rgb, face=False)
    finally:
        graph.close()
    assert shut.pose_landmarks is not None and shut.face_landmarks is not None
    assert shut.left_hand_landmarks is None and shut.right_hand_landmarks is None
    assert open_.right_hand_landmarks is not None  # her hands are in view: the open branch finds one
    assert open_.face_landmarks is not None
    assert faceless.face_landmarks is None
    assert faceless.pose_landmarks is not None and faceless.right_hand_landmarks is not None


def test_an_unreadable_or_unknown_holistic_graph_is_refused(tmp_path, monkeypatch):
    """The gated graph is built from the wheel's Holistic graph: a corrupt file, or one without the
    hand branch where it is expected (another MediaPipe version), is a clear ModelUnavailableError."""
    from mediapipe.framework import calculator_pb2

    from streamer.tracking import holistic_graph, mediapipe_runner

    graph_file = tmp_path / holistic_graph.HOLISTIC_GRAPH
    graph_file.parent.mkdir(parents=True)
    monkeypatch.setattr(mediapipe_runner, "mediapipe_modules_dir", lambda: tmp_path)
    graph_file.write_bytes(b"\xff\xfe not a graph")
    with pytest.raises(ModelUnavailableError, match="could not be read"):
        holistic_graph.gated_holistic_config()
    pose_only = calculator_pb2.CalculatorGraphConfig(node=[{"calculator": "PoseLandmarkCpu"}])
    graph_file.write_bytes(pose_only.SerializeToString())
    with pytest.raises(ModelUnavailableError, match="0 HandLandmarksLeftAndRightCpu nodes"):
        holistic_graph.gated_holistic_config()
