"""Load official LHM checkpoints (``model.safetensors``) strictly into :class:`LHMNetwork`.

A released checkpoint directory (``LHM-MINI``, ``LHM-500M``, ``LHM-1B``) holds
``model.safetensors``: the float32 state dict with every parameter plus the persistent
buffers ``pcl_embed.basis`` and ``renderer.smplx_model.*``. The Sapiens TorchScript is a
separate file (see :mod:`.body_encoder`).

Loading compares the file's layout (read from the header, no tensor data) with the network
first and refuses, naming the keys, on any missing / unexpected key or shape mismatch. Values
are cast to the network's dtypes. A network built on ``meta`` is filled without allocating
its weights twice. PyTorch files (``.pt``, ``.pth``, ``.bin``, ``.ckpt``) holding a flat state
dict are accepted too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ...errors import InputError
from .config import CONFIGS, RELEASED, LHMConfig
from .errors import CheckpointFormatError, CheckpointMismatchError, CheckpointNotFoundError, LHMError
from .state_dict_diff import Shape, StateDictDiff, compare_layouts, module_layout

#: File name of the weights inside an official checkpoint directory.
CHECKPOINT_FILENAME = "model.safetensors"
TORCH_SUFFIXES: tuple[str, ...] = (".pt", ".pth", ".bin", ".ckpt")

#: Keys derived from SMPL-X files rather than learned; callers may tolerate their absence.
TEMPLATE_PREFIX = "renderer.smplx_model."

_SAFETENSORS_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}


def _safetensors() -> Any:
    try:
        import safetensors.torch as st
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise LHMError(
            "reading or writing .safetensors needs the 'safetensors' package (pip install safetensors)"
        ) from exc
    return st


def resolve_checkpoint(path: str | Path) -> Path:
    """The weights file for a checkpoint file or directory.

    Raises:
        CheckpointNotFoundError: naming the file that was expected and where.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        candidate = p / CHECKPOINT_FILENAME
        if not candidate.is_file():
            raise CheckpointNotFoundError(
                f"LHM checkpoint not found: expected {CHECKPOINT_FILENAME} in the directory {p} "
                f"(no file {candidate})"
            )
        return candidate
    if not p.is_file():
        raise CheckpointNotFoundError(
            f"LHM checkpoint not found: {p} does not exist (expected an official {CHECKPOINT_FILENAME}, "
            "or the directory that holds it)"
        )
    return p


def _is_safetensors(path: Path) -> bool:
    return path.suffix == ".safetensors"


def _torch_state_dict(path: Path) -> dict[str, Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise CheckpointFormatError(f"cannot read {path} as a PyTorch state dict: {exc}") from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()
    ):
        raise CheckpointFormatError(f"{path} does not hold a flat state dict of tensors")
    return obj


def read_layout(path: str | Path) -> tuple[dict[str, Shape], dict[str, str]]:
    """Key -> shape and key -> dtype name of a checkpoint (safetensors: header only).

    Raises:
        CheckpointNotFoundError, CheckpointFormatError
    """
    p = resolve_checkpoint(path)
    if _is_safetensors(p):
        _safetensors()
        from safetensors import safe_open

        try:
            with safe_open(str(p), framework="pt") as f:
                shapes: dict[str, Shape] = {}
                dtypes: dict[str, str] = {}
                for key in f.keys():
                    sl = f.get_slice(key)
                    shapes[key] = tuple(sl.get_shape())
                    dtypes[key] = _SAFETENSORS_DTYPES.get(sl.get_dtype(), sl.get_dtype().lower())
                return shapes, dtypes
        except Exception as exc:
            raise CheckpointFormatError(f"cannot read {p} as safetensors: {exc}") from exc
    state = _torch_state_dict(p)
    return (
        {k: tuple(v.shape) for k, v in state.items()},
        {k: str(v.dtype).removeprefix("torch.") for k, v in state.items()},
    )


def read_state_dict(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """All tensors of a checkpoint file or directory."""
    p = resolve_checkpoint(path)
    if _is_safetensors(p):
        st = _safetensors()
        try:
            return dict(st.load_file(str(p), device=str(device)))
        except Exception as exc:
            raise CheckpointFormatError(f"cannot read {p} as safetensors: {exc}") from exc
    return {k: v.to(device) for k, v in _torch_state_dict(p).items()}


def save_checkpoint(model: nn.Module, path: str | Path) -> Path:
    """Write ``model.state_dict()``: safetensors for a ``.safetensors`` path or a directory
    (as ``model.safetensors``), ``torch.save`` for the PyTorch suffixes."""
    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT_FILENAME
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if _is_safetensors(p):
        _safetensors().save_file(state, str(p), metadata={"format": "pt"})
    elif p.suffix in TORCH_SUFFIXES:
        torch.save(state, p)
    else:
        raise InputError(f"save_checkpoint: unknown checkpoint suffix {p.suffix!r}; use .safetensors or .pt")
    return p


@dataclass
class LoadReport:
    """What a load did.

    Attributes:
        path: the weights file read.
        diff: the layout comparison (network = expected, file = found).
        loaded: keys copied into the network.
        tolerated_missing: missing keys accepted through ``allow_missing_prefixes`` (left as
            they were; zeros for a network built on ``meta``).
    """

    path: Path
    diff: StateDictDiff
    loaded: list[str] = field(default_factory=list)
    tolerated_missing: list[str] = field(default_factory=list)


def load_checkpoint(
    model: nn.Module,
    path: str | Path,
    *,
    strict: bool = True,
    allow_missing_prefixes: tuple[str, ...] = (),
    device: str | torch.device = "cpu",
) -> LoadReport:
    """Load a checkpoint into ``model`` (an :class:`LHMNetwork` or any module).

    Args:
        model: the network; may live on ``meta`` (its tensors are then replaced, on ``device``).
        path: ``model.safetensors`` (or a PyTorch file), or the directory holding it.
        strict: refuse any missing / unexpected key or shape mismatch (default). When False,
            load what matches and report the rest.
        allow_missing_prefixes: missing keys with these prefixes are tolerated even when strict
            (e.g. :data:`TEMPLATE_PREFIX`, if a release lacks the SMPL-X buffers); they keep
            their values (zeros when the network was built on ``meta``).
        device: where tensors are read to when the model is on ``meta``.

    Returns:
        a :class:`LoadReport`.

    Raises:
        CheckpointNotFoundError: no file where expected.
        CheckpointFormatError: unreadable file.
        CheckpointMismatchError: strict and the layouts differ; the message names the keys.
    """
    file = resolve_checkpoint(path)
    found_shapes, _ = read_layout(file)
    expected_shapes, _ = module_layout(model)
    diff = compare_layouts(expected_shapes, found_shapes)
    tolerated = [k for k in diff.missing if allow_missing_prefixes and k.startswith(allow_missing_prefixes)]
    blocking = StateDictDiff(
        missing=[k for k in diff.missing if k not in tolerated],
        unexpected=diff.unexpected,
        shape_mismatch=diff.shape_mismatch,
    )
    if strict and not blocking.ok:
        name = getattr(getattr(model, "config", None), "name", type(model).__name__)
        raise CheckpointMismatchError(
            f"LHM checkpoint {file} does not match the {name} network: {blocking.describe()}", diff
        )

    on_meta = any(t.device.type == "meta" for t in model.state_dict().values())
    wanted = set(expected_shapes) - set(diff.missing) - set(diff.shape_mismatch)
    expected_state = model.state_dict()
    state = read_state_dict(file, device if on_meta else "cpu")
    state = {k: v.to(dtype=expected_state[k].dtype) for k, v in state.items() if k in wanted}
    model.load_state_dict(state, strict=False, assign=on_meta)
    if on_meta:
        _materialize_meta(model, torch.device(device))
    return LoadReport(path=file, diff=diff, loaded=sorted(state), tolerated_missing=tolerated)


def _materialize_meta(model: nn.Module, device: torch.device) -> None:
    """Replace tensors still on ``meta`` (keys absent from the checkpoint) by zeros on ``device``."""
    for module in model.modules():
        for name, buf in list(module._buffers.items()):
            if buf is not None and buf.device.type == "meta":
                module._buffers[name] = torch.zeros(buf.shape, dtype=buf.dtype, device=device)
        for name, param in list(module._parameters.items()):
            if param is not None and param.device.type == "meta":
                module._parameters[name] = nn.Parameter(
                    torch.zeros(param.shape, dtype=param.dtype, device=device),
                    requires_grad=param.requires_grad,
                )


_LAYER_KEY = re.compile(r"^transformer\.layers\.(\d+)\.")


def detect_config(shapes: Mapping[str, Shape]) -> LHMConfig:
    """The released configuration a checkpoint layout belongs to (by MBHT depth and point count).

    Raises:
        InputError: when no released configuration matches.
    """
    layers = {int(m.group(1)) for k in shapes if (m := _LAYER_KEY.match(k))}
    n_layers = max(layers) + 1 if layers else 0
    points = shapes.get(TEMPLATE_PREFIX + "skinning_weight", (None,))[0]
    for name in RELEASED:
        config = CONFIGS[name]
        if config.transformer_layers == n_layers and points in (None, config.n_query_points):
            return config
    raise InputError(
        f"checkpoint layout matches no released LHM config ({n_layers} MBHT layers, {points} query points)"
    )
