"""MediaPipe Holistic with switches for its hand and face models: pose every frame, hands and face on request.

Holistic's hand branch (a re-crop model and the full hand landmark model, per wrist) costs about
as much CPU as the pose and face models together, and it runs on every frame whether or not it
finds a hand: on a dancer 3 m from a 640-pixel webcam it finds one in a sixth of the frames. Its
face branch (a face detector in the pose's face box and the face landmark model) costs a fifth to
a quarter of a frame without hands. This is MediaPipe's own Holistic graph (loaded from the installed
wheel, with the settings its Python ``Holistic`` solution gives it) with one change: a
``GateCalculator`` in front of each of those two branches, opened per frame by a boolean input, so
the caller decides when they are worth running
(:class:`~streamer.tracking.mediapipe_runner.MediaPipeRunner`, in the live server, searches for
hands every frame while a hand is tracked and every few frames while none is, and runs the face
every other frame).

A closed gate gives no landmarks of that branch for that frame, exactly as a frame where the branch
found none.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: MediaPipe's Holistic graph inside the wheel (relative to ``mediapipe/modules``).
HOLISTIC_GRAPH = "holistic_landmark/holistic_landmark_cpu.binarypb"
#: The calculators of the hand and face branches, and the boolean input streams that open their gates.
HAND_BRANCH = "HandLandmarksLeftAndRightCpu"
ALLOW_HANDS = "allow_hands"
FACE_BRANCH = "FaceLandmarksFromPoseCpu"
ALLOW_FACE = "allow_face"
OUTPUTS = (
    "pose_landmarks",
    "pose_world_landmarks",
    "left_hand_landmarks",
    "right_hand_landmarks",
    "face_landmarks",
    "segmentation_mask",
)


def gated_holistic_config() -> Any:
    """Holistic's ``CalculatorGraphConfig`` with the hand branch behind a gate on :data:`ALLOW_HANDS`
    and the face branch behind one on :data:`ALLOW_FACE`.

    Raises:
        ModelUnavailableError: the installed MediaPipe has no Holistic graph of the expected shape.
    """
    from google.protobuf.message import DecodeError
    from mediapipe.framework import calculator_pb2

    from ..errors import ModelUnavailableError
    from .mediapipe_runner import mediapipe_modules_dir

    path = mediapipe_modules_dir() / HOLISTIC_GRAPH
    config = calculator_pb2.CalculatorGraphConfig()
    try:
        config.ParseFromString(path.read_bytes())
    except (OSError, ValueError, DecodeError) as exc:
        raise ModelUnavailableError(
            f"MediaPipe's Holistic graph could not be read ({path.name}): {exc}"
        ) from None
    for branch, allow in ((HAND_BRANCH, ALLOW_HANDS), (FACE_BRANCH, ALLOW_FACE)):
        _gate(config, branch, allow)
    return config


def _gate(config: Any, calculator: str, allow: str) -> None:
    """Put the one ``calculator`` node of ``config`` behind a ``GateCalculator`` opened by the graph
    input stream ``allow`` (its streams renamed ``<allow>_<stream>``)."""
    from ..errors import ModelUnavailableError

    nodes = [node for node in config.node if node.calculator == calculator]
    if len(nodes) != 1:
        raise ModelUnavailableError(
            f"MediaPipe's Holistic graph has {len(nodes)} {calculator} nodes (expected 1): an unknown version"
        )
    branch = nodes[0]
    gate = config.node.add()
    gate.calculator = "GateCalculator"
    gated = []
    for item in list(branch.input_stream):  # "TAG:stream" or "stream"
        tag, _, stream = item.rpartition(":")
        gate.input_stream.append(stream)
        gate.output_stream.append(f"{allow}_{stream}")
        gated.append(f"{tag}:{allow}_{stream}" if tag else f"{allow}_{stream}")
    gate.input_stream.append(f"ALLOW:{allow}")
    del branch.input_stream[:]
    branch.input_stream.extend(gated)
    config.input_stream.append(f"{allow.upper()}:{allow}")


class GatedHolistic:
    """Holistic (as ``mediapipe.solutions.holistic.Holistic``) whose hand and face branches run on request.

    Args: as ``Holistic``: ``static_image_mode``, ``model_complexity``, ``smooth_landmarks``,
    ``enable_segmentation``, ``refine_face_landmarks``, ``min_detection_confidence``,
    ``min_tracking_confidence``.
    """

    def __init__(
        self,
        static_image_mode: bool = False,
        model_complexity: int = 1,
        smooth_landmarks: bool = True,
        enable_segmentation: bool = False,
        refine_face_landmarks: bool = False,
        min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
    ) -> None:
        from mediapipe.python.solution_base import SolutionBase

        # The side inputs and thresholds of mediapipe.solutions.holistic.Holistic.
        self._solution = SolutionBase(
            graph_config=gated_holistic_config(),
            side_inputs={
                "model_complexity": model_complexity,
                "smooth_landmarks": smooth_landmarks and not static_image_mode,
                "enable_segmentation": enable_segmentation,
                "smooth_segmentation": not static_image_mode,
                "refine_face_landmarks": refine_face_landmarks,
                "use_prev_landmarks": not static_image_mode,
            },
            calculator_params={
                "poselandmarkcpu__posedetectioncpu__TensorsToDetectionsCalculator.min_score_thresh": (
                    min_detection_confidence
                ),
                "poselandmarkcpu__poselandmarkbyroicpu__tensorstoposelandmarksandsegmentation__"
                "ThresholdingCalculator.threshold": min_tracking_confidence,
            },
            outputs=list(OUTPUTS),
        )

    def process(self, image: np.ndarray, hands: bool = True, face: bool = True) -> Any:
        """Landmarks of one RGB frame (a NamedTuple with :data:`OUTPUTS`); hands only if ``hands``,
        the face only if ``face``."""
        return self._solution.process({"image": image, ALLOW_HANDS: bool(hands), ALLOW_FACE: bool(face)})

    def reset(self) -> None:
        """Forget the tracking state (the next frame is detected afresh)."""
        self._solution.reset()

    def close(self) -> None:
        """Release the graph."""
        self._solution.close()
