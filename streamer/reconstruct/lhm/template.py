"""SMPL-X template buffers carried in the checkpoint (``renderer.smplx_model.*``).

The released state dict stores, as persistent buffers (not parameters), everything LHM
derived from the SMPL-X model for its dense query points: per-point skinning weights, pose /
expression / shape blend directions, part masks, the voxel skinning grid, and the buffers of
the underlying ``smplx`` SMPL-X layer. They are placeholders (zeros) until a checkpoint is
loaded or the animation stage fills them; their names, shapes and dtypes are those of the
release so that a strict load accepts them.

Per-point buffers have one row per query point, in the query-point order (body first).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .config import LHMConfig

BufferSpec = tuple[tuple[int, ...], torch.dtype]

#: Part masks over the query points, all bool [N].
POINT_MASKS: tuple[str, ...] = (
    "is_rhand",
    "is_lhand",
    "is_face",
    "is_face_expr",
    "is_lower_body",
    "is_upper_body",
    "is_constrain_body",
    "is_cavity",
)


def point_buffer_specs(config: LHMConfig) -> dict[str, BufferSpec]:
    """Buffers of ``renderer.smplx_model`` itself (name -> (shape, dtype))."""
    n, t = config.n_query_points, config.template
    f32 = torch.float32
    specs: dict[str, BufferSpec] = {
        "skinning_weight": ((n, t.n_joints), f32),
        "pose_dirs": (((t.n_joints - 1) * 9, n * 3), f32),
        "expr_dirs": ((n, 3, t.n_expr), f32),
        "shape_dirs": ((n, 3, t.n_shape), f32),
    }
    specs.update({name: ((n,), torch.bool) for name in POINT_MASKS})
    specs["voxel_ws"] = ((t.n_joints, *t.voxel_grid), f32)
    specs["voxel_bbox"] = ((3, 2), f32)
    return specs


def smplx_layer_buffer_specs(config: LHMConfig) -> dict[str, BufferSpec]:
    """Buffers of ``renderer.smplx_model.smplx_layer`` (the ``smplx`` SMPL-X layer)."""
    t = config.template
    v, j = t.n_vertices, t.n_joints
    f32, i64 = torch.float32, torch.int64
    return {
        "shapedirs": ((v, 3, t.n_shape), f32),
        "faces_tensor": ((t.n_faces, 3), i64),
        "v_template": ((v, 3), f32),
        "J_regressor": ((j, v), f32),
        "posedirs": (((j - 1) * 9, v * 3), f32),
        "parents": ((j,), i64),
        "lbs_weights": ((v, j), f32),
        "left_hand_mean": ((45,), f32),
        "right_hand_mean": ((45,), f32),
        "pose_mean": ((j * 3,), f32),
        "lmk_faces_idx": ((t.n_landmarks,), i64),
        "lmk_bary_coords": ((t.n_landmarks, 3), f32),
        "dynamic_lmk_faces_idx": (t.dynamic_landmarks, i64),
        "dynamic_lmk_bary_coords": ((*t.dynamic_landmarks, 3), f32),
        "neck_kin_chain": ((t.neck_chain,), i64),
        "expr_dirs": ((v, 3, t.n_expr), f32),
    }


def template_buffer_specs(config: LHMConfig) -> dict[str, BufferSpec]:
    """Every template buffer, keyed relative to ``renderer.smplx_model.``."""
    specs = dict(point_buffer_specs(config))
    specs.update({f"smplx_layer.{k}": v for k, v in smplx_layer_buffer_specs(config).items()})
    specs["smplx_layer.vertex_joint_selector.extra_joints_idxs"] = (
        (config.template.n_extra_joints,),
        torch.int64,
    )
    return specs


class _BufferHolder(nn.Module):
    """A module that only owns zero-initialised persistent buffers."""

    def __init__(self, specs: dict[str, BufferSpec]) -> None:
        super().__init__()
        for name, (shape, dtype) in specs.items():
            self.register_buffer(name, torch.zeros(shape, dtype=dtype))


class SmplxLayerBuffers(_BufferHolder):
    """``smplx_layer.*`` buffers, with the ``vertex_joint_selector`` child."""

    def __init__(self, config: LHMConfig) -> None:
        super().__init__(smplx_layer_buffer_specs(config))
        self.vertex_joint_selector = _BufferHolder(
            {"extra_joints_idxs": ((config.template.n_extra_joints,), torch.int64)}
        )


class TemplateBuffers(_BufferHolder):
    """``renderer.smplx_model``: per-query-point SMPL-X data and the SMPL-X layer buffers.

    Attributes (all buffers): ``skinning_weight`` [N, J], ``pose_dirs`` [(J-1)*9, 3N],
    ``expr_dirs`` [N, 3, E], ``shape_dirs`` [N, 3, S], masks ``is_*`` [N] bool,
    ``voxel_ws`` [J, D, H, W], ``voxel_bbox`` [3, 2]; ``smplx_layer.*``.
    """

    skinning_weight: Tensor
    pose_dirs: Tensor
    expr_dirs: Tensor
    shape_dirs: Tensor
    is_rhand: Tensor
    is_lhand: Tensor
    is_face: Tensor
    is_face_expr: Tensor
    is_lower_body: Tensor
    is_upper_body: Tensor
    is_constrain_body: Tensor
    is_cavity: Tensor
    voxel_ws: Tensor
    voxel_bbox: Tensor

    def __init__(self, config: LHMConfig) -> None:
        super().__init__(point_buffer_specs(config))
        self.smplx_layer = SmplxLayerBuffers(config)
