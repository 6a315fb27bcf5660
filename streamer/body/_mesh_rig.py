"""Rigging of the generated mannequin (private helper of ``generate``).

Given the built surface (``_mesh_build.Mesh``) and the designed skeleton, this module derives
the remaining SMPL-X arrays: skinning weights, the joint regressor, shape and expression blend
shapes, the hand pose PCA basis and the face landmark tables. All of it is closed-form and
deterministic; see the docstring of :mod:`streamer.body.generate` for the design.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike

from streamer.body import _mesh_shape as shp
from streamer.body._mesh_build import Mesh
from streamer.body.joints import JOINT_INDEX, JOINT_NAMES, NUM_JOINTS

Array = np.ndarray
J = JOINT_INDEX


def smoothstep(e0: ArrayLike, e1: ArrayLike, x: ArrayLike) -> Array:
    """0 below ``e0``, 1 above ``e1``, C1 cubic in between (``e0 > e1`` flips the ramp)."""
    t = np.clip((np.asarray(x) - np.asarray(e0)) / (np.asarray(e1) - np.asarray(e0)), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _bump(v: Array, c: Array, sigma: float) -> Array:
    """Compact Gaussian bump around ``c`` (exactly zero beyond 3 sigma)."""
    r2 = np.sum((v - c) ** 2, axis=1) / (sigma * sigma)
    return np.exp(-0.5 * r2) * smoothstep(9.0, 6.0, r2)


def _seg_dist(p: Array, a: Array, b: Array) -> tuple[Array, Array]:
    """Distance from points [N, 3] to segment a-b, and the closest points."""
    ab = b - a
    t = np.clip(((p - a) @ ab) / max(float(ab @ ab), 1e-12), 0.0, 1.0)
    c = a + t[:, None] * ab
    return np.linalg.norm(p - c, axis=1), c


# ---------------------------------------------------------------------------------------------
# Bones: the segments that stand for each joint's rigid part
# ---------------------------------------------------------------------------------------------


def bone_segments(jp: Array) -> dict[int, list[tuple[Array, Array]]]:
    """Segments per joint index: the body part that joint's rotation moves."""
    segs: dict[int, list[tuple[Array, Array]]] = {}

    def add(name: str, a: ArrayLike, b: ArrayLike) -> None:
        segs.setdefault(J[name], []).append((np.asarray(a, float), np.asarray(b, float)))

    p = jp
    add("pelvis", p[J["pelvis"]], p[J["spine1"]])
    add("pelvis", p[J["left_hip"]], p[J["right_hip"]])
    add("spine1", p[J["spine1"]], p[J["spine2"]])
    add("spine2", p[J["spine2"]], p[J["spine3"]])
    add("spine3", p[J["spine3"]], p[J["neck"]])
    add("neck", p[J["neck"]], p[J["head"]])
    add("head", p[J["head"]], (0.0, 0.39, -0.01))
    add("head", p[J["head"]] + (0.0, 0.03, 0.0), (0.0, 0.29, 0.07))
    add("head", p[J["head"]], (0.0, 0.215, 0.055))
    for side in ("left", "right"):
        sx = 1.0 if side == "left" else -1.0
        add(f"{side}_hip", p[J[f"{side}_hip"]], p[J[f"{side}_knee"]])
        add(f"{side}_knee", p[J[f"{side}_knee"]], p[J[f"{side}_ankle"]])
        add(f"{side}_ankle", p[J[f"{side}_ankle"]], p[J[f"{side}_foot"]])
        add(f"{side}_ankle", p[J[f"{side}_ankle"]], p[J[f"{side}_ankle"]] + (0.0, -0.035, -0.045))
        add(f"{side}_foot", p[J[f"{side}_foot"]], p[J[f"{side}_foot"]] + (sx * -0.006, 0.0, 0.07))
        add(f"{side}_collar", p[J[f"{side}_collar"]], p[J[f"{side}_shoulder"]])
        add(f"{side}_shoulder", p[J[f"{side}_shoulder"]], p[J[f"{side}_elbow"]])
        add(f"{side}_elbow", p[J[f"{side}_elbow"]], p[J[f"{side}_wrist"]])
        for f in shp.FINGERS:
            pts = np.array(f.points) if side == "left" else shp.mirror(np.array(f.points))
            if f.name == "thumb":
                add(f"{side}_wrist", p[J[f"{side}_wrist"]], pts[0])
            else:
                add(f"{side}_wrist", p[J[f"{side}_wrist"]], pts[0])
            for k in range(3):
                add(f"{side}_{f.name}{k + 1}", pts[k], pts[k + 1])
    return segs


def _allowed(label: str) -> list[str]:
    """Joints a vertex of part ``label`` may be skinned to (the distance field picks among them)."""
    if label.startswith("eye_"):
        return ["left_eye" if label.endswith("l") else "right_eye"]
    if label in ("head",):
        return ["neck", "head"]
    if label == "neck":
        return ["spine3", "neck", "head", "left_collar", "right_collar"]
    if label == "torso":
        return ["pelvis", "left_hip", "right_hip", "spine1", "spine2", "spine3", "neck",
                "left_collar", "right_collar", "left_shoulder", "right_shoulder"]  # fmt: skip
    side = "left" if label.split("_")[1] == "l" else "right"
    if label.startswith("arm_"):
        return ["spine3", f"{side}_collar", f"{side}_shoulder", f"{side}_elbow", f"{side}_wrist"]
    fingers = [f"{side}_{f.name}{k}" for f in shp.FINGERS for k in (1, 2, 3)]
    if label.startswith("hand_"):
        return [f"{side}_elbow", f"{side}_wrist", *fingers]
    if label.startswith("finger_"):
        name = label.split("_")[2]
        return [f"{side}_wrist"] + [f"{side}_{name}{k}" for k in (1, 2, 3)]
    if label.startswith("leg_"):
        return ["pelvis", "spine1", "left_hip", "right_hip", f"{side}_knee", f"{side}_ankle"]
    if label.startswith("foot_"):
        return [f"{side}_knee", f"{side}_ankle", f"{side}_foot"]
    raise AssertionError(f"internal: unknown part label {label}")


def jaw_mask(v: Array) -> Array:
    """How much a head or neck vertex belongs to the lower jaw (chin, lower lip, jaw line). [V]."""
    x, y, z = np.abs(v[:, 0]), v[:, 1], v[:, 2]
    # the boundary runs along the mouth line, then rises towards the jaw joint in front of the ear
    t = np.clip((0.07 - z) / 0.075, 0.0, 1.0)
    y_b = shp.MOUTH_Y + t * 0.035
    width = 0.003 + t * 0.012
    below = smoothstep(y_b + width, y_b - width, y)
    front = smoothstep(-0.02, 0.01, z)
    # under the jaw the weight fades out towards the throat over about 2 cm
    under = smoothstep(-0.012, 0.008, (y - 0.19) + 0.45 * (z - 0.03))
    return below * front * under * smoothstep(0.085, 0.07, x)


def skinning_weights(mesh: Mesh, jp: Array) -> Array:
    """Blend weights [V, 55]: a softmin over distances to the bones a vertex may follow.

    The softness scales with the distance to the nearest bone, so a joint's blend zone is about
    as long as the limb is thick there; the lower face is then split off to the jaw.
    """
    v = mesh.verts
    segs = bone_segments(jp)
    dist = np.full((len(v), NUM_JOINTS), np.inf)
    for j, lst in segs.items():
        for a, b in lst:
            dist[:, j] = np.minimum(dist[:, j], _seg_dist(v, a, b)[0])
    allowed = np.zeros((len(v), NUM_JOINTS), bool)
    for k, name in enumerate(mesh.label_names):
        sel = mesh.labels == k
        for jn in _allowed(name):
            allowed[sel, J[jn]] = True
    w = np.zeros((len(v), NUM_JOINTS))
    eye = np.array([n.startswith("eye_") for n in mesh.label_names])[mesh.labels]
    d = np.where(allowed, dist, np.inf)
    d[eye] = np.inf
    dmin = d.min(axis=1, keepdims=True)
    dmin[eye] = 0.0
    # wider blends over the neck (a head turn twists the whole neck, not one ring of it)
    soft = 0.5 + 0.45 * smoothstep(0.12, 0.2, v[:, 1:2]) * smoothstep(0.14, 0.1, np.abs(v[:, 0:1]))
    sigma = np.clip(soft * dmin, 0.004, 0.05)
    with np.errstate(invalid="ignore"):
        w = np.exp(-(d * d - dmin * dmin) / (2.0 * sigma * sigma))
    w[~allowed] = 0.0
    w[eye] = 0.0
    for k, name in enumerate(mesh.label_names):
        if name.startswith("eye_"):
            w[mesh.labels == k, J["left_eye" if name.endswith("l") else "right_eye"]] = 1.0
    w = np.where(w < 2e-3, 0.0, w)
    w /= w.sum(axis=1, keepdims=True)
    head = np.array([n in ("head", "neck") for n in mesh.label_names])[mesh.labels]
    m = np.where(head, jaw_mask(v), 0.0)
    w[:, J["jaw"]] = m * w[:, J["head"]]
    w[:, J["head"]] *= 1.0 - m
    return w


# ---------------------------------------------------------------------------------------------
# Joint regressor
# ---------------------------------------------------------------------------------------------

_REGRESSOR_PARTS: dict[str, tuple[str, ...]] = {
    "pelvis": ("torso", "leg"),
    "hip": ("torso", "leg"),
    "spine": ("torso",),
    "knee": ("leg",),
    "ankle": ("leg", "foot"),
    "foot": ("foot",),
    "neck": ("neck", "torso"),
    "collar": ("torso", "neck", "arm"),
    "head": ("head", "neck"),
    "jaw": ("head",),
    "eye": ("eye",),
    "shoulder": ("arm", "torso"),
    "elbow": ("arm",),
    "wrist": ("arm", "hand"),
}


def _max_entropy_weights(p: Array, target: Array) -> Array | None:
    """Non-negative weights summing to 1 with sum(w p) = target, as close to uniform as possible.

    The maximum-entropy solution w ~ exp(lambda . (p - target)); Newton on the convex dual.
    Returns None when the target is not strictly inside the points' convex hull.
    """
    scale = float(np.max(np.linalg.norm(p - target, axis=1)))
    q = (p - target) / scale
    lam = np.zeros(3)
    for _ in range(60):
        s = q @ lam
        s -= s.max()
        w = np.exp(s)
        w /= w.sum()
        g = w @ q
        if np.linalg.norm(g) < 1e-12:
            return w
        h = (q * w[:, None]).T @ q - np.outer(g, g)
        try:
            step = np.linalg.solve(h + 1e-12 * np.eye(3), g)
        except np.linalg.LinAlgError:
            return None
        lam -= step
        if not np.all(np.isfinite(lam)):
            return None
    s = q @ lam
    s -= s.max()
    w = np.exp(s)
    w /= w.sum()
    return w if np.linalg.norm(w @ q) * scale < 1e-8 else None


def joint_regressor(mesh: Mesh, jp: Array) -> Array:
    """[55, V] rows of non-negative weights summing to 1 that reproduce the designed joints.

    Each joint averages the surface vertices of its parts that lie around it (a shell at most
    about twice the nearest distance), tilted by maximum entropy so the average is exact.
    """
    v = mesh.verts
    reg = np.zeros((NUM_JOINTS, len(v)))
    names = mesh.label_names
    for j, jname in enumerate(JOINT_NAMES):
        side = "l" if jname.startswith("left") else ("r" if jname.startswith("right") else "")
        base = jname.split("_", 1)[1] if side else jname
        if base[:-1] in ("index", "middle", "ring", "pinky", "thumb"):
            parts = (f"finger_{side}_{base[:-1]}", f"hand_{side}")
            ok = [k for k, n in enumerate(names) if n in parts]
        else:
            key = "spine" if base.startswith("spine") else base
            want = _REGRESSOR_PARTS[key]
            ok = [
                k for k, n in enumerate(names)
                if n.split("_")[0] in want and (not side or n.endswith(f"_{side}") or "_" not in n)
            ]  # fmt: skip
        cand = np.nonzero(np.isin(mesh.labels, ok))[0]
        d = np.linalg.norm(v[cand] - jp[j], axis=1)
        r0 = float(d.min())
        for grow in (1.6, 2.0, 2.6, 3.4, 4.5):
            sel = cand[d <= r0 * grow + 0.002]
            w = _max_entropy_weights(v[sel], jp[j]) if len(sel) >= 4 else None
            if w is not None:
                break
        else:
            raise AssertionError(f"internal: cannot regress joint {jname}")
        reg[j, sel] = w
    return reg


# ---------------------------------------------------------------------------------------------
# Blend shapes
# ---------------------------------------------------------------------------------------------


def shape_directions(mesh: Mesh, jp: Array, weights: Array) -> Array:
    """Ten identity directions [V, 3, 10] in metres per unit coefficient.

    0 stature, 1 girth/weight, 2 shoulder width, 3 hip width, 4 arm length, 5 leg length,
    6 head size, 7 chest depth, 8 belly, 9 torso length.
    """
    v = mesh.verts
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    ax = np.abs(x)
    sgn = np.where(x >= 0, 1.0, -1.0)
    names = np.array(mesh.label_names)[mesh.labels]
    out = np.zeros((len(v), 3, 10))
    pelvis = jp[J["pelvis"]]
    # 0: stature, mostly along y (about the pelvis)
    out[:, :, 0] = (v - pelvis) * np.array([0.012, 0.036, 0.012])
    # 1: girth, radially away from the main bone of each part, weighted by the skinning weights
    gain = np.zeros(NUM_JOINTS)
    for name, g in (("pelvis", 0.10), ("spine1", 0.13), ("spine2", 0.12), ("spine3", 0.09), ("neck", 0.07),
                    ("left_hip", 0.09), ("right_hip", 0.09), ("left_knee", 0.06), ("right_knee", 0.06),
                    ("left_collar", 0.05), ("right_collar", 0.05), ("left_shoulder", 0.08),
                    ("right_shoulder", 0.08), ("left_elbow", 0.06), ("right_elbow", 0.06)):  # fmt: skip
        gain[J[name]] = g
    primary = {
        J["pelvis"]: (np.array([0.0, -0.5, 0.0]), jp[J["spine1"]]),
        J["spine1"]: (jp[J["spine1"]], jp[J["spine2"]]),
        J["spine2"]: (jp[J["spine2"]], jp[J["spine3"]]),
        J["spine3"]: (jp[J["spine3"]], jp[J["neck"]]),
        J["neck"]: (jp[J["neck"]], jp[J["head"]]),
    }
    for side in ("left", "right"):
        for a, b in (("hip", "knee"), ("knee", "ankle"), ("collar", "shoulder"), ("shoulder", "elbow"),
                     ("elbow", "wrist")):  # fmt: skip
            primary[J[f"{side}_{a}"]] = (jp[J[f"{side}_{a}"]], jp[J[f"{side}_{b}"]])
    girth = np.zeros((len(v), 3))
    for j, (a, b) in primary.items():
        if gain[j] == 0.0:
            continue
        _, c = _seg_dist(v, a, b)
        girth += (weights[:, j] * gain[j])[:, None] * (v - c)
    out[:, :, 1] = girth
    # 2: shoulder width: the shoulder girdle and arms move sideways
    m = smoothstep(0.03, 0.17, ax) * smoothstep(-0.2, 0.02, y)
    out[:, 0, 2] = 0.02 * sgn * m
    # 3: hip width: hips bulge and the legs move apart
    legs = np.isin([n.split("_")[0] for n in names], ("leg", "foot"))
    m = smoothstep(0.0, 0.15, ax) * smoothstep(-0.15, -0.35, y)
    m = np.where(legs, np.maximum(m, smoothstep(-0.45, -0.6, y) * smoothstep(0.0, 0.05, ax)), m)
    out[:, 0, 3] = 0.015 * sgn * m
    # 4: arm length: the arm stretches from the shoulder, the hand moves rigidly
    wrist_x = abs(jp[J["left_wrist"], 0])
    ramp = np.clip((ax - 0.18) / (wrist_x - 0.18), 0.0, 1.0)
    out[:, 0, 4] = 0.05 * sgn * ramp
    # 5: leg length: legs stretch below the hips, feet move rigidly
    y_hip, y_ank = jp[J["left_hip"], 1], jp[J["left_ankle"], 1]
    ramp = np.clip((y_hip - y) / (y_hip - y_ank), 0.0, 1.0) * legs
    out[:, 1, 5] = -0.06 * ramp
    # 6: head size (head and eyes scale about the head joint; the neck blends)
    c = jp[J["head"]]
    out[:, :, 6] = 0.07 * (v - c) * smoothstep(0.17, 0.235, y)[:, None]
    # 7: chest depth
    chest = smoothstep(0.0, 0.05, z) * _bump(
        v * [0.7, 1.0, 0.0], np.array([0.0, 0.02, 0.0]) * [0.7, 1, 0], 0.08
    )
    out[:, 2, 7] = 0.02 * chest * (names == "torso")
    # 8: belly
    belly = smoothstep(-0.02, 0.04, z) * _bump(v * [0.8, 1.0, 0.0], np.array([0.0, -0.2, 0.0]), 0.08)
    out[:, 2, 8] = 0.03 * belly * (names == "torso")
    out[:, 0, 8] = 0.01 * np.tanh(x / 0.03) * belly * (names == "torso")
    # 9: torso length: everything above the waist moves up
    out[:, 1, 9] = 0.04 * smoothstep(-0.3, 0.02, y)
    return out


def expression_directions(mesh: Mesh, jp: Array) -> Array:
    """Ten face-local expression directions [V, 3, 10] in metres per unit coefficient.

    0 jaw/mouth open, 1 smile, 2 pucker, 3 brow raise, 4 frown, 5 eyes close, 6 cheek puff,
    7 mouth stretch, 8 sneer, 9 lips pressed. Zero away from the face and on the eyeballs.
    """
    v = mesh.verts
    x, y = v[:, 0], v[:, 1]
    sgn = np.tanh(x / 0.006)  # a smooth sign: the two sides must not tear apart at x = 0
    # a smooth face region (no seams at part borders), excluding the separate eyeball meshes
    eye = np.array([n.startswith("eye_") for n in mesh.label_names])[mesh.labels]
    face = smoothstep(0.165, 0.19, y) * smoothstep(-0.045, -0.025, v[:, 2]) * ~eye
    out = np.zeros((len(v), 3, 10))
    mouth = np.array([0.0, shp.MOUTH_Y, shp.MOUTH_Z])
    corners = [
        np.array([s * (shp.MOUTH_HALF_WIDTH + 0.001), shp.MOUTH_Y, shp.MOUTH_Z - 0.01]) for s in (1.0, -1.0)
    ]

    def both(c: Array, sigma: float) -> Array:
        return _bump(v, c, sigma) + _bump(v, shp.mirror(c), sigma)

    # 0: jaw open: rotate the jaw region down about the jaw joint (linearised, 0.1 rad)
    rel = v - jp[J["jaw"]]
    rot = np.stack([np.zeros(len(v)), -rel[:, 2], rel[:, 1]], axis=1)  # x-axis cross rel
    out[:, :, 0] = 0.1 * jaw_mask(v)[:, None] * rot
    # 1: smile: corners up, out and back
    m = sum(_bump(v, c, 0.014) for c in corners)
    out[:, 0, 1] = 0.004 * sgn * m
    out[:, 1, 1] = 0.006 * m
    out[:, 2, 1] = -0.003 * m
    # 2: pucker: lips forward, corners in
    m = _bump(v, mouth, 0.016)
    out[:, 2, 2] = 0.008 * m
    out[:, 0, 2] = -0.2 * (x - 0.0) * m
    # 3: brow raise
    m = both(np.array([0.033, 0.33, 0.08]), 0.02)
    out[:, 1, 3] = 0.006 * m
    # 4: frown: inner brows down and together
    m = both(np.array([0.016, 0.326, 0.088]), 0.012)
    out[:, 1, 4] = -0.004 * m
    out[:, 0, 4] = -0.003 * sgn * m
    # 5: eyes close: upper lids down and forward
    m = both(np.array([0.0315, 0.315, 0.079]), 0.0085)
    out[:, 1, 5] = -0.005 * m
    out[:, 2, 5] = 0.0015 * m
    # 6: cheek puff
    m = both(np.array([0.045, 0.255, 0.06]), 0.018)
    out[:, 0, 6] = 0.006 * sgn * m
    out[:, 2, 6] = 0.003 * m
    # 7: mouth stretch: corners outwards and a little down
    m = sum(_bump(v, c, 0.014) for c in corners)
    out[:, 0, 7] = 0.005 * sgn * m
    out[:, 1, 7] = -0.002 * m
    # 8: sneer: nose wings and upper lip up
    m = both(np.array([0.014, 0.262, 0.092]), 0.011)
    out[:, 1, 8] = 0.004 * m
    # 9: lips pressed: lips back, towards each other
    m = _bump(v, mouth, 0.014)
    out[:, 2, 9] = -0.004 * m
    out[:, 1, 9] = -0.002 * np.tanh((y - mouth[1]) / 0.004) * m
    return out * face[:, None, None]


# ---------------------------------------------------------------------------------------------
# Hands
# ---------------------------------------------------------------------------------------------


def _finger_axes(side: str) -> tuple[Array, Array, Array]:
    """Per hand joint (15, SMPL-X hand order) flexion axes, spread axes and twist axes (world)."""
    sx = 1.0 if side == "left" else -1.0
    flex, spread, twist = [], [], []
    for f in shp.FINGERS:
        pts = np.array(f.points) if side == "left" else shp.mirror(np.array(f.points))
        d = pts[3] - pts[0]
        d /= np.linalg.norm(d)
        palm_normal = np.array([0.0, -1.0, 0.0])
        if f.name == "thumb":
            palm_normal = np.array([0.0, -0.6, -0.8 * 1.0])  # the thumb folds across the palm
        ax = np.cross(d, palm_normal)  # rotation about ax moves the tip towards the palm
        ax /= np.linalg.norm(ax)
        up = np.cross(ax, d)
        for _ in range(3):
            flex.append(ax)
            spread.append(sx * up)
            twist.append(d)
    return np.array(flex), np.array(spread), np.array(twist)


def hand_pca(side: str) -> tuple[Array, Array]:
    """Orthonormal hand pose basis [45, 45] (rows are components) and a relaxed mean [45].

    The first components are designed motions (curl, spread, thumb, curl staging, finger
    grouping); the rest complete an orthonormal basis by Gram-Schmidt.
    """
    flex, spread, _ = _finger_axes(side)
    order = [f.name for f in shp.FINGERS]  # index, middle, pinky, ring, thumb

    def pose(gains: Mapping[str, Sequence[float]], axes: Array) -> Array:
        out = np.zeros((15, 3))
        for fi, name in enumerate(order):
            g = gains.get(name, (0.0, 0.0, 0.0))
            for k in range(3):
                out[3 * fi + k] = g[k] * axes[3 * fi + k]
        return out.ravel()

    curl = {n: (1.0, 1.1, 0.8) for n in order[:4]} | {"thumb": (0.3, 0.6, 0.6)}
    spread_g = {"index": (0.6, 0, 0), "middle": (0.1, 0, 0), "ring": (-0.35, 0, 0), "pinky": (-0.8, 0, 0),
                "thumb": (0.6, 0, 0)}  # fmt: skip
    thumb = {"thumb": (1.0, 0.7, 0.5)}
    staging = {n: (1.0, -0.7, -0.5) for n in order[:4]}
    grouping = {"index": (0.7, 0.7, 0.5), "middle": (0.3, 0.3, 0.2), "ring": (-0.3, -0.3, -0.2),
                "pinky": (-0.7, -0.7, -0.5)}  # fmt: skip
    point = {"index": (-0.5, -0.5, -0.3), "middle": (0.5, 0.6, 0.4), "ring": (0.5, 0.6, 0.4),
             "pinky": (0.5, 0.6, 0.4), "thumb": (0.3, 0.5, 0.3)}  # fmt: skip
    designed = [
        pose(curl, flex),
        pose(spread_g, spread),
        pose(thumb, flex),
        pose(staging, flex),
        pose(grouping, flex),
        pose(point, flex),
    ]
    basis: list[Array] = []
    for vec in designed + [np.eye(45)[i] for i in range(45)]:
        u = vec.astype(float).copy()
        for b in basis:
            u -= float(np.dot(b, u)) * b
        n = float(np.linalg.norm(u))
        if n > 1e-6:
            basis.append(u / n)
        if len(basis) == 45:
            break
    comps = np.array(basis)
    mean = pose({n: (0.15, 0.2, 0.1) for n in order[:4]} | {"thumb": (0.05, 0.1, 0.1)}, flex)
    return comps, mean


# ---------------------------------------------------------------------------------------------
# Landmarks
# ---------------------------------------------------------------------------------------------


def _static_landmark_points() -> Array:
    """51 face points (x, y) in the iBUG-68 order without the jaw contour (17..67)."""
    ey = float(shp.joint_positions()[J["left_eye"], 1])
    by, my, mw = shp.BROW_Y, shp.MOUTH_Y, shp.MOUTH_HALF_WIDTH
    brow = [(-0.057, by - 0.006), (-0.047, by + 0.002), (-0.036, by + 0.005), (-0.025, by + 0.004),
            (-0.014, by)]  # fmt: skip
    pts = list(brow) + [(-x, y) for x, y in reversed(brow)]
    tip = float(shp.NOSE_TIP[1])
    pts += [(0.0, ey + 0.007), (0.0, ey - 0.008), (0.0, ey - 0.022), (0.0, tip)]
    pts += [(-0.015, tip - 0.011), (-0.0075, tip - 0.014), (0.0, tip - 0.0155), (0.0075, tip - 0.014),
            (0.015, tip - 0.011)]  # fmt: skip
    r_eye = [(-0.0465, ey), (-0.0375, ey + 0.0085), (-0.0255, ey + 0.0085), (-0.0165, ey - 0.001),
             (-0.0255, ey - 0.0085), (-0.0375, ey - 0.0085)]  # fmt: skip
    l_eye = [(-x, y) for x, y in (r_eye[3], r_eye[2], r_eye[1], r_eye[0], r_eye[5], r_eye[4])]
    pts += r_eye + l_eye
    pts += [(-mw - 0.001, my), (-0.017, my + 0.0055), (-0.007, my + 0.0085), (0.0, my + 0.0078),
            (0.007, my + 0.0085), (0.017, my + 0.0055), (mw + 0.001, my), (0.017, my - 0.0065),
            (0.007, my - 0.0105), (0.0, my - 0.011), (-0.007, my - 0.0105), (-0.017, my - 0.0065)]  # fmt: skip
    pts += [(-mw + 0.003, my), (-0.008, my + 0.0012), (0.0, my + 0.0012), (0.008, my + 0.0012),
            (mw - 0.003, my), (0.008, my - 0.0012), (0.0, my - 0.0012), (-0.008, my - 0.0012)]  # fmt: skip
    assert len(pts) == 51
    return np.array(pts)


def _ray_hits(v: Array, faces: Array, origins: Array, d: Array) -> tuple[Array, Array]:
    """First triangle hit by each ray (Moeller-Trumbore) -> face index [R] (-1 none), bary [R, 3]."""
    a, b, c = v[faces[:, 0]], v[faces[:, 1]], v[faces[:, 2]]
    e1, e2 = b - a, c - a
    hit_f = np.full(len(origins), -1)
    hit_b = np.zeros((len(origins), 3))
    for r, o in enumerate(origins):
        pv = np.cross(d[r], e2)
        det = np.einsum("ij,ij->i", e1, pv)
        ok = np.abs(det) > 1e-14
        inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
        tv = o - a
        u = np.einsum("ij,ij->i", tv, pv) * inv
        qv = np.cross(tv, e1)
        w = (qv @ d[r]) * inv
        t = np.einsum("ij,ij->i", e2, qv) * inv
        good = ok & (u >= 0) & (w >= 0) & (u + w <= 1) & (t > 0)
        if good.any():
            k = int(np.argmin(np.where(good, t, np.inf)))
            hit_f[r] = k
            hit_b[r] = (1.0 - u[k] - w[k], u[k], w[k])
    return hit_f, hit_b


def static_landmarks(mesh: Mesh) -> tuple[Array, Array]:
    """51 landmarks on the face: (face index [51], barycentric coordinates [51, 3])."""
    head = np.array([n == "head" for n in mesh.label_names])
    face_ok = np.all(head[mesh.labels[mesh.faces]], axis=1)
    fidx = np.nonzero(face_ok)[0]
    pts = _static_landmark_points()
    origins = np.stack([pts[:, 0], pts[:, 1], np.full(len(pts), 0.3)], axis=1)
    d = np.tile(np.array([0.0, 0.0, -1.0]), (len(pts), 1))
    f, b = _ray_hits(mesh.verts, mesh.faces[fidx], origins, d)
    if np.any(f < 0):
        raise AssertionError("internal: a face landmark missed the face")
    return fidx[f], b


def dynamic_landmarks(mesh: Mesh) -> tuple[Array, Array]:
    """Face contour for 79 head yaws: faces [79, 17] and barycentric coordinates [79, 17, 3].

    Row i holds the contour seen when smplx's neck-chain yaw index is i (0..39 for -rot_y =
    0..39 degrees, 40..78 for -rot_y = -1..-39). Each of the 17 points (subject's right ear, chin,
    left ear) is the silhouette point of the lower face in a plane through the face centre that
    contains the viewing direction.
    """
    v = mesh.verts
    head_lab = [k for k, n in enumerate(mesh.label_names) if n == "head"]
    cand = np.nonzero(
        np.isin(mesh.labels, head_lab) & (v[:, 1] < 0.29) & (v[:, 1] > 0.18) & (v[:, 2] > -0.015)
        & ~((np.abs(v[:, 0]) > 0.066) & (v[:, 2] < 0.02))
    )[0]  # fmt: skip
    centre = np.array([0.0, 0.26, 0.03])
    # the first face (in face order) that contains each vertex
    first_face = np.full(len(v), len(mesh.faces))
    for k in range(3):
        np.minimum.at(first_face, mesh.faces[:, k], np.arange(len(mesh.faces)))
    faces_out = np.zeros((79, 17), np.int64)
    bary_out = np.zeros((79, 17, 3))
    p = v[cand] - centre
    theta = np.radians(np.linspace(0.0, 180.0, 17))
    for i in range(79):
        psi = np.radians(i if i <= 39 else -(i - 39))
        view = np.array([np.sin(psi), 0.0, np.cos(psi)])
        side = np.array([np.cos(psi), 0.0, -np.sin(psi)])  # the head's +x as seen by the camera
        for k, th in enumerate(theta):
            u = -np.cos(th) * side - np.sin(th) * np.array([0.0, 1.0, 0.0])
            normal = np.cross(view, u)
            near = np.abs(p @ normal) < 0.006
            score = np.where(near & (p @ u > 0), p @ u, -np.inf)
            vi = int(cand[int(np.argmax(score))])
            fi = int(first_face[vi])
            faces_out[i, k] = fi
            bary_out[i, k, list(mesh.faces[fi]).index(vi)] = 1.0
    return faces_out, bary_out


# ---------------------------------------------------------------------------------------------
# smplx's hard-coded vertex ids
# ---------------------------------------------------------------------------------------------


def named_vertices(mesh: Mesh, jp: Array) -> dict[str, int]:
    """Our vertex for each name in ``smplx.vertex_ids['smplx']`` (nose, eyes, ears, tips, feet)."""
    v = mesh.verts
    names = np.array(mesh.label_names)[mesh.labels]
    out: dict[str, int] = {}

    def pick(mask: Array, score: Array) -> int:
        return int(np.argmax(np.where(mask, score, -np.inf)))

    head = names == "head"
    out["nose"] = pick(head & (np.abs(v[:, 0]) < 0.012) & (v[:, 1] > 0.24) & (v[:, 1] < 0.3), v[:, 2])
    out["reye"] = mesh.marks["reye"]
    out["leye"] = mesh.marks["leye"]
    ear = head & (v[:, 1] > 0.27) & (v[:, 1] < 0.32) & (v[:, 2] > -0.045) & (v[:, 2] < 0.015)
    out["lear"] = pick(ear & (v[:, 0] > 0), v[:, 0])
    out["rear"] = pick(ear & (v[:, 0] < 0), -v[:, 0])
    for s in ("l", "r"):
        for f in ("thumb", "index", "middle", "ring", "pinky"):
            out[f"{s}{f}"] = mesh.marks[f"{s}{f}"]
    for side, s in (("left", "L"), ("right", "R")):
        foot = names == f"foot_{side[0]}"
        sx = 1.0 if side == "left" else -1.0
        ball = jp[J[f"{side}_foot"]]
        lateral = sx * (v[:, 0] - ball[0])  # > 0 away from the body's midline
        low = v[:, 1] < ball[1] + 0.012
        out[f"{s}BigToe"] = pick(foot & low & (lateral < -0.012), v[:, 2])
        out[f"{s}SmallToe"] = pick(foot & low & (lateral > 0.02), v[:, 2])
        out[f"{s}Heel"] = pick(foot & (v[:, 1] < shp.SOLE_Y + 0.02), -v[:, 2])
    return out
