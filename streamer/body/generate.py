"""The generated body model: a code-built human mannequin in the SMPL-X ``.npz`` layout.

The real SMPL-X files are licensed and cannot ship, so the product carries this stand-in.
:func:`build_body_model` returns the arrays and :func:`write_body_model` writes them; the file
loads unchanged with ``smplx.SMPLX(model_path=path)`` (10,475 vertices, 55 joints in the SMPL-X
order and kinematic tree, 10 shape + 10 expression directions, hand PCA, face landmarks).
Everything is closed-form and seeded by nothing: two builds give the same bytes.

Frame and units: metres, +Y up, the body faces +Z, its left side is +X (the SMPL-X canonical
frame). T-pose, 1.70 m tall, soles at y = -1.28, crown at y = +0.42, pelvis joint near
(0, -0.35, 0.01), arm span about equal to height, palms down, thumbs forward.

How it is made
--------------
* **Skeleton** (``_mesh_shape``): the 55 joint centres are designed by hand after the real
  template's proportions; the right side mirrors the left.
* **Shape**: a signed distance function made of a few dozen primitives (a superelliptic torso
  sweep with its own chest/back profiles, tapered round cones for limbs, neck and fingers,
  ellipsoids for muscles, skull, face, nose, lips, ears and feet, a rounded box for the palm,
  eye sockets carved out) joined by polynomial smooth unions, so every junction is a fillet.
* **Mesh** (``_mesh_build``): one closed genus-0 surface plus two eyeball spheres. Rings of
  vertices are ray-cast from the bones onto the surface and joined by zipper strips; arms, thumbs
  and shins leave through holes cut in the torso, palm and foot grids, legs and fingers through
  splits of a ring (crotch bridge, finger webs); ends close with shrinking rings and a pole.
  Every vertex is then relaxed tangentially and projected back onto the smooth-union surface,
  which hides the seams. A few torso rings are sized so the count is exactly 10,475; vertices
  are finally permuted so that the ids smplx hard-codes (nose 9120, eyes 9929/9448, ears
  616/6, fingertips, toes, heels) sit on those parts. Winding is counter-clockwise from outside.
* **Skinning weights** (``_mesh_rig``): each vertex takes a soft minimum over its distances to
  the bone segments it may follow (per part: e.g. fingers only see their own joints and the
  wrist), with a softness proportional to the limb's thickness there, so each joint blends
  over a zone about as long as the limb is thick. Eyeballs follow the eye joints rigidly;
  the chin, lower lip and jaw line are split from the head to the jaw by a smooth mask.
* **Joint regressor**: each joint averages the surface vertices of its parts lying around it,
  re-weighted by maximum entropy so that ``J_regressor @ v_template`` is the designed joint
  exactly; rows are non-negative and sum to one, so joints follow the shape blend shapes.
* **Blend shapes**: ``shapedirs[..., :10]`` are designed displacement fields in metres per unit
  coefficient (0 stature +3.6 % per unit, about +6 cm; 1 girth; 2 shoulder width; 3 hip width;
  4 arm length; 5 leg length; 6 head size; 7 chest depth; 8 belly; 9 torso length);
  ``shapedirs[..., 10:]`` are face-local expressions (0 jaw/mouth open, 1 smile, 2 pucker,
  3 brow raise, 4 frown, 5 eyes close, 6 cheek puff, 7 mouth stretch, 8 sneer, 9 lips pressed),
  a few millimetres to about a centimetre, zero off the head. ``posedirs`` is all zeros: this
  mannequin has no pose-corrective blend shapes.
* **Hands**: ``hands_components{l,r}`` are orthonormal 45x45 bases whose first rows are designed
  motions (curl, spread, thumb flexion, curl staging, finger grouping, pointing) completed by
  Gram-Schmidt; ``hands_mean{l,r}`` is a relaxed slight curl.
* **Landmarks**: 51 static face landmarks (brows, nose, eyes, lips; iBUG-68 order without the
  jaw line) found by casting rays onto the face; a 79x17 dynamic jaw-contour table holding, for
  each head yaw smplx can look up, the silhouette of the lower face.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from streamer.body import _mesh_rig as rig
from streamer.body import _mesh_shape as shp
from streamer.body._mesh_build import NUM_VERTICES, build_mesh
from streamer.body.joints import NUM_JOINTS, PARENTS
from streamer.fileio import atomic_path

__all__ = ["MODEL_VERSION", "SMPLX_VERTEX_IDS", "build_body_model", "write_body_model", "write_npz"]

#: Bump whenever the generator's output changes, so cached files get rebuilt.
MODEL_VERSION = "mannequin-3"

#: The vertex ids ``smplx.vertex_ids.vertex_ids['smplx']`` hard-codes (L = the body's left, +X).
SMPLX_VERTEX_IDS: dict[str, int] = {
    "nose": 9120, "reye": 9929, "leye": 9448, "rear": 616, "lear": 6,
    "rthumb": 8079, "rindex": 7669, "rmiddle": 7794, "rring": 7905, "rpinky": 8022,
    "lthumb": 5361, "lindex": 4933, "lmiddle": 5058, "lring": 5169, "lpinky": 5286,
    "LBigToe": 5770, "LSmallToe": 5780, "LHeel": 8846,
    "RBigToe": 8463, "RSmallToe": 8474, "RHeel": 8635,
}  # fmt: skip

_NUM_POSE_BASIS = (NUM_JOINTS - 1) * 9  # 486


def _permutation(named: dict[str, int], n: int) -> np.ndarray:
    """new-index -> old-index order that puts each named vertex at its smplx id."""
    perm = np.full(n, -1)
    for key, new in SMPLX_VERTEX_IDS.items():
        perm[new] = named[key]
    if len({named[k] for k in SMPLX_VERTEX_IDS}) != len(SMPLX_VERTEX_IDS):
        raise AssertionError("internal: two smplx landmarks picked the same vertex")
    rest = np.setdiff1d(np.arange(n), perm[perm >= 0])  # sorted, so the order is stable
    perm[perm < 0] = rest
    return perm


def build_body_model() -> dict[str, np.ndarray]:
    """Build the mannequin's SMPL-X arrays.

    Returns:
        A dict with the SMPL-X ``.npz`` keys: ``v_template`` [10475, 3] float32 (metres),
        ``f`` [F, 3] int64, ``shapedirs`` [10475, 3, 20] float32, ``posedirs``
        [10475, 3, 486] float32 (zeros), ``J_regressor`` [55, 10475] float32, ``kintree_table``
        [2, 55] int64 (root parent -1), ``weights`` [10475, 55] float32, ``hands_componentsl``/
        ``hands_componentsr`` [45, 45] float32, ``hands_meanl``/``hands_meanr`` [45] float32,
        ``lmk_faces_idx`` [51] int64, ``lmk_bary_coords`` [51, 3] float32,
        ``dynamic_lmk_faces_idx`` [79, 17] int64, ``dynamic_lmk_bary_coords`` [79, 17, 3] float32.
    """
    mesh = build_mesh()
    jp = shp.joint_positions()
    weights = rig.skinning_weights(mesh, jp)
    regressor = rig.joint_regressor(mesh, jp)
    shapedirs = np.concatenate(
        [rig.shape_directions(mesh, jp, weights), rig.expression_directions(mesh, jp)], axis=2
    )
    lmk_f, lmk_b = rig.static_landmarks(mesh)
    dyn_f, dyn_b = rig.dynamic_landmarks(mesh)
    comps_l, mean_l = rig.hand_pca("left")
    comps_r, mean_r = rig.hand_pca("right")

    perm = _permutation(rig.named_vertices(mesh, jp), NUM_VERTICES)
    inv = np.empty_like(perm)
    inv[perm] = np.arange(NUM_VERTICES)
    f32 = np.float32
    return {
        "v_template": mesh.verts[perm].astype(f32),
        "f": inv[mesh.faces].astype(np.int64),
        "shapedirs": shapedirs[perm].astype(f32),
        "posedirs": np.zeros((NUM_VERTICES, 3, _NUM_POSE_BASIS), f32),
        "J_regressor": regressor[:, perm].astype(f32),
        "kintree_table": np.stack([np.array(PARENTS), np.arange(NUM_JOINTS)]).astype(np.int64),
        "weights": weights[perm].astype(f32),
        "hands_componentsl": comps_l.astype(f32),
        "hands_componentsr": comps_r.astype(f32),
        "hands_meanl": mean_l.astype(f32),
        "hands_meanr": mean_r.astype(f32),
        "lmk_faces_idx": lmk_f.astype(np.int64),
        "lmk_bary_coords": lmk_b.astype(f32),
        "dynamic_lmk_faces_idx": dyn_f.astype(np.int64),
        "dynamic_lmk_bary_coords": dyn_b.astype(f32),
    }


def write_body_model(path: Path) -> Path:
    """Build the model and write it to ``path`` (an ``.npz``), atomically; returns ``path``.

    The file is written to a temporary name in the same folder and moved into place, so a
    reader never sees a partial file. Zip entries carry a fixed timestamp, so the bytes are
    reproducible. ``posedirs`` (61 MB, all zeros) is stored uncompressed: a 62 MB file instead of
    0.8 MB, but inflating it took half of every load (:meth:`streamer.body.model.BodyModel.load`, median of eight
    interleaved loads: 0.31 -> 0.15 s).
    """
    return write_npz(Path(path), build_body_model(), stored=("posedirs",))


def write_npz(path: Path, arrays: dict[str, np.ndarray], stored: tuple[str, ...] = ()) -> Path:
    """Write ``arrays`` as a compressed ``.npz`` at ``path``: atomically
    (:func:`~streamer.fileio.atomic_path`) and reproducibly (sorted entries, a fixed date). The
    arrays named in ``stored`` go in uncompressed (read back without inflating them)."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for key in sorted(arrays):
                info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_STORED if key in stored else zipfile.ZIP_DEFLATED
                with zf.open(info, "w", force_zip64=True) as entry:
                    np.lib.format.write_array(entry, np.ascontiguousarray(arrays[key]), allow_pickle=False)
        fh.flush()
        os.fsync(fh.fileno())
    return path
