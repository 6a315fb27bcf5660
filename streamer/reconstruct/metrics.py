"""Image quality inside a person mask: PSNR, SSIM (Wang et al. 2004) and mask IoU.

Conventions: images are float arrays in [0, 1], [H, W, 3] (or [H, W]); masks are [H, W] bool.
"""

from __future__ import annotations

import numpy as np

#: SSIM constants of Wang et al. 2004 for a data range of 1.
SSIM_K1, SSIM_K2 = 0.01, 0.03
SSIM_SIGMA = 1.5  # Gaussian window, pixels (11 x 11 window, truncated at 3.5 sigma like scikit-image)


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio in dB over the pixels of ``mask`` (all pixels when None); inf when equal."""
    diff = (np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2
    if mask is not None:
        diff = diff[mask]
    mse = float(diff.mean()) if diff.size else 0.0
    return float("inf") if mse == 0 else float(10.0 * np.log10(1.0 / mse))


def ssim_map(a: np.ndarray, b: np.ndarray, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """Per-pixel SSIM of two images in [0, 1] with a Gaussian window, averaged over channels. [H, W]

    Local means, variances and covariance use a normalised Gaussian window of std ``sigma``
    truncated at 3.5 sigma (population, not sample, covariance); borders reflect. This is the
    setting of Wang et al. (scikit-image: ``gaussian_weights=True, use_sample_covariance=False``).
    """
    from scipy.ndimage import gaussian_filter

    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"ssim: shapes differ {a.shape} vs {b.shape}")
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    out = np.zeros(a.shape[:2])
    for ch in range(a.shape[2]):
        x, y = a[..., ch], b[..., ch]

        def f(img: np.ndarray) -> np.ndarray:
            return gaussian_filter(img, sigma, mode="reflect", truncate=3.5)

        mx, my = f(x), f(y)
        vx = f(x * x) - mx * mx
        vy = f(y * y) - my * my
        cxy = f(x * y) - mx * my
        out += ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return out / a.shape[2]


def ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean SSIM over ``mask`` (all pixels when None)."""
    m = ssim_map(a, b)
    return float(m[mask].mean() if mask is not None else m.mean())


def mask_iou(a: np.ndarray, b: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Intersection over union of two [H, W] bool masks, counted where ``valid``; 1 when both are empty."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if valid is not None:
        a, b = a & valid, b & valid
    union = int((a | b).sum())
    return 1.0 if union == 0 else float((a & b).sum() / union)


def masked_scores(
    render: np.ndarray,
    alpha: np.ndarray,
    photo: np.ndarray,
    mask: np.ndarray,
    valid: np.ndarray | None = None,
) -> dict[str, float]:
    """PSNR, SSIM inside the person mask and mask IoU, as reported by ``streamer eval``.

    Args:
        render: rendered RGB on a black background, [H, W, 3] in [0, 1].
        alpha: rendered opacity, [H, W] in [0, 1] (> 0.5 counts as covered for the IoU).
        photo: the photo, [H, W, 3] in [0, 1].
        mask: the person mask of the photo, [H, W] bool.
        valid: pixels that exist in the photo (a crop may reach past it), [H, W] bool.

    Both images are blacked out outside the mask before SSIM (so the background is equal), and
    SSIM is averaged over the mask.
    """
    m = mask if valid is None else mask & valid
    keep = m[..., None]
    a, b = np.where(keep, render, 0.0), np.where(keep, photo, 0.0)
    return {
        "psnr_db": psnr(a, b, m),
        "ssim": ssim(a, b, m) if m.any() else 1.0,
        "mask_iou": mask_iou(alpha > 0.5, mask, valid),
    }
