"""Offline render-and-compare refinement of a tracked pose to the frame's colours.

Silhouettes and landmarks (:mod:`.track_refine`) put the limbs within a few pixels of the person,
but the avatar's texture (the jacket's folds and buttons, the face) then still sits those few
pixels off the person's own: in calm frames of the shared video that is most of the error. With the
frame at hand, :class:`PhotometricRefiner` aligns the texture directly (Lucas-Kanade on points):

* render the avatar in the current pose once, and pick Gaussians that are opaque, on the front
  surface (its rendered depth) and inside the person mask, a few pixels from its edge;
* each keeps, as its template, the colour the blurred render shows at its projection;
* move the body pose, root orientation and translation so that the blurred frame, sampled where
  the points project, shows those colours: robust (Geman-McClure) residuals with each colour
  channel's mean difference removed (exposure and shading that the avatar does not model), from a
  coarse blur to a finer one; priors hold the rotations and the depth near where they started.

The result is kept only when the whole render agrees better with the frame than the pose it
started from (mean squared colour difference over the person mask, edge included: what ``eval
animate`` scores): a fast, blurred frame whose colours mislead the points leaves the silhouette's
pose as it was. The check first compared blurred images over the mask less a 6-pixel edge, and so
also kept poses that the whole mask scores worse (``eval animate`` on the shared video: 234 of 300
frames kept, 19.95 dB; then 222, 19.97 dB).

A kept pose is aligned again from where it ended, with the templates taken afresh from its render,
up to :data:`PASSES` times while the check keeps passing: one alignment reaches only so far (its
templates are the render at its start, its steps decay, its prior holds it near its start).
``eval animate --stride 5`` on the shared video: 19.97 dB with one pass, 20.34 with three (the
calm frames gain most). 1.2-2 s a pass on two CPU cores (the whole ``--stride 5`` run: 204 -> 251 s).
"""

from __future__ import annotations

import numpy as np
import torch

from ..avatar import Avatar, Gaussians
from ..body.model import BodyModel
from ..body.pose import SmplxPose
from ..render import Camera
from .colour import DEPTH_TOL_M, rendered_depth
from .silhouette import project
from .track_refine import FreePose, PosedProjection, SkinnedPoints

NUM_POINTS = 4000  # visible Gaussians that carry the colour term
BLUR_SIGMAS_PX = (4.0, 2.0)  # coarse to fine: the wide blur first reaches a few pixels off
ITERATIONS = 60  # Adam steps per blur level
LR_ROT = 0.006  # Adam step, radians
LR_TRANSL = 0.003  # Adam step, metres
LR_DECAY = 0.95
ROBUST_SCALE = 0.01  # squared colour distance (RGB in [0, 1]) at which a residual counts half
LOSS_SCALE = 1000.0  # the colour term's weight against the priors
PRIOR_PER_RAD2 = 30.0  # scaled colour loss worth one squared radian of change (the root's 4 times)
DEPTH_PRIOR_PER_M2 = 2000.0  # ... and one squared metre of depth
INNER_MARGIN_PX = 6  # points this close to the mask's edge, where blur mixes in the background, are not
# used; a margin of 3 px or of 10 px (thin limbs lose their points) gave 0.03 / 0.13 dB less
MIN_OPACITY = 0.5
MIN_POINTS = 100
MIN_MASK_PX = 400  # fewer mask pixels: the frame shows too little of the person
PASSES = 3  # alignments in a row, each from the last pose kept (its render the next templates)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(np.ascontiguousarray(img, np.float32), (0, 0), sigma)


def _erode(mask: np.ndarray, margin: int) -> np.ndarray:
    """``mask`` less a border of ``margin`` pixels."""
    import cv2

    size = 2 * margin + 1
    return cv2.erode(mask.astype(np.uint8), np.ones((size, size), np.uint8)).astype(bool)


def agreement_error(render: np.ndarray, frame: np.ndarray, mask: np.ndarray) -> float:
    """Mean squared colour difference of ``render`` and ``frame`` ([H, W, 3], [0, 1]) over the whole
    of ``mask``, edge included: the check that keeps a refined pose, on what ``eval animate`` scores.

    Not robust, unlike the points' term: a robust measure here accepted poses that fit most of a
    fast frame a little better and the rest much worse."""
    return float(((render - frame) ** 2).sum(2)[mask].mean())


def _robust(e: torch.Tensor) -> torch.Tensor:
    """Geman-McClure of squared residuals: about ``e`` when small, saturating at 1."""
    return e / (e + ROBUST_SCALE)


def _as_image(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img, np.float32)).permute(2, 0, 1)[None]


def _sample(img: torch.Tensor, pix: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Bilinear samples [P, C] of ``img`` [1, C, H, W] at pixels [P, 2] (centres at +0.5)."""
    grid = (pix * scale - 1.0)[None, None]
    return torch.nn.functional.grid_sample(img, grid, align_corners=False, padding_mode="border")[0, :, 0].T


class PhotometricRefiner(PosedProjection):
    """Refine poses of ``avatar`` to the colours of frames seen by a fixed ``camera``.

    Args:
        body: the body model the avatar was made on.
        avatar: the avatar (its canonical Gaussians, skinning weights and betas).
        camera: the video's camera (``K`` in pixels of the frames, ``viewmat``).
        seed: sampling seed (results are deterministic for a seed).
        backend: render backend for the templates and the check.
    """

    def __init__(
        self, body: BodyModel, avatar: Avatar, camera: Camera, seed: int = 0, backend: str = "cpu"
    ) -> None:
        super().__init__(body, avatar.betas, camera)
        self.avatar = avatar
        self.camera = camera
        self.backend = backend
        self.seed = seed
        g = avatar.gaussians
        self.canon = g.means.detach().float().cpu()
        self.weights = avatar.skin_weights.detach().float().cpu()
        self.opaque = g.opacities.detach().float().cpu().numpy().reshape(-1) > MIN_OPACITY
        self.kept_last = False  # whether the last call's refined pose passed the check

    def _posed(self, pose: SmplxPose) -> Gaussians:
        posed = self.avatar.pose(self.body, pose)
        assert not isinstance(posed, list)  # one pose in, one set of Gaussians out
        return posed

    def _render(self, posed: Gaussians) -> np.ndarray:
        from .evaluate import render_np

        img, _ = render_np(posed, self.camera, backend=self.backend)
        return img

    def _visible(self, posed: Gaussians, inner: np.ndarray) -> np.ndarray:
        """Indices of opaque Gaussians on the rendered front surface whose centres fall inside ``inner``."""
        cam = posed.means.detach().float().cpu().numpy() @ self.R.numpy().T + self.t.numpy()
        ahead = cam[:, 2] > 1e-3
        pix = np.full((len(cam), 2), -1.0)
        pix[ahead] = project(cam[ahead], self.K.numpy())
        H, W = inner.shape
        x, y = np.floor(pix[:, 0]).astype(np.int64), np.floor(pix[:, 1]).astype(np.int64)
        ok = ahead & self.opaque & (x >= 0) & (x < W) & (y >= 0) & (y < H)
        depth = rendered_depth(posed, self.camera, np.where(ahead, cam[:, 2], 0.0))
        seen = np.zeros(len(cam), bool)
        seen[ok] = inner[y[ok], x[ok]] & (cam[ok, 2] <= depth[y[ok], x[ok]] + DEPTH_TOL_M)
        return np.nonzero(seen)[0]

    def refine(self, pose: SmplxPose, frame: np.ndarray, mask: np.ndarray) -> SmplxPose:
        """The pose moved so the avatar's colours line up with ``frame``'s inside ``mask``.

        Args:
            pose: the (silhouette-refined) tracked pose; hands, face, betas and expression are kept.
            frame: the video frame in the camera's pixels, [H, W, 3] uint8 RGB.
            mask: the person mask of the frame, [H, W] bool.

        Returns:
            the pose after up to :data:`PASSES` alignments, each from the last one kept; ``pose``
            itself when too little of the avatar is seen inside the mask or the first refined pose
            does not agree better with the frame (:attr:`kept_last` False).
        """
        self.kept_last = False
        mask = np.asarray(mask, bool)
        if mask.sum() < MIN_MASK_PX:
            return pose
        rgb = np.asarray(frame, np.float32) / 255.0
        inner = _erode(mask, INNER_MARGIN_PX)
        posed = self._posed(pose)
        start = self._render(posed)
        start_error = agreement_error(start, rgb, mask)
        for _ in range(PASSES):
            refined = self._align(pose, posed, start, rgb, inner)
            if refined is None:
                break
            refined_posed = self._posed(refined)
            render = self._render(refined_posed)
            error = agreement_error(render, rgb, mask)
            if error >= start_error:
                break
            pose, posed, start, start_error = refined, refined_posed, render, error
            self.kept_last = True
        return pose

    def _align(
        self, pose: SmplxPose, posed: Gaussians, start: np.ndarray, rgb: np.ndarray, inner: np.ndarray
    ) -> SmplxPose | None:
        """One alignment of the points from ``pose`` (its Gaussians ``posed`` and render ``start``) to
        the frame ``rgb`` ([H, W, 3] in [0, 1]); None when too few points are seen inside ``inner``."""
        idx = self._visible(posed, inner)
        if len(idx) < MIN_POINTS:
            return None
        gen = np.random.default_rng(self.seed)  # afresh: a frame's figures do not hang on the ones before
        idx = np.sort(gen.choice(idx, size=min(NUM_POINTS, len(idx)), replace=False))
        points = SkinnedPoints(canon=self.canon[idx], weights=self.weights[idx])
        H, W = inner.shape
        scale = torch.tensor([2.0 / W, 2.0 / H])
        free = FreePose(pose, self.betas)
        with torch.no_grad():
            pix0 = self.project(self.skin(points, free.current())[0])
        for sigma in BLUR_SIGMAS_PX:
            template = _sample(_as_image(_blur(start, sigma)), pix0, scale)
            target = _as_image(_blur(rgb, sigma))
            opt = free.optimizer(LR_ROT, LR_TRANSL, LR_DECAY)
            for _ in range(ITERATIONS):
                pix = self.project(self.skin(points, free.current())[0])
                r = _sample(target, pix, scale) - template
                r = r - r.mean(0, keepdim=True)  # exposure and shading the avatar does not model
                loss = LOSS_SCALE * _robust((r**2).sum(1)).mean()
                loss = loss + free.prior(PRIOR_PER_RAD2, DEPTH_PRIOR_PER_M2, self.R[2])
                opt.zero_grad()
                loss.backward()
                opt.step()
        return free.result()
