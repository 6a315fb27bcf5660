"""Pinhole camera in the OpenCV convention (x right, y down, z forward)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from ..errors import InputError


@dataclass
class Camera:
    """A pinhole camera.

    Attributes:
        K: intrinsics, pixels; pixel centres sit at +0.5 (as gsplat). [3, 3] float32
        viewmat: world-to-camera rigid transform, OpenCV axes. [4, 4] float32
        width, height: image size in pixels.
    """

    K: Tensor
    viewmat: Tensor
    width: int
    height: int

    def __post_init__(self) -> None:
        self.K = torch.as_tensor(self.K, dtype=torch.float32)
        self.viewmat = torch.as_tensor(self.viewmat, dtype=torch.float32)
        if tuple(self.K.shape) != (3, 3):
            raise InputError(f"Camera.K: expected shape (3, 3), got {tuple(self.K.shape)}")
        if tuple(self.viewmat.shape) != (4, 4):
            raise InputError(f"Camera.viewmat: expected shape (4, 4), got {tuple(self.viewmat.shape)}")
        if not (bool(torch.isfinite(self.K).all()) and bool(torch.isfinite(self.viewmat).all())):
            raise InputError("Camera: K or viewmat contains NaN or infinite values")
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise InputError(f"Camera: image size must be positive, got {self.width}x{self.height}")
        self.width, self.height = int(self.width), int(self.height)

    @staticmethod
    def intrinsics(width: int, height: int, fov_y_deg: float) -> Tensor:
        """K for a centred principal point and square pixels with vertical field of view."""
        if not 0.0 < fov_y_deg < 180.0:
            raise InputError(f"fov_y_deg must be in (0, 180), got {fov_y_deg}")
        f = 0.5 * height / math.tan(math.radians(fov_y_deg) / 2)
        return torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=torch.float32)

    @classmethod
    def look_at(
        cls,
        eye: Sequence[float],
        target: Sequence[float],
        width: int,
        height: int,
        fov_y_deg: float = 40.0,
        up: Sequence[float] = (0.0, 1.0, 0.0),
    ) -> "Camera":
        """A camera at ``eye`` (world, metres) looking at ``target``, world ``up`` upwards."""
        eye_t = torch.tensor(eye, dtype=torch.float64)
        forward = torch.tensor(target, dtype=torch.float64) - eye_t
        if float(forward.norm()) < 1e-9:
            raise InputError("Camera.look_at: eye and target coincide")
        z = forward / forward.norm()
        x = torch.linalg.cross(z, torch.tensor(up, dtype=torch.float64))  # image x: right of the view
        if float(x.norm()) < 1e-9:
            raise InputError("Camera.look_at: view direction is parallel to up")
        x = x / x.norm()
        y = torch.linalg.cross(z, x)  # image y points down
        rot = torch.stack([x, y, z])  # rows: camera axes in world
        view = torch.eye(4, dtype=torch.float64)
        view[:3, :3] = rot
        view[:3, 3] = -rot @ eye_t
        return cls(K=cls.intrinsics(width, height, fov_y_deg), viewmat=view.float(), width=width, height=height)

    @classmethod
    def framing(
        cls,
        points: Tensor,
        width: int,
        height: int,
        fov_y_deg: float = 30.0,
        azimuth_deg: float = 0.0,
        margin: float = 1.15,
    ) -> "Camera":
        """A camera on the +Z side (rotated by ``azimuth_deg`` about +Y) that frames ``points`` [N, 3].

        The points may be on any device; the camera is on the CPU (move it with :meth:`to`)."""
        pts = torch.as_tensor(points, dtype=torch.float32).reshape(-1, 3)
        if pts.shape[0] == 0:
            raise InputError("Camera.framing: no points to frame")
        lo, hi = pts.min(0).values.cpu(), pts.max(0).values.cpu()  # the camera is built on the CPU
        centre = ((lo + hi) / 2).double()
        half_h = float(hi[1] - lo[1]) / 2 * margin
        half_w = float(torch.maximum(hi[0] - lo[0], hi[2] - lo[2])) / 2 * margin
        tan_y = math.tan(math.radians(fov_y_deg) / 2)
        tan_x = tan_y * width / height
        depth_half = float(torch.maximum(hi[0] - lo[0], hi[2] - lo[2])) / 2
        dist = max(half_h / tan_y, half_w / tan_x) + depth_half
        az = math.radians(azimuth_deg)
        eye = centre + dist * torch.tensor([math.sin(az), 0.0, math.cos(az)], dtype=torch.float64)
        return cls.look_at(eye.tolist(), centre.tolist(), width, height, fov_y_deg)

    def to(self, device: torch.device | str) -> "Camera":
        return Camera(K=self.K.to(device), viewmat=self.viewmat.to(device), width=self.width, height=self.height)
