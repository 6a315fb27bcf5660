"""Shared fixtures: the built-in body model (generated once per test session into a temp cache)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
#: The shared test video: one person, full body, 720x1280 (portrait), 30 fps, 301 frames.
SHARED_VIDEO = SHARED_DATA / "video" / "full_body_taichi.mp4"
#: The first line of a bench's text report: the machine in words, not a Python dict.
MACHINE_HEADER = r"bench {verb}  \(\d+ CPUs, \d+ torch threads, (no GPU|GPU .+)\)"


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep generated assets out of the user's cache (subprocesses inherit the variable)."""
    if "STREAMER_CACHE_DIR" not in os.environ:
        os.environ["STREAMER_CACHE_DIR"] = str(tmp_path_factory.mktemp("streamer-cache"))


@pytest.fixture
def one_torch_thread():
    """Toy-sized torch ops: one intra-op thread is faster, especially on a busy 2-core CI runner."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def body(_private_cache: None):
    from streamer.body import BodyModel

    return BodyModel.load()


@pytest.fixture(scope="session")
def demo_avatar(body):
    from streamer.avatar.demo import build_demo_avatar

    return build_demo_avatar(body, num_gaussians=8000)


def random_pose(seed: int, scale: float = 0.4, batch: int | None = None):
    """A random but plausible SMPL-X pose (axis-angle ~ N(0, scale))."""
    from streamer.body import SmplxPose

    g = torch.Generator().manual_seed(seed)
    zero = SmplxPose.zeros(batch=batch)

    def rnd(t: torch.Tensor, s: float) -> torch.Tensor:
        return torch.randn(t.shape, generator=g) * s

    return zero.replace(
        global_orient=rnd(zero.global_orient, scale),
        body_pose=rnd(zero.body_pose, scale),
        left_hand_pose=rnd(zero.left_hand_pose, scale),
        right_hand_pose=rnd(zero.right_hand_pose, scale),
        jaw_pose=rnd(zero.jaw_pose, 0.1),
        betas=rnd(zero.betas, 1.0),
        transl=rnd(zero.transl, 0.5),
    )
