"""LHM (Large Animatable Human Reconstruction Model, arXiv 2503.10625), written for this project.

The modules reproduce the released architecture so that official checkpoints load strictly:

* :mod:`.config`         MINI / 500M / 1B (released) and ``tiny`` (CPU tests) configurations
* :mod:`.point_embed`    sinusoidal query-point embedding          (``pcl_embed.*``)
* :mod:`.dinov2`         DINOv2 ViT-L/14 with registers             (``encoder.model.*``)
* :mod:`.head_encoder`   four-layer fusion head over DINOv2          (``encoder.fusion_head.*``)
* :mod:`.body_encoder`   Sapiens TorchScript loader / stand-in       (not in the state dict)
* :mod:`.mbht`           Multimodal Body-Head Transformer            (``transformer.*``)
* :mod:`.template`       SMPL-X template buffers                     (``renderer.smplx_model.*``)
* :mod:`.decoder`        Gaussian attribute heads                    (``renderer.{mlp_net,gs_net}.*``)
* :mod:`.model`          the full network                            (+ ``motion_embed_mlp.*``)
* :mod:`.checkpoint`     strict loading of ``model.safetensors``
* :mod:`.state_dict_diff` key / shape / dtype comparison of two layouts
* :mod:`.manifest`       comparison with a state-dict manifest
* :mod:`.errors`         the LHM error classes
* :mod:`.cli`            ``streamer lhm info | check-manifest | check-checkpoint``

and the stages around the network:

* :mod:`.query_points`   big-pose SMPL-X surface samples (3:1 body:head) + nearest-vertex skinning
* :mod:`.preprocess`     body image (white background, 5:3 crop padded square) and head crop
* :mod:`.to_avatar`      predicted Gaussians: big pose -> zero pose (+ betas) -> our Avatar
* :mod:`.weights`        where the user's checkpoint, Sapiens TorchScript and SMPL-X file are
* :mod:`.infer`          ``streamer reconstruct --method lhm`` (:class:`.infer.LHMReconstructor`)
* :mod:`.train`          ``streamer train-lhm``: data, objective, training loop
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Where each public name lives. They are imported on first use: ``streamer --help`` builds the
#: ``lhm`` commands' parser from :mod:`.config`, and torch should come only with the network.
_WHERE = {
    "BodyEncoder": "body_encoder",
    "PatchStandInEncoder": "body_encoder",
    "load_sapiens_torchscript": "body_encoder",
    "CHECKPOINT_FILENAME": "checkpoint",
    "LoadReport": "checkpoint",
    "load_checkpoint": "checkpoint",
    "read_layout": "checkpoint",
    "save_checkpoint": "checkpoint",
    "CONFIGS": "config",
    "RELEASED": "config",
    "LHMConfig": "config",
    "get_config": "config",
    "GaussianAttributes": "decoder",
    "CheckpointFormatError": "errors",
    "CheckpointMismatchError": "errors",
    "CheckpointNotFoundError": "errors",
    "EncoderFormatError": "errors",
    "EncoderNotFoundError": "errors",
    "LHMError": "errors",
    "ManifestError": "errors",
    "LHMNetwork": "model",
    "build_network": "model",
    "count_parameters": "model",
}

__all__ = [  # (the names of _WHERE, spelled out for tools that read __all__ without running it)
    "CHECKPOINT_FILENAME",
    "CONFIGS",
    "RELEASED",
    "BodyEncoder",
    "CheckpointFormatError",
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    "EncoderFormatError",
    "EncoderNotFoundError",
    "GaussianAttributes",
    "LHMConfig",
    "LHMError",
    "LHMNetwork",
    "LoadReport",
    "ManifestError",
    "PatchStandInEncoder",
    "build_network",
    "count_parameters",
    "get_config",
    "load_checkpoint",
    "load_sapiens_torchscript",
    "read_layout",
    "save_checkpoint",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        try:  # a submodule (``lhm.model``), as after ``import streamer.reconstruct.lhm.model``
            return importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":  # the submodule is there; something it needs is not
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # (once found, an ordinary attribute)
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


if TYPE_CHECKING:
    from .body_encoder import BodyEncoder, PatchStandInEncoder, load_sapiens_torchscript
    from .checkpoint import CHECKPOINT_FILENAME, LoadReport, load_checkpoint, read_layout, save_checkpoint
    from .config import CONFIGS, RELEASED, LHMConfig, get_config
    from .decoder import GaussianAttributes
    from .errors import (
        CheckpointFormatError,
        CheckpointMismatchError,
        CheckpointNotFoundError,
        EncoderFormatError,
        EncoderNotFoundError,
        LHMError,
        ManifestError,
    )
    from .model import LHMNetwork, build_network, count_parameters
