"""Landmarks of one video frame: what the MediaPipe runner produces and the SMPL-X fitter consumes.

Conventions:
    * ``image`` arrays are [K, 3] float32: x, y in **pixels** of the frame as given (origin top-left,
      pixel centres at +0.5, x right, y down) and z = MediaPipe's relative depth scaled to pixels
      (normalised z * frame width; smaller is nearer the camera).
    * ``world`` arrays are [K, 3] float32 **metres** in MediaPipe's world frame (origin between the
      hips for the pose; x right, y down, z away from the camera, as seen in the frame).
    * Left/right always name the **person's** anatomical side, whatever the mirroring of the frame.
    * Missing parts are ``None``; a frame where nobody was found has ``pose=None``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NUM_POSE_LANDMARKS = 33
NUM_HAND_LANDMARKS = 21


@dataclass
class PoseLandmarks:
    """MediaPipe Pose's 33 body landmarks."""

    image: np.ndarray  # [33, 3] pixels (x, y), relative depth (z)
    world: np.ndarray  # [33, 3] metres, MediaPipe world frame
    visibility: np.ndarray  # [33] in [0, 1]
    presence: np.ndarray | None = None  # [33] in [0, 1] where the model reports it


@dataclass
class HandLandmarks:
    """MediaPipe Hands' 21 landmarks of one hand."""

    image: np.ndarray  # [21, 3]
    world: np.ndarray | None  # [21, 3] metres, hand-centred, where available
    score: float = 1.0  # handedness / detection confidence


@dataclass
class FaceLandmarks:
    """MediaPipe Face Mesh landmarks (468, or 478 with iris refinement)."""

    image: np.ndarray  # [468 or 478, 3]


@dataclass
class FrameLandmarks:
    """Everything MediaPipe found in one frame, with timing."""

    width: int
    height: int
    timestamp_ms: float
    pose: PoseLandmarks | None = None
    left_hand: HandLandmarks | None = None  # the person's left hand
    right_hand: HandLandmarks | None = None  # the person's right hand
    face: FaceLandmarks | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)  # per model, e.g. {"pose": 21.3}
    #: person mask probabilities [H, W] float32 in [0, 1] (runners asked for segmentation only)
    segmentation: np.ndarray | None = None
    #: whether hand models ran on this frame: False when the runner has none, or skipped Holistic's
    #: (no hand in the frames before: ``MediaPipeRunner.hand_search_interval``); True by default for
    #: landmarks made elsewhere (synthetic ones, motion files)
    hands_searched: bool = True
    #: whether face models ran on this frame: False when the runner has none, or skipped Holistic's
    #: (``MediaPipeRunner.face_interval``); the pose fit then holds the last face it saw
    face_searched: bool = True

    @property
    def has_person(self) -> bool:
        return self.pose is not None
