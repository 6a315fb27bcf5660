"""Body fit: global orientation, 21 body joints and translation from MediaPipe's 33 pose landmarks.

Per frame, small numpy problems (well under a millisecond each):

0. **Lifting.** MediaPipe's world landmarks are made consistent with its image landmarks: each
   point is put on its pixel's viewing ray at the depth the world landmarks give it.
1. **Analytic initialisation.** Every joint's *global* rotation is built from observed bone
   directions: the pelvis from the hip line and the trunk (tilted back when both thighs are
   flexed, as people sit and squat), the three spine joints share the turn
   between hip line and shoulder line, the neck and head share the head's turn (from the face
   mesh, or from nose, eyes and ears), each upper arm / thigh is aligned with its bone *and* the
   bend plane of the elbow / knee (so the limb's twist is right), the forearm twist is shared
   between elbow and wrist to match the palm (from the hand fit, or the pose's hand points),
   and the ankles follow heel -> toe. A straight limb has no bend plane: its twist then comes
   from the palm / foot direction, blended in smoothly as the limb straightens.
2. **Refinement.** A few Levenberg-Marquardt steps on the 20 free joints (feet fixed) and the
   translation, with analytic Jacobians of the landmark points (each point of
   :mod:`.landmark_model` moves rigidly with its joint; rotating joint j by a small local
   ``eps`` moves a point p below it by ``(G_j eps) x (p - p_j)``). Residuals, all in metres:
     * 3D: for body segments between landmarks (upper arm, thigh, hip line, ...), the part of the
       model's segment vector perpendicular to the observed direction (MediaPipe world
       landmarks); scale-free, so a performer taller than the model does not bend the limbs;
     * 2D: ``X - x_n Z`` and ``Y - y_n Z`` per landmark, the reprojection error in normalised
       image coordinates times depth (linear in the points), from image landmarks and K;
     * prior: the deviation of every joint from its analytic initialisation (keeps unobservable
       twists where the initialisation put them) and a weak pull of every joint towards zero.
   On video the refinement continues from the previous frame's result (limbs, neck, head; the
   pelvis and spine restart most of the way from this frame's initialisation, since landmarks
   hardly tell a pelvis tilt from a bent lower back and a pure warm start would drift there),
   so one step per frame suffices; a cold start takes three.
3. **Hands and face win.** Where the hand model saw a hand, the pose's rough hand points are
   ignored and the wrist takes the palm's orientation exactly (where it saw the hand a moment ago,
   the hand points turned by the offset measured then: :attr:`BodyObservation.palm_offset`); where
   the face mesh was seen, the head takes the face's orientation exactly.

Frames: inputs are in the *tracking world* of :mod:`.landmark_model` (+Y up, camera at the
origin looking down -Z). Rotations are local (relative to the parent), as SMPL-X expects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..body.joints import JOINT_INDEX, PARENTS
from .landmark_model import POSE_INDEX, LandmarkModel
from .rotations import (axis_rotation, cross, frame, log_rot, nlerp, normalize, quat_from_matrix, quat_to_matrix, rodrigues,
                        rotation_between, skew, twist_angle)

try:  # LAPACK's Cholesky via SciPy is steady under load; numpy's LU solve threads (and stalls) there.
    from scipy.linalg.lapack import dpotrf, dpotrs
except ImportError:  # pragma: no cover - SciPy comes with MediaPipe (via jax); the fallback is only slower
    dpotrf = dpotrs = None

NUM = 22  # root + 21 body joints
_P = np.array(PARENTS[:NUM])
_J = JOINT_INDEX
_L = POSE_INDEX
#: Joints refined by the optimiser (the toe joints stay at the rest pose).
FREE = np.array([j for j in range(NUM) if j not in (_J["left_foot"], _J["right_foot"])])
#: Extra refinement steps when there is no previous frame to start from (first frame, re-entry).
COLD_EXTRA_ITERATIONS = 2
#: The refinement stops early once a step turns no joint by more than this and moves by less.
STEP_TOL_RAD, STEP_TOL_M = 0.005, 0.002
#: Pelvic tilt prior (see :meth:`BodyFitter._pelvic_tilt`): gain and onset (radians of thigh flexion).
PELVIC_TILT_GAIN, PELVIC_TILT_START = 0.4, 0.35
#: Share of the way from the last frame's trunk rotations to this frame's initialisation at which
#: a warm-started refinement begins (1: always restart the trunk; 0: pure warm start).
TRUNK_RESTART = 0.5
_TRUNK = [_J["pelvis"], _J["spine1"], _J["spine2"], _J["spine3"]]
_LEG_JOINTS = {s: [_J[f"{s}_hip"], _J[f"{s}_knee"], _J[f"{s}_ankle"]] for s in ("left", "right")}

# Depth levels of the kinematic tree (for batched forward kinematics).
_DEPTH = np.zeros(NUM, dtype=int)
for _j in range(1, NUM):
    _DEPTH[_j] = _DEPTH[_P[_j]] + 1
_LEVELS = [np.flatnonzero(_DEPTH == d) for d in range(1, _DEPTH.max() + 1)]

#: Segments (from-landmarks, to-landmarks) whose directions the 3D term matches; a point given as
#: several landmarks is their mean.
SEGMENTS: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("right_hip",), ("left_hip",)),
    (("right_shoulder",), ("left_shoulder",)),
    (("left_hip", "right_hip"), ("left_shoulder", "right_shoulder")),
    (("left_shoulder", "right_shoulder"), ("left_ear", "right_ear")),
    (("left_ear", "right_ear"), ("nose",)),
    (("right_ear",), ("left_ear",)),
    (("right_eye",), ("left_eye",)),
    (("left_shoulder",), ("left_elbow",)),
    (("left_elbow",), ("left_wrist",)),
    (("right_shoulder",), ("right_elbow",)),
    (("right_elbow",), ("right_wrist",)),
    (("left_wrist",), ("left_index",)),
    (("left_wrist",), ("left_pinky",)),
    (("right_wrist",), ("right_index",)),
    (("right_wrist",), ("right_pinky",)),
    (("left_hip",), ("left_knee",)),
    (("left_knee",), ("left_ankle",)),
    (("right_hip",), ("right_knee",)),
    (("right_knee",), ("right_ankle",)),
    (("left_heel",), ("left_foot_index",)),
    (("right_heel",), ("right_foot_index",)),
    (("left_ankle",), ("left_heel",)),
    (("right_ankle",), ("right_heel",)),
)


@dataclass
class BodyObservation:
    """One frame's pose evidence, tracking world.

    Attributes:
        world: [33, 3] metres, MediaPipe world landmarks turned to the tracking axes (hip-centred).
        image_n: [33, 2] normalised image coordinates ``K^-1 [u, v, 1]`` (OpenCV camera axes).
        weight: [33] in [0, 1], from MediaPipe's visibility (0: ignore the landmark).
        hand_rot: per side, the observed global wrist rotation [3, 3] from the hand fit, or None.
        head_rot: the observed global head rotation [3, 3] from the face fit, or None.
        palm_offset: per side, for a hand the hand model does not see in this frame: the rotation
            ``P^T H`` (in the palm's own frame) from the pose's hand-point palm ``P`` to the hand
            model's ``H``, as measured when it last saw the hand (:attr:`BodyResult.palms`; the
            live fitter passes it eased towards identity with its age). The wrist then takes
            ``P @ offset`` as if the hand model had seen it, instead of the bare hand points, which
            differ from the hand model's palm by tens of degrees: without it the wrist turned that
            far whenever MediaPipe lost or found a hand.
    """

    world: np.ndarray
    image_n: np.ndarray
    weight: np.ndarray
    hand_rot: dict[str, np.ndarray | None]
    head_rot: np.ndarray | None = None
    palm_offset: dict[str, np.ndarray | None] | None = None


@dataclass
class BodyResult:
    """Local rotations [22, 3, 3] (root first), translation [3] (SMPL-X ``transl``), legs seen, and
    per side the palm's global rotation [3, 3] from the pose's own hand points (None where they
    were not seen well enough)."""

    rot: np.ndarray
    transl: np.ndarray
    legs_seen: dict[str, bool]
    palms: dict[str, np.ndarray | None] = field(default_factory=dict)


def _gram(Y: np.ndarray) -> np.ndarray:
    """``Y.T @ Y`` in row blocks: each product stays under OpenBLAS's threading threshold, whose
    threads cost milliseconds on a busy machine."""
    H = Y[:32].T @ Y[:32]
    for i in range(32, len(Y), 32):
        H += Y[i : i + 32].T @ Y[i : i + 32]
    return H


def _spd_solve(H: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Solve ``H x = g`` for symmetric positive definite H (Cholesky; LU as a fallback)."""
    if dpotrf is not None:
        c, info = dpotrf(H, lower=1, clean=0)
        if info == 0:
            x, info = dpotrs(c, g, lower=1)
            if info == 0:
                return x
    return np.linalg.solve(H, g)


def _norm(v: np.ndarray) -> float:
    return float(np.sqrt(v @ v))


def _smoothstep(x: np.ndarray | float) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


class BodyFitter:
    """Fits the 22 body rotations and the translation of one body shape (see the module doc).

    Args:
        lm: the landmark model of the body shape.
        iterations: Levenberg-Marquardt steps after the analytic initialisation.
        weight_2d: weight of the reprojection residuals relative to the 3D direction residuals.
    """

    def __init__(self, lm: LandmarkModel, iterations: int = 1, weight_2d: float = 3.0) -> None:
        self.lm = lm
        self.iterations = iterations
        self.weight_2d = weight_2d
        J = lm.rest_joints[:NUM]
        self.J = J
        self.bone = J - np.where(_P[:, None] >= 0, J[np.maximum(_P, 0)], 0.0)
        self._levels = [(lev, _P[lev], self.bone[lev][:, :, None]) for lev in _LEVELS]
        nP = 3 * len(FREE) + 3
        self._diag = np.diag_indices(nP)
        i, r, c = np.meshgrid(np.arange(len(FREE)), np.arange(3), np.arange(3), indexing="ij")
        self._prior_blocks = ((3 * i + r) * nP + 3 * i + c).reshape(-1)  # flat indices of H's 3x3 diagonal blocks
        self.Q = lm.pose_rest  # [33, 3]
        self.att = lm.pose_attach
        self.off = lm.pose_offset
        # anc[k, i]: FREE[i] is the attached joint of landmark k or one of its ancestors.
        chain = np.zeros((NUM, NUM), dtype=bool)
        for j in range(NUM):
            a = j
            while a >= 0:
                chain[j, a] = True
                a = _P[a]
        self.anc = chain[self.att][:, FREE].astype(np.float64)  # [33, F]
        S = len(SEGMENTS)
        self.C = np.zeros((S, 33))
        for s, (a, b) in enumerate(SEGMENTS):
            for n in a:
                self.C[s, _L[n]] -= 1.0 / len(a)
            for n in b:
                self.C[s, _L[n]] += 1.0 / len(b)
        self.seg_members = [np.flatnonzero(self.C[s]) for s in range(S)]
        lift_pairs = [("left_shoulder", "left_hip"), ("right_shoulder", "right_hip"), ("left_shoulder", "left_elbow"),
                      ("right_shoulder", "right_elbow"), ("left_hip", "left_knee"), ("right_hip", "right_knee"),
                      ("left_knee", "left_ankle"), ("right_knee", "right_ankle"), ("left_elbow", "left_wrist"),
                      ("right_elbow", "right_wrist"), ("left_shoulder", "right_shoulder")]
        self._lift_a = np.array([_L[a] for a, _ in lift_pairs])
        self._lift_b = np.array([_L[b] for _, b in lift_pairs])
        self._lift_C = np.zeros((len(lift_pairs), 33))
        self._lift_C[np.arange(len(lift_pairs)), self._lift_a] = -1.0
        self._lift_C[np.arange(len(lift_pairs)), self._lift_b] = 1.0
        # Prior weights (metres per radian) per free joint and axis.
        self.w_init = np.full((NUM, 3), 0.03)
        self.w_init[[_J["spine1"], _J["spine2"], _J["spine3"]]] = 0.08
        self.w_init[[_J["left_collar"], _J["right_collar"]]] = 0.15
        self.w_init[[_J["neck"]]] = 0.08
        self.w_zero = np.full((NUM, 3), 0.005)
        self.w_zero[0] = 0.0
        self.w_zero[[_J["left_knee"], _J["right_knee"]], 1:] = 0.05  # knees are hinges about x
        self.w_zero[[_J["left_elbow"], _J["right_elbow"]], 0] = 0.03  # elbows bend about y
        self.w_zero[[_J["left_elbow"], _J["right_elbow"]], 2] = 0.03
        # Rest quantities for the analytic initialisation.
        Q = self.Q
        self.rest_hip_x = Q[_L["left_hip"]] - Q[_L["right_hip"]]
        self.rest_sh_x = Q[_L["left_shoulder"]] - Q[_L["right_shoulder"]]
        self.rest_up = 0.5 * (Q[_L["left_shoulder"]] + Q[_L["right_shoulder"]] - Q[_L["left_hip"]] - Q[_L["right_hip"]])
        self.rest_hipmid = 0.5 * (Q[_L["left_hip"]] + Q[_L["right_hip"]])
        sides = ("left", "right")
        ids = lambda table, part: np.array([table[f"{s}_{part}"] for s in sides])  # noqa: E731
        arm = {"sh": ids(_J, "shoulder"), "el": ids(_J, "elbow"), "wr": ids(_J, "wrist"),
               "lsh": ids(_L, "shoulder"), "lel": ids(_L, "elbow"), "lwr": ids(_L, "wrist"),
               "lin": ids(_L, "index"), "lpi": ids(_L, "pinky")}
        arm["u0"] = Q[arm["lel"]] - Q[arm["lsh"]]
        arm["f0"] = Q[arm["lwr"]] - Q[arm["lel"]]
        arm["h0"] = normalize(cross(arm["u0"], np.array([0.0, 0.0, 1.0])))  # elbow hinge: forearm bends forwards
        arm["rest_frame_T"] = np.swapaxes(frame(arm["u0"], arm["h0"]), 1, 2)
        arm["axis"] = normalize(arm["f0"])
        fwd0 = 0.5 * (Q[arm["lin"]] + Q[arm["lpi"]]) - Q[arm["lwr"]]
        arm["palm_rest_T"] = np.swapaxes(frame(fwd0, Q[arm["lin"]] - Q[arm["lpi"]]), 1, 2)
        self._arm = arm
        leg = {"hip": ids(_J, "hip"), "kn": ids(_J, "knee"), "an": ids(_J, "ankle"), "lkn": ids(_L, "knee"),
               "lan": ids(_L, "ankle"), "lhe": ids(_L, "heel"), "lfi": ids(_L, "foot_index")}
        leg["u0"] = J[leg["kn"]] - J[leg["hip"]]
        leg["f0"] = J[leg["an"]] - J[leg["kn"]]
        leg["h0"] = normalize(cross(leg["u0"], np.array([0.0, 0.0, -1.0])))  # knee hinge: shank bends backwards
        leg["rest_frame_T"] = np.swapaxes(frame(leg["u0"], leg["h0"]), 1, 2)
        leg["hip_off"] = J[leg["hip"]] - self.rest_hipmid
        leg["d0"] = Q[leg["lfi"]] - Q[leg["lhe"]]
        self._leg = leg

    # -- kinematics --------------------------------------------------------------------------

    def fk(self, rot: np.ndarray, transl: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Global rotations [22, 3, 3], joint positions [22, 3] and landmark points [33, 3]."""
        G = np.empty((NUM, 3, 3))
        p = np.empty((NUM, 3))
        G[0] = rot[0]
        p[0] = self.J[0]
        for lev, par, bone in self._levels:
            Gp = G[par]
            G[lev] = Gp @ rot[lev]
            p[lev] = p[par] + (Gp @ bone)[..., 0]
        if transl is not None:
            p = p + transl
        P = p[self.att] + (G[self.att] @ self.off[:, :, None])[..., 0]
        return G, p, P

    def globals(self, rot: np.ndarray) -> np.ndarray:
        """Global rotations of local ones. [22, 3, 3] -> [22, 3, 3]"""
        G = np.empty_like(rot)
        G[0] = rot[0]
        for lev, par, _ in self._levels:
            G[lev] = G[par] @ rot[lev]
        return G

    @staticmethod
    def locals(G: np.ndarray) -> np.ndarray:
        """Local rotations of global ones. [22, 3, 3] -> [22, 3, 3]"""
        rot = np.empty_like(G)
        rot[0] = G[0]
        rot[1:] = np.swapaxes(G[_P[1:]], 1, 2) @ G[1:]
        return rot

    def _jacobian(self, p: np.ndarray, P: np.ndarray) -> np.ndarray:
        """d points / d (world rotation vectors at the FREE joints, transl): [33, 3, 3F + 3].

        Turning joint j's subtree by a small world vector w moves a point P below it by
        ``w x (P - p_j) = [p_j - P]x w``.
        """
        D = (p[FREE][None] - P[:, None, :]) * self.anc[:, :, None]  # [33, F, 3], zero off the chain
        blk = skew(D)  # [33, F, 3, 3]
        Jp = np.empty((33, 3, 3 * len(FREE) + 3))
        Jp[:, :, :-3] = blk.transpose(0, 2, 1, 3).reshape(33, 3, -1)
        Jp[:, :, -3:] = np.eye(3)
        return Jp

    # -- analytic initialisation ------------------------------------------------------------

    def initialise(
        self, obs: BodyObservation, palms: np.ndarray | None = None
    ) -> tuple[np.ndarray, dict[str, bool]]:
        """Local rotations [22, 3, 3] from bone directions; which legs were seen.

        ``palms``: :meth:`_hands_from_pose` of the lifted landmarks, when the caller has it already.
        """
        W, w = obs.world, obs.weight
        Q, J = self.Q, self.J
        G = np.broadcast_to(np.eye(3), (NUM, 3, 3)).copy()
        hip_x = W[_L["left_hip"]] - W[_L["right_hip"]]
        sh_x = W[_L["left_shoulder"]] - W[_L["right_shoulder"]]
        up = 0.5 * (W[_L["left_shoulder"]] + W[_L["right_shoulder"]] - W[_L["left_hip"]] - W[_L["right_hip"]])
        rest_up = self.rest_up
        G[0] = frame(up, hip_x) @ frame(rest_up, self.rest_hip_x).T
        G_torso = frame(up, sh_x) @ frame(rest_up, self.rest_sh_x).T
        G[0] = self._pelvic_tilt(G[0], W, w) @ G[0]
        # The spine joints share the turn from the pelvis to the shoulder line equally.
        third = rodrigues(log_rot(G[0].T @ G_torso) / 3.0)
        for j in ("spine1", "spine2", "spine3"):
            G[_J[j]] = G[_P[_J[j]]] @ third
        G_sp3 = G[_J["spine3"]]
        G[_J["left_collar"]] = G[_J["right_collar"]] = G_sp3
        # Head: from the face fit, else from ears / eyes and nose.
        head = obs.head_rot if obs.head_rot is not None else self._head_from_pose(W, w, G_sp3)
        half = rodrigues(log_rot(G_sp3.T @ head) / 2.0)
        G[_J["neck"]] = G_sp3 @ half
        G[_J["head"]] = head
        self._init_arms(G, W, w, obs.hand_rot, palms)
        legs_seen = self._init_legs(G, W, w)
        G[_J["left_foot"]] = G[_J["left_ankle"]]
        G[_J["right_foot"]] = G[_J["right_ankle"]]
        return self.locals(G), legs_seen

    def _pelvic_tilt(self, G0: np.ndarray, W: np.ndarray, w: np.ndarray) -> np.ndarray:
        """World rotation tilting the pelvis back when both thighs are flexed (sitting, squatting).

        Hips and shoulders alone cannot tell the pelvis's tilt from the lower spine's bend. People
        share large hip flexion between the hips and a backward tilt of the pelvis with a bent
        lower back (lumbopelvic rhythm); the pelvis takes :data:`PELVIC_TILT_GAIN` of the smaller
        thigh flexion beyond :data:`PELVIC_TILT_START` (radians).
        """
        if min(w[_L["left_knee"]], w[_L["right_knee"]]) < 0.5:
            return np.eye(3)
        x, up = G0[:, 0], G0[:, 1]
        fwd = G0[:, 2]
        flex = []
        for side in ("left", "right"):
            thigh = W[_L[f"{side}_knee"]] - W[_L[f"{side}_hip"]]
            # flexion: the thigh's turn from "down" towards "forward" about the lateral axis
            flex.append(np.arctan2(thigh @ fwd, -(thigh @ up)))
        tilt = PELVIC_TILT_GAIN * max(0.0, min(flex) - PELVIC_TILT_START)
        return axis_rotation(x, -tilt) if tilt > 0 else np.eye(3)

    def _head_from_pose(self, W: np.ndarray, w: np.ndarray, G_sp3: np.ndarray) -> np.ndarray:
        Q = self.Q
        ears = min(w[_L["left_ear"]], w[_L["right_ear"]])
        a, b = ("left_ear", "right_ear") if ears > 0.5 else ("left_eye", "right_eye")
        x_obs, x_rest = W[_L[a]] - W[_L[b]], Q[_L[a]] - Q[_L[b]]
        mid_obs, mid_rest = 0.5 * (W[_L[a]] + W[_L[b]]), 0.5 * (Q[_L[a]] + Q[_L[b]])
        f_obs, f_rest = W[_L["nose"]] - mid_obs, Q[_L["nose"]] - mid_rest
        if min(w[_L[a]], w[_L[b]], w[_L["nose"]]) < 0.2 or _norm(cross(x_obs, f_obs)) < 1e-6:
            return G_sp3
        return frame(x_obs, f_obs) @ frame(x_rest, f_rest).T

    def _init_arms(
        self, G: np.ndarray, W: np.ndarray, w: np.ndarray, hand_rot: dict[str, np.ndarray | None],
        palms: np.ndarray | None = None,
    ) -> None:
        """Shoulder, elbow and wrist global rotations of both arms (batched over the two sides)."""
        a = self._arm
        sh, el, wr = a["sh"], a["el"], a["wr"]
        lsh, lel, lwr = a["lsh"], a["lel"], a["lwr"]
        G_par = G[_P[sh]]
        u = W[lel] - W[lsh]
        f = np.where((w[lwr] > 0.1)[:, None], W[lwr] - W[lel], u)
        # Hinge axis: from the bend plane, or (arm straight) from the smallest turn out of the
        # rest pose, blended in smoothly by the bend angle.
        n_fb = (G_par @ (rotation_between(a["u0"], (np.swapaxes(G_par, 1, 2) @ u[:, :, None])[..., 0]) @ a["h0"][:, :, None]))[..., 0]
        n = self._hinge(u, f, n_fb)
        G[sh] = frame(u, n) @ a["rest_frame_T"]
        G[el] = rotation_between((G[sh] @ a["f0"][:, :, None])[..., 0], f) @ G[sh]
        # Wrist: the palm from the hand fit, else from the pose's hand points, else straight.
        hand = (self._hands_from_pose(W, w) if palms is None else palms).copy()
        has = np.ones(2, dtype=bool)
        for i, side in enumerate(("left", "right")):
            if hand_rot.get(side) is not None:
                hand[i] = hand_rot[side]
            elif not np.isfinite(hand[i, 0, 0]):
                has[i] = False
                hand[i] = G[el[i]]
        tau = twist_angle(np.swapaxes(G[el], 1, 2) @ hand, a["axis"]) * has
        G[el] = G[el] @ rodrigues(a["axis"] * (0.5 * tau)[:, None])
        G[wr] = hand
        seen = np.minimum(w[lsh], w[lel]) > 0.1
        if not seen.all():  # an unseen arm hangs relaxed from the trunk
            from .rest_pose import relaxed_body_pose

            rest = relaxed_body_pose()
            for i in np.flatnonzero(~seen):
                for j in (sh[i], el[i], wr[i]):
                    G[j] = G[_P[j]] @ rodrigues(rest[j - 1])

    @staticmethod
    def _hinge(u: np.ndarray, f: np.ndarray, n_fb: np.ndarray) -> np.ndarray:
        """Hinge axes [2, 3] of two limbs from upper / lower segment directions and fallbacks."""
        uf = cross(u, f)
        s = np.sqrt((uf * uf).sum(axis=1))
        bend = np.arctan2(s, (u * f).sum(axis=1))
        wb = _smoothstep((bend - 0.15) / 0.35)[:, None]
        n = wb * (uf / np.maximum(s, 1e-12)[:, None]) + (1.0 - wb) * n_fb
        un = cross(u, n)
        bad = (un * un).sum(axis=1) < 1e-12
        return np.where(bad[:, None], n_fb, n)

    def _hands_from_pose(self, W: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Palm rotations of both hands from the pose's wrist, index and pinky points; NaN where unseen. [2, 3, 3]"""
        a = self._arm
        lwr, lin, lpi = a["lwr"], a["lin"], a["lpi"]
        fwd, across = 0.5 * (W[lin] + W[lpi]) - W[lwr], W[lin] - W[lpi]
        c = cross(fwd, across)
        ok = (np.minimum(np.minimum(w[lwr], w[lin]), w[lpi]) >= 0.3) & ((c * c).sum(axis=1) > 1e-16)
        out = frame(fwd, across) @ a["palm_rest_T"]
        out[~ok] = np.nan
        return out

    def _init_legs(self, G: np.ndarray, W: np.ndarray, w: np.ndarray) -> dict[str, bool]:
        """Hip, knee and ankle global rotations of both legs (batched); which legs were seen."""
        g = self._leg
        hip, kn, an = g["hip"], g["kn"], g["an"]
        lkn, lan, lhe, lfi = g["lkn"], g["lan"], g["lhe"], g["lfi"]
        G0 = G[0]
        hip_mid_obs = 0.5 * (W[_L["left_hip"]] + W[_L["right_hip"]])
        p_hip = hip_mid_obs + g["hip_off"] @ G0.T  # observed hip joint centres [2, 3]
        u = W[lkn] - p_hip
        ankle_seen = w[lan] >= 0.5
        f = np.where(ankle_seen[:, None], W[lan] - W[lkn], g["f0"] @ G0.T)
        foot_seen = ankle_seen & (np.minimum(w[lhe], w[lfi]) >= 0.5)
        n_foot = normalize(cross(W[lfi] - W[lhe], u))
        n_swing = (G0 @ (rotation_between(g["u0"], u @ G0) @ g["h0"][:, :, None]))[..., 0]
        n = self._hinge(u, f, np.where(foot_seen[:, None], n_foot, n_swing))
        G[hip] = frame(u, n) @ g["rest_frame_T"]
        G[kn] = rotation_between((G[hip] @ g["f0"][:, :, None])[..., 0], f) @ G[hip]
        foot_rot = rotation_between((G[kn] @ g["d0"][:, :, None])[..., 0], W[lfi] - W[lhe])
        G[an] = np.where(foot_seen[:, None, None], foot_rot @ G[kn], G[kn])
        seen = w[lkn] >= 0.5
        for i in np.flatnonzero(~seen):  # legs out of view: standing legs
            G[hip[i]] = G[kn[i]] = G[an[i]] = G0
        return {"left": bool(seen[0]), "right": bool(seen[1])}

    # -- translation and refinement ---------------------------------------------------------

    def solve_transl(self, P: np.ndarray, obs: BodyObservation) -> np.ndarray | None:
        """Translation [3] that best reprojects model points ``P`` (no translation yet). Linear."""
        wt = obs.weight
        if np.count_nonzero(wt > 0) < 3:
            return None
        xn, yn = obs.image_n[:, 0], obs.image_n[:, 1]
        # X - xn Z = (Px + tx) + xn (Pz + tz);  Y - yn Z = -(Py + ty) + yn (Pz + tz)
        A = np.zeros((66, 3))
        b = np.zeros(66)
        A[0::2, 0], A[0::2, 2], b[0::2] = 1.0, xn, P[:, 0] + xn * P[:, 2]
        A[1::2, 1], A[1::2, 2], b[1::2] = -1.0, yn, -P[:, 1] + yn * P[:, 2]
        sw = np.repeat(wt, 2)
        t, *_ = np.linalg.lstsq(A * sw[:, None], -b * sw, rcond=None)
        if t[2] > -0.3:  # behind or at the camera: not a usable placement
            return None
        return t

    def refine(self, rot: np.ndarray, transl: np.ndarray, obs: BodyObservation, w_init: np.ndarray,
               anchor: np.ndarray | None = None, iterations: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Levenberg-Marquardt on (FREE joint rotations, translation). Returns (rot, transl).

        The normal equations are accumulated per residual group; the prior is diagonal. The
        prior residuals use first-order composition (``log(R exp(e)) ~ log(R) + e``), exact
        enough for a regulariser and free of per-step matrix logarithms.
        """
        rot = rot.copy()
        t = transl.copy()
        wt = obs.weight
        nF = len(FREE)
        nR = 3 * nF
        # Fixed for the frame: segment projectors and weights, 2D weights, prior weights.
        d = normalize(self.C @ obs.world)
        seg_w = np.array([wt[m].min() for m in self.seg_members])
        Pi = (np.eye(3)[None] - d[:, :, None] * d[:, None, :]) * seg_w[:, None, None]
        xn, yn = obs.image_n[:, 0], obs.image_n[:, 1]
        w2 = self.weight_2d * wt
        # 2D residual rows as linear maps of a point: rx = a_x . (P + ...), ry = a_y . P
        Ax = np.stack([np.ones(33), np.zeros(33), xn], axis=1) * w2[:, None]  # [33, 3]
        Ay = np.stack([np.zeros(33), -np.ones(33), yn], axis=1) * w2[:, None]
        wi2 = (w_init[FREE] ** 2).reshape(-1)
        wz2 = (self.w_zero[FREE] ** 2).reshape(-1)
        anchor = rot if anchor is None else anchor
        dev = log_rot(np.swapaxes(anchor[FREE], 1, 2) @ rot[FREE]).reshape(-1)  # log(anchor^T rot), accumulated
        cur = log_rot(rot[FREE]).reshape(-1)  # log(rot), accumulated
        lam = 1e-4
        wsum = (wi2 + wz2).reshape(nF, 3)
        blocks = self._prior_blocks
        for _ in range(self.iterations if iterations is None else iterations):
            G, p, P = self.fk(rot, t)
            Jp = self._jacobian(p, P)  # [33, 3, nP]
            # 3D segment directions: r = Pi (C P), J = Pi (C Jp).
            Y = (Pi @ (self.C @ Jp.reshape(33, -1)).reshape(len(d), 3, -1)).reshape(-1, Jp.shape[2])  # [3S, nP]
            r3 = (Pi @ (self.C @ P)[:, :, None]).reshape(-1)
            H = _gram(Y)
            g = Y.T @ r3
            # 2D reprojection (algebraic, metres at depth): rx = X - xn Z, ry = Y - yn Z (camera axes).
            Jx = Jp[:, 0] * w2[:, None] + Jp[:, 2] * (xn * w2)[:, None]
            Jy = Jp[:, 2] * (yn * w2)[:, None] - Jp[:, 1] * w2[:, None]
            rx = (P[:, 0] + xn * P[:, 2]) * w2
            ry = (yn * P[:, 2] - P[:, 1]) * w2
            H += _gram(Jx) + _gram(Jy)
            g += Jx.T @ rx + Jy.T @ ry
            # Priors on the local rotations: towards the initialisation and weakly towards zero.
            # Local eps = G^T w, so in world terms the blocks are G diag(w^2) G^T and G grad.
            GF = G[FREE]
            Hp = (GF * wsum[:, None, :]) @ np.swapaxes(GF, 1, 2)
            gp = (GF @ (wi2 * dev + wz2 * cur).reshape(nF, 3, 1))[..., 0]
            H.reshape(-1)[blocks] += Hp.reshape(-1)
            g[:nR] += gp.reshape(-1)
            H[self._diag] += lam + 1e-3 * H[self._diag]
            delta = -_spd_solve(H, g)
            eps = (np.swapaxes(GF, 1, 2) @ delta[:nR].reshape(nF, 3, 1))[..., 0]  # local
            rot[FREE] = rot[FREE] @ rodrigues(eps)
            t = t + delta[nR:]
            dev += eps.reshape(-1)
            cur += eps.reshape(-1)
            if np.abs(eps).max() < STEP_TOL_RAD and np.abs(delta[nR:]).max() < STEP_TOL_M:
                break  # converged (typical for a warm start on slow motion)
        return rot, t

    def lift(self, obs: BodyObservation) -> np.ndarray:
        """World landmarks made consistent with the image: each point on its pixel's viewing ray at
        the depth MediaPipe's world landmarks give it (tracking axes, hip-centred). [33, 3]

        The depth of the hips is the one at which the image spans the world landmarks' size
        (median over limb and trunk segments, in MediaPipe's scale).
        """
        W, n, w = obs.world, obs.image_n, obs.weight
        C = self._lift_C
        seg_world = np.sqrt(((C @ W)[:, :2] ** 2).sum(axis=1))
        seg_img = np.sqrt(((C @ n) ** 2).sum(axis=1))
        ok = (np.minimum(w[self._lift_a], w[self._lift_b]) > 0.5) & (seg_img > 1e-3)
        if np.count_nonzero(ok) < 2:
            return W
        z0 = float(np.median(seg_world[ok] / seg_img[ok]))
        depth = z0 - W[:, 2]  # tracking z points to the camera: camera depth = z0 - world z
        if depth.min() <= 0.05 * z0:
            return W
        cam = np.concatenate([n * depth[:, None], depth[:, None]], axis=1)
        X = cam * np.array([1.0, -1.0, -1.0])
        return X - 0.5 * (X[_L["left_hip"]] + X[_L["right_hip"]])

    def fit(self, obs: BodyObservation, prev: BodyResult | None = None) -> BodyResult:
        """Analytic initialisation, translation, refinement. Never raises on odd input.

        Args:
            obs: this frame's evidence.
            prev: the previous frame's result when it is recent (consecutive video frames): the
                refinement then starts from it (warm start; the prior still pulls towards this
                frame's analytic initialisation), which converges in fewer steps.
        """
        lifted = self.lift(obs)
        palms = self._hands_from_pose(lifted, obs.weight)
        hand_rot = dict(obs.hand_rot)
        for i, side in enumerate(("left", "right")):
            offset = None if obs.palm_offset is None else obs.palm_offset.get(side)
            if hand_rot.get(side) is None and offset is not None and np.isfinite(palms[i]).all():
                hand_rot[side] = palms[i] @ offset
        weight = obs.weight.copy()
        for side in ("left", "right"):
            if hand_rot.get(side) is not None:  # the hand model's palm beats the pose's rough hand points
                weight[[_L[f"{side}_pinky"], _L[f"{side}_index"], _L[f"{side}_thumb"]]] = 0.0
        obs = BodyObservation(lifted, obs.image_n, weight, hand_rot, obs.head_rot)
        init, legs = self.initialise(obs, palms)
        w_init = self.w_init.copy()
        for side in ("left", "right"):
            if obs.hand_rot.get(side) is not None:
                w_init[_J[f"{side}_wrist"]] = 0.3
            if not legs[side]:  # an unseen leg stands: keep it at its initialisation
                w_init[_LEG_JOINTS[side]] = 1.0
        if obs.head_rot is not None:
            w_init[_J["head"]] = 0.3
        if prev is not None:
            # Limbs, neck and head continue from the last frame (global rotations); the pelvis and
            # spine restart from this frame's initialisation: the landmarks hardly constrain how
            # a trunk's bend is shared between them, and a warm start would let that drift.
            G_prev, G_init = self.globals(prev.rot), self.globals(init)
            G_prev[_TRUNK] = quat_to_matrix(nlerp(quat_from_matrix(G_prev[_TRUNK]), quat_from_matrix(G_init[_TRUNK]), TRUNK_RESTART))
            for side in ("left", "right"):
                if not legs[side]:
                    G_prev[_LEG_JOINTS[side]] = G_init[_LEG_JOINTS[side]]
            start = self.locals(G_prev)
            t = prev.transl.copy()
        else:
            start = init
            _, _, P0 = self.fk(init)
            t = self.solve_transl(P0, obs)
            if t is None:
                t = np.array([0.0, 0.0, -3.0])
        iterations = self.iterations if prev is not None else self.iterations + COLD_EXTRA_ITERATIONS
        rot, t = self.refine(start, t, obs, w_init, anchor=init, iterations=iterations)
        # The face mesh and the hand model know the head's and the hands' orientations best: keep
        # them exactly (the refinement placed the neck and the forearms).
        G = self.globals(rot)
        if obs.head_rot is not None:
            rot[_J["head"]] = G[_J["neck"]].T @ obs.head_rot
        for side in ("left", "right"):
            if obs.hand_rot.get(side) is not None:
                rot[_J[f"{side}_wrist"]] = G[_J[f"{side}_elbow"]].T @ obs.hand_rot[side]
        sides = ("left", "right")
        seen = {side: palms[i] if np.isfinite(palms[i]).all() else None for i, side in enumerate(sides)}
        return BodyResult(rot=rot, transl=t, legs_seen=legs, palms=seen)
