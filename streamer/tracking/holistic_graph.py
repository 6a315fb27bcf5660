"""MediaPipe Holistic with a switch for its hand models: pose and face every frame, hands on request.

Holistic's hand branch (a re-crop model and the full hand landmark model, per wrist) costs about
as much CPU as the pose and face models together, and it runs on every frame whether or not it
finds a hand: on a dancer 3 m from a 640-pixel webcam it finds one in a sixth of the frames. This
is MediaPipe's own Holistic graph (loaded from the installed wheel, with the settings its Python
``Holistic`` solution gives it) with one change: a ``GateCalculator`` in front of the hand branch,
opened per frame by a boolean input, so the caller decides when the hands are worth looking for
(:class:`~streamer.tracking.mediapipe_runner.MediaPipeRunner`, in the live server, searches every
frame while a hand is tracked and every few frames while none is).

A closed gate gives no hand landmarks for that frame, exactly as a frame where the hand branch
found none.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: MediaPipe's Holistic graph inside the wheel (relative to ``mediapipe/modules``).
HOLISTIC_GRAPH = "holistic_landmark/holistic_landmark_cpu.binarypb"
#: The calculator of the hand branch, and the boolean input stream that opens its gate.
HAND_BRANCH = "HandLandmarksLeftAndRightCpu"
ALLOW_HANDS = "allow_hands"
OUTPUTS = (
    "pose_landmarks",
    "pose_world_landmarks",
    "left_hand_landmarks",
    "right_hand_landmarks",
    "face_landmarks",
    "segmentation_mask",
)


def gated_holistic_config() -> Any:
    """Holistic's ``CalculatorGraphConfig`` with the hand branch behind a gate on :data:`ALLOW_HANDS`.

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
    hands = [node for node in config.node if node.calculator == HAND_BRANCH]
    if len(hands) != 1:
        raise ModelUnavailableError(
            f"MediaPipe's Holistic graph has {len(hands)} {HAND_BRANCH} nodes (expected 1): an unknown version"
        )
    branch = hands[0]
    gate = config.node.add()
    gate.calculator = "GateCalculator"
    gated = []
    for item in list(branch.input_stream):  # "TAG:stream" or "stream"
        tag, _, stream = item.rpartition(":")
        gate.input_stream.append(stream)
        gate.output_stream.append(f"gated_{stream}")
        gated.append(f"{tag}:gated_{stream}" if tag else f"gated_{stream}")
    gate.input_stream.append(f"ALLOW:{ALLOW_HANDS}")
    del branch.input_stream[:]
    branch.input_stream.extend(gated)
    config.input_stream.append(f"ALLOW_HANDS:{ALLOW_HANDS}")
    return config


class GatedHolistic:
    """Holistic (as ``mediapipe.solutions.holistic.Holistic``) whose hand branch runs on request.

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

    def process(self, image: np.ndarray, hands: bool = True) -> Any:
        """Landmarks of one RGB frame (a NamedTuple with :data:`OUTPUTS`); hands only if ``hands``."""
        return self._solution.process({"image": image, ALLOW_HANDS: bool(hands)})

    def reset(self) -> None:
        """Forget the tracking state (the next frame is detected afresh)."""
        self._solution.reset()

    def close(self) -> None:
        """Release the graph."""
        self._solution.close()
