"""Colours of the Gaussians: sampled from the photo where seen, filled plausibly where not.

Seen = facing the camera, in front in a splatted depth buffer, and inside the (eroded) person mask.
Unseen Gaussians take the inverse-distance mean of their nearest seen neighbours *of the same body
part*, so a sleeve does not borrow the torso's colour. Nearness is measured in the photo's image
plane (:func:`fill_positions`): the back of a shirt or skirt takes the colour of its front at the
same place, averaged over a few neighbours, rather than whatever seen edge is closest in 3D. On the
head it is measured in canonical 3D, and the unseen back and top take the hair colour (the commoner
of the two colours of the seen top of the head, :func:`dominant_colour`), never the face.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree

from ..avatar import Gaussians
from ..body.joints import JOINT_NAMES
from ..render import Camera

DEPTH_TOL_M = 0.04  # a Gaussian this close behind the front surface still counts as seen
MIN_FACING = -1.0  # cosine between the normal and the direction to the camera (discs show both sides: any)
NEIGHBOURS = 8
MASK_ERODE_PX = 3  # colours are sampled only this far inside the person mask
#: Body parts for filling, by the dominant skinning joint's name.
PART_KEYWORDS = (
    ("head", ("head", "jaw", "eye")),
    (
        "left_arm",
        (
            "left_shoulder",
            "left_elbow",
            "left_wrist",
            "left_index",
            "left_middle",
            "left_pinky",
            "left_ring",
            "left_thumb",
        ),
    ),
    (
        "right_arm",
        (
            "right_shoulder",
            "right_elbow",
            "right_wrist",
            "right_index",
            "right_middle",
            "right_pinky",
            "right_ring",
            "right_thumb",
        ),
    ),
    ("left_leg", ("left_knee", "left_ankle", "left_foot")),
    ("right_leg", ("right_knee", "right_ankle", "right_foot")),
)


def body_parts(dominant_joint: np.ndarray) -> np.ndarray:
    """Part id per Gaussian from its dominant joint: 0 torso (incl. hips, neck), 1 head, 2/3 arms, 4/5 lower legs. [N]"""
    part_of_joint = np.zeros(len(JOINT_NAMES), int)
    for j, name in enumerate(JOINT_NAMES):
        for k, (_, keys) in enumerate(PART_KEYWORDS):
            if any(name.startswith(key) for key in keys):
                part_of_joint[j] = k + 1
                break
    return part_of_joint[dominant_joint]


def facing_cos(points_cam: np.ndarray, normals_cam: np.ndarray) -> np.ndarray:
    """Cosine between each unit normal and the direction to the camera (camera frame). [N]"""
    view = -points_cam / np.linalg.norm(points_cam, axis=1, keepdims=True)
    return (normals_cam * view).sum(1)


def visible(
    points_cam: np.ndarray,
    normals_cam: np.ndarray,
    pix: np.ndarray,
    mask: np.ndarray,
    depth: np.ndarray,
    erode_px: int = MASK_ERODE_PX,
) -> np.ndarray:
    """Which points the camera sees: facing it, not behind the front surface, inside the eroded mask.

    Args:
        points_cam, normals_cam: positions (metres) and unit normals, camera frame (OpenCV). [N, 3]
        pix: their pixels. [N, 2]
        mask: the person mask, [H, W] bool.
        depth: depth of the front surface per pixel (metres, inf where empty), e.g. the rendered
            expected depth of the Gaussians themselves. [H, W]
        erode_px: erode the mask by this many pixels first (0: the mask as is), keeping the
            photo's background out of sampled colours.

    Returns:
        [N] bool.
    """
    import cv2

    H, W = mask.shape
    facing = facing_cos(points_cam, normals_cam) > MIN_FACING
    k = 2 * erode_px + 1
    eroded = cv2.erode(mask.astype(np.uint8), np.ones((k, k), np.uint8)).astype(bool) if erode_px else mask
    xi, yi = np.clip(pix[:, 0].astype(int), 0, W - 1), np.clip(pix[:, 1].astype(int), 0, H - 1)
    front = points_cam[:, 2] <= depth[yi, xi] + DEPTH_TOL_M
    in_image = (pix[:, 0] >= 0) & (pix[:, 0] < W) & (pix[:, 1] >= 0) & (pix[:, 1] < H)
    return facing & front & in_image & eroded[yi, xi]


def rendered_depth(posed: Gaussians, camera: Camera, z: np.ndarray) -> np.ndarray:
    """Expected depth of the front surface per pixel: the Gaussians rendered with their depth as colour.

    posed: Gaussians in the camera's world; z: their camera-frame depths [N] (metres).
    Returns [H, W] metres, inf where nothing is drawn.
    """
    from ..render import render

    lo, hi = float(z.min()), float(z.max())
    span = max(hi - lo, 1e-6)
    grey = torch.from_numpy(((z - lo) / span).astype(np.float32))[:, None].repeat(1, 3)
    img, alpha = render(posed.replace(colors=grey), camera, background=(0.0, 0.0, 0.0), backend="cpu")
    a = alpha.numpy()
    d = lo + img[..., 0].numpy() / np.maximum(a, 1e-6) * span
    return np.where(a > 0.5, d, np.inf)


def sample_image(rgb: np.ndarray, pix: np.ndarray) -> np.ndarray:
    """Bilinear colours at pixel positions (centres at +0.5). rgb [H, W, 3] uint8, pix [N, 2] -> [N, 3] in [0, 1]."""
    return sample_image_float(rgb.astype(np.float32) / 255.0, pix)


def sample_image_float(img: np.ndarray, pix: np.ndarray) -> np.ndarray:
    """Bilinear samples of a float image [H, W, 3] at pixel positions [N, 2] (centres at +0.5). [N, 3]"""
    import cv2

    n = len(pix)
    if n == 0:
        return np.zeros((0, 3), np.float32)
    img = np.ascontiguousarray(img, dtype=np.float32)
    cols = 1024  # remap's maps must be smaller than 32767 on each side: lay the points out in rows
    rows = -(-n // cols)
    grid = np.zeros((rows * cols, 2), np.float32)
    grid[:n] = pix - 0.5
    mx, my = grid[:, 0].reshape(rows, cols), grid[:, 1].reshape(rows, cols)
    out = cv2.remap(img, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(-1, 3)[:n]


def fill_positions(
    canon: np.ndarray, pix: np.ndarray, depth: np.ndarray, focal_px: float, parts: np.ndarray
) -> np.ndarray:
    """Where :func:`fill_unseen` measures nearness, metres. [N, 3]

    Head Gaussians keep their canonical positions; the others go to their pixel in the photo scaled
    to metres at their own depth (``pix * depth / focal``, z = 0), so that a Gaussian behind the
    body is nearest to the seen ones in front of it.

    Args:
        canon: canonical positions [N, 3]; pix: their pixels in the photo [N, 2];
        depth: their camera-frame depths [N] (metres); focal_px: the camera's focal length (pixels);
        parts: body part ids (:func:`body_parts`) [N].
    """
    out = np.asarray(canon, np.float64).copy()
    body = parts != 1
    plane = pix[body] * (depth[body] / focal_px)[:, None]
    out[body] = np.concatenate([plane, np.zeros((len(plane), 1))], 1)
    return out


def fill_sources(
    pix: np.ndarray,
    depth: np.ndarray,
    parts: np.ndarray,
    seen: np.ndarray,
    shape: tuple[int, int],
    blended: np.ndarray | None = None,
) -> np.ndarray:
    """Seen Gaussians whose colour may stand in for their part's unseen ones. [N] bool

    The visibility test allows some depth, so the hip just behind a hand resting on it counts as
    seen and takes the hand's colour; filled from it, the whole lower back turned skin-coloured.
    Here a seen Gaussian is left out when the front-most seen Gaussian at its pixel belongs to
    another body part, and when its pixel is one of ``blended``: the photo's outline pixels, whose
    colour mixes the person with the background (from them the wall's white reached the back of a
    skirt).

    Args:
        pix: pixels [N, 2]; depth: camera-frame depths [N]; parts: :func:`body_parts` [N];
        seen: [N] bool; shape: the photo's (H, W); blended: [H, W] bool (None: no such pixels).
    """
    H, W = shape
    ix = np.clip(pix[:, 0].astype(int), 0, W - 1)
    iy = np.clip(pix[:, 1].astype(int), 0, H - 1)
    ids = np.flatnonzero(seen)
    ids = ids[np.argsort(-depth[ids], kind="stable")]  # far first: the front-most is written last
    front = np.full((H, W), -1, int)
    front[iy[ids], ix[ids]] = parts[ids]
    sources = seen & (front[iy, ix] == parts)
    if blended is not None:
        sources &= ~blended[iy, ix]
    return sources


def fill_unseen(
    positions: np.ndarray,
    colors: np.ndarray,
    seen: np.ndarray,
    parts: np.ndarray,
    hair_region: np.ndarray,
    hair_source: np.ndarray,
) -> np.ndarray:
    """Colours for the unseen Gaussians.

    Args:
        positions: where nearness is measured, metres (canonical positions, or :func:`fill_positions`). [N, 3]
        colors: colours, valid where ``seen``. [N, 3]
        seen: [N] bool.
        parts: body part ids (:func:`body_parts`). [N]
        hair_region: head Gaussians that take the hair colour when unseen (back and top of the head). [N] bool
        hair_source: Gaussians whose :func:`dominant_colour` is the hair colour (the seen top of the
            head; taken as given, not narrowed to ``seen``: thin hair on top lies mostly in the
            outline, which the fill's sources leave out). [N] bool

    Returns:
        [N, 3] colours in [0, 1]: seen ones unchanged.
    """
    out = colors.copy()
    any_seen = seen.any()
    fallback = np.median(colors[seen], axis=0) if any_seen else np.full(3, 0.5)
    for part in np.unique(parts):
        want = np.flatnonzero((parts == part) & ~seen)
        if not len(want):
            continue
        have = np.flatnonzero((parts == part) & seen)
        if len(have) < NEIGHBOURS:  # a part never seen (legs of a half-body photo): nearest seen of
            # the body, or of the head for the head (their positions may be in different spaces)
            have = np.flatnonzero(seen & ((parts == 1) == (part == 1)))
        if len(have) < NEIGHBOURS:
            have = np.flatnonzero(seen)
        if not len(have):
            out[want] = fallback
            continue
        k = min(NEIGHBOURS, len(have))
        dist, idx = cKDTree(positions[have]).query(positions[want], k=k)
        dist, idx = dist.reshape(len(want), k), idx.reshape(len(want), k)
        wts = 1.0 / np.maximum(dist, 1e-3)
        out[want] = (colors[have][idx] * wts[..., None]).sum(1) / wts.sum(1, keepdims=True)
    hair = hair_region & ~seen
    if hair.any() and hair_source.sum() >= 5:
        out[hair] = dominant_colour(colors[hair_source])
    return out


def dominant_colour(colors: np.ndarray, iterations: int = 10) -> np.ndarray:
    """The median of the larger of two colour clusters (2-means, seeded at the darkest and the
    brightest fifth). [3]

    The seen top of the head mixes hair with the lit forehead below the hairline (or hair with a
    hat): the per-channel median of such a mixture is a colour that is in neither, such as a tan
    between black hair and a bright forehead, and on the back of the head it reads as bald skin.
    One colour that is really there, the commoner one, is the better guess for what the photo
    does not show.

    Args:
        colors: [M, 3], M >= 1.
    """
    colors = np.asarray(colors, np.float64)
    luma = colors.mean(1)
    low, high = np.percentile(luma, [20, 80])
    if high - low < 1e-6:
        return np.median(colors, axis=0)
    centres = np.stack([colors[luma <= low].mean(0), colors[luma >= high].mean(0)])
    for _ in range(iterations):
        label = np.argmin(((colors[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
        centres = np.stack([colors[label == k].mean(0) if (label == k).any() else centres[k] for k in (0, 1)])
    larger = np.argmax(np.bincount(label, minlength=2))
    return np.median(colors[label == larger], axis=0)
