"""Forward kinematics of a joint tree, batched by tree depth (few large ops instead of one per joint)."""

from __future__ import annotations

import functools
from typing import Sequence

import torch
from torch import Tensor


@functools.lru_cache(maxsize=8)
def depth_levels(parents: tuple[int, ...]) -> tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]:
    """Joints grouped by depth below the root: ((joints, their parents), ...) from depth 1 down."""
    depth = [0] * len(parents)
    for j, p in enumerate(parents):
        if p >= j and p != -1:
            raise ValueError(f"parents must be topologically ordered; joint {j} has parent {p}")
        depth[j] = 0 if p < 0 else depth[p] + 1
    levels = []
    for d in range(1, max(depth) + 1):
        joints = tuple(j for j in range(len(parents)) if depth[j] == d)
        levels.append((joints, tuple(parents[j] for j in joints)))
    return tuple(levels)


@functools.lru_cache(maxsize=16)
def level_index(parents: tuple[int, ...], device: torch.device) -> tuple[tuple[Tensor, Tensor], ...]:
    """:func:`depth_levels` as index tensors on ``device`` (cached: building them costs more than using them)."""
    with torch.inference_mode(False):  # cached tensors must stay usable by autograd later
        return tuple(
            (torch.tensor(j, dtype=torch.long, device=device), torch.tensor(p, dtype=torch.long, device=device))
            for j, p in depth_levels(parents)
        )


@functools.lru_cache(maxsize=16)
def _parent_index(parents: tuple[int, ...], device: torch.device) -> tuple[Tensor, Tensor]:
    with torch.inference_mode(False):  # cached tensors must stay usable by autograd later
        idx = torch.tensor([max(p, 0) for p in parents], dtype=torch.long, device=device)
        has_parent = torch.tensor([[float(p >= 0)] for p in parents], device=device)
    return idx, has_parent


def forward_kinematics(rot: Tensor, rest_joints: Tensor, parents: Sequence[int]) -> tuple[Tensor, Tensor]:
    """World transforms of posed joints.

    Args:
        rot: local joint rotations (relative to the parent). [..., J, 3, 3]
        rest_joints: joint centres in the rest pose, metres. [..., J, 3]
        parents: parent of each joint, root -1, topologically ordered.

    Returns:
        ``A`` [..., J, 4, 4]: skinning transforms (rest-pose point rigidly attached to joint j ->
        posed position, root at its rest place); ``joints`` [..., J, 3]: posed joint centres.
        Same maths as ``smplx.lbs.batch_rigid_transform``; differentiable.
    """
    key = tuple(int(p) for p in parents)
    # Not torch.broadcast_shapes: its first call imports sympy (0.3-0.6 s of every command's start).
    lead = torch.broadcast_tensors(rot[..., 0, 0, 0], rest_joints[..., 0, 0])[0].shape
    rot = rot.expand(lead + rot.shape[-3:])
    rest = rest_joints.expand(lead + rest_joints.shape[-2:])
    parent_idx, has_parent = _parent_index(key, rot.device)
    offsets = rest - rest[..., parent_idx, :] * has_parent.to(rest.dtype)  # root keeps its position
    local = torch.cat([rot, offsets[..., None]], dim=-1)  # [..., J, 3, 4]
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=rot.dtype, device=rot.device).expand(local.shape[:-2] + (1, 4))
    local = torch.cat([local, bottom], dim=-2)  # [..., J, 4, 4]
    world = local.clone()
    for joints, pars in level_index(key, rot.device):
        world[..., joints, :, :] = world[..., pars, :, :] @ local[..., joints, :, :]
    posed_joints = world[..., :3, 3]
    # Skinning transform: move the rest joint to the origin first: A = G @ [I, -rest].
    shift = (world[..., :3, :3] @ rest[..., :, :, None])[..., 0]
    A = torch.cat([world[..., :3, :3], (posed_joints - shift)[..., None]], dim=-1)
    A = torch.cat([A, bottom], dim=-2)
    return A, posed_joints
