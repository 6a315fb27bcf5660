"""Gap discs: person-mask pixels that the body surface does not reach get covered (.gaps)."""

from __future__ import annotations

import numpy as np
import torch

from streamer.avatar import Gaussians
from streamer.reconstruct.colour import rendered_depth
from streamer.reconstruct.gaps import GAP_CELL_PX, cover_gaps, gap_cells, outline_band
from streamer.reconstruct.silhouette import project
from streamer.render import Camera, render

W, H = 80, 60
F = 80.0


def test_gap_cells_cover_every_uncovered_pixel() -> None:
    uncovered = np.zeros((H, W), bool)
    uncovered[10:30, 7] = True  # a one-pixel line at an odd column
    uncovered[40:46, 50:61] = True  # a block
    uncovered[0, W - 1] = True  # the corner
    cells, member = gap_cells(uncovered)
    assert uncovered[member[:, 1], member[:, 0]].all()  # each cell's member pixel is one of its own
    assert (member // GAP_CELL_PX == np.floor(cells / GAP_CELL_PX).astype(int)).all()
    ys, xs = np.nonzero(uncovered)
    occupied = {(y // GAP_CELL_PX, x // GAP_CELL_PX) for y, x in zip(ys, xs)}
    assert len(cells) == len(occupied)
    # every uncovered pixel centre lies within one cell of a disc centre
    d = np.abs(np.stack([xs + 0.5, ys + 0.5], 1)[:, None] - cells[None]).max(-1).min(1)
    assert d.max() < GAP_CELL_PX
    # the line's discs sit on the line, not between cells
    line = cells[(cells[:, 1] > 10) & (cells[:, 1] < 30)]
    assert np.allclose(line[:, 0], 7.5)
    assert len(gap_cells(np.zeros((H, W), bool))[0]) == 0


def _plane(xs: np.ndarray, ys: np.ndarray, z: float, colour: float) -> Gaussians:
    """Discs on a fronto-parallel plane at depth z through the given pixels."""
    px = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2) + 0.5
    means = np.concatenate([(px - [W / 2, H / 2]) / F * z, np.full((len(px), 1), z)], 1)
    n = len(means)
    s = 1.0 / F * z
    return Gaussians(
        means=torch.from_numpy(means).float(),
        quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
        scales=torch.tensor([[s, s, 0.1 * s]]).repeat(n, 1),
        opacities=torch.full((n,), 0.97),
        colors=torch.full((n, 3), colour),
    )


def _at_depth(pix: np.ndarray, z: float) -> np.ndarray:
    """The points at depth z (metres) that :func:`_camera` sees at these pixels. [N, 3]"""
    return np.concatenate([(pix - [W / 2, H / 2]) / F * z, np.full((len(pix), 1), z)], 1)


def _camera() -> Camera:
    """A pinhole camera at the world origin looking down +z, focal F, W x H pixels."""
    return Camera(
        K=torch.tensor([[F, 0, W / 2], [0, F, H / 2], [0, 0, 1]]), viewmat=torch.eye(4), width=W, height=H
    )


def _two_parts(
    a: tuple[np.ndarray, np.ndarray, float], b: tuple[np.ndarray, np.ndarray, float], parts: tuple[int, int]
) -> tuple[Gaussians, torch.Tensor, int]:
    """Two planes of discs (columns, rows, depth), skinned fully to body parts ``parts``: Gaussians,
    weights [N, 5] and the first plane's count."""
    first, second = _plane(*a, 0.2), _plane(*b, 0.2)
    posed = Gaussians.concat([first, second])
    weights = torch.zeros(len(posed), 5)
    weights[: len(first), parts[0]] = 1.0
    weights[len(first) :, parts[1]] = 1.0
    return posed, weights, len(first)


def test_cover_gaps_fills_the_mask_at_the_nearest_depth() -> None:
    camera = _camera()
    # Two body parts: a left one at 2 m, a right one at 3 m; the person mask reaches further out.
    posed, weights, _ = _two_parts(
        (np.arange(10, 30), np.arange(10, 50), 2.0), (np.arange(50, 70), np.arange(10, 50), 3.0), (1, 3)
    )
    mask = np.zeros((H, W), bool)
    mask[5:55, 4:36] = True  # 6 px past the left part on every side
    mask[5:55, 44:76] = True
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 0] = 200

    z_cam = posed.means[:, 2].double().numpy()
    depth = rendered_depth(posed, camera, z_cam)
    _, alpha = render(posed, camera, background=(0.0, 0.0, 0.0), backend="cpu")
    before = float((mask & (alpha.numpy() < 0.5)).mean())
    assert before > 0.1

    K = camera.K.double().numpy()
    pix = project(posed.means.double().numpy(), K)  # the camera sits at the world origin
    extra, extra_w = cover_gaps(
        posed, weights, np.ones(len(posed), bool), pix, depth, mask, rgb, camera, 0.97
    )
    assert len(extra) == len(extra_w) > 0
    union = Gaussians.concat([posed, extra])
    _, alpha2 = render(union, camera, background=(0.0, 0.0, 0.0), backend="cpu")
    assert float((mask & (alpha2.numpy() < 0.5)).mean()) < 0.1 * before
    # Each disc sits at the depth of the part beside it and is skinned like that part.
    on_left = extra.means[:, 0] < 0
    assert torch.allclose(extra.means[on_left, 2], torch.tensor(2.0))
    assert torch.allclose(extra.means[~on_left, 2], torch.tensor(3.0))
    assert bool((extra_w[on_left, 1] == 1).all()) and bool((extra_w[~on_left, 3] == 1).all())
    # Colours come from the photo, and the discs face the camera (normal = local z along -view).
    torch.testing.assert_close(extra.colors, torch.tensor([[200 / 255, 0.0, 0.0]]).expand(len(extra), 3))
    from streamer.render._reference import quat_to_rotmat

    normals = quat_to_rotmat(extra.quats)[:, :, 2]
    view = extra.means / extra.means.norm(dim=-1, keepdim=True)
    assert bool(((normals * view).sum(-1) < -0.9).all())
    # A mask the avatar already covers: nothing is added.
    covered = np.isfinite(depth)
    none, none_w = cover_gaps(
        posed, weights, np.ones(len(posed), bool), pix, depth, covered, rgb, camera, 0.97
    )
    assert len(none) == 0 and none_w.shape == (0, 5)


def test_a_gap_region_moves_with_one_body_part() -> None:
    """A flared sleeve beside the hip: its discs are nearer the hip at one end and the hand at the
    other, but the region belongs to the part most of them are nearest to (the arm), and every disc
    takes a Gaussian of that part."""
    from streamer.reconstruct.gaps import attach

    uncovered = np.zeros((H, W), bool)
    uncovered[20:40, 30:34] = True  # one region, 4 px wide, 20 tall
    uncovered[5:8, 70:73] = True  # another, far away
    pix, member = gap_cells(uncovered)
    # seen Gaussians: a hand column right of the sleeve (x = 36) from y = 20 to 40, a hip point left
    # of the sleeve's lower end (x = 28, y = 38), a head point near the second region; everything at
    # 0.5 m (6 mm per pixel), so the hip is never ATTACH_SLACK_M nearer than the hand
    seen_pix = np.array([[36.0, y] for y in range(20, 41, 2)] + [[28.0, 38.0], [75.0, 6.0]])
    seen_parts = np.array([2] * 11 + [0, 1])
    chosen = attach(
        pix, member, uncovered, seen_pix, seen_parts, _at_depth(pix, 0.5), _at_depth(seen_pix, 0.5)
    )
    sleeve = pix[:, 0] < 50
    assert (seen_parts[chosen[sleeve]] == 2).all()  # the hip point was nearest to some of them
    from scipy.spatial import cKDTree

    assert (seen_parts[cKDTree(seen_pix).query(pix[sleeve])[1]] == 0).any()
    assert (seen_parts[chosen[~sleeve]] == 1).all()


def test_outline_discs_line_the_mask_edge_in_front_of_their_own_part() -> None:
    """outline: camera-facing discs on the mask's outermost pixels, just in front of the surface,
    each skinned like the nearest seen Gaussian (an arm's outline moves with the arm, even where the
    ring of outline pixels also runs along the body)."""
    from streamer.reconstruct.gaps import OUTLINE_LEAD_M

    camera = _camera()
    # A body (part 0) and an arm (part 2) touching it, both at 2 m; the mask is exactly their union.
    posed, weights, _ = _two_parts(
        (np.arange(20, 40), np.arange(10, 50), 2.0), (np.arange(40, 48), np.arange(10, 30), 2.0), (0, 2)
    )
    z_cam = posed.means[:, 2].double().numpy()
    depth = rendered_depth(posed, camera, z_cam)
    mask = np.isfinite(depth)
    rgb = np.full((H, W, 3), 90, np.uint8)
    pix = project(posed.means.double().numpy(), camera.K.double().numpy())
    seen = np.ones(len(posed), bool)

    none, _ = cover_gaps(posed, weights, seen, pix, depth, mask, rgb, camera, 0.97)
    assert len(none) == 0  # covered everywhere: no gap discs, and no outline without ``outline``
    extra, extra_w = cover_gaps(
        posed, weights, seen, pix, depth, mask, rgb, camera, 0.97, outline=outline_band(mask, 3)
    )
    assert len(extra) > 0
    disc_pix = project(extra.means.double().numpy(), camera.K.double().numpy())
    # on the mask, within 3 px (plus half a cell) of its edge, and never deep inside
    from scipy import ndimage

    inside = ndimage.distance_transform_edt(mask)
    xi, yi = disc_pix[:, 0].astype(int), disc_pix[:, 1].astype(int)
    assert mask[yi, xi].all() and (inside[yi, xi] <= 3 + GAP_CELL_PX).all()
    assert torch.allclose(extra.means[:, 2], torch.tensor(2.0 - OUTLINE_LEAD_M), atol=1e-4)
    on_arm = disc_pix[:, 0] > 41  # right of the body's last column
    assert on_arm.any()
    assert bool((extra_w[torch.from_numpy(on_arm), 2] == 1).all())
    assert bool((extra_w[torch.from_numpy(disc_pix[:, 0] < 38), 0] == 1).all())


def test_outline_band_is_the_edge_of_the_person_not_of_the_photo() -> None:
    mask = np.zeros((H, W), bool)
    mask[10:50, 0:30] = True  # a person cut off by the photo's left border at x = 0
    valid = np.ones((H, W), bool)
    band = outline_band(mask, 3, valid)
    assert band[10:13, 5:27].all() and band[47:50, 5:27].all() and band[20:40, 27:30].all()
    assert not band[20:40, 0:27].any()  # the image border is no outline
    assert not outline_band(mask, 0, valid).any()
    # a padded crop: pixels beyond the photo (x < 5) count as person, so its edge is no outline either
    valid[:, :5] = False
    padded = mask & valid
    padded[:, :5] = False
    band = outline_band(padded, 3, valid)
    assert not band[20:40, 5:27].any() and band[20:40, 27:30].all()


def test_too_many_discs_keep_the_gaps_and_thin_the_outline_evenly() -> None:
    camera = _camera()
    posed = _plane(np.arange(20, 60), np.arange(10, 50), 1.0, 0.2)  # 1.25 cm per pixel
    weights = torch.ones(len(posed), 1)
    depth = rendered_depth(posed, camera, posed.means[:, 2].double().numpy())
    mask = np.isfinite(depth)
    mask[10:50, 14:20] = True  # 6 px of gap left of the plane
    pix = project(posed.means.double().numpy(), camera.K.double().numpy())
    args = (
        posed,
        weights,
        np.ones(len(posed), bool),
        pix,
        depth,
        mask,
        np.zeros((H, W, 3), np.uint8),
        camera,
        0.97,
    )
    gaps, _ = cover_gaps(*args)
    full, _ = cover_gaps(*args, outline=outline_band(mask, 4))
    assert len(full) > len(gaps) + 20
    cap = len(gaps) + 20
    some, _ = cover_gaps(*args, max_new=cap, outline=outline_band(mask, 4))
    assert len(some) == cap
    torch.testing.assert_close(some.means[: len(gaps)], gaps.means)  # every gap disc is kept
    outline_y = project(some.means[len(gaps) :].double().numpy(), camera.K.double().numpy())[:, 1]
    assert outline_y.min() < 20 and outline_y.max() > 40  # spread over the outline, not its first rows


def test_a_gap_disc_takes_the_part_it_lies_on_in_3d() -> None:
    """A hand in a pocket: the uncovered pixels beside it are nearest (in the image) to the hand, so
    their region votes for the arm; but in 3D they lie on the hip, 10 cm behind the hand. Skinned to
    the hand, they would keep those 10 cm to it in every pose and float beside it; with positions
    given they take the hip. An arm within ATTACH_SLACK_M of a disc keeps the region's vote."""
    from streamer.reconstruct.gaps import ATTACH_SLACK_M, attach

    uncovered = np.zeros((H, W), bool)
    uncovered[20:30, 31:34] = True
    pix, member = gap_cells(uncovered)
    # seen: a hand column right of the region (x = 35, 0.1 m in front of the hip), hip points left of it
    # (x = 27), farther in the image from every disc than the hand is; 6 mm per pixel
    seen_pix = np.array([[35.0, y] for y in range(20, 31, 2)] + [[27.0, y] for y in range(20, 31, 2)])
    seen_parts = np.array([2] * 6 + [0] * 6)

    hip_z, hand_z = 0.5, 0.4
    seen_xyz = np.concatenate([_at_depth(seen_pix[:6], hand_z), _at_depth(seen_pix[6:], hip_z)])
    on_hip = _at_depth(pix, hip_z)
    from scipy.spatial import cKDTree

    assert (seen_parts[cKDTree(seen_pix).query(pix)[1]] == 2).all()  # in the image: the hand is nearest
    chosen = attach(pix, member, uncovered, seen_pix, seen_parts, on_hip, seen_xyz)
    assert (seen_parts[chosen] == 0).all()
    # the same discs just behind the hand's depth: the hand is no farther than the slack allows
    near_hand = _at_depth(pix, hand_z + 0.5 * ATTACH_SLACK_M)
    chosen = attach(pix, member, uncovered, seen_pix, seen_parts, near_hand, seen_xyz)
    assert (seen_parts[chosen] == 2).all()


def test_no_outline_disc_hangs_between_two_surfaces() -> None:
    """Where a hand lies before the hip, the edge pixels' rendered depth blends the two: an outline
    disc at that depth would hang in the air between them. None is made there (the surface covers
    those pixels anyway); elsewhere the outline is lined as usual, each disc skinned like the nearest
    Gaussian in 3D."""
    from streamer.reconstruct.gaps import OUTLINE_LEAD_M, OUTLINE_MAX_GAP_M

    camera = _camera()
    posed, weights, _ = _two_parts(
        (np.arange(20, 40), np.arange(10, 50), 2.0), (np.arange(40, 48), np.arange(10, 30), 2.0), (0, 2)
    )
    depth = rendered_depth(posed, camera, posed.means[:, 2].double().numpy())
    mask = np.isfinite(depth)
    blended = depth.copy()
    blended[:, 40:] = np.where(np.isfinite(depth[:, 40:]), 2.0 - 4 * OUTLINE_MAX_GAP_M, np.inf)
    pix = project(posed.means.double().numpy(), camera.K.double().numpy())
    args = (posed, weights, np.ones(len(posed), bool), pix)
    rest = (mask, np.full((H, W, 3), 90, np.uint8), camera, 0.97)
    band = outline_band(mask, 3)
    honest, _ = cover_gaps(*args, depth, *rest, outline=band)
    extra, extra_w = cover_gaps(*args, blended, *rest, outline=band)
    x = project(extra.means.double().numpy(), camera.K.double().numpy())[:, 0]
    x_honest = project(honest.means.double().numpy(), camera.K.double().numpy())[:, 0]
    assert (x_honest > 40).sum() > 10 and not (x > 40).any()  # the arm's edge: lined only at true depth
    assert (x < 38).sum() == (x_honest < 38).sum() > 10  # the body's edge as before
    assert torch.allclose(extra.means[:, 2], torch.tensor(2.0 - OUTLINE_LEAD_M), atol=1e-4)
    assert bool((extra_w[torch.from_numpy(x < 38), 0] == 1).all())
