"""Skeleton and signed-distance shape of the generated mannequin (private helper of ``generate``).

Everything here is in the SMPL-X canonical frame: metres, +Y up, the body faces +Z and its
*left* side is +X. The skeleton (:func:`joint_positions`) is designed by hand after the real
SMPL-X template (pelvis near ``(0, -0.35, 0.01)``, soles at ``y = -1.28``, top of the head at
``y = +0.42``). The surface is the zero set of a signed distance function (:func:`body_sdf`)
made of a few dozen primitives (ellipsoids, tapered round cones, a superelliptic torso sweep,
rounded boxes) joined with polynomial smooth unions, so that every junction is a smooth fillet.
Only the left limbs are written out; the right ones are their mirror images (x -> -x).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from streamer.body.joints import JOINT_INDEX, NUM_JOINTS

Array = np.ndarray
GradFn = Callable[[Array, bool], tuple[Array, "Array | None"]]  # (points, want gradient) -> d, g
_FAR = 1.0e3  # stands in for "this primitive is far away" (finite, so no inf - inf)
_MARGIN = 0.07  # bounding boxes are grown by this much (> every blend radius), metres

# ---------------------------------------------------------------------------------------------
# Skeleton
# ---------------------------------------------------------------------------------------------

SOLE_Y = -1.28
CROWN_Y = 0.42
HEAD_CENTRE = np.array([0.0, 0.315, -0.008])
EYE_RADIUS = 0.0122
# face features (x = 0 unless said), used by the rig for the jaw mask, expressions, landmarks
MOUTH_Y = 0.2425  # the line between the lips
MOUTH_Z = 0.094  # front of the lips
MOUTH_HALF_WIDTH = 0.024
NOSE_TIP = np.array([0.0, 0.272, 0.117])
BROW_Y = 0.328
CHIN = np.array([0.0, 0.205, 0.088])

#: Left-side (or central) joint centres; right-side joints mirror these.
_LEFT_JOINTS: dict[str, tuple[float, float, float]] = {
    "pelvis": (0.0, -0.350, 0.012),
    "left_hip": (0.064, -0.445, -0.006),
    "spine1": (0.0, -0.236, -0.012),
    "left_knee": (0.102, -0.832, 0.004),
    "spine2": (0.0, -0.106, 0.002),
    "left_ankle": (0.090, -1.214, -0.046),
    "spine3": (0.0, -0.052, 0.010),
    "left_foot": (0.108, -1.262, 0.082),
    "neck": (0.0, 0.150, -0.024),
    "left_collar": (0.074, 0.092, -0.018),
    "head": (0.0, 0.256, -0.010),
    "left_shoulder": (0.176, 0.080, -0.026),
    "left_elbow": (0.428, 0.072, -0.040),
    "left_wrist": (0.668, 0.066, -0.034),
    "jaw": (0.0, 0.266, 0.014),
    "left_eye": (0.0315, 0.305, 0.066),
}


@dataclass(frozen=True)
class Finger:
    """One finger of the left hand: joint centres, tip, and radii at those four points."""

    name: str
    points: tuple[Array, Array, Array, Array]  # joint1, joint2, joint3, tip (left hand)
    radii: tuple[float, float, float, float]


def _finger_chain(
    base: ArrayLike, yaw_deg: float, pitch_deg: float, lengths: tuple[float, float, float]
) -> tuple[Array, Array, Array, Array]:
    """Points of a straight finger from ``base`` (offset from the wrist) along a yawed direction."""
    yaw, pitch = np.radians(yaw_deg), np.radians(pitch_deg)
    d = np.array([np.cos(yaw) * np.cos(pitch), np.sin(pitch), np.sin(yaw) * np.cos(pitch)])
    wrist = np.array(_LEFT_JOINTS["left_wrist"])
    p0 = wrist + np.asarray(base, dtype=float)
    p1 = p0 + lengths[0] * d
    p2 = p1 + lengths[1] * d
    p3 = p2 + lengths[2] * d
    return p0, p1, p2, p3


def _thumb_chain() -> tuple[Array, Array, Array, Array]:
    """CMC, MCP, IP joints and tip of the left thumb (it points forward-out and slightly down)."""
    wrist = np.array(_LEFT_JOINTS["left_wrist"])
    p0 = wrist + np.array([0.024, -0.011, 0.019])
    pts = [p0]
    for length, yaw, pitch in ((0.040, 44.0, -12.0), (0.031, 36.0, -9.0), (0.026, 30.0, -7.0)):
        yw, pt = np.radians(yaw), np.radians(pitch)
        d = np.array([np.cos(yw) * np.cos(pt), np.sin(pt), np.sin(yw) * np.cos(pt)])
        pts.append(pts[-1] + length * d)
    return pts[0], pts[1], pts[2], pts[3]


#: Left-hand fingers in SMPL-X joint order (index, middle, pinky, ring, thumb).
FINGERS: tuple[Finger, ...] = (
    Finger("index", _finger_chain((0.089, -0.006, 0.0265), 5.0, -2.0, (0.041, 0.024, 0.022)),
           (0.0094, 0.0084, 0.0074, 0.0066)),
    Finger("middle", _finger_chain((0.093, -0.006, 0.0055), 0.0, -2.0, (0.045, 0.028, 0.023)),
           (0.0097, 0.0087, 0.0077, 0.0068)),
    Finger("pinky", _finger_chain((0.080, -0.009, -0.0340), -11.0, -3.0, (0.033, 0.020, 0.020)),
           (0.0081, 0.0072, 0.0064, 0.0058)),
    Finger("ring", _finger_chain((0.088, -0.007, -0.0150), -5.0, -2.5, (0.042, 0.027, 0.022)),
           (0.0091, 0.0082, 0.0072, 0.0065)),
    Finger("thumb", _thumb_chain(), (0.0125, 0.0102, 0.0093, 0.0080)),
)  # fmt: skip


def mirror(p: Array) -> Array:
    """Mirror points (..., 3) across the sagittal plane x = 0."""
    q = np.array(p, dtype=float, copy=True)
    q[..., 0] *= -1.0
    return q


def joint_positions() -> Array:
    """The 55 designed joint centres in SMPL-X order. [55, 3] float64, metres."""
    out = np.zeros((NUM_JOINTS, 3))
    for name, p in _LEFT_JOINTS.items():
        out[JOINT_INDEX[name]] = p
        if name.startswith("left_"):
            out[JOINT_INDEX["right_" + name[5:]]] = mirror(np.array(p))
    for f in FINGERS:
        for k in range(3):
            left = f"left_{f.name}{k + 1}"
            out[JOINT_INDEX[left]] = f.points[k]
            out[JOINT_INDEX["right_" + left[5:]]] = mirror(f.points[k])
    return out


# ---------------------------------------------------------------------------------------------
# Signed distance primitives. Each maps points [N, 3] to distances [N] (negative inside);
# most are bounds rather than exact distances, which is all projection and ray casting need.
# ---------------------------------------------------------------------------------------------


def _ellipsoid(c: ArrayLike, r: ArrayLike, rot: Array | None = None) -> GradFn:
    """Ellipsoid centre ``c``, semi-axes ``r`` (in the frame whose rows are ``rot``)."""
    c_, r_ = np.asarray(c, float), np.asarray(r, float)
    m = np.eye(3) if rot is None else np.asarray(rot, float)

    def f(p: Array, grad: bool) -> tuple[Array, Array | None]:
        q = (p - c_) @ m.T
        k0 = np.maximum(np.linalg.norm(q / r_, axis=1), 1e-12)
        k1 = np.maximum(np.linalg.norm(q / (r_ * r_), axis=1), 1e-12)
        d = k0 * (k0 - 1.0) / k1
        if not grad:
            return d, None
        dk0 = (q / (r_ * r_)) / k0[:, None]
        dk1 = (q / r_**4) / k1[:, None]
        gq = ((2.0 * k0 - 1.0)[:, None] * dk0 * k1[:, None] - (k0 * (k0 - 1.0))[:, None] * dk1) / (k1 * k1)[
            :, None
        ]
        return d, gq @ m

    return f


def _round_cone(
    a: ArrayLike, b: ArrayLike, ra: float, rb: float, squash: tuple[Array, float] | None = None
) -> GradFn:
    """Tapered capsule from ``a`` (radius ``ra``) to ``b`` (radius ``rb``); exact distance.

    ``squash=(axis, s)`` scales the shape by ``s`` along ``axis`` (an elliptic cross-section).
    """
    a_, b_ = np.asarray(a, float), np.asarray(b, float)
    ba = b_ - a_
    length = float(np.linalg.norm(ba))
    u = ba / length
    sin_a = (ra - rb) / length
    cos_a = np.sqrt(max(1.0 - sin_a * sin_a, 0.0))

    def f(p: Array, grad: bool) -> tuple[Array, Array | None]:
        if squash is not None:
            ax, s = squash
            p = p + np.outer(((p - a_) @ ax) * (1.0 / s - 1.0), ax)
        pa = p - a_
        t = pa @ u
        perp = pa - np.outer(t, u)
        rho = np.linalg.norm(perp, axis=1)
        # the sides touch the end spheres along the normal n = cos(alpha) rho^ + sin(alpha) u
        near_a = t * cos_a < rho * sin_a
        near_b = (t - length) * cos_a > rho * sin_a
        da = np.linalg.norm(pa, axis=1)
        pb = p - b_
        db = np.linalg.norm(pb, axis=1)
        d = np.where(near_a, da - ra, np.where(near_b, db - rb, rho * cos_a + t * sin_a - ra))
        g = None
        if grad:
            rhat = perp / np.maximum(rho, 1e-12)[:, None]
            side = cos_a * rhat + sin_a * u
            g = np.where(
                near_a[:, None], pa / np.maximum(da, 1e-12)[:, None],
                np.where(near_b[:, None], pb / np.maximum(db, 1e-12)[:, None], side),
            )  # fmt: skip
        if squash is not None:
            ax, s = squash
            d = d * s
            if g is not None:
                g = s * (g + np.outer((g @ ax) * (1.0 / s - 1.0), ax))
        return d, g

    return f


def _round_box(c: ArrayLike, half: ArrayLike, r: float, rot: Array | None = None) -> GradFn:
    """Box centre ``c``, inner half extents ``half``, rounded by ``r`` (exact distance)."""
    c_, h_ = np.asarray(c, float), np.asarray(half, float)
    m = np.eye(3) if rot is None else np.asarray(rot, float)

    def f(p: Array, grad: bool) -> tuple[Array, Array | None]:
        loc = (p - c_) @ m.T
        q = np.abs(loc) - h_
        qp = np.maximum(q, 0.0)
        outside = np.linalg.norm(qp, axis=1)
        inside = np.minimum(np.max(q, axis=1), 0.0)
        d = outside + inside - r
        if not grad:
            return d, None
        sgn = np.where(loc >= 0, 1.0, -1.0)
        g_out = qp / np.maximum(outside, 1e-12)[:, None]
        g_in = np.zeros_like(q)
        g_in[np.arange(len(q)), np.argmax(q, axis=1)] = 1.0
        g = np.where((outside > 0)[:, None], g_out, g_in) * sgn
        return d, g @ m

    return f


def _half_space(normal: ArrayLike, offset: float) -> GradFn:
    """Distance to the plane ``normal . p = offset``; negative where ``normal . p < offset``."""
    n = np.asarray(normal, float)

    def f(p: Array, grad: bool) -> tuple[Array, Array | None]:
        return p @ n - offset, (np.tile(n, (len(p), 1)) if grad else None)

    return f


def hermite(xk: Array, yk: Array, x: Array) -> Array:
    """C1 piecewise-cubic interpolation through knots (centred-difference slopes); flat outside."""
    xk = np.asarray(xk, float)
    yk = np.asarray(yk, float)
    m = np.gradient(yk, xk, axis=0)
    x = np.clip(x, xk[0], xk[-1])
    i = np.clip(np.searchsorted(xk, x, side="right") - 1, 0, len(xk) - 2)
    h = xk[i + 1] - xk[i]
    t = ((x - xk[i]) / h)[..., None] if yk.ndim > 1 else (x - xk[i]) / h
    hh = h[..., None] if yk.ndim > 1 else h
    t2, t3 = t * t, t * t * t
    return (
        (2 * t3 - 3 * t2 + 1) * yk[i]
        + (t3 - 2 * t2 + t) * hh * m[i]
        + (-2 * t3 + 3 * t2) * yk[i + 1]
        + (t3 - t2) * hh * m[i + 1]
    )


#: Torso cross-sections by height: y, half-width (x), front depth, back depth, centre z.
_TORSO_PROFILE = np.array([
    [-0.555, 0.040, 0.030, 0.035, 0.000],
    [-0.530, 0.100, 0.050, 0.060, 0.000],
    [-0.500, 0.150, 0.074, 0.088, -0.002],
    [-0.455, 0.168, 0.086, 0.102, -0.004],
    [-0.410, 0.168, 0.088, 0.102, 0.000],
    [-0.350, 0.157, 0.088, 0.095, 0.004],
    [-0.280, 0.142, 0.091, 0.085, 0.008],
    [-0.190, 0.130, 0.094, 0.079, 0.010],
    [-0.110, 0.138, 0.097, 0.081, 0.010],
    [-0.040, 0.153, 0.103, 0.088, 0.008],
    [0.020, 0.162, 0.106, 0.094, 0.004],
    [0.070, 0.160, 0.100, 0.094, -0.002],
    [0.105, 0.148, 0.080, 0.088, -0.010],
    [0.135, 0.110, 0.060, 0.074, -0.016],
    [0.160, 0.066, 0.050, 0.062, -0.020],
    [0.185, 0.048, 0.046, 0.054, -0.020],
])  # fmt: skip
_TORSO_BOTTOM = -0.555
_TORSO_TOP = 0.185


def torso_section(y: Array) -> Array:
    """Torso half-width, front depth, back depth and centre z at heights ``y``. [N, 4]."""
    return hermite(_TORSO_PROFILE[:, 0], _TORSO_PROFILE[:, 1:], y)


def _torso() -> GradFn:
    """Superelliptic sweep along y with its own front and back depths, capped top and bottom."""
    n_exp = 2.5

    def f(p: Array) -> Array:
        sec = torso_section(p[:, 1])
        a, bf, bb, zc = sec[:, 0], sec[:, 1], sec[:, 2], sec[:, 3]
        x = np.abs(p[:, 0])
        z = p[:, 2] - zc
        b = np.where(z > 0, bf, bb)
        rho = ((x / a) ** n_exp + (np.abs(z) / b) ** n_exp) ** (1.0 / n_exp)
        r = np.hypot(x, z)
        d = np.where(rho > 1e-9, r * (1.0 - 1.0 / np.maximum(rho, 1e-9)), -np.minimum(a, b))
        cap = np.maximum(_TORSO_BOTTOM - p[:, 1], p[:, 1] - _TORSO_TOP)
        return _smax(d, cap, 0.03)

    return _with_differences(f)


def _with_differences(f: Callable[[Array], Array]) -> GradFn:
    """A primitive whose gradient is taken by forward differences."""

    def g(p: Array, grad: bool) -> tuple[Array, Array | None]:
        d = f(p)
        if not grad:
            return d, None
        h = 1e-5
        return d, np.stack([(f(p + h * e) - d) / h for e in np.eye(3)], axis=1)

    return g


def _smin(a: Array, b: Array, k: float) -> Array:
    """Polynomial smooth minimum (exactly ``min`` once ``|a - b| >= k``)."""
    if k <= 0.0:
        return np.minimum(a, b)
    h = np.maximum(k - np.abs(a - b), 0.0) / k
    return np.minimum(a, b) - h * h * k * 0.25


def _smax(a: Array, b: Array, k: float) -> Array:
    """Polynomial smooth maximum."""
    return -_smin(-a, -b, k)


# ---------------------------------------------------------------------------------------------
# A small CSG tree with bounding-box culling
# ---------------------------------------------------------------------------------------------


@dataclass
class Node:
    """A node of the shape tree: a primitive (``fn``) or an operation on ``children``.

    ``op`` is ``"prim"``, ``"union"`` (smooth, radius ``k``; 0 = hard), ``"subtract"``
    (children[0] minus the rest, smooth radius ``k``) or ``"intersect"``.
    """

    op: str
    k: float = 0.0
    fn: GradFn | None = None
    lo: Array = field(default_factory=lambda: np.full(3, -np.inf))
    hi: Array = field(default_factory=lambda: np.full(3, np.inf))
    children: list[Node] = field(default_factory=list)

    def prune(self, lo: Array, hi: Array) -> Node:
        """This tree restricted to points inside the box [lo, hi] (same values there).

        Subtrees whose boxes miss the box are dropped; a tree that misses entirely becomes a
        single far-away primitive.
        """
        kept = self._prune(np.asarray(lo, float), np.asarray(hi, float))
        if kept is None:
            return Node("prim", fn=lambda p, g: (np.full(len(p), _FAR), np.zeros((len(p), 3)) if g else None))
        return kept

    def _prune(self, lo: Array, hi: Array) -> Node | None:
        if np.any(self.hi < lo) or np.any(self.lo > hi):
            return None
        if self.op == "prim":
            return self
        kids = [c._prune(lo, hi) for c in self.children]
        if self.op == "intersect" and any(c is None for c in kids):
            return None
        if self.op == "subtract" and kids[0] is None:
            return None
        live = [c for c in kids if c is not None]
        if len(live) == 1 and self.op != "intersect":
            return live[0]
        return Node(self.op, k=self.k, lo=self.lo, hi=self.hi, children=live)

    def eval(self, p: Array) -> Array:
        """Signed distance at points [N, 3] -> [N].

        Each primitive is evaluated only on the points inside its (grown) box and reads as far
        away elsewhere; operations combine these sparse pieces.
        """
        d, _ = self._dense(p, False)
        return d

    def eval_grad(self, p: Array) -> tuple[Array, Array]:
        """Signed distance [N] and its gradient [N, 3] (per-primitive differences, chain rule)."""
        d, g = self._dense(p, True)
        assert g is not None
        return d, g

    def _dense(self, p: Array, grad: bool) -> tuple[Array, Array | None]:
        p = np.ascontiguousarray(p, dtype=float)
        cols = (p[:, 0].copy(), p[:, 1].copy(), p[:, 2].copy())
        idx, d, g = self._eval(p, cols, grad)
        out = np.full(len(p), _FAR)
        out[idx] = d
        gout = None
        if grad:
            gout = np.zeros((len(p), 3))
            gout[idx] = g
        return out, gout

    def _eval(
        self, p: Array, cols: tuple[Array, Array, Array], grad: bool
    ) -> tuple[Array, Array, Array | None]:
        """(indices of the points where this node is not far, distances there, gradients)."""
        if self.op == "prim":
            assert self.fn is not None
            x, y, z = cols
            lo, hi = self.lo, self.hi
            idx = np.flatnonzero(
                (x >= lo[0]) & (x <= hi[0]) & (y >= lo[1]) & (y <= hi[1]) & (z >= lo[2]) & (z <= hi[2])
            )
            if not len(idx):
                return idx, np.zeros(0), (np.zeros((0, 3)) if grad else None)
            d, g = self.fn(p[idx], grad)
            return idx, d, g
        ia, da, ga = self.children[0]._eval(p, cols, grad)
        n = len(p)
        for child in self.children[1:]:
            ib, db, gb = child._eval(p, cols, grad)
            if self.op == "subtract":
                db = -db
                gb = -gb if gb is not None else None
            if len(ia) == len(ib) and (len(ia) == 0 or np.array_equal(ia, ib)):
                keep = ia
            elif self.op == "union":
                mask = np.zeros(n, bool)
                mask[ia] = True
                mask[ib] = True
                keep = np.flatnonzero(mask)
            elif self.op == "subtract":
                keep = ia
            else:
                mask = np.zeros(n, bool)
                mask[ia] = True
                keep = ib[mask[ib]]
            da_, ga_ = _spread(n, keep, ia, da, ga, _FAR)
            db_, gb_ = _spread(n, keep, ib, db, gb, -_FAR if self.op == "subtract" else _FAR)
            sign = 1.0 if self.op == "union" else -1.0
            ia = keep
            da, ga = _sblend(da_, ga_, db_, gb_, self.k, sign)
        return ia, da, ga


def _sblend(
    a: Array, ga: Array | None, b: Array, gb: Array | None, k: float, sign: float
) -> tuple[Array, Array | None]:
    """Smooth minimum (sign=+1) or maximum (sign=-1) of two fields and of their gradients."""
    a_, b_ = sign * a, sign * b
    if k <= 0.0:
        wa = (a_ < b_).astype(float)
        d = sign * np.minimum(a_, b_)
    else:
        h = np.maximum(k - np.abs(a_ - b_), 0.0) / k
        d = sign * (np.minimum(a_, b_) - h * h * k * 0.25)
        wa = np.where(a_ < b_, 1.0 - 0.5 * h, 0.5 * h)
    if ga is None or gb is None:
        return d, None
    return d, wa[:, None] * ga + (1.0 - wa)[:, None] * gb


def _spread(
    n: int, keep: Array, idx: Array, d: Array, g: Array | None, fill: float
) -> tuple[Array, Array | None]:
    """Values given at sorted point indices ``idx`` laid out on the sorted set ``keep``."""
    if len(idx) == len(keep) and (len(idx) == 0 or np.array_equal(idx, keep)):
        return d, g
    slot = np.full(n, -1)
    slot[keep] = np.arange(len(keep))
    pos = slot[idx]
    ok = pos >= 0
    out = np.full(len(keep), fill)
    out[pos[ok]] = d[ok]
    gout = None
    if g is not None:
        gout = np.zeros((len(keep), 3))
        gout[pos[ok]] = g[ok]
    return out, gout


def prim(fn: GradFn, lo: ArrayLike, hi: ArrayLike) -> Node:
    """A primitive whose surface lies inside the box [lo, hi] (the box is grown by a margin)."""
    return Node("prim", fn=fn, lo=np.asarray(lo, float) - _MARGIN, hi=np.asarray(hi, float) + _MARGIN)


def op(kind: str, k: float, *children: Node) -> Node:
    """An operation node; its box is the union of its children's (the first one for subtract)."""
    if kind == "subtract":
        lo, hi = children[0].lo, children[0].hi
    elif kind == "intersect":
        lo = np.max([c.lo for c in children], axis=0)
        hi = np.min([c.hi for c in children], axis=0)
    else:
        lo = np.min([c.lo for c in children], axis=0)
        hi = np.max([c.hi for c in children], axis=0)
    return Node(kind, k=k, lo=lo.copy(), hi=hi.copy(), children=list(children))


def ellipsoid(c: ArrayLike, r: ArrayLike, rot: Array | None = None) -> Node:
    """Ellipsoid node (optionally rotated: rows of ``rot`` are its axes)."""
    c_ = np.asarray(c, float)
    r_ = np.asarray(r, float)
    ext = np.full(3, r_.max()) if rot is not None else r_
    return prim(_ellipsoid(c, r, rot), c_ - ext, c_ + ext)


def cone(a: ArrayLike, b: ArrayLike, ra: float, rb: float, squash: tuple[Array, float] | None = None) -> Node:
    """Tapered capsule node."""
    a_, b_ = np.asarray(a, float), np.asarray(b, float)
    r = max(ra, rb)
    return prim(_round_cone(a_, b_, ra, rb, squash), np.minimum(a_, b_) - r, np.maximum(a_, b_) + r)


def rot_y(deg: float) -> Array:
    """Rows of a frame rotated by ``deg`` about +Y (used to orient primitives)."""
    t = np.radians(deg)
    return np.array([[np.cos(t), 0.0, -np.sin(t)], [0.0, 1.0, 0.0], [np.sin(t), 0.0, np.cos(t)]])


def rot_z(deg: float) -> Array:
    """Rows of a frame rotated by ``deg`` about +Z."""
    t = np.radians(deg)
    return np.array([[np.cos(t), np.sin(t), 0.0], [-np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])


def rot_x(deg: float) -> Array:
    """Rows of a frame rotated by ``deg`` about +X."""
    t = np.radians(deg)
    return np.array([[1.0, 0.0, 0.0], [0.0, np.cos(t), np.sin(t)], [0.0, -np.sin(t), np.cos(t)]])


# ---------------------------------------------------------------------------------------------
# The body
# ---------------------------------------------------------------------------------------------


def _mirror_node(node: Node) -> Node:
    """The mirror image (x -> -x) of a shape tree."""
    lo = node.lo.copy()
    hi = node.hi.copy()
    lo[0], hi[0] = -node.hi[0], -node.lo[0]
    if node.op == "prim":
        fn = node.fn
        assert fn is not None

        def g(p: Array, grad: bool, fn: GradFn = fn) -> tuple[Array, Array | None]:
            d, gr = fn(mirror(p), grad)
            return d, (mirror(gr) if gr is not None else None)

        return Node("prim", fn=g, lo=lo, hi=hi)
    return Node(node.op, k=node.k, lo=lo, hi=hi, children=[_mirror_node(c) for c in node.children])


def _left_arm() -> Node:
    j = {k: np.array(v) for k, v in _LEFT_JOINTS.items()}
    s, e, w = j["left_shoulder"], j["left_elbow"], j["left_wrist"]
    ax = (w - e) / np.linalg.norm(w - e)
    up = np.array([0.0, 1.0, 0.0])
    flat = up - (up @ ax) * ax
    flat /= np.linalg.norm(flat)
    upper = op(
        "union", 0.03,
        ellipsoid(s + [0.018, 0.012, 0.0], (0.072, 0.054, 0.056)),  # deltoid
        cone(s + [0.02, 0.0, 0.0], e, 0.047, 0.036),
        ellipsoid(s + 0.42 * (e - s) + [0.0, -0.004, 0.010], (0.085, 0.038, 0.041)),  # biceps/triceps
    )  # fmt: skip
    fore = op(
        "union", 0.025,
        cone(e, w - 0.01 * ax, 0.038, 0.025, squash=(flat, 0.78)),
        ellipsoid(e + 0.25 * (w - e) + [0.0, 0.003, 0.0], (0.075, 0.036, 0.040)),  # forearm muscles
    )  # fmt: skip
    return op("union", 0.025, upper, fore)


def _left_hand() -> Node:
    w = np.array(_LEFT_JOINTS["left_wrist"])
    palm = op(
        "union", 0.012,
        _round_box_node(w + [0.052, -0.007, -0.004], (0.036, 0.002, 0.028), 0.011),
        ellipsoid(w + [0.05, -0.001, -0.004], (0.05, 0.0125, 0.038)),  # back of the hand
        ellipsoid(w + [0.034, -0.014, 0.020], (0.030, 0.013, 0.018), rot_y(-35.0)),  # thenar
        ellipsoid(w + [0.045, -0.011, -0.028], (0.036, 0.011, 0.012)),  # hypothenar
        cone(w + [-0.02, 0.0, 0.0], w + [0.02, -0.004, -0.003], 0.024, 0.022,
             squash=(np.array([0.0, 1.0, 0.0]), 0.72)),  # wrist
    )  # fmt: skip
    fingers = []
    for f in FINGERS:
        segs = []
        pts = list(f.points)
        d_tip = pts[3] - pts[2]
        d_tip /= np.linalg.norm(d_tip)
        pts[3] = pts[3] - f.radii[3] * d_tip  # the rounded tip ends at the designed tip point
        start = 1 if f.name != "thumb" else 0
        for k in range(start, 3):
            segs.append(
                cone(pts[k], pts[k + 1], f.radii[k], f.radii[k + 1], squash=(np.array([0.0, 1.0, 0.0]), 0.86))
            )
        if f.name != "thumb":  # proximal phalanx starts inside the palm at the knuckle
            segs.insert(
                0,
                cone(
                    pts[0] - 0.012 * d_tip,
                    pts[1],
                    f.radii[0],
                    f.radii[1],
                    squash=(np.array([0.0, 1.0, 0.0]), 0.86),
                ),
            )
        fingers.append(op("union", 0.004, *segs))
    return op("union", 0.007, palm, op("union", 0.0, *fingers))


def _round_box_node(c: Array, half: ArrayLike, r: float, rot: Array | None = None) -> Node:
    ext = np.full(3, np.linalg.norm(half)) if rot is not None else np.asarray(half, float)
    return prim(_round_box(c, half, r, rot), c - ext - r, c + ext + r)


def _left_leg() -> tuple[Node, Node]:
    j = {k: np.array(v) for k, v in _LEFT_JOINTS.items()}
    h, k_, a = j["left_hip"], j["left_knee"], j["left_ankle"]
    thigh = op(
        "union", 0.045,
        cone(h + [0.02, 0.03, 0.0], k_, 0.079, 0.049),
        ellipsoid(h + 0.4 * (k_ - h) + [0.004, 0.0, 0.012], (0.066, 0.16, 0.07)),
    )  # fmt: skip
    knee = ellipsoid(k_ + [0.0, 0.002, 0.012], (0.038, 0.04, 0.034))
    shin = op(
        "union", 0.03,
        cone(k_, a + [0.0, 0.02, 0.0], 0.047, 0.03),
        ellipsoid(k_ + [-0.002, -0.13, -0.022], (0.047, 0.11, 0.047)),  # calf
    )  # fmt: skip
    ball = np.array(_LEFT_JOINTS["left_foot"])
    foot = op(
        "intersect", 0.006,
        op(
            "union", 0.035,
            ellipsoid(a + [0.0, -0.002, 0.0], (0.037, 0.028, 0.032)),  # ankle bones
            ellipsoid(a + [0.0, -0.033, -0.021], (0.033, 0.034, 0.036)),  # heel
            cone(a + [0.003, -0.02, 0.015], ball + [-0.004, 0.004, 0.0], 0.036, 0.027,
                 squash=(np.array([1.0, 0.0, 0.0]), 1.45)),  # instep
            ellipsoid(ball + [-0.003, 0.002, 0.032], (0.044, 0.021, 0.052), rot_y(-12.0)),  # toes
        ),
        prim(_half_space((0.0, -1.0, 0.0), -SOLE_Y), (-1.0, SOLE_Y, -1.0), (1.0, 0.5, 1.0)),
    )  # fmt: skip
    return op("union", 0.035, thigh, knee, op("union", 0.03, shin, foot)), foot


def _head() -> Node:
    """Cranium, brow, midface, cheeks, muzzle, jaw, chin, nose, lips, ears; eyelids around the eyes.

    The eyelids are a shell slightly larger than the eyeball with an almond-shaped slit cut
    in front, so the separate eyeball meshes show through the opening.
    """
    eye = np.array(_LEFT_JOINTS["left_eye"])
    skull = op(
        "union", 0.024,
        ellipsoid((0.0, 0.335, -0.018), (0.073, 0.086, 0.097)),  # cranium
        ellipsoid((0.0, 0.345, 0.02), (0.062, 0.045, 0.063)),  # forehead
        ellipsoid((0.0, 0.285, 0.025), (0.06, 0.048, 0.058)),  # midface
        ellipsoid((0.0, 0.228, 0.02), (0.055, 0.033, 0.06)),  # lower jaw
    )  # fmt: skip
    cheek = ellipsoid((0.04, 0.272, 0.042), (0.028, 0.028, 0.03))
    face = op(
        "union", 0.02,
        skull,
        ellipsoid((0.0, 0.327, 0.05), (0.057, 0.014, 0.04)),  # brow ridge
        ellipsoid((0.0, 0.247, 0.046), (0.042, 0.03, 0.046)),  # muzzle (around the mouth)
        ellipsoid((0.0, 0.207, 0.067), (0.022, 0.017, 0.024)),  # chin
        cheek, _mirror_node(cheek),
    )  # fmt: skip
    tip = NOSE_TIP - np.array([0.0, 0.0, 0.012])
    nose = op(
        "union", 0.01,
        cone((0.0, 0.309, 0.081), tip, 0.006, 0.012),
        ellipsoid((0.0, 0.2655, 0.092), (0.0165, 0.009, 0.011)),  # wings of the nose
    )  # fmt: skip
    lips = ellipsoid((0.0, MOUTH_Y, MOUTH_Z - 0.0065), (0.021, 0.0105, 0.0075))
    ear_l = ellipsoid((0.072, 0.296, -0.022), (0.011, 0.03, 0.019), rot_x(-12.0))
    socket_l = ellipsoid(eye + [0.0, 0.002, 0.026], (0.021, 0.0145, 0.0135))
    head = op("subtract", 0.008, face, socket_l, _mirror_node(socket_l))
    lid_l = ellipsoid(eye, (EYE_RADIUS + 0.0016,) * 3)
    head = op("union", 0.005, head, lid_l, _mirror_node(lid_l))
    head = op("union", 0.012, head, nose)
    head = op("union", 0.008, head, lips)
    head = op("union", 0.011, head, ear_l, _mirror_node(ear_l))
    mouth = ellipsoid((0.0, MOUTH_Y, MOUTH_Z + 0.004), (MOUTH_HALF_WIDTH - 0.002, 0.0013, 0.0065))
    slit_l = ellipsoid(eye + [0.0, 0.0005, EYE_RADIUS + 0.0016], (0.0135, 0.0055, 0.007))
    return op("subtract", 0.0025, head, mouth, slit_l, _mirror_node(slit_l))


def body_sdf() -> dict[str, Node]:
    """Shape trees of the whole body (``"body"``) and of its parts (for ray casting)."""
    core = prim(_torso(), (-0.2, _TORSO_BOTTOM, -0.15), (0.2, _TORSO_TOP, 0.15))
    pec = ellipsoid((0.062, 0.018, 0.058), (0.068, 0.052, 0.05))
    blade = ellipsoid((0.072, 0.035, -0.052), (0.062, 0.075, 0.038))
    glute = ellipsoid((0.064, -0.44, -0.05), (0.07, 0.075, 0.068))
    torso = op(
        "union", 0.035, core, pec, _mirror_node(pec), blade, _mirror_node(blade), glute, _mirror_node(glute)
    )
    neck = cone((0.0, 0.12, -0.02), (0.0, 0.252, -0.013), 0.053, 0.048,
                squash=(np.array([0.0, 0.0, 1.0]), 0.95))  # fmt: skip
    arm_l, hand_l, head = _left_arm(), _left_hand(), _head()
    leg_l, foot_l = _left_leg()
    arm_r, hand_r, leg_r = _mirror_node(arm_l), _mirror_node(hand_l), _mirror_node(leg_l)
    limb_l = op("union", 0.015, arm_l, hand_l)
    limb_r = op("union", 0.015, arm_r, hand_r)
    trunk = op("union", 0.035, torso, neck)
    trunk = op("union", 0.045, trunk, leg_l, leg_r)
    trunk = op("union", 0.035, trunk, limb_l, limb_r)
    body = op("union", 0.03, trunk, head)
    parts = {
        "body": body,
        "torso": torso,
        "neck": op("union", 0.03, neck, torso),
        "head": head,
        "arm_l": op("union", 0.015, arm_l, hand_l),
        "arm_r": op("union", 0.015, arm_r, hand_r),
        "hand_l": hand_l,
        "hand_r": hand_r,
        "leg_l": leg_l,
        "leg_r": leg_r,
        "foot_l": foot_l,
        "foot_r": _mirror_node(foot_l),
    }
    return parts
