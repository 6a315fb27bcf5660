"""Offsets along the surface normals that make the posed body's silhouette match the person mask.

Loose clothing, hair and skirts reach past the naked body. For every mesh vertex on the body's
image outline, we march in the image along its projected normal: first off the body's own
silhouette, then across the person mask; how far the mask reaches (or, negative, how far the body
overshoots the mask) is converted to metres at the vertex's depth. These sparse offsets are then
spread over the mesh by a few steps of diffusion on the vertex graph, with a weak pull to zero away
from the outline and a hard zero on the face and the hands.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

MAX_OUT_M = 0.25  # largest outward offset, metres
MAX_IN_M = 0.03  # largest inward offset, metres
OUTLINE_SIN = (
    0.55  # a vertex is on the outline when its normal is this far sideways (sine of the angle to the view)
)
MAX_SKIP_PX = 4  # at most this many body pixels between the vertex and the body's outline
DIFFUSION_STEPS = 60
ZERO_PULL = 0.02  # weight of the pull towards 0 for vertices without an observation


def project(points_cam: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Camera-frame points [..., 3] (OpenCV, z forward, metres) -> pixels [..., 2] (pixel centres at +0.5).

    The one pinhole projection of the reconstruction code (no distortion)."""
    z = np.maximum(points_cam[..., 2:3], 1e-6)
    return points_cam[..., :2] / z * np.array([K[0, 0], K[1, 1]]) + np.array([K[0, 2], K[1, 2]])


def sample_mask(mask: np.ndarray, pix: np.ndarray) -> np.ndarray:
    """Whether pixels [N, 2] (pixel centres at +0.5) fall inside ``mask`` [H, W] bool; outside the image: False."""
    H, W = mask.shape
    x = np.floor(pix[:, 0]).astype(int)
    y = np.floor(pix[:, 1]).astype(int)
    ok = (x >= 0) & (x < W) & (y >= 0) & (y < H)
    out = np.zeros(len(pix), bool)
    out[ok] = mask[y[ok], x[ok]]
    return out


def body_silhouette(pix: np.ndarray, faces: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Filled image of the projected mesh. pix [V, 2] pixels, faces [F, 3] -> [H, W] bool.

    Each triangle is filled on its own (~30 ms for the body's 21k): one ``cv2.fillPoly`` over all of
    them fills by the even-odd rule, and left holes wherever layers of the mesh overlap (the front
    and back of every limb and of the trunk).
    """
    import cv2

    img = np.zeros(shape, np.uint8)
    tris = np.round(pix[faces] * 4).astype(np.int32)  # 2 bits of sub-pixel precision
    for tri in tris:
        cv2.fillConvexPoly(img, tri, (1,), lineType=cv2.LINE_8, shift=2)
    return img.astype(bool)


def vertex_adjacency(faces: np.ndarray, n: int) -> sp.csr_matrix:
    """Row-normalised vertex adjacency of a triangle mesh. [n, n]"""
    i = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2], faces[:, 1], faces[:, 2], faces[:, 0]])
    j = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0], faces[:, 0], faces[:, 1], faces[:, 2]])
    A = sp.csr_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    A.data[:] = 1.0
    deg = np.asarray(A.sum(1)).ravel()
    return sp.diags(1.0 / np.maximum(deg, 1)) @ A


def outline_offsets(
    verts_cam: np.ndarray, normals_cam: np.ndarray, faces: np.ndarray, K: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Measured normal offsets of the outline vertices.

    Args:
        verts_cam: posed vertices, camera frame (OpenCV), metres. [V, 3]
        normals_cam: their unit normals, camera frame. [V, 3]
        faces: mesh triangles. [F, 3]
        K: intrinsics, pixels. [3, 3]
        mask: person mask of the image, [H, W] bool.

    Returns:
        offsets [V] metres along the normal (positive outwards) and a weight [V] in {0, 1}
        (1 where measured).
    """
    H, W = mask.shape
    pix = project(verts_cam, K)
    body = body_silhouette(pix, faces, (H, W))
    side = normals_cam[:, :2]
    sin = np.linalg.norm(side, axis=1)
    cand = np.flatnonzero(sin > OUTLINE_SIN)
    d = side[cand] / sin[cand, None]
    p = pix[cand]
    px_per_m = K[0, 0] / np.maximum(verts_cam[cand, 2], 1e-3)  # pixels per metre across the view
    max_out = MAX_OUT_M * px_per_m
    n_steps = int(np.ceil(max_out.max())) + MAX_SKIP_PX + 2

    # 1. Leave the body's own silhouette: at most MAX_SKIP_PX steps (otherwise the vertex is hidden).
    skip = np.full(len(cand), -1)
    for s in range(MAX_SKIP_PX + 1):
        out = ~sample_mask(body, p + d * (s + 0.5)) & (skip < 0)
        skip[out] = s
    ok = skip >= 0
    # 2. Walk across the person mask: outward while the mask holds; stop at another body part.
    start = p + d * (skip[:, None] + 0.5)
    run = np.zeros(len(cand))
    blocked = np.zeros(len(cand), bool)  # stopped by the body (a gap between limbs): take half
    alive = ok & sample_mask(mask, start)
    for s in range(1, n_steps):
        q = start + d * s
        hit_body = sample_mask(body, q)
        in_mask = sample_mask(mask, q)
        blocked |= alive & hit_body
        alive &= in_mask & ~hit_body & (s <= max_out)
        run[alive] = s
    run = np.where(blocked, run / 2, run)
    # 3. Where the body overshoots the mask, walk inward to the mask.
    over = ok & ~sample_mask(mask, start)
    inward = np.zeros(len(cand))
    still = over.copy()
    for s in range(1, int(np.ceil(MAX_IN_M * px_per_m.max())) + 1):
        q = start - d * s
        still &= ~sample_mask(mask, q)
        inward[still] = s
    off_px = np.where(over, -inward - 1, run)
    off_m = off_px / (px_per_m * sin[cand])
    offsets = np.zeros(len(verts_cam))
    weight = np.zeros(len(verts_cam))
    offsets[cand[ok]] = np.clip(off_m[ok], -MAX_IN_M, MAX_OUT_M)
    weight[cand[ok]] = 1.0
    return offsets, weight


def spread_offsets(
    offsets: np.ndarray, weight: np.ndarray, adjacency: sp.csr_matrix, fixed_zero: np.ndarray
) -> np.ndarray:
    """Diffuse measured offsets over the mesh. offsets, weight [V]; fixed_zero [V] bool -> [V] metres."""
    w = weight.copy()
    target = offsets.copy()
    w[fixed_zero] = 1.0
    target[fixed_zero] = 0.0
    x = target * (w > 0)
    for _ in range(DIFFUSION_STEPS):
        nb = adjacency @ x
        x = (w * target + nb) / (w + 1.0 + ZERO_PULL)
    return np.clip(x, -MAX_IN_M, MAX_OUT_M)


def cross_section_offsets(
    offsets: np.ndarray,
    measured: np.ndarray,
    rest_verts: np.ndarray,
    parts: np.ndarray,
    fixed_zero: np.ndarray,
    fraction: float = 1.0,
    bin_m: float = 0.03,
    receives: np.ndarray | None = None,
) -> np.ndarray:
    """Carry the outline's offsets round each body part's cross-section.

    One photo sees the clothing's reach only at the outline (the sides of a frontal view); loose
    cloth reaches about as far in front and behind, which shows as soon as the person turns. Per
    body part (vertices by their dominant joint), vertices are binned by their position along the
    part's main axis (rest pose, bins of ``bin_m``); every vertex of a bin with at least two measured
    outline vertices gets at least ``fraction`` times their mean outward offset.

    Args:
        offsets: spread offsets [V], metres.
        measured: which vertices were measured on the outline [V] bool.
        rest_verts: shaped rest-pose vertices [V, 3].
        parts: dominant joint per vertex [V].
        fixed_zero: vertices whose offset stays as it is (face, hands) [V] bool.
        receives: vertices that may take the carried offset [V] bool (default: all others); the
            ``fit`` method passes the ones facing away from the camera, which the photo does not
            show (their offset runs along the view, so the measured outline stays).

    Returns:
        offsets [V], never smaller than the input.
    """
    out = offsets.copy()
    if fraction <= 0:
        return out
    for part in np.unique(parts):
        ids = np.flatnonzero((parts == part) & ~fixed_zero)
        if len(ids) < 8:
            continue
        pts = rest_verts[ids]
        centred = pts - pts.mean(0)
        axis = np.linalg.svd(centred, full_matrices=False)[2][0]
        b = np.floor(centred @ axis / bin_m).astype(int)
        for k in np.unique(b):
            in_bin = b == k
            meas = in_bin & measured[ids]
            if meas.sum() < 2:
                continue
            reach = fraction * float(np.mean(np.maximum(offsets[ids[meas]], 0.0)))
            sel = ids[in_bin]
            if receives is not None:
                sel = sel[receives[sel]]
            out[sel] = np.maximum(out[sel], reach)
    return np.clip(out, -MAX_IN_M, MAX_OUT_M)
