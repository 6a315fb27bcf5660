"""Small rotation helpers in numpy for the per-frame fitter (float64, batched over leading dims).

Conventions: rotation matrices act on column vectors (``p' = R @ p``); axis-angle vectors are
``axis * angle`` in radians; quaternions are **wxyz** (as everywhere in the product).
Everything is vectorised over leading ``...`` dimensions so that one call handles all joints:
the fitter must stay within a few milliseconds per frame, so Python loops are kept out of here.
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-12
_I3 = np.eye(3)
_I3.setflags(write=False)
_YZX = np.array([1, 2, 0])
_ZXY = np.array([2, 0, 1])


def cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cross products, broadcast over leading dims (cheaper than ``np.cross`` for small arrays). [..., 3]"""
    return a[..., _YZX] * b[..., _ZXY] - a[..., _ZXY] * b[..., _YZX]


def dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dot products over the last axis. [..., 3] x [..., 3] -> [...]"""
    return (a * b).sum(axis=-1)


def skew(v: np.ndarray) -> np.ndarray:
    """Cross-product matrices: ``skew(v) @ u == cross(v, u)``. [..., 3] -> [..., 3, 3]"""
    out = np.zeros(v.shape[:-1] + (3, 3))
    out[..., 0, 1], out[..., 0, 2] = -v[..., 2], v[..., 1]
    out[..., 1, 0], out[..., 1, 2] = v[..., 2], -v[..., 0]
    out[..., 2, 0], out[..., 2, 1] = -v[..., 1], v[..., 0]
    return out


def rodrigues(r: np.ndarray) -> np.ndarray:
    """Axis-angle to rotation matrices. [..., 3] radians -> [..., 3, 3]

    ``R = cos(t) I + (1 - cos t)/t^2 r r^T + sin(t)/t [r]x``; a tiny epsilon under the square
    root keeps t > 0 (the error it causes is far below float64 precision of R).
    """
    r = np.asarray(r, dtype=np.float64)
    t = np.sqrt((r * r).sum(axis=-1) + 1e-24)[..., None, None]
    c = np.cos(t)
    R = ((1.0 - c) / (t * t)) * (r[..., :, None] * r[..., None, :])
    R += (np.sin(t) / t) * skew(r)
    R += c * _I3
    return R


def log_rot(R: np.ndarray) -> np.ndarray:
    """Rotation matrices to axis-angle (angle in [0, pi]). [..., 3, 3] -> [..., 3]"""
    R = np.asarray(R, dtype=np.float64)
    v = np.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], axis=-1)
    s = 0.5 * np.sqrt((v * v).sum(axis=-1))  # sin(angle)
    c = 0.5 * (R[..., 0, 0] + R[..., 1, 1] + R[..., 2, 2] - 1.0)  # cos(angle)
    angle = np.arctan2(s, c)
    out = v * (0.5 * angle / np.maximum(s, 1e-300))[..., None]
    near_pi = c < -0.999  # the antisymmetric part vanishes near pi: use the precise path there
    if near_pi.any():
        out[near_pi] = quat_to_rotvec(_quat_shepperd(R[near_pi]))
    return out


def quat_from_matrix(R: np.ndarray) -> np.ndarray:
    """Rotation matrices to unit quaternions wxyz with w >= 0. [..., 3, 3] -> [..., 4]

    Directly (Shepperd's method), accurate at every angle including near pi."""
    R = np.asarray(R, dtype=np.float64)
    return _quat_shepperd(R.reshape(-1, 3, 3)).reshape(R.shape[:-2] + (4,))


def _quat_shepperd(R: np.ndarray) -> np.ndarray:
    """Rotation matrices to quaternions, numerically best of the four Shepperd branches. [N, 3, 3] -> [N, 4]"""
    m00, m11, m22 = R[..., 0, 0], R[..., 1, 1], R[..., 2, 2]
    trace = m00 + m11 + m22
    cand = np.stack(
        [
            np.stack([1 + trace, R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1),
            np.stack([R[..., 2, 1] - R[..., 1, 2], 1 + m00 - m11 - m22, R[..., 0, 1] + R[..., 1, 0], R[..., 0, 2] + R[..., 2, 0]], -1),
            np.stack([R[..., 0, 2] - R[..., 2, 0], R[..., 0, 1] + R[..., 1, 0], 1 - m00 + m11 - m22, R[..., 1, 2] + R[..., 2, 1]], -1),
            np.stack([R[..., 1, 0] - R[..., 0, 1], R[..., 0, 2] + R[..., 2, 0], R[..., 1, 2] + R[..., 2, 1], 1 - m00 - m11 + m22], -1),
        ],
        axis=-2,
    )
    best = np.argmax(np.stack([trace, m00, m11, m22], axis=-1), axis=-1)
    q = cand[np.arange(len(best)), best]
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., :1] < 0, -q, q)


def quat_to_rotvec(q: np.ndarray) -> np.ndarray:
    """Unit quaternions wxyz to axis-angle (the short way round). [..., 4] -> [..., 3]"""
    q = np.where(q[..., :1] < 0, -q, q)
    v = q[..., 1:]
    s = np.sqrt((v * v).sum(axis=-1))
    angle = 2.0 * np.arctan2(s, q[..., 0])
    scale = np.where(s < 1e-9, 2.0, angle / np.maximum(s, 1e-300))
    return v * scale[..., None]


def quat_from_rotvec(r: np.ndarray) -> np.ndarray:
    """Axis-angle to unit quaternions wxyz. [..., 3] -> [..., 4]"""
    r = np.asarray(r, dtype=np.float64)
    t = np.sqrt((r * r).sum(axis=-1, keepdims=True) + 1e-24)
    return np.concatenate([np.cos(0.5 * t), r * (np.sin(0.5 * t) / t)], axis=-1)


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Unit quaternions wxyz to rotation matrices. [..., 4] -> [..., 3, 3]"""
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=-2,
    )


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product ``a * b`` (apply b first). [..., 4] x [..., 4] -> [..., 4]"""
    aw, ax, ay, az = a[..., 0], a[..., 1], a[..., 2], a[..., 3]
    bw, bx, by, bz = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    return np.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        axis=-1,
    )


def align_hemisphere(q: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Flip quaternions to the hemisphere of ``ref`` (same rotation, continuous path). [..., 4]"""
    return np.where((q * ref).sum(axis=-1, keepdims=True) < 0, -q, q)


def nlerp(a: np.ndarray, b: np.ndarray, t: np.ndarray | float) -> np.ndarray:
    """Normalised linear interpolation of quaternions (``t=0`` gives a). [..., 4]

    For the small steps of one frame it matches slerp to well under a degree and costs less;
    ``t`` of 0 or 1 returns ``a`` or ``b`` exactly (up to sign).
    """
    if np.isscalar(t):
        if t <= 0.0:
            return np.array(a, dtype=np.float64, copy=True)
        if t >= 1.0:
            return np.array(b, dtype=np.float64, copy=True)
    b = align_hemisphere(b, a)
    t = np.asarray(t, dtype=np.float64)
    if t.ndim and t.shape[-1] != 1:
        t = t[..., None]
    q = (1.0 - t) * a + t * b
    return q / np.sqrt((q * q).sum(axis=-1, keepdims=True))


def normalize(v: np.ndarray) -> np.ndarray:
    """Unit vectors (zero vectors stay zero). [..., 3]"""
    return v / np.maximum(np.sqrt((v * v).sum(axis=-1, keepdims=True)), _EPS)


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation taking direction ``a`` to direction ``b``. [..., 3] x [..., 3] -> [..., 3, 3]

    ``R = I + [v]x + [v]x^2 / (1 + c)`` with ``v = a x b``, ``c = a . b`` for unit a, b; for
    (nearly) opposite directions it turns by pi about an axis perpendicular to ``a``.
    """
    a, b = normalize(np.asarray(a, dtype=np.float64)), normalize(np.asarray(b, dtype=np.float64))
    v = cross(a, b)
    c = (a * b).sum(axis=-1)[..., None, None]
    K = skew(v)
    R = K @ K
    R /= np.maximum(1.0 + c, 1e-300)
    R += K
    R += _I3
    opposite = c[..., 0, 0] < -1.0 + 1e-9
    if opposite.any():
        helper = np.where(np.abs(a[..., :1]) < 0.9, np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]))
        R = np.where(opposite[..., None, None], rodrigues(normalize(cross(a, helper)) * np.pi), R)
    return R


def frame(primary: np.ndarray, secondary: np.ndarray) -> np.ndarray:
    """Orthonormal frames: columns (p, s', p x s') with s' = secondary made perpendicular to p.

    [..., 3] x [..., 3] -> [..., 3, 3]. Degenerate when the two are parallel (callers avoid it).
    """
    e0 = normalize(primary)
    e1 = normalize(secondary - (secondary * e0).sum(axis=-1, keepdims=True) * e0)
    return np.stack([e0, e1, cross(e0, e1)], axis=-1)


def twist_angle(R: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Angle of the twist part of R about unit ``axis`` (swing-twist split). [..., 3, 3] -> [...] radians"""
    q = quat_from_matrix(R)
    along = (q[..., 1:] * axis).sum(axis=-1)
    return 2.0 * np.arctan2(along, q[..., 0])


def axis_rotation(axis: np.ndarray, angle: np.ndarray | float) -> np.ndarray:
    """Rotation by ``angle`` about unit ``axis``. -> [..., 3, 3]"""
    return rodrigues(np.asarray(axis) * np.asarray(angle)[..., None])


def kabsch(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, float, np.ndarray]:
    """Similarity transform ``dst ~ s * R @ src + t`` by weighted least squares (Umeyama).

    Args:
        src, dst: corresponding points. [N, 3]
        weights: per point, non-negative. [N] (default: equal)

    Returns:
        R [3, 3] (a proper rotation), s (scale), t [3].
    """
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / max(float(w.sum()), _EPS)
    mu_s, mu_d = w @ src, w @ dst
    a, b = src - mu_s, dst - mu_d
    cov = (b * w[:, None]).T @ a
    U, S, Vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(U @ Vt)) or 1.0
    D = np.diag([1.0, 1.0, d])
    R = U @ D @ Vt
    var = float(np.sum(w * np.sum(a * a, axis=1)))
    s = float(np.sum(S * np.diag(D))) / max(var, _EPS)
    return R, s, mu_d - s * R @ mu_s
