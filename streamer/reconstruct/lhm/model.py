"""The LHM network: images + canonical query points -> per-point Gaussian attributes.

Module attributes are named so that ``LHMNetwork(config).state_dict()`` has exactly the keys,
shapes and buffer dtypes of the released ``model.safetensors``:

=====================  ====================================================================
``encoder``            head encoder: DINOv2 ViT-L/14-reg (``encoder.model``) + fusion head
``pcl_embed``          query-point embedding (``basis`` buffer, ``mlp``, ``norm``)
``transformer``        Multimodal Body-Head Transformer
``renderer``           Gaussian decoder (``mlp_net``, ``gs_net``) + SMPL-X template buffers
``motion_embed_mlp``   global body embedding: Linear(1536, 768), SiLU, Linear(768, 2 * dim)
=====================  ====================================================================

The Sapiens body encoder is *not* a submodule (it is not in the release): attach it with
:meth:`LHMNetwork.attach_body_encoder`. It still follows ``.to()`` / ``.cuda()`` of the network.

Data flow for a batch of B subjects with N query points:

1. body tokens ``[B, Tb, Cb]`` (Sapiens) and head tokens ``[B, Th, Ch]`` (DINOv2 fusion);
   the head tokens are zero-padded to Cb and appended: context ``[B, Tb + Th, Cb]``;
2. ``temb = motion_embed_mlp(mean of the body tokens)`` ``[B, 2 * dim]``;
3. ``x = pcl_embed(query points)`` ``[B, N, dim]`` -> MBHT -> ``[B, N, dim]``;
4. the decoder predicts offsets, colours, opacities, scales and rotations per point.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import InputError
from .body_encoder import BodyEncoder
from .config import LHMConfig
from .decoder import GaussianAttributes, GaussianDecoder
from .head_encoder import HeadEncoder
from .mbht import MBHTransformer
from .point_embed import PointEmbed

Precision = Literal["auto", "fp32", "bf16"]

#: State-dict prefix of the head image encoder (excluded from ``params_excluding_encoder``).
ENCODER_PREFIX = "encoder."


class LHMNetwork(nn.Module):
    """LHM (Large Animatable Human Reconstruction Model), released architecture.

    Args:
        config: sizes (see :mod:`.config`).
        body_encoder: optional body encoder (Sapiens wrapper or stand-in), see
            :meth:`attach_body_encoder`.
    """

    def __init__(self, config: LHMConfig, body_encoder: BodyEncoder | None = None) -> None:
        super().__init__()
        self.config = config
        self.encoder = HeadEncoder(config.dino, config.head_feat_dim)
        self.pcl_embed = PointEmbed(config.dim, config.point_freqs)
        self.transformer = MBHTransformer(
            config.transformer_layers, config.dim, config.num_heads, config.body_feat_dim, config.eps
        )
        self.renderer = GaussianDecoder(config)
        mid = config.body_feat_dim // 2
        self.motion_embed_mlp = nn.Sequential(
            nn.Linear(config.body_feat_dim, mid), nn.SiLU(), nn.Linear(mid, 2 * config.dim)
        )
        # held outside the module tree so it never enters state_dict() / parameters()
        self._body_encoder: list[BodyEncoder] = []
        if body_encoder is not None:
            self.attach_body_encoder(body_encoder)

    # -- body encoder ---------------------------------------------------------------------

    def attach_body_encoder(self, encoder: BodyEncoder) -> None:
        """Use ``encoder`` for body images (replaces any previous one).

        It is moved to the device of the network's parameters (unless those are on ``meta``).
        """
        if not isinstance(encoder, BodyEncoder):
            raise InputError(
                f"attach_body_encoder: expected a BodyEncoder (wrap the backbone with "
                f"BodyEncoder.for_config), got {type(encoder).__name__}"
            )
        if encoder.feat_dim != self.config.body_feat_dim or encoder.n_tokens != self.config.body_tokens:
            raise InputError(
                f"attach_body_encoder: encoder gives {encoder.n_tokens} x {encoder.feat_dim}, config "
                f"{self.config.name} needs {self.config.body_tokens} x {self.config.body_feat_dim}"
            )
        device = self.pcl_embed.mlp.weight.device
        if device.type != "meta":
            encoder = encoder.to(device)
        self._body_encoder[:] = [encoder]

    @property
    def body_encoder(self) -> BodyEncoder | None:
        """The attached body encoder, or None."""
        return self._body_encoder[0] if self._body_encoder else None

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> LHMNetwork:
        # .to() / .cuda() / .float() move the unregistered body encoder too
        super()._apply(fn, recurse)  # type: ignore[no-untyped-call]
        if self._body_encoder:
            self._body_encoder[0]._apply(fn, recurse)  # type: ignore[no-untyped-call]
        return self

    # -- stages ---------------------------------------------------------------------------

    def encode_body(self, body_images: Tensor) -> Tensor:
        """Body images [B, 3, S, S] in [0, 1] -> body tokens [B, Tb, Cb] float32 (no grad)."""
        encoder = self.body_encoder
        if encoder is None:
            raise InputError(
                "LHMNetwork has no body encoder: load the Sapiens TorchScript with "
                "load_sapiens_torchscript() and attach_body_encoder(BodyEncoder.for_config(...)), "
                "or attach a stand-in"
            )
        tokens: Tensor = encoder(body_images)
        return tokens

    def context(self, body_tokens: Tensor, head_tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Build the transformer context and the global embedding.

        Args:
            body_tokens: [B, Tb, Cb]
            head_tokens: [B, Th, Ch] with Ch <= Cb

        Returns:
            cond [B, Tb + Th, Cb] (head tokens zero-padded) and temb [B, 2 * dim].
        """
        cb = self.config.body_feat_dim
        if body_tokens.ndim != 3 or body_tokens.shape[1:] != (self.config.body_tokens, cb):
            raise InputError(
                f"LHMNetwork: expected body tokens [B, {self.config.body_tokens}, {cb}], "
                f"got {tuple(body_tokens.shape)}"
            )
        if head_tokens.ndim != 3 or head_tokens.shape[0] != body_tokens.shape[0]:
            raise InputError(f"LHMNetwork: expected head tokens [B, Th, Ch], got {tuple(head_tokens.shape)}")
        head = F.pad(head_tokens, (0, cb - head_tokens.shape[-1]))  # zeros, not learned
        cond = torch.cat([body_tokens, head.to(body_tokens.dtype)], dim=1)
        temb = self.motion_embed_mlp(body_tokens.mean(dim=1))
        return cond, temb

    def point_features(self, query_points: Tensor, cond: Tensor, temb: Tensor) -> Tensor:
        """Query points [B, N, 3] + context -> transformer features [B, N, dim]."""
        out: Tensor = self.transformer(self.pcl_embed(query_points), cond, temb, self.config.body_tokens)
        return out

    # -- full pass ------------------------------------------------------------------------

    def forward(
        self,
        body_images: Tensor,
        head_images: Tensor,
        query_points: Tensor,
        upper_body: Tensor | None = None,
        precision: Precision = "auto",
    ) -> GaussianAttributes:
        """Predict per-point Gaussian attributes.

        Args:
            body_images: square body crops, RGB in [0, 1], at ``config.body_resolution``.
                [B, 3, S, S]
            head_images: square head crops, RGB in [0, 1], side a multiple of 14
                (official: 448). [B, 3, S', S']
            query_points: canonical big-pose query points, metres, body points first (the last
                quarter are head points). [N, 3] (shared) or [B, N, 3]
            upper_body: bool upper-body mask [N]; defaults to the template buffer.
            precision: ``bf16`` (autocast of the head encoder and transformer, on any device),
                ``fp32``, or ``auto`` (bf16 on CUDA, fp32 elsewhere; the official inference ran
                them in fp32, training in bf16 mixed precision). The body encoder always runs
                in bf16 on CUDA (as officially) and the Gaussian decoder always in float32.

        Returns:
            attributes with batch B and N points.
        """
        b = body_images.shape[0]
        if head_images.shape[0] != b:
            raise InputError(f"LHMNetwork: {b} body images but {head_images.shape[0]} head images")
        if query_points.ndim == 2:
            query_points = query_points.unsqueeze(0).expand(b, -1, -1)
        if query_points.ndim != 3 or query_points.shape[0] != b or query_points.shape[-1] != 3:
            raise InputError(
                f"LHMNetwork: expected query points [N, 3] or [{b}, N, 3], got {tuple(query_points.shape)}"
            )
        if precision not in ("auto", "fp32", "bf16"):
            raise InputError(f"LHMNetwork: precision must be auto, fp32 or bf16, got {precision!r}")
        use_bf16 = precision == "bf16" or (precision == "auto" and body_images.is_cuda)

        body_tokens = self.encode_body(body_images)
        with torch.autocast(device_type=body_images.device.type, dtype=torch.bfloat16, enabled=use_bf16):
            head_tokens = self.encoder(head_images)
            cond, temb = self.context(body_tokens, head_tokens)
            features = self.point_features(query_points, cond, temb)
        out: GaussianAttributes = self.renderer(features, upper_body)
        return out

    def set_training_step(self, step: int | None) -> None:
        """Scale-clamp schedule of the decoder (``None``: inference value)."""
        self.renderer.set_training_step(step)


def build_network(config: LHMConfig, device: torch.device | str | None = None) -> LHMNetwork:
    """Build a network, e.g. on ``"meta"`` to inspect shapes and counts without memory."""
    if device is None:
        return LHMNetwork(config)
    with torch.device(device):
        return LHMNetwork(config)


def count_parameters(model: nn.Module, exclude_prefixes: tuple[str, ...] = ()) -> int:
    """Number of parameter elements (buffers excluded), skipping names with the given prefixes."""
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith(exclude_prefixes))
