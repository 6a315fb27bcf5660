"""Architecture configurations of the LHM network (arXiv 2503.10625).

The released checkpoints come in three sizes that differ only in the number of Multimodal
Body-Head Transformer (MBHT) layers and query points:

=======  ==========  ============  =========================  ===============  =====================
name     MBHT layers  dim / heads   query points (body/head)   params (all)     params excl encoder.*
=======  ==========  ============  =========================  ===============  =====================
MINI     2            1024 / 16     20000 (15000 / 5000)       442,314,510      129,549,070
500M     5            1024 / 16     40000 (30000 / 10000)      668,992,782      356,227,342
1B       15           1024 / 16     40000 (30000 / 10000)      1,424,587,022    1,111,821,582
=======  ==========  ============  =========================  ===============  =====================

"params" counts the ``nn.Parameter`` tensors of the released state dict; persistent buffers
(``pcl_embed.basis``, ``renderer.smplx_model.*``) are in the state dict but are not parameters,
and the Sapiens body encoder (a separate TorchScript file) is in neither.

``tiny`` is not a released model: it keeps every structural feature (registers, four fused
DINOv2 layers, body/head split, the context-pre-only last layer) at toy sizes so the full
forward pass runs on a CPU in milliseconds. Tests use it with a stand-in body encoder.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import InputError


@dataclass(frozen=True)
class DinoV2Config:
    """The head-image encoder backbone: DINOv2 ViT with register tokens.

    Attributes:
        embed_dim: token width (ViT-L: 1024).
        depth: number of blocks (ViT-L: 24).
        num_heads: attention heads (ViT-L: 16, head dim 64).
        patch_size: pixels per patch side (14).
        pos_grid: side of the stored positional-embedding grid (37 = 518 / 14); other inputs
            interpolate it.
        num_register_tokens: extra learned tokens after the class token (4).
        mlp_ratio: MLP hidden width / embed_dim (4).
        layer_scale_init: initial LayerScale gamma (1.0 for the hub models).
        fused_layers: block indices whose (normed) outputs feed the fusion head.
        interpolate_offset: added to the target grid size when interpolating positional
            embeddings (0.0 for the register models).
        interpolate_antialias: antialiased bicubic interpolation of positional embeddings.
        input_resolution: side of the square head image the official pipeline feeds (448).
    """

    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    patch_size: int = 14
    pos_grid: int = 37
    num_register_tokens: int = 4
    mlp_ratio: float = 4.0
    layer_scale_init: float = 1.0
    fused_layers: tuple[int, ...] = (4, 11, 17, 23)
    interpolate_offset: float = 0.0
    interpolate_antialias: bool = True
    input_resolution: int = 448

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads


@dataclass(frozen=True)
class TemplateConfig:
    """Sizes of the SMPL-X template buffers stored under ``renderer.smplx_model.*``.

    The real values are those of the official SMPL-X 2020 neutral model (10,475 vertices,
    20,908 faces, 55 joints) and LHM's 192^3 skinning voxel grid (55 x 96 x 192 x 192).

    Attributes:
        n_vertices: SMPL-X template vertices.
        n_faces: SMPL-X template faces.
        n_joints: SMPL-X joints (pose blend shapes use (n_joints - 1) * 9 rows).
        n_shape: shape (beta) directions kept.
        n_expr: expression directions kept.
        voxel_grid: (D, H, W) of the voxel skinning-weight grid.
        n_landmarks: static face landmarks.
        dynamic_landmarks: (angle bins, landmarks per bin) of the dynamic contour landmarks.
        neck_chain: joints in the neck kinematic chain.
        n_extra_joints: vertex-selected extra joints (fingertips, toes, face).
    """

    n_vertices: int = 10475
    n_faces: int = 20908
    n_joints: int = 55
    n_shape: int = 10
    n_expr: int = 100
    voxel_grid: tuple[int, int, int] = (96, 192, 192)
    n_landmarks: int = 51
    dynamic_landmarks: tuple[int, int] = (79, 17)
    neck_chain: int = 5
    n_extra_joints: int = 21


@dataclass(frozen=True)
class LHMConfig:
    """One LHM architecture.

    Attributes:
        name: ``MINI``, ``500M``, ``1B`` or ``tiny``.
        transformer_layers: MBHT layers (each = one head block + one body block); the last one
            is "context pre-only" (it does not update the image context).
        dim: width of query-point tokens, transformer and Gaussian decoder (1024); also the
            point-embedding width and half the width of the global-context embedding.
        num_heads: attention heads of the MBHT (16).
        n_query_points: canonical query points; the last quarter are head points.
        body_feat_dim: channels of the body-encoder (Sapiens-1B) feature map (1536).
        body_tokens: tokens of the body-encoder feature map (64 x 64 = 4096); the image context
            is split at this index into body and head context.
        body_resolution: square side of the image the body encoder takes (1024).
        head_feat_dim: channels of the fused DINOv2 head features (1024), zero-padded to
            ``body_feat_dim`` before the context projection.
        dino: the head-encoder backbone.
        point_freqs: sinusoidal frequencies per axis of the point embedding (2^k pi, k < 8).
        gs_mlp_width: hidden width of the per-point decoder MLP (512).
        gs_mlp_hidden_layers: hidden layers of that MLP (2).
        xyz_offset_max_step: range of the predicted offsets, (sigmoid - 0.5) * step (1.0).
        clip_scaling: (start step, start value, end value, end step) of the linear schedule of
            the scale clamp; inference uses the end value.
        upper_body_scale_max: extra scale clamp for upper-body points (0.02 m).
        source_image_res: side of the body crop the official pre-processing makes.
        template: SMPL-X buffer sizes.
        eps: epsilon of the transformer's LayerNorms and QK RMSNorms.
    """

    name: str
    transformer_layers: int
    dim: int = 1024
    num_heads: int = 16
    n_query_points: int = 40000
    body_feat_dim: int = 1536
    body_tokens: int = 4096
    body_resolution: int = 1024
    head_feat_dim: int = 1024
    dino: DinoV2Config = field(default_factory=DinoV2Config)
    point_freqs: int = 8
    gs_mlp_width: int = 512
    gs_mlp_hidden_layers: int = 2
    xyz_offset_max_step: float = 1.0
    clip_scaling: tuple[float, float, float, float] = (100, 0.01, 0.05, 3000)
    upper_body_scale_max: float = 0.02
    source_image_res: int = 512
    template: TemplateConfig = field(default_factory=TemplateConfig)
    eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.transformer_layers < 1:
            raise InputError(f"LHMConfig {self.name}: transformer_layers must be >= 1")
        if self.dim % self.num_heads:
            raise InputError(f"LHMConfig {self.name}: dim {self.dim} not divisible by {self.num_heads} heads")
        if self.dino.embed_dim % self.dino.num_heads:
            raise InputError(f"LHMConfig {self.name}: DINOv2 embed_dim not divisible by its heads")
        if self.head_feat_dim > self.body_feat_dim:
            raise InputError(
                f"LHMConfig {self.name}: head_feat_dim {self.head_feat_dim} must be <= body_feat_dim "
                f"{self.body_feat_dim} (head features are zero-padded to the body width)"
            )
        if any(not 0 <= i < self.dino.depth for i in self.dino.fused_layers):
            raise InputError(f"LHMConfig {self.name}: fused_layers {self.dino.fused_layers} outside depth")
        if self.n_query_points < 4:
            raise InputError(f"LHMConfig {self.name}: need at least 4 query points")

    @property
    def head_dim(self) -> int:
        """Channels per MBHT attention head."""
        return self.dim // self.num_heads

    @property
    def n_body_points(self) -> int:
        """Query points handled as body (the first ``int(0.75 N)``)."""
        return body_split(self.n_query_points)

    @property
    def head_tokens(self) -> int:
        """Head-context tokens for a head image at the official resolution."""
        side = self.dino.input_resolution // self.dino.patch_size
        return side * side

    def scale_clip(self, step: int | None = None) -> float:
        """Scale clamp at a training step; ``None`` (inference) gives the schedule's end value."""
        start, start_value, end_value, end = self.clip_scaling
        if step is None or step > end:
            return float(end_value)
        if step < start:
            return float(start_value)
        return float(start_value + (step - start) / (end - start) * (end_value - start_value))


def body_split(n_points: int) -> int:
    """Index where head points start: ``int(0.75 * N)``, exactly as the official blocks cut."""
    return int(n_points * 0.75)


MINI = LHMConfig(name="MINI", transformer_layers=2, n_query_points=20000)
LHM_500M = LHMConfig(name="500M", transformer_layers=5, n_query_points=40000)
LHM_1B = LHMConfig(name="1B", transformer_layers=15, n_query_points=40000, source_image_res=1024)

TINY = LHMConfig(
    name="tiny",
    transformer_layers=2,
    dim=32,
    num_heads=2,
    n_query_points=64,
    body_feat_dim=48,
    body_tokens=16,
    body_resolution=64,
    head_feat_dim=40,
    dino=DinoV2Config(
        embed_dim=24,
        depth=4,
        num_heads=2,
        pos_grid=3,
        fused_layers=(0, 1, 2, 3),
        input_resolution=28,
    ),
    point_freqs=8,
    gs_mlp_width=16,
    source_image_res=64,
    template=TemplateConfig(
        n_vertices=30,
        n_faces=20,
        n_joints=55,
        n_shape=10,
        n_expr=10,
        voxel_grid=(2, 4, 4),
        n_landmarks=3,
        dynamic_landmarks=(2, 3),
        neck_chain=5,
        n_extra_joints=21,
    ),
)

#: Every known configuration, by canonical name.
CONFIGS: dict[str, LHMConfig] = {c.name: c for c in (MINI, LHM_500M, LHM_1B, TINY)}

#: The configurations of the released checkpoints.
RELEASED: tuple[str, ...] = ("MINI", "500M", "1B")


def get_config(name: str) -> LHMConfig:
    """Look a configuration up by name, case-insensitively (``mini``, ``500m``, ``1b``, ``tiny``).

    Raises:
        InputError: for an unknown name, listing the known ones.
    """
    for key, config in CONFIGS.items():
        if key.lower() == name.strip().lower():
            return config
    raise InputError(f"unknown LHM config {name!r}; known: {', '.join(CONFIGS)}")
