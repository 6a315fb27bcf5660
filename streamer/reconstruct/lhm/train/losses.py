"""LHM's training objective, in torch (differentiable).

Photometric terms compare renders of the predicted Gaussians, posed into a target frame, with the
frame; regularisers act on the predicted attributes directly:

================  ==============================================================================
``l1``            mean absolute RGB error over the whole frame (background included)
``dssim``         ``1 - SSIM`` (Gaussian window, sigma 1.5, as :func:`streamer.reconstruct.metrics.ssim`)
``mask``          mean absolute error between the rendered alpha and the frame's person mask
``lpips``         perceptual distance; optional, needs the ``lpips`` package and its backbone
                  weights on disk (off by default: we ship no perceptual weights)
``asap``          "as spherical as possible": mean over Gaussians of the squared deviation of
                  the three scales (metres) from their mean; 0 exactly for spheres
``acap``          "as close as possible": mean of ``max(|offset| - margin, 0)``, metres; LHM's
                  margin is ``1.8 / 32 = 0.05625`` m (:data:`ACAP_MARGIN`)
================  ==============================================================================

Head shrinkage: the regularisers weigh head points (the last quarter of the query points, the
ones the MBHT's head blocks decode from the head tokens) ``head_weight`` times more than body
points, so head Gaussians stay closer to the template and rounder. This follows the per-part
weighting of LHM's "heuristic" ACAP / ASAP losses (the head is the most stable part); the paper's
exact head-token term could not be found, so this is our reading of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ...metrics import SSIM_K1, SSIM_K2, SSIM_SIGMA

#: LHM's ACAP margin: offsets up to 1.8 m / 32 from their query point are free. Metres.
ACAP_MARGIN = 1.8 / 32


def _gaussian_taps(sigma: float, truncate: float = 3.5, dtype: torch.dtype = torch.float32) -> Tensor:
    """Normalised 1-D Gaussian window with scipy's radius ``int(truncate * sigma + 0.5)``."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return (w / w.sum()).to(dtype)


def _blur(x: Tensor, taps: Tensor) -> Tensor:
    """Separable Gaussian blur of [B, C, H, W] with scipy's ``reflect`` borders (edge repeated)."""
    r = taps.numel() // 2
    c = x.shape[1]
    # scipy 'reflect' = half-sample symmetric: d c b a | a b c d | d c b a
    x = torch.cat([x[..., :, :r].flip(-1), x, x[..., :, -r:].flip(-1)], dim=-1)
    x = F.conv2d(x, taps.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = torch.cat([x[..., :r, :].flip(-2), x, x[..., -r:, :].flip(-2)], dim=-2)
    return F.conv2d(x, taps.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def ssim_map(a: Tensor, b: Tensor, sigma: float = SSIM_SIGMA) -> Tensor:
    """Per-pixel SSIM averaged over channels, differentiable. [B, C, H, W] x2 -> [B, H, W]

    The same definition as the numpy :func:`streamer.reconstruct.metrics.ssim_map` (Gaussian
    window truncated at 3.5 sigma, population covariance, reflected borders). Images need
    ``H, W > 5`` pixels.
    """
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"ssim_map: expected two [B, C, H, W] images, got {tuple(a.shape)} and {tuple(b.shape)}")
    taps = _gaussian_taps(sigma, dtype=a.dtype).to(a.device)
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    mx, my = _blur(a, taps), _blur(b, taps)
    vx = _blur(a * a, taps) - mx * mx
    vy = _blur(b * b, taps) - my * my
    cxy = _blur(a * b, taps) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean(1)


def ssim(a: Tensor, b: Tensor) -> Tensor:
    """Mean SSIM of [B, C, H, W] images in [0, 1] (scalar tensor)."""
    return ssim_map(a, b).mean()


def point_weights(n_points: int, n_body: int, head_weight: float, device: torch.device | str = "cpu") -> Tensor:
    """Per-point regulariser weights, mean 1: head points (index >= n_body) ``head_weight`` x body. [N]"""
    w = torch.ones(n_points, device=device)
    w[n_body:] = head_weight
    return w * (n_points / w.sum())


def asap_loss(scales: Tensor, weights: Tensor | None = None) -> Tensor:
    """As spherical as possible: weighted mean of ``|s - mean(s)|^2`` per Gaussian.

    Args:
        scales: linear scales, metres. [..., N, 3]
        weights: per-point weights. [N]
    """
    dev = (scales - scales.mean(-1, keepdim=True)).pow(2).sum(-1)
    return (dev * weights).mean() if weights is not None else dev.mean()


def acap_loss(offsets: Tensor, margin: float = ACAP_MARGIN, weights: Tensor | None = None) -> Tensor:
    """As close as possible: weighted mean of ``max(|offset| - margin, 0)`` (metres).

    Args:
        offsets: predicted displacements from the query points. [..., N, 3]
        margin: free distance, metres (LHM: :data:`ACAP_MARGIN`).
        weights: per-point weights. [N]
    """
    excess = (offsets.norm(dim=-1) - margin).clamp_min(0.0)
    return (excess * weights).mean() if weights is not None else excess.mean()


@dataclass(frozen=True)
class LossWeights:
    """Weights of the terms (see the module docstring); 0 switches a term off."""

    l1: float = 1.0
    dssim: float = 0.2
    mask: float = 0.5
    lpips: float = 0.0
    asap: float = 100.0
    acap: float = 1.0
    acap_margin: float = ACAP_MARGIN
    head_weight: float = 4.0


VGG16_WEIGHTS = "vgg16-397923af.pth"  # torchvision's ImageNet VGG16, which ``lpips`` builds on


def vgg16_weights_path() -> Path:
    """Where torchvision looks for the VGG16 weights (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG16_WEIGHTS


class Perceptual:
    """LPIPS through the ``lpips`` package (optional; its weights must already be on disk).

    ``lpips`` ships its own linear layers but takes the VGG16 backbone from torchvision, which
    would download it when it is not in torch's hub cache: we refuse instead, naming the file.
    """

    def __init__(self, device: torch.device) -> None:
        from ....errors import InputError

        try:
            import lpips  # type: ignore[import-not-found]
        except ImportError:
            raise InputError(
                "--lpips-weight needs the 'lpips' package and its VGG weights on disk "
                "(pip install lpips); or leave the perceptual term off (weight 0)"
            ) from None
        weights = vgg16_weights_path()
        if not weights.is_file():
            raise InputError(
                f"--lpips-weight needs torchvision's VGG16 weights at {weights} (nothing is downloaded; "
                f"copy {VGG16_WEIGHTS} there or set TORCH_HOME); or leave the perceptual term off (weight 0)"
            )
        self.net = lpips.LPIPS(net="vgg", verbose=False).to(device).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    def __call__(self, a: Tensor, b: Tensor) -> Tensor:
        """Mean LPIPS of [B, 3, H, W] images in [0, 1]."""
        out: Tensor = self.net(a * 2 - 1, b * 2 - 1)
        return out.mean()


def photometric_terms(
    rgb: Tensor, alpha: Tensor, target: Tensor, mask: Tensor, perceptual: Perceptual | None = None
) -> dict[str, Tensor]:
    """Unweighted image terms of renders against frames.

    Args:
        rgb: rendered RGB. [B, 3, H, W]
        alpha: rendered opacity. [B, H, W]
        target: frames, RGB in [0, 1] (background as rendered). [B, 3, H, W]
        mask: person masks in [0, 1]. [B, H, W]
    """
    terms = {
        "l1": (rgb - target).abs().mean(),
        "dssim": 1.0 - ssim(rgb, target),
        "mask": (alpha - mask).abs().mean(),
    }
    if perceptual is not None:
        terms["lpips"] = perceptual(rgb, target)
    return terms


def total_loss(terms: dict[str, Tensor], weights: LossWeights) -> Tensor:
    """Weighted sum of the terms present (scalar tensor)."""
    parts = [getattr(weights, k) * v for k, v in terms.items() if getattr(weights, k) != 0.0]
    return torch.stack(parts).sum()
