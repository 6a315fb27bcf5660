"""The built-in demo avatar: a dressed mannequin of Gaussians sampled on the body surface."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..body.joints import JOINT_INDEX, JOINT_NAMES
from ..body.model import BodyModel, vertex_normals
from .avatar import Avatar
from .gaussians import Gaussians
from .lbs import matrix_to_quat

DEMO_GAUSSIANS = 40_000
HEAD_FRACTION = 0.25  # 3:1 body:head, like LHM's query points
HEAD_JOINTS = ("head", "jaw", "left_eye", "right_eye")
TANGENT_SIGMA = 0.8  # Gaussian std along the surface, in units of the mean sample spacing
NORMAL_SIGMA = 0.25  # std along the normal, same unit
OPACITY = 0.95

# Outfit colours (sRGB in [0, 1]).
SKIN = (0.87, 0.69, 0.58)
HAIR = (0.22, 0.14, 0.09)
SHIRT = (0.20, 0.42, 0.72)
TROUSERS = (0.23, 0.24, 0.30)
SHOES = (0.35, 0.20, 0.12)
EYES = (0.10, 0.08, 0.08)
LIPS = (0.72, 0.40, 0.40)


def head_face_mask(body: BodyModel) -> Tensor:
    """Faces whose dominant skinning joint is the head, jaw or an eye (LHM's head region). [F] bool"""
    face_w = body.lbs_weights[body.faces].mean(1)  # [F, 55]
    head = torch.tensor([JOINT_INDEX[n] for n in HEAD_JOINTS], device=face_w.device)
    return torch.isin(face_w.argmax(1), head)


def sample_surface(
    vertices: Tensor, faces: Tensor, face_ids: Tensor, count: int, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """Area-uniform samples on the given faces.

    Returns:
        face index per sample [count] long, barycentric coordinates [count, 3], and the
        mean spacing of the samples (metres, scalar tensor).
    """
    tri = vertices[faces[face_ids]]
    area = 0.5 * torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]).norm(dim=-1)
    pick = torch.multinomial(area.double(), count, replacement=True, generator=generator)
    u, v = torch.rand(count, generator=generator), torch.rand(count, generator=generator)
    flip = u + v > 1
    u, v = torch.where(flip, 1 - u, u), torch.where(flip, 1 - v, v)
    bary = torch.stack([1 - u - v, u, v], dim=-1)
    spacing = (area.sum() / count).sqrt()
    return face_ids[pick], bary, spacing


def tangent_frames(normals: Tensor) -> Tensor:
    """Rotation matrices [N, 3, 3] whose third column is the unit normal."""
    helper = torch.where(
        (normals[:, 1:2].abs() < 0.9), torch.tensor([0.0, 1.0, 0.0]), torch.tensor([1.0, 0.0, 0.0])
    )
    t1 = torch.linalg.cross(helper, normals)
    t1 = t1 / t1.norm(dim=-1, keepdim=True)
    t2 = torch.linalg.cross(normals, t1)
    return torch.stack([t1, t2, normals], dim=-1)


def outfit_colors(points: Tensor, normals: Tensor, weights: Tensor, body: BodyModel) -> Tensor:
    """Paint the mannequin: skin, hair, shirt, trousers, shoes, eyes, lips; baked soft light. [N, 3]"""
    joints = body.rest_joints()
    dominant = weights.argmax(1)
    names = np.array(JOINT_NAMES)[dominant.numpy()]
    y, z = points[:, 1], points[:, 2]
    color = torch.tensor(SKIN).repeat(len(points), 1)

    def paint(mask: Tensor | np.ndarray, rgb: tuple[float, float, float]) -> None:
        color[torch.as_tensor(mask)] = torch.tensor(rgb)

    torso = np.isin(names, ["spine1", "spine2", "spine3", "left_collar", "right_collar"])
    sleeves = np.isin(names, ["left_shoulder", "right_shoulder"])
    legs = np.isin(names, ["pelvis", "left_hip", "right_hip", "left_knee", "right_knee"])
    paint(torso | sleeves, SHIRT)
    paint(legs, TROUSERS)
    ankle_y = float(joints[JOINT_INDEX["left_ankle"], 1])
    paint(y < ankle_y + 0.03, SHOES)
    head = joints[JOINT_INDEX["head"]]
    eye_y = float(joints[JOINT_INDEX["left_eye"], 1])
    is_head = torch.as_tensor(np.isin(names, ["head", "jaw", "left_eye", "right_eye"]))
    # Hair: the top and back of the skull, above the ears at the back.
    hair = is_head & ((y > eye_y + 0.035) | ((z < float(head[2]) - 0.02) & (y > eye_y - 0.07)))
    paint(hair, HAIR)
    paint(torch.as_tensor(np.isin(names, ["left_eye", "right_eye"])), EYES)
    # Lips from the face landmarks: an ellipse around the outer lip contour, front of the face.
    lmk = body.face_landmarks()
    x = points[:, 0]
    face_front = is_head & (z > float(lmk[:, 2].min()) - 0.01)
    lip = lmk[31:43]
    centre = lip.mean(0)
    half = (lip.max(0).values - lip.min(0).values) / 2
    inside = ((x - centre[0]) / half[0]) ** 2 + ((y - centre[1]) / (half[1] * 1.1)) ** 2 < 1
    paint(face_front & inside, LIPS)
    # Soft light from above-front plus a little deterministic fabric noise.
    light = torch.tensor([0.25, 0.75, 0.6])
    light = light / light.norm()
    shade = 0.72 + 0.28 * (normals @ light).clamp(-1, 1)
    grain = 1 + 0.04 * torch.sin(points @ torch.tensor([91.0, 137.0, 53.0]))
    return (color * (shade * grain)[:, None]).clamp(0, 1)


def build_demo_avatar(body: BodyModel, num_gaussians: int = DEMO_GAUSSIANS, seed: int = 0) -> Avatar:
    """Sample ``num_gaussians`` Gaussians on the body's rest surface (3:1 body:head), dressed.

    Positions and skinning weights are barycentric interpolations of the mesh's, so each Gaussian
    moves with the surface it sits on; the Gaussians are flat discs tangent to the surface, sized
    to the sampling density of their region (body or head).
    """
    body = body.to("cpu")
    gen = torch.Generator().manual_seed(seed)
    verts, faces = body.v_template, body.faces
    head_mask = head_face_mask(body)
    n_head = int(round(num_gaussians * HEAD_FRACTION))
    parts = []
    for face_ids, count in ((torch.nonzero(~head_mask)[:, 0], num_gaussians - n_head), (torch.nonzero(head_mask)[:, 0], n_head)):
        if count == 0:
            continue
        fidx, bary, spacing = sample_surface(verts, faces, face_ids, count, gen)
        parts.append((fidx, bary, spacing.expand(count)))
    fidx = torch.cat([p[0] for p in parts])
    bary = torch.cat([p[1] for p in parts])
    spacing = torch.cat([p[2] for p in parts])
    tri = faces[fidx]  # [N, 3]
    means = (verts[tri] * bary[..., None]).sum(1)
    weights = (body.lbs_weights[tri] * bary[..., None]).sum(1)
    weights = weights / weights.sum(1, keepdim=True)
    normals = (vertex_normals(verts, faces)[tri] * bary[..., None]).sum(1)
    normals = normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    quats = matrix_to_quat(tangent_frames(normals))
    scales = torch.stack([spacing * TANGENT_SIGMA, spacing * TANGENT_SIGMA, spacing * NORMAL_SIGMA], -1)
    colors = outfit_colors(means, normals, weights, body)
    g = Gaussians(
        means=means.float().contiguous(),
        quats=quats.float().contiguous(),
        scales=scales.float().contiguous(),
        opacities=torch.full((len(means),), OPACITY),
        colors=colors.float().contiguous(),
    )
    return Avatar(gaussians=g, skin_weights=weights.float().contiguous(), betas=torch.zeros(body.num_betas))
