"""The ``fit`` method's shape fit (:mod:`streamer.reconstruct.shape`) and colour refinement."""

from __future__ import annotations

import numpy as np
import torch
from conftest import random_pose

WIDTH, HEIGHT = 600, 1000
VIEWMAT = np.diag([1.0, -1.0, -1.0, 1.0])  # the tracking camera (streamer.tracking.fit.WORLD_TO_CAMERA)
K = np.array([[1100.0, 0.0, WIDTH / 2], [0.0, 1100.0, HEIGHT / 2], [0.0, 0.0, 1.0]])


def _scene(body, betas):  # type: ignore[no-untyped-def]
    """A posed body with ``betas`` 3 m in front of the tracking camera, and its landmarks' pixels."""
    from streamer.reconstruct.shape import project
    from streamer.tracking.landmark_model import posed_points

    b = torch.zeros(10)
    b[: len(betas)] = torch.tensor(betas)
    pose = random_pose(1, scale=0.15).replace(
        global_orient=torch.zeros(3), betas=b, transl=torch.tensor([0.05, -0.2, -3.0])
    )
    pts = posed_points(body, type(pose).stack([pose]))["pose"][0]
    return pose, project(pts, K, VIEWMAT)


def test_shape_fit_recovers_known_betas_and_placement(body) -> None:  # type: ignore[no-untyped-def]
    from streamer.reconstruct.shape import fit_shape

    true_betas = [1.5, -1.0, 0.8]
    truth, px = _scene(body, true_betas)
    # Start from the mean shape, a few centimetres off in the image plane.
    start = truth.replace(betas=torch.zeros(10), transl=truth.transl + torch.tensor([0.03, -0.02, 0.0]))
    fitted = fit_shape(body, start, px, np.ones(33), K, VIEWMAT, num_betas=3, sigma_px=0.01)
    np.testing.assert_allclose(fitted.betas[:3].numpy(), true_betas, atol=0.05)
    assert float(fitted.betas[3:].abs().max()) == 0.0  # only the asked-for betas move
    np.testing.assert_allclose(fitted.transl.numpy(), truth.transl.numpy(), atol=2e-3)
    # The rotations are the fitter's: kept as they are.
    assert torch.equal(fitted.body_pose, start.body_pose)


def test_shape_fit_prior_and_missing_landmarks(body) -> None:  # type: ignore[no-untyped-def]
    from streamer.reconstruct.shape import fit_shape

    truth, px = _scene(body, [2.0])
    start = truth.replace(betas=torch.zeros(10))
    # Noisy landmarks (large sigma): the unit prior keeps the betas near the mean shape.
    loose = fit_shape(body, start, px, np.ones(33), K, VIEWMAT, num_betas=1, sigma_px=500.0)
    tight = fit_shape(body, start, px, np.ones(33), K, VIEWMAT, num_betas=1, sigma_px=0.01)
    assert abs(float(loose.betas[0])) < 0.2
    assert float(tight.betas[0]) > 1.9
    # Too few visible landmarks: the pose comes back unchanged.
    vis = np.zeros(33)
    vis[[11, 12, 23]] = 1.0
    same = fit_shape(body, start, px, vis, K, VIEWMAT, num_betas=1, sigma_px=0.01)
    assert same is start


def test_refine_colours_fits_the_photo() -> None:
    """Overlapping Gaussians blur sampled colours; the refinement brings the rendering back to the photo."""
    from streamer.avatar import Gaussians
    from streamer.reconstruct.colour import sample_image_float
    from streamer.reconstruct.fit import refine_colours
    from streamer.reconstruct.metrics import psnr
    from streamer.render import Camera, render

    W = H = 64
    cam = Camera(
        K=torch.tensor([[64.0, 0, 32], [0, 64.0, 32], [0, 0, 1]]), viewmat=torch.eye(4), width=W, height=H
    )
    g = torch.Generator().manual_seed(0)
    n = 40 * 40
    ij = (
        torch.stack(torch.meshgrid(torch.arange(40), torch.arange(40), indexing="ij"), -1)
        .reshape(-1, 2)
        .float()
    )
    xy = (ij - 19.5) * (1.2 / 64)  # a plane 1 m away, 1.2 px apart, Gaussians ~1.5 px wide: they overlap
    means = torch.cat([xy, torch.ones(n, 1)], 1)
    gs = Gaussians(
        means=means,
        quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
        scales=torch.tensor([[1.5 / 64, 1.5 / 64, 1e-3]]).repeat(n, 1),
        opacities=torch.full((n,), 0.97),
        colors=torch.zeros(n, 3),
    )
    # A photo with sharp edges: 8-pixel checks of random colours.
    checks = torch.rand(8, 8, 3, generator=g).numpy()
    photo = np.ascontiguousarray(np.repeat(np.repeat(checks, 8, 0), 8, 1), dtype=np.float32)
    pix = means[:, :2].numpy() * 64 + 32
    mask = np.zeros((H, W), bool)
    mask[12:52, 12:52] = True
    start = sample_image_float(photo, pix).astype(np.float64)  # what sampling the photo gives: blurred
    active = np.ones(n, bool)
    active[:40] = False  # one row stays as it is

    def score(c: np.ndarray) -> float:
        img, _ = render(
            gs.replace(colors=torch.from_numpy(c).float()), cam, background=(0.0, 0.0, 0.0), backend="cpu"
        )
        return psnr(img.numpy(), photo, mask)

    out, mass = refine_colours(gs, start, active, photo, mask, cam, iterations=6)
    assert np.array_equal(out[~active], start[~active])
    # each Gaussian's blending weight inside the mask: the pixels are shared out (1.2 px apart, so
    # 1.44 each on average, the nearer of two overlapping ones taking more), none outside
    inside = ((pix > 14) & (pix < 50)).all(1)
    outside = ((pix < 8) | (pix > 56)).any(1)
    assert abs(mass[inside].mean() - 1.44) < 0.1 and mass[inside].min() > 0.5, mass[inside].mean()
    assert (mass[outside] == 0).all()
    assert ((out >= 0) & (out <= 1)).all()
    # 14.3 -> 21.1 dB with the exact adjoint (the earlier blurred-residual approximation reached ~16)
    assert score(out) > score(start) + 5.0, (score(start), score(out))


def test_colours_the_photo_leaves_undecided_take_their_neighbours_mean() -> None:
    """A plane whose left half lies inside the person mask (each Gaussian ~64 pixels there) and whose
    right half does not (0 pixels): the right half's colours become the mean of themselves and their
    8 grid neighbours, the left half's barely move, and a lone Gaussian with no neighbour within the
    radius keeps its colour. The weights are the rasterizer's, as the colour fit has them."""
    from streamer.avatar import Gaussians
    from streamer.reconstruct.fit import SMOOTH_NEIGHBOURS, SMOOTH_RADIUS_M, smooth_weak_colours
    from streamer.render import Camera
    from streamer.render.cpu import CpuRenderer

    assert SMOOTH_NEIGHBOURS == 8 and 0.02 * 2**0.5 < SMOOTH_RADIUS_M < 0.04  # the grid's 8 nearest
    W = H = 200
    cam = Camera(K=torch.tensor([[400.0, 0, 100], [0, 400.0, 100], [0, 0, 1]]), viewmat=torch.eye(4), width=W, height=H)
    ij = torch.stack(torch.meshgrid(torch.arange(20), torch.arange(20), indexing="ij"), -1).reshape(-1, 2).float()
    means = torch.cat([torch.cat([(ij - 9.5) * 0.02, torch.ones(len(ij), 1)], 1), torch.tensor([[10.0, 0, 1]])])
    n = len(means)
    gs = Gaussians(
        means=means,
        quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
        scales=torch.tensor([[0.01, 0.01, 1e-3]]).repeat(n, 1),
        opacities=torch.full((n,), 0.97),
        colors=torch.zeros(n, 3),
    )
    mask = np.zeros((H, W), bool)
    mask[:, :100] = True  # x < 0: the left half of the plane
    colors = np.random.default_rng(0).random((n, 3))
    points = means.double().numpy()
    _, mass = CpuRenderer().backproject(gs, cam, np.zeros((H, W, 3), np.float32), mask.astype(np.float32))
    out = smooth_weak_colours(colors, mass, points)

    near = np.linalg.norm(points[:, None] - points[None], axis=-1) < SMOOTH_RADIUS_M  # (itself included)
    mean = near @ colors / near.sum(1, keepdims=True)
    interior = ((ij > 1) & (ij < 18)).all(1).numpy()  # away from the mask's edge and the plane's
    right = np.append(interior & (points[:-1, 0] > 0.04), False)  # (footprints reach 3 sigma, 0.03 m)
    left = np.append(interior & (points[:-1, 0] < -0.02), False)
    assert right.sum() > 40 and left.sum() > 40
    np.testing.assert_allclose(out[right], mean[right], atol=1e-9)  # unseen: the mean
    moved = np.abs(out - colors)[left].sum(1) / np.abs(mean - colors)[left].sum(1)
    assert (moved < 0.1).all(), moved.max()  # seen over ~64 pixels: 3 / 67 of the way
    np.testing.assert_array_equal(out[-1], colors[-1])  # alone: nothing to blend with


def test_refine_colours_keeps_barely_seen_colours() -> None:
    """Gaussians mostly hidden behind a layer (a blending weight of ~0.16 pixels each, against ~2
    for the layer) stay near their start colour while the layer moves to the photo: the photo
    barely decides them. Undamped, they took the full residual and moved as far as the layer."""
    from streamer.avatar import Gaussians
    from streamer.reconstruct.fit import REFINE_DAMPING, refine_colours
    from streamer.render import Camera

    assert REFINE_DAMPING > 0
    W = H = 48
    cam = Camera(K=torch.tensor([[48.0, 0, 24], [0, 48.0, 24], [0, 0, 1]]), viewmat=torch.eye(4), width=W, height=H)
    ij = torch.stack(torch.meshgrid(torch.arange(20), torch.arange(20), indexing="ij"), -1).reshape(-1, 2).float()
    xy = (ij - 9.5) * (1.5 / 48)
    n = len(xy)
    front = torch.cat([xy, torch.ones(n, 1)], 1)
    back = torch.cat([xy * 1.2, torch.full((n, 1), 1.2)], 1)  # the same pixels, behind
    gs = Gaussians(
        means=torch.cat([front, back]),
        quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(2 * n, 1),
        scales=torch.tensor([[1.0 / 48, 1.0 / 48, 1e-3]]).repeat(2 * n, 1),
        opacities=torch.cat([torch.full((n,), 0.6), torch.full((n,), 0.97)]),
        colors=torch.zeros(2 * n, 3),
    )
    photo = np.full((H, W, 3), 0.8, np.float32)
    mask = np.zeros((H, W), bool)
    mask[12:36, 12:36] = True
    start = np.full((2 * n, 3), 0.3)
    out, _ = refine_colours(gs, start, np.ones(2 * n, bool), photo, mask, cam)
    inner = (ij - 9.5).abs().max(1).values.numpy() < 6  # away from the layer's border
    moved_front = np.abs(out[:n][inner] - start[:n][inner]).mean()
    moved_back = np.abs(out[n:][inner] - start[n:][inner]).mean()
    assert moved_front > 0.4  # the front reaches the photo's 0.8 ...
    assert moved_back < 0.3 * moved_front, (moved_front, moved_back)  # ... what is behind stays near 0.3
