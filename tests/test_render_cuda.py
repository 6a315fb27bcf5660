"""The gsplat (CUDA) backend: against the CPU tile rasterizer on a GPU (skipped without one), and
its call convention and error on any machine."""

from __future__ import annotations

import inspect

import pytest
import torch
from render_scenes import make_camera, make_scene

from streamer.errors import BackendUnavailableError, InputError
from streamer.render import get_renderer
from streamer.render.base import EPS2D, FAR_PLANE, NEAR_PLANE, RADIUS_CLIP, TILE_SIZE
from streamer.render.camera import Camera
from streamer.render.cpu import CpuRenderer
from streamer.render.gsplat_backend import GsplatRenderer, gsplat_arguments

cuda = pytest.mark.cuda
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# Both backends are float32 with the same semantics; they differ in exp (CUDA __expf vs our
# polynomial 2^x, both ~1e-7 relative), in the order of float operations of the projection, and
# rarely in threshold decisions of fragments within ~1e-6 of ALPHA_MIN or of the early stop
# (see test_render_cpu.py: such flips move a pixel by <= 0.1). Hence: every pixel within ATOL except
# at most FLIP_FRACTION of them, none beyond FLIP_ATOL.
ATOL = 1e-4
FLIP_FRACTION = 2e-3
FLIP_ATOL = 0.1
BACKGROUND = (0.2, 0.5, 0.9)

SCENES = [
    ("mixed", 61, 47, 400),
    ("opaque_stack", 100, 37, 600),
    ("offscreen", 64, 64, 800),
    ("tiny_huge", 48, 80, 300),
    ("anisotropic", 128, 96, 2000),
    ("mixed", 1280, 720, 40000),  # real-time sized frame with many tiles and long tile lists
]


@cuda
@needs_gpu
@pytest.mark.parametrize("kind,width,height,n", SCENES, ids=lambda v: str(v))
def test_gsplat_matches_cpu(kind: str, width: int, height: int, n: int) -> None:
    seed = width + n
    gaussians = make_scene(kind, n, seed=seed)
    if n > 10000:
        gaussians = gaussians.replace(scales=gaussians.scales * 0.1)
    camera = make_camera(width, height, seed=seed)
    rgb_cpu, alpha_cpu = CpuRenderer().render(gaussians, camera, BACKGROUND)
    rgb, alpha = GsplatRenderer().render(gaussians.to("cuda"), camera, BACKGROUND)
    assert rgb.device.type == "cuda" and rgb.shape == (height, width, 3) and alpha.shape == (height, width)
    assert rgb.dtype == torch.float32 and alpha.dtype == torch.float32
    diff = torch.maximum((rgb.cpu() - rgb_cpu).abs().amax(-1), (alpha.cpu() - alpha_cpu).abs())
    n_bad = int((diff > ATOL).sum())
    assert n_bad <= max(1, int(FLIP_FRACTION * diff.numel())), (
        f"{n_bad} pixels differ (max {float(diff.max()):.3g})"
    )
    assert float(diff.max()) <= FLIP_ATOL


@cuda
@needs_gpu
def test_gsplat_empty_scene_and_background() -> None:
    empty = make_scene("mixed", 1).subset(slice(0, 0)).to("cuda")
    rgb, alpha = GsplatRenderer().render(empty, make_camera(30, 20), BACKGROUND)
    assert rgb.shape == (20, 30, 3) and bool((rgb.cpu() == torch.tensor(BACKGROUND)).all())
    assert bool((alpha == 0).all())


@cuda
@needs_gpu
def test_gsplat_rejects_cpu_gaussians() -> None:
    with pytest.raises(InputError, match="CUDA device"):
        GsplatRenderer().render(make_scene("mixed", 4), make_camera(8, 8), BACKGROUND)


@cuda
@needs_gpu
def test_framing_a_gpu_avatar() -> None:
    """``streamer render`` frames the posed avatar where it was posed: on the GPU."""
    points = make_scene("mixed", 500, seed=3).means
    on_gpu = Camera.framing(points.to("cuda"), 64, 48)
    on_cpu = Camera.framing(points, 64, 48)
    assert on_gpu.viewmat.device.type == "cpu"
    torch.testing.assert_close(on_gpu.viewmat, on_cpu.viewmat)


@cuda
@needs_gpu
def test_auto_backend_is_cuda() -> None:
    assert get_renderer("auto").name == "cuda"


# --- on any machine ----------------------------------------------------------------------------


def test_gsplat_call_convention() -> None:
    """The keyword arguments bind to gsplat.rasterization and carry our semantics."""
    gsplat = pytest.importorskip("gsplat")
    g = make_scene("mixed", 5)
    camera = make_camera(33, 17)
    kwargs = gsplat_arguments(g, camera, torch.tensor(BACKGROUND))
    inspect.signature(gsplat.rasterization).bind(**kwargs)
    assert kwargs["viewmats"].shape == (1, 4, 4) and kwargs["Ks"].shape == (1, 3, 3)
    assert kwargs["backgrounds"].shape == (1, 3) and kwargs["colors"].shape == (5, 3)
    assert (kwargs["width"], kwargs["height"]) == (33, 17)
    assert kwargs["rasterize_mode"] == "classic" and kwargs["packed"] is False and kwargs["sh_degree"] is None
    assert (
        kwargs["eps2d"] == EPS2D and kwargs["near_plane"] == NEAR_PLANE and kwargs["far_plane"] == FAR_PLANE
    )
    assert kwargs["radius_clip"] == RADIUS_CLIP and kwargs["tile_size"] == TILE_SIZE
    assert kwargs["render_mode"] == "RGB"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without a GPU")
def test_gsplat_without_cuda_is_explained() -> None:
    with pytest.raises(BackendUnavailableError, match="CUDA"):
        GsplatRenderer().render(make_scene("mixed", 4), make_camera(8, 8), BACKGROUND)
