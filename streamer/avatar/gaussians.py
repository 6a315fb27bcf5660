"""3D Gaussians as a structure of arrays (the unit every renderer draws)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import InputError

_TAILS: dict[str, tuple[int, ...]] = {
    "means": (3,),
    "quats": (4,),
    "scales": (3,),
    "opacities": (),
    "colors": (3,),
}


@dataclass
class Gaussians:
    """N 3D Gaussians, float32 torch tensors on one device.

    Attributes:
        means: centres, metres, world (or canonical) frame. [N, 3]
        quats: orientations, unit quaternions **wxyz**. [N, 4]
        scales: standard deviations along the local axes, metres (linear, not log). [N, 3]
        opacities: in [0, 1]. [N]
        colors: RGB in [0, 1] (SH degree 0). [N, 3]
    """

    means: Tensor
    quats: Tensor
    scales: Tensor
    opacities: Tensor
    colors: Tensor

    def __post_init__(self) -> None:
        self.validate()

    def __len__(self) -> int:
        return int(self.means.shape[0])

    @property
    def device(self) -> torch.device:
        return self.means.device

    def validate(self) -> None:
        """Check dtypes, shapes and finiteness.

        Raises:
            InputError: naming the offending field.
        """
        n = None
        for name, tail in _TAILS.items():
            value = getattr(self, name)
            if not isinstance(value, Tensor):
                raise InputError(f"Gaussians.{name}: expected a torch.Tensor, got {type(value).__name__}")
            if value.dtype != torch.float32:
                raise InputError(f"Gaussians.{name}: expected float32, got {value.dtype}")
            if value.ndim != 1 + len(tail) or tuple(value.shape[1:]) != tail:
                raise InputError(
                    f"Gaussians.{name}: expected shape (N, {', '.join(map(str, tail))})".replace(", )", ")")
                    + f", got {tuple(value.shape)}"
                )
            if n is None:
                n = value.shape[0]
            elif value.shape[0] != n:
                raise InputError(f"Gaussians.{name}: has {value.shape[0]} rows, means has {n}")
            if value.device != self.means.device:
                raise InputError(f"Gaussians.{name}: on {value.device}, means on {self.means.device}")

    def check_finite(self) -> None:
        """Raise InputError when any field holds NaN or inf (not run per frame: it syncs)."""
        for name in _TAILS:
            if not bool(torch.isfinite(getattr(self, name)).all()):
                raise InputError(f"Gaussians.{name}: contains NaN or infinite values")

    def to(self, device: torch.device | str) -> "Gaussians":
        return Gaussians(**{k: getattr(self, k).to(device) for k in _TAILS})

    def replace(self, **changes: Any) -> "Gaussians":
        return dataclasses.replace(self, **changes)

    def subset(self, index: Tensor | slice) -> "Gaussians":
        """Gaussians selected by a boolean mask, index tensor or slice."""
        return Gaussians(**{k: getattr(self, k)[index] for k in _TAILS})

    @staticmethod
    def concat(parts: "list[Gaussians]") -> "Gaussians":
        if not parts:
            raise InputError("cannot concatenate an empty list of Gaussians")
        return Gaussians(**{k: torch.cat([getattr(p, k) for p in parts]) for k in _TAILS})
