"""3DGS ``.ply`` reading and writing (binary little-endian), with extra per-vertex properties.

Standard 3DGS property names, so any 3DGS viewer opens our files:
``x y z nx ny nz f_dc_0..2 opacity scale_0..2 rot_0..3`` with
``f_dc = (rgb - 0.5) / SH_C0``, ``opacity = logit(o)``, ``scale = log(s)``, ``rot = wxyz``.
Extra float/uchar properties (our skinning data) follow; viewers ignore them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from ..errors import AvatarFormatError
from ..fileio import atomic_write_bytes
from .gaussians import Gaussians

SH_C0 = 0.28209479177387814
OPACITY_EPS = 1e-6  # opacities are clamped to [eps, 1 - eps] so the logit stays finite

GAUSSIAN_PROPS: tuple[str, ...] = (
    "x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
    "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3",
)  # fmt: skip
_PLY_TYPES = {
    "char": "i1", "uchar": "u1", "short": "<i2", "ushort": "<u2", "int": "<i4", "uint": "<u4",
    "float": "<f4", "double": "<f8", "int8": "i1", "uint8": "u1", "int16": "<i2", "uint16": "<u2",
    "int32": "<i4", "uint32": "<u4", "float32": "<f4", "float64": "<f8",
}  # fmt: skip
_NP_TO_PLY = {"u1": "uchar", "i1": "char", "<f4": "float", "<i4": "int", "<u2": "ushort", "<i2": "short"}
MAX_HEADER_BYTES = 1 << 16


def write_ply(
    path: str | Path,
    gaussians: Gaussians,
    extras: Mapping[str, np.ndarray] | None = None,
    comments: list[str] | None = None,
) -> Path:
    """Write Gaussians (+ extra per-Gaussian columns) as a 3DGS ``.ply``, atomically.

    Args:
        extras: name -> array [N] of dtype uint8 or float32, stored after the standard props.
        comments: header comment lines (no newlines).
    """
    path = Path(path)
    g = gaussians.to("cpu")
    n = len(g)
    cols: dict[str, np.ndarray] = {}
    means = g.means.numpy()
    cols.update(x=means[:, 0], y=means[:, 1], z=means[:, 2])
    zeros = np.zeros(n, np.float32)
    cols.update(nx=zeros, ny=zeros, nz=zeros)
    fdc = (g.colors.numpy() - 0.5) / SH_C0
    for i in range(3):
        cols[f"f_dc_{i}"] = fdc[:, i]
    op = np.clip(g.opacities.numpy().astype(np.float64), OPACITY_EPS, 1 - OPACITY_EPS)
    cols["opacity"] = np.log(op / (1 - op))
    log_s = np.log(np.maximum(g.scales.numpy(), 1e-30))
    for i in range(3):
        cols[f"scale_{i}"] = log_s[:, i]
    quats = g.quats.numpy()
    for i in range(4):
        cols[f"rot_{i}"] = quats[:, i]
    for name, arr in (extras or {}).items():
        if name in cols or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise AvatarFormatError(f"bad extra property name {name!r}")
        arr = np.asarray(arr)
        if arr.shape != (n,) or arr.dtype.str.lstrip("|") not in ("u1", "<f4"):
            raise AvatarFormatError(f"extra property {name!r}: need shape ({n},) uint8/float32, got {arr.shape} {arr.dtype}")
        cols[name] = arr
    dtype = np.dtype([(k, "u1" if v.dtype == np.uint8 else "<f4") for k, v in cols.items()])
    table = np.empty(n, dtype)
    for k, v in cols.items():
        table[k] = v
    header = ["ply", "format binary_little_endian 1.0"]
    for c in comments or []:
        if "\n" in c or "\r" in c:
            raise AvatarFormatError("ply comments cannot contain newlines")
        header.append(f"comment {c}")
    header.append(f"element vertex {n}")
    header += [f"property {_NP_TO_PLY[dtype[k].str.lstrip('|')]} {k}" for k in dtype.names or ()]
    header.append("end_header")
    data = ("\n".join(header) + "\n").encode("ascii") + table.tobytes()
    atomic_write_bytes(path, data)
    return path


def read_ply(path: str | Path) -> tuple[Gaussians, dict[str, np.ndarray], list[str]]:
    """Read a 3DGS ``.ply``.

    Returns:
        (Gaussians, extra columns by name, header comments).

    Raises:
        AvatarFormatError: missing file, not a binary little-endian PLY, missing 3DGS properties,
            truncated data, non-finite values.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise AvatarFormatError(f"{path}: cannot read ({exc.strerror or exc})") from None
    end = raw.find(b"end_header\n", 0, MAX_HEADER_BYTES)
    if not raw.startswith(b"ply\n"):
        raise AvatarFormatError(f"{path}: not a PLY file (it does not start with 'ply')")
    if end < 0:
        raise AvatarFormatError(f"{path}: truncated or corrupt PLY header (no 'end_header')")
    try:
        lines = raw[:end].decode("ascii").splitlines()
    except UnicodeDecodeError:
        raise AvatarFormatError(f"{path}: PLY header is not ASCII") from None
    body = memoryview(raw)[end + len(b"end_header\n") :]
    fmt = next((ln.split()[1:] for ln in lines if ln.startswith("format ")), None)
    if not fmt or fmt[0] != "binary_little_endian":
        raise AvatarFormatError(f"{path}: PLY format {' '.join(fmt or ['?'])} unsupported; need binary_little_endian")
    comments = [ln[len("comment ") :] for ln in lines if ln.startswith("comment ")]
    elements: list[tuple[str, int, list[tuple[str, str]]]] = []
    for ln in lines:
        parts = ln.split()
        if not parts:
            continue
        if parts[0] == "element" and len(parts) == 3 and parts[2].isdigit():
            elements.append((parts[1], int(parts[2]), []))
        elif parts[0] == "property":
            if not elements:
                raise AvatarFormatError(f"{path}: property before any element")
            if len(parts) != 3 or parts[1] not in _PLY_TYPES:
                raise AvatarFormatError(f"{path}: unsupported property line {ln!r} (lists are not 3DGS)")
            elements[-1][2].append((parts[2], _PLY_TYPES[parts[1]]))
        elif parts[0] == "element":
            raise AvatarFormatError(f"{path}: malformed element line {ln!r}")
    if not elements or elements[0][0] != "vertex":
        raise AvatarFormatError(f"{path}: no 'vertex' element first; not a 3DGS PLY")
    _, n, props = elements[0]
    if n == 0:
        raise AvatarFormatError(f"{path}: an avatar with no Gaussians (the header declares 0 vertices)")
    names = [p[0] for p in props]
    missing = [p for p in GAUSSIAN_PROPS if p not in names and p not in ("nx", "ny", "nz")]
    if missing:
        raise AvatarFormatError(f"{path}: not a 3DGS PLY, missing properties: {', '.join(missing)}")
    dtype = np.dtype(props)
    need = n * dtype.itemsize
    if len(body) < need:
        raise AvatarFormatError(f"{path}: truncated: header declares {n} vertices ({need} bytes), file has {len(body)}")
    table = np.frombuffer(body, dtype=dtype, count=n)

    def col(*keys: str) -> torch.Tensor:
        return torch.from_numpy(np.stack([table[k].astype(np.float32) for k in keys], axis=-1))

    means = col("x", "y", "z")
    colors = (col("f_dc_0", "f_dc_1", "f_dc_2") * SH_C0 + 0.5).clamp(0.0, 1.0)
    opacities = torch.sigmoid(col("opacity")[:, 0])
    scales = torch.exp(col("scale_0", "scale_1", "scale_2"))
    quats = col("rot_0", "rot_1", "rot_2", "rot_3")
    norms = quats.norm(dim=-1, keepdim=True)
    g = Gaussians(means=means, quats=quats / norms.clamp_min(1e-12), scales=scales, opacities=opacities, colors=colors)
    for name, t in (("x/y/z", means), ("f_dc", colors), ("opacity", opacities), ("scale", scales), ("rot", quats)):
        if not bool(torch.isfinite(t).all()):
            raise AvatarFormatError(f"{path}: non-finite values in {name}")
    if bool((norms < 1e-12).any()):
        raise AvatarFormatError(f"{path}: zero-length rotation quaternion")
    extras = {k: np.array(table[k]) for k in names if k not in GAUSSIAN_PROPS}
    return g, extras, comments

