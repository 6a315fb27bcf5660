"""Evaluating reconstructions: re-render in the photo's camera, and LHM's animation protocol.

* :func:`evaluate_photo`: reconstruct a photo, render the avatar in the fitted pose with the photo's
  camera, and compare with the photo inside the person mask.
* :func:`evaluate_video`: LHM's Table-2 protocol: reconstruct from the first frame, track the
  others (MediaPipe + the live fitter, in the same crop and camera), drive the avatar with the tracked
  poses (refined offline to each frame's person mask and landmarks, :mod:`.track_refine`, then to
  its colours, :mod:`.photo_refine`), render each frame and compare inside that frame's person mask.

A person mask is MediaPipe's, with its edge snapped to the frame's colours
(:func:`.mask_edges.snap_to_edges`), the same as the reconstruction's own.

Metrics come from :func:`.metrics.masked_scores` (PSNR and SSIM inside the mask, mask IoU), counted
only over crop pixels that lie inside the photo.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..body.model import BodyModel
from ..errors import ReconstructionError
from ..render import Camera, render, resolve_backend
from .animation_sheet import ScoredFrame
from .fit import FIT_ITERATIONS, Reconstruction, reconstruct_photo
from .mask_edges import snap_to_edges
from .metrics import masked_scores

SHEET_VIEWS = (("front", 0.0), ("side", 90.0), ("back", 180.0))
#: The sheet shows the avatar with its arms lowered this far from the canonical T-pose (about 63
#: degrees): spread out, the arms set the framing's width and the body filled a third of the tile.
SHEET_ARMS_DOWN_RAD = 1.1


@dataclass
class PhotoEval:
    """Scores of one photo's reconstruction, and the images for a contact sheet."""

    scores: dict[str, float]
    recon: Reconstruction
    render: np.ndarray  # [H, W, 3] float in [0, 1], black background
    alpha: np.ndarray  # [H, W]


def render_np(
    gaussians: Any,
    camera: Camera,
    background: tuple[float, float, float] = (0.0, 0.0, 0.0),
    backend: str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Render to numpy: RGB [H, W, 3] and alpha [H, W], float in [0, 1].

    Gaussians on the CPU are copied to the GPU for the ``cuda`` backend (the evaluations pose on
    the CPU; a copy of ~50k Gaussians costs far less than the few renders of a frame).
    """
    if resolve_backend(backend) == "cuda" and gaussians.means.device.type != "cuda":
        gaussians = gaussians.to("cuda")
    rgb, alpha = render(gaussians, camera, background=background, backend=backend)
    return rgb.detach().cpu().numpy(), alpha.detach().cpu().numpy()


def evaluate_photo(
    rgb: np.ndarray,
    body: BodyModel,
    num_gaussians: int = 40_000,
    backend: str = "cpu",
    reconstruct: Callable[..., Any] | None = None,
) -> PhotoEval:
    """Reconstruct ``rgb`` ([H, W, 3] uint8) and score its re-rendering in the photo's camera.

    ``reconstruct(rgb, crop=None)``: another method than ``fit`` (``streamer reconstruct --method``),
    whose avatars are skinned to ``body``.
    """
    if reconstruct is None:
        recon = reconstruct_photo(rgb, body, num_gaussians=num_gaussians)
    else:
        recon = reconstruct(rgb)
    posed = recon.avatar.pose(body, recon.pose)
    img, alpha = render_np(posed, recon.camera, backend=backend)
    person = recon.person
    scores = masked_scores(img, alpha, person.rgb / 255.0, person.mask > 0.5, person.valid)
    if hasattr(recon, "seen_fraction"):  # the fit method's share of Gaussians coloured from the photo
        scores["seen_fraction"] = recon.seen_fraction
    scores["gaussians"] = len(recon.avatar)
    return PhotoEval(scores=scores, recon=recon, render=img, alpha=alpha)


def contact_sheet(ev: PhotoEval, body: BodyModel, backend: str = "cpu", height: int = 500) -> np.ndarray:
    """Photo crop | re-render | front, side, back of the avatar in its canonical pose with the arms
    lowered (:data:`SHEET_ARMS_DOWN_RAD`). [height, 5 * width, 3] uint8"""
    import cv2

    from ..body.joints import JOINT_INDEX
    from ..body.pose import SmplxPose

    person = ev.recon.person
    h, w = person.rgb.shape[:2]
    tiles = [
        person.rgb.astype(np.float32) / 255.0,
        ev.render + (1 - ev.alpha[..., None]),  # the render's colour is premultiplied by alpha
    ]
    avatar = ev.recon.avatar
    arms_down = torch.zeros(21, 3)  # (body_pose rows leave out the root, joint 0)
    arms_down[JOINT_INDEX["left_shoulder"] - 1, 2] = -SHEET_ARMS_DOWN_RAD
    arms_down[JOINT_INDEX["right_shoulder"] - 1, 2] = SHEET_ARMS_DOWN_RAD
    pose = SmplxPose.zeros(num_betas=len(avatar.betas)).replace(betas=avatar.betas, body_pose=arms_down)
    rest = avatar.pose(body, pose)
    assert not isinstance(rest, list)  # one pose in, one set of Gaussians out
    for _, az in SHEET_VIEWS:
        cam = Camera.framing(rest.means, w, h, azimuth_deg=az, margin=1.05)
        img, _ = render_np(rest, cam, background=(1.0, 1.0, 1.0), backend=backend)
        tiles.append(img)
    sheet = np.concatenate(
        [cv2.resize(t, (round(w * height / h), height), interpolation=cv2.INTER_AREA) for t in tiles], 1
    )
    return (np.clip(sheet, 0, 1) * 255 + 0.5).astype(np.uint8)


@dataclass
class VideoEval:
    """Per-frame scores of the animation protocol (frame 0 is the reconstruction frame, excluded)."""

    frames: list[dict[str, float]] = field(default_factory=list)

    def mean(self) -> dict[str, float]:
        keys = ("psnr_db", "ssim", "mask_iou")
        return (
            {k: float(np.mean([f[k] for f in self.frames if math.isfinite(f[k])])) for k in keys}
            if self.frames
            else {}
        )


def evaluate_video(
    path: str | Path,
    body: BodyModel,
    max_frames: int | None = None,
    stride: int = 1,
    num_gaussians: int = 40_000,
    backend: str = "cpu",
    smoothing: bool = True,
    progress: Callable[[int], None] | None = None,
    refine: bool = True,
    photometric: bool = True,
    on_frame: Callable[[ScoredFrame], None] | None = None,
    reconstruct: Callable[..., Any] | None = None,
) -> tuple[VideoEval, Reconstruction]:
    """LHM's animation protocol on a video (see the module docstring).

    The crop is the whole frame padded to 5:3 (the person moves; a tight crop would cut their arms off),
    identical for every frame, so the reconstruction's camera is every frame's camera.

    Args:
        path: the video.
        max_frames: evaluate at most this many frames after the first.
        stride: evaluate every ``stride``-th frame (all frames are still tracked).
        smoothing: the live fitter's One Euro filtering, as live (on by default).
        progress: called with the number of frames evaluated so far.
        refine: refine each evaluated frame's tracked pose to its person mask and 2D landmarks
            offline (:class:`.track_refine.SilhouetteRefiner`); the live fitter's pose otherwise.
        photometric: then align the avatar's colours with the frame's
            (:class:`.photo_refine.PhotometricRefiner`; only with ``refine``). Each frame's scores
            say whether its pose was kept (``photometric``: 1.0, or 0.0 when the check refused it).
        on_frame: called with each scored frame's images and scores (for a contact sheet,
            :class:`.animation_sheet.AnimationSheet`).
        reconstruct: ``reconstruct(rgb, crop=box)``: another method than ``fit`` for the first frame,
            whose avatars are skinned to ``body``.

    Raises:
        SourceError: the video cannot be read. ReconstructionError: no person in the first frame.
    """
    from calibration.performer import PerformerProfile

    from ..tracking.fit import PoseFitter
    from ..tracking.mediapipe_runner import MediaPipeRunner
    from ..tracking.sources import VideoFileSource
    from .person import crop_image, crop_valid, full_frame_box
    from .photo_refine import PhotometricRefiner
    from .track_refine import SilhouetteRefiner

    if stride < 1:
        raise ReconstructionError(f"stride must be >= 1, got {stride}")
    out = VideoEval()
    with VideoFileSource(path) as source:
        frames = iter(source)
        first = next(frames, None)
        if first is None:
            raise ReconstructionError(f"{path}: no frames")
        box = full_frame_box(source.width, source.height)
        try:
            if reconstruct is None:
                recon = reconstruct_photo(first[1], body, num_gaussians=num_gaussians, crop=box)
            else:
                recon = reconstruct(first[1], crop=box)
        except ReconstructionError as exc:
            where = f"{path}: the first frame, which the avatar is built from"
            raise ReconstructionError(f"{where}: {exc}") from None
        valid = crop_valid((source.height, source.width), box)
        fitter = PoseFitter(
            body,
            K=recon.camera.K.numpy(),
            profile=PerformerProfile(name="avatar", betas=recon.avatar.betas.tolist()),
            smoothing=smoothing,
            fps=source.fps,
            iterations=FIT_ITERATIONS,
        )
        refiner = SilhouetteRefiner(body, recon.avatar, recon.camera) if refine else None
        colours = (
            PhotometricRefiner(body, recon.avatar, recon.camera, backend=backend)
            if refine and photometric
            else None
        )
        with MediaPipeRunner(models="holistic", video=True, segmentation=True) as runner:
            runner.process(recon.person.rgb, first[0])
            for index, (t_ms, rgb) in enumerate(frames, start=1):
                if max_frames is not None and len(out.frames) >= max_frames:
                    break
                crop = crop_image(rgb, box)
                landmarks = runner.process(crop, t_ms)
                pose = fitter.fit(landmarks)
                if index % stride:
                    continue
                if landmarks.segmentation is None:
                    continue  # nobody in this frame: nothing to compare
                mask = snap_to_edges(crop, landmarks.segmentation) > 0.5
                if refiner is not None:
                    lm = landmarks.pose
                    pose = refiner.refine(
                        pose, mask, None if lm is None else lm.image, None if lm is None else lm.visibility
                    )
                if colours is not None:
                    pose = colours.refine(pose, crop, mask & valid)
                img, alpha = render_np(recon.avatar.pose(body, pose), recon.camera, backend=backend)
                scores = masked_scores(img, alpha, crop / 255.0, mask, valid)
                if colours is not None:
                    scores["photometric"] = float(colours.kept_last)
                scores["frame"] = index
                out.frames.append(scores)
                if on_frame is not None:
                    on_frame(ScoredFrame(index, crop, img, alpha, mask, scores, valid))
                if progress is not None:
                    progress(len(out.frames))
    return out, recon


def as_float(v: Any) -> Any:
    """JSON-friendly numbers (inf -> None)."""
    if isinstance(v, (float, np.floating)):
        return round(float(v), 4) if math.isfinite(v) else None
    if isinstance(v, torch.Tensor):
        return v.tolist()
    return v
