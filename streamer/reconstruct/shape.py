"""Body shape from one photo: the first betas and the placement from the 2D body landmarks.

The live fitter (:class:`streamer.tracking.fit.PoseFitter`) fits joint rotations for the mean
shape. With those rotations held, every landmark's body point (:func:`posed_points`) is an affine
function of the betas and the translation (rest joints and vertices are linear in the betas, and
the kinematic chain with fixed rotations is linear in the rest joints). :func:`fit_shape` builds
that affine model exactly (one posing per beta) and fits the first :data:`NUM_SHAPE_BETAS` betas
and the in-plane translation to the landmarks' pixels by damped Gauss-Newton, with a unit Gaussian
prior on the betas (the body model's shape space is whitened). The depth stays where the fitter put
it, so the first beta carries the person's apparent size at that depth.
"""

from __future__ import annotations

import numpy as np
import torch

from ..body.model import BodyModel
from ..body.pose import SmplxPose

NUM_SHAPE_BETAS = 1
#: MediaPipe Pose landmarks used: nose, ears, shoulders, elbows, wrists, hips, knees, ankles, heels, toes.
SHAPE_LANDMARKS = np.array([0, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32])
LANDMARK_SIGMA_PX = 6.0  # landmark noise per coordinate, pixels of a 1000-pixel-tall crop
CROP_REF_HEIGHT = 1000.0
MIN_VISIBILITY = 0.5
MAX_BETA = 2.5
GN_ITERATIONS = 8


def landmark_basis(
    body: BodyModel, pose: SmplxPose, num_betas: int = NUM_SHAPE_BETAS
) -> tuple[np.ndarray, np.ndarray]:
    """The affine model of the 33 pose landmarks' body points in the betas, rotations held.

    Returns base [33, 3] (points with betas zero in the first ``num_betas``, the others as in
    ``pose``) and dirs [num_betas, 33, 3] (change per unit beta), tracking world, metres.
    """
    from ..tracking.landmark_model import posed_points

    n = pose.betas.shape[-1]
    k = min(num_betas, n)
    b = pose.betas.detach().float().cpu().clone().reshape(n)
    b[:k] = 0.0
    betas = b[None].repeat(k + 1, 1)
    betas[1:, :k] += torch.eye(k)
    poses = SmplxPose.stack([pose.replace(betas=betas[i]) for i in range(k + 1)])
    pts = posed_points(body, poses)["pose"]  # [k + 1, 33, 3]
    return pts[0], pts[1:] - pts[:1]


def project(points: np.ndarray, K: np.ndarray, viewmat: np.ndarray) -> np.ndarray:
    """World points [..., 3] -> pixels [..., 2] (pinhole, OpenCV camera)."""
    from .silhouette import project as project_cam

    return project_cam(points @ viewmat[:3, :3].T + viewmat[:3, 3], K)


def fit_shape(
    body: BodyModel,
    pose: SmplxPose,
    image_px: np.ndarray,
    visibility: np.ndarray,
    K: np.ndarray,
    viewmat: np.ndarray,
    num_betas: int | None = None,
    sigma_px: float | None = None,
) -> SmplxPose:
    """Fit the first betas and the in-plane translation of ``pose`` to 2D pose landmarks.

    Args:
        body: the body model.
        pose: the fitted pose (one frame, tracking world); its rotations are kept.
        image_px: MediaPipe Pose image landmarks, pixels [33, >=2].
        visibility: their visibility [33] in [0, 1] (below :data:`MIN_VISIBILITY` is ignored).
        K, viewmat: the camera (pixels; world-to-camera [4, 4]).
        num_betas: how many leading betas to fit (the rest are kept; default :data:`NUM_SHAPE_BETAS`).
        sigma_px: landmark noise in pixels (default scaled from :data:`LANDMARK_SIGMA_PX` by the
            principal point's height); larger values trust the prior more.

    Returns:
        ``pose`` with the fitted betas and translation; ``pose`` itself when fewer than six
        landmarks are visible.
    """
    image_px = np.asarray(image_px, np.float64)[:, :2]
    vis = np.asarray(visibility, np.float64)
    idx = SHAPE_LANDMARKS[
        (vis[SHAPE_LANDMARKS] >= MIN_VISIBILITY) & np.isfinite(image_px[SHAPE_LANDMARKS]).all(1)
    ]
    if len(idx) < 6:
        return pose
    sigma = LANDMARK_SIGMA_PX * (2.0 * float(K[1, 2]) / CROP_REF_HEIGHT) if sigma_px is None else sigma_px
    base, dirs = landmark_basis(body, pose, NUM_SHAPE_BETAS if num_betas is None else num_betas)
    base, dirs = base[idx], dirs[:, idx]
    k = len(dirs)
    obs = image_px[idx]
    w = np.sqrt(vis[idx])[:, None] / sigma
    R = viewmat[:3, :3]

    def points(theta: np.ndarray) -> np.ndarray:
        shift = R.T @ np.array([theta[k], theta[k + 1], 0.0])  # in-plane camera shift, world frame
        return base + np.tensordot(theta[:k], dirs, 1) + shift

    def residual(theta: np.ndarray) -> np.ndarray:
        r = ((project(points(theta), K, viewmat) - obs) * w).ravel()
        return np.concatenate([r, theta[:k]])  # unit Gaussian prior on the betas

    theta = np.zeros(k + 2)
    r = residual(theta)
    lam = 1e-3
    for _ in range(GN_ITERATIONS):
        J = np.empty((len(r), k + 2))
        for j in range(k + 2):
            d = np.zeros(k + 2)
            d[j] = 1e-4
            J[:, j] = (residual(theta + d) - r) / 1e-4
        H = J.T @ J
        step = np.linalg.solve(H + lam * np.diag(np.diag(H) + 1e-9), -J.T @ r)
        cand = theta + step
        cand[:k] = np.clip(cand[:k], -MAX_BETA, MAX_BETA)
        rc = residual(cand)
        if rc @ rc < r @ r:
            theta, r, lam = cand, rc, lam * 0.3
        else:
            lam *= 10.0
        if np.abs(step).max() < 1e-5:
            break
    betas = pose.betas.detach().clone()
    betas[..., :k] = torch.as_tensor(theta[:k], dtype=betas.dtype)
    shift = R.T @ np.array([theta[k], theta[k + 1], 0.0])
    transl = pose.transl.detach().clone() + torch.as_tensor(shift, dtype=pose.transl.dtype)
    return pose.replace(betas=betas, transl=transl)
