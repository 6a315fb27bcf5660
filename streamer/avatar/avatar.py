"""The animatable avatar: canonical Gaussians + skinning weights + body shape."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from ..body.joints import NUM_JOINTS, PARENTS
from ..body.pose import FIELDS, SmplxPose
from ..errors import AvatarFormatError, InputError
from .gaussians import Gaussians
from .lbs import align_quat_signs, matrix_to_quat, skin_gaussians
from .ply import read_ply, write_ply

try:  # the compiled CPU kernel; built by `pip install -e .`
    from . import _lbs_cpu
except ImportError:  # pragma: no cover - exercised only on broken installs
    _lbs_cpu = None

#: The joint tree as the C++ kernel takes it.
_PARENTS_I32 = np.asarray(PARENTS, dtype=np.int32)

if TYPE_CHECKING:
    from ..body.model import BodyModel

FORMAT_TAG = "streamer_avatar"
FORMAT_VERSION = 1
WEIGHT_SUM_TOL = 1e-3


@dataclass
class Avatar:
    """An animatable Gaussian avatar.

    Attributes:
        gaussians: Gaussians in the canonical zero pose (T-pose) of the body with ``betas``.
        skin_weights: per-Gaussian skinning weights over the 55 SMPL-X joints, rows sum to 1. [N, 55]
        betas: the body shape the avatar was built for; its skeleton drives the skinning. [B]
    """

    gaussians: Gaussians
    skin_weights: Tensor
    betas: Tensor = field(default_factory=lambda: torch.zeros(10))
    _cache: dict[Any, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.gaussians)
        w = self.skin_weights
        if not isinstance(w, Tensor) or w.dtype != torch.float32 or tuple(w.shape) != (n, NUM_JOINTS):
            shape = tuple(w.shape) if isinstance(w, Tensor) else type(w).__name__
            raise InputError(f"Avatar.skin_weights: expected float32 ({n}, {NUM_JOINTS}), got {shape}")
        self.betas = torch.as_tensor(self.betas, dtype=torch.float32).reshape(-1)
        if n and not bool(torch.isfinite(w).all()):
            raise InputError("Avatar.skin_weights: contains NaN or infinite values")
        if n and (bool((w < 0).any()) or float((w.sum(1) - 1).abs().max()) > WEIGHT_SUM_TOL):
            raise InputError("Avatar.skin_weights: weights must be non-negative and each row sum to 1")
        if w.device != self.gaussians.device:
            raise InputError(f"Avatar.skin_weights: on {w.device}, Gaussians on {self.gaussians.device}")

    def __len__(self) -> int:
        return len(self.gaussians)

    def to(self, device: torch.device | str) -> "Avatar":
        return Avatar(self.gaussians.to(device), self.skin_weights.to(device), self.betas.to(device))

    # -- animation -----------------------------------------------------------------------

    def pose(self, body: "BodyModel", pose: SmplxPose) -> Gaussians | list[Gaussians]:
        """World-space Gaussians for a pose (a list for a batch of T poses).

        The skeleton comes from ``self.betas`` (``pose.betas`` is ignored: the avatar keeps its
        own proportions). Runs on the avatar's device; the body model must be on it too.
        """
        means, quats = self.pose_tensors(body, pose)
        g = self.gaussians
        if means.ndim == 2:
            return g.replace(means=means, quats=quats)
        return [g.replace(means=m, quats=q) for m, q in zip(means, quats)]

    def pose_tensors(self, body: "BodyModel", pose: SmplxPose) -> tuple[Tensor, Tensor]:
        """Posed means [..., N, 3] and quaternions [..., N, 4] (the batched core of :meth:`pose`).

        Without autograd, a pose on the CPU gets its joint transforms from the C++ kernel (see
        :func:`skinning_transforms`; on a CUDA avatar too, so keep live poses on the CPU), and Gaussians
        on the CPU are skinned by the C++ sparse kernel; otherwise (CUDA, gradients) the dense torch
        implementation :func:`skin_gaussians`, its tested twin.
        """
        rest = self.rest_joints(body, cpu=pose.device.type == "cpu")  # a CPU pose: the C++ joint kernel
        transforms, joint_quats = skinning_transforms(body, pose, rest)
        g = self.gaussians
        fast = _lbs_cpu is not None and g.device.type == "cpu" and not (
            torch.is_grad_enabled() and (g.means.requires_grad or transforms.requires_grad)
        )
        if not fast:
            return skin_gaussians(g.means, g.quats, self.skin_weights, transforms, joint_quats)
        idx, w = self.sparse_weights()
        lead = transforms.shape[:-3]
        A = transforms[..., :3, :].reshape(-1, NUM_JOINTS, 12).contiguous().numpy()
        Q = joint_quats.reshape(-1, NUM_JOINTS, 4).contiguous().numpy()
        means = torch.empty((A.shape[0], len(g), 3))
        quats = torch.empty((A.shape[0], len(g), 4))
        src_m, src_q = g.means.detach().contiguous().numpy(), g.quats.detach().contiguous().numpy()
        for t in range(A.shape[0]):
            _lbs_cpu.skin_sparse(src_m, src_q, idx, w, A[t], Q[t], means[t].numpy(), quats[t].numpy())
        return means.reshape(lead + (len(g), 3)), quats.reshape(lead + (len(g), 4))

    def rest_joints(self, body: "BodyModel", cpu: bool = False) -> Tensor:
        """Joint centres of this avatar's shaped rest pose on ``body`` (cached), on the body's device or,
        with ``cpu``, a CPU copy (for :func:`skinning_transforms`' C++ kernel). [55, 3]"""
        key = ("rest", str(body.npz_path), str(body.device))  # not id(body): ids are reused after GC
        if key not in self._cache:
            self._cache[key] = body.rest_joints(self.betas.to(body.device))
        if cpu and body.device.type != "cpu":
            if key + ("cpu",) not in self._cache:
                self._cache[key + ("cpu",)] = self._cache[key].cpu()
            return self._cache[key + ("cpu",)]
        return self._cache[key]

    def sparse_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """Non-zero skinning weights as joint indices [N, K] int32 and weights [N, K] float32 (cached).

        K is the largest number of non-zero weights of any Gaussian; shorter rows are padded with
        weight 0, so the sparse form is exact.
        """
        if "sparse" not in self._cache:
            w = self.skin_weights.detach().cpu().numpy()
            k = max(1, int((w > 0).sum(1).max())) if len(w) else 1
            idx = np.argsort(-w, axis=1, kind="stable")[:, :k]
            vals = np.take_along_axis(w, idx, axis=1)
            self._cache["sparse"] = (idx.astype(np.int32), np.ascontiguousarray(vals, dtype=np.float32))
        return self._cache["sparse"]

    # -- files ---------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Save as a 3DGS ``.ply`` (atomic); skinning rides in extra properties, betas in a comment.

        Skinning is stored sparsely: per Gaussian the K largest weights (K = the most non-zero
        weights any Gaussian has) as ``skin_j_k`` (uchar joint) and ``skin_w_k`` (float), so the
        weights round-trip bit-exactly.
        """
        idx, val = self.sparse_weights()
        k = idx.shape[1]
        extras: dict[str, np.ndarray] = {}
        for i in range(k):
            extras[f"skin_j_{i}"] = idx[:, i].astype(np.uint8)
            extras[f"skin_w_{i}"] = val[:, i]
        betas = " ".join(repr(float(b)) for b in self.betas.cpu().tolist())
        comments = [f"{FORMAT_TAG} {FORMAT_VERSION} joints={NUM_JOINTS} skin_k={k}", f"betas {betas}".rstrip()]
        return write_ply(path, self.gaussians, extras, comments)

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> "Avatar":
        """Load an avatar saved by :meth:`save`.

        Raises:
            AvatarFormatError: not a PLY, not 3DGS, truncated, or a plain 3DGS scene without skinning.
        """
        g, extras, comments = read_ply(path)
        tag = next((c for c in comments if c.startswith(FORMAT_TAG + " ")), None)
        if tag is None:
            raise AvatarFormatError(
                f"{path}: a 3DGS PLY but not an animatable avatar (no '{FORMAT_TAG}' header comment / skinning data)"
            )
        fields = dict(kv.split("=", 1) for kv in tag.split()[2:] if "=" in kv)
        try:
            version, k = int(tag.split()[1]), int(fields["skin_k"])
        except (KeyError, ValueError, IndexError):
            raise AvatarFormatError(f"{path}: malformed avatar header comment {tag!r}") from None
        if version > FORMAT_VERSION:
            raise AvatarFormatError(f"{path}: avatar format {version} is newer than this program ({FORMAT_VERSION})")
        n = len(g)
        weights = np.zeros((n, NUM_JOINTS), np.float32)
        for i in range(k):
            j, wv = extras.get(f"skin_j_{i}"), extras.get(f"skin_w_{i}")
            if j is None or wv is None:
                raise AvatarFormatError(f"{path}: missing skinning properties skin_j_{i}/skin_w_{i}")
            if n and int(j.max()) >= NUM_JOINTS:
                raise AvatarFormatError(f"{path}: skinning joint index {int(j.max())} out of range")
            np.add.at(weights, (np.arange(n), j.astype(np.int64)), wv)
        betas_line = next((c for c in comments if c.startswith("betas")), "betas")
        try:
            betas = torch.tensor([float(b) for b in betas_line.split()[1:]], dtype=torch.float32)
        except ValueError:
            raise AvatarFormatError(f"{path}: malformed betas comment {betas_line!r}") from None
        try:
            avatar = cls(g, torch.from_numpy(weights), betas if betas.numel() else torch.zeros(10))
        except InputError as exc:
            raise AvatarFormatError(f"{path}: {exc}") from None
        return avatar.to(device) if str(device) != "cpu" else avatar


def skinning_transforms(body: "BodyModel", pose: SmplxPose, rest_joints: Tensor) -> tuple[Tensor, Tensor]:
    """Per-joint transforms [..., 55, 4, 4] and their sign-aligned quaternions [..., 55, 4], on the body's device.

    A pose on the CPU that needs no gradient goes through the C++ kernel ``joint_transforms``
    (microseconds; as torch ops these 55-joint computations are ~300 tiny ops: milliseconds on a CPU,
    launches and syncs on a GPU); ``rest_joints`` [55, 3] may then be a CPU copy, and the results are
    moved to the body's device. Otherwise (batched rest joints too) the differentiable torch twin runs
    on the body's device. The two agree to ~1e-6, the quaternions up to a sign of the whole tree
    where the root turns by 180 degrees to within float32 rounding (q and -q are one rotation).
    """
    pose_tensors = [getattr(pose, name) for name in FIELDS]
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (rest_joints, *pose_tensors))
    if _lbs_cpu is None or pose.device.type != "cpu" or needs_grad or rest_joints.ndim != 2:
        transforms, _ = body.joint_transforms(pose, rest_joints=rest_joints.to(body.device))
        return transforms, align_quat_signs(matrix_to_quat(transforms[..., :3, :3]), body.parents)
    pose.validate()
    lead = pose.batch_shape
    aa = pose.full_pose().reshape(-1, NUM_JOINTS, 3).float().contiguous()
    transl = pose.transl.reshape(-1, 3).float().contiguous()
    rest = rest_joints.detach().to("cpu", torch.float32).contiguous()
    transforms = torch.empty(aa.shape[0], NUM_JOINTS, 16)
    joint_quats = torch.empty(aa.shape[0], NUM_JOINTS, 4)
    _lbs_cpu.joint_transforms(
        aa.numpy(), rest.numpy(), _PARENTS_I32, transl.numpy(), transforms.numpy(), joint_quats.numpy()
    )
    dtype = rest_joints.dtype
    return (
        transforms.reshape(lead + (NUM_JOINTS, 4, 4)).to(body.device, dtype),
        joint_quats.reshape(lead + (NUM_JOINTS, 4)).to(body.device, dtype),
    )
