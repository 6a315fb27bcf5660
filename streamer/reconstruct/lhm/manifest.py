"""State-dict manifests: key -> shape of the released checkpoints, per configuration.

A manifest is a json object ``{config name: {state-dict key: shape list, ..., "_meta": {...}}}``;
``_meta`` may carry ``total_parameters``, ``parameters_excluding_image_encoders(encoder.*)``
and ``buffers`` (key -> ``{"shape", "dtype"}``). Our own networks are checked against it on
the ``meta`` device, so no weights are allocated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import get_config
from .errors import ManifestError
from .model import ENCODER_PREFIX, build_network, count_parameters
from .state_dict_diff import Shape, StateDictDiff, compare_layouts, module_layout

_PARAMS_EXCL_KEY = "parameters_excluding_image_encoders(encoder.*)"


@dataclass
class ManifestEntry:
    """One configuration of a manifest.

    Attributes:
        name: configuration name as written in the manifest (``MINI``, ``500M``, ``1B``).
        shapes: state-dict key -> shape.
        buffer_dtypes: buffer key -> dtype name (``float32``, ``bool``, ``int64``).
        total_parameters: parameter elements, when the manifest states it.
        parameters_excluding_encoder: parameter elements outside ``encoder.*``, when stated.
    """

    name: str
    shapes: dict[str, Shape]
    buffer_dtypes: dict[str, str] = field(default_factory=dict)
    total_parameters: int | None = None
    parameters_excluding_encoder: int | None = None


@dataclass
class ManifestCheck:
    """Our network against one manifest entry."""

    name: str
    diff: StateDictDiff
    params: int
    params_excluding_encoder: int
    manifest_params: int | None
    manifest_params_excluding_encoder: int | None

    @property
    def params_match(self) -> bool:
        """Counts agree wherever the manifest states them."""
        return (self.manifest_params is None or self.manifest_params == self.params) and (
            self.manifest_params_excluding_encoder is None
            or self.manifest_params_excluding_encoder == self.params_excluding_encoder
        )

    @property
    def ok(self) -> bool:
        return self.diff.ok and self.params_match

    def to_json(self) -> dict[str, Any]:
        """Counts of each difference plus the parameter totals."""
        out: dict[str, Any] = dict(self.diff.counts())
        out.update(
            params=self.params,
            params_excluding_encoder=self.params_excluding_encoder,
            manifest_params=self.manifest_params,
            manifest_params_excluding_encoder=self.manifest_params_excluding_encoder,
            params_match=self.params_match,
        )
        if not self.diff.ok:
            out["details"] = self.diff.describe()
        return out


def load_manifest(path: str | Path) -> dict[str, ManifestEntry]:
    """Read a manifest json.

    Raises:
        ManifestError: file missing, not json, or not of the documented structure.
    """
    p = Path(path)
    if p.is_dir():
        raise ManifestError(f"{p} is a folder; give the LHM state-dict manifest (.json)")
    if not p.is_file():
        raise ManifestError(f"LHM state-dict manifest not found: {p}")
    try:
        raw = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise ManifestError(f"cannot read manifest {p}: {exc}") from exc
    if not isinstance(raw, dict) or not raw:
        raise ManifestError(f"manifest {p}: expected an object of configurations")
    entries: dict[str, ManifestEntry] = {}
    for name, body in raw.items():
        if not isinstance(body, dict):
            raise ManifestError(f"manifest {p}: configuration {name!r} is not an object")
        meta = body.get("_meta", {})
        shapes: dict[str, Shape] = {}
        for key, shape in body.items():
            if key == "_meta":
                continue
            if not isinstance(shape, list) or not all(isinstance(s, int) for s in shape):
                raise ManifestError(f"manifest {p}: {name}/{key}: shape must be a list of ints")
            shapes[key] = tuple(shape)
        buffers = meta.get("buffers", {}) if isinstance(meta, dict) else {}
        entries[name] = ManifestEntry(
            name=name,
            shapes=shapes,
            buffer_dtypes={k: v["dtype"] for k, v in buffers.items() if isinstance(v, dict) and "dtype" in v},
            total_parameters=meta.get("total_parameters"),
            parameters_excluding_encoder=meta.get(_PARAMS_EXCL_KEY),
        )
    return entries


def check_entry(entry: ManifestEntry) -> ManifestCheck:
    """Build the named configuration on ``meta`` and compare it with ``entry``.

    Raises:
        InputError: when the manifest names a configuration we do not know.
    """
    net = build_network(get_config(entry.name), "meta")
    shapes, dtypes = module_layout(net)
    diff = compare_layouts(entry.shapes, shapes, entry.buffer_dtypes, dtypes)
    return ManifestCheck(
        name=entry.name,
        diff=diff,
        params=count_parameters(net),
        params_excluding_encoder=count_parameters(net, (ENCODER_PREFIX,)),
        manifest_params=entry.total_parameters,
        manifest_params_excluding_encoder=entry.parameters_excluding_encoder,
    )
