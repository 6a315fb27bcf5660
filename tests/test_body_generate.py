"""Tests for the generated SMPL-X-layout mannequin (``streamer.body.generate``).

The model is built once per module and loaded through the real ``smplx`` package, so these
tests check the file as every other part of the product will see it.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import pytest
import smplx
import torch

from streamer.body import generate
from streamer.body.joints import JOINT_INDEX as J
from streamer.body.joints import NUM_JOINTS, PARENTS

V = 10475
IDS = generate.SMPLX_VERTEX_IDS


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate.write_body_model(tmp_path_factory.mktemp("body") / "mannequin.npz")


@pytest.fixture(scope="module")
def arrays(model_path: Path) -> dict[str, np.ndarray]:
    with np.load(model_path) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def body(model_path: Path) -> smplx.SMPLX:
    return smplx.SMPLX(model_path=str(model_path), use_pca=False, flat_hand_mean=True, use_face_contour=True)


def _forward(body: smplx.SMPLX, **params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertices [V, 3] and joints [J, 3] for the given parameters (unbatched arrays)."""
    kw = {k: torch.as_tensor(np.asarray(v, np.float32))[None] for k, v in params.items()}
    with torch.no_grad():
        out = body(**kw)
    return out.vertices[0].numpy().astype(float), out.joints[0].numpy().astype(float)


@pytest.fixture(scope="module")
def rest(body: smplx.SMPLX) -> tuple[np.ndarray, np.ndarray]:
    return _forward(body)


# -- layout ------------------------------------------------------------------------------------


def test_keys_shapes_and_dtypes(arrays: dict[str, np.ndarray]) -> None:
    expect = {
        "v_template": (V, 3), "shapedirs": (V, 3, 20), "posedirs": (V, 3, 486),
        "J_regressor": (NUM_JOINTS, V), "kintree_table": (2, NUM_JOINTS), "weights": (V, NUM_JOINTS),
        "hands_componentsl": (45, 45), "hands_componentsr": (45, 45), "hands_meanl": (45,),
        "hands_meanr": (45,), "lmk_faces_idx": (51,), "lmk_bary_coords": (51, 3),
        "dynamic_lmk_faces_idx": (79, 17), "dynamic_lmk_bary_coords": (79, 17, 3),
    }  # fmt: skip
    for key, shape in expect.items():
        assert arrays[key].shape == shape, key
        kind = "i" if key in ("kintree_table", "lmk_faces_idx", "dynamic_lmk_faces_idx") else "f"
        assert arrays[key].dtype.kind == kind, key
    f = arrays["f"]
    assert f.ndim == 2 and f.shape[1] == 3 and f.dtype == np.int64
    assert f.min() == 0 and f.max() == V - 1
    assert np.all(np.bincount(f.ravel(), minlength=V) >= 3), "every vertex belongs to faces"
    assert not np.any(arrays["posedirs"]), "this mannequin has no pose correctives"


def test_kinematic_tree(arrays: dict[str, np.ndarray], body: smplx.SMPLX) -> None:
    kt = arrays["kintree_table"]
    assert kt[0, 0] == -1 and list(kt[0, 1:]) == list(PARENTS[1:])
    assert list(kt[1]) == list(range(NUM_JOINTS))
    assert body.parents.tolist() == list(PARENTS)


def test_surface_is_closed_and_outward(arrays: dict[str, np.ndarray]) -> None:
    v, f = arrays["v_template"].astype(float), arrays["f"]
    directed = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    # every edge is used exactly once in each direction: closed, consistently wound
    assert len(np.unique(directed, axis=0)) == len(directed)
    assert set(map(tuple, directed)) == set(map(tuple, directed[:, ::-1]))
    vol = np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum() / 6.0
    assert 0.04 < vol < 0.12, f"body volume {vol:.3f} m^3 (outward normals give a positive volume)"
    normals = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    cen = v[f].mean(axis=1)
    crown = np.argmax(cen[:, 1])
    assert normals[crown, 1] > 0.9
    nose = np.argmax(np.where(np.abs(cen[:, 0]) < 0.01, cen[:, 2], -np.inf))
    assert normals[nose, 2] > 0.5
    sole = np.argmin(np.where(cen[:, 0] > 0, cen[:, 1], np.inf))
    assert normals[sole, 1] < -0.9


# -- proportions and rest pose -------------------------------------------------------------------


def test_proportions(rest: tuple[np.ndarray, np.ndarray]) -> None:
    v, j = rest
    height = v[:, 1].max() - v[:, 1].min()
    span = v[:, 0].max() - v[:, 0].min()
    assert 1.6 < height < 1.8
    assert abs(span - height) < 0.1 * height
    assert abs(v[:, 1].min() + 1.28) < 0.02 and abs(v[:, 1].max() - 0.42) < 0.02
    assert np.linalg.norm(j[J["pelvis"]] - [0.0, -0.35, 0.01]) < 0.03
    assert j[J["left_wrist"], 0] > 0.5 and j[J["right_wrist"], 0] < -0.5  # left hand at +X
    assert j[J["left_foot"], 2] > j[J["left_ankle"], 2] + 0.08  # feet point +Z
    assert j[J["left_eye"], 2] > j[J["head"], 2] + 0.05  # faces +Z
    for name in ("hip", "knee", "ankle", "collar", "shoulder", "elbow", "wrist", "index1", "thumb3", "eye"):
        assert j[J[f"left_{name}"], 0] > 0 and j[J[f"right_{name}"], 0] < 0
    # the chain pelvis -> spine -> neck -> head goes up
    ys = [j[J[n], 1] for n in ("pelvis", "spine1", "spine2", "spine3", "neck", "head")]
    assert ys == sorted(ys)


def test_rest_joints_come_from_the_regressor(
    arrays: dict[str, np.ndarray], rest: tuple[np.ndarray, np.ndarray]
) -> None:
    reg, vt = arrays["J_regressor"].astype(float), arrays["v_template"].astype(float)
    assert reg.min() >= 0.0
    np.testing.assert_allclose(reg.sum(axis=1), 1.0, atol=1e-5)
    _, j = rest
    np.testing.assert_allclose(j[:NUM_JOINTS], reg @ vt, atol=1e-5)
    assert j.shape[0] >= NUM_JOINTS


def test_joints_sit_inside_their_body_parts(
    arrays: dict[str, np.ndarray], rest: tuple[np.ndarray, np.ndarray]
) -> None:
    v, j = rest
    for name in ("left_knee", "right_elbow", "left_wrist", "right_ankle", "left_middle2", "head"):
        d = np.linalg.norm(v - j[J[name]], axis=1)
        assert 0.003 < d.min() < 0.09, name  # inside, near the surface of its limb
        near = v[d < 2.0 * d.min() + 0.005] - j[J[name]]
        assert np.linalg.norm(near.mean(axis=0)) < 0.6 * d.min() + 0.01, (
            f"{name} is not surrounded by its part"
        )


def test_joints_follow_the_shape(body: smplx.SMPLX, rest: tuple[np.ndarray, np.ndarray]) -> None:
    _, j0 = rest
    betas = np.zeros(10)
    betas[0] = 2.0
    _, j1 = _forward(body, betas=betas)
    leg0 = np.linalg.norm(j0[J["left_knee"]] - j0[J["left_ankle"]])
    leg1 = np.linalg.norm(j1[J["left_knee"]] - j1[J["left_ankle"]])
    assert leg1 > leg0 * 1.04
    assert j1[J["head"], 1] > j0[J["head"], 1] + 0.01


# -- skinning -------------------------------------------------------------------------------------


def test_weights_are_a_partition_of_unity(arrays: dict[str, np.ndarray]) -> None:
    w = arrays["weights"].astype(float)
    assert w.min() >= 0.0
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-5)


def _along(
    v: np.ndarray, w: np.ndarray, a: np.ndarray, b: np.ndarray, t: float, radius: float, half: float
) -> np.ndarray:
    """Mean weights of the vertices in a slab (half thickness ``half``) across a-b at parameter t."""
    axis = (b - a) / np.linalg.norm(b - a)
    p = a + t * (b - a)
    rel = v - p
    slab = (np.abs(rel @ axis) < half) & (np.linalg.norm(rel - np.outer(rel @ axis, axis), axis=1) < radius)
    assert slab.sum() >= 6
    return w[slab].mean(axis=0)


def test_weights_blend_smoothly_across_joints(
    arrays: dict[str, np.ndarray], rest: tuple[np.ndarray, np.ndarray]
) -> None:
    v, w = arrays["v_template"].astype(float), arrays["weights"].astype(float)
    _, j = rest
    for upper, lower, child, radius, half in (
        ("left_shoulder", "left_elbow", "left_wrist", 0.07, 0.012),
        ("right_hip", "right_knee", "right_ankle", 0.09, 0.015),
        ("left_index1", "left_index2", "left_index3", 0.015, 0.0045),
    ):
        a, b, c = j[J[upper]], j[J[lower]], j[J[child]]
        mid_upper = _along(v, w, a, b, 0.5, radius, half)
        at_joint = _along(v, w, a, b, 1.0, radius, half)
        mid_lower = _along(v, w, b, c, 0.5, radius, half)
        assert mid_upper[J[upper]] > 0.85 and mid_upper[J[lower]] < 0.1, upper
        assert 0.2 < at_joint[J[lower]] < 0.8 and 0.2 < at_joint[J[upper]] < 0.8, f"no blend at {lower}"
        assert mid_lower[J[lower]] > 0.85, lower
        # monotone hand-over from one bone to the next
        ts = np.linspace(0.6, 1.0, 5)
        share = [_along(v, w, a, b, t, radius, half)[J[lower]] for t in ts]
        assert all(x <= y + 0.02 for x, y in itertools.pairwise(share)), share


def test_face_weights(arrays: dict[str, np.ndarray]) -> None:
    v, w = arrays["v_template"].astype(float), arrays["weights"].astype(float)
    for side, vid in (("left", IDS["leye"]), ("right", IDS["reye"])):
        assert w[vid, J[f"{side}_eye"]] == pytest.approx(1.0)
    nose_y = v[IDS["nose"], 1]
    below_mouth = (np.abs(v[:, 0]) < 0.01) & (v[:, 1] < nose_y - 0.05) & (v[:, 1] > nose_y - 0.09)
    chin = np.argmax(np.where(below_mouth, v[:, 2], -np.inf))
    assert w[chin, J["jaw"]] > 0.8
    assert w[IDS["nose"], J["jaw"]] == 0.0
    crown = np.argmax(v[:, 1])
    assert w[crown, J["head"]] > 0.99
    forehead = np.argmax(
        np.where((np.abs(v[:, 0]) < 0.01) & (v[:, 1] > 0.34) & (v[:, 1] < 0.36), v[:, 2], -np.inf)
    )
    assert w[forehead, J["jaw"]] == 0.0


def test_bending_an_elbow_moves_only_that_forearm(
    body: smplx.SMPLX, arrays: dict[str, np.ndarray], rest: tuple[np.ndarray, np.ndarray]
) -> None:
    v0, _ = rest
    w = arrays["weights"].astype(float)
    pose = np.zeros((21, 3))
    pose[J["left_elbow"] - 1] = [0.0, -np.pi / 2, 0.0]
    v1, j1 = _forward(body, body_pose=pose.ravel())
    forearm = w[:, J["left_elbow"]] > 0.999
    assert forearm.sum() > 100
    rng = np.random.default_rng(0)
    a, b = rng.choice(np.nonzero(forearm)[0], (2, 300))
    d0 = np.linalg.norm(v0[a] - v0[b], axis=1)
    d1 = np.linalg.norm(v1[a] - v1[b], axis=1)
    assert np.abs(d1 - d0).max() < 1e-4, "the forearm moves rigidly"
    right = v0[:, 0] < -0.25
    assert np.abs(v1[right] - v0[right]).max() < 1e-6, "the other arm stays"
    hand = w[:, J["left_wrist"]] > 0.9
    assert np.linalg.norm(v1[hand] - v0[hand], axis=1).min() > 0.1
    # the upper arm stays put, the wrist swings to the side of the elbow
    upper = w[:, J["left_shoulder"]] > 0.999
    assert np.abs(v1[upper] - v0[upper]).max() < 1e-6
    assert abs(j1[J["left_wrist"], 0] - j1[J["left_elbow"], 0]) < 0.02


# -- the vertex ids smplx hard-codes -------------------------------------------------------------


def test_face_vertex_ids(rest: tuple[np.ndarray, np.ndarray]) -> None:
    v, j = rest
    head = v[:, 1] > j[J["neck"], 1] + 0.05
    nose = v[IDS["nose"]]
    assert IDS["nose"] == np.argmax(np.where(head, v[:, 2], -np.inf)), (
        "the nose tip is the front-most head vertex"
    )
    assert abs(nose[0]) < 0.005 and np.linalg.norm(nose - j[J["head"]]) < 0.16
    for key, side in (("leye", 1.0), ("reye", -1.0)):
        eye = v[IDS[key]]
        assert side * eye[0] > 0.02
        assert eye[1] > nose[1] + 0.02
        centre = j[J["left_eye" if side > 0 else "right_eye"]]
        assert 0.008 < eye[2] - centre[2] < 0.02 and np.linalg.norm(eye[:2] - centre[:2]) < 0.003
    for key, side in (("lear", 1.0), ("rear", -1.0)):
        ear = v[IDS[key]]
        assert side * ear[0] > 0.07, "ears stick out at the side of the head"
        assert abs(ear[1] - j[J["left_eye"], 1]) < 0.04 and ear[2] < j[J["left_eye"], 2] - 0.05


def test_fingertip_vertex_ids(arrays: dict[str, np.ndarray], rest: tuple[np.ndarray, np.ndarray]) -> None:
    v, j = rest
    w = arrays["weights"].astype(float)
    for s, side in (("l", "left"), ("r", "right")):
        tips = {f: v[IDS[f"{s}{f}"]] for f in ("thumb", "index", "middle", "ring", "pinky")}
        for finger, tip in tips.items():
            last = j[J[f"{side}_{finger}3"]]
            dists = {g: np.linalg.norm(tip - j[J[f"{side}_{g}3"]]) for g in tips}
            assert min(dists, key=dists.__getitem__) == finger
            on_finger = w[:, J[f"{side}_{finger}3"]] > 0.5
            axis = last - j[J[f"{side}_{finger}1"]]
            axis /= np.linalg.norm(axis)
            assert IDS[f"{s}{finger}"] == np.argmax(np.where(on_finger, v @ axis, -np.inf)), finger
            assert np.linalg.norm(tip - j[J[f"{side}_wrist"]]) > 0.08


def test_foot_vertex_ids(rest: tuple[np.ndarray, np.ndarray]) -> None:
    v, j = rest
    for s, side, sx in (("L", "left", 1.0), ("R", "right", -1.0)):
        ankle = j[J[f"{side}_ankle"]]
        big, small, heel = v[IDS[f"{s}BigToe"]], v[IDS[f"{s}SmallToe"]], v[IDS[f"{s}Heel"]]
        for p in (big, small, heel):
            assert sx * p[0] > 0.03 and p[1] < ankle[1] - 0.02
        assert big[2] > ankle[2] + 0.15 and small[2] > ankle[2] + 0.13
        assert sx * big[0] < sx * small[0] - 0.02, "the big toe is on the inner side"
        assert heel[2] < ankle[2] - 0.03


# -- blend shapes ---------------------------------------------------------------------------------


def test_stature_direction(body: smplx.SMPLX, rest: tuple[np.ndarray, np.ndarray]) -> None:
    v0, _ = rest
    h0 = v0[:, 1].max() - v0[:, 1].min()
    for sign in (1.0, -1.0):
        betas = np.zeros(10)
        betas[0] = 2.0 * sign
        v, _ = _forward(body, betas=betas)
        dh = (v[:, 1].max() - v[:, 1].min()) - h0
        assert 0.08 < sign * dh < 0.16, dh


def test_every_shape_direction_does_something(arrays: dict[str, np.ndarray]) -> None:
    sd = arrays["shapedirs"][:, :, :10].astype(float)
    size = np.linalg.norm(sd, axis=1).max(axis=0)
    assert np.all(size > 0.005) and np.all(size < 0.1), size


def test_expressions_move_only_the_face(body: smplx.SMPLX, rest: tuple[np.ndarray, np.ndarray]) -> None:
    v0, j0 = rest
    for k in range(10):
        expr = np.zeros(10)
        expr[k] = 1.0
        v, _ = _forward(body, expression=expr)
        disp = np.linalg.norm(v - v0, axis=1)
        assert 0.002 < disp.max() < 0.02, (k, disp.max())
        moved = disp > 1e-7
        assert v0[moved, 1].min() > j0[J["neck"], 1] + 0.02, "only the face moves"
        assert v0[moved, 2].min() > j0[J["head"], 2] - 0.03, "the back of the head stays"


# -- hands and landmarks -----------------------------------------------------------------------------


def test_hand_pca(
    arrays: dict[str, np.ndarray], body: smplx.SMPLX, rest: tuple[np.ndarray, np.ndarray]
) -> None:
    v0, j0 = rest
    for side in ("l", "r"):
        comps = arrays[f"hands_components{side}"].astype(float)
        np.testing.assert_allclose(comps @ comps.T, np.eye(45), atol=1e-5)
        mean = arrays[f"hands_mean{side}"]
        assert 0.05 < np.abs(mean).max() < 0.5, "a relaxed slight curl"
    # the first component curls the fingers towards the palm: tips come closer to the wrist
    pose = arrays["hands_componentsl"][0].astype(float) * 3.0
    v, _ = _forward(body, left_hand_pose=pose)
    wrist = j0[J["left_wrist"]]
    for finger in ("index", "middle", "ring", "pinky"):
        tip = IDS[f"l{finger}"]
        assert np.linalg.norm(v[tip] - wrist) < np.linalg.norm(v0[tip] - wrist) - 0.03, finger
        assert v[tip, 1] < v0[tip, 1] - 0.02, "towards the palm (palms face down)"


def test_landmarks(arrays: dict[str, np.ndarray], rest: tuple[np.ndarray, np.ndarray]) -> None:
    _, j = rest
    nf = len(arrays["f"])
    for fk, bk in (
        ("lmk_faces_idx", "lmk_bary_coords"),
        ("dynamic_lmk_faces_idx", "dynamic_lmk_bary_coords"),
    ):
        assert arrays[fk].min() >= 0 and arrays[fk].max() < nf
        bary = arrays[bk].astype(float)
        assert bary.min() >= 0.0
        np.testing.assert_allclose(bary.sum(axis=-1), 1.0, atol=1e-5)
    lm = j[NUM_JOINTS + len(IDS) :]
    assert lm.shape == (51 + 17, 3)
    assert np.all(lm[:, 1] > j[J["neck"], 1]) and np.all(lm[:51, 2] > j[J["head"], 2] + 0.07)
    assert np.all(lm[51:, 2] > j[J["head"], 2])  # the jaw contour runs from ear to ear in front
    brows, nose, eyes, mouth = lm[0:10], lm[10:19], lm[19:31], lm[31:51]
    assert brows[:, 1].min() > eyes[:, 1].max() > nose[5:, 1].max() > mouth[:, 1].max()
    assert np.all(brows[:5, 0] < 0) and np.all(brows[5:, 0] > 0)  # subject's right brow first
    assert np.all(eyes[:6, 0] < 0) and np.all(eyes[6:, 0] > 0)
    contour = lm[51:]
    assert contour[0, 0] < -0.04 and contour[-1, 0] > 0.04 and contour[8, 1] < mouth[:, 1].min()


# -- reproducibility and files -----------------------------------------------------------------------


def test_build_is_deterministic(arrays: dict[str, np.ndarray]) -> None:
    again = generate.build_body_model()
    assert sorted(again) == sorted(arrays)
    for key, value in again.items():
        assert value.dtype == arrays[key].dtype and value.tobytes() == arrays[key].tobytes(), key


def test_files_are_reproducible_and_written_atomically(arrays: dict[str, np.ndarray], tmp_path: Path) -> None:
    a = generate.write_npz(tmp_path / "a.npz", arrays)
    b = generate.write_npz(tmp_path / "sub" / "b.npz", arrays)
    assert a.read_bytes() == b.read_bytes()
    # the mode a plain open() gives (not the private mode of the temporary file it was written as)
    umask = os.umask(0o022)
    os.umask(umask)
    assert a.stat().st_mode & 0o777 == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "sub"], "no temporary files left"
    with np.load(a) as data:
        assert data["f"].tobytes() == arrays["f"].tobytes()


def test_the_cached_model_stores_its_zero_pose_blend_shapes_uncompressed() -> None:
    """(61 MB of zeros: inflating them was 0.19 s of every load; the rest stays compressed)"""
    import zipfile

    from streamer.body import model

    with zipfile.ZipFile(model.builtin_model_path()) as zf:
        kinds = {info.filename: info.compress_type for info in zf.infolist()}
    assert kinds.pop("posedirs.npy") == zipfile.ZIP_STORED
    assert set(kinds.values()) == {zipfile.ZIP_DEFLATED}
    with np.load(model.builtin_model_path()) as data:
        assert data["posedirs"].shape == (generate.NUM_VERTICES, 3, 486) and not data["posedirs"].any()


def test_a_new_model_version_is_a_new_cache_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """A change to the generated body bumps MODEL_VERSION; machines that cached the old one then build
    the new one instead of loading a stale file."""
    from streamer.body import model

    now = model.builtin_model_path()
    assert generate.MODEL_VERSION in now.name and now.exists()
    built: list[Path] = []
    monkeypatch.setattr(generate, "MODEL_VERSION", generate.MODEL_VERSION + "-next")
    monkeypatch.setattr(generate, "write_body_model", lambda path: built.append(path) or path.touch())
    try:
        later = model.builtin_model_path()
        assert later != now and built == [later] and "-next" in later.name
    finally:
        for path in built:
            path.unlink(missing_ok=True)


def test_a_model_file_that_cannot_be_written_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder is made but the file cannot be written (a full disk): the error still says where
    and what to do, and leaves nothing behind."""
    from streamer.body import model
    from streamer.errors import BodyModelError

    def full_disk(path: str, flags: int, mode: int = 0o777) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setenv("STREAMER_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(generate, "build_body_model", dict)  # (nothing to build: the write fails first)
    monkeypatch.setattr("streamer.fileio.os.open", full_disk)
    with pytest.raises(BodyModelError, match="cannot write the built-in body model into the cache folder") as err:
        model.builtin_model_path()
    assert "No space left on device" in str(err.value) and "set STREAMER_CACHE_DIR" in str(err.value)
    assert [p.name for p in (tmp_path / "body").iterdir()] == []


def test_a_cache_folder_that_cannot_be_written_is_one_clear_error(tmp_path: Path) -> None:
    """(a file where the folder should be: a read-only folder would not stop root, who runs CI; a new
    process, since this one has its body model loaded already)"""
    import os
    import subprocess
    import sys

    (tmp_path / "afile").write_text("not a folder")
    env = {**os.environ, "STREAMER_CACHE_DIR": str(tmp_path / "afile" / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "streamer.cli", "render", "--out", str(tmp_path / "out.mp4"), "--size", "32"],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(
        "streamer render: error: cannot write the built-in body model into the cache folder "
    ), proc.stderr
    assert "afile" in proc.stderr and "set STREAMER_CACHE_DIR to a folder you can write" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
