"""Snapping MediaPipe's person mask to the photo's colour edges.

MediaPipe's segmentation is computed at a low resolution and upsampled, so its 0.5 contour can lie
a few pixels off the person's real edge, most often outwards where person and background are both
dark (jeans against a wooden wall). Those pixels of background then count as the person: the colour
fit gives their colour to the avatar's outline, which shows as brown or white streaks down the
sides of the legs and the body from any other view, and the evaluation scores them as the person.

:func:`snap_to_edges` re-decides only the uncertain pixels, near the mask's soft edge: a pixel
belongs to the person when its colour is nearer to the local colour of the confident person
pixels than to that of the confident background pixels (means over a window around it). Where the
two local colours are alike (a white shirt on a white wall) the colour says nothing and
MediaPipe's value stays; between, the two are blended by how distinct the colours are. An uncertain
hole inside the person (the wall seen between an arm and the body) has no confident background
pixel in its window; the background's colour comes from a wider window there.
"""

from __future__ import annotations

import numpy as np

SNAP_RADIUS_PX = 8  # half-size of the window for the local person and background colours
CONFIDENT = 0.9  # mask values above this are person, below 1 - this background, for certain
EDGE_REACH_PX = 2  # the uncertain band, widened by this many pixels each way
DISTINCT = 0.02  # squared RGB distance (in [0, 1] units) at which the local colours fully decide
WIDE_FACTOR = 8  # no confident background in the window: its colour from one this many times wider


def snap_to_edges(rgb: np.ndarray, soft: np.ndarray, radius_px: int = SNAP_RADIUS_PX) -> np.ndarray:
    """The person probability ``soft`` with its uncertain edge re-decided by colour. [H, W] float32

    Args:
        rgb: the photo, [H, W, 3] uint8.
        soft: MediaPipe's person probability, [H, W] float in [0, 1].
        radius_px: the window for the local colours (0: ``soft`` unchanged).
    """
    import cv2

    soft = np.asarray(soft, dtype=np.float32)
    if soft.shape != rgb.shape[:2]:
        raise ValueError(f"mask {soft.shape} and photo {rgb.shape[:2]} differ in size")
    if radius_px <= 0:
        return soft.copy()
    person = soft > CONFIDENT
    background = soft < 1.0 - CONFIDENT
    uncertain = ~person & ~background
    if not uncertain.any():
        return soft.copy()
    # only the window round the uncertain pixels (and their colour windows) needs work
    ys, xs = np.nonzero(uncertain)
    wide = WIDE_FACTOR * radius_px
    pad = wide + EDGE_REACH_PX + 1
    y0, y1 = max(0, ys.min() - pad), min(soft.shape[0], ys.max() + pad + 1)
    x0, x1 = max(0, xs.min() - pad), min(soft.shape[1], xs.max() + pad + 1)
    img = rgb[y0:y1, x0:x1].astype(np.float32) / 255.0

    def local_mean(weight: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
        window = (2 * radius + 1, 2 * radius + 1)
        weight = weight[y0:y1, x0:x1].astype(np.float32)
        count = cv2.boxFilter(weight, -1, window, normalize=False)
        total = cv2.boxFilter(img * weight[..., None], -1, window, normalize=False)
        return total / np.maximum(count, 1e-6)[..., None], count

    fg, fg_count = local_mean(person, radius_px)
    bg, bg_count = local_mean(background, radius_px)
    # A hole in the person (the wall between a flared sleeve and the skirt) has no confident
    # background nearby: the background's colour comes from a wider window there.
    k = 2 * EDGE_REACH_PX + 1
    near = cv2.dilate(uncertain[y0:y1, x0:x1].astype(np.uint8), np.ones((k, k), np.uint8)).astype(bool)
    far = near & (bg_count <= 0.5)
    if far.any():
        bg_wide, bg_wide_count = local_mean(background, wide)
        bg[far], bg_count[far] = bg_wide[far], bg_wide_count[far]
    d_fg = ((img - fg) ** 2).sum(-1)
    d_bg = ((img - bg) ** 2).sum(-1)
    by_colour = d_bg / (d_fg + d_bg + 1e-9)
    trust = np.clip(((fg - bg) ** 2).sum(-1) / DISTINCT, 0.0, 1.0) * (fg_count > 0.5) * (bg_count > 0.5)
    out = soft.copy()
    part = out[y0:y1, x0:x1]
    part[near] = (trust * by_colour + (1.0 - trust) * part)[near]
    return out
