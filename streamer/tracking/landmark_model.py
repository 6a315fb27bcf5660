"""The landmark model: which SMPL-X body point each MediaPipe landmark corresponds to.

Used in both directions: the fitter (:mod:`.fit_body`, :mod:`.fit_hands`, :mod:`.fit_face`)
moves these points to the observed landmarks, and :func:`synthesize_frames` computes them for a
known pose to make the landmarks MediaPipe would report (``streamer eval fit``, tests).

Pose (33 landmarks, MediaPipe BlazePose order). ``J(name)`` is an SMPL-X joint centre, ``V(name)``
a vertex id of ``smplx.vertex_ids.vertex_ids['smplx']``; offsets are metres in the rest (T-pose)
frame (+Y up, body faces +Z, left = +X) and the point moves rigidly with the *attached* joint:

====  ==================  ===========================================  ==============
 idx  landmark            body point                                   attached to
====  ==================  ===========================================  ==============
 0    nose                V(nose)                                      head
 1-3  left eye inner,     V(leye) + (-0.015, 0, -0.008) / V(leye) /    head
      centre, outer       V(leye) + (+0.017, 0, -0.010)
 4-6  right eye ...       mirror images (x -> -x) with V(reye)         head
 7, 8 left/right ear      V(lear) + (-0.024, 0.012, 0.028), mirrored   head
                          for V(rear): MediaPipe marks the front of the
                          ear (tragus), SMPL-X's ids the outer ear
 9,10 mouth left/right    V(nose) + (+-0.024, -0.024, -0.028)          head
11-16 shoulders, elbows,  J(left/right_shoulder, _elbow, _wrist)       the joint
      wrists
17-22 pinky, index,       J(left/right_pinky1, _index1, _thumb2):      wrist
      thumb               the knuckles MediaPipe marks
23,24 left/right hip      J(left/right_hip) + (+-0.035, +0.040, 0):    pelvis
                          MediaPipe's hips sit wider and higher than
                          SMPL-X's hip joint centres
25-28 knees, ankles       J(left/right_knee, _ankle)                   the joint
29,30 heels               V(LHeel), V(RHeel)                           ankle
31,32 foot index          V(LBigToe), V(RBigToe)                       ankle
====  ==================  ===========================================  ==============

The offsets of ears, mouth corners and hips were measured: least-squares corrections of the
2D residuals of fits to MediaPipe Pose on the shared tai-chi video, rounded (the other points
needed under 1.5 cm and were left as defined).

Hands (21 landmarks per hand, MediaPipe Hands order): 0 wrist = J(wrist); per finger the three
joints of the SMPL-X finger chain then the fingertip vertex, i.e. thumb CMC/MCP/IP/tip =
J(thumb1/2/3), V(thumb); index MCP/PIP/DIP/tip = J(index1/2/3), V(index); likewise middle, ring,
pinky. Each point moves with its own joint (tips with the finger's third joint).

Face (Face Mesh, 468/478 landmarks): a sparse set of indices (:data:`FACE_POINTS`) with positions
relative to the eye centres (``J(left_eye)``, ``J(right_eye)``), scaled by the model's
interocular distance: eye corners, eyelids, nose bridge and tip, forehead, cheeks and mouth
corners move with the head; inner lower lip and chin with the jaw; iris centres (468 right,
473 left, with refinement) sit on the front of the eyeballs and turn with the eyes.

Face Mesh and Hands report a small object's landmarks in weak perspective (x, y pixels, z relative
depth on the x scale); for a face or hand off the optical axis that is, to first order, an
orthographic view of its *apparent* pose (its pose relative to its viewing ray). Synthesis makes
them so, and the fitter turns them back by the rotation from the optical axis to the ray.

Frames: landmarks follow :mod:`.landmarks`. The *tracking world* is the camera frame turned by
180 degrees about its x axis (``camera = diag(1, -1, -1) @ world``): +Y up, the camera at the
origin looking down -Z, so a person facing the camera faces +Z as in SMPL-X.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch
from smplx.vertex_ids import vertex_ids as _SMPLX_VERTEX_IDS

from ..body.joints import JOINT_INDEX
from ..body.model import BodyModel
from ..body.pose import SmplxPose
from .landmarks import FaceLandmarks, FrameLandmarks, HandLandmarks, PoseLandmarks

VERTEX_IDS: dict[str, int] = dict(_SMPLX_VERTEX_IDS["smplx"])

#: world (tracking) -> camera (OpenCV) axes, and back (its own inverse).
WORLD_TO_CAMERA = np.diag([1.0, -1.0, -1.0])

POSE_LANDMARK_NAMES: tuple[str, ...] = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
    "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_pinky",
    "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel", "right_heel",
    "left_foot_index", "right_foot_index",
)  # fmt: skip
HAND_LANDMARK_NAMES: tuple[str, ...] = (
    "wrist", "thumb_cmc", "thumb_mcp", "thumb_ip", "thumb_tip", "index_mcp", "index_pip", "index_dip",
    "index_tip", "middle_mcp", "middle_pip", "middle_dip", "middle_tip", "ring_mcp", "ring_pip",
    "ring_dip", "ring_tip", "pinky_mcp", "pinky_pip", "pinky_dip", "pinky_tip",
)  # fmt: skip
POSE_INDEX = {name: i for i, name in enumerate(POSE_LANDMARK_NAMES)}

#: Pose landmark pairs (left, right) swapped by mirroring.
POSE_MIRROR = tuple(
    POSE_INDEX[n.replace("left", "right")] if "left" in n else POSE_INDEX[n.replace("right", "left")] if "right" in n else i
    for i, n in enumerate(POSE_LANDMARK_NAMES)
)

#: Hand landmarks of each SMPL-X finger chain (SMPL-X order: index, middle, pinky, ring, thumb),
#: four per finger: the three joints then the tip.
FINGER_LANDMARKS = np.array([[5, 6, 7, 8], [9, 10, 11, 12], [17, 18, 19, 20], [13, 14, 15, 16], [1, 2, 3, 4]])
_FINGER_NAMES = ("index", "middle", "pinky", "ring", "thumb")


@dataclass(frozen=True)
class Anchor:
    """A body point: a joint centre or a vertex, plus an offset (metres, rest frame).

    ``attach`` is the joint it moves rigidly with in the fitter's model.
    """

    attach: int
    joint: int | None = None
    vertex: int | None = None
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)


def _j(name: str) -> int:
    return JOINT_INDEX[name]


def _pose_anchors() -> tuple[Anchor, ...]:
    head = _j("head")
    a: list[Anchor] = []
    a.append(Anchor(head, vertex=VERTEX_IDS["nose"]))
    for side, sx in (("l", 1.0), ("r", -1.0)):
        eye = VERTEX_IDS[f"{side}eye"]
        a.append(Anchor(head, vertex=eye, offset=(-0.015 * sx, 0.0, -0.008)))
        a.append(Anchor(head, vertex=eye))
        a.append(Anchor(head, vertex=eye, offset=(0.017 * sx, 0.0, -0.010)))
    a.append(Anchor(head, vertex=VERTEX_IDS["lear"], offset=(-0.024, 0.012, 0.028)))
    a.append(Anchor(head, vertex=VERTEX_IDS["rear"], offset=(0.024, 0.012, 0.028)))
    a.append(Anchor(head, vertex=VERTEX_IDS["nose"], offset=(0.024, -0.024, -0.028)))
    a.append(Anchor(head, vertex=VERTEX_IDS["nose"], offset=(-0.024, -0.024, -0.028)))
    for part in ("shoulder", "elbow", "wrist"):
        for side in ("left", "right"):
            a.append(Anchor(_j(f"{side}_{part}"), joint=_j(f"{side}_{part}")))
    for finger in ("pinky1", "index1", "thumb2"):
        for side in ("left", "right"):
            a.append(Anchor(_j(f"{side}_wrist"), joint=_j(f"{side}_{finger}")))
    for side, sx in (("left", 1.0), ("right", -1.0)):
        a.append(Anchor(_j("pelvis"), joint=_j(f"{side}_hip"), offset=(0.035 * sx, 0.040, 0.0)))
    for part in ("knee", "ankle"):
        for side in ("left", "right"):
            a.append(Anchor(_j(f"{side}_{part}"), joint=_j(f"{side}_{part}")))
    a.append(Anchor(_j("left_ankle"), vertex=VERTEX_IDS["LHeel"]))
    a.append(Anchor(_j("right_ankle"), vertex=VERTEX_IDS["RHeel"]))
    a.append(Anchor(_j("left_ankle"), vertex=VERTEX_IDS["LBigToe"]))
    a.append(Anchor(_j("right_ankle"), vertex=VERTEX_IDS["RBigToe"]))
    assert len(a) == len(POSE_LANDMARK_NAMES)
    return tuple(a)


def _hand_anchors(side: str) -> tuple[Anchor, ...]:
    s = side[0]
    a = [Anchor(_j(f"{side}_wrist"), joint=_j(f"{side}_wrist"))]
    by_landmark: dict[int, Anchor] = {}
    for finger, chain in zip(_FINGER_NAMES, FINGER_LANDMARKS):
        joints = [_j(f"{side}_{finger}{k}") for k in (1, 2, 3)]
        for lm, joint in zip(chain[:3], joints):
            by_landmark[int(lm)] = Anchor(joint, joint=joint)
        by_landmark[int(chain[3])] = Anchor(joints[2], vertex=VERTEX_IDS[f"{s}{finger}"])
    a += [by_landmark[i] for i in range(1, 21)]
    return tuple(a)


POSE_ANCHORS: tuple[Anchor, ...] = _pose_anchors()
HAND_ANCHORS: dict[str, tuple[Anchor, ...]] = {"left": _hand_anchors("left"), "right": _hand_anchors("right")}

# -- face -------------------------------------------------------------------------------------

#: Face Mesh indices used, with (attached part, position). Positions are metres for an
#: interocular distance of 63 mm, relative to the midpoint of the eye centres, rest frame. They
#: were measured (then rounded and made symmetric): Face Mesh points of the shared tai-chi video
#: expressed in the head frame that the pose landmarks give the fitted model (median over frames),
#: so that the face mesh and the pose agree on the head's orientation; the eyelids were opened to
#: an eye openness of about 0.29 and the lips closed.
FACE_POINTS: dict[int, tuple[str, tuple[float, float, float]]] = {
    33: ("head", (-0.044, 0.005, 0.009)),  # right eye, outer corner
    133: ("head", (-0.018, 0.004, 0.014)),  # right eye, inner corner
    362: ("head", (0.018, 0.004, 0.014)),  # left eye, inner corner
    263: ("head", (0.044, 0.005, 0.009)),  # left eye, outer corner
    159: ("head", (-0.0316, 0.0080, 0.017)),  # right upper eyelid
    145: ("head", (-0.0310, 0.0005, 0.015)),  # right lower eyelid
    386: ("head", (0.0316, 0.0080, 0.017)),  # left upper eyelid
    374: ("head", (0.0310, 0.0005, 0.015)),  # left lower eyelid
    168: ("head", (0.000, 0.0065, 0.030)),  # nose bridge between the eyes
    1: ("head", (0.000, -0.042, 0.044)),  # nose tip
    10: ("head", (0.000, 0.059, 0.032)),  # forehead
    234: ("head", (-0.072, -0.008, -0.047)),  # right cheek edge
    454: ("head", (0.072, -0.008, -0.047)),  # left cheek edge
    61: ("head", (-0.024, -0.0705, 0.006)),  # mouth, right corner
    291: ("head", (0.024, -0.0705, 0.006)),  # mouth, left corner
    13: ("head", (0.000, -0.071, 0.019)),  # upper lip, inner
    14: ("jaw", (0.000, -0.071, 0.019)),  # lower lip, inner
    152: ("jaw", (0.000, -0.118, -0.004)),  # chin
}
#: Rigid face points used for head orientation (not moved by jaw, lids or gaze).
FACE_RIGID = (33, 133, 362, 263, 168, 1, 10, 234, 454)
FACE_IRIS = {"right": 468, "left": 473}
EYEBALL_RADIUS = 0.012  # metres, SMPL-X eye joint to the front of the cornea (approx.)
_IOD_REF = 0.063


class LandmarkModel:
    """The landmark model evaluated for one body shape.

    Attributes (numpy float64, rest frame, metres):
        rest_joints: [55, 3] joint centres of the shaped T-pose.
        pose_attach / pose_offset: [33] joint ids, [33, 3] point minus attached joint, rest.
        hand_attach / hand_offset: per side [21], [21, 3].
        face_attach / face_offset: per :data:`FACE_POINTS` index: joint id, offset [3].
        pose_rest / hand_rest: rest positions of the points, [33, 3] / per side [21, 3].
    """

    def __init__(self, body: BodyModel, betas: torch.Tensor | np.ndarray | None = None) -> None:
        b = None if betas is None else torch.as_tensor(np.asarray(betas), dtype=torch.float32).to(body.device)
        with torch.no_grad():
            verts = body.shaped_vertices(b).double().cpu().numpy()
            joints = body.rest_joints(b).double().cpu().numpy()
        self.rest_joints = joints
        self.pose_attach, self.pose_rest = self._resolve(POSE_ANCHORS, verts, joints)
        self.pose_offset = self.pose_rest - joints[self.pose_attach]
        self.hand_attach: dict[str, np.ndarray] = {}
        self.hand_rest: dict[str, np.ndarray] = {}
        self.hand_offset: dict[str, np.ndarray] = {}
        for side, anchors in HAND_ANCHORS.items():
            self.hand_attach[side], self.hand_rest[side] = self._resolve(anchors, verts, joints)
            self.hand_offset[side] = self.hand_rest[side] - joints[self.hand_attach[side]]
        le, re = joints[JOINT_INDEX["left_eye"]], joints[JOINT_INDEX["right_eye"]]
        self.iod = float(np.linalg.norm(le - re)) or _IOD_REF
        mid = 0.5 * (le + re)
        self.face_index = np.array(list(FACE_POINTS), dtype=np.int64)
        rest, attach = [], []
        for idx, (part, pos) in FACE_POINTS.items():
            rest.append(mid + np.asarray(pos) * (self.iod / _IOD_REF))
            attach.append(JOINT_INDEX["jaw"] if part == "jaw" else JOINT_INDEX["head"])
        self.face_rest = np.array(rest)  # [F, 3]
        self.face_attach = np.array(attach)
        self.eye_centres = {"left": le, "right": re}

    @staticmethod
    def _resolve(anchors: Iterable[Anchor], verts: np.ndarray, joints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        attach, points = [], []
        for a in anchors:
            base = joints[a.joint] if a.joint is not None else verts[a.vertex]
            points.append(base + np.asarray(a.offset))
            attach.append(a.attach)
        return np.array(attach, dtype=np.int64), np.array(points)

    def face_rest_point(self, index: int) -> np.ndarray:
        """Rest position of a Face Mesh landmark of :data:`FACE_POINTS`. [3]"""
        return self.face_rest[int(np.flatnonzero(self.face_index == index)[0])]


# -- synthesis --------------------------------------------------------------------------------


def posed_points(body: BodyModel, poses: SmplxPose) -> dict[str, np.ndarray]:
    """Positions of every landmark's body point for a batch of poses (tracking world, metres).

    Each point moves rigidly with its attached joint (the landmark model's definition), so head
    points ignore the skinning blend of the mesh around the ears and the eyeballs' gaze.

    Returns float64 arrays: ``pose`` [T, 33, 3], ``left_hand`` / ``right_hand`` [T, 21, 3],
    ``face`` [T, F, 3] (:data:`FACE_POINTS` order), ``iris_left`` / ``iris_right`` [T, 3],
    ``joints`` [T, 55, 3], ``A`` [T, 55, 4, 4] (rigid transforms of the joints).
    """
    with torch.no_grad():
        A_t, joints = body.joint_transforms(poses)
    A = A_t.double().cpu().numpy()
    out = {"joints": joints.double().cpu().numpy(), "A": A}
    betas = poses.betas.detach().cpu().numpy()
    shapes, which = np.unique(betas, axis=0, return_inverse=True)
    which = which.reshape(-1)
    for k, b in enumerate(shapes):
        rows = np.flatnonzero(which == k)
        lm = LandmarkModel(body, b)
        At = A[rows]

        def rigid(attach: np.ndarray, rest: np.ndarray) -> np.ndarray:
            Aa = At[:, attach]  # [T, N, 4, 4]
            return np.einsum("tnij,nj->tni", Aa[..., :3, :3], rest) + Aa[..., :3, 3]

        parts = {
            "pose": rigid(lm.pose_attach, lm.pose_rest),
            "left_hand": rigid(lm.hand_attach["left"], lm.hand_rest["left"]),
            "right_hand": rigid(lm.hand_attach["right"], lm.hand_rest["right"]),
            "face": rigid(lm.face_attach, lm.face_rest),
        }
        for side in ("left", "right"):
            iris = lm.eye_centres[side] + np.array([0.0, 0.0, EYEBALL_RADIUS])
            parts[f"iris_{side}"] = rigid(np.array([JOINT_INDEX[f"{side}_eye"]]), iris[None])[:, 0]
        for name, value in parts.items():
            if name not in out:
                out[name] = np.empty((len(poses),) + value.shape[1:])
            out[name][rows] = value
    return out


def project(points: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tracking-world points to pixels. [..., 3] -> (uv [..., 2], depth [...] metres along the optical axis)"""
    cam = points @ WORLD_TO_CAMERA.T
    z = cam[..., 2]
    uv = cam[..., :2] / z[..., None] * np.array([K[0, 0], K[1, 1]]) + np.array([K[0, 2], K[1, 2]])
    return uv, z


def synthesize_frames(
    body: BodyModel,
    poses: SmplxPose,
    K: np.ndarray,
    width: int,
    height: int,
    noise_mm: float = 0.0,
    seed: int = 0,
    fps: float = 30.0,
    hands: bool = True,
    face: bool = True,
) -> list[FrameLandmarks]:
    """The landmarks MediaPipe would report for poses seen by a pinhole camera at the world origin.

    The poses must be in the tracking world (camera at the origin looking down -Z; place the
    body in front of it with ``transl``). Gaussian noise of ``noise_mm`` (standard deviation per
    coordinate) is added to every world landmark and, converted to pixels at the point's depth,
    to every image landmark. Visibility is 1 everywhere.

    Args:
        body: the body model the poses belong to.
        poses: [T, ...] SMPL-X poses, tracking world.
        K: [3, 3] intrinsics, pixels.
        width, height: image size, pixels.

    Returns:
        T :class:`FrameLandmarks` in the conventions of :mod:`.landmarks` (world landmarks in
        MediaPipe's frame: camera axes, metres, origin between the hip landmarks).
    """
    K = np.asarray(K, dtype=np.float64)
    rng = np.random.default_rng(seed)
    sigma = noise_mm / 1000.0
    pts = posed_points(body, poses)
    frames = []
    for t in range(len(poses)):
        frame = FrameLandmarks(width=int(width), height=int(height), timestamp_ms=1000.0 * t / fps)
        pose_w = pts["pose"][t]
        frame.pose = _synth_pose(pose_w, K, sigma, rng)
        if hands:
            frame.left_hand = _synth_hand(pts["left_hand"][t], K, sigma, rng)
            frame.right_hand = _synth_hand(pts["right_hand"][t], K, sigma, rng)
        if face:
            frame.face = _synth_face(pts["face"][t], pts["iris_left"][t], pts["iris_right"][t], K, sigma, rng)
        frames.append(frame)
    return frames


def _image_landmarks(points: np.ndarray, ref_depth: float, K: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    uv, z = project(points, K)
    uv = uv + rng.normal(size=uv.shape) * (sigma * K[0, 0] / np.maximum(z, 1e-3))[:, None]
    rel = (z - ref_depth) * K[0, 0] / max(ref_depth, 1e-3)  # MediaPipe-like relative depth, pixels
    return np.concatenate([uv, rel[:, None]], axis=1).astype(np.float32)


def _synth_pose(points: np.ndarray, K: np.ndarray, sigma: float, rng: np.random.Generator) -> PoseLandmarks:
    hip_mid = 0.5 * (points[POSE_INDEX["left_hip"]] + points[POSE_INDEX["right_hip"]])
    world = (points - hip_mid) @ WORLD_TO_CAMERA.T + rng.normal(size=points.shape) * sigma
    depth = float((hip_mid @ WORLD_TO_CAMERA.T)[2])
    image = _image_landmarks(points, depth, K, sigma, rng)
    return PoseLandmarks(image=image, world=world.astype(np.float32), visibility=np.ones(len(points), np.float32))


def view_rotation(pixel: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Rotation (tracking world) from the optical axis to the viewing ray through ``pixel``. [3, 3]"""
    from .rotations import rotation_between

    ray_cam = np.array([(pixel[0] - K[0, 2]) / K[0, 0], (pixel[1] - K[1, 2]) / K[1, 1], 1.0])  # K^-1 (u, v, 1), no skew
    return rotation_between(np.array([0.0, 0.0, -1.0]), WORLD_TO_CAMERA @ ray_cam)


def _weak_perspective(points: np.ndarray, centre: int, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Face Mesh / Hands style coordinates of a small object (weak perspective along its ray).

    The object is seen as a scaled orthographic view along the viewing ray of point ``centre``:
    its points, turned from the ray frame to the optical axis (their *apparent* pose), are
    projected orthographically at the centre's depth. Returns image [N, 3] (pixels, z relative to
    the centre on the x scale) and the apparent offsets in camera axes, metres [N, 3].
    """
    uv0, z0 = project(points[centre], K)
    R_view = view_rotation(uv0, K)
    apparent = ((points - points[centre]) @ R_view) @ WORLD_TO_CAMERA.T  # R_view^T (p - c), camera axes
    s = K[0, 0] / z0
    image = np.concatenate([uv0 + s * apparent[:, :2], s * apparent[:, 2:]], axis=1)
    return image, apparent


def _synth_hand(points: np.ndarray, K: np.ndarray, sigma: float, rng: np.random.Generator) -> HandLandmarks:
    """Hands: image landmarks and world landmarks (metres, hand-centred) of the apparent pose."""
    image, apparent = _weak_perspective(points, 0, K)
    z0 = float(project(points[0], K)[1])
    image[:, :2] += rng.normal(size=(len(points), 2)) * sigma * K[0, 0] / z0
    world = apparent - apparent.mean(axis=0) + rng.normal(size=points.shape) * sigma
    return HandLandmarks(image=image.astype(np.float32), world=world.astype(np.float32))


def _synth_face(face: np.ndarray, iris_l: np.ndarray, iris_r: np.ndarray, K: np.ndarray, sigma: float,
                rng: np.random.Generator) -> FaceLandmarks:
    """Face Mesh: weak perspective along the ray of the nose bridge (168); a tenth of the body noise."""
    pts = np.concatenate([face, iris_r[None], iris_l[None]], axis=0)
    centre = list(FACE_POINTS).index(168)
    img, _ = _weak_perspective(pts, centre, K)
    z0 = float(project(pts[centre], K)[1])
    img[:, :2] += rng.normal(size=(len(pts), 2)) * 0.1 * sigma * K[0, 0] / z0
    full = np.repeat(img.mean(axis=0, keepdims=True), 478, axis=0)
    idx = list(FACE_POINTS) + [FACE_IRIS["right"], FACE_IRIS["left"]]
    full[idx] = img
    return FaceLandmarks(image=full.astype(np.float32))
