"""Loading the three inputs of every pipeline (body model, avatar, motion) with built-in defaults."""

from __future__ import annotations

import functools
from pathlib import Path

from .avatar import Avatar
from .avatar.demo import build_demo_avatar
from .body import BodyModel
from .tracking.demo_motion import demo_motion
from .tracking.motion import Motion, load_motion


@functools.lru_cache(maxsize=4)
def load_body(smplx_dir: str | None = None) -> BodyModel:
    """The built-in body model, or real SMPL-X files from ``smplx_dir`` (cached per process)."""
    return BodyModel.load(smplx_dir)


def load_avatar_or_demo(path: str | Path | None, body: BodyModel) -> Avatar:
    """The avatar at ``path``, or the built-in demo avatar when ``path`` is None."""
    return build_demo_avatar(body) if path is None else Avatar.load(path)


def load_motion_or_demo(path: str | Path | None) -> Motion:
    """The motion file at ``path``, or the built-in demo motion when ``path`` is None."""
    return demo_motion() if path is None else load_motion(path)
