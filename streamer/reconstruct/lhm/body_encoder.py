"""Body-image encoder: the user-supplied Sapiens-1B TorchScript, or a stand-in.

The Sapiens weights are not part of LHM's released state dict: the user downloads the
TorchScript archive separately and we load it with :func:`torch.jit.load`. The encoder is
frozen. Any module with the same contract can stand in for it (tests use a tiny random one):

    backbone(images [B, 3, S, S] normalised) -> feature map [B, C, h, w]  (or a 1-tuple of it)

:class:`BodyEncoder` adds what LHM does around the backbone: mean/std normalisation, bf16
autocast on CUDA, and flattening the map to row-major tokens [B, h*w, C] in float32.
Padding to a square and resizing to ``S`` (1024 for Sapiens) belong to pre-processing.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from ...errors import InputError
from .config import LHMConfig
from .errors import EncoderFormatError, EncoderNotFoundError

#: Sapiens normalisation (RGB in [0, 1]).
SAPIENS_MEAN: tuple[float, float, float] = (0.4844, 0.4570, 0.4062)
SAPIENS_STD: tuple[float, float, float] = (0.2295, 0.2236, 0.2256)

#: Where the official LHM setup keeps the TorchScript (relative to its working directory).
OFFICIAL_SAPIENS_PATH = (
    "pretrained_models/sapiens/pretrained/checkpoints/sapiens_1b/sapiens_1b_epoch_173_torchscript.pt2"
)


def load_sapiens_torchscript(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Load the Sapiens-1B TorchScript archive.

    Args:
        path: the ``sapiens_1b_epoch_173_torchscript.pt2`` file.
        map_location: device for its weights.

    Raises:
        EncoderNotFoundError: when the file does not exist (the message says what to get).
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise EncoderNotFoundError(
            f"Sapiens body encoder not found: expected a TorchScript file at {p}. "
            "LHM needs the user-supplied Sapiens-1B TorchScript "
            "(sapiens_1b_epoch_173_torchscript.pt2; the official LHM setup keeps it at "
            f"{OFFICIAL_SAPIENS_PATH}); it is not downloaded automatically."
        )
    with warnings.catch_warnings():
        # TorchScript is deprecated in recent PyTorch, but the Sapiens release only ships in it
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*torch.jit.load.*")
        try:
            module: nn.Module = torch.jit.load(str(p), map_location=map_location)  # type: ignore[no-untyped-call]
        except (RuntimeError, ValueError, OSError) as exc:  # a truncated or foreign file
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise EncoderFormatError(
                f"Sapiens body encoder {p} is not a loadable TorchScript archive ({first}); "
                "expected sapiens_1b_epoch_173_torchscript.pt2 from the Sapiens release"
            ) from None
        return module


class BodyEncoder(nn.Module):
    """Frozen body backbone -> body-context tokens.

    Args:
        backbone: Sapiens TorchScript or a stand-in (see the module docstring).
        feat_dim: channels C the backbone must produce (1536 for Sapiens-1B).
        n_tokens: tokens h*w it must produce (4096 for a 1024 input).
        resolution: square input side S it expects (1024).
        mean, std: per-channel normalisation applied to RGB in [0, 1].
    """

    mean: Tensor
    std: Tensor

    def __init__(
        self,
        backbone: nn.Module,
        feat_dim: int,
        n_tokens: int,
        resolution: int,
        mean: Sequence[float] = SAPIENS_MEAN,
        std: Sequence[float] = SAPIENS_STD,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.feat_dim = feat_dim
        self.n_tokens = n_tokens
        self.resolution = resolution
        self.register_buffer(
            "mean", torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.backbone.eval()
        for p in self.backbone.parameters():
            p.requires_grad_(False)

    @classmethod
    def for_config(cls, backbone: nn.Module, config: LHMConfig) -> BodyEncoder:
        """Wrap a backbone with the sizes a configuration expects."""
        return cls(backbone, config.body_feat_dim, config.body_tokens, config.body_resolution)

    def train(self, mode: bool = True) -> BodyEncoder:
        """The backbone is frozen: it stays in eval mode whatever ``mode`` is."""
        super().train(mode)
        self.backbone.eval()
        return self

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        """Encode body images.

        Args:
            images: square RGB in [0, 1], white padded, at the encoder resolution. [B, 3, S, S]

        Returns:
            tokens, row-major over the feature map, float32. [B, h*w, C]
        """
        s = self.resolution
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, s, s):
            raise InputError(f"BodyEncoder: expected images [B, 3, {s}, {s}], got {tuple(images.shape)}")
        x = (images.float() - self.mean) / self.std
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=x.is_cuda):
            out = self.backbone(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if not isinstance(out, Tensor) or out.ndim != 4 or out.shape[1] != self.feat_dim:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise InputError(f"BodyEncoder: backbone must return [B, {self.feat_dim}, h, w], got {shape}")
        tokens = out.flatten(2).transpose(1, 2).float()
        if tokens.shape[1] != self.n_tokens:
            raise InputError(
                f"BodyEncoder: backbone gave {tokens.shape[1]} tokens, the network expects {self.n_tokens}"
            )
        return tokens


class PatchStandInEncoder(nn.Module):
    """A random patchify convolution standing in for Sapiens (tests and smoke runs only).

    [B, 3, S, S] -> ([B, C, S/stride, S/stride],), the same return form as the TorchScript.
    """

    def __init__(self, feat_dim: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, feat_dim, kernel_size=stride, stride=stride)

    @classmethod
    def for_config(cls, config: LHMConfig) -> PatchStandInEncoder:
        """A stand-in producing exactly ``config.body_tokens`` tokens of ``config.body_feat_dim``."""
        side = int(round(config.body_tokens**0.5))
        if side * side != config.body_tokens or config.body_resolution % side:
            raise InputError(f"config {config.name}: body_tokens must be a square dividing the resolution")
        return cls(config.body_feat_dim, config.body_resolution // side)

    def forward(self, images: Tensor) -> tuple[Tensor]:
        return (self.proj(images),)
