"""MediaPipe behind our own interface: RGB frames in, :class:`FrameLandmarks` out.

Uses the legacy ``mp.solutions`` graphs of ``mediapipe==0.10.21``, whose wheel bundles its models so
everything runs offline: Pose (``model_complexity=1`` only: the wheel ships ``pose_landmark_full``;
0 and 2 would download ``pose_landmark_lite`` / ``_heavy`` at run time), Hands (complexity 0 or 1),
Face Mesh (468 landmarks, 478 with iris refinement) and Holistic (pose + hands + face in one graph).
A model whose file is not in the installed package is refused with :class:`ModelUnavailableError`
before MediaPipe can try to fetch it.

Two ways to run:
    * ``models="holistic"`` (default): one graph; hands are cropped from the pose's wrists, so
      they come labelled by the person's side and only for the tracked person. No hand world
      landmarks (the legacy Python Holistic does not output them).
    * any of ``"pose"``, ``"hands"``, ``"face"`` (e.g. ``"pose,hands,face"``): separate graphs on the
      full frame. Hands carry world landmarks; each is assigned to the person's left or right by
      the nearest pose wrist, or (without a pose) by Hands' handedness label, which assumes a
      mirrored selfie image and is therefore swapped for our un-mirrored frames. ``face`` alone uses
      Face Mesh's short-range face detector (faces within about 2 m: webcam framing); with the whole
      body in view use ``holistic``, which crops the face from the pose.

Conventions are those of :mod:`streamer.tracking.landmarks`: pixels of the frame as given, MediaPipe's
metric world frame, and left/right of the **person**. Frames must be un-mirrored camera images
(as video files and OpenCV cameras deliver them); Pose's own left/right labels are anatomical for
such frames (a front-facing person's left shoulder lies on the image right).

TODO: the MediaPipe Tasks API (``PoseLandmarker`` etc.) needs ``.task`` model files that are not
bundled; a path that takes user-supplied ``.task`` files is not implemented yet.

Example:
    >>> with MediaPipeRunner(video=True) as runner:
    ...     for t_ms, rgb in source:
    ...         frame = runner.process(rgb, t_ms)  # FrameLandmarks
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from ..errors import InputError, ModelUnavailableError, TrackingError
from .landmarks import (
    NUM_HAND_LANDMARKS,
    NUM_POSE_LANDMARKS,
    FaceLandmarks,
    FrameLandmarks,
    HandLandmarks,
    PoseLandmarks,
)
from .native_log import quiet_native_stderr

MODELS = ("holistic", "pose", "hands", "face")
#: :attr:`MediaPipeRunner.hand_search_interval` of the live tracker (the streaming server and
#: ``bench track``); offline commands keep the default 1, every frame.
LIVE_HAND_SEARCH_INTERVAL = 3
#: ... and for this many frames after the last frame with a hand, the hand models run on every frame
#: (hands at a distance come and go from frame to frame).
HAND_LINGER_FRAMES = 6
#: :attr:`MediaPipeRunner.face_interval` of the live tracker: Holistic's face models run on every
#: other frame (the pose fit holds the face in between); offline commands keep 1.
LIVE_FACE_INTERVAL = 2

# Pose landmark indices (MediaPipe's, anatomical for un-mirrored frames).
POSE_LEFT_WRIST, POSE_RIGHT_WRIST = 15, 16
# Hand landmark indices.
HAND_WRIST, HAND_MIDDLE_MCP = 0, 9

_POSE_MODEL = {
    0: "pose_landmark_lite.tflite",
    1: "pose_landmark_full.tflite",
    2: "pose_landmark_heavy.tflite",
}
_HAND_MODEL = {0: "hand_landmark_lite.tflite", 1: "hand_landmark_full.tflite"}
_PALM_MODEL = {0: "palm_detection_lite.tflite", 1: "palm_detection_full.tflite"}


def parse_models(models: str | Iterable[str]) -> tuple[str, ...]:
    """Normalise ``"pose,hands"`` / ``["pose", "hands"]`` to a sorted tuple of known model names.

    Raises:
        InputError: an unknown name, nothing at all, or ``holistic`` mixed with others.
    """
    names = [
        m.strip().lower() for m in (models.split(",") if isinstance(models, str) else models) if m.strip()
    ]
    if not names:
        raise InputError("no MediaPipe model given; choose 'holistic' or any of pose, hands, face")
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        raise InputError(
            f"unknown MediaPipe model {', '.join(map(repr, unknown))}; "
            "choose 'holistic' or any of pose, hands, "
            "face (Tasks-API .task models are not supported yet)"
        )
    if "holistic" in names and len(set(names)) > 1:
        raise InputError("'holistic' already runs pose, hands and face; do not combine it with other models")
    return tuple(m for m in MODELS if m in names)


def mediapipe_modules_dir() -> Path:
    """The ``mediapipe/modules`` folder of the installed wheel, where its bundled models live."""
    import mediapipe

    return Path(mediapipe.__file__).resolve().parent / "modules"


def required_model_files(
    models: tuple[str, ...], model_complexity: int, hand_complexity: int, refine_face: bool
) -> list[str]:
    """Model files (relative to ``mediapipe/modules``) the chosen graphs load."""
    files: list[str] = []
    face = ["face_detection/face_detection_short_range.tflite", "face_landmark/face_landmark.tflite"]
    if refine_face:
        face.append("face_landmark/face_landmark_with_attention.tflite")
    if "holistic" in models or "pose" in models:
        files += ["pose_detection/pose_detection.tflite", f"pose_landmark/{_POSE_MODEL[model_complexity]}"]
    if "holistic" in models:
        files += [
            "holistic_landmark/hand_recrop.tflite",
            "hand_landmark/hand_landmark_full.tflite",
            "face_landmark/face_landmark.tflite",
        ]
        if refine_face:
            files.append("face_landmark/face_landmark_with_attention.tflite")
    if "hands" in models:
        files += [
            f"palm_detection/{_PALM_MODEL[hand_complexity]}",
            f"hand_landmark/{_HAND_MODEL[hand_complexity]}",
        ]
    if "face" in models:
        files += face
    return list(dict.fromkeys(files))


def check_models_available(
    models: tuple[str, ...], model_complexity: int = 1, hand_complexity: int = 1, refine_face: bool = True
) -> None:
    """Refuse settings whose model files the installed wheel does not bundle.

    Raises:
        InputError: a complexity outside MediaPipe's range.
        ModelUnavailableError: a needed model file is missing (MediaPipe would download it).
    """
    if model_complexity not in _POSE_MODEL:
        raise InputError(f"pose model_complexity must be 0, 1 or 2, got {model_complexity}")
    if hand_complexity not in _HAND_MODEL:
        raise InputError(f"hand model complexity must be 0 or 1, got {hand_complexity}")
    root = mediapipe_modules_dir()
    missing = [
        f
        for f in required_model_files(models, model_complexity, hand_complexity, refine_face)
        if not (root / f).is_file()
    ]
    if missing:
        hint = ""
        if any(f.startswith("pose_landmark/") for f in missing):
            hint = (
                f" Pose model_complexity={model_complexity} needs a model this MediaPipe wheel does not "
                "bundle and would download it at run time; use model_complexity=1 (bundled)."
            )
        raise ModelUnavailableError(
            f"MediaPipe model file(s) not installed: {', '.join(missing)}.{hint} "
            "Nothing is downloaded at run time."
        )


def _array(landmarks: Any, width: int, height: int) -> np.ndarray:
    """Normalised MediaPipe landmarks -> [K, 3] float32 pixels (x, y) and z scaled by the width."""
    raw = np.array([(lm.x, lm.y, lm.z) for lm in landmarks.landmark], dtype=np.float32).reshape(-1, 3)
    return raw * np.array([width, height, width], dtype=np.float32)


def _world(landmarks: Any) -> np.ndarray:
    """MediaPipe world landmarks -> [K, 3] float32 metres."""
    return np.array([(lm.x, lm.y, lm.z) for lm in landmarks.landmark], dtype=np.float32).reshape(-1, 3)


def _hand_size(image: np.ndarray) -> float:
    """Wrist to middle-finger knuckle, pixels: the hand's scale in the image."""
    return float(np.linalg.norm(image[HAND_MIDDLE_MCP, :2] - image[HAND_WRIST, :2]))


def assign_hands(
    hands: list[tuple[HandLandmarks, str]], pose: PoseLandmarks | None, max_wrist_gap: float = 3.0
) -> tuple[HandLandmarks | None, HandLandmarks | None]:
    """Decide which detected hand is the person's left and which the right.

    Args:
        hands: detected hands with MediaPipe Hands' handedness label (``"Left"``/``"Right"``, which
            assumes a mirrored image: on our un-mirrored frames ``"Left"`` is the person's right).
        pose: the person's pose; when given, each hand goes to the nearer pose wrist (the pairing of
            least total distance), and a hand farther than ``max_wrist_gap`` hand sizes from that
            wrist (someone else's hand) is dropped.
        max_wrist_gap: the largest accepted wrist distance, in hand sizes (wrist to middle knuckle).

    Returns:
        (person's left hand, person's right hand), either None when not found.
    """
    if not hands:
        return None, None
    if pose is None:
        left: HandLandmarks | None = None
        right: HandLandmarks | None = None
        for hand, label in sorted(hands, key=lambda h: -h[0].score):
            if label == "Right" and left is None:
                left = hand
            elif label == "Left" and right is None:
                right = hand
        return left, right
    wrists = pose.image[[POSE_LEFT_WRIST, POSE_RIGHT_WRIST], :2]  # [2, 2]
    best: tuple[float, HandLandmarks | None, HandLandmarks | None] = (np.inf, None, None)
    candidates: list[HandLandmarks | None] = [h for h, _ in hands] + [None]
    for a in candidates:  # a -> left wrist, b -> right wrist
        for b in candidates:
            if a is not None and a is b:
                continue
            cost, ok = 0.0, True
            for candidate, wrist in ((a, wrists[0]), (b, wrists[1])):
                if candidate is None:
                    cost += max_wrist_gap  # an unassigned side costs as much as the worst accepted match
                    continue
                pixels = float(np.linalg.norm(candidate.image[HAND_WRIST, :2] - wrist))
                gap = pixels / max(_hand_size(candidate.image), 1.0)
                ok &= gap <= max_wrist_gap
                cost += gap
            if ok and cost < best[0]:
                best = (cost, a, b)
    return best[1], best[2]


class MediaPipeRunner:
    """MediaPipe pose / hands / face (or holistic) on RGB frames, returning :class:`FrameLandmarks`.

    Args:
        models: ``"holistic"`` or a comma list / sequence of ``pose``, ``hands``, ``face``.
        video: tracking mode (landmarks of one frame seed the next; for consecutive video frames);
            False: image mode (every frame is detected from scratch; for unrelated photos).
        model_complexity: the pose model; only 1 is bundled (0 and 2 raise ModelUnavailableError).
        hand_complexity: the hand model (0 lite or 1 full; both bundled). Holistic always uses full.
        refine_face: face mesh with iris refinement (478 landmarks instead of 468).
        smooth: MediaPipe's own landmark smoothing across frames (video mode only).
        segmentation: also return the pose model's person mask (``FrameLandmarks.segmentation``;
            holistic or pose only).
        hand_search_interval: holistic in video mode: while no hand was found in the last
            :data:`HAND_LINGER_FRAMES` frames, run the hand models only on every this-many-th frame
            (default 1: every frame, as MediaPipe's Holistic; the live tracker uses
            :data:`LIVE_HAND_SEARCH_INTERVAL`). They cost about as much as pose and face together
            (:mod:`.holistic_graph`); a hand that comes into view is found within this many frames,
            and looked for on every frame while one is seen and for a few frames after.
        face_interval: holistic in video mode: run the face models on every this-many-th frame only
            (default 1: every frame; the live tracker uses :data:`LIVE_FACE_INTERVAL`). Frames in
            between have ``face_searched`` False and no face; the pose fit holds the last face.
        min_detection_confidence, min_tracking_confidence: MediaPipe's thresholds in [0, 1].

    Raises:
        InputError: unknown models or settings out of range.
        ModelUnavailableError: a model would need a download.

    Not thread-safe: use one runner per thread (MediaPipe graphs keep per-stream state).
    """

    def __init__(
        self,
        models: str | Iterable[str] = "holistic",
        video: bool = True,
        model_complexity: int = 1,
        hand_complexity: int = 1,
        refine_face: bool = True,
        smooth: bool = True,
        min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
        segmentation: bool = False,
        hand_search_interval: int = 1,
        face_interval: int = 1,
    ) -> None:
        self.models = parse_models(models)
        for name, interval in (("hand_search_interval", hand_search_interval), ("face_interval", face_interval)):
            if interval < 1:
                raise InputError(f"{name} must be >= 1, got {interval}")
        self.hand_search_interval, self.face_interval = hand_search_interval, face_interval
        self._since_face = face_interval  # frames since the face models last ran
        self._since_hand_search = hand_search_interval  # frames since the hand models last ran
        self._since_hand = HAND_LINGER_FRAMES + 1  # frames since a hand was last found
        if segmentation and not {"holistic", "pose"} & set(self.models):
            raise InputError("segmentation needs the 'holistic' or 'pose' model")
        self.segmentation = segmentation
        for name, value in (
            ("min_detection_confidence", min_detection_confidence),
            ("min_tracking_confidence", min_tracking_confidence),
        ):
            if not 0.0 <= value <= 1.0:
                raise InputError(f"{name} must be in [0, 1], got {value}")
        check_models_available(self.models, model_complexity, hand_complexity, refine_face)
        self.video = video
        self._graphs: dict[str, Any] = {}
        self._t0 = time.monotonic()
        self._started = False  # the first frame ran (MediaPipe's start-up chatter is over)
        try:
            with quiet_native_stderr():
                self._build(
                    model_complexity,
                    hand_complexity,
                    refine_face,
                    smooth,
                    min_detection_confidence,
                    min_tracking_confidence,
                )
        except BaseException:
            self.close()
            raise

    def _build(
        self,
        model_complexity: int,
        hand_complexity: int,
        refine_face: bool,
        smooth: bool,
        det: float,
        trk: float,
    ) -> None:
        from mediapipe.python.solutions import face_mesh, hands, pose

        from .holistic_graph import GatedHolistic

        static = not self.video
        if "holistic" in self.models:
            self._graphs["holistic"] = GatedHolistic(
                static_image_mode=static,
                model_complexity=model_complexity,
                smooth_landmarks=smooth,
                enable_segmentation=self.segmentation,
                refine_face_landmarks=refine_face,
                min_detection_confidence=det,
                min_tracking_confidence=trk,
            )
        if "pose" in self.models:
            self._graphs["pose"] = pose.Pose(
                static_image_mode=static,
                model_complexity=model_complexity,
                smooth_landmarks=smooth,
                enable_segmentation=self.segmentation,
                min_detection_confidence=det,
                min_tracking_confidence=trk,
            )
        if "hands" in self.models:
            self._graphs["hands"] = hands.Hands(
                static_image_mode=static,
                max_num_hands=2,
                model_complexity=hand_complexity,
                min_detection_confidence=det,
                min_tracking_confidence=trk,
            )
        if "face" in self.models:
            self._graphs["face"] = face_mesh.FaceMesh(
                static_image_mode=static,
                max_num_faces=1,
                refine_landmarks=refine_face,
                min_detection_confidence=det,
                min_tracking_confidence=trk,
            )
        for solution in self._graphs.values():  # the models load on MediaPipe's threads: wait for them
            graph = getattr(getattr(solution, "_solution", solution), "_graph", None)
            if graph is not None:
                graph.wait_until_idle()

    def process(self, rgb: np.ndarray, timestamp_ms: float | None = None) -> FrameLandmarks:
        """Run the models on one frame.

        Args:
            rgb: the frame, [H, W, 3] uint8 RGB, un-mirrored.
            timestamp_ms: the frame's time (default: milliseconds since the runner was made).

        Returns:
            FrameLandmarks with pixel landmarks of this frame and ``timings_ms`` per model plus
            ``"total"``; ``pose`` is None when nobody was found.

        Raises:
            InputError: not an [H, W, 3] uint8 array.
            TrackingError: the runner was closed, or MediaPipe failed on the frame.
        """
        if not self._graphs:
            raise TrackingError("MediaPipeRunner is closed")
        if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            desc = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
            raise InputError(f"MediaPipe needs an RGB frame as a [H, W, 3] uint8 array, got {desc}")
        height, width = rgb.shape[:2]
        if timestamp_ms is None:
            timestamp_ms = (time.monotonic() - self._t0) * 1000.0
        frame = FrameLandmarks(width=width, height=height, timestamp_ms=float(timestamp_ms))
        rgb = np.ascontiguousarray(rgb)
        t_start = time.perf_counter()
        holistic = "holistic" in self._graphs
        frame.hands_searched = self._search_hands() if holistic else "hands" in self._graphs
        frame.face_searched = self._search_face() if holistic else "face" in self._graphs
        with quiet_native_stderr() if not self._started else contextlib.nullcontext():
            results = {
                name: self._run(name, graph, rgb, frame.timings_ms, frame.hands_searched, frame.face_searched)
                for name, graph in self._graphs.items()
            }
        self._started = True
        if "holistic" in results:
            self._read_holistic(results["holistic"], frame)
            found = frame.left_hand is not None or frame.right_hand is not None
            self._since_hand = 0 if found else self._since_hand + 1
        if "pose" in results:
            frame.pose = self._read_pose(
                results["pose"].pose_landmarks, results["pose"].pose_world_landmarks, width, height
            )
        if "hands" in results:
            frame.left_hand, frame.right_hand = assign_hands(
                self._read_hands(results["hands"], width, height), frame.pose
            )
        if self.segmentation:
            body = results.get("holistic") or results.get("pose")
            mask = getattr(body, "segmentation_mask", None)
            if mask is not None:
                frame.segmentation = np.clip(np.asarray(mask, dtype=np.float32), 0.0, 1.0)
        if "face" in results and results["face"].multi_face_landmarks:
            frame.face = FaceLandmarks(image=_array(results["face"].multi_face_landmarks[0], width, height))
        frame.timings_ms["total"] = (time.perf_counter() - t_start) * 1000.0
        return frame

    def _search_hands(self) -> bool:
        """Whether Holistic's hand models run on this frame (:attr:`hand_search_interval`)."""
        self._since_hand_search += 1
        recent = self._since_hand < HAND_LINGER_FRAMES
        if not self.video or recent or self._since_hand_search >= self.hand_search_interval:
            self._since_hand_search = 0
            return True
        return False

    def _search_face(self) -> bool:
        """Whether Holistic's face models run on this frame (:attr:`face_interval`)."""
        self._since_face += 1
        if not self.video or self._since_face >= self.face_interval:
            self._since_face = 0
            return True
        return False

    @staticmethod
    def _run(name: str, graph: Any, rgb: np.ndarray, timings: dict[str, float], hands: bool, face: bool) -> Any:
        t = time.perf_counter()
        try:
            result = graph.process(rgb, hands=hands, face=face) if name == "holistic" else graph.process(rgb)
        except (RuntimeError, ValueError) as exc:
            raise TrackingError(
                f"MediaPipe {name} failed on a {rgb.shape[1]}x{rgb.shape[0]} frame: {exc}"
            ) from None
        timings[name] = (time.perf_counter() - t) * 1000.0
        return result

    @staticmethod
    def _read_pose(image_lms: Any, world_lms: Any, width: int, height: int) -> PoseLandmarks | None:
        if image_lms is None or world_lms is None:
            return None
        image = _array(image_lms, width, height)
        world = _world(world_lms)
        if image.shape[0] != NUM_POSE_LANDMARKS or world.shape[0] != NUM_POSE_LANDMARKS:
            return None
        visibility = np.array([lm.visibility for lm in image_lms.landmark], dtype=np.float32)
        return PoseLandmarks(image=image, world=world, visibility=visibility)

    def _read_holistic(self, result: Any, frame: FrameLandmarks) -> None:
        w, h = frame.width, frame.height
        frame.pose = self._read_pose(result.pose_landmarks, result.pose_world_landmarks, w, h)
        # Holistic crops each hand from the pose wrist of the same name: the labels are the person's.
        if result.left_hand_landmarks is not None:
            frame.left_hand = HandLandmarks(image=_array(result.left_hand_landmarks, w, h), world=None)
        if result.right_hand_landmarks is not None:
            frame.right_hand = HandLandmarks(image=_array(result.right_hand_landmarks, w, h), world=None)
        if result.face_landmarks is not None:
            frame.face = FaceLandmarks(image=_array(result.face_landmarks, w, h))

    @staticmethod
    def _read_hands(result: Any, width: int, height: int) -> list[tuple[HandLandmarks, str]]:
        hands: list[tuple[HandLandmarks, str]] = []
        worlds = result.multi_hand_world_landmarks or []
        for i, (lms, handed) in enumerate(
            zip(result.multi_hand_landmarks or [], result.multi_handedness or [])
        ):
            image = _array(lms, width, height)
            if image.shape[0] != NUM_HAND_LANDMARKS:
                continue
            world = _world(worlds[i]) if i < len(worlds) else None
            best = handed.classification[0]
            hands.append((HandLandmarks(image=image, world=world, score=float(best.score)), str(best.label)))
        return hands

    def reset(self) -> None:
        """Forget tracking state (start of a new, unrelated video)."""
        for graph in self._graphs.values():
            graph.reset()
        self._since_hand_search, self._since_hand = self.hand_search_interval, HAND_LINGER_FRAMES + 1
        self._since_face = self.face_interval

    def close(self) -> None:
        """Release the MediaPipe graphs (idempotent)."""
        graphs, self._graphs = self._graphs, {}
        for graph in graphs.values():
            graph.close()

    def __enter__(self) -> MediaPipeRunner:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
