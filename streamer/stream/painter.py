"""Pose in, video picture out: skinning, the stage camera and rendering, without threads or I/O.

The render worker of a :class:`~streamer.stream.stage.Stage` calls :meth:`AvatarPainter.pose` once
per new pose and :meth:`AvatarPainter.paint` once per distinct camera (render once per camera;
:mod:`.camera_encoder` encodes once per codec and rate, shared by the peers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import av
import numpy as np
import torch

from ..avatar import Avatar
from ..body import BodyModel, SmplxPose
from ..render import Camera, Renderer
from .protocol import Orbit

FOV_Y_DEG = 30.0

try:  # the compiled rasterizer also converts pictures to I420
    from ..render import _cpu_raster as _raster
except ImportError:  # pragma: no cover - an install without the extension
    _raster = None


@dataclass(frozen=True)
class Framing:
    """Where the stage camera looks from: a centre (world, metres) and a distance along +Z."""

    centre: tuple[float, float, float]
    distance: float


def framing_for(
    points: torch.Tensor, size: int, fov_y_deg: float = FOV_Y_DEG, margin: float = 1.1
) -> Framing:
    """The framing of :meth:`Camera.framing` for ``points`` [N, 3] (world, metres)."""
    cam = Camera.framing(points, size, size, fov_y_deg=fov_y_deg, margin=margin)
    pts = points.reshape(-1, 3).float()
    centre = (pts.min(0).values + pts.max(0).values) / 2
    view = cam.viewmat.double()
    eye = -view[:3, :3].T @ view[:3, 3]
    return Framing(tuple(float(c) for c in centre), float((eye - centre.double()).norm()))  # type: ignore[arg-type]


def orbit_camera(framing: Framing, orbit: Orbit, size: int, fov_y_deg: float = FOV_Y_DEG) -> Camera:
    """A square camera on a sphere around the framing centre: azimuth about +Y from +Z, elevation up."""
    az, el = math.radians(orbit.azimuth), math.radians(orbit.elevation)
    d = framing.distance * orbit.zoom
    cx, cy, cz = framing.centre
    eye = (cx + d * math.sin(az) * math.cos(el), cy + d * math.sin(el), cz + d * math.cos(az) * math.cos(el))
    return Camera.look_at(eye, framing.centre, size, size, fov_y_deg)


def rgb_to_i420(rgb: torch.Tensor | np.ndarray) -> np.ndarray:
    """[H, W, 3] float in [0, 1] (or uint8) -> I420 planes stacked as [H * 3 / 2, W] uint8 (BT.601).

    Float pictures go through the C++ extension in one pass (about ten times faster than
    quantising and converting with FFmpeg; this runs once per streamed picture); uint8 ones, and
    float ones when the extension is missing, through FFmpeg's converter.
    """
    if isinstance(rgb, torch.Tensor):
        rgb = rgb.detach().cpu()
        if rgb.dtype == torch.float32 and _raster is not None:
            return _raster.rgb_to_i420(rgb.contiguous().numpy())
        if rgb.dtype != torch.uint8:
            rgb = (rgb.clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8)
        rgb = rgb.numpy()
    elif rgb.dtype == np.float32 and _raster is not None:
        return _raster.rgb_to_i420(np.ascontiguousarray(rgb))
    elif rgb.dtype != np.uint8:
        rgb = (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    return frame.reformat(format="yuv420p").to_ndarray()


class AvatarPainter:
    """Skins an avatar into a pose and renders square pictures of it.

    Args:
        avatar: the avatar (canonical Gaussians with skinning), on the renderer's device.
        body: the body model, same device.
        renderer: the rasterizer backend.
        size: picture width and height in pixels (even).
        framing_poses: poses [T, ...] whose union the stage camera keeps in view.
        pin_root: place the body at the world origin (drop ``transl``): live tracking estimates the
            distance to the webcam poorly, and the avatar should stay in the picture when the
            performer walks; the body still turns, bends and crouches.
        background: RGB in [0, 1].
    """

    def __init__(
        self,
        avatar: Avatar,
        body: BodyModel,
        renderer: Renderer,
        size: int,
        framing_poses: SmplxPose,
        pin_root: bool = False,
        background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    ) -> None:
        if size < 16 or size % 2:
            raise ValueError(f"picture size must be even and at least 16, got {size}")
        self.avatar, self.body, self.renderer = avatar, body, renderer
        self.size, self.pin_root, self.background = size, pin_root, background
        with torch.inference_mode():
            means, _ = avatar.pose_tensors(body, self._place(framing_poses.to("cpu")))
        self.framing = framing_for(means.reshape(-1, 3).cpu(), size)
        self._cameras: dict[tuple[float, float, float], Camera] = {}

    def _place(self, pose: SmplxPose) -> SmplxPose:
        return pose.replace(transl=torch.zeros_like(pose.transl)) if self.pin_root else pose

    def pose(self, pose: SmplxPose) -> object:
        """Linear blend skinning: the avatar's Gaussians in ``pose`` (world space).

        The pose stays on the CPU, where the joint transforms take microseconds (see
        :meth:`Avatar.pose_tensors`). On CUDA it waits for the kernels, so that the stage's ``lbs``
        timing is the skinning's own (and not counted in ``render``).
        """
        with torch.inference_mode():
            posed = self.avatar.pose(self.body, self._place(pose.to("cpu")))
        if self.body.device.type == "cuda":
            torch.cuda.synchronize(self.body.device)
        return posed

    def camera(self, orbit: Orbit) -> Camera:
        """The camera of an orbit (cached; the default orbit is the stage camera)."""
        key = orbit.key
        cam = self._cameras.get(key)
        if cam is None:
            if len(self._cameras) > 256:  # viewers dragging around: keep the cache small
                self._cameras.clear()
            cam = orbit_camera(self.framing, orbit, self.size).to(self.body.device)
            self._cameras[key] = cam
        return cam

    def paint(self, posed: object, orbit: Orbit) -> np.ndarray:
        """Render posed Gaussians from an orbit camera: I420 [size * 3 / 2, size] uint8."""
        with torch.inference_mode():
            rgb, _ = self.renderer.render(posed, self.camera(orbit), self.background)  # type: ignore[arg-type]
        return rgb_to_i420(rgb)
