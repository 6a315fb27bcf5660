"""Surface mesh of the generated mannequin (private helper of ``generate``).

The mesh is one closed genus-0 surface (plus two separate eyeball spheres) built from rings of
vertices swept along the skeleton:

* every ring is placed by casting rays from a point on a bone outwards to the zero set of the
  part's signed distance function (``_mesh_shape``);
* consecutive rings are joined by a *zipper* (a triangle strip that walks both rings by angle,
  so rings may differ in size); ends are closed by shrinking spherical rings and a pole vertex;
* branches are topological, not overlapping parts: the arms, the thumbs and the shins leave
  through rectangular *holes* cut in the torso, palm and foot grids; the legs and the four fingers
  leave through *splits* (the torso's bottom ring plus a crotch bridge gives two leg loops, the
  palm's last ring plus three web vertices gives four finger loops);
* finally every vertex is relaxed tangentially (area-weighted centroids, which evens out the
  triangles) and projected back onto the whole body's smooth-union distance field, which hides
  the seams between the parts; folds left in concave creases are smoothed out.

The vertex count is made exactly :data:`NUM_VERTICES` by sizing a few torso rings after a cheap
counting pass. Orientation is made consistent (and outward) at the end.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from streamer.body import _mesh_shape as shp
from streamer.body.joints import JOINT_INDEX

Array = np.ndarray
NUM_VERTICES = 10475
_X, _Y, _Z = np.eye(3)


@dataclass
class Mesh:
    """A built surface: vertices, faces, a part label per vertex and named special vertices."""

    verts: Array  # [V, 3] float64
    faces: Array  # [F, 3] int64, counter-clockwise seen from outside
    labels: Array  # [V] int64 index into label_names
    label_names: list[str]
    marks: dict[str, int] = field(default_factory=dict)


def _unit(v: Array) -> Array:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _frame(axis: Array, ref: Array) -> tuple[Array, Array, Array]:
    """Right-handed frame (a, e1, e2) with a = axis and e1 the part of ``ref`` normal to it."""
    a = _unit(np.asarray(axis, float))
    e1 = ref - (ref @ a) * a
    e1 = _unit(e1)
    return a, e1, np.cross(a, e1)


class _Builder:
    """Accumulates vertices, labels and faces.

    Vertices are recorded as rays (origin, direction, shape node) and placed in one batch by
    :meth:`resolve`; zippers need positions, so they are recorded too and run after that.
    """

    def __init__(self, parts: dict[str, shp.Node]) -> None:
        self.parts = parts
        self.rays: list[tuple[Array, Array, Array, str, float]] = []  # idx, origins, dirs, node, len
        self.fixed: list[tuple[Array, Array]] = []  # idx, positions
        self.derived: list[tuple[int, int, int, Array]] = []  # idx = midpoint(a, b) + offset
        self.lerps: list[tuple[Array, Array, Array, float]] = []  # idx, ray slots a, b, t
        self.zips: list[tuple[Array, Array, Array]] = []
        self.lab: list[Array] = []
        self.faces: list[Array] = []
        self.count = 0
        self.n_aux = 0
        self.dead: list[Array] = []
        self.label_names: list[str] = []
        self.marks: dict[str, int] = {}
        self.verts = np.zeros((0, 3))

    # -- vertices -------------------------------------------------------------------------

    def label(self, name: str) -> int:
        """Index of a part label (added on first use)."""
        if name not in self.label_names:
            self.label_names.append(name)
        return self.label_names.index(name)

    def new(self, n: int, label: str) -> Array:
        """Reserve ``n`` vertex indices of part ``label``."""
        idx = np.arange(self.count, self.count + n)
        self.lab.append(np.full(n, self.label(label)))
        self.count += n
        return idx

    def add(self, p: Array, label: str) -> Array:
        """Vertices at fixed positions [N, 3]."""
        p = np.atleast_2d(np.asarray(p, float))
        idx = self.new(len(p), label)
        self.fixed.append((idx, p))
        return idx

    def ring(self, origin: Array, dirs: Array, label: str, node: str, max_len: float = 0.25) -> Array:
        """Vertices where rays from ``origin`` along ``dirs`` [N, 3] leave the shape ``node``."""
        dirs = np.atleast_2d(dirs)
        idx = self.new(len(dirs), label)
        self.rays.append((idx, np.broadcast_to(np.asarray(origin, float), dirs.shape), dirs, node, max_len))
        return idx

    def aux_ring(self, origin: Array, dirs: Array, node: str, max_len: float = 0.25) -> Array:
        """Ray-cast points that are not vertices (only used to place interpolated vertices)."""
        idx = -1 - np.arange(self.n_aux, self.n_aux + len(dirs))
        self.n_aux += len(dirs)
        self.rays.append((idx, np.broadcast_to(np.asarray(origin, float), dirs.shape), dirs, node, max_len))
        return idx

    def lerp_ring(self, a: Array, b: Array, t: float, label: str) -> Array:
        """Vertices at (1 - t) a + t b for two equally long lists of (aux or vertex) slots."""
        idx = self.new(len(a), label)
        self.lerps.append((idx, np.asarray(a), np.asarray(b), t))
        return idx

    def midpoint(self, a: int, b: int, offset: Array, label: str) -> int:
        """A vertex half way between vertices ``a`` and ``b``, shifted by ``offset``."""
        idx = int(self.new(1, label)[0])
        self.derived.append((idx, a, b, np.asarray(offset, float)))
        return idx

    def _cast(self, origins: Array, dirs: Array, lengths: Array, node: str) -> Array:
        """First exit of rays from inside the shape ``node``; [N, 3] points."""
        sdf = self.parts[node]
        n_s = 16
        t = np.linspace(0.0, 1.0, n_s)[None, :] * lengths[:, None]
        pts = origins[:, None, :] + t[:, :, None] * dirs[:, None, :]
        d = sdf.eval(pts.reshape(-1, 3)).reshape(len(dirs), n_s)
        outside = d > 0
        outside[:, 0] = False
        first = np.argmax(outside, axis=1)
        found = first > 0
        rows = np.arange(len(dirs))
        lo = np.where(found, t[rows, np.maximum(first - 1, 0)], lengths)
        hi = np.where(found, t[rows, first], lengths)
        for _ in range(7):  # to about 0.1 mm; the fit projects onto the surface anyway
            mid = 0.5 * (lo + hi)
            out = sdf.eval(origins + mid[:, None] * dirs) > 0
            hi = np.where(out, mid, hi)
            lo = np.where(out, lo, mid)
        return origins + (0.5 * (lo + hi))[:, None] * dirs

    def resolve(self) -> None:
        """Place every vertex (batched ray casts per shape node), then build the zippers."""
        v = np.zeros((self.count + self.n_aux, 3))  # aux points live at negative indices
        for idx, p in self.fixed:
            v[idx] = p
        for node in sorted({r[3] for r in self.rays}):
            group = [r for r in self.rays if r[3] == node]
            idx = np.concatenate([r[0] for r in group])
            o = np.concatenate([r[1] for r in group])
            d = np.concatenate([r[2] for r in group])
            ln = np.concatenate([np.full(len(r[0]), r[4]) for r in group])
            v[idx] = self._cast(o, d, ln, node)
        for one, a, b, off in self.derived:
            v[one] = 0.5 * (v[a] + v[b]) + off
        for many, sa, sb, t in self.lerps:
            v[many] = (1.0 - t) * v[sa] + t * v[sb]
        self.verts = v[: self.count]
        for lower, upper, axis in self.zips:
            self._zip(lower, upper, axis)

    # -- faces ----------------------------------------------------------------------------

    def tri(self, t: Array) -> None:
        """Add a batch of triangles that are consistently wound among themselves."""
        self.faces.append(np.asarray(t, dtype=np.int64).reshape(-1, 3))

    def zip(self, lower: Array, upper: Array, axis: Array) -> None:
        """Join two closed rings by a triangle strip (deferred until positions are known)."""
        self.zips.append((np.asarray(lower), np.asarray(upper), np.asarray(axis, float)))

    def _zip(self, lower: Array, upper: Array, axis: Array) -> None:
        """Triangle strip between two closed rings, walking both by angle about ``axis``."""
        a = _unit(np.asarray(axis, float))
        ref = _X if abs(a @ _X) < 0.9 else _Y
        _, e1, e2 = _frame(a, ref)
        seqs = []
        allp = self.verts
        for ring in (np.asarray(lower), np.asarray(upper)):
            p = allp[ring] - allp[ring].mean(axis=0)
            ang = np.arctan2(p @ e2, p @ e1)
            # counter-clockwise about the axis?
            if np.sum(np.sin(np.diff(np.append(ang, ang[0])))) < 0:
                ring, ang = ring[::-1], ang[::-1]
            ang = np.mod(ang, 2 * np.pi)
            s = int(np.argmin(ang))
            ring, ang = np.roll(ring, -s), np.roll(ang, -s)
            ang = np.unwrap(ang)
            seqs.append((ring, ang))
        (lr, la), (ur, ua) = seqs
        nl, nu = len(lr), len(ur)
        i = k = 0
        tris = []
        while i < nl or k < nu:
            na = la[i + 1] if i + 1 < nl else la[0] + 2 * np.pi
            nb = ua[k + 1] if k + 1 < nu else ua[0] + 2 * np.pi
            if k >= nu or (i < nl and na <= nb):
                tris.append((lr[i], lr[(i + 1) % nl], ur[k % nu]))
                i += 1
            else:
                tris.append((lr[i % nl], ur[(k + 1) % nu], ur[k]))
                k += 1
        self.tri(np.array(tris))

    def strip(self, lower: Array, upper: Array, skip: set[int] | None = None) -> None:
        """Quads between two aligned rings of equal size (quad columns in ``skip`` left open)."""
        n = len(lower)
        tris = []
        for j in range(n):
            if skip is not None and j in skip:
                continue
            j1 = (j + 1) % n
            tris.append((lower[j], lower[j1], upper[j1]))
            tris.append((lower[j], upper[j1], upper[j]))
        self.tri(np.array(tris))

    def fan(self, ring: Array, pole: int) -> None:
        """Close a ring with triangles to one pole vertex."""
        n = len(ring)
        self.tri(np.array([(ring[j], ring[(j + 1) % n], pole) for j in range(n)]))

    # -- composite pieces -------------------------------------------------------------------

    def cap(
        self,
        ring: Array,
        centre: Array,
        axis: Array,
        ref: Array,
        sizes: list[int],
        label: str,
        node: str,
        max_len: float,
    ) -> int:
        """Close ``ring`` with shrinking rings of ``sizes`` cast from ``centre`` and a pole."""
        a, e1, e2 = _frame(axis, ref)
        prev = ring
        m = len(sizes)
        for k, n in enumerate(sizes):
            phi = np.radians(90.0 * (m - k) / (m + 1))
            th = 2 * np.pi * (np.arange(n) + 0.5 * (k % 2)) / n
            dirs = np.cos(phi) * a + np.sin(phi) * (np.outer(np.cos(th), e1) + np.outer(np.sin(th), e2))
            cur = self.ring(centre, dirs, label, node, max_len)
            self.zip(prev, cur, a)
            prev = cur
        pole = int(self.ring(centre, a[None, :], label, node, max_len)[0])
        self.fan(prev, pole)
        return pole


def _hole_loop(grid: Array, j0: int, j1: int) -> Array:
    """Boundary of the quads [0, R-1) x [j0, j1) of a ring grid [R, n], as one closed loop."""
    r = len(grid)
    return np.concatenate(
        [grid[0, j0:j1], grid[0 : r - 1, j1], grid[r - 1, j1:j0:-1], grid[r - 1 : 0 : -1, j0]]
    )


def _tube_dirs(e1: Array, e2: Array, n: int, offset: float = 0.0) -> Array:
    """n unit directions around a ring, counter-clockwise from e1 towards e2."""
    th = 2 * np.pi * (np.arange(n) + offset) / n
    return np.outer(np.cos(th), e1) + np.outer(np.sin(th), e2)


def _front_weighted_angles(n: int, amount: float, offset: float = 0.0) -> Array:
    """n angles whose density is proportional to 1 + amount cos(angle) (denser at angle 0)."""
    u = 2 * np.pi * (np.arange(n) + offset) / n
    th = u.copy()
    for _ in range(30):  # Newton on th + amount sin(th) = u
        th -= (th + amount * np.sin(th) - u) / (1.0 + amount * np.cos(th))
    return th


def _polyline(points: Array, s: Array, coord: int) -> Array:
    """Points on a polyline (monotone in coordinate ``coord``) at coordinate values ``s``."""
    pts = np.asarray(points, float)
    order = np.argsort(pts[:, coord])
    pts = pts[order]
    return np.stack([np.interp(s, pts[:, coord], pts[:, c]) for c in range(3)], axis=1)


# ---------------------------------------------------------------------------------------------
# Body parts
# ---------------------------------------------------------------------------------------------

_T_N = 52  # torso ring size
_ARM_COLS = 4  # armhole half-width in torso columns


def _torso_rows() -> Array:
    """Heights of the torso rings, crotch to neck (denser over the shoulders)."""
    low = np.linspace(-0.505, -0.075, 19)
    mid = np.linspace(-0.056, 0.098, 8)
    top = np.linspace(0.110, 0.168, 6)
    return np.concatenate([low, mid, top])


def _build_torso(b: _Builder, extra: int) -> dict[str, Array]:
    """Torso rings; returns named loops (crotch loops, armholes, top ring)."""
    ys = _torso_rows()
    n_low = 19
    sec = shp.torso_section(ys)
    rings: list[Array] = []
    arm_rows = [i for i, y in enumerate(ys) if -0.06 <= y <= 0.115]
    sizes = np.full(len(ys), _T_N)
    # the extra vertices go to the lower torso rings (not the crotch ring, not the armhole grid)
    adjustable = list(range(2, n_low))
    for i, r in enumerate(adjustable):
        sizes[r] += extra // len(adjustable) + (1 if i < extra % len(adjustable) else 0)
    a = _Y
    for i, y in enumerate(ys):
        n = int(sizes[i])
        origin = np.array([0.0, y, sec[i, 3]])
        dirs = _tube_dirs(_Z, _X, n)  # angle 0 = front (+z), n/4 = left (+x)
        rings.append(b.ring(origin, dirs, "torso", "torso", 0.3))
    i0, i1 = arm_rows[0], arm_rows[-1]
    left = range(_T_N // 4 - _ARM_COLS, _T_N // 4 + _ARM_COLS)
    right = range(3 * _T_N // 4 - _ARM_COLS, 3 * _T_N // 4 + _ARM_COLS)
    holes = set(left) | set(right)
    for i in range(len(ys) - 1):
        if i0 <= i < i1:
            b.strip(rings[i], rings[i + 1], skip=holes)
        elif sizes[i] == sizes[i + 1]:
            b.strip(rings[i], rings[i + 1])
        else:
            b.zip(rings[i], rings[i + 1], a)
    grid = np.stack([rings[i] for i in range(i0, i1 + 1)])
    loops = {}
    for name, cols in (("arm_l", left), ("arm_r", right)):
        j0, j1 = cols[0], cols[-1] + 1
        loops[name] = _hole_loop(grid, j0, j1)
        b.dead.append(grid[1:-1, j0 + 1 : j1].ravel())
    # crotch split: bottom ring plus a bridge of vertices under the crotch
    bottom = rings[0]
    n = _T_N
    zf, zb = sec[0, 3] + 0.6 * sec[0, 1], sec[0, 3] - 0.6 * sec[0, 2]
    n_bridge = 5
    zs = np.linspace(zf, zb, n_bridge + 2)[1:-1]
    origins = np.stack([np.zeros(n_bridge), np.full(n_bridge, -0.45), zs], axis=1)
    bridge = b.ring(origins, np.tile(-_Y, (n_bridge, 1)), "torso", "body", 0.15)
    loops["leg_l"] = np.concatenate([[bottom[0]], bridge, bottom[n // 2 : 0 : -1]])
    loops["leg_r"] = np.concatenate([[bottom[0]], bottom[n - 1 : n // 2 - 1 : -1], bridge[::-1]])
    loops["top"] = rings[-1]
    return loops


def _build_neck_head(b: _Builder, top: Array) -> None:
    """Neck rings (tilted towards the jaw line), then the head on a tilted sphere, crown pole.

    Rays from the head centre cannot reach under the chin, so the lowest head rings are a band
    interpolated between the neck's top ring and the first head ring; the fit then lays that
    band onto the surface.
    """
    tilt = np.radians(28.0)
    prev = top
    n_neck = 44
    a = np.array([0.0, np.cos(tilt), np.sin(tilt)])
    e1 = np.array([0.0, -np.sin(tilt), np.cos(tilt)])
    e2 = np.cross(a, e1)
    for k, (y, beta) in enumerate(((0.182, 0.1), (0.196, 0.35), (0.209, 0.62), (0.221, 0.85), (0.232, 1.0))):
        t = beta * tilt
        ek = np.array([0.0, -np.sin(t), np.cos(t)])
        origin = np.array([0.0, y, -0.018])
        cur = b.ring(origin, _tube_dirs(ek, _X, n_neck, 0.5 * (k % 2)), "neck", "neck", 0.12)
        b.zip(prev, cur, _Y)
        prev = cur
    neck_origin = np.array([0.0, 0.232, -0.018])
    c = shp.HEAD_CENTRE
    n_face = 88
    n_band = 4
    lat0 = -36.0
    lats = np.concatenate([np.linspace(lat0, 40.0, 32), np.linspace(45.0, 80.0, 8)])
    front = 0.55  # head rings are denser over the face

    def ring_dirs(n: int, offset: float) -> Array:
        th = _front_weighted_angles(n, front, offset)
        return np.outer(np.cos(th), e1) + np.outer(np.sin(th), e2)

    # band: same angles as the first head ring
    th_dirs = ring_dirs(n_face, 0.0)
    phi0 = np.radians(lat0)
    head_dirs0 = np.cos(phi0) * th_dirs + np.sin(phi0) * a
    aux_neck = b.aux_ring(neck_origin, th_dirs, "neck", 0.12)
    aux_head = b.aux_ring(c, head_dirs0, "head", 0.16)
    for k in range(n_band):
        cur = b.lerp_ring(aux_neck, aux_head, (k + 1) / (n_band + 1), "head")
        b.zip(prev, cur, a)
        prev = cur
    for k, lat in enumerate(lats):
        n = n_face if lat <= 44 else max(12, int(np.rint(n_face * np.cos(np.radians(lat)) * 1.15 / 4)) * 4)
        phi = np.radians(lat)
        dirs = np.cos(phi) * ring_dirs(n, 0.5 * ((k + 1) % 2) if k else 0.0) + np.sin(phi) * a
        cur = b.ring(c, dirs, "head", "head", 0.16)
        b.zip(prev, cur, a)
        prev = cur
    pole = int(b.ring(c, a[None, :], "head", "head", 0.2)[0])
    b.fan(prev, pole)


def _build_eyes(b: _Builder) -> None:
    """Two UV spheres (front pole = pupil centre); separate closed meshes like SMPL-X's eyeballs."""
    j = shp.joint_positions()
    for side, name in (("l", "left_eye"), ("r", "right_eye")):
        c = j[JOINT_INDEX[name]]
        r = shp.EYE_RADIUS
        n_lat, n_lon = 8, 16
        front = b.add(c + r * _Z, f"eye_{side}")
        prev = None
        first = None
        for k in range(n_lat):
            phi = np.pi * (k + 1) / (n_lat + 1)
            th = 2 * np.pi * (np.arange(n_lon) + 0.5 * (k % 2)) / n_lon
            p = c + r * np.stack(
                [np.sin(phi) * np.cos(th), np.sin(phi) * np.sin(th), np.full(n_lon, np.cos(phi))], 1
            )
            cur = b.add(p, f"eye_{side}")
            if prev is None:
                first = cur
            else:
                b.zip(prev, cur, -_Z)
            prev = cur
        back = b.add(c - r * _Z, f"eye_{side}")
        assert first is not None and prev is not None
        b.fan(first[::-1], int(front[0]))
        b.fan(prev, int(back[0]))
        b.marks[f"{side}eye"] = int(front[0])


def _build_arm(b: _Builder, hole: Array, sx: float) -> Array:
    """Arm rings from the armhole to the wrist; returns the last ring (at the wrist)."""
    j = shp.joint_positions()
    side = "left" if sx > 0 else "right"
    chain = np.stack([j[JOINT_INDEX[f"{side}_{n}"]] for n in ("shoulder", "elbow", "wrist")])
    chain = np.vstack([chain[0] - sx * np.array([0.05, 0.0, 0.0]), chain])
    a = sx * _X
    _, e1, e2 = _frame(a, _Y)
    xs = np.concatenate([np.linspace(0.19, 0.40, 10), np.linspace(0.425, 0.655, 10)])
    prev = hole
    label = f"arm_{side[0]}"
    for k, x in enumerate(xs):
        n = 24
        origin = _polyline(chain, np.array([sx * x]), 0)[0]
        cur = b.ring(origin, _tube_dirs(e1, e2, n, 0.5 * (k % 2)), label, f"arm_{side[0]}", 0.15)
        b.zip(prev, cur, a)
        prev = cur
    return prev


def _palm_section(n_dorsal: int, half_w: float, half_h: float) -> Array:
    """Target (z, y) points of a palm cross-section: dorsal row, index side, palmar row, pinky side.

    Counter-clockwise about +x for the left hand (dorsal +y, index side +z).
    """
    z = np.linspace(-half_w, half_w, n_dorsal)
    bulge = half_h * (1.0 - 0.25 * (z / half_w) ** 2)
    dorsal = np.stack([z, bulge], 1)
    palmar = np.stack([z[::-1], -bulge[::-1]], 1)
    return np.vstack([dorsal, [[half_w + 0.6 * half_h, 0.0]], palmar, [[-half_w - 0.6 * half_h, 0.0]]])


def _build_hand(b: _Builder, wrist_ring: Array, sx: float) -> None:
    """Palm (with the thumb hole), web vertices, four fingers and the thumb; fingertip poles."""
    j = shp.joint_positions()
    side = "left" if sx > 0 else "right"
    s = side[0]
    w = j[JOINT_INDEX[f"{side}_wrist"]]
    a = sx * _X
    node = f"hand_{s}"
    s_per = 3  # dorsal segments per finger
    n_d = 4 * s_per + 1
    xs = np.linspace(0.010, 0.090, 10)
    rows = []
    for k, x in enumerate(xs):
        t = x / 0.09
        half_w = 0.028 + 0.011 * min(1.0, t * 1.6)
        half_h = 0.013 - 0.002 * t
        sec = _palm_section(n_d, half_w, half_h)
        centre = w + np.array([sx * x, -0.005 * t, -0.004])
        targets = centre + np.outer(sec[:, 0], _Z) + np.outer(sec[:, 1], _Y)
        dirs = _unit(targets - centre)
        rows.append(b.ring(centre, dirs, f"hand_{s}", node, 0.08))
    # the thumb hole: index side, first rows (columns around the index-side vertex)
    j0, j1 = n_d - 1, n_d + 3  # thumb hole quads: around the index-side vertex, palmar-biased
    h0, h1 = 3, 6
    b.zip(wrist_ring, rows[0], a)
    for i in range(len(rows) - 1):
        b.strip(rows[i], rows[i + 1], skip=set(range(j0, j1)) if h0 <= i < h1 else None)
    grid = np.stack(rows[h0 : h1 + 1])
    thumb_loop = _hole_loop(grid, j0, j1)
    b.dead.append(grid[1:-1, j0 + 1 : j1].ravel())
    last = rows[-1]
    d_row = last[:n_d]
    p_row = last[n_d + 1 : 2 * n_d + 1][::-1]  # palmar, re-indexed pinky -> index
    side_index, side_pinky = last[n_d], last[2 * n_d + 1]
    webs = {}
    for c in (s_per, 2 * s_per, 3 * s_per):  # between dorsal c and palmar c, a little distal
        webs[c] = b.midpoint(int(last[c]), int(last[2 * n_d - c]), sx * 0.004 * _X, f"hand_{s}")
    by_name = {f.name: f for f in shp.FINGERS}
    order = ("pinky", "ring", "middle", "index")
    for fi, name in enumerate(order):
        c0, c1 = fi * s_per, (fi + 1) * s_per
        left_side = [webs[c0]] if c0 in webs else [side_pinky]
        right_side = [webs[c1]] if c1 in webs else [side_index]
        loop = np.concatenate([d_row[c0 : c1 + 1], right_side, p_row[c0 : c1 + 1][::-1], left_side])
        _build_finger(b, loop, by_name[name], sx, s)
    _build_finger(b, thumb_loop, by_name["thumb"], sx, s)


def _build_finger(b: _Builder, loop: Array, f: shp.Finger, sx: float, s: str) -> None:
    pts = np.array(f.points)
    if sx < 0:
        pts = shp.mirror(pts)
    tip = pts[3]
    a = _unit(tip - pts[0])
    _, e1, e2 = _frame(a, _Y)
    label = f"finger_{s}_{f.name}"
    n = 10
    base = pts[0]
    start = 0.036 if f.name == "thumb" else 0.018  # the thumb leaves the palm at its MCP joint
    length = float((tip - base) @ a) - f.radii[3]
    ts = np.linspace(start, length, max(4, int(np.rint((length - start) / 0.0062)) + 1))
    seg = np.cumsum([0.0] + [float(np.linalg.norm(pts[k + 1] - pts[k])) for k in range(3)])
    prev = loop
    node = f"hand_{s}"
    for k, t in enumerate(ts):
        u = min(t, seg[-1])
        origin = np.stack([np.interp(u, seg, pts[:, c]) for c in range(3)])
        cur = b.ring(origin, _tube_dirs(e1, e2, n, 0.5 * (k % 2)), label, node, 0.04)
        b.zip(prev, cur, a)
        prev = cur
    centre = tip - f.radii[3] * a
    pole = b.cap(prev, centre, a, _Y, [6], label, node, 0.04)
    b.marks[f"{s}{f.name}"] = pole


def _build_leg(b: _Builder, crotch: Array, sx: float) -> None:
    """Thigh and shin rings, then the foot tube (with a hole for the ankle), heel and toe caps."""
    j = shp.joint_positions()
    side = "left" if sx > 0 else "right"
    s = side[0]
    chain = np.stack([j[JOINT_INDEX[f"{side}_{n}"]] for n in ("hip", "knee", "ankle")])
    a = -_Y
    _, e1, e2 = _frame(a, _Z)
    ys = np.concatenate([np.linspace(-0.56, -0.80, 10), np.linspace(-0.825, -1.17, 15)])
    prev = crotch
    for k, y in enumerate(ys):
        n = 26
        origin = _polyline(chain, np.array([y]), 1)[0]
        cur = b.ring(origin, _tube_dirs(e1, e2, n, 0.5 * (k % 2)), f"leg_{s}", f"leg_{s}", 0.2)
        b.zip(prev, cur, a)
        prev = cur
    # foot: rings across z, heel to toes; a hole on top where the shin comes down
    ank = chain[2]
    ball = j[JOINT_INDEX[f"{side}_foot"]]
    fa = _Z
    _, f1, f2 = _frame(fa, _Y)
    zs = np.linspace(-0.088, 0.158, 21)
    n_f = 20
    axis_pts = np.stack([ank + np.array([0.0, -0.034, -0.06]), ank + np.array([0.0, -0.03, 0.0]),
                         ball + np.array([0.0, 0.0, 0.0]), ball + np.array([sx * -0.008, -0.0, 0.07])])  # fmt: skip
    rows = []
    for k, z in enumerate(zs):
        origin = _polyline(axis_pts, np.array([z]), 2)[0]
        rows.append(b.ring(origin, _tube_dirs(f1, f2, n_f), f"foot_{s}", f"foot_{s}", 0.1))
    hole_rows = [i for i, z in enumerate(zs) if -0.080 <= z <= 0.004]
    h0, h1 = hole_rows[0], hole_rows[-1]
    half = 4  # hole quads: columns -half .. half-1 around the top (column 0 = +y)
    skip = {c % n_f for c in range(-half, half)}
    for i in range(len(rows) - 1):
        b.strip(rows[i], rows[i + 1], skip=skip if h0 <= i < h1 else None)
    grid = np.roll(np.stack(rows[h0 : h1 + 1]), half, axis=1)  # hole quads now 0 .. 2*half-1
    loop = _hole_loop(grid, 0, 2 * half)
    b.dead.append(grid[1:-1, 1 : 2 * half].ravel())
    b.zip(prev, loop, a)
    heel_c = _polyline(axis_pts, np.array([zs[0]]), 2)[0] + np.array([0.0, 0.0, 0.012])
    b.cap(rows[0][::-1], heel_c, -fa, _Y, [14, 7], f"foot_{s}", f"foot_{s}", 0.1)
    toe_c = _polyline(axis_pts, np.array([zs[-1]]), 2)[0] - np.array([0.0, 0.0, 0.012])
    b.cap(rows[-1], toe_c, fa, _Y, [14, 7], f"foot_{s}", f"foot_{s}", 0.1)


def _assemble(parts: dict[str, shp.Node], count_only: bool, extra: int) -> _Builder:
    """Build every part; ``extra`` vertices go to the lower torso rings.

    With ``count_only`` nothing is placed (no ray casting), which is enough to count vertices.
    """
    b = _Builder(parts)
    loops = _build_torso(b, extra)
    _build_neck_head(b, loops["top"])
    for sx, s in ((1.0, "l"), (-1.0, "r")):
        wrist = _build_arm(b, loops[f"arm_{s}"], sx)
        _build_hand(b, wrist, sx)
        _build_leg(b, loops[f"leg_{s}"], sx)
    _build_eyes(b)
    if not count_only:
        b.resolve()
    return b


def _live_count(b: _Builder) -> int:
    """Vertices that will survive (those inside the holes are dropped)."""
    dead = np.concatenate(b.dead) if b.dead else np.zeros(0, int)
    return b.count - len(np.unique(dead))


# ---------------------------------------------------------------------------------------------
# Clean-up, orientation, fitting
# ---------------------------------------------------------------------------------------------


def _compact(b: _Builder) -> Mesh:
    """Drop the hole vertices, renumber, and orient the faces."""
    verts = b.verts
    labels = np.concatenate(b.lab)
    faces = np.concatenate(b.faces)
    batch = np.concatenate([np.full(len(f), k) for k, f in enumerate(b.faces)])
    keep = np.ones(len(verts), bool)
    if b.dead:
        keep[np.concatenate(b.dead)] = False
    used = np.zeros(len(verts), bool)
    used[faces.ravel()] = True
    if np.any(keep & ~used) or np.any(~keep & used):
        raise AssertionError("internal: mesh construction left unused or referenced-dead vertices")
    remap = np.cumsum(keep) - 1
    marks = {k: int(remap[v]) for k, v in b.marks.items()}
    mesh = Mesh(verts[keep], remap[faces], labels[keep], list(b.label_names), marks)
    mesh.faces = _orient(mesh.faces, batch, mesh.verts)
    return mesh


def _orient(faces: Array, batch: Array, verts: Array) -> Array:
    """Make the winding consistent and outward.

    Faces come in batches (one strip, zipper or fan each) that are consistent inside; a batch is
    flipped or not so that every edge is used once in each direction, then each closed surface
    is flipped if its volume is negative.
    """
    nf = len(faces)
    und = np.sort(np.stack([faces, np.roll(faces, -1, axis=1)], axis=2).reshape(-1, 2), axis=1)
    directed = faces.ravel() < np.roll(faces, -1, axis=1).ravel()  # edge runs low -> high
    key = und[:, 0] * (faces.max() + 1) + und[:, 1]
    order = np.argsort(key, kind="stable")
    ks = key[order]
    if len(ks) % 2 or np.any(ks[0::2] != ks[1::2]) or np.any(ks[1:-1:2] == ks[2::2]):
        raise AssertionError("internal: the surface is not a closed 2-manifold")
    e0, e1 = order[0::2], order[1::2]  # the two uses of each edge
    f0, f1 = e0 // 3, e1 // 3
    same = directed[e0] == directed[e1]  # both uses in one direction: exactly one batch flips
    nb = int(batch.max()) + 1
    b0, b1 = batch[f0], batch[f1]
    link = b0 != b1
    if np.any(same & ~link):
        raise AssertionError("internal: a face batch is inconsistent")
    pairs = np.unique(np.stack([b0[link], b1[link], same[link]], axis=1), axis=0)
    adj: list[list[tuple[int, int]]] = [[] for _ in range(nb)]
    for a, b, flip in pairs.tolist():
        adj[a].append((b, flip))
        adj[b].append((a, flip))
    flipped = np.full(nb, -1)
    for root in range(nb):
        if flipped[root] >= 0:
            continue
        flipped[root] = 0
        queue = deque([root])
        while queue:
            a = queue.popleft()
            for b, flip in adj[a]:
                want = flipped[a] ^ flip
                if flipped[b] < 0:
                    flipped[b] = want
                    queue.append(b)
                elif flipped[b] != want:
                    raise AssertionError("internal: the surface is not orientable")
    out = np.where(flipped[batch][:, None] == 1, faces[:, ::-1], faces)
    # outward: per connected surface (union-find over batches), positive signed volume
    comp = np.arange(nb)

    def find(a: int) -> int:
        while comp[a] != a:
            comp[a] = comp[comp[a]]
            a = comp[a]
        return a

    for a, b, _ in pairs.tolist():
        ra, rb = find(a), find(b)
        if ra != rb:
            comp[max(ra, rb)] = min(ra, rb)
    roots = np.array([find(a) for a in range(nb)])[batch]
    vol = np.einsum("ij,ij->i", verts[out[:, 0]], np.cross(verts[out[:, 1]], verts[out[:, 2]]))
    for r in np.unique(roots):
        sel = roots == r
        if vol[sel].sum() < 0:
            out[sel] = out[sel][:, ::-1]
    assert nf == len(out)
    return out


def _project(sdf: shp.Node, p: Array, steps: int) -> Array:
    """Newton steps onto the zero set along the field's gradient (each clamped to 1 cm)."""
    for _ in range(steps):
        d, g = sdf.eval_grad(p)
        step = (d / np.maximum(np.sum(g * g, axis=1), 1e-6))[:, None] * g
        n = np.linalg.norm(step, axis=1, keepdims=True)
        p = p - step * np.minimum(1.0, 0.01 / np.maximum(n, 1e-12))
    return p


def _relax_step(v: Array, f: Array) -> Array:
    """Tangential area-weighted centroidal displacement (plus a little normal smoothing)."""
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    area = np.linalg.norm(fn, axis=1)
    cen = v[f].mean(axis=1) * area[:, None]
    acc = np.zeros_like(v)
    wsum = np.zeros(len(v))
    nrm = np.zeros_like(v)
    for k in range(3):
        np.add.at(acc, f[:, k], cen)
        np.add.at(wsum, f[:, k], area)
        np.add.at(nrm, f[:, k], fn)
    nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-12)
    d = acc / np.maximum(wsum, 1e-15)[:, None] - v
    dn = np.sum(d * nrm, axis=1, keepdims=True)
    return 0.6 * (d - dn * nrm) + 0.1 * dn * nrm


def _fit(mesh: Mesh, tree: shp.Node, iters: int, face_iters: int) -> None:
    """Tangential area-weighted centroidal relaxation alternated with projection onto the body.

    Each vertex moves (in its tangent plane) towards the area-weighted mean of its triangles'
    centroids, which evens out triangle areas and pulls vertices onto protruding features
    instead of sliding them off; a Newton step along the field's gradient then puts it back on
    the surface. The head and neck, whose features are small, get ``face_iters`` more rounds.
    The eyeballs stay as built.
    """
    v = mesh.verts
    f = mesh.faces
    names = mesh.label_names
    movable = np.array([not names[k].startswith("eye_") for k in mesh.labels])
    face = np.array([names[k] in ("head", "neck") for k in mesh.labels])
    idx = np.nonzero(movable)[0]
    v[idx] = _project(tree, v[idx], 2)
    for _ in range(iters):
        v[idx] += _relax_step(v, f)[idx]
        v[idx] = _project(tree, v[idx], 1)
    sub = np.nonzero(face)[0]
    fsub = f[np.any(face[f], axis=1)]
    local = tree.prune(v[sub].min(axis=0) - 0.03, v[sub].max(axis=0) + 0.03)
    for _ in range(face_iters):
        v[sub] += _relax_step(v, fsub)[sub]
        v[sub] = _project(local, v[sub], 1)
    v[idx] = _project(tree, v[idx], 2)
    _untangle(mesh, tree, movable)


def _untangle(mesh: Mesh, tree: shp.Node, movable: Array, rounds: int = 6) -> None:
    """Smooth away folds: faces whose normal opposes the field's gradient.

    Projection can squeeze vertices across each other in concave creases (thumb web, crotch);
    their neighbourhoods get plain umbrella smoothing, then are put back on the surface.
    """
    v, f = mesh.verts, mesh.faces
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    deg = np.bincount(e[:, 0], minlength=len(v)).astype(float)
    check = np.all(movable[f], axis=1)  # faces to test; later rounds only near earlier folds
    for _ in range(rounds):
        fi = np.nonzero(check)[0]
        fn = np.cross(v[f[fi, 1]] - v[f[fi, 0]], v[f[fi, 2]] - v[f[fi, 0]])
        _, g = tree.eval_grad(v[f[fi]].mean(axis=1))
        bad = fi[np.einsum("ij,ij->i", fn, g) <= 0.0]
        if not len(bad):
            return
        hit = np.zeros(len(v), bool)
        hit[f[bad].ravel()] = True
        for _ in range(2):  # two rings of neighbours
            hit[e[hit[e[:, 0]], 1]] = True
        hit &= movable
        nb = np.zeros_like(v)
        np.add.at(nb, e[:, 0], v[e[:, 1]])
        sel = np.nonzero(hit)[0]
        v[sel] = 0.5 * v[sel] + 0.5 * nb[sel] / deg[sel, None]
        v[sel] = _project(tree, v[sel], 2)
        check = np.any(hit[f], axis=1) & np.all(movable[f], axis=1)


def build_mesh(fit_iters: int = 10, face_iters: int = 20) -> Mesh:
    """Build the mannequin surface: exactly NUM_VERTICES vertices, outward winding.

    ``fit_iters`` rounds of relaxation over the whole body and ``face_iters`` more over the head
    and neck; a negative ``fit_iters`` skips fitting (the raw ray-cast mesh, for debugging).
    """
    parts = shp.body_sdf()
    counted = _live_count(_assemble(parts, count_only=True, extra=0))
    b = _assemble(parts, count_only=False, extra=NUM_VERTICES - counted)
    mesh = _compact(b)
    if len(mesh.verts) != NUM_VERTICES:
        raise AssertionError(f"internal: {len(mesh.verts)} vertices, expected {NUM_VERTICES}")
    if fit_iters >= 0:
        _fit(mesh, parts["body"], fit_iters, face_iters)
    return mesh
