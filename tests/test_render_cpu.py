"""The CPU tile rasterizer: against the dense float64 reference, against gsplat's pure-torch
projection, and its input handling."""

from __future__ import annotations

import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from render_scenes import KINDS, make_camera, make_scene

from streamer.avatar.gaussians import Gaussians
from streamer.errors import BackendUnavailableError, InputError
from streamer.render import get_renderer, render
from streamer.render._reference import ReferenceRenderer
from streamer.render.base import ALPHA_MAX, ALPHA_MIN, EPS2D, FAR_PLANE, NEAR_PLANE, T_MIN, TILE_SIZE
from streamer.render.camera import Camera
from streamer.render.cpu import CpuRenderer

# Tolerances for CPU (float32, polynomial 2^x with relative error < 1e-7) vs the float64 reference.
# Almost every pixel agrees to ~1e-5: float32 rounding in the projection (thin Gaussians have
# conics conditioned up to ~1e3) and in T accumulated over up to ~100 fragments. A few pixels may
# differ more, because float32 and float64 can disagree on a threshold decision for a fragment that
# sits within ~1e-6 of it: alpha vs ALPHA_MIN (changes the colour by <= 1/255 and T by a factor
# 1 - 1/255) or T*(1-alpha) vs T_MIN (the stop then moves by one fragment: <= T <= T_MIN/(1 - ALPHA_MAX)
# = 0.1). Those flips are rare (0-3 pixels in these scenes), so at most FLIP_FRACTION of the pixels
# may exceed ATOL, never FLIP_ATOL. Any semantic error (stop rule, clamps, culling, blur, Jacobian
# clamp, pixel centres, depth order) moves far more pixels than that.
ATOL = 1e-4
FLIP_FRACTION = 2e-3
FLIP_ATOL = 0.1

BACKGROUND = (0.2, 0.5, 0.9)


@pytest.fixture(scope="module")
def cpu() -> CpuRenderer:
    return CpuRenderer()


def assert_images_match(
    got: tuple[torch.Tensor, torch.Tensor], want: tuple[torch.Tensor, torch.Tensor], what: str = ""
) -> None:
    """rgb [H, W, 3] and alpha [H, W] agree within ATOL except for rare threshold flips."""
    (rgb, alpha), (rgb_ref, alpha_ref) = got, want
    assert rgb.shape == rgb_ref.shape and alpha.shape == alpha_ref.shape, what
    assert rgb.dtype == torch.float32 and alpha.dtype == torch.float32, what
    diff = torch.maximum((rgb - rgb_ref).abs().amax(-1), (alpha - alpha_ref).abs())
    n_bad = int((diff > ATOL).sum())
    allowed = max(1, int(FLIP_FRACTION * diff.numel()))
    assert n_bad <= allowed, f"{what}: {n_bad} pixels differ by > {ATOL} (max {float(diff.max()):.3g})"
    assert float(diff.max()) <= FLIP_ATOL, f"{what}: max difference {float(diff.max()):.3g}"


# ---------------------------------------------------------------------------------------------
# pixels: CPU rasterizer == dense reference
# ---------------------------------------------------------------------------------------------

# (width, height, N): non-square, not multiples of 16, one smaller than a tile
SIZES = [(61, 47, 250), (100, 37, 300), (13, 40, 120)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_matches_reference(cpu: CpuRenderer, kind: str, size: tuple[int, int, int]) -> None:
    width, height, n = size
    seed = 10 * KINDS.index(kind) + SIZES.index(size)
    gaussians = make_scene(kind, n, seed=seed)
    camera = make_camera(width, height, seed=seed)
    got = cpu.render(gaussians, camera, BACKGROUND)
    want = ReferenceRenderer().render(gaussians, camera, BACKGROUND)
    assert_images_match(got, want, f"{kind} {width}x{height}")
    if kind == "opaque_stack":  # deep opaque stacks: the early stop decides these pixels
        assert float((want[1] > 1 - 10 * T_MIN).float().mean()) > 0.01


def test_early_stop_is_exclusive(cpu: CpuRenderer) -> None:
    """Three opaque Gaussians centred on a pixel: alpha clamps to ALPHA_MAX, the first leaves
    T = 0.001, the second would bring T to 1e-6 <= T_MIN, so compositing stops before it."""
    camera = Camera(
        K=torch.tensor([[40.0, 0, 16], [0, 40.0, 16], [0, 0, 1]]), viewmat=torch.eye(4), width=32, height=32
    )
    # pixel (10, 20) has its centre at (10.5, 20.5): the camera ray through it at depth z
    depths = torch.tensor([2.0, 2.5, 3.0])
    means = torch.stack([(10.5 - 16) / 40 * depths, (20.5 - 16) / 40 * depths, depths], -1)
    colors = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    gaussians = Gaussians(
        means=means,
        quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(3, 1),
        scales=torch.full((3, 3), 0.1),
        opacities=torch.ones(3),
        colors=colors,
    )
    background = (0.0, 0.0, 0.0)
    T1 = 1 - ALPHA_MAX
    assert T1 * (1 - ALPHA_MAX) <= T_MIN < T1
    want_rgb = ALPHA_MAX * colors[0]  # + T1 * black background
    for renderer in (cpu, ReferenceRenderer()):
        rgb, alpha = renderer.render(gaussians, camera, background)
        torch.testing.assert_close(rgb[20, 10], want_rgb, atol=1e-6, rtol=0)
        assert abs(float(alpha[20, 10]) - ALPHA_MAX) < 1e-6


def test_empty_scene(cpu: CpuRenderer) -> None:
    empty = make_scene("mixed", 1).subset(slice(0, 0))
    rgb, alpha = cpu.render(empty, make_camera(37, 21), BACKGROUND)
    assert rgb.shape == (21, 37, 3) and alpha.shape == (21, 37)
    assert bool((rgb == torch.tensor(BACKGROUND)).all()) and bool((alpha == 0).all())


def test_all_culled(cpu: CpuRenderer) -> None:
    """Behind the camera, beyond the image, or too transparent: nothing is drawn."""
    camera = make_camera(40, 30)
    g = make_scene("mixed", 30, seed=3)
    cam_pos = -camera.viewmat[:3, :3].T @ camera.viewmat[:3, 3]
    behind = cam_pos + 0.5 * (cam_pos - 0)  # further out along the camera-to-origin line
    means = torch.cat([behind.expand(10, 3), torch.tensor([[50.0, 0, 0]]).expand(10, 3), g.means[20:]])
    opacities = torch.cat([torch.ones(20), torch.full((10,), 0.5 * ALPHA_MIN)])
    rgb, alpha = cpu.render(g.replace(means=means.contiguous(), opacities=opacities), camera, BACKGROUND)
    assert bool((alpha == 0).all()) and bool((rgb == torch.tensor(BACKGROUND)).all())


def test_background_and_empty_pixels(cpu: CpuRenderer) -> None:
    """Pixels no Gaussian reaches are exactly the background with alpha 0; covered pixels blend it."""
    camera = make_camera(64, 48, seed=1)
    g = make_scene("mixed", 40, seed=5)
    g = g.replace(scales=g.scales * 0.2)  # small splats leave most pixels empty
    for background in [(0.0, 0.0, 0.0), (1.0, 1.0, 1.0), BACKGROUND]:
        rgb, alpha = cpu.render(g, camera, background)
        rgb_ref, alpha_ref = ReferenceRenderer().render(g, camera, background)
        empty = alpha_ref == 0
        assert 0.2 < float(empty.float().mean()) < 0.99
        assert bool((alpha[empty] == 0).all())
        assert bool((rgb[empty] == torch.tensor(background)).all())
        assert_images_match((rgb, alpha), (rgb_ref, alpha_ref), f"background {background}")
    # the background shows through exactly by the final transmittance
    rgb_black, alpha_black = cpu.render(g, camera, (0.0, 0.0, 0.0))
    rgb_white, _ = cpu.render(g, camera, (1.0, 1.0, 1.0))
    torch.testing.assert_close(
        rgb_white - rgb_black, (1 - alpha_black)[..., None].expand(-1, -1, 3), atol=1e-6, rtol=0
    )


def test_threads_and_concurrency(cpu: CpuRenderer) -> None:
    """Every pixel is computed independently: 1 thread, the default team and concurrent calls
    from several Python threads (the GIL is released) give bit-identical images."""
    g = make_scene("opaque_stack", 3000, seed=11)
    camera = make_camera(200, 150, seed=11)
    want = CpuRenderer(num_threads=1).render(g, camera, BACKGROUND)
    got = cpu.render(g, camera, BACKGROUND)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda _: cpu.render(g, camera, BACKGROUND), range(9)))
    assert all(torch.equal(r[0], want[0]) and torch.equal(r[1], want[1]) for r in results)


def test_render_entry_point() -> None:
    g = make_scene("mixed", 50, seed=2)
    camera = make_camera(40, 24)
    rgb, alpha = render(g, camera, BACKGROUND, backend="cpu")
    assert rgb.shape == (24, 40, 3) and alpha.shape == (24, 40)
    assert get_renderer("cpu").name == "cpu"
    batch_rgb, batch_alpha = render(g, [camera, camera], BACKGROUND, backend="cpu")
    assert batch_rgb.shape == (2, 24, 40, 3) and torch.equal(batch_rgb[1], rgb)
    assert batch_alpha.shape == (2, 24, 40) and torch.equal(batch_alpha[0], alpha)


# ---------------------------------------------------------------------------------------------
# projection: CPU == gsplat's pure-torch implementation
# ---------------------------------------------------------------------------------------------


def _gsplat_projection(g: Gaussians, camera: Camera) -> tuple[torch.Tensor, ...]:
    """gsplat 1.5.3's torch projection (float64): radii (3.33 sigma), means2d, depths, conics,
    and the blurred 2D covariances."""
    torch_impl = pytest.importorskip("gsplat.cuda._torch_impl")
    f64 = torch.float64
    covars, _ = torch_impl._quat_scale_to_covar_preci(g.quats.to(f64), g.scales.to(f64), compute_preci=False)
    viewmats, Ks = camera.viewmat[None].to(f64), camera.K[None].to(f64)
    radii, means2d, depths, conics, _ = torch_impl._fully_fused_projection(
        g.means.to(f64), covars, viewmats, Ks, camera.width, camera.height, eps2d=EPS2D,
        near_plane=NEAR_PLANE, far_plane=FAR_PLANE,
    )  # fmt: skip
    means_c, covars_c = torch_impl._world_to_cam(g.means.to(f64), covars, viewmats)
    _, cov2d = torch_impl._persp_proj(means_c, covars_c, Ks, camera.width, camera.height)
    cov2d = cov2d + EPS2D * torch.eye(2, dtype=f64)
    return radii[0], means2d[0], depths[0], conics[0], cov2d[0]


def _near_integer(x: torch.Tensor, tol: float = 1e-4) -> torch.Tensor:
    """Where ceil(x) could flip under float32 rounding."""
    return (x - x.round()).abs() <= tol * x.abs().clamp(min=1)


@pytest.mark.parametrize("kind", KINDS)
def test_projection_matches_gsplat(cpu: CpuRenderer, kind: str) -> None:
    g = make_scene(kind, 1500, seed=7)
    camera = make_camera(97, 61, seed=7)
    radii_ref, means2d_ref, depths_ref, conics_ref, cov2d_ref = _gsplat_projection(g, camera)
    means2d, conics, depths, radii = cpu.project(g, camera, use_opacity=False)
    assert radii.dtype == torch.int32 and means2d.shape == (1500, 2) and conics.shape == (1500, 3)

    extent = 3.33 * cov2d_ref.diagonal(dim1=-2, dim2=-1).sqrt()  # before ceil, [N, 2]
    visible, visible_ref = (radii > 0).all(-1), (radii_ref > 0).all(-1)
    ambiguous = _near_integer(extent).any(-1)
    assert bool((visible == visible_ref)[~ambiguous].all())
    assert 50 < int(visible.sum()) and (kind != "offscreen" or int((~visible).sum()) > 100)
    v = visible & visible_ref
    # float32 vs float64: means2d and depths to ~1e-6 relative; conics relative to their largest
    # entry (inverting thin, nearly singular covariances amplifies rounding by the condition number)
    torch.testing.assert_close(means2d[v].double(), means2d_ref[v], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(depths[v].double(), depths_ref[v], rtol=1e-6, atol=0)
    scale = conics_ref[v].abs().amax(-1, keepdim=True)
    assert float(((conics[v].double() - conics_ref[v]).abs() / scale).max()) < 1e-4
    ok = v & ~ambiguous
    assert torch.equal(radii[ok], radii_ref[ok].to(torch.int32))
    assert bool((radii[~visible] == 0).all()) and bool((means2d[~visible] == 0).all())


def test_projection_opacity_aware_radii(cpu: CpuRenderer) -> None:
    """gsplat 1.5.3 (CUDA) shrinks the radii to where alpha reaches ALPHA_MIN:
    extent = min(3.33, sqrt(2 ln(opacity / ALPHA_MIN))); opacity < ALPHA_MIN is culled."""
    g = make_scene("mixed", 1500, seed=8)
    g = g.replace(opacities=torch.cat([torch.full((100,), 0.5 * ALPHA_MIN), g.opacities[100:]]))
    camera = make_camera(120, 90, seed=8)
    radii_3sigma, _, _, _, cov2d_ref = _gsplat_projection(g, camera)
    _, _, _, radii = cpu.project(g, camera)
    o = g.opacities.double()
    k = torch.clamp(2 * torch.log(o.clamp(min=ALPHA_MIN) / ALPHA_MIN), min=0).sqrt().clamp(max=3.33)
    extent = k[:, None] * cov2d_ref.diagonal(dim1=-2, dim2=-1).sqrt()
    want = torch.ceil(extent).int()
    want[(radii_3sigma == 0).any(-1) | (o < ALPHA_MIN)] = 0
    ok = ~_near_integer(extent).any(-1)
    assert int(ok.sum()) > 1000 and bool((radii[:100] == 0).all())
    # off-screen culling uses the smaller radii too: compare only where both agree on visibility
    both = ok & (radii > 0).all(-1) & (want > 0).all(-1)
    assert int(both.sum()) > 1000
    assert torch.equal(radii[both], want[both])
    assert bool((radii <= radii_3sigma.int()).all())


# ---------------------------------------------------------------------------------------------
# input handling
# ---------------------------------------------------------------------------------------------


def test_rejects_gaussians_off_cpu(cpu: CpuRenderer) -> None:
    g = make_scene("mixed", 4).to("meta")
    with pytest.raises(InputError, match="Gaussians on the CPU"):
        cpu.render(g, make_camera(8, 8), BACKGROUND)


@pytest.mark.parametrize("background", [(1.0, 0.0), (0.0, 2.0, 0.0), "red", (0.0, float("nan"), 0.0), None])
def test_rejects_bad_background(cpu: CpuRenderer, background: object) -> None:
    with pytest.raises(InputError, match="background"):
        cpu.render(make_scene("mixed", 4), make_camera(8, 8), background)  # type: ignore[arg-type]


def test_extension_missing_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "streamer.render._cpu_raster", None)  # makes the import fail
    with pytest.raises(BackendUnavailableError, match="pip install -e"):
        CpuRenderer()


def test_extension_takes_its_constants_from_python(cpu: CpuRenderer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The C++ code has no copy of the rasterization constants (``streamer.render.base``, shared with
    the reference and gsplat's defaults) except the tile size: raising ALPHA_MIN where Python hands it
    over culls every splat."""
    from streamer.render import cpu as cpu_module

    assert cpu._ext.TILE_SIZE == TILE_SIZE
    assert math.isclose(ALPHA_MIN, 1 / 255)  # gsplat's
    camera, g = make_camera(40, 30), make_scene("mixed", 30, seed=3)
    _, alpha = cpu.render(g, camera, BACKGROUND)
    assert float(alpha.max()) > 0.5
    settings = list(cpu_module._RASTER_SETTINGS)
    assert settings[4] == ALPHA_MIN  # (EPS2D, NEAR_PLANE, FAR_PLANE, RADIUS_CLIP, ALPHA_MIN, ...)
    settings[4] = 1.5  # no splat reaches it
    monkeypatch.setattr(cpu_module, "_RASTER_SETTINGS", tuple(settings))
    _, alpha = cpu.render(g, camera, BACKGROUND)
    assert bool((alpha == 0).all())


def test_default_team_is_one_per_core_whatever_torch_set_in_the_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch lowers a thread's OpenMP default to its own thread count once it runs an op there; the
    renderer's default (0) must not follow (the stream server's renders ran on one thread by accident)."""
    import threading

    from streamer.render.cpu import default_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = default_threads()
    seen: dict[str, int] = {}

    def worker() -> None:
        torch.ones(1 << 20).add_(1)  # a parallel op: torch initialises this thread's OpenMP setting
        renderer = CpuRenderer()
        seen["thread_openmp"], seen["renderer"] = renderer._ext.max_threads(), renderer.max_threads()

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t = threading.Thread(target=worker)
        t.start()
        t.join()
    finally:
        torch.set_num_threads(before)
    assert seen["thread_openmp"] == 1  # the situation: OpenMP's per-thread default is torch's 1
    assert seen["renderer"] == cores == len(os.sched_getaffinity(0))
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads() == 3 and CpuRenderer().max_threads() == 3 and CpuRenderer(2).max_threads() == 2


# ---------------------------------------------------------------------------------------------
# backproject: the adjoint of rendering w.r.t. the colours
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_backproject_is_the_colour_gradient(cpu: CpuRenderer, kind: str) -> None:
    """sums = d(sum(rgb * image))/d(colours) and mass = d(sum(rgb[..., 0] * weight))/d(red), by
    autograd through the float64 reference renderer; pixels of weight 0 drop out of both."""
    width, height, n = 61, 47, 250
    seed = 7 + KINDS.index(kind)
    g = make_scene(kind, n, seed=seed)
    camera = make_camera(width, height, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(height, width, 3, generator=gen, dtype=torch.float64) - 0.5
    weight = (torch.rand(height, width, generator=gen, dtype=torch.float64) > 0.3).double()

    colors = g.colors.clone().requires_grad_(True)
    rgb, _ = ReferenceRenderer().render(g.replace(colors=colors), camera, (0.0, 0.0, 0.0))
    (want_sums,) = torch.autograd.grad((rgb.double() * image * weight[..., None]).sum(), colors, retain_graph=True)
    (want_mass,) = torch.autograd.grad((rgb.double()[..., 0] * weight).sum(), colors)
    sums, mass = cpu.backproject(g, camera, (image * weight[..., None]).numpy(), weight.numpy())
    assert sums.shape == (n, 3) and mass.shape == (n,)
    scale = float(want_mass[:, 0].abs().max())
    assert scale > 1.0  # the scene covers the image
    np_sums, np_mass = torch.from_numpy(sums).double(), torch.from_numpy(mass).double()
    torch.testing.assert_close(np_mass, want_mass[:, 0].double(), atol=2e-3 * scale, rtol=0)
    torch.testing.assert_close(np_sums, want_sums.double(), atol=2e-3 * scale, rtol=0)
    # with unit weights, the mass is each Gaussian's share of the rendered alpha
    _, full_mass = cpu.backproject(g, camera, np.zeros((height, width, 3), np.float32))
    _, alpha = cpu.render(g, camera, (0.0, 0.0, 0.0))
    assert abs(float(full_mass.sum()) - float(alpha.sum())) < 1e-3 * float(alpha.sum())


def test_backproject_rejects_wrong_sizes(cpu: CpuRenderer) -> None:
    g = make_scene("mixed", 10)
    camera = make_camera(20, 10)
    with pytest.raises(InputError, match="camera's size"):
        cpu.backproject(g, camera, np.zeros((10, 21, 3)))
    with pytest.raises(InputError, match="weight"):
        cpu.backproject(g, camera, np.zeros((10, 20, 3)), np.ones((10, 19)))
