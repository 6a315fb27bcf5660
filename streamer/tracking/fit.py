"""Live fitting of MediaPipe landmarks to SMPL-X parameters, one frame at a time.

:class:`PoseFitter` runs, per frame (a few milliseconds on one CPU core):

1. the hand fit (:mod:`.fit_hands`) and the face fit (:mod:`.fit_face`), whose wrist and head
   rotations feed (a hand the hand model lost keeps, for a few seconds, the offset between its palm
   and the pose's own hand points measured while both were seen: :data:`PALM_OFFSET_S`)
2. the body fit (:mod:`.fit_body`): analytic initialisation then Levenberg-Marquardt steps on
   world-landmark directions, reprojection (K) and a pose prior;
3. presence fades (:class:`.filters.Fade`, times in :data:`FADES_S`): each part (body, each leg,
   each hand, the face) has a target, its fitted values while seen and a fallback while not
   (relaxed rest pose, standing legs, relaxed hands, neutral face; the global orientation and
   translation stay where the body was last seen). Whenever a part is found or lost, it blends
   from a snapshot of what was shown to its new target with a smoothstep: the whole body eases
   back to rest over a second when nobody is seen, a person re-entering elsewhere glides there;
   nothing jumps and nothing freezes;
4. One Euro filtering of joint quaternions, translation and expression;
5. optionally a mirror image (selfie view): the pose is reflected through the body's sagittal
   plane (x -> -x), swapping left and right.

Output frame: the *tracking world* of :mod:`.landmark_model` (camera at the origin looking down
-Z, +Y up); :attr:`PoseFitter.viewmat` is the matching world-to-camera matrix, so rendering with
``Camera(K=fitter.K, viewmat=fitter.viewmat, ...)`` overlays the avatar on the source video.

A performer profile (:mod:`calibration.performer`) gives the body shape (betas), the floor height
and the neutral face; its baselines are subtracted so a resting face gives a closed jaw, open eyes
and a zero expression.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..body.joints import JOINT_INDEX, JOINT_NAMES, NUM_JOINTS
from ..body.model import BodyModel
from ..body.pose import SmplxPose
from ..errors import InputError
from .filters import Fade, OneEuroFilter
from .fit_body import NUM as NUM_BODY, BodyFitter, BodyObservation
from .fit_face import OPEN_EYE_RATIO, FaceFitter, FaceResult
from .fit_hands import HandFitter
from .landmark_model import WORLD_TO_CAMERA, LandmarkModel
from .landmarks import FrameLandmarks
from .rest_pose import relaxed_body_pose, relaxed_hand_pose
from .rotations import log_rot, nlerp, quat_from_matrix, quat_from_rotvec, quat_to_rotvec, rodrigues

#: Field of view assumed over the longer image side when no intrinsics are given, degrees.
DEFAULT_FOV_DEG = 60.0
#: Per part: seconds to blend in when it (re)appears and to ease to its fallback when it goes missing.
FADES_S = {"body": (0.25, 1.0), "left_leg": (0.25, 0.5), "right_leg": (0.25, 0.5), "left_hand": (0.15, 0.4),
           "right_hand": (0.15, 0.4), "face": (0.15, 0.4)}
#: A hand the hand model lost keeps its last palm offset (:attr:`.fit_body.BodyObservation.palm_offset`)
#: in full for the first of these many seconds, easing it out by the second.
PALM_OFFSET_S = (2.0, 4.0)
#: Frames further apart than this (seconds) are fitted without the previous frame's warm start.
WARM_START_GAP_S = 0.3
#: Where the body stands before anyone was seen: pelvis about 3 m in front of the camera.
DEFAULT_TRANSL = np.array([0.0, 0.0, -3.0])

_J = JOINT_INDEX
_LEGS = {s: [_J[f"{s}_hip"], _J[f"{s}_knee"], _J[f"{s}_ankle"], _J[f"{s}_foot"]] for s in ("left", "right")}
_HANDS = {"left": list(range(25, 40)), "right": list(range(40, 55))}
_FACE = [_J["jaw"], _J["left_eye"], _J["right_eye"]]
_BODY = [j for j in range(1, NUM_BODY) if j not in _LEGS["left"] + _LEGS["right"]]
#: Joints blended by each part's presence weight (the root and translation go with the body).
_PARTS = {"body": [0] + _BODY, "left_leg": _LEGS["left"], "right_leg": _LEGS["right"], "left_hand": _HANDS["left"],
          "right_hand": _HANDS["right"], "face": _FACE}
#: SMPL-X joint that mirrors each joint (left <-> right).
MIRROR_JOINTS = np.array(
    [JOINT_NAMES.index(n.replace("left", "@").replace("right", "left").replace("@", "right")) for n in JOINT_NAMES]
)


def default_intrinsics(width: int, height: int, fov_deg: float = DEFAULT_FOV_DEG) -> np.ndarray:
    """Intrinsics for a centred principal point and ``fov_deg`` over the longer side. [3, 3]"""
    f = 0.5 * max(width, height) / math.tan(math.radians(fov_deg) / 2.0)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def mirror_pose_arrays(quats: np.ndarray, transl: np.ndarray, pelvis_rest: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reflect a pose through the plane x = 0 (swap sides). quats [55, 4] wxyz local; transl [3]."""
    q = quats[MIRROR_JOINTS] * np.array([1.0, 1.0, -1.0, -1.0])
    t = transl.copy()
    t[0] = -2.0 * pelvis_rest[0] - transl[0]
    return q, t


def _to_weight(visibility: np.ndarray) -> np.ndarray:
    """MediaPipe visibility -> landmark weight in [0, 1] (below 0.3: ignored)."""
    return np.clip((np.asarray(visibility, dtype=np.float64) - 0.3) / 0.4, 0.0, 1.0)


class PoseFitter:
    """MediaPipe landmarks -> SMPL-X pose, per frame, with temporal state.

    Args:
        body: the body model to fit.
        K: camera intrinsics [3, 3] in pixels of the frames, or None to assume
            :data:`DEFAULT_FOV_DEG` over the longer side of each frame.
        mirror: output the mirror image (a performer facing a webcam sees themselves as in a mirror).
        profile: a performer profile (:class:`calibration.performer.PerformerProfile`), or its name
            or JSON path; None for the body model's mean shape and the landmark model's neutral face.
        fps: frame rate assumed when frame timestamps do not advance.
        iterations: Levenberg-Marquardt steps of the body refinement per frame when continuing
            from the previous frame (two more when starting afresh).
        smoothing: One Euro filtering on (off for single photos).

    Attributes:
        last_timings_ms: the last :meth:`fit`'s milliseconds per stage
            (``hands``, ``face``, ``body``, ``filter``, ``total``).
        last_face: the last frame's face measurements, empty when no face was seen (``jaw``
            radians, ``blink_left`` / ``blink_right`` in [0, 1] relative to the open eye, sides of
            the avatar, ``rms_m`` face-fit residual in metres); the body model's expression
            coefficients carry blinks where it has a direction that closes the eyes.
        floor_y: the profile's floor height in the tracking world (metres), or None.
    """

    #: One Euro (min_cutoff Hz, beta) for joint quaternions (speed ~ half the angular speed, rad/s),
    #: translation (m/s) and expression coefficients (1/s).
    ROT_FILTER = (2.0, 8.0)
    TRANSL_FILTER = (2.0, 20.0)
    EXPR_FILTER = (1.5, 1.0)

    def __init__(
        self,
        body: BodyModel,
        K: Any = None,
        mirror: bool = False,
        profile: Any = None,
        fps: float = 30.0,
        iterations: int = 1,
        smoothing: bool = True,
    ) -> None:
        if not (np.isfinite(fps) and fps > 0):
            raise InputError(f"fps must be positive, got {fps}")
        self.body = body
        self.K_fixed = None if K is None else self._check_K(K)
        self.mirror = bool(mirror)
        self.fps = float(fps)
        if isinstance(profile, (str, Path)):
            from calibration.performer import load_profile  # calibration depends on tracking, not back

            profile = load_profile(profile)
        self.profile = profile
        self.num_betas, self.num_expression = body.num_betas, body.num_expression
        betas = np.zeros(self.num_betas)
        if profile is not None and len(profile.betas):
            b = np.asarray(profile.betas, dtype=np.float64)[: self.num_betas]
            betas[: len(b)] = b
        self.betas = betas
        self.floor_y: float | None = None if profile is None else profile.floor_y
        self.lm = LandmarkModel(body, betas)
        self.body_fitter = BodyFitter(self.lm, iterations=iterations)
        self.hand_fitters = {s: HandFitter(self.lm, s) for s in ("left", "right")}
        self.face_fitter = FaceFitter(self.lm)
        self._expr_basis = _expression_basis(body, self.lm, self.face_fitter, betas)
        self._open_gap = self.face_fitter.open_gap  # lid gap of an open eye, metres
        self.smoothing = smoothing
        # Fallback (rest) values per joint, quaternions wxyz.
        rest = np.zeros((NUM_JOINTS, 3))
        rest[1:22] = relaxed_body_pose()
        for leg in _LEGS.values():
            rest[leg] = 0.0
        rest[25:40] = relaxed_hand_pose("left")
        rest[40:55] = relaxed_hand_pose("right")
        self.rest_quats = quat_from_rotvec(rest)
        self.pelvis_rest = self.lm.rest_joints[0]
        self.last_timings_ms: dict[str, float] = {}
        self.last_face: dict[str, float] = {}
        self._K_last: np.ndarray | None = self.K_fixed
        self.reset()

    # -- state -------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget all temporal state (a new video or performer): the next frame starts afresh."""
        self._fades = {part: Fade(*FADES_S[part]) for part in _PARTS}
        self._held = self.rest_quats.copy()
        self._held_transl = DEFAULT_TRANSL.copy()
        self._held_expr = np.zeros(self.num_expression)
        # What was shown last (before filtering), and the snapshots parts blend from.
        self._shown, self._shown_transl = self.rest_quats.copy(), DEFAULT_TRANSL.copy()
        self._shown_expr = np.zeros(self.num_expression)
        self._source, self._source_transl = self.rest_quats.copy(), DEFAULT_TRANSL.copy()
        self._source_expr = np.zeros(self.num_expression)
        self._seen_body = False  # whether a body was seen since the reset
        self._prev_body = None  # last frame's raw body fit (warm start), None when unseen
        self._last_face: FaceResult | None = None  # the face of the last frame the face models ran on
        # per side: the rotation from the pose's hand-point palm to the hand model's, and seconds since
        # it was last measured
        self._palm_offset: dict[str, np.ndarray | None] = {"left": None, "right": None}
        self._palm_age = {"left": 0.0, "right": 0.0}
        self._last_t: float | None = None
        self._filt_rot = OneEuroFilter(*self.ROT_FILTER, d_cutoff=1.0, quaternion=True)
        self._filt_transl = OneEuroFilter(*self.TRANSL_FILTER, d_cutoff=1.0)
        self._filt_expr = OneEuroFilter(*self.EXPR_FILTER, d_cutoff=1.0)

    @property
    def K(self) -> np.ndarray | None:
        """The intrinsics of the last frame (given or assumed), None before the first. [3, 3]"""
        return self._K_last

    @property
    def viewmat(self) -> np.ndarray:
        """World-to-camera matrix of the tracking camera (OpenCV axes). [4, 4]"""
        v = np.eye(4)
        v[:3, :3] = WORLD_TO_CAMERA
        return v

    @staticmethod
    def _check_K(K: Any) -> np.ndarray:
        K = np.asarray(K.detach().cpu().numpy() if isinstance(K, torch.Tensor) else K, dtype=np.float64)
        if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise InputError(f"K must be a finite 3x3 intrinsics matrix with positive focal lengths, got {K.tolist()}")
        return K

    # -- per frame ---------------------------------------------------------------------------

    def fit(self, frame: FrameLandmarks) -> SmplxPose:
        """Fit one frame; never raises on missing or unusable parts (they fade to their fallback)."""
        t_start = time.perf_counter()
        timings: dict[str, float] = {}
        dt = self._dt(frame)
        K = self.K_fixed if self.K_fixed is not None else default_intrinsics(frame.width, frame.height)
        self._K_last = K
        # Hands and face first: they give the body fit its wrist and head rotations.
        t = time.perf_counter()
        hands = {}
        for side, hand in (("left", frame.left_hand), ("right", frame.right_hand)):
            hands[side] = None if hand is None else _safe(self.hand_fitters[side].fit, hand, K)
        timings["hands"] = _ms(t)
        t = time.perf_counter()
        self.last_face = {}
        if frame.face_searched:
            face = None if frame.face is None else _safe(self.face_fitter.fit, frame.face, K)
            self._last_face = face
        else:  # the face models skipped this frame (MediaPipeRunner.face_interval): hold the last face
            face = self._last_face
        timings["face"] = _ms(t)
        t = time.perf_counter()
        obs = self._observation(frame, K, hands, face, self._palm_offsets(dt, hands))
        body = None if obs is None else _safe(self.body_fitter.fit, obs, self._prev_body)
        self._prev_body = body
        timings["body"] = _ms(t)
        t = time.perf_counter()
        if body is not None:
            self._refit_hands(frame, K, body, hands)
            self._measure_palm_offsets(body, hands)
        timings["hands"] += _ms(t)
        t = time.perf_counter()
        pose = self._update(dt, body, hands, face)
        timings["filter"] = _ms(t)
        timings["total"] = _ms(t_start)
        self.last_timings_ms = timings
        return pose

    def _refit_hands(self, frame: FrameLandmarks, K: np.ndarray, body: Any, hands: dict) -> None:
        """Refit image-only hands at the scale the body gives them, and set the wrists to them."""
        G = None
        for side, hand, wrist, elbow in (("left", frame.left_hand, 20, 18), ("right", frame.right_hand, 21, 19)):
            if hand is None or hand.world is not None or hands[side] is None:
                continue
            if G is None:
                G, p, _ = self.body_fitter.fk(body.rot, body.transl)
            depth = float((WORLD_TO_CAMERA @ p[wrist])[2])
            if depth <= 0.05:
                continue
            refit = _safe(self.hand_fitters[side].fit, hand, K, float(K[0, 0]) / depth)
            if refit is not None:
                hands[side] = refit
                body.rot[wrist] = G[elbow].T @ refit.wrist

    def _palm_offsets(self, dt: float, hands: dict) -> dict[str, np.ndarray | None]:
        """The palm offsets for the hands the hand model missed this frame, eased out with their age
        (:data:`PALM_OFFSET_S`, smoothstep); every offset ages by ``dt`` (a measurement resets it)."""
        full, gone = PALM_OFFSET_S
        out: dict[str, np.ndarray | None] = {}
        for side, offset in self._palm_offset.items():
            out[side] = None
            if offset is None:
                continue
            self._palm_age[side] += dt
            age = self._palm_age[side]
            if age >= gone:
                self._palm_offset[side] = None
            elif hands[side] is not None:
                continue
            elif age <= full:
                out[side] = offset
            else:
                x = (gone - age) / (gone - full)
                out[side] = rodrigues(log_rot(offset) * (x * x * (3.0 - 2.0 * x)))
        return out

    def _measure_palm_offsets(self, body: Any, hands: dict) -> None:
        """Remember, per hand the hand model saw, the turn from the pose's hand-point palm to its palm."""
        for side, palm in body.palms.items():
            if hands[side] is not None and palm is not None:
                self._palm_offset[side] = palm.T @ hands[side].wrist
                self._palm_age[side] = 0.0

    def _dt(self, frame: FrameLandmarks) -> float:
        """Seconds since the last frame (1/fps when timestamps do not advance; at most 1 s). After a
        gap of more than :data:`WARM_START_GAP_S` the body fit starts afresh (no warm start, no held face)."""
        ts = float(frame.timestamp_ms) / 1000.0 if np.isfinite(frame.timestamp_ms) else None
        dt = 1.0 / self.fps
        if ts is not None and self._last_t is not None and ts > self._last_t:
            dt = min(ts - self._last_t, 1.0)
        if dt > WARM_START_GAP_S:
            self._prev_body = self._last_face = None
        if ts is not None:
            self._last_t = ts
        return dt

    def _observation(
        self, frame: FrameLandmarks, K: np.ndarray, hands: dict, face: FaceResult | None,
        palm_offset: dict[str, np.ndarray | None],
    ) -> BodyObservation | None:
        pose = frame.pose
        if pose is None:
            return None
        world = np.asarray(pose.world, dtype=np.float64)
        image = np.asarray(pose.image, dtype=np.float64)
        vis = np.asarray(pose.visibility, dtype=np.float64)
        if world.shape != (33, 3) or image.shape[0] != 33 or image.shape[1] < 2 or vis.shape != (33,):
            return None
        if not (np.isfinite(world).all() and np.isfinite(image[:, :2]).all() and np.isfinite(vis).all()):
            return None
        weight = _to_weight(vis)
        if weight[[11, 12, 23, 24]].max() <= 0.0:  # neither shoulders nor hips: no trunk to hang a pose on
            return None
        image_n = np.stack([(image[:, 0] - K[0, 2]) / K[0, 0], (image[:, 1] - K[1, 2]) / K[1, 1]], axis=1)
        return BodyObservation(
            world=world @ WORLD_TO_CAMERA.T,
            image_n=image_n,
            weight=weight,
            hand_rot={s: (None if h is None else h.wrist) for s, h in hands.items()},
            head_rot=None if face is None else face.head,
            palm_offset=palm_offset,
        )

    def _update(self, dt: float, body: Any, hands: dict, face: FaceResult | None) -> SmplxPose:
        held = self._held
        seen = {
            "body": body is not None,
            "left_leg": body is not None and body.legs_seen["left"],
            "right_leg": body is not None and body.legs_seen["right"],
            "left_hand": hands["left"] is not None,
            "right_hand": hands["right"] is not None,
            "face": face is not None,
        }
        if body is not None:
            q = quat_from_matrix(body.rot)
            held[0] = q[0]
            held[_BODY] = q[_BODY]
            for side in ("left", "right"):
                if seen[f"{side}_leg"]:
                    held[_LEGS[side]] = q[_LEGS[side]]
            self._held_transl = body.transl.copy()
        for side in ("left", "right"):
            if hands[side] is not None:
                held[_HANDS[side]] = quat_from_matrix(hands[side].rot)
        if face is not None:
            jaw, eyes, expr = self._face_values(face)
            held[_FACE] = quat_from_rotvec(np.stack([jaw, eyes["left"], eyes["right"]]))
            self._held_expr = expr
        # Each part blends from a snapshot of what was shown at its last switch (seen <-> unseen)
        # to its target: the fitted values while seen, its fallback while not. The root and the
        # translation fall back to where the body was last seen (held values stop updating).
        target = held.copy()
        target_expr = self._held_expr if seen["face"] else np.zeros_like(self._held_expr)
        weight = np.empty(NUM_JOINTS)
        for part, fade in self._fades.items():
            joints = _PARTS[part]
            if not self._seen_body:
                # Nobody seen yet (the first frame, or a video that opens on an empty room): the
                # rest pose shown so far is a placeholder, so the first sight starts where the
                # person is instead of gliding in from the default placement.
                fade.seen = seen[part]
            switched, w = fade.update(seen[part], dt)
            if switched:
                self._source[joints] = self._shown[joints]
                if part == "body":
                    self._source_transl = self._shown_transl.copy()
                elif part == "face":
                    self._source_expr = self._shown_expr.copy()
            if not seen[part]:
                fallback = joints[1:] if part == "body" else joints
                target[fallback] = self.rest_quats[fallback]
            weight[joints] = w
        first_sight = seen["body"] and not self._seen_body
        self._seen_body = self._seen_body or seen["body"]
        out = nlerp(self._source, target, weight[:, None])
        wb, wf = self._fades["body"].weight, self._fades["face"].weight
        transl = (1.0 - wb) * self._source_transl + wb * self._held_transl
        expr = (1.0 - wf) * self._source_expr + wf * target_expr
        self._shown, self._shown_transl, self._shown_expr = out, transl, expr
        if self.smoothing:
            if first_sight:  # nor do the filters glide in from the placeholder
                self._filt_rot.reset()
                self._filt_transl.reset()
                self._filt_expr.reset()
            out = self._filt_rot(out, dt)
            transl = self._filt_transl(transl[None], dt)[0]
            expr = self._filt_expr(expr[None], dt)[0] if expr.size else expr
        if self.mirror:
            out, transl = mirror_pose_arrays(out, transl, self.pelvis_rest)
        return self._pose(out, transl, expr)

    def _face_values(self, face: FaceResult) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
        """Jaw rotvec [3], eye rotvecs per side [3], expression [E]; profile baselines removed."""
        p = self.profile
        jaw0 = 0.0 if p is None else float(p.jaw)
        jaw = np.array([max(0.0, face.jaw - jaw0), 0.0, 0.0])
        eyes = {}
        blink = {}
        for side in ("left", "right"):
            g = face.gaze.get(side)
            g0 = None if p is None or p.gaze.get(side) is None else np.asarray(p.gaze[side], dtype=np.float64)
            eyes[side] = np.zeros(3) if g is None else (g - g0 if g0 is not None else g)
            ref = OPEN_EYE_RATIO if p is None else max(float(p.eye_open.get(side, OPEN_EYE_RATIO)), 1e-3)
            blink[side] = float(np.clip(1.0 - face.eye_open[side] / ref, 0.0, 1.0))
        expr = np.zeros(self.num_expression)
        if self._expr_basis is not None and face.local is not None:
            expr = self._expr_basis.solve(face.local, None if p is None else p.face_points,
                                          0.5 * (blink["left"] + blink["right"]), self._open_gap)
        left, right = ("right", "left") if self.mirror else ("left", "right")  # the avatar's sides
        self.last_face = {"jaw": float(jaw[0]), "blink_left": blink[left], "blink_right": blink[right], "rms_m": face.rms}
        return jaw, eyes, expr

    def _pose(self, quats: np.ndarray, transl: np.ndarray, expr: np.ndarray) -> SmplxPose:
        rv = torch.from_numpy(quat_to_rotvec(quats).astype(np.float32))
        return SmplxPose(
            global_orient=rv[0],
            body_pose=rv[1:22],
            jaw_pose=rv[22],
            leye_pose=rv[23],
            reye_pose=rv[24],
            left_hand_pose=rv[25:40],
            right_hand_pose=rv[40:55],
            expression=torch.from_numpy(expr.astype(np.float32)),
            betas=torch.from_numpy(self.betas.astype(np.float32)),
            transl=torch.from_numpy(transl.astype(np.float32)),
        )


class _ExpressionBasis:
    """Expression coefficients from face measurements, for any body model's expression space.

    * **Blink**: the expression direction that lowers the face skin around the eyes most (the
      largest downward displacement within 2.5 cm of an eye centre) is the blink direction; it is
      set from the measured blink so that the lids close by as much as the performer's did.
    * **Mouth**: the other directions come from a ridge least-squares fit of the displacements of
      the mouth corners and upper lip (points the jaw does not move) from the neutral face (the
      profile's, else the landmark model's). The ridge (metres squared per unit coefficient
      squared) damps directions these few points barely see.

    Coefficients are clipped to +-:data:`LIMIT`.
    """

    MOUTH = (61, 291, 13)
    RIDGE = 1e-5
    LIMIT = 1.5

    def __init__(self, dirs: dict[int, np.ndarray], rows: np.ndarray, rest: np.ndarray, closing: np.ndarray) -> None:
        E = next(iter(dirs.values())).shape[-1]
        # closing [E]: how far each direction lowers the skin around the eyes, metres per unit.
        self.blink_dir: int | None = int(np.argmax(closing)) if closing.max() > 5e-4 else None
        self.gap_per_unit = -float(closing.max())
        self.rows = rows  # face point rows of MOUTH
        self.rest = rest  # [3, 3] their neutral positions in the landmark model
        B = np.stack([dirs[i] for i in self.MOUTH]).reshape(-1, E)  # [9, E]
        if self.blink_dir is not None:
            B[:, self.blink_dir] = 0.0
        self.B = B
        self.solver = np.linalg.solve(B.T @ B + self.RIDGE * np.eye(E), B.T)  # [E, 9]

    def solve(self, local: np.ndarray, neutral: Any, blink: float, open_gap: float) -> np.ndarray:
        """Coefficients [E] from observed face points (head frame, metres), the blink in [0, 1] and
        the open lid gap (metres)."""
        ref = self.rest if neutral is None else np.asarray(neutral, dtype=np.float64)[self.rows]
        expr = self.solver @ (local[self.rows] - ref).reshape(-1)
        if self.blink_dir is not None:
            expr[self.blink_dir] = blink * open_gap / -self.gap_per_unit
        return np.clip(expr, -self.LIMIT, self.LIMIT)


def _expression_basis(body: BodyModel, lm: LandmarkModel, face: FaceFitter, betas: np.ndarray) -> _ExpressionBasis | None:
    if body.num_expression == 0:
        return None
    with torch.no_grad():
        verts = body.shaped_vertices(torch.from_numpy(betas.astype(np.float32)).to(body.device)).double().cpu().numpy()
        weights = body.lbs_weights.double().cpu().numpy()
        dirs = body.exprdirs.double().cpu().numpy()  # [V, 3, E]
    face_joints = [_J["head"], _J["jaw"]]  # skin of the face (not the eyeballs)
    face_verts = np.flatnonzero(weights[:, face_joints].sum(axis=1) > 0.5)
    if len(face_verts) == 0:
        return None
    ids = list(_ExpressionBasis.MOUTH)
    pts = lm.face_rest[[face.idx[i] for i in ids]]
    nearest = face_verts[np.argmin(np.linalg.norm(verts[face_verts][None] - pts[:, None], axis=-1), axis=1)]
    closing = []
    for centre in lm.eye_centres.values():
        around = face_verts[np.linalg.norm(verts[face_verts] - centre, axis=1) < 0.025]
        closing.append(-dirs[around, 1, :].min(axis=0) if len(around) else np.zeros(dirs.shape[-1]))
    if not (np.abs(dirs[nearest]).max() > 1e-9 or np.max(closing) > 0):  # no expression near the face points
        return None
    rows = np.array([face.idx[i] for i in _ExpressionBasis.MOUTH])
    return _ExpressionBasis({i: dirs[v] for i, v in zip(ids, nearest)}, rows, lm.face_rest[rows], np.mean(closing, axis=0))


def _safe(fn: Any, *args: Any) -> Any:
    """Run one part's fit; numerical failure means 'not seen' (the fitter never raises per frame)."""
    try:
        with np.errstate(all="ignore"):
            out = fn(*args)
    except (np.linalg.LinAlgError, ValueError, FloatingPointError):
        return None
    arrays = [v for v in vars(out).values() if isinstance(v, np.ndarray)] if out is not None else []
    if not all(np.isfinite(a).all() for a in arrays):
        return None
    return out


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0
