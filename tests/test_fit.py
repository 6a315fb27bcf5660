"""The live fitter: recovery of known poses from synthetic landmarks, hands, face, mirroring,
temporal behaviour (missing person, missing legs), robustness; and one run on real MediaPipe."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import SHARED_VIDEO as VIDEO

from streamer.body import SmplxPose
from streamer.commands.eval_fit import place_in_view
from streamer.tracking.fit import MIRROR_JOINTS, PoseFitter, default_intrinsics
from streamer.tracking.landmark_model import POSE_INDEX, posed_points, project, synthesize_frames
from streamer.tracking.landmarks import FrameLandmarks, HandLandmarks, PoseLandmarks
from streamer.tracking.pose_sampler import random_motion, sample_pose
from streamer.tracking.rest_pose import relaxed_body_pose
from streamer.tracking.rotations import (
    log_rot,
    quat_from_matrix,
    quat_from_rotvec,
    quat_to_rotvec,
    rodrigues,
    rotation_between,
)

W, H = 1280, 720
K = default_intrinsics(W, H)


def _joints(body, poses: SmplxPose) -> np.ndarray:
    with torch.no_grad():
        _, j = body.joint_transforms(poses)
    return j.double().numpy()


def _mpjpe(body, fit: SmplxPose, gt: SmplxPose) -> np.ndarray:
    """Root-aligned error of the 22 body joints per frame, metres. [T]"""
    a, b = _joints(body, fit), _joints(body, gt)
    return np.linalg.norm((a[:, :22] - a[:, :1]) - (b[:, :22] - b[:, :1]), axis=-1).mean(axis=1)


def _hand_error(body, fit: SmplxPose, gt: SmplxPose, wrist: int, fingers: slice) -> np.ndarray:
    a, b = _joints(body, fit), _joints(body, gt)
    return np.linalg.norm((a[:, fingers] - a[:, wrist : wrist + 1]) - (b[:, fingers] - b[:, wrist : wrist + 1]), axis=-1).mean(axis=1)


def _fit_each(body, frames, **kw) -> SmplxPose:
    """Every frame fitted by a fresh fitter (single images: no temporal help)."""
    return SmplxPose.stack([PoseFitter(body, K=K, smoothing=False, **kw).fit(f) for f in frames])


@pytest.fixture(scope="module")
def random_poses(body):
    rng = np.random.default_rng(7)
    return place_in_view(body, SmplxPose.stack([sample_pose(rng) for _ in range(12)]))


# -- rotation helpers -------------------------------------------------------------------------


def test_rotation_helpers_round_trip():
    rng = np.random.default_rng(0)
    r = rng.normal(size=(50, 3))
    r *= (rng.uniform(0, math.pi - 1e-3, 50) / np.linalg.norm(r, axis=1))[:, None]
    R = rodrigues(r)
    assert np.allclose(R @ np.swapaxes(R, 1, 2), np.eye(3), atol=1e-12)
    assert np.allclose(log_rot(R), r, atol=1e-9)
    assert np.allclose(quat_to_rotvec(quat_from_rotvec(r)), r, atol=1e-9)
    q = quat_from_matrix(R)  # directly, also for batches of any shape and at pi
    assert np.allclose(q, quat_from_rotvec(r), atol=1e-9) and (q[:, 0] >= 0).all()
    assert np.allclose(quat_from_matrix(R.reshape(5, 10, 3, 3)), q.reshape(5, 10, 4))
    half_turn = quat_from_matrix(rodrigues(np.array([0.0, math.pi, 0.0])))
    assert np.allclose(np.abs(half_turn), [0.0, 0.0, 1.0, 0.0], atol=1e-12)
    near_pi = np.array([[math.pi - 1e-7, 0.0, 0.0], [0.0, 0.0, 0.0], [1e-9, 0.0, 0.0]])
    assert np.allclose(rodrigues(log_rot(rodrigues(near_pi))), rodrigues(near_pi), atol=1e-6)
    a, b = rng.normal(size=(20, 3)), rng.normal(size=(20, 3))
    Rab = rotation_between(a, b)
    assert np.allclose((Rab @ a[:, :, None])[..., 0] / np.linalg.norm(a, axis=1)[:, None], b / np.linalg.norm(b, axis=1)[:, None], atol=1e-9)
    opposite = rotation_between(np.array([1.0, 0, 0]), np.array([-1.0, 0, 0]))
    assert np.allclose(opposite @ [1.0, 0, 0], [-1.0, 0, 0], atol=1e-9)


# -- recovery of known poses ---------------------------------------------------------------------


def test_recovers_random_plausible_poses_noise_free(body, random_poses):
    frames = synthesize_frames(body, random_poses, K, W, H, noise_mm=0.0)
    fit = _fit_each(body, frames)
    err = _mpjpe(body, fit, random_poses)
    assert err.mean() < 0.015 and err.max() < 0.035, err
    hands = _hand_error(body, fit, random_poses, 20, slice(25, 40)) + _hand_error(body, fit, random_poses, 21, slice(40, 55))
    assert hands.mean() / 2 < 0.012
    assert np.allclose(fit.jaw_pose[:, 0], random_poses.jaw_pose[:, 0], atol=0.05)
    # Placement: the translation puts the body where it was (metres).
    assert float((fit.transl - random_poses.transl).norm(dim=-1).max()) < 0.08


def test_noisy_landmarks_on_a_motion_stay_under_target(body):
    motion = random_motion(seed=3, seconds=2.0, fps=30.0)
    gt = place_in_view(body, motion.poses)
    frames = synthesize_frames(body, gt, K, W, H, noise_mm=10.0, seed=1, fps=30.0)
    fitter = PoseFitter(body, K=K, fps=30.0)
    fit = SmplxPose.stack([fitter.fit(f) for f in frames])
    assert _mpjpe(body, fit, gt).mean() < 0.025  # the eval-fit target, 10 mm landmark noise
    assert set(fitter.last_timings_ms) >= {"body", "hands", "face", "total"}


# -- hands ------------------------------------------------------------------------------------


def _single(body, **fields) -> SmplxPose:
    return place_in_view(body, SmplxPose.stack([SmplxPose.zeros().replace(**fields)]))


def test_hand_channels_move_the_right_fingers_with_the_right_handedness(body):
    body_pose = torch.from_numpy(relaxed_body_pose().astype(np.float32))
    curl = torch.zeros(15, 3)
    curl[:12, 2] = -1.0  # left fingers curled into a fist (not the thumb)
    gt = _single(body, body_pose=body_pose, left_hand_pose=curl)
    frame = synthesize_frames(body, gt, K, W, H)[0]
    fit = PoseFitter(body, K=K, smoothing=False).fit(frame)
    fits = SmplxPose.stack([fit])
    assert float(fit.left_hand_pose[:12, 2].max()) < -0.75  # the left hand curls (about -z)
    assert _hand_error(body, fits, gt, 20, slice(25, 40))[0] < 0.004  # finger joints within 4 mm
    assert float(fit.right_hand_pose.abs().max()) < 0.12  # the right hand stays flat
    # The hand landmarks drive the fingers: the same frame without hands leaves them relaxed,
    # and moves no body joint by more than a few millimetres.
    no_hands = FrameLandmarks(width=W, height=H, timestamp_ms=0.0, pose=frame.pose, face=frame.face)
    fit2 = PoseFitter(body, K=K, smoothing=False).fit(no_hands)
    assert float((fit2.left_hand_pose[:12, 2] + 1.0).abs().min()) > 0.5
    j1, j2 = _joints(body, SmplxPose.stack([fit])), _joints(body, SmplxPose.stack([fit2]))
    assert np.linalg.norm(j1[0, :20] - j2[0, :20], axis=-1).max() < 0.02
    # Handedness matters: the left hand's landmarks given as the right hand do not fit a right hand.
    swapped = FrameLandmarks(width=W, height=H, timestamp_ms=0.0, pose=frame.pose, face=frame.face,
                             left_hand=frame.right_hand, right_hand=frame.left_hand)
    fit3 = PoseFitter(body, K=K, smoothing=False).fit(swapped)
    assert float((fit3.right_hand_pose[:12, 2] - 1.0).abs().max()) > 0.5


def test_hand_world_and_image_landmarks_agree(body):
    curl = torch.zeros(15, 3)
    curl[:12, 2] = 0.8  # right fingers curl about +z
    gt = _single(body, right_hand_pose=curl, body_pose=torch.from_numpy(relaxed_body_pose().astype(np.float32)))
    frame = synthesize_frames(body, gt, K, W, H)[0]
    image_only = FrameLandmarks(width=W, height=H, timestamp_ms=0.0, pose=frame.pose,
                                right_hand=HandLandmarks(image=frame.right_hand.image, world=None))
    # World landmarks (Hands) are metric; image landmarks (Holistic) get their depth from the
    # model's bone lengths at the body's scale, a little less exactly.
    for f, tolerance in ((frame, 0.005), (image_only, 0.01)):
        fit = SmplxPose.stack([PoseFitter(body, K=K, smoothing=False).fit(f)])
        assert _hand_error(body, fit, gt, 21, slice(40, 55))[0] < tolerance
        assert float(fit.right_hand_pose[0, :12, 2].min()) > 0.5


def test_an_image_only_hand_nearer_than_the_body_says_is_not_flattened(body):
    """A hand held out towards the camera is nearer than the body's scale puts it: its bones look
    longer than they can be at that depth. The fitter moves it nearer (just far enough for every
    bone to fit) instead of giving every bone a zero depth step, which flattened the hand and
    turned the wrist by more than a radian."""
    from streamer.tracking.landmark_model import WORLD_TO_CAMERA

    curl = torch.zeros(15, 3)
    curl[:12, 2] = 0.8
    gt = _single(body, right_hand_pose=curl, body_pose=torch.from_numpy(relaxed_body_pose().astype(np.float32)))
    hand = HandLandmarks(image=synthesize_frames(body, gt, K, W, H)[0].right_hand.image, world=None)
    fitter = PoseFitter(body, K=K).hand_fitters["right"]
    depth = float((WORLD_TO_CAMERA @ _joints(body, gt)[0, 21])[2])
    true = fitter.fit(hand, K, float(K[0, 0]) / depth)
    for far in (2.0, 3.0):  # the body's scale says the hand is 2x / 3x further than it is
        fit = fitter.fit(hand, K, float(K[0, 0]) / (far * depth))
        fingers = np.linalg.norm(log_rot(np.einsum("nji,njk->nik", true.rot, fit.rot)), axis=-1)
        assert fingers.max() < 0.05 and np.linalg.norm(log_rot(true.wrist.T @ fit.wrist)) < 0.05, far


def _frames_with_rough_hand_points(
    body, n: int, hand_until: int, image_only: bool, turn: float = 0.7
) -> tuple[SmplxPose, list]:
    """``n`` frames whose right hand the hand model sees only in the first ``hand_until``, while
    the pose's own right hand points (index, pinky, thumb) always sit as for a wrist turned by
    ``turn`` radians: MediaPipe Pose's rough hand points, which disagree with its hand model. After
    the loss the person keeps moving: the body turns 35 degrees and the elbow bends 40 more."""
    bp = torch.from_numpy(relaxed_body_pose().astype(np.float32)).expand(n, 21, 3).clone()
    orient = torch.zeros(n, 3)
    moving = torch.clamp((torch.arange(n) - hand_until) / 30.0, 0.0, 1.0)  # over the second after the loss
    orient[:, 1] = 0.6 * moving
    bp[:, 18, 1] -= 0.7 * moving  # right elbow
    gt = place_in_view(body, SmplxPose.zeros(batch=n).replace(global_orient=orient, body_pose=bp))
    rough_bp = bp.clone()
    twist = rodrigues(np.array([turn, 0.0, 0.0]))
    for i in range(n):
        rough_bp[i, 20] = torch.from_numpy(log_rot(rodrigues(bp[i, 20].double().numpy()) @ twist))
    rough = synthesize_frames(body, gt.replace(body_pose=rough_bp), K, W, H, fps=30.0)
    ids = [POSE_INDEX[f"right_{p}"] for p in ("index", "pinky", "thumb")]
    frames = []
    for i, f in enumerate(synthesize_frames(body, gt, K, W, H, fps=30.0)):
        pose = PoseLandmarks(image=f.pose.image.copy(), world=f.pose.world.copy(), visibility=f.pose.visibility)
        pose.image[ids], pose.world[ids] = rough[i].pose.image[ids], rough[i].pose.world[ids]
        hand = f.right_hand if not image_only else HandLandmarks(image=f.right_hand.image, world=None)
        frames.append(FrameLandmarks(width=W, height=H, timestamp_ms=f.timestamp_ms, pose=pose, face=f.face,
                                     left_hand=f.left_hand, right_hand=hand if i < hand_until else None))
    return gt, frames


@pytest.mark.parametrize("image_only", [False, True], ids=["hands-world", "holistic-image-only"])
def test_a_lost_hand_keeps_the_wrist_the_hand_model_gave_it(body, monkeypatch, image_only):
    """While the hand model sees a hand, the wrist takes its palm; when MediaPipe loses the hand, the
    pose's own hand points, corrected by the offset measured while both were seen, take over, so the
    wrist does not turn by their disagreement (tens of degrees on real video) at every loss, and it
    follows the arm as the person moves on. The offset eases out over :data:`PALM_OFFSET_S`; after
    that the hand points alone decide. Holistic's hands have no world landmarks: they are refitted
    at the body's scale after the body fit, and the offset is measured against that wrist."""
    from streamer.tracking import fit as fit_module

    monkeypatch.setattr(fit_module, "PALM_OFFSET_S", (1.5, 2.5))
    gt, frames = _frames_with_rough_hand_points(body, 100, hand_until=5, image_only=image_only)

    def wrist_errors(fits: list[SmplxPose]) -> np.ndarray:
        """Degrees between the fitted and the true global orientation of the right wrist, per frame."""
        with torch.no_grad():
            A_fit, _ = body.joint_transforms(SmplxPose.stack(fits))
            A_gt, _ = body.joint_transforms(gt)
        R = A_fit[:, 21, :3, :3].double().numpy().transpose(0, 2, 1) @ A_gt[:, 21, :3, :3].double().numpy()
        return np.degrees([np.linalg.norm(log_rot(r)) for r in R])

    fitter = PoseFitter(body, K=K, smoothing=False, fps=30.0)
    err = wrist_errors([fitter.fit(f) for f in frames])
    monkeypatch.setattr(fit_module, "PALM_OFFSET_S", (0.0, 0.0))  # no offset: the rough points at once
    fitter = PoseFitter(body, K=K, smoothing=False, fps=30.0)
    rough = wrist_errors([fitter.fit(f) for f in frames])
    seen_until, moved, easing, gone = 4, 40, 65, 99  # frames: 0.0, 1.2, 2.0 and 3.1 s after the loss
    # image-only hands are fitted less exactly (their depths come from the bone lengths)
    assert err[seen_until] < (5.0 if image_only else 1.0) and rough[moved] > 25.0, (err[seen_until], rough[moved])
    assert err[seen_until + 1 : moved + 1].max() < err[seen_until] + 2.0, err  # held while body and elbow turn
    # Then the hand points alone: the whole disagreement is back (the warm-started fit settles at
    # 29 or 42 degrees by its history), reached half-way in the middle of the easing.
    assert err[gone] > 25.0, err[gone]
    assert 0.3 * err[gone] < err[easing] < 0.7 * err[gone], (err[easing], err[gone])


def test_faint_hand_points_do_not_lose_the_body(body):
    """A hand whose pose points MediaPipe barely sees (out of the picture, behind the back) has no
    palm from them: the body is still fitted (it was once dropped as 'nobody seen' for that)."""
    gt = _waving(body, 1)
    frame = synthesize_frames(body, gt, K, W, H)[0]
    visibility = frame.pose.visibility.copy()
    visibility[[POSE_INDEX["left_pinky"], POSE_INDEX["left_index"]]] = 0.0
    pose = PoseLandmarks(image=frame.pose.image, world=frame.pose.world, visibility=visibility)
    faint = FrameLandmarks(width=W, height=H, timestamp_ms=0.0, pose=pose, face=frame.face)
    fit = PoseFitter(body, K=K, smoothing=False).fit(faint)
    assert _arm_raised(body, fit)
    assert float(_mpjpe(body, SmplxPose.stack([fit]), gt)[0]) < 0.03


# -- face ------------------------------------------------------------------------------------


def test_face_channels_move_jaw_eyes_and_head(body):
    body_pose = torch.from_numpy(relaxed_body_pose().astype(np.float32))
    body_pose[14] = torch.tensor([0.2, 0.5, 0.0])  # head turned left and down a little
    gt = _single(body, body_pose=body_pose, jaw_pose=torch.tensor([0.25, 0, 0]),
                 leye_pose=torch.tensor([0.1, 0.2, 0.0]), reye_pose=torch.tensor([0.1, 0.2, 0.0]))
    frame = synthesize_frames(body, gt, K, W, H)[0]
    fit = PoseFitter(body, K=K, smoothing=False).fit(frame)
    assert abs(float(fit.jaw_pose[0]) - 0.25) < 0.03 and float(fit.jaw_pose[1:].abs().max()) < 1e-6
    assert float((fit.leye_pose - gt.leye_pose[0]).abs().max()) < 0.05
    assert float((fit.reye_pose - gt.reye_pose[0]).abs().max()) < 0.05
    # Head orientation (global) within 3 degrees.
    with torch.no_grad():
        A_fit, _ = body.joint_transforms(fit)
        A_gt, _ = body.joint_transforms(gt[0])
    rel = A_fit[15, :3, :3].double().numpy().T @ A_gt[15, :3, :3].double().numpy()
    assert np.degrees(np.linalg.norm(log_rot(rel))) < 3.0
    # Without the face the jaw and eyes stay at rest; the body does not move.
    no_face = FrameLandmarks(width=W, height=H, timestamp_ms=0.0, pose=frame.pose,
                             left_hand=frame.left_hand, right_hand=frame.right_hand)
    fit2 = PoseFitter(body, K=K, smoothing=False).fit(no_face)
    assert float(fit2.jaw_pose.abs().max()) == 0.0 and float(fit2.leye_pose.abs().max()) == 0.0
    j1, j2 = _joints(body, SmplxPose.stack([fit])), _joints(body, SmplxPose.stack([fit2]))
    assert np.linalg.norm(j1[0, :15] - j2[0, :15], axis=-1).max() < 0.02


def test_a_frame_whose_face_models_were_skipped_holds_the_last_face(body):
    """The live tracker runs the face models on every other frame (``face_searched`` False on the
    others): the fitter keeps the jaw and head it saw, where a frame that looked and found no face
    lets them go."""
    body_pose = torch.from_numpy(relaxed_body_pose().astype(np.float32))
    body_pose[14] = torch.tensor([0.2, 0.5, 0.0])
    gt = _single(body, body_pose=body_pose, jaw_pose=torch.tensor([0.25, 0, 0]))
    frame = synthesize_frames(body, gt, K, W, H)[0]

    def without_face(t_ms: float, searched: bool) -> FrameLandmarks:
        return FrameLandmarks(width=W, height=H, timestamp_ms=t_ms, pose=frame.pose, face_searched=searched)

    held = PoseFitter(body, K=K, smoothing=False)
    seen = held.fit(frame)
    for i in range(1, 11):  # a third of a second of frames
        skipped = held.fit(without_face(33.0 * i, searched=False))
    assert abs(float(skipped.jaw_pose[0]) - 0.25) < 0.03
    assert torch.allclose(skipped.jaw_pose, seen.jaw_pose, atol=1e-4)
    assert torch.allclose(skipped.body_pose[14], seen.body_pose[14], atol=1e-3)  # the head as seen
    lost = PoseFitter(body, K=K, smoothing=False)
    lost.fit(frame)
    for i in range(1, 11):
        gone = lost.fit(without_face(33.0 * i, searched=True))
    assert float(gone.jaw_pose[0]) < 0.2  # fading to the closed jaw
    # after a gap in the frames nothing is held
    for i in range(10):
        late = held.fit(without_face(1000.0 + 33.0 * i, searched=False))
    assert float(late.jaw_pose[0]) < 0.2


def test_blinks_drive_the_eyes_close_expression(body):
    gt = _single(body, body_pose=torch.from_numpy(relaxed_body_pose().astype(np.float32)))
    frame = synthesize_frames(body, gt, K, W, H)[0]
    fitter = PoseFitter(body, K=K, smoothing=False)
    open_eyes = fitter.fit(frame)
    assert fitter.last_face["blink_left"] < 0.05 and float(open_eyes.expression.abs().max()) < 0.05
    closed = frame.face.image.copy()
    closed[[159, 386]] = closed[[145, 374]]  # upper lids down on the lower lids
    frame.face.image = closed
    shut = fitter.fit(frame)
    assert fitter.last_face["blink_left"] > 0.9 and fitter.last_face["blink_right"] > 0.9
    # The built-in model's expression 5 closes the eyes: the fitter finds it by its geometry.
    assert float(shut.expression[5]) > 0.8
    others = torch.cat([shut.expression[:5], shut.expression[6:]])
    assert float(others.abs().max()) < 0.05


# -- mirror ----------------------------------------------------------------------------------


def test_mirror_reflects_the_pose_and_swaps_sides(body, random_poses):
    frame = synthesize_frames(body, random_poses[:1], K, W, H)[0]
    plain = PoseFitter(body, K=K, smoothing=False).fit(frame)
    mirrored = PoseFitter(body, K=K, smoothing=False, mirror=True).fit(frame)
    flip = torch.tensor([1.0, -1.0, -1.0])
    assert torch.allclose(mirrored.left_hand_pose, plain.right_hand_pose * flip, atol=1e-5)
    fp, fm = plain.full_pose(), mirrored.full_pose()
    assert torch.allclose(fm, fp[torch.from_numpy(MIRROR_JOINTS)] * flip, atol=1e-5)
    # Joint positions are the mirror images (x -> -x) with sides swapped.
    jp, jm = _joints(body, SmplxPose.stack([plain]))[0], _joints(body, SmplxPose.stack([mirrored]))[0]
    assert np.allclose(jm[MIRROR_JOINTS[:22]][:, 1:], jp[:22, 1:], atol=0.01)
    assert np.allclose(jm[MIRROR_JOINTS[:22]][:, 0], -jp[:22, 0], atol=0.01)
    # The person's raised right arm becomes the avatar's left (what a mirror shows).
    assert MIRROR_JOINTS[21] == 20 and MIRROR_JOINTS[40] == 25


# -- temporal behaviour ------------------------------------------------------------------------


def _waving(body, n: int) -> SmplxPose:
    bp = torch.from_numpy(relaxed_body_pose().astype(np.float32))
    bp[16] = torch.tensor([0.0, 0.0, -1.0])  # right arm raised sideways (about +z lowers it)
    bp[18] = torch.tensor([0.0, 0.0, 0.0])
    bp[3] = torch.tensor([0.6, 0, 0])  # knees bent
    bp[4] = torch.tensor([0.6, 0, 0])
    return place_in_view(body, SmplxPose.stack([SmplxPose.zeros().replace(body_pose=bp)] * n))


def _arm_raised(body, pose: SmplxPose) -> bool:
    """The right wrist is well above the right shoulder."""
    j = _joints(body, SmplxPose.stack([pose]))[0]
    return bool(j[21, 1] > j[17, 1] + 0.15)


def _max_step(poses: list[SmplxPose]) -> float:
    q = quat_from_rotvec(torch.stack([p.full_pose() for p in poses]).double().numpy())
    dots = np.abs((q[1:] * q[:-1]).sum(-1)).clip(0, 1)
    return float((2 * np.arccos(dots)).max())


def test_no_person_eases_back_to_rest_over_about_a_second(body):
    gt = _waving(body, 20)
    frames = synthesize_frames(body, gt, K, W, H, fps=30.0)
    fitter = PoseFitter(body, K=K, fps=30.0)
    out = [fitter.fit(f) for f in frames]
    last_seen = out[-1]
    assert _arm_raised(body, last_seen)
    for i in range(45):  # 1.5 s with nobody
        out.append(fitter.fit(FrameLandmarks(width=W, height=H, timestamp_ms=1000.0 * (20 + i) / 30.0)))
    gone = out[20:]
    rest = torch.from_numpy(relaxed_body_pose().astype(np.float32))
    # Not frozen: it moves during the first half second; never jumps; at rest after ~1.2 s.
    assert float((gone[12].body_pose - last_seen.body_pose).abs().max()) > 0.3
    assert _max_step(out[19:]) < 0.2
    assert float((gone[36].body_pose - rest).abs().max()) < 0.05
    assert float(gone[36].body_pose[[3, 4]].abs().max()) < 0.05  # knees straight again
    # The avatar stays where the person was last seen.
    assert float((gone[-1].transl - last_seen.transl).norm()) < 0.02


def test_person_reappearing_elsewhere_glides_back(body):
    gt = _waving(body, 10)
    frames = synthesize_frames(body, gt, K, W, H, fps=30.0)
    moved = synthesize_frames(body, gt.replace(transl=gt.transl + torch.tensor([0.8, 0.0, 0.5])), K, W, H, fps=30.0)
    fitter = PoseFitter(body, K=K, fps=30.0)
    out = [fitter.fit(f) for f in frames]
    out += [fitter.fit(FrameLandmarks(width=W, height=H, timestamp_ms=1000.0 * (10 + i) / 30.0)) for i in range(10)]
    for i, f in enumerate(moved):
        f.timestamp_ms = 1000.0 * (20 + i) / 30.0
        out.append(fitter.fit(f))
    steps = [float((b.transl - a.transl).norm()) for a, b in zip(out[:-1], out[1:])]
    assert max(steps) < 0.3  # 0.94 m covered over several frames, not in one jump
    assert float((out[-1].transl - (gt.transl[0] + torch.tensor([0.8, 0.0, 0.5]))).norm()) < 0.1


def test_a_video_opening_on_an_empty_room_starts_where_the_person_first_is(body):
    gt = _waving(body, 10)
    frames = synthesize_frames(body, gt, K, W, H, fps=30.0)
    fresh = PoseFitter(body, K=K, fps=30.0).fit(frames[0])
    fitter = PoseFitter(body, K=K, fps=30.0)
    for i in range(5):  # a fade from black: nobody for the first frames
        fitter.fit(FrameLandmarks(width=W, height=H, timestamp_ms=1000.0 * i / 30.0))
    for i, f in enumerate(frames):
        f.timestamp_ms = 1000.0 * (5 + i) / 30.0
    first = fitter.fit(frames[0])
    assert float((first.transl - fresh.transl).norm()) < 1e-4  # no glide from the default placement
    assert float((first.full_pose() - fresh.full_pose()).abs().max()) < 1e-4
    assert float((first.transl - gt.transl[0]).norm()) < 0.1


def test_legs_out_of_view_give_standing_legs(body):
    gt = _waving(body, 30)
    frames = synthesize_frames(body, gt, K, W, H, fps=30.0)
    legs = [POSE_INDEX[f"{s}_{p}"] for s in ("left", "right") for p in ("knee", "ankle", "heel", "foot_index")]
    fitter = PoseFitter(body, K=K, fps=30.0)
    out = []
    for i, f in enumerate(frames):
        if i >= 10:
            f.pose.visibility[legs] = 0.05  # the legs leave the picture (MediaPipe still guesses them)
        out.append(fitter.fit(f))
    assert float(out[9].body_pose[3, 0]) > 0.4  # knees bent while seen
    assert float(out[-1].body_pose[[0, 1, 3, 4, 6, 7]].abs().max()) < 0.05  # standing legs
    assert _arm_raised(body, out[-1])  # the raised arm is still tracked
    assert _max_step(out) < 0.2


def test_garbage_input_never_raises(body):
    fitter = PoseFitter(body, K=K)
    nan = PoseLandmarks(image=np.full((33, 3), np.nan, np.float32), world=np.full((33, 3), np.nan, np.float32),
                        visibility=np.ones(33, np.float32))
    bad_shape = PoseLandmarks(image=np.zeros((5, 3), np.float32), world=np.zeros((5, 3), np.float32),
                              visibility=np.ones(5, np.float32))
    zeros = PoseLandmarks(image=np.zeros((33, 3), np.float32), world=np.zeros((33, 3), np.float32),
                          visibility=np.ones(33, np.float32))
    hand = HandLandmarks(image=np.zeros((21, 3), np.float32), world=np.full((21, 3), np.nan, np.float32))
    for i, pose in enumerate([nan, bad_shape, zeros, None]):
        frame = FrameLandmarks(width=W, height=H, timestamp_ms=33.0 * i, pose=pose, left_hand=hand)
        out = fitter.fit(frame)
        out.validate()  # finite, right shapes
    assert PoseFitter(body).fit(FrameLandmarks(width=640, height=480, timestamp_ms=0.0)).batch_shape == ()


def test_settings_out_of_range_are_refused(body):
    from streamer.errors import InputError

    for fps in (0.0, -30.0, math.nan, math.inf):
        with pytest.raises(InputError, match="fps must be positive"):
            PoseFitter(body, fps=fps)
    with pytest.raises(InputError, match="K must be"):
        PoseFitter(body, K=np.diag([-500.0, 500.0, 1.0]))
    assert PoseFitter(body, fps=0.5).fps == 0.5


def test_profile_betas_and_neutral_face_are_applied(body):
    from calibration.performer import PerformerProfile

    betas = [0.5] + [0.0] * 9
    gt = _single(body, jaw_pose=torch.tensor([0.15, 0.0, 0.0]), betas=torch.tensor(betas))
    frame = synthesize_frames(body, gt, K, W, H)[0]
    profile = PerformerProfile(name="p", betas=betas, jaw=0.1)
    fit = PoseFitter(body, K=K, smoothing=False, profile=profile).fit(frame)
    assert torch.allclose(fit.betas, torch.tensor(betas)) and abs(float(fit.jaw_pose[0]) - 0.05) < 0.03


# -- real MediaPipe on the shared video --------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not VIDEO.exists(), reason="shared test video not present")
def test_real_video_reprojection(body):
    """MediaPipe Holistic on the tai-chi video, fitted live: a pose in >= 98 % of frames and a
    median 2D reprojection error of the fitted body's landmark points <= 8 px."""
    from streamer.tracking.mediapipe_runner import MediaPipeRunner
    from streamer.tracking.sources import open_source

    frames = []
    with open_source(VIDEO) as source, MediaPipeRunner("holistic", video=True) as runner:
        fitter = PoseFitter(body, K=None, fps=source.fps)
        poses = []
        for t_ms, rgb in source:
            frame = runner.process(rgb, t_ms)
            frames.append(frame)
            poses.append(fitter.fit(frame))
    with_person = [i for i, f in enumerate(frames) if f.pose is not None]
    assert len(with_person) >= 0.98 * len(frames)
    pts = posed_points(body, SmplxPose.stack([poses[i] for i in with_person]))["pose"]
    errors = []
    for i, p in zip(with_person, pts):
        uv, _ = project(p, fitter.K)
        seen = frames[i].pose.visibility > 0.5
        errors.append(np.linalg.norm(uv - frames[i].pose.image[:, :2], axis=1)[seen])
    assert float(np.median(np.concatenate(errors))) <= 8.0

