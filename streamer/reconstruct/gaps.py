"""Gaussians for the parts of the person the body surface does not reach (flared sleeves, hair, hems),
and for the outline.

The offset body surface follows the outline only as far as its vertices can move along their
normals; thin or detached cloth and loose hair leave pixels of the person mask that the avatar does
not cover, which render as background. :func:`cover_gaps` puts one small camera-facing disc on each
cell of such pixels, at the depth of the nearest covered pixel, skinned like the nearest (in 3D)
seen Gaussian of the body part its region belongs to (:func:`attach`), coloured from the photo. They
then take part in the colour fit like every other Gaussian.

It can also line the mask's outermost pixels with such discs (``outline``), just in front of the
surface and skinned like the nearest Gaussian in 3D. The photo's outline pixels blend the person
with the background; fitted to them, the surface's edge-on Gaussians took that blend (white on a
white wall) and showed it as streaks down the sides of the legs and skirt from any other view.
Camera-facing discs take it instead, and from the side they are edge-on themselves.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import cKDTree

from ..avatar import Gaussians
from ..avatar.demo import tangent_frames
from ..avatar.lbs import matrix_to_quat
from ..render import Camera
from .colour import body_parts, sample_image

GAP_CELL_PX = 2  # one disc per cell of this many pixels square that holds uncovered pixels
GAP_SIGMA = 0.75  # disc std in cells (0.75 cells: neighbouring discs overlap, no holes)
GAP_THICKNESS = 0.3  # disc std along its normal, relative to its radius
MAX_GAP_GAUSSIANS = 16000
OUTLINE_LEAD_M = 0.005  # outline discs sit this far in front of the surface they line
OUTLINE_MAX_GAP_M = 0.03  # ... and none is made this far from every surface Gaussian
ATTACH_SLACK_M = 0.02  # a gap disc takes its region's part unless another part is this much nearer


def gap_cells(uncovered: np.ndarray, cell: int = GAP_CELL_PX) -> tuple[np.ndarray, np.ndarray]:
    """One position per ``cell`` x ``cell`` block with uncovered pixels: their centroid.

    Returns:
        centroids [M, 2] (pixels, centres at +0.5) and one uncovered pixel of each cell [M, 2] (x, y int).
    """
    ys, xs = np.nonzero(uncovered)
    if not len(xs):
        return np.zeros((0, 2)), np.zeros((0, 2), int)
    per_row = uncovered.shape[1] // cell + 1
    _, first, inv, count = np.unique(
        (ys // cell) * per_row + xs // cell, return_index=True, return_inverse=True, return_counts=True
    )
    cx = np.bincount(inv, xs + 0.5) / count
    cy = np.bincount(inv, ys + 0.5) / count
    return np.stack([cx, cy], 1), np.stack([xs[first], ys[first]], 1)


def attach(
    pix: np.ndarray,
    member: np.ndarray,
    uncovered: np.ndarray,
    seen_pix: np.ndarray,
    seen_parts: np.ndarray,
    disc_xyz: np.ndarray,
    seen_xyz: np.ndarray,
) -> np.ndarray:
    """For each gap disc, the seen Gaussian whose skinning it takes. [M] indices into ``seen_pix``

    Each connected region of uncovered pixels belongs to one body part: the part most of its discs
    are nearest to (in the image). Each disc then takes the nearest seen Gaussian *of that part* in
    3D: a flared sleeve hanging beside the hip moves with the arm, not partly with the hip. If another
    part lies :data:`ATTACH_SLACK_M` nearer (the disc is on the hip beside the hand of an arm hanging
    down), it takes the nearest Gaussian of any part instead. Chosen in the image alone, a disc could
    take a Gaussian far in front of it (a hand in a pocket, before the hip): it keeps that distance
    to its Gaussian in every pose, and off the photo's pose it floats.

    Args:
        pix: disc centres [M, 2]; member: one uncovered pixel of each disc's cell [M, 2] (x, y).
        uncovered: the uncovered mask pixels [H, W] bool.
        seen_pix: pixels of the seen Gaussians [S, 2]; seen_parts: their body parts [S].
        disc_xyz, seen_xyz: positions of the discs [M, 3] and of the seen Gaussians [S, 3].
    """
    labels, _ = ndimage.label(uncovered, structure=np.ones((3, 3), bool))
    region = labels[member[:, 1], member[:, 0]]
    _, nearest = cKDTree(seen_pix).query(pix)
    part = seen_parts[nearest]
    out = nearest.copy()
    for r in np.unique(region):
        discs = np.flatnonzero(region == r)
        major = np.bincount(part[discs]).argmax()
        of_part = np.flatnonzero(seen_parts == major)
        _, k = cKDTree(seen_xyz[of_part]).query(disc_xyz[discs])
        out[discs] = of_part[k]
    d_any, any_part = cKDTree(seen_xyz).query(disc_xyz)
    d_part = np.linalg.norm(seen_xyz[out] - disc_xyz, axis=1)
    return np.where(d_part > d_any + ATTACH_SLACK_M, any_part, out)


def outline_band(mask: np.ndarray, width_px: int, valid: np.ndarray | None = None) -> np.ndarray:
    """Mask pixels within ``width_px`` of the mask's edge. [H, W] bool

    Where the mask meets the photo's border (``valid`` False beyond it: a padded crop, a person cut
    off by the frame) there is no outline: pixels beyond the photo count as mask.
    """
    import cv2

    if width_px <= 0:
        return np.zeros_like(mask, dtype=bool)
    solid = mask if valid is None else mask | ~valid
    k = 2 * width_px + 1
    inner = cv2.erode(solid.astype(np.uint8), np.ones((k, k), np.uint8), borderValue=1).astype(bool)
    return mask & ~inner


def cover_gaps(
    posed: Gaussians,
    weights: torch.Tensor,
    seen: np.ndarray,
    pix_all: np.ndarray,
    depth: np.ndarray,
    mask: np.ndarray,
    rgb: np.ndarray,
    camera: Camera,
    opacity: float,
    max_new: int = MAX_GAP_GAUSSIANS,
    outline: np.ndarray | None = None,
) -> tuple[Gaussians, torch.Tensor]:
    """New Gaussians for mask pixels the avatar leaves uncovered, and optionally along the outline.

    Args:
        posed: the avatar's Gaussians in the photo's pose (world frame).
        weights: their skinning weights [N, J].
        seen: which of them the photo sees [N] bool (the new ones copy the skinning of one, :func:`attach`).
        pix_all: their pixels in the photo [N, 2] (:func:`.silhouette.project`).
        depth: the avatar's front-surface depth in the photo's camera (metres; inf where its
            rendered opacity is below 0.5, :func:`.colour.rendered_depth`) [H, W].
        mask: the person mask [H, W] bool (only pixels inside the photo).
        rgb: the photo crop [H, W, 3] uint8.
        camera: the photo's camera.
        opacity: opacity of the new Gaussians.
        max_new: at most this many: gap discs first, then evenly spaced outline discs.
        outline: also put discs on the covered pixels of this [H, W] bool image (the mask's edge,
            :func:`outline_band`), :data:`OUTLINE_LEAD_M` in front of the surface (None: none); not where
            that pixel's depth lies more than :data:`OUTLINE_MAX_GAP_M` from every surface Gaussian.

    Returns:
        the new posed Gaussians (colours from the photo) and their skinning weights [M, J];
        M = 0 when everything is covered or nothing is seen.
    """
    covered = np.isfinite(depth)
    uncovered = mask & ~covered
    pix, member = gap_cells(uncovered)
    pix, member = pix[:max_new], member[:max_new]
    band_pix, band_member = gap_cells(covered & (outline if outline is not None else False))
    room = max_new - len(pix)
    if len(band_pix) > room:
        keep = np.linspace(0, len(band_pix) - 1, room).round().astype(int) if room > 0 else []
        band_pix, band_member = band_pix[keep], band_member[keep]
    on_band = np.concatenate([np.zeros(len(pix), bool), np.ones(len(band_pix), bool)])
    pix, member = np.concatenate([pix, band_pix]), np.concatenate([member, band_member])
    if not len(pix) or not covered.any() or not seen.any():
        return posed.subset(slice(0, 0)), weights[:0]
    H, W = mask.shape
    # depth of the nearest covered pixel
    _, (iy, ix) = ndimage.distance_transform_edt(~covered, return_indices=True)
    px = np.clip(pix[:, 0].astype(int), 0, W - 1)
    py = np.clip(pix[:, 1].astype(int), 0, H - 1)
    z = depth[iy[py, px], ix[py, px]] - OUTLINE_LEAD_M * on_band
    K = camera.K.double().numpy()
    view = camera.viewmat.double().numpy()
    R, t = view[:3, :3], view[:3, 3]
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    cam = np.stack([(pix[:, 0] - cx) / fx * z, (pix[:, 1] - cy) / fy * z, z], 1)
    world = (cam - t) @ R  # R^T (x - t), row-wise
    towards = -cam / np.linalg.norm(cam, axis=1, keepdims=True)
    normals = torch.from_numpy(towards @ R).float()
    # skinning: of a Gaussian the disc lies beside in 3D; src indexes ``posed``
    src = np.zeros(len(pix), int)
    gap = ~on_band
    if gap.any():  # a gap region moves with one body part (see attach)
        seen_idx = np.flatnonzero(seen)
        seen_parts = body_parts(weights[seen_idx].argmax(1).numpy())
        seen_xyz = posed.means[torch.from_numpy(seen_idx)].double().numpy()
        chosen = attach(pix[gap], member[gap], uncovered, pix_all[seen_idx], seen_parts, world[gap], seen_xyz)
        src[gap] = seen_idx[chosen]
    keep = np.ones(len(pix), bool)
    if on_band.any():  # an outline disc moves with the surface it lines: the nearest Gaussian
        dist, nearest = cKDTree(posed.means.double().numpy()).query(world[on_band])
        src[on_band] = nearest
        # Where a hand lies before the hip, the edge pixel's depth blends the two: a disc there
        # would hang between them. The surface covers that pixel anyway.
        keep[on_band] = dist <= OUTLINE_MAX_GAP_M
    pix, world, normals, z, src = pix[keep], world[keep], normals[torch.from_numpy(keep)], z[keep], src[keep]
    new_w = weights[torch.from_numpy(src)]
    radius = GAP_SIGMA * GAP_CELL_PX * z / fx
    scales = np.stack([radius, radius, GAP_THICKNESS * radius], 1)
    extra = Gaussians(
        means=torch.from_numpy(world).float().contiguous(),
        quats=matrix_to_quat(tangent_frames(normals)).float().contiguous(),
        scales=torch.from_numpy(scales).float().contiguous(),
        opacities=torch.full((len(world),), float(opacity)),
        colors=torch.from_numpy(sample_image(rgb, pix)).float().contiguous(),
    )
    return extra, new_w.contiguous()
