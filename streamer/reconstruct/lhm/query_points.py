"""LHM's canonical query points: body-model surface samples in the "big pose".

LHM asks its network about a fixed set of points on the SMPL-X surface, posed in a "big pose"
(legs spread: left hip +pi/9, right hip -pi/9 about Z, everything else zero, betas 0) so that
no two body parts touch. Three quarters are sampled on the body, one quarter on the head, body
points first: the transformer's head blocks take exactly the last quarter.

Every point carries the skinning weights of its nearest body vertex (as LHM does), which take
predicted Gaussians from the big pose to the zero pose (:mod:`.to_avatar`) and on to any pose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ...avatar.avatar import skinning_transforms
from ...avatar.demo import head_face_mask, sample_surface
from ...body.joints import JOINT_INDEX
from ...body.model import BodyModel
from ...body.pose import SmplxPose
from ...errors import InputError
from .config import body_split

#: Hip spread of the big pose about Z, radians (left +, right -).
BIG_POSE_HIP_ANGLE = math.pi / 9

#: Joints whose points count as "upper body" (their Gaussian scales are clamped harder).
UPPER_BODY_JOINTS: tuple[str, ...] = (
    "spine1", "spine2", "spine3", "neck", "left_collar", "right_collar",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
)  # fmt: skip


def big_pose(num_betas: int = 10) -> SmplxPose:
    """LHM's canonical query pose: legs spread by +-pi/9 at the hips, all else zero."""
    pose = SmplxPose.zeros(num_betas=num_betas)
    pose.body_pose[JOINT_INDEX["left_hip"] - 1, 2] = BIG_POSE_HIP_ANGLE
    pose.body_pose[JOINT_INDEX["right_hip"] - 1, 2] = -BIG_POSE_HIP_ANGLE
    return pose


@dataclass
class QueryPoints:
    """The canonical query points and what each inherits from its nearest body vertex.

    Attributes:
        points: positions in the big pose, metres. [N, 3]
        vertex: nearest body-model vertex. [N] long
        skin_weights: that vertex's skinning weights (rows sum to 1). [N, 55]
        upper_body: points of the torso and arms (scale clamp, see :data:`UPPER_BODY_JOINTS`). [N] bool
        n_body: how many leading points are body points (the rest are head points).
    """

    points: Tensor
    vertex: Tensor
    skin_weights: Tensor
    upper_body: Tensor
    n_body: int

    def __len__(self) -> int:
        return int(self.points.shape[0])

    def to(self, device: torch.device | str) -> QueryPoints:
        return QueryPoints(
            self.points.to(device),
            self.vertex.to(device),
            self.skin_weights.to(device),
            self.upper_body.to(device),
            self.n_body,
        )


def big_pose_transforms(body: BodyModel) -> tuple[Tensor, Tensor]:
    """Zero pose -> big pose joint transforms [55, 4, 4] and their quaternions [55, 4] (betas 0)."""
    with torch.no_grad():
        return skinning_transforms(body, big_pose(body.num_betas), body.rest_joints())


def big_pose_vertices(body: BodyModel) -> Tensor:
    """Template vertices (betas 0) skinned into the big pose. [V, 3]"""
    A, _ = big_pose_transforms(body)
    blended = (body.lbs_weights @ A[:, :3, :].reshape(-1, 12)).reshape(-1, 3, 4)
    v = body.v_template
    return (blended[:, :, :3] @ v[:, :, None])[..., 0] + blended[:, :, 3]


def sample_query_points(body: BodyModel, n: int, seed: int = 0) -> QueryPoints:
    """Sample ``n`` query points on the big-pose surface: ``int(0.75 n)`` body, the rest head.

    Sampling is area-uniform within each group and deterministic for a seed.

    Raises:
        InputError: ``n`` below 4.
    """
    if n < 4:
        raise InputError(f"need at least 4 query points, got {n}")
    with torch.no_grad():
        verts = big_pose_vertices(body)
        faces = body.faces
        head = head_face_mask(body)
        gen = torch.Generator().manual_seed(seed)
        n_body = body_split(n)
        fids, barys = [], []
        for group, count in ((~head, n_body), (head, n - n_body)):
            f, b, _ = sample_surface(verts.cpu(), faces.cpu(), torch.nonzero(group.cpu())[:, 0], count, gen)
            fids.append(f)
            barys.append(b)
        fidx, bary = torch.cat(fids).to(verts.device), torch.cat(barys).to(verts.device)
        tri = faces[fidx]
        points = (verts[tri] * bary[..., None]).sum(1)
        corner = (verts[tri] - points[:, None]).norm(dim=-1).argmin(1, keepdim=True)
        nearest = tri.gather(1, corner)[:, 0]
        weights = body.lbs_weights[nearest]
        upper_ids = torch.tensor([JOINT_INDEX[j] for j in UPPER_BODY_JOINTS], device=weights.device)
        upper = torch.isin(weights.argmax(1), upper_ids)
        return QueryPoints(points.float(), nearest, weights.float(), upper, n_body)
