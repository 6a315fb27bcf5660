"""Offline refinement of tracked poses to the person's silhouette (and 2D landmarks).

The live fitter (:class:`streamer.tracking.fit.PoseFitter`) works per frame in a few milliseconds
from MediaPipe's landmarks alone; the 3D landmark directions it trusts most are rough for wide
motion, so a driven avatar drifts off the person (limbs spread too far, the body too low). Offline,
with the person mask of each frame at hand, :class:`SilhouetteRefiner` moves the body pose, root
orientation and translation so that the avatar's own outline covers the mask and stays inside it:

* **inside**: every (subsampled) avatar Gaussian centre, posed and projected, should fall inside the
  mask: squared distance to the mask (a distance transform, sampled bilinearly);
* **cover**: every (subsampled) mask pixel should have a projected Gaussian centre nearby: squared
  distance to the nearest one beyond the sampling spacing (robustly capped, so loose cloth or a
  wrong mask blob pulls only so far);
* **landmarks**: MediaPipe's 2D pose landmarks (the body points of the tracking landmark model) keep
  limbs that the silhouette cannot tell apart (an arm in front of the trunk) where the image says;
* **prior**: the refined rotations stay near the tracked ones, the depth near the tracked depth.

A turning body's outline says little about how far it has turned, and the live fitter lags behind
a fast turn: a pose that fits badly is also refined from starts turned 25 degrees either way about
the vertical, and the best fit wins (``eval animate`` on all 300 frames of the shared video: 19.92
-> 19.95 dB; its turning frames 151-250: 13.64 -> 13.76 dB).

A frame whose tracked outline and landmarks already fit (calm motion) is left as tracked: moving
the body by a pixel or two for the outline there only shifts the texture against the photo. Lining
the texture up is the job of the colours (:mod:`.photo_refine`), which ``eval animate`` runs next.

Gaussian centres of the avatar are posed with its own skinning weights and skeleton, so the
refinement fits exactly the shape that is rendered. A few dozen Adam steps per frame on the CPU
(a fraction of a second; three times that in a frame refined from the turned starts too). Occluded centres project inside the silhouette of the body in front, so
no visibility test is needed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..avatar import Avatar, Gaussians
from ..body.model import BodyModel
from ..body.pose import SmplxPose
from ..render import Camera

NUM_POINTS = 3000  # avatar Gaussian centres used for the silhouette
NUM_MASK_SAMPLES = 3000  # mask pixels sampled for the coverage term
ITERATIONS = 40
LR_ROT = 0.02  # Adam step, radians
LR_TRANSL = 0.01  # Adam step, metres
LR_DECAY = 0.95  # per step: big moves first, then settle
COVER_CAP_PX = 40.0  # a mask pixel further than this from the body pulls no harder
LANDMARK_SIGMA_PX = 30.0
LANDMARK_MIN_VISIBILITY = 0.5
PRIOR_PX2_PER_RAD2 = 30.0  # squared pixels of silhouette error worth one squared radian of change
DEPTH_PRIOR_PX2_PER_M2 = (
    2000.0  # the same for moving the body along the view axis (the size barely tells depth)
)
MIN_START_PX2 = 6.0  # a tracked pose whose outline and landmarks are off by less (squared pixels) is kept
ROOT_PRIOR_FACTOR = 4.0  # the root orientation moves less freely than the limbs
TURN_TRY_PX2 = 10.0  # a tracked pose off by more (squared pixels) is also refined from starts turned ...
TURN_TRY_DEG = 25.0  # ... this much either way about the vertical (the outline of a turning body is
# ambiguous in its turn, and the live fitter lags behind a fast one); the best fit is kept


@dataclass
class SkinnedPoints:
    """Avatar points to pose: a chosen subset of its Gaussian centres and their skinning weights."""

    canon: torch.Tensor  # [P, 3] canonical Gaussian centres
    weights: torch.Tensor  # [P, 55] skinning weights


class PosedProjection:
    """Poses chosen avatar points with a body's skeleton and projects them with a fixed camera, in
    torch (differentiable in the pose): the geometry that the offline refiners share."""

    def __init__(self, body: BodyModel, betas: torch.Tensor, camera: Camera) -> None:
        self.body = body
        self.betas = betas.detach().float().cpu()
        with torch.no_grad():
            self.rest_joints = body.rest_joints(self.betas.to(body.device)).float().cpu()
        self.K = camera.K.detach().float().cpu()
        self.R = camera.viewmat.detach().float().cpu()[:3, :3]
        self.t = camera.viewmat.detach().float().cpu()[:3, 3]

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """World points [P, 3] -> pixels [P, 2], differentiable (:func:`.silhouette.project` in torch)."""
        c = x @ self.R.T + self.t
        z = c[:, 2:3].clamp_min(1e-3)
        return (c[:, :2] / z) * torch.stack([self.K[0, 0], self.K[1, 1]]) + torch.stack(
            [self.K[0, 2], self.K[1, 2]]
        )

    def skin(self, points: SkinnedPoints, pose: SmplxPose) -> tuple[torch.Tensor, torch.Tensor]:
        """Posed points [P, 3] (world) and the pose's joint transforms [55, 4, 4]."""
        A, _ = self.body.joint_transforms(pose, rest_joints=self.rest_joints)
        A = A.float()
        Ab = (points.weights @ A[:, :3, :].reshape(-1, 12)).reshape(-1, 3, 4)
        return (Ab[:, :, :3] @ points.canon[:, :, None])[..., 0] + Ab[:, :, 3], A


class FreePose:
    """The refined part of a pose (root orientation, body joints, translation) as leaf tensors with
    gradients, the rest kept as tracked; and the prior that holds it near where it started."""

    def __init__(self, pose: SmplxPose, betas: torch.Tensor) -> None:
        self.pose = pose
        self.orient0 = pose.global_orient.detach().float().clone()
        self.body0 = pose.body_pose.detach().float().clone()
        self.transl0 = pose.transl.detach().float().clone()
        self.orient = self.orient0.clone().requires_grad_(True)
        self.body_pose = self.body0.clone().requires_grad_(True)
        self.transl = self.transl0.clone().requires_grad_(True)
        kept = ("left_hand_pose", "right_hand_pose", "jaw_pose", "leye_pose", "reye_pose", "expression")
        self.base = pose.replace(**{k: getattr(pose, k).detach().float() for k in kept}).replace(betas=betas)

    def current(self) -> SmplxPose:
        return self.base.replace(global_orient=self.orient, body_pose=self.body_pose, transl=self.transl)

    def prior(self, per_rad2: float, depth_per_m2: float, view_axis: torch.Tensor) -> torch.Tensor:
        """Weighted squared change of the rotations (the root's :data:`ROOT_PRIOR_FACTOR` times
        stiffer) and of the depth along ``view_axis`` (the outline barely tells depth)."""
        rot = ((self.body_pose - self.body0) ** 2).sum() + ROOT_PRIOR_FACTOR * (
            (self.orient - self.orient0) ** 2
        ).sum()
        return per_rad2 * rot + depth_per_m2 * ((self.transl - self.transl0) @ view_axis) ** 2

    def optimizer(self, lr_rot: float, lr_transl: float, decay: float) -> DecayingAdam:
        """Adam over the rotations (step ``lr_rot`` radians) and the translation (``lr_transl`` m)."""
        return DecayingAdam([(self.orient, lr_rot), (self.body_pose, lr_rot), (self.transl, lr_transl)], decay)

    def snapshot(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.orient.detach().clone(), self.body_pose.detach().clone(), self.transl.detach().clone()

    def result(self, values: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> SmplxPose:
        """The tracked pose with refined values (the current ones by default), in its own dtypes."""
        o, b, t = values if values is not None else self.snapshot()
        p = self.pose
        return p.replace(
            global_orient=o.to(p.global_orient.dtype),
            body_pose=b.to(p.body_pose.dtype),
            transl=t.to(p.transl.dtype),
        )


class SilhouetteRefiner(PosedProjection):
    """Refine tracked poses of ``avatar`` to per-frame person masks seen by a fixed ``camera``.

    Args:
        body: the body model the avatar was made on.
        avatar: the avatar (its canonical Gaussians, skinning weights and betas).
        camera: the video's camera (``K`` in pixels of the mask, ``viewmat``).
        iterations: Adam steps per frame.
        seed: sampling seed (results are deterministic for a seed).
    """

    def __init__(
        self, body: BodyModel, avatar: Avatar, camera: Camera, iterations: int = ITERATIONS, seed: int = 0
    ) -> None:
        from ..tracking.landmark_model import LandmarkModel

        super().__init__(body, avatar.betas, camera)
        self.iterations = iterations
        self.seed = seed
        g = avatar.gaussians
        n = len(g)
        idx = np.sort(np.random.default_rng(seed).choice(n, size=min(NUM_POINTS, n), replace=False))
        self.points = SkinnedPoints(
            canon=g.means.detach()[idx].float().cpu(), weights=avatar.skin_weights.detach()[idx].float().cpu()
        )
        lm = LandmarkModel(body, self.betas.double().numpy())
        self.lm_attach = torch.from_numpy(np.asarray(lm.pose_attach, dtype=np.int64))
        self.lm_rest = torch.from_numpy(np.asarray(lm.pose_rest, dtype=np.float32))
        self.last_start_px2: float | None = None  # the last frame's silhouette loss before refining
        self.last_fit_px2: float | None = None  # ... and after (the prior left out)

    @classmethod
    def for_body(
        cls, body: BodyModel, betas: torch.Tensor, camera: Camera, iterations: int = ITERATIONS, seed: int = 0
    ) -> SilhouetteRefiner:
        """A refiner whose outline is the body model's own surface (its vertices, skinned by its
        weights): for a photo's fit, before there is an avatar."""
        verts = body.shaped_vertices(betas.to(body.device)).detach().float().cpu().contiguous()
        n = len(verts)
        carrier = Gaussians(  # only the centres matter here
            means=verts,
            quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1),
            scales=torch.full((n, 3), 0.01),
            opacities=torch.ones(n),
            colors=torch.zeros(n, 3),
        )
        weights = body.lbs_weights.detach().float().cpu().contiguous()
        avatar = Avatar(gaussians=carrier, skin_weights=weights, betas=betas.detach().float().cpu())
        return cls(body, avatar, camera, iterations=iterations, seed=seed)

    def _pose_points(self, pose: SmplxPose) -> tuple[torch.Tensor, torch.Tensor]:
        """Posed Gaussian centres [P, 3] and pose landmark body points [33, 3] (world)."""
        x, A = self.skin(self.points, pose)
        Al = A[self.lm_attach]
        lmk = (Al[:, :3, :3] @ self.lm_rest[:, :, None])[..., 0] + Al[:, :3, 3]
        return x, lmk

    def refine(
        self,
        pose: SmplxPose,
        mask: np.ndarray,
        landmarks_px: np.ndarray | None = None,
        visibility: np.ndarray | None = None,
        valid: np.ndarray | None = None,
        min_start_px2: float = MIN_START_PX2,
        try_turns: bool = True,
    ) -> SmplxPose:
        """The pose moved to fit ``mask`` ([H, W] bool, the camera's pixels) and the landmarks.

        Args:
            pose: the tracked pose (tracking world); hands, face, betas and expression are kept.
            mask: the person mask of the frame.
            landmarks_px: MediaPipe Pose image landmarks in the mask's pixels [33, >=2], or None.
            visibility: their visibility [33].
            valid: the pixels that show the scene ([H, W] bool; None: all). Elsewhere (the padding
                of a crop beyond the photo's edge) the body may be anywhere: legs below a half-body
                photo are not pulled up into it.
            min_start_px2: keep a pose whose starting loss is below this (squared pixels).
            try_turns: also refine from turned starts (below) when the pose is far off.

        Returns:
            the refined pose; ``pose`` itself when the mask is empty or the tracked pose already
            fits (silhouette and landmark loss below :data:`MIN_START_PX2`: a few pixels of outline
            are not worth the texture shift that moving the body would bring). A pose off by more
            than :data:`TURN_TRY_PX2` is refined three times, from itself and turned by
            :data:`TURN_TRY_DEG` either way about the vertical, and the best fit is kept.
        """
        import cv2
        from scipy.spatial import cKDTree

        mask = np.asarray(mask, bool)
        unseen = np.zeros_like(mask) if valid is None else ~np.asarray(valid, bool)
        mask = mask & ~unseen
        ys, xs = np.nonzero(mask)
        self.last_start_px2 = self.last_fit_px2 = None
        if len(ys) < 50:
            return pose
        H, W = mask.shape
        dist_out = cv2.distanceTransform((~(mask | unseen)).astype(np.uint8), cv2.DIST_L2, 5).astype(np.float32)
        dist_t = torch.from_numpy(dist_out)[None, None]
        gen = np.random.default_rng(self.seed)  # afresh: a frame's result does not hang on the ones before
        pick = gen.choice(len(ys), size=min(NUM_MASK_SAMPLES, len(ys)), replace=False)
        samples = torch.from_numpy(np.stack([xs[pick], ys[pick]], 1).astype(np.float32) + 0.5)
        spacing = float(np.sqrt(len(ys) / max(len(pick), 1)))  # pixels between neighbouring samples
        lm_obs = lm_w = None
        if landmarks_px is not None and visibility is not None:
            img = np.asarray(landmarks_px, np.float64)[:, :2]
            vis = np.asarray(visibility, np.float64)
            ok = (vis >= LANDMARK_MIN_VISIBILITY) & np.isfinite(img).all(1)
            if ok.any():
                lm_obs = torch.from_numpy(np.where(ok[:, None], img, 0.0)).float()
                lm_w = torch.from_numpy(ok * vis).float()

        scale = torch.tensor([2.0 / W, 2.0 / H])

        def data_loss(current: SmplxPose) -> torch.Tensor:
            """Outline and landmark loss of a pose (squared pixels), without the prior."""
            x, lmk = self._pose_points(current)
            p = self.project(x)
            grid = (p * scale - 1.0)[None, None]  # [1, 1, P, 2] in [-1, 1]
            d_in = torch.nn.functional.grid_sample(dist_t, grid, align_corners=False, padding_mode="border")[
                0, 0, 0
            ]
            loss_in = (d_in**2).mean()
            with torch.no_grad():  # nearest projected centre per mask sample (ICP-style matching)
                nearest = torch.from_numpy(cKDTree(p.detach().numpy()).query(samples.numpy())[1])
            d_cov = (samples - p[nearest]).norm(dim=1)
            loss_cov = (torch.clamp(d_cov - spacing, min=0.0).clamp(max=COVER_CAP_PX) ** 2).mean()
            loss = loss_in + loss_cov
            if lm_obs is not None and lm_w is not None:
                r = (self.project(lmk) - lm_obs) / LANDMARK_SIGMA_PX
                loss = loss + (lm_w * (r**2).sum(1)).sum() / lm_w.sum().clamp_min(1.0) * spacing**2
            return loss

        with torch.no_grad():
            self.last_start_px2 = float(data_loss(FreePose(pose, self.betas).current()))
        if self.last_start_px2 < min_start_px2:
            self.last_fit_px2 = self.last_start_px2
            return pose  # already on the mask: small moves would only shift the texture
        starts = [pose]
        if try_turns and self.last_start_px2 > TURN_TRY_PX2:
            starts += [self._turned(pose, sign * TURN_TRY_DEG) for sign in (-1.0, 1.0)]
        results = [self._descend(start, data_loss) for start in starts]
        best, self.last_fit_px2 = min(results, key=lambda r: r[1])
        return best

    def _turned(self, pose: SmplxPose, degrees: float) -> SmplxPose:
        """``pose`` with its root turned by ``degrees`` about the camera's vertical axis (through the
        pelvis, which the root orientation turns about)."""
        from ..tracking.rotations import axis_rotation, log_rot, rodrigues

        up = -self.R[1].double().numpy()  # the camera's up (its y axis points down), world frame
        orient = pose.global_orient.detach()
        turned = axis_rotation(up, np.radians(degrees)) @ rodrigues(orient.double().cpu().numpy().reshape(3))
        rotvec = torch.as_tensor(log_rot(turned)).to(orient).reshape(orient.shape)
        return pose.replace(global_orient=rotvec)

    def _descend(
        self, pose: SmplxPose, data_loss: Callable[[SmplxPose], torch.Tensor]
    ) -> tuple[SmplxPose, float]:
        """Adam on ``data_loss`` plus the prior from ``pose``: the best pose met and its data loss."""
        free = FreePose(pose, self.betas)
        opt = free.optimizer(LR_ROT, LR_TRANSL, LR_DECAY)
        best, best_loss, best_fit = free.snapshot(), float("inf"), float("inf")
        for _ in range(self.iterations + 1):
            loss = data_loss(free.current())
            fit = float(loss.detach())
            loss = loss + free.prior(PRIOR_PX2_PER_RAD2, DEPTH_PRIOR_PX2_PER_M2, self.R[2])
            value = float(loss.detach())
            if value < best_loss:
                best_loss, best_fit = value, fit
                best = free.snapshot()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return free.result(best), best_fit


class DecayingAdam:
    """Adam (torch's defaults and update) with a learning rate that decays by ``decay`` per step.

    Written out because creating a ``torch.optim`` optimizer for the first time in a process
    imports ``torch._dynamo`` (about 2 s): this runs once per photo at the start of ``reconstruct``.
    """

    BETAS = (0.9, 0.999)
    EPS = 1e-8

    def __init__(self, params: list[tuple[torch.Tensor, float]], decay: float) -> None:
        self.params = params
        self.decay = decay
        self.t = 0
        self.m = [torch.zeros_like(p) for p, _ in params]
        self.v = [torch.zeros_like(p) for p, _ in params]

    def zero_grad(self) -> None:
        for p, _ in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        b1, b2 = self.BETAS
        self.t += 1
        c1, c2 = 1.0 - b1**self.t, 1.0 - b2**self.t
        for (p, lr), m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            m.mul_(b1).add_(p.grad, alpha=1.0 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1.0 - b2)
            rate = lr * self.decay ** (self.t - 1)
            p.addcdiv_(m, (v.sqrt() / c2**0.5).add_(self.EPS), value=-rate / c1)
