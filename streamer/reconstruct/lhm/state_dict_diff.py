"""Compare two state-dict layouts (key -> shape [, dtype]) without touching tensor data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import nn

Shape = tuple[int, ...]


@dataclass
class StateDictDiff:
    """How a found layout differs from the expected one.

    Attributes:
        missing: expected keys absent from the found layout (sorted).
        unexpected: found keys the expected layout lacks (sorted).
        shape_mismatch: key -> (expected shape, found shape).
        dtype_mismatch: key -> (expected dtype, found dtype), only where both sides give one.
    """

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatch: dict[str, tuple[Shape, Shape]] = field(default_factory=dict)
    dtype_mismatch: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when keys, shapes and (given) dtypes all agree."""
        return not (self.missing or self.unexpected or self.shape_mismatch or self.dtype_mismatch)

    def counts(self) -> dict[str, int]:
        """``{"missing": n, "unexpected": n, "shape_mismatch": n, "dtype_mismatch": n}``."""
        return {
            "missing": len(self.missing),
            "unexpected": len(self.unexpected),
            "shape_mismatch": len(self.shape_mismatch),
            "dtype_mismatch": len(self.dtype_mismatch),
        }

    def describe(self, limit: int = 5) -> str:
        """One line per kind of difference, naming up to ``limit`` keys each."""

        def names(keys: list[str]) -> str:
            more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
            return ", ".join(keys[:limit]) + more

        lines = []
        if self.missing:
            lines.append(f"missing {len(self.missing)} key(s): {names(self.missing)}")
        if self.unexpected:
            lines.append(f"unexpected {len(self.unexpected)} key(s): {names(self.unexpected)}")
        if self.shape_mismatch:
            items = [f"{k} expected {list(e)} found {list(f)}" for k, (e, f) in self.shape_mismatch.items()]
            lines.append(f"shape mismatch in {len(items)} key(s): {names(items)}")
        if self.dtype_mismatch:
            items = [f"{k} expected {e} found {f}" for k, (e, f) in self.dtype_mismatch.items()]
            lines.append(f"dtype mismatch in {len(items)} key(s): {names(items)}")
        return "; ".join(lines) if lines else "no differences"


def compare_layouts(
    expected: Mapping[str, Shape],
    found: Mapping[str, Shape],
    expected_dtypes: Mapping[str, str] | None = None,
    found_dtypes: Mapping[str, str] | None = None,
) -> StateDictDiff:
    """Compare key sets, shapes and (optionally) dtypes.

    Args:
        expected: key -> shape of the reference (network or manifest).
        found: key -> shape of the candidate (checkpoint or network).
        expected_dtypes, found_dtypes: key -> dtype name without ``torch.`` (e.g. ``"bool"``);
            compared only for keys present in both.
    """
    diff = StateDictDiff(
        missing=sorted(set(expected) - set(found)),
        unexpected=sorted(set(found) - set(expected)),
    )
    for key in expected:
        if key in found and tuple(expected[key]) != tuple(found[key]):
            diff.shape_mismatch[key] = (tuple(expected[key]), tuple(found[key]))
    if expected_dtypes and found_dtypes:
        for key, dtype in expected_dtypes.items():
            if key in found_dtypes and found_dtypes[key] != dtype:
                diff.dtype_mismatch[key] = (dtype, found_dtypes[key])
    return diff


def module_layout(module: nn.Module) -> tuple[dict[str, Shape], dict[str, str]]:
    """A module's state-dict layout: key -> shape and key -> dtype name (works on ``meta``)."""
    state = module.state_dict()
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    dtypes = {k: str(v.dtype).removeprefix("torch.") for k, v in state.items()}
    return shapes, dtypes
