"""Where ``streamer reconstruct --method lhm --weights DIR`` finds the user's files.

Nothing is ever downloaded. ``DIR`` holds (the official LHM layout works as it is):

=====================  ===================================================================
LHM checkpoint         ``DIR/model.safetensors`` (an official LHM-MINI / 500M / 1B folder,
                       or ``DIR/LHM-500M/model.safetensors`` etc.); it includes the DINOv2
                       head-encoder weights (``encoder.model.*``), so no separate DINOv2 file
Sapiens-1B encoder     ``DIR/sapiens_1b_epoch_173_torchscript.pt2``, or the official
                       ``DIR/pretrained_models/sapiens/pretrained/checkpoints/sapiens_1b/...``
SMPL-X body model      ``DIR/smplx/SMPLX_NEUTRAL.npz`` (or ``DIR/human_model_files/smplx/``),
                       or the folder given with ``--smplx-dir``
=====================  ===================================================================

:func:`locate_weights` checks all three at once and, when any is missing, raises one error that
names every missing file and each place it was looked for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from .body_encoder import OFFICIAL_SAPIENS_PATH
from .checkpoint import CHECKPOINT_FILENAME, detect_config, read_layout
from .config import LHMConfig, get_config
from .errors import LHMError

SAPIENS_FILENAME = Path(OFFICIAL_SAPIENS_PATH).name
SMPLX_FILENAME = "SMPLX_NEUTRAL.npz"
CHECKPOINT_FOLDERS = ("", "LHM-500M", "LHM-1B", "LHM-MINI")
#: Our own marker in a checkpoint folder's ``config.json`` (written by ``train-lhm``).
CONFIG_KEY = "streamer_lhm_config"


class WeightsMissingError(LHMError, FileNotFoundError):
    """One or more of the files LHM needs is not where it is expected."""


@dataclass(frozen=True)
class LHMWeights:
    """The files of one LHM setup."""

    checkpoint: Path
    sapiens: Path
    smplx: Path


def _first(candidates: list[Path]) -> Path | None:
    return next((c for c in candidates if c.is_file()), None)


def locate_weights(weights_dir: str | Path, smplx_dir: str | Path | None = None) -> LHMWeights:
    """Find the checkpoint, the Sapiens TorchScript and the SMPL-X file.

    Raises:
        WeightsMissingError: listing every missing file and where it was expected.
    """
    root = Path(weights_dir).expanduser()
    if not root.is_dir():
        raise WeightsMissingError(
            f"LHM weights folder not found: {root}. It must hold {CHECKPOINT_FILENAME} (the LHM checkpoint), "
            f"{SAPIENS_FILENAME} (the Sapiens-1B TorchScript) and smplx/{SMPLX_FILENAME}; nothing is downloaded."
        )
    found: dict[str, Path | None] = {}
    tried: dict[str, list[Path]] = {}
    tried["LHM checkpoint"] = [root / d / CHECKPOINT_FILENAME for d in CHECKPOINT_FOLDERS]
    tried["Sapiens-1B TorchScript body encoder"] = [root / SAPIENS_FILENAME, root / OFFICIAL_SAPIENS_PATH]
    if smplx_dir is not None:
        s = Path(smplx_dir).expanduser()
        tried["SMPL-X neutral model"] = [s] if s.suffix == ".npz" else [s / SMPLX_FILENAME, s / "smplx" / SMPLX_FILENAME]
    else:
        tried["SMPL-X neutral model"] = [
            root / "smplx" / SMPLX_FILENAME,
            root / "human_model_files" / "smplx" / SMPLX_FILENAME,
            root / "pretrained_models" / "human_model_files" / "smplx" / SMPLX_FILENAME,
        ]
    for what, candidates in tried.items():
        found[what] = _first(candidates)
    missing = [what for what, path in found.items() if path is None]
    if missing:
        lines = [f"- {what}: expected at {' or '.join(str(c) for c in tried[what])}" for what in missing]
        raise WeightsMissingError(
            "LHM needs files that are missing (nothing is downloaded; get them from their official sources):\n"
            + "\n".join(lines)
        )
    ckpt, sapiens, smplx = found.values()
    assert ckpt is not None and sapiens is not None and smplx is not None
    return LHMWeights(checkpoint=ckpt, sapiens=sapiens, smplx=smplx)


def checkpoint_config(checkpoint: Path, name: str | None = None) -> LHMConfig:
    """The architecture of a checkpoint.

    ``name`` forces a configuration; otherwise our ``config.json`` marker (``train-lhm``
    checkpoints) is read, and failing that the released configuration is detected from the
    layout. The query-point count always follows the checkpoint's template buffers.
    """
    shapes, _ = read_layout(checkpoint)
    meta = checkpoint.parent / "config.json"
    overrides: dict[str, int] = {}
    if name is None and meta.is_file():
        try:
            data = json.loads(meta.read_text())
        except (OSError, ValueError):
            data = {}
        if isinstance(data, dict) and isinstance(data.get(CONFIG_KEY), str):
            name = data[CONFIG_KEY]
            if isinstance(data.get("n_query_points"), int):
                overrides["n_query_points"] = data["n_query_points"]
    config = get_config(name) if name is not None else detect_config(shapes)
    points = shapes.get("renderer.smplx_model.skinning_weight", (None,))[0]
    if points is not None and points != config.n_query_points:
        overrides["n_query_points"] = int(points)
    return replace(config, **overrides) if overrides else config


def write_config_marker(folder: Path, config: LHMConfig) -> Path:
    """Write the ``config.json`` that :func:`checkpoint_config` reads back."""
    path = folder / "config.json"
    path.write_text(json.dumps({CONFIG_KEY: config.name, "n_query_points": config.n_query_points}, indent=2) + "\n")
    return path
