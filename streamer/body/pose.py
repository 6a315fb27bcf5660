"""SMPL-X pose parameters: the one pose type every part of the product passes around."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from torch import Tensor

from ..errors import PoseError
from .joints import NUM_BODY_JOINTS, NUM_HAND_JOINTS

#: Trailing shape of every field; ``None`` marks the free coefficient count.
FIELD_SHAPES: dict[str, tuple[int | None, ...]] = {
    "global_orient": (3,),
    "body_pose": (NUM_BODY_JOINTS, 3),
    "left_hand_pose": (NUM_HAND_JOINTS, 3),
    "right_hand_pose": (NUM_HAND_JOINTS, 3),
    "jaw_pose": (3,),
    "leye_pose": (3,),
    "reye_pose": (3,),
    "expression": (None,),
    "betas": (None,),
    "transl": (3,),
}
FIELDS: tuple[str, ...] = tuple(FIELD_SHAPES)

DEFAULT_NUM_BETAS = 10
DEFAULT_NUM_EXPRESSION = 10


@dataclass
class SmplxPose:
    """SMPL-X parameters, axis-angle, float32, with an optional leading batch (frames) dim.

    Rotations are axis-angle vectors (radians) relative to the parent joint. Hand poses are
    relative to a flat open hand (``smplx`` with ``use_pca=False, flat_hand_mean=True``).
    ``transl`` is in metres, world frame (+Y up, body faces +Z).

    Shapes (``...`` is ``()`` for one pose or ``(T,)`` for T frames):
        global_orient [..., 3], body_pose [..., 21, 3], left_hand_pose [..., 15, 3],
        right_hand_pose [..., 15, 3], jaw_pose / leye_pose / reye_pose [..., 3],
        expression [..., E], betas [..., B], transl [..., 3]
    """

    global_orient: Tensor
    body_pose: Tensor
    left_hand_pose: Tensor
    right_hand_pose: Tensor
    jaw_pose: Tensor
    leye_pose: Tensor
    reye_pose: Tensor
    expression: Tensor
    betas: Tensor
    transl: Tensor

    def __post_init__(self) -> None:
        for name in FIELDS:
            value = getattr(self, name)
            if not isinstance(value, Tensor):
                try:
                    value = torch.as_tensor(np.asarray(value), dtype=torch.float32)
                except (TypeError, ValueError) as exc:
                    raise PoseError(f"SmplxPose.{name}: not numeric ({exc})") from None
                object.__setattr__(self, name, value)
            elif value.dtype != torch.float32:
                object.__setattr__(self, name, value.float())
        self.validate()

    # -- construction -------------------------------------------------------------------

    @classmethod
    def zeros(
        cls,
        batch: int | None = None,
        num_betas: int = DEFAULT_NUM_BETAS,
        num_expression: int = DEFAULT_NUM_EXPRESSION,
        device: torch.device | str | None = None,
    ) -> "SmplxPose":
        """The rest pose (all zeros); ``batch=T`` gives T frames of it."""
        lead = () if batch is None else (batch,)
        sizes = {"expression": num_expression, "betas": num_betas}
        fields = {}
        for name, shape in FIELD_SHAPES.items():
            tail = tuple(sizes[name] if d is None else d for d in shape)
            fields[name] = torch.zeros(lead + tail, dtype=torch.float32, device=device)
        return cls(**fields)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, fill_missing: bool = True) -> "SmplxPose":
        """Build from a mapping of arrays; missing fields are zeros when ``fill_missing``.

        Raises:
            PoseError: an unknown key, a missing key (``fill_missing=False``), bad shapes or NaN.
        """
        unknown = sorted(set(data) - set(FIELDS))
        if unknown:
            raise PoseError(f"unknown SMPL-X pose keys: {', '.join(unknown)}")
        fields = {k: torch.as_tensor(np.asarray(v), dtype=torch.float32) for k, v in data.items()}
        if not fields:
            raise PoseError("empty pose: no SMPL-X fields given")
        missing = [k for k in FIELDS if k not in fields]
        if missing and not fill_missing:
            raise PoseError(f"missing SMPL-X pose keys: {', '.join(missing)}")
        if missing:
            lead = _lead_shape(next(iter(fields.items())))
            for name in missing:
                tail = tuple(
                    (DEFAULT_NUM_BETAS if name == "betas" else DEFAULT_NUM_EXPRESSION)
                    if d is None
                    else d
                    for d in FIELD_SHAPES[name]
                )
                fields[name] = torch.zeros(lead + tail)
        return cls(**fields)

    def to_dict(self) -> dict[str, np.ndarray]:
        """Numpy float32 arrays per field (for ``np.savez``)."""
        return {k: getattr(self, k).detach().cpu().numpy().astype(np.float32) for k in FIELDS}

    # -- shape ---------------------------------------------------------------------------

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """``()`` for a single pose, ``(T,)`` for T frames."""
        return tuple(self.global_orient.shape[:-1])

    @property
    def device(self) -> torch.device:
        return self.global_orient.device

    def __len__(self) -> int:
        if not self.batch_shape:
            raise TypeError("a single SmplxPose has no length; it has no batch dimension")
        return self.batch_shape[0]

    def __getitem__(self, index: int | slice | Tensor) -> "SmplxPose":
        """Select frames: ``pose[3]`` (one pose), ``pose[10:20]`` (frames)."""
        if not self.batch_shape:
            raise TypeError("cannot index a single SmplxPose")
        return SmplxPose(**{k: getattr(self, k)[index] for k in FIELDS})

    def __iter__(self) -> Iterator["SmplxPose"]:
        for i in range(len(self)):
            yield self[i]

    def to(self, device: torch.device | str) -> "SmplxPose":
        return SmplxPose(**{k: getattr(self, k).to(device) for k in FIELDS})

    def replace(self, **changes: Any) -> "SmplxPose":
        """A copy with some fields replaced (validated)."""
        return dataclasses.replace(self, **changes)

    @staticmethod
    def stack(poses: "list[SmplxPose]") -> "SmplxPose":
        """Stack single poses into a batch [T, ...]."""
        if not poses:
            raise PoseError("cannot stack an empty list of poses")
        return SmplxPose(**{k: torch.stack([getattr(p, k) for p in poses]) for k in FIELDS})

    def full_pose(self) -> Tensor:
        """All 55 joint rotations in SMPL-X joint order, axis-angle [..., 55, 3]."""
        lead = self.batch_shape
        return torch.cat(
            [
                self.global_orient.reshape(lead + (1, 3)),
                self.body_pose,
                self.jaw_pose.reshape(lead + (1, 3)),
                self.leye_pose.reshape(lead + (1, 3)),
                self.reye_pose.reshape(lead + (1, 3)),
                self.left_hand_pose,
                self.right_hand_pose,
            ],
            dim=-2,
        )

    def validate(self) -> None:
        """Check shapes agree and values are finite.

        Raises:
            PoseError: naming the field and the problem.
        """
        lead = _lead_shape(("global_orient", self.global_orient))
        if len(lead) > 1:
            raise PoseError(
                f"SmplxPose.global_orient: expected shape (3,) or (T, 3), "
                f"got {tuple(self.global_orient.shape)}"
            )
        for name, tail in FIELD_SHAPES.items():
            value: Tensor = getattr(self, name)
            shape = tuple(value.shape)
            ok = len(shape) == len(lead) + len(tail) and shape[: len(lead)] == lead
            ok = ok and all(d is None or d == s for d, s in zip(tail, shape[len(lead) :]))
            if not ok:
                want = lead + tuple("E" if d is None else d for d in tail)
                raise PoseError(f"SmplxPose.{name}: expected shape {want}, got {shape}")
            if value.device != self.global_orient.device:
                raise PoseError(f"SmplxPose.{name}: on {value.device}, expected {self.device}")
        values = [getattr(self, name) for name in FIELD_SHAPES]
        if not bool(torch.isfinite(torch.cat([v.reshape(-1) for v in values])).all()):  # one check, one sync
            name = next(n for n, v in zip(FIELD_SHAPES, values) if not bool(torch.isfinite(v).all()))
            raise PoseError(f"SmplxPose.{name}: contains NaN or infinite values")


def _lead_shape(item: tuple[str, Any]) -> tuple[int, ...]:
    name, value = item
    tail = FIELD_SHAPES[name]
    shape = tuple(np.shape(value))
    if len(shape) < len(tail):
        raise PoseError(f"SmplxPose.{name}: expected trailing shape {tail}, got {shape}")
    return shape[: len(shape) - len(tail)]
