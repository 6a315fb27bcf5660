"""LHM's input images from a found person: the body image and the head image.

As LHM prepares a photo:

* body: the person on a white background (1.0) in a 5:3 (height:width) crop around them, padded
  to a square with white and resized (bicubic, antialiased) to the body encoder's side;
* head: a square crop around the face, padded with white where it leaves the picture and
  resized (bicubic, antialiased) to the head encoder's side.

The 5:3 crop, the person mask and the landmarks come from :func:`streamer.reconstruct.person.find_person`,
shared with the ``fit`` method. LHM sharpens the 112-pixel face crop with a face super-resolution
network (RealESRGAN + GFPGAN) before resizing to 448; we resize directly (no such weights ship).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ...errors import ReconstructionError
from ...tracking.landmarks import FrameLandmarks
from ..person import Person

#: Margin around the face landmarks' box, as a fraction of its larger side, on each side.
HEAD_MARGIN = 0.35
#: MediaPipe Pose landmarks on the head (nose, eyes, ears, mouth) used when no face mesh was found.
POSE_HEAD_LANDMARKS = tuple(range(11))


@dataclass
class LHMInputs:
    """The two images LHM encodes, RGB in [0, 1].

    Attributes:
        body: the white-background body crop, square. [3, S, S]
        head: the head crop, square. [3, S', S']
        head_box: the head crop in the person crop's pixels (x0, y0, x1, y1).
    """

    body: Tensor
    head: Tensor
    head_box: tuple[float, float, float, float]


def _resize(image: Tensor, side: int) -> Tensor:
    """[3, H, W] -> [3, side, side], bicubic with antialiasing, clamped to [0, 1]."""
    out = F.interpolate(image[None], size=(side, side), mode="bicubic", align_corners=False, antialias=True)
    return out[0].clamp(0.0, 1.0)


def pad_square(image: Tensor, value: float = 1.0) -> Tensor:
    """Pad [3, H, W] symmetrically to a square with ``value`` (white)."""
    _, h, w = image.shape
    side = max(h, w)
    left, top = (side - w) // 2, (side - h) // 2
    return F.pad(image, (left, side - w - left, top, side - h - top), value=value)


def body_image(rgb: np.ndarray, mask: np.ndarray, side: int) -> Tensor:
    """The person on white, padded square and resized. [3, side, side]

    Args:
        rgb: the 5:3 person crop, uint8. [H, W, 3]
        mask: person probability in [0, 1]. [H, W]
    """
    img = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float() / 255.0
    alpha = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32)).clamp(0, 1)[None]
    return _resize(pad_square(img * alpha + (1.0 - alpha)), side)


def head_box(landmarks: FrameLandmarks) -> tuple[float, float, float, float]:
    """A square box around the face (x0, y0, x1, y1), pixels of the landmarks' image.

    Raises:
        ReconstructionError: neither a face mesh nor the pose's head landmarks were found.
    """
    if landmarks.face is not None:
        pts = landmarks.face.image[:, :2]
    elif landmarks.pose is not None:
        pts = landmarks.pose.image[list(POSE_HEAD_LANDMARKS), :2]
    else:
        raise ReconstructionError("no face found for LHM's head image")
    (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
    side = max(x1 - x0, y1 - y0) * (1.0 + 2.0 * HEAD_MARGIN)
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    return float(cx - side / 2), float(cy - side / 2), float(cx + side / 2), float(cy + side / 2)


def crop_square(image: Tensor, box: tuple[float, float, float, float], value: float = 1.0) -> Tensor:
    """Crop [3, H, W] to an integer-rounded box, padding with ``value`` outside the image."""
    _, h, w = image.shape
    x0, y0 = round(box[0]), round(box[1])
    side = max(1, round(box[2] - box[0]))
    pad = (max(0, -x0), max(0, x0 + side - w), max(0, -y0), max(0, y0 + side - h))
    padded = F.pad(image, pad, value=value)
    return padded[:, y0 + pad[2] : y0 + pad[2] + side, x0 + pad[0] : x0 + pad[0] + side]


def prepare_inputs(person: Person, body_side: int, head_side: int) -> LHMInputs:
    """Body and head images of a found person at the encoders' sides."""
    body = body_image(person.rgb, person.mask, body_side)
    img = torch.from_numpy(np.ascontiguousarray(person.rgb)).permute(2, 0, 1).float() / 255.0
    box = head_box(person.landmarks)
    head = _resize(crop_square(img, box), head_side)
    return LHMInputs(body=body, head=head, head_box=box)
