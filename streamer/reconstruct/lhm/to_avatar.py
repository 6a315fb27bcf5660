"""LHM output -> our :class:`~streamer.avatar.Avatar` (canonical zero pose + skinning weights).

The network predicts Gaussians around the query points in the big pose. As LHM animates them:
inverse skinning with each point's nearest-vertex weights takes them from the big pose to the
zero pose, the subject's shape is added with the nearest vertex's shape directions, and from
then on they are an ordinary avatar: the product's LBS, renderers and streaming use them as
they use every other avatar.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...avatar import Avatar, Gaussians
from ...avatar.lbs import unskin_gaussians
from ...body.model import BodyModel
from .decoder import GaussianAttributes
from .query_points import QueryPoints, big_pose_transforms


def canonical_means_quats(
    attrs: GaussianAttributes,
    query: QueryPoints,
    body: BodyModel,
    betas: Tensor | None = None,
    index: int = 0,
    big_pose: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Zero-pose means [N, 3] and quaternions [N, 4] of batch item ``index`` (differentiable).

    Args:
        attrs: the network's output.
        query: the query points it was run on.
        body: the body model the query points were sampled on.
        betas: subject shape; added through the nearest vertices' shape directions.
        big_pose: precomputed :func:`.query_points.big_pose_transforms` (saves time per step).
    """
    A, Q = big_pose if big_pose is not None else big_pose_transforms(body)
    means_big = query.points + attrs.offsets[index].float()
    means, quats = unskin_gaussians(means_big, attrs.quats[index].float(), query.skin_weights, A, Q)
    if betas is not None:
        b = body._fit_coeffs(betas, body.num_betas, ())
        means = means + torch.einsum("l,ncl->nc", b, body.shapedirs[query.vertex])
    return means, quats


def lhm_avatar(
    attrs: GaussianAttributes,
    query: QueryPoints,
    body: BodyModel,
    betas: Tensor | None = None,
    index: int = 0,
) -> Avatar:
    """The animatable avatar of batch item ``index`` (detached, on the CPU)."""
    with torch.no_grad():
        means, quats = canonical_means_quats(attrs, query, body, betas, index)
        gaussians = Gaussians(
            means=means.float().cpu().contiguous(),
            quats=quats.float().cpu().contiguous(),
            scales=attrs.scales[index].float().cpu().contiguous(),
            opacities=attrs.opacities[index].float().cpu().contiguous(),
            colors=attrs.colors[index].float().cpu().contiguous(),
        )
        shape = torch.zeros(body.num_betas) if betas is None else betas.detach().float().cpu()
        return Avatar(gaussians=gaussians, skin_weights=query.skin_weights.float().cpu().contiguous(), betas=shape)
