"""Offline refinement of tracked poses (to the person mask, and to the frame's colours), and the
cross-section offsets of the ``fit`` method."""

from __future__ import annotations

import numpy as np
import torch

from streamer.body.joints import JOINT_INDEX
from streamer.body.pose import SmplxPose
from streamer.reconstruct.metrics import mask_iou
from streamer.reconstruct.silhouette import cross_section_offsets
from streamer.render import Camera, render
from streamer.tracking.fit import default_intrinsics
from streamer.tracking.landmark_model import WORLD_TO_CAMERA

W, H = 240, 400


def _camera() -> Camera:
    K = default_intrinsics(W, H)
    view = np.eye(4)
    view[:3, :3] = WORLD_TO_CAMERA  # the tracking world's camera
    return Camera(
        K=torch.tensor(K, dtype=torch.float32),
        viewmat=torch.tensor(view, dtype=torch.float32),
        width=W,
        height=H,
    )


def _silhouette(avatar, body, pose: SmplxPose, camera: Camera) -> np.ndarray:  # type: ignore[no-untyped-def]
    _, alpha = render(avatar.pose(body, pose), camera, background=(0.0, 0.0, 0.0), backend="cpu")
    return alpha.numpy() > 0.5


def _target_pose() -> SmplxPose:
    zero = SmplxPose.zeros()
    body_pose = zero.body_pose.clone()
    body_pose[JOINT_INDEX["left_shoulder"] - 1, 2] = -1.0  # arms down from the T-pose
    body_pose[JOINT_INDEX["right_shoulder"] - 1, 2] = 1.0
    return zero.replace(body_pose=body_pose, transl=torch.tensor([0.0, 0.3, -3.0]))


def test_refine_moves_a_misplaced_pose_onto_the_mask(body, demo_avatar) -> None:  # type: ignore[no-untyped-def]
    from streamer.reconstruct.track_refine import SilhouetteRefiner

    camera = _camera()
    target = _target_pose()
    mask = _silhouette(demo_avatar, body, target, camera)
    assert mask.sum() > 2000
    body_pose = target.body_pose.clone()
    body_pose[JOINT_INDEX["left_shoulder"] - 1, 2] += 0.5  # one arm raised
    off = target.replace(body_pose=body_pose, transl=target.transl + torch.tensor([0.08, -0.06, 0.0]))
    before = mask_iou(_silhouette(demo_avatar, body, off, camera), mask)
    refined = SilhouetteRefiner(body, demo_avatar, camera).refine(off, mask)
    after = mask_iou(_silhouette(demo_avatar, body, refined, camera), mask)
    assert before < 0.5 and after > 0.8, (before, after)  # measured: 0.38 -> 0.86
    err_before = float((off.transl - target.transl)[:2].norm())
    err_after = float((refined.transl - target.transl)[:2].norm())
    assert err_after < 0.3 * err_before, (err_before, err_after)
    # The raised arm came part of the way down again (measured: 0.5 -> 0.37 rad off), and the depth,
    # which the outline barely tells, stayed.
    j = JOINT_INDEX["left_shoulder"] - 1
    assert abs(float(refined.body_pose[j, 2] - target.body_pose[j, 2])) < 0.45
    assert abs(float(refined.transl[2] - off.transl[2])) < 0.02
    # Hands, face and shape are left as tracked.
    assert torch.equal(refined.left_hand_pose, off.left_hand_pose) and torch.equal(
        refined.jaw_pose, off.jaw_pose
    )


def test_refine_follows_the_landmarks_and_keeps_a_pose_without_a_mask(body, demo_avatar, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from streamer.reconstruct import track_refine
    from streamer.reconstruct.track_refine import SilhouetteRefiner

    camera = _camera()
    refiner = SilhouetteRefiner(body, demo_avatar, camera)
    pose = _target_pose()
    assert refiner.refine(pose, np.zeros((H, W), bool)) is pose
    # Landmarks: the model's own pose points, seen 5 cm further left than the mask, pull the body
    # there when trusted (here 3 px noise); without them the mask keeps it in place.
    monkeypatch.setattr(track_refine, "LANDMARK_SIGMA_PX", 3.0)
    with torch.no_grad():
        shifted = pose.replace(transl=pose.transl + torch.tensor([-0.05, 0.0, 0.0]), betas=refiner.betas)
        _, lmk = refiner._pose_points(shifted)
        px = refiner.project(lmk).numpy()
    mask = _silhouette(demo_avatar, body, pose, camera)
    alone = refiner.refine(pose, mask)
    pulled = refiner.refine(pose, mask, px, np.ones(33))
    assert abs(float(alone.transl[0] - pose.transl[0])) < 0.005
    assert float(pulled.transl[0] - pose.transl[0]) < -0.02, pulled.transl  # measured: 2.4 cm


def test_a_pose_turned_too_far_is_also_refined_from_turned_starts(body, demo_avatar) -> None:  # type: ignore[no-untyped-def]
    """The tracked root is turned 40 degrees from the person's (one arm out to the side, so the
    outline tells the turn). From there alone the stiff root barely turns back; from the start turned
    25 degrees back it does, and that fit wins."""
    from scipy.spatial.transform import Rotation

    from streamer.reconstruct import track_refine
    from streamer.reconstruct.track_refine import SilhouetteRefiner

    camera = _camera()
    target = _target_pose()
    body_pose = target.body_pose.clone()
    body_pose[JOINT_INDEX["left_shoulder"] - 1, 2] = 0.0  # the left arm out, as in the T-pose
    target = target.replace(body_pose=body_pose)
    mask = _silhouette(demo_avatar, body, target, camera)
    refiner = SilhouetteRefiner(body, demo_avatar, camera)
    start = refiner._turned(target, 40.0)

    def turn_deg(pose: SmplxPose) -> float:  # the root's whole rotation (the target's has none)
        rotvec = pose.global_orient.double().numpy().reshape(3)
        return float(np.degrees(Rotation.from_rotvec(rotvec).magnitude()))

    assert abs(turn_deg(start) - 40.0) < 1e-3
    refined = refiner.refine(start, mask)
    assert refiner.last_start_px2 is not None and refiner.last_start_px2 > track_refine.TURN_TRY_PX2
    iou = mask_iou(_silhouette(demo_avatar, body, refined, camera), mask)
    assert turn_deg(refined) < 20.0 and iou > 0.9, (turn_deg(refined), iou)  # measured: 14.5, 0.93
    alone = refiner.refine(start, mask, try_turns=False)  # from the tracked start only
    assert turn_deg(alone) > 30.0, turn_deg(alone)  # measured: 38.7


def test_the_body_outside_the_photo_is_left_where_it_is(body, demo_avatar) -> None:  # type: ignore[no-untyped-def]
    """A half-body photo: its crop's lower part lies beyond the photo. The legs there have no mask
    to fit, and must not be pulled up into the part that has one."""
    from streamer.reconstruct.track_refine import SilhouetteRefiner

    camera = _camera()
    target = _target_pose()
    valid = np.zeros((H, W), bool)
    valid[: H // 2] = True  # the photo ends at the waist
    mask = _silhouette(demo_avatar, body, target, camera) & valid
    refiner = SilhouetteRefiner(body, demo_avatar, camera)
    assert refiner.refine(target, mask, valid=valid) is target  # it already fits what the photo shows
    assert refiner.last_start_px2 is not None and refiner.last_start_px2 < 6.0
    moved = refiner.refine(target, mask)  # without ``valid`` the legs count as outside the person
    assert refiner.last_start_px2 > 100.0 and moved is not target


def _textured(avatar):  # type: ignore[no-untyped-def]
    """The avatar with colour stripes across its surface (about 10 cm apart): texture to align."""
    import dataclasses

    m = avatar.gaussians.means
    colors = 0.5 + 0.4 * torch.stack(
        [(60 * m[:, 0]).sin(), (45 * m[:, 1]).sin(), (50 * m[:, 2] + 20 * m[:, 1]).sin()], 1
    )
    return dataclasses.replace(avatar, gaussians=avatar.gaussians.replace(colors=colors))


def _frame(avatar, body, pose: SmplxPose, camera: Camera) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    rgb, alpha = render(avatar.pose(body, pose), camera, background=(0.3, 0.5, 0.2), backend="cpu")
    return (rgb.numpy() * 255 + 0.5).astype(np.uint8), alpha.numpy() > 0.5


def _inside_psnr(avatar, body, pose: SmplxPose, camera: Camera, frame: np.ndarray, mask: np.ndarray) -> float:  # type: ignore[no-untyped-def]
    from streamer.reconstruct.evaluate import render_np
    from streamer.reconstruct.metrics import masked_scores

    img, alpha = render_np(avatar.pose(body, pose), camera)
    return masked_scores(img, alpha, frame / 255.0, mask)["psnr_db"]


CHEST = JOINT_INDEX["spine2"] - 1  # (body_pose rows leave out the root)


def _texture_off(target: SmplxPose) -> SmplxPose:
    """``target`` 2 cm off sideways with the chest turned by 0.15 rad: the outline barely tells."""
    body_pose = target.body_pose.clone()
    body_pose[CHEST, 1] += 0.15
    return target.replace(body_pose=body_pose, transl=target.transl + torch.tensor([0.02, 0.0, 0.0]))


def test_photometric_refine_lines_the_texture_up_with_the_frame(body, demo_avatar) -> None:  # type: ignore[no-untyped-def]
    """The pose is 2 cm off sideways and the chest turned a little: the outline barely tells, the
    stripes do. The colour term moves the body back and turns the chest part of the way."""
    from streamer.reconstruct.photo_refine import PhotometricRefiner

    avatar = _textured(demo_avatar)
    camera = _camera()
    target = _target_pose()
    frame, mask = _frame(avatar, body, target, camera)
    off = _texture_off(target)
    refiner = PhotometricRefiner(body, avatar, camera)
    refined = refiner.refine(off, frame, mask)
    assert refiner.kept_last and refined is not off
    before = _inside_psnr(avatar, body, off, camera, frame, mask)
    after = _inside_psnr(avatar, body, refined, camera, frame, mask)
    assert after > before + 6.0, (before, after)  # measured: 12.8 -> 23.5 dB (16.5 after the first pass)
    assert abs(float(refined.transl[0] - target.transl[0])) < 0.007, refined.transl  # measured: 4.8 mm
    turn = float(refined.body_pose[CHEST, 1] - target.body_pose[CHEST, 1])
    assert 0.0 < turn < 0.12, turn  # measured: 0.15 -> 0.10 rad


def test_photometric_refine_goes_on_from_the_pose_it_kept(body, demo_avatar, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """One alignment reaches only so far (its template is the render at the start, its steps and
    prior are bounded); the next starts where it ended, with a fresh template, while the check
    keeps finding the render closer to the frame."""
    from streamer.reconstruct import photo_refine

    avatar = _textured(demo_avatar)
    camera = _camera()
    target = _target_pose()
    frame, mask = _frame(avatar, body, target, camera)
    off = _texture_off(target)
    refiner = photo_refine.PhotometricRefiner(body, avatar, camera)
    results: dict[int, float] = {}
    for passes in (1, photo_refine.PASSES):
        monkeypatch.setattr(photo_refine, "PASSES", passes)
        refined = refiner.refine(off, frame, mask)
        assert refiner.kept_last
        results[passes] = _inside_psnr(avatar, body, refined, camera, frame, mask)
    assert results[photo_refine.PASSES] > results[1] + 3.0, results  # measured: 16.5 -> 23.5 dB


def test_photometric_refine_keeps_a_pose_it_cannot_improve(body, demo_avatar) -> None:  # type: ignore[no-untyped-def]
    """The exact pose only gets worse by moving: the check hands back the pose it was given. So do a
    mask too small to judge and one that shows none of the avatar."""
    from streamer.reconstruct.photo_refine import PhotometricRefiner

    avatar = _textured(demo_avatar)
    camera = _camera()
    target = _target_pose()
    frame, mask = _frame(avatar, body, target, camera)
    refiner = PhotometricRefiner(body, avatar, camera)
    assert refiner.refine(target, frame, mask) is target and not refiner.kept_last
    for size in (15, 60):  # 225 mask pixels (fewer than MIN_MASK_PX); 3600, but no Gaussian seen there
        elsewhere = np.zeros_like(mask)
        elsewhere[:size, :size] = True
        assert not (elsewhere & mask).any()
        assert refiner.refine(target, frame, elsewhere) is target and not refiner.kept_last


def test_photometric_refine_skips_a_frame_that_shows_too_little_of_the_person(  # type: ignore[no-untyped-def]
    body, demo_avatar, monkeypatch
) -> None:
    """Under MIN_MASK_PX mask pixels (the person behind something, or leaving the picture) the pose
    stays as the outline fit left it, and the frame costs no render."""
    from streamer.reconstruct import photo_refine

    avatar = _textured(demo_avatar)
    camera = _camera()
    target = _target_pose()
    frame, mask = _frame(avatar, body, target, camera)
    ys, xs = np.nonzero(mask)
    cy, cx = int(ys.min() + 0.3 * (ys.max() - ys.min())), int(np.median(xs))  # the chest
    patch = np.zeros_like(mask)
    patch[cy - 9 : cy + 10, cx - 9 : cx + 10] = True  # 361 pixels, all on the person
    assert (patch & mask).sum() == 361 < photo_refine.MIN_MASK_PX
    off = _texture_off(target)
    refiner = photo_refine.PhotometricRefiner(body, avatar, camera)
    renders = []
    render = refiner._render
    monkeypatch.setattr(refiner, "_render", lambda posed: renders.append(1) or render(posed))
    assert refiner.refine(off, frame, patch) is off and not refiner.kept_last
    assert renders == []
    monkeypatch.setattr(photo_refine, "MIN_MASK_PX", 300)  # (the same patch is then looked at)
    assert refiner.refine(off, frame, patch) is off and len(renders) == 1  # (too few points to align)


def test_the_photometric_check_scores_the_whole_mask_edge_included() -> None:
    """A pose is kept on the error ``eval animate`` scores: every mask pixel counts, the outline too
    (the check once skipped a 6-pixel edge and kept poses that lost more there than they gained
    inside), and nothing outside the mask does."""
    from streamer.reconstruct.photo_refine import agreement_error

    mask = np.zeros((60, 40), bool)
    mask[10:50, 10:30] = True
    frame = np.full((60, 40, 3), 0.5)
    edge = mask.copy()
    edge[11:49, 11:29] = False  # the mask's outermost pixels
    off_at_edge = frame.copy()
    off_at_edge[edge] = 0.0  # black where the outline should be: the avatar falls short of it
    outside = frame.copy()
    outside[~mask] = 1.0
    assert agreement_error(frame, frame, mask) == 0.0
    assert agreement_error(outside, frame, mask) == 0.0
    assert np.isclose(agreement_error(off_at_edge, frame, mask), 0.75 * edge.sum() / mask.sum())  # 3 x 0.5^2


def test_refine_steps_as_torch_adam_without_importing_dynamo() -> None:
    """The hand-written Adam steps as torch's (with the exponential decay); and refining does not
    import torch._dynamo, which creating a torch.optim optimizer does (2 s at the start of reconstruct)."""
    import subprocess
    import sys

    from streamer.reconstruct.track_refine import DecayingAdam

    torch.manual_seed(0)
    a, b = torch.randn(5, requires_grad=True), torch.randn(3, requires_grad=True)
    a2, b2 = a.detach().clone().requires_grad_(True), b.detach().clone().requires_grad_(True)
    ours = DecayingAdam([(a, 0.02), (b, 0.01)], 0.95)
    theirs = torch.optim.Adam([{"params": [a2], "lr": 0.02}, {"params": [b2], "lr": 0.01}])
    decay = torch.optim.lr_scheduler.ExponentialLR(theirs, 0.95)
    for _ in range(40):
        for (x, y), opt in (((a, b), ours), ((a2, b2), theirs)):
            opt.zero_grad()
            ((x**3).sum() + (y.sin() * x[:3]).sum()).backward()
            opt.step()
        decay.step()
    assert torch.allclose(a, a2, atol=1e-6) and torch.allclose(b, b2, atol=1e-6)
    code = (
        "import sys, numpy as np, torch\n"
        "from streamer.assets import load_body\n"
        "from streamer.body.pose import SmplxPose\n"
        "from streamer.reconstruct.track_refine import SilhouetteRefiner\n"
        "from streamer.render import Camera\n"
        "body = load_body(None)\n"
        "cam = Camera.look_at((0, 0.3, 3.0), (0, 0.3, 0), 120, 200, 40.0)\n"
        "mask = np.zeros((200, 120), bool); mask[40:160, 30:90] = True\n"
        "ref = SilhouetteRefiner.for_body(body, torch.zeros(10), cam, iterations=3)\n"
        "ref.refine(SmplxPose.zeros(), mask, min_start_px2=0.0)\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_cross_section_offsets_carry_the_outline_round_the_part() -> None:
    # A vertical cylinder (one body part): the outline (x = +-r) measured 4 cm, front and back not.
    angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    heights = np.arange(0.0, 0.3, 0.05)
    a, y = np.meshgrid(angles, heights)
    verts = np.stack([0.1 * np.cos(a).ravel(), y.ravel(), 0.1 * np.sin(a).ravel()], 1)
    measured = np.abs(np.cos(a).ravel()) > 0.95
    offsets = np.where(measured, 0.04, 0.005)
    parts = np.zeros(len(verts), int)
    fixed = np.zeros(len(verts), bool)
    fixed[0] = True
    out = cross_section_offsets(offsets, measured, verts, parts, fixed, fraction=1.0, bin_m=0.05)
    front_back = np.abs(np.sin(a).ravel()) > 0.95
    assert np.allclose(out[front_back], 0.04)
    assert (out >= offsets).all() and out[0] == offsets[0]
    assert np.array_equal(
        cross_section_offsets(offsets, measured, verts, parts, fixed, fraction=0.0), offsets
    )
    # Only the vertices allowed to receive the carried offset take it (the fit method: the back).
    front = np.sin(a).ravel() > 0.95
    out = cross_section_offsets(
        offsets, measured, verts, parts, fixed, fraction=1.0, bin_m=0.05, receives=front
    )
    back = np.sin(a).ravel() < -0.95
    assert np.allclose(out[front], 0.04) and np.array_equal(out[back], offsets[back])
    # Another part with no measurement keeps its offsets.
    parts[: len(parts) // 2] = 1
    measured[: len(parts) // 2] = False
    out = cross_section_offsets(offsets, measured, verts, parts, fixed, fraction=1.0, bin_m=0.05)
    assert np.array_equal(out[: len(parts) // 2], offsets[: len(parts) // 2])
