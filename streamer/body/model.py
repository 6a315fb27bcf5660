"""The SMPL-X body model: the built-in generated one, or the user's real files, loaded via ``smplx``."""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import threading
from pathlib import Path

import smplx
import torch
from smplx.lbs import batch_rodrigues
from torch import Tensor

from ..errors import BodyModelError, InputError, PoseError
from .joints import NUM_JOINTS, PARENTS
from .kinematics import forward_kinematics
from .pose import SmplxPose

_BUILTIN_LOCK = threading.Lock()


def cache_dir() -> Path:
    """Where generated assets are cached: ``$STREAMER_CACHE_DIR`` or ``$XDG_CACHE_HOME/streamer``."""
    if os.environ.get("STREAMER_CACHE_DIR"):
        return Path(os.environ["STREAMER_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "streamer"


def builtin_model_path() -> Path:
    """Path of the generated SMPL-X-layout model, generating it on first use.

    Raises:
        BodyModelError: the cache folder cannot be written (it names the folder and the variable
            that moves it).
    """
    from . import generate

    path = cache_dir() / "body" / f"streamer_smplx_{generate.MODEL_VERSION}.npz"
    with _BUILTIN_LOCK:
        try:
            if not path.exists():  # (a folder on the way that cannot be searched raises here)
                path.parent.mkdir(parents=True, exist_ok=True)
                generate.write_body_model(path)
        except (OSError, InputError) as exc:  # InputError: fileio.atomic_path could not write the file
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise BodyModelError(
                f"cannot write the built-in body model into the cache folder {path.parent} "
                f"({why}): set STREAMER_CACHE_DIR to a folder you can write"
            ) from None
    return path


def find_smplx_file(smplx_dir: str | Path, gender: str = "neutral") -> Path:
    """The SMPL-X ``.npz`` inside a user's directory (or the file itself).

    Raises:
        BodyModelError: naming the file that was expected.
    """
    path = Path(smplx_dir).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        raise BodyModelError(f"SMPL-X directory not found: {path}")
    name = f"SMPLX_{gender.upper()}.npz"
    for candidate in (path / name, path / "smplx" / name):
        if candidate.is_file():
            return candidate
    raise BodyModelError(
        f"no {name} in {path} (nor in {path / 'smplx'}); download SMPL-X from its official site "
        "and pass the folder that holds SMPLX_NEUTRAL.npz"
    )


class BodyModel:
    """An SMPL-X body: template, shape and expression directions, skinning weights, skeleton.

    Use :meth:`load`. Hand poses are axis-angle relative to a flat hand (no PCA).
    All tensors are float32 on :attr:`device`; the frame is SMPL-X's (+Y up, faces +Z, metres).
    """

    def __init__(self, npz_path: Path, layer: smplx.SMPLX) -> None:
        self.npz_path = Path(npz_path)
        self.layer = layer.eval()
        for p in self.layer.parameters():
            p.requires_grad_(False)
        self.parents: Tensor = layer.parents  # [55] long, parents[0] = -1
        if layer.parents.shape[0] != NUM_JOINTS or tuple(layer.parents[1:].tolist()) != PARENTS[1:]:
            raise BodyModelError(f"{npz_path}: kinematic tree is not SMPL-X's 55-joint tree")
        self.v_template: Tensor = layer.v_template  # [V, 3]
        self.shapedirs: Tensor = layer.shapedirs  # [V, 3, B]
        self.exprdirs: Tensor = layer.expr_dirs  # [V, 3, E]
        self.J_regressor: Tensor = layer.J_regressor  # [55, V]
        self.lbs_weights: Tensor = layer.lbs_weights  # [V, 55]
        self.faces: Tensor = layer.faces_tensor  # [F, 3] long

    @classmethod
    def load(
        cls,
        smplx_dir: str | Path | None = None,
        gender: str = "neutral",
        num_betas: int = 10,
        num_expression: int = 10,
        device: torch.device | str = "cpu",
    ) -> BodyModel:
        """Load the built-in generated model (default) or real SMPL-X files from ``smplx_dir``.

        Raises:
            BodyModelError: files missing or not in the SMPL-X layout.
        """
        path = builtin_model_path() if smplx_dir is None else find_smplx_file(smplx_dir, gender)
        try:
            # smplx prints warnings (e.g. "only 10 shape and 10 expression coefficients") on stdout.
            with contextlib.redirect_stdout(io.StringIO()):
                layer = smplx.SMPLX(
                    model_path=str(path),
                    gender=gender,
                    num_betas=num_betas,
                    num_expression_coeffs=num_expression,
                    use_pca=False,
                    flat_hand_mean=True,
                    ext="npz",
                )
        except (KeyError, AttributeError, ValueError, OSError, AssertionError, pickle.UnpicklingError) as exc:
            raise BodyModelError(f"{path}: not a loadable SMPL-X .npz ({type(exc).__name__}: {exc})") from exc
        return cls(path, layer.to(device))

    # -- properties ----------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.v_template.device

    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])

    @property
    def num_betas(self) -> int:
        return int(self.shapedirs.shape[-1])

    @property
    def num_expression(self) -> int:
        return int(self.exprdirs.shape[-1])

    def to(self, device: torch.device | str) -> BodyModel:
        return BodyModel(self.npz_path, self.layer.to(device))

    # -- geometry ------------------------------------------------------------------------

    def _fit_coeffs(self, coeffs: Tensor | None, size: int, lead: tuple[int, ...]) -> Tensor:
        """Pad or cut shape/expression coefficients to the model's count."""
        if coeffs is None:
            return torch.zeros(lead + (size,), device=self.device)
        coeffs = coeffs.to(self.device, torch.float32)
        have = coeffs.shape[-1]
        if have >= size:
            return coeffs[..., :size]
        return torch.cat([coeffs, coeffs.new_zeros(coeffs.shape[:-1] + (size - have,))], dim=-1)

    def shaped_vertices(self, betas: Tensor | None = None, expression: Tensor | None = None) -> Tensor:
        """Rest-pose (T-pose) vertices with shape and expression applied. [..., V, 3]"""
        lead = tuple(betas.shape[:-1]) if betas is not None else ()
        b = self._fit_coeffs(betas, self.num_betas, lead)
        v = self.v_template + torch.einsum("...l,vcl->...vc", b, self.shapedirs)
        if expression is not None:
            e = self._fit_coeffs(expression, self.num_expression, tuple(expression.shape[:-1]))
            v = v + torch.einsum("...l,vcl->...vc", e, self.exprdirs)
        return v

    def rest_joints(self, betas: Tensor | None = None) -> Tensor:
        """Joint centres of the shaped T-pose. [..., 55, 3]"""
        return torch.einsum("jv,...vc->...jc", self.J_regressor, self.shaped_vertices(betas))

    def face_landmarks(self, vertices: Tensor | None = None) -> Tensor:
        """The 51 static face landmarks (brows 0-9, nose 10-18, eyes 19-30, mouth 31-50). [..., 51, 3]

        Computed on ``vertices`` [..., V, 3] (default: the template) from the model's
        ``lmk_faces_idx`` / ``lmk_bary_coords``.
        """
        v = self.v_template if vertices is None else vertices
        tri = v[..., self.faces[self.layer.lmk_faces_idx], :]  # [..., 51, 3 corners, 3]
        return (tri * self.layer.lmk_bary_coords[..., None]).sum(-2)

    def joint_transforms(
        self, pose: SmplxPose, betas: Tensor | None = None, rest_joints: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Skinning transforms of a pose (translation included).

        Args:
            pose: SMPL-X pose, single or batched.
            betas: body shape [..., B]; defaults to ``pose.betas``.
            rest_joints: precomputed :meth:`rest_joints` of that shape [55, 3] (saves time per frame).

        Returns:
            ``A`` [..., 55, 4, 4]: maps a rest-pose point rigidly attached to joint j to its posed
            world position (``transl`` included); ``joints`` [..., 55, 3]: posed joint centres.
        """
        if not isinstance(pose, SmplxPose):
            raise PoseError(f"expected an SmplxPose, got {type(pose).__name__}")
        pose.validate()  # catches NaN written into the tensors after construction
        lead = pose.batch_shape
        rest = self.rest_joints(pose.betas if betas is None else betas) if rest_joints is None else rest_joints
        rot = batch_rodrigues(pose.full_pose().to(self.device).reshape(-1, 3)).reshape(lead + (NUM_JOINTS, 3, 3))
        A, joints = forward_kinematics(rot, rest, PARENTS)
        transl = pose.transl.to(self.device)[..., None, :]
        A = A.clone()
        A[..., :3, 3] += transl
        return A, joints + transl

    def forward(self, pose: SmplxPose) -> tuple[Tensor, Tensor]:
        """Posed mesh through ``smplx`` (pose blend shapes included).

        Returns:
            vertices [..., V, 3] and the 55 SMPL-X joints [..., 55, 3], world frame, metres.
        """
        lead = pose.batch_shape
        flat = pose if lead else SmplxPose.stack([pose])
        n = flat.global_orient.shape[0]
        out = self.layer(
            global_orient=flat.global_orient,
            body_pose=flat.body_pose.reshape(n, -1),
            left_hand_pose=flat.left_hand_pose.reshape(n, -1),
            right_hand_pose=flat.right_hand_pose.reshape(n, -1),
            jaw_pose=flat.jaw_pose,
            leye_pose=flat.leye_pose,
            reye_pose=flat.reye_pose,
            expression=self._fit_coeffs(flat.expression, self.num_expression, (n,)),
            betas=self._fit_coeffs(flat.betas, self.num_betas, (n,)),
            transl=flat.transl,
            return_verts=True,
        )
        verts, joints = out.vertices, out.joints[:, :NUM_JOINTS]
        if not lead:
            return verts[0], joints[0]
        return verts, joints


def vertex_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """Unit per-vertex normals: area-weighted sums of the adjacent face normals. [V, 3]

    Smoother than face normals and robust to the odd tiny folded triangle.
    """
    tri = vertices[faces]
    n = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # length = 2 * area
    acc = torch.zeros_like(vertices).index_add_(0, faces.reshape(-1), n.repeat_interleave(3, dim=0))
    return acc / acc.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def face_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """Unit normals of triangles (counter-clockwise = outward). [F, 3]"""
    tri = vertices[faces]
    n = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)

