"""Linear blend skinning of Gaussians: pure tensor functions, batched over frames, CPU or CUDA.

Positions move by the weight-blended 4x4 joint transform (exactly as SMPL-X moves its
vertices). Orientations turn by the *blended rotation* ``normalize(sum_j w_j q_j)``: the joint
rotations as unit quaternions, signs aligned along the kinematic tree, weight-blended and
normalised (the rotation part of dual-quaternion skinning). It equals the rotation of the
blended matrix wherever one joint dominates and stays a proper rotation where joints mix,
at a fraction of the cost of a polar decomposition. Scales are left unchanged.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from ..body.kinematics import level_index
from ..errors import InputError


def matrix_to_quat(rot: Tensor) -> Tensor:
    """Rotation matrices [..., 3, 3] -> unit quaternions wxyz [..., 4] with w >= 0."""
    m = rot.reshape(-1, 3, 3)
    m00, m11, m22 = m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]
    # Four candidate solutions; take the numerically best (largest denominator) per matrix.
    cand = torch.stack(
        [
            torch.stack([1 + m00 + m11 + m22, m[:, 2, 1] - m[:, 1, 2], m[:, 0, 2] - m[:, 2, 0], m[:, 1, 0] - m[:, 0, 1]], -1),
            torch.stack([m[:, 2, 1] - m[:, 1, 2], 1 + m00 - m11 - m22, m[:, 0, 1] + m[:, 1, 0], m[:, 0, 2] + m[:, 2, 0]], -1),
            torch.stack([m[:, 0, 2] - m[:, 2, 0], m[:, 0, 1] + m[:, 1, 0], 1 - m00 + m11 - m22, m[:, 1, 2] + m[:, 2, 1]], -1),
            torch.stack([m[:, 1, 0] - m[:, 0, 1], m[:, 0, 2] + m[:, 2, 0], m[:, 1, 2] + m[:, 2, 1], 1 - m00 - m11 + m22], -1),
        ],
        dim=1,
    )  # [M, 4 candidates, 4]
    diag = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    best = diag.argmax(-1)
    q = cand[torch.arange(m.shape[0], device=m.device), best]
    q = q / q.norm(dim=-1, keepdim=True)
    q = torch.where(q[:, :1] < 0, -q, q)
    return q.reshape(rot.shape[:-2] + (4,))


#: ``a * b = L(a) @ b`` for wxyz quaternions: row r of ``L(a)`` is ``a[_LEFT_INDEX[r]] * _LEFT_SIGN[r]``.
_LEFT_INDEX = ((0, 1, 2, 3), (1, 0, 3, 2), (2, 3, 0, 1), (3, 2, 1, 0))
_LEFT_SIGN = ((1.0, -1.0, -1.0, -1.0), (1.0, 1.0, -1.0, 1.0), (1.0, 1.0, 1.0, -1.0), (1.0, -1.0, 1.0, 1.0))


@functools.lru_cache(maxsize=16)
def _left_matrix_terms(device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    with torch.inference_mode(False):  # cached tensors must stay usable by autograd later
        return (
            torch.tensor(_LEFT_INDEX, dtype=torch.long, device=device),
            torch.tensor(_LEFT_SIGN, dtype=dtype, device=device),
        )


def quat_multiply(a: Tensor, b: Tensor, few_ops: bool | None = None) -> Tensor:
    """Hamilton product of wxyz quaternions, broadcast. [..., 4]

    ``few_ops`` (default: on a GPU) computes it as the matrix product ``L(a) @ b`` in four tensor
    ops, where the sixteen products written out are ~30, each a kernel launch in the per-frame
    skinning. Written out is 2-5x faster on a CPU (one thread, 40k-200k quaternions).
    """
    if a.is_cuda if few_ops is None else few_ops:
        index, sign = _left_matrix_terms(a.device, a.dtype)
        return (a[..., index] * sign * b[..., None, :]).sum(-1)
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        dim=-1,
    )


def _apply_blended(blended: Tensor, points: Tensor, few_ops: bool | None = None) -> Tensor:
    """Each point through its own 3x4 transform: ``blended[..., :3] @ p + blended[..., 3]``.

    Args:
        blended: per-point transforms [..., N, 3, 4].
        points: [N, 3].
        few_ops: three tensor ops (default: on a GPU, where launches bound the skinning) instead
            of seven elementwise ones (about 5x faster on a CPU).

    Returns:
        [..., N, 3]
    """
    if blended.is_cuda if few_ops is None else few_ops:
        return (blended[..., :3] * points[:, None, :]).sum(-1) + blended[..., 3]
    x, y, z = points[:, 0:1], points[:, 1:2], points[:, 2:3]
    return blended[..., 0] * x + blended[..., 1] * y + blended[..., 2] * z + blended[..., 3]


def align_quat_signs(quats: Tensor, parents: Tensor) -> Tensor:
    """Flip joint quaternions [..., J, 4] so each has a non-negative dot with its parent's.

    Neighbouring joints then blend along the short arc. ``parents`` [J] long, root -1, in
    topological order. Runs one vectorised step per tree depth.
    """
    out = quats.clone()
    for joints, pars in level_index(tuple(parents.tolist()), quats.device):
        child, parent = out[..., joints, :], out[..., pars, :]
        dot = (child * parent).sum(-1, keepdim=True)
        out[..., joints, :] = torch.where(dot < 0, -child, child)
    return out


def skin_gaussians(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4]
    weights: Tensor,  # [N, J]
    transforms: Tensor,  # [..., J, 4, 4]
    joint_quats: Tensor,  # [..., J, 4]
) -> tuple[Tensor, Tensor]:
    """Move canonical Gaussians by linear blend skinning.

    Args:
        means: canonical centres, metres. [N, 3]
        quats: canonical orientations, unit wxyz. [N, 4]
        weights: skinning weights, rows sum to 1. [N, J]
        transforms: per-joint rest->posed rigid transforms (translation included). [..., J, 4, 4]
        joint_quats: rotations of ``transforms`` as sign-aligned unit wxyz quaternions. [..., J, 4]

    Returns:
        posed means [..., N, 3] and posed unit quaternions [..., N, 4].
    """
    n, j = weights.shape
    if means.shape != (n, 3) or quats.shape != (n, 4):
        raise InputError(f"skin_gaussians: means {tuple(means.shape)} / quats {tuple(quats.shape)} vs weights ({n}, {j})")
    if transforms.shape[-3:] != (j, 4, 4) or joint_quats.shape[-2:] != (j, 4):
        raise InputError(f"skin_gaussians: transforms {tuple(transforms.shape)} do not match {j} joints")
    lead = transforms.shape[:-3]
    # Blend the top 3 rows of the joint transforms: [..., N, 12] = W [N, J] @ A [..., J, 12].
    blended = torch.matmul(weights, transforms[..., :3, :].reshape(lead + (j, 12)))
    blended = blended.reshape(lead + (n, 3, 4))
    posed = _apply_blended(blended, means)
    q = torch.matmul(weights, joint_quats)  # [..., N, 4]
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return posed, quat_multiply(q, quats)


def unskin_gaussians(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4]
    weights: Tensor,  # [N, J]
    transforms: Tensor,  # [J, 4, 4]
    joint_quats: Tensor,  # [J, 4]
) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`skin_gaussians` for one pose: posed Gaussians -> canonical ones.

    Each centre goes through the inverse of its blended transform and each orientation through
    the conjugate of its blended joint quaternion, so ``skin_gaussians`` of the result with the
    same weights and pose gives back ``means`` and ``quats``. Differentiable (reconstruction
    and LHM training un-pose predicted Gaussians with it).

    Returns:
        canonical means [N, 3] and canonical unit quaternions [N, 4].
    """
    n, j = weights.shape
    if means.shape != (n, 3) or quats.shape != (n, 4):
        raise InputError(f"unskin_gaussians: means {tuple(means.shape)} / quats {tuple(quats.shape)} vs weights ({n}, {j})")
    if transforms.shape != (j, 4, 4) or joint_quats.shape != (j, 4):
        raise InputError(f"unskin_gaussians: transforms {tuple(transforms.shape)} do not match {j} joints")
    blended = torch.matmul(weights, transforms[:, :3, :].reshape(j, 12)).reshape(n, 3, 4)
    canon = torch.linalg.solve(blended[:, :, :3], (means - blended[:, :, 3])[..., None])[..., 0]
    q = torch.matmul(weights, joint_quats)
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    conj = q * q.new_tensor([1.0, -1.0, -1.0, -1.0])
    out = quat_multiply(conj, quats)
    return canon, out / out.norm(dim=-1, keepdim=True).clamp_min(1e-12)
