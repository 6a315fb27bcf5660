"""The ``fit`` reconstruction method: one photo -> an animatable Gaussian avatar, no learned weights.

Steps (each timed in :attr:`Reconstruction.timings_s`):

1. ``detect``: the person, their landmarks and mask, the 5:3 crop (:mod:`.person`);
2. ``fit``: the body pose and placement from the landmarks with the live fitter
   (:class:`streamer.tracking.fit.PoseFitter`, single frame, no smoothing), then the first beta(s)
   and the in-plane placement from the 2D landmarks (:mod:`.shape`), then, where that leaves a limb
   outside the person, the pose moved so that the body's outline fits the person mask
   (:class:`.track_refine.SilhouetteRefiner`, as for a video's frames); its camera (``K`` for the
   crop, ``viewmat``) is the photo's camera from then on;
3. ``silhouette``: per-vertex offsets along the posed normals so the outline matches the mask, then
   carried round to the back of each body part's cross-section (loose cloth reaches about as far
   behind as at the sides, which shows when the person turns; :func:`.silhouette.cross_section_offsets`),
   where that keeps the vertex inside the mask;
4. ``sample``: ~40,000 Gaussians on the offset surface, 3:1 body:head, flat discs sized to the
   sampling density and the local stretch of the offset surface;
5. ``colour``: seen ones from the photo, unseen ones filled per body part (the back of a garment
   from its front at the same place in the photo), hair on the back of the head (:mod:`.colour`);
   small camera-facing discs where the person mask reaches past the surface (hair, flared cloth)
   and along the mask's outline (:mod:`.gaps`), whose blend of person and background the edge-on
   surface Gaussians would otherwise take; then the colours of every Gaussian the photo shows (up
   to the mask's edge) or that faces the camera, except edge-on ones, fitted to the photo by least
   squares through the rasterizer's exact blending weights (:func:`refine_colours`), and those it
   barely decides smoothed towards their neighbours' for the views it does not show
   (:func:`smooth_weak_colours`);
6. ``unpose``: each Gaussian through the inverse of its blended skinning transform into the canonical
   zero pose, so that :meth:`Avatar.pose` with the fitted pose gives back exactly the fitted Gaussians.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..avatar import Avatar, Gaussians
from ..avatar.avatar import skinning_transforms
from ..avatar.demo import HEAD_FRACTION, head_face_mask, sample_surface, tangent_frames
from ..avatar.lbs import matrix_to_quat, unskin_gaussians
from ..body.joints import HAND_JOINTS, JOINT_INDEX
from ..body.model import BodyModel, vertex_normals
from ..body.pose import SmplxPose
from ..errors import StreamerWarning
from ..render import Camera
from .colour import (
    body_parts,
    facing_cos,
    fill_positions,
    fill_sources,
    fill_unseen,
    rendered_depth,
    sample_image,
    visible,
)
from .gaps import cover_gaps, outline_band
from .person import Person, find_person
from .shape import fit_shape
from .silhouette import (
    cross_section_offsets,
    outline_offsets,
    project,
    sample_mask,
    spread_offsets,
    vertex_adjacency,
)
from .steps import StepClock
from .track_refine import SilhouetteRefiner

NUM_GAUSSIANS = 40_000
TANGENT_SIGMA = 0.6  # along the surface, in units of the local sample spacing
NORMAL_SIGMA = 0.3  # along the normal, same unit
OPACITY = 0.97
FIT_ITERATIONS = 8
REFINE_ITERATIONS = 10
MAX_FOREARM_OFFSET_M = 0.06
#: Outline vertices of the neck, collars and upper spine whose normal points up in the photo (cos to
#: the image's up above UPWARD_COS) reach at most this far: cloth rises little above the shoulders,
#: and what the mask holds there is hair (or a hat's brim) hanging from the head. Measured in full,
#: it lifted the shoulders into "wings" of hair beside the head and pushed the neck's front out into
#: a blob before the chin (eval recon on the long-hair photos +0.03 and +0.20 dB, elderly_man_library
#: -0.14, outdoor_man_small +0.08; the video's eval animate +0.05 dB; 0.02 m and 0.06 m gave less).
MAX_UPWARD_OFFSET_M = 0.04
UPWARD_COS = 0.5
UPWARD_JOINTS = ("neck", "left_collar", "right_collar", "spine3")
FRONT_DENSITY = 8  # sampling density of camera-facing surface relative to the rest
REFINE_STEP = 2.0
KNN_SIGMA = 0.8  # > 0: disc size = this times the mean distance to the KNN_K nearest samples
KNN_K = 4
FIT_SHAPE = True  # fit the first betas to the landmarks (fit_photo)
#: fit_photo then moves the pose so that the body's outline fits the person mask, where the landmark
#: fit misses it by more than this (squared pixels of outline and landmarks, ~10 px): a limb left
#: outside the person. Smaller misses are the surface offsets' job; moving the pose for them makes
#: the avatar's build pose differ from what the live fitter gives for the same stance
#: (eval animate: 17.47 -> 17.14 dB when every photo was refined; the shared photos start at 14-30,
#: outdoor_man_small, whose hidden hand hung outside him, at 744).
FIT_TO_MASK_MIN_PX2 = 100.0
REFINE_MIN_ALPHA = 0.2  # residuals of pixels the avatar barely covers are amplified at most 1 / this
REFINE_FACING = -0.1  # besides the seen ones, Gaussians facing the camera this much (cos) are fitted too
REFINE_MIN_MASS = 1e-3  # Gaussians with less blending weight (pixels) inside the mask keep their colour
REFINE_DAMPING = 1.0  # blending weight (pixels) added to each Gaussian's own in the update's denominator
SMOOTH_NEIGHBOURS = 8  # smooth_weak_colours: each colour's neighbourhood (and itself) ...
SMOOTH_RADIUS_M = 0.03  # ... within this distance (canonical) ...
SMOOTH_MASS = 3.0  # ... whose mean it takes in proportion SMOOTH_MASS / (its blending weight + SMOOTH_MASS)
COVER_GAPS = True  # add Gaussians where the person mask reaches past the offset surface (.gaps)
REFINE_MASK_ERODE_PX = 0  # refine Gaussians inside the mask eroded by this many pixels
CROSS_SECTION_FRACTION = 1.0  # unseen sides reach this share of the outline's offset (0: off)
CROSS_SECTION_MIN_FACING = 0.5  # only vertices facing away from the camera this much (cos) take it
OUTLINE_PX = 6  # camera-facing discs line the mask's outermost pixels and take its blended colours (.gaps)
EDGE_ON_COS = 0.2  # ... and surface Gaussians this edge-on (|cos| to the camera) there stay out of the colour fit
HAIR_SOURCE_M = 0.06  # the hair colour comes from seen head Gaussians this far above the eyes (canonical;
# most foreheads end 6-8 cm above the eyes), outline (OUTLINE_PX) left out while this share remains:
HAIR_INNER_SHARE = 0.5
STEPS = ("detect", "fit", "silhouette", "sample", "colour", "unpose")


#: Said when the photo shows less than the whole body (the avatar is still made).
PART_BODY_WARNING = (
    "the photo does not show the whole body (hips and knees): what it leaves out, the legs included, "
    "comes from the body model in plain colours; a full-body photo gives a better avatar"
)


@dataclass
class Reconstruction:
    """An avatar and what it was made from.

    Attributes:
        avatar: the animatable avatar (canonical Gaussians, skinning weights, betas).
        pose: the fitted pose of the photo, tracking world (:mod:`streamer.tracking.fit`).
        camera: the photo's camera for the crop in :attr:`person` (render with it to overlay).
        person: the crop, its mask and landmarks.
        seen_fraction: share of the Gaussians coloured directly from the photo.
        timings_s: seconds per step (:data:`STEPS`).
    """

    avatar: Avatar
    pose: SmplxPose
    camera: Camera
    person: Person
    seen_fraction: float
    timings_s: dict[str, float] = field(default_factory=dict)


def _blend(weights: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """Blended skinning matrices: weights [N, 55] @ A [55, 4, 4] -> [N, 3, 4]."""
    return (weights @ A[:, :3, :].reshape(-1, 12)).reshape(-1, 3, 4)


def refine_colours(
    posed: Gaussians,
    colors: np.ndarray,
    active: np.ndarray,
    photo: np.ndarray,
    mask: np.ndarray,
    camera: Camera,
    iterations: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Fit the colours of the Gaussians the photo sees so that the rendering reproduces the photo.

    The rendering is linear in the colours, ``render = W c`` with blending weights ``w_i(p)``.
    This runs SIRT (simultaneous iterative reconstruction) on ``min |mask * (W c - photo)|^2``
    over the ``active`` Gaussians, with the exact weights of the CPU rasterizer
    (:meth:`~streamer.render.cpu.CpuRenderer.backproject`, which respects occlusion): each step
    divides the masked residual by the rendered alpha (each pixel's total weight) and moves each
    Gaussian's colour by the weighted sum of that over its own footprint, divided by its blending
    weight plus :data:`REFINE_DAMPING`. The damping keeps the colours the photo barely decides
    (Gaussians mostly hidden behind others, or edge-on) near their start: undamped, they took the
    whole residual of their few pixels at every step and ran to white or black, which showed as
    patches from other views (woman_hat_bag: 3388 -> 2082 white Gaussians, 2306 -> 1595 black;
    the PSNR is unchanged with 10 steps of 2.0 instead of 8 of 1.6: the damping also keeps a step
    of 2 from oscillating). Colours are clamped to [0, 1] after every step.

    Args:
        posed: the posed Gaussians (colours are replaced).
        colors: starting colours [N, 3] in [0, 1].
        active: which Gaussians may change (seen by the camera, or facing it) [N] bool.
        photo: the photo [H, W, 3] float in [0, 1].
        mask: the person mask [H, W] bool (residuals outside it do not count).
        camera: the photo's camera.
        iterations: steps (default :data:`REFINE_ITERATIONS`), at least 1.

    Returns:
        [N, 3] colours in [0, 1], inactive ones and those no masked pixel sees unchanged; and [N]
        each Gaussian's blending weight (pixels) inside the mask, how firmly the photo decides it
        (for :func:`smooth_weak_colours`).
    """
    from ..render.cpu import CpuRenderer

    steps = REFINE_ITERATIONS if iterations is None else iterations
    if steps < 1:
        raise ValueError(f"refine_colours: iterations must be >= 1, got {steps}")
    cpu = CpuRenderer()
    out = np.clip(colors, 0.0, 1.0)
    m = mask.astype(np.float32)
    for _ in range(steps):
        g = posed.replace(colors=torch.from_numpy(out).float())
        img, alpha = cpu.render(g, camera, background=(0.0, 0.0, 0.0))
        row = m / np.maximum(alpha.numpy(), REFINE_MIN_ALPHA)
        resid = (photo - img.numpy()) * row[..., None]
        sums, mass = cpu.backproject(g, camera, resid, m)
        move = active & (mass > REFINE_MIN_MASS)
        out[move] = np.clip(out[move] + REFINE_STEP * sums[move] / (mass[move, None] + REFINE_DAMPING), 0.0, 1.0)
    return out, mass


def smooth_weak_colours(colors: np.ndarray, mass: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Blend each colour towards its neighbours' as far as the photo leaves it undecided.

    :func:`refine_colours` reproduces the photo exactly, and the colours it barely decides (edge-on
    Gaussians, ones mostly hidden behind others, a few pixels each) take the photo's noise, folds
    and edge blends in full. From the photo's own view that does not show; in any other it does, as
    dark streaks across a white jacket. So each colour moves towards the mean of itself and its
    :data:`SMOOTH_NEIGHBOURS` nearest neighbours (within :data:`SMOOTH_RADIUS_M`) by
    ``SMOOTH_MASS / (mass + SMOOTH_MASS)``, ``mass`` being its blending weight (pixels) inside the
    person mask: unseen ones take the mean, ones the photo shows over many pixels keep theirs.

    On the shared video ``eval animate`` goes from 19.79 to 19.92 dB (every part of it gains, the
    calm frames 0.16 dB, the turning ones 0.10); the four photos' own re-rendering (``eval recon``)
    loses 0.9-1.8 dB (27.3-31.4 -> 26.0-30.2 dB), detail that only the photo's exact view kept.

    Args:
        colors: [N, 3] colours.
        mass: [N] blending weights (pixels) inside the person mask, as :func:`refine_colours` gives.
        points: [N, 3] positions to find the neighbours in (canonical: parts that touch in the
            photo, a hand on a hip, do not mix).

    Returns:
        [N, 3] colours.
    """
    from scipy.spatial import cKDTree

    dist, idx = cKDTree(points).query(points, k=SMOOTH_NEIGHBOURS + 1, distance_upper_bound=SMOOTH_RADIUS_M)
    near = np.isfinite(dist)  # (the point itself is always among them)
    idx = np.where(near, idx, 0)
    mean = (colors[idx] * near[..., None]).sum(1) / near.sum(1, keepdims=True)
    a = (SMOOTH_MASS / (mass.astype(np.float64) + SMOOTH_MASS))[:, None]
    return (1.0 - a) * colors + a * mean


def fit_photo(body: BodyModel, person: Person) -> tuple[SmplxPose, Camera]:
    """The body pose, placement and shape of a found person, and the crop's camera.

    The live fitter (:class:`streamer.tracking.fit.PoseFitter`) on one frame, no smoothing, then
    the first betas and the in-plane placement from the 2D landmarks (:func:`.shape.fit_shape`).
    Shared by the ``fit`` and ``lhm`` methods.
    """
    from ..tracking.fit import PoseFitter

    fitter = PoseFitter(body, smoothing=False, iterations=FIT_ITERATIONS)
    pose = fitter.fit(person.landmarks)
    lm = person.landmarks.pose
    if FIT_SHAPE and lm is not None and fitter.K is not None:
        pose = fit_shape(
            body, pose, lm.image, lm.visibility, np.asarray(fitter.K), np.asarray(fitter.viewmat)
        )
    H, W = person.mask.shape
    camera = Camera(
        K=torch.as_tensor(np.asarray(fitter.K), dtype=torch.float32),
        viewmat=torch.as_tensor(np.asarray(fitter.viewmat), dtype=torch.float32),
        width=W,
        height=H,
    )
    if lm is not None:
        # The landmarks alone leave what they do not see to the pose prior: a hand in a pocket
        # hangs straight from the elbow, outside the person, and became a sleeve-coloured stick.
        # (No turned starts: a still photo's landmarks do not lag behind a turn as a video's fit does.)
        refiner = SilhouetteRefiner.for_body(body, pose.betas, camera)
        pose = refiner.refine(
            pose,
            person.mask > 0.5,
            lm.image,
            lm.visibility,
            valid=person.valid,
            min_start_px2=FIT_TO_MASK_MIN_PX2,
            try_turns=False,
        )
    return pose, camera


def reconstruct_photo(
    rgb: np.ndarray,
    body: BodyModel | None = None,
    num_gaussians: int = NUM_GAUSSIANS,
    strict: bool = False,
    seed: int = 0,
    crop: tuple[float, float, float, float] | None = None,
    progress: Callable[[str], None] | None = None,
    search: Callable[[], Person] | None = None,
) -> Reconstruction:
    """Reconstruct an avatar from one photo.

    Args:
        rgb: the photo, [H, W, 3] uint8 RGB (:func:`.image.read_photo`).
        body: the body model (default: the built-in one).
        num_gaussians: how many Gaussians to sample on the body surface (the outline and loose-cloth
            discs come on top).
        strict: refuse photos with several people.
        seed: sampling seed (the result is deterministic for a seed).
        crop: a fixed 5:3 crop box (photo pixels) instead of one around the person.
        progress: called with each step's name when it starts.
        search: gives the person in ``rgb`` instead of :func:`.person.find_person` (which then takes
            no ``strict`` or ``crop``), e.g. a :class:`.person_search.PersonSearch`'s ``result``.

    Raises:
        ReconstructionError: no usable person (see :func:`.person.find_person`).
    """
    step = StepClock(progress)

    step("detect")
    body = (body or BodyModel.load()).to("cpu")
    person = search() if search is not None else find_person(rgb, strict=strict, crop=crop)
    if not person.full_body:
        warnings.warn(PART_BODY_WARNING, StreamerWarning, stacklevel=2)
    step("fit")
    pose, camera = fit_photo(body, person)
    K = camera.K.double().numpy()
    view = camera.viewmat.double().numpy()
    with torch.no_grad():
        rest_j = body.rest_joints(pose.betas)
        rest_v = body.shaped_vertices(pose.betas)
        A, joint_quats = skinning_transforms(body, pose, rest_j)  # [55, 4, 4], [55, 4]
        Mv = _blend(body.lbs_weights, A)
        posed = (Mv[:, :, :3] @ rest_v[:, :, None])[..., 0] + Mv[:, :, 3]
        faces = body.faces
        normals = vertex_normals(posed, faces)

    step("silhouette")
    R, t = view[:3, :3], view[:3, 3]
    posed_np, normals_np, faces_np = posed.double().numpy(), normals.double().numpy(), faces.numpy()
    mask = person.mask > 0.5
    off, wgt = outline_offsets(posed_np @ R.T + t, normals_np @ R.T, faces_np, K, mask)
    dominant_v = body.lbs_weights.argmax(1).numpy()
    rest_np = rest_v.double().numpy()
    rest_n = vertex_normals(rest_v, faces).double().numpy()
    eye_y = float(rest_j[JOINT_INDEX["left_eye"], 1])
    head_v = np.isin(dominant_v, [JOINT_INDEX[n] for n in ("head", "jaw", "left_eye", "right_eye")])
    face_v = head_v & (rest_n[:, 2] > 0.4) & (rest_np[:, 1] < eye_y + 0.03)
    hands_v = np.isin(dominant_v, list(HAND_JOINTS))
    # Sleeves are tight around the forearms: a mask reaching far past an arm is something else
    # (a pocket, a bag, the body behind), not cloth on the arm.
    forearm_v = np.isin(dominant_v, [JOINT_INDEX[n] for n in ("left_elbow", "right_elbow")])
    off = np.where(forearm_v, np.minimum(off, MAX_FOREARM_OFFSET_M), off)
    upward = np.isin(dominant_v, [JOINT_INDEX[n] for n in UPWARD_JOINTS]) & (
        (normals_np @ R.T)[:, 1] < -UPWARD_COS  # OpenCV camera: y points down
    )
    off = np.where(upward, np.minimum(off, MAX_UPWARD_OFFSET_M), off)
    offsets = spread_offsets(off, 4.0 * wgt, vertex_adjacency(faces_np, len(posed_np)), face_v | hands_v)
    facing = (normals_np @ R.T)[:, 2] > CROSS_SECTION_MIN_FACING  # facing away from the camera
    carried = cross_section_offsets(
        offsets,
        wgt > 0,
        rest_np,
        dominant_v,
        face_v | hands_v | head_v,
        fraction=CROSS_SECTION_FRACTION,
        receives=facing,
    )
    # The photo's own outline stays as measured: a carried offset that would push its vertex
    # outside the person mask (across a gap between the legs, say) is dropped.
    moved = posed_np + carried[:, None] * normals_np
    outside = ~sample_mask(mask, project(moved @ R.T + t, K))
    offsets = np.where(outside & (carried > offsets), offsets, carried)
    offsets = np.where(forearm_v | hands_v, np.minimum(offsets, MAX_FOREARM_OFFSET_M), offsets)
    off_posed = posed + torch.from_numpy(offsets).float()[:, None] * normals
    off_normals = vertex_normals(off_posed, faces)

    step("sample")
    gen = torch.Generator().manual_seed(seed)
    head_mask = head_face_mask(body)
    n_head = round(num_gaussians * HEAD_FRACTION)
    # Faces the camera sees get FRONT_DENSITY times the samples: detail where the photo has it.
    tri_v = off_posed[faces]
    centre = tri_v.mean(1).double().numpy() @ R.T + t
    fn = torch.linalg.cross(tri_v[:, 1] - tri_v[:, 0], tri_v[:, 2] - tri_v[:, 0]).double().numpy() @ R.T
    front = torch.from_numpy(
        ((fn * -centre).sum(1) / (np.linalg.norm(fn, axis=1) * np.linalg.norm(centre, axis=1) + 1e-12)) > 0.1
    )
    rest_area = 0.5 * torch.linalg.cross(
        rest_v[faces][:, 1] - rest_v[faces][:, 0], rest_v[faces][:, 2] - rest_v[faces][:, 0]
    ).norm(dim=-1)
    face_weight = torch.where(front, float(FRONT_DENSITY), 1.0)
    fids, barys, spacings = [], [], []
    for group, count in ((~head_mask, num_gaussians - n_head), (head_mask, n_head)):
        if count:
            ids = torch.nonzero(group)[:, 0]
            ids = torch.cat([ids] + [torch.nonzero(group & front)[:, 0]] * (FRONT_DENSITY - 1))
            f, b, _ = sample_surface(rest_v, faces, ids, count, gen)
            density = (
                count * face_weight[f] / (face_weight[group] * rest_area[group]).sum()
            )  # samples per m^2
            fids.append(f)
            barys.append(b)
            spacings.append(density.rsqrt())
    fidx, bary, spacing = torch.cat(fids), torch.cat(barys), torch.cat(spacings)
    tri = faces[fidx]
    means_p = (off_posed[tri] * bary[..., None]).sum(1)
    normal_p = (off_normals[tri] * bary[..., None]).sum(1)
    normal_p = normal_p / normal_p.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    weights = (body.lbs_weights[tri] * bary[..., None]).sum(1)
    weights = weights / weights.sum(1, keepdim=True)

    def areas(v: torch.Tensor) -> torch.Tensor:
        tv = v[faces]
        return 0.5 * torch.linalg.cross(tv[:, 1] - tv[:, 0], tv[:, 2] - tv[:, 0]).norm(dim=-1)

    stretch = (areas(off_posed) / areas(posed).clamp_min(1e-12)).sqrt().clamp(0.7, 3.0)[fidx]
    sigma_t = spacing * TANGENT_SIGMA * stretch
    if KNN_SIGMA > 0:
        # Random samples leave gaps and clumps: size each disc by its distance to its neighbours.
        from scipy.spatial import cKDTree

        mp_np = means_p.double().numpy()
        dist, _ = cKDTree(mp_np).query(mp_np, k=KNN_K + 1)
        local = torch.from_numpy(dist[:, 1:].mean(1)).float()
        sigma_t = torch.minimum(torch.maximum(KNN_SIGMA * local, 0.5 * sigma_t), 2.0 * sigma_t)
    scales = torch.stack([sigma_t, sigma_t, spacing * NORMAL_SIGMA], -1)

    step("colour")
    mp = means_p.double().numpy()
    cam_pts, cam_n = mp @ R.T + t, normal_p.double().numpy() @ R.T
    pix = project(cam_pts, K)
    q_posed = matrix_to_quat(tangent_frames(normal_p))
    posed_g = Gaussians(
        means=means_p.float().contiguous(),
        quats=q_posed.float().contiguous(),
        scales=scales.float().contiguous(),
        opacities=torch.full((len(mp),), OPACITY),
        colors=torch.zeros(len(mp), 3),
    )
    depth = rendered_depth(posed_g, camera, cam_pts[:, 2])
    seen = visible(cam_pts, cam_n, pix, mask, depth)
    colors = np.zeros((len(mp), 3))
    colors[seen] = sample_image(person.rgb, pix[seen])

    # Canonical positions (needed by the fill) from the inverse blended transforms.
    canon, q_canon = unskin_gaussians(means_p, q_posed.float(), weights, A, joint_quats)
    canon_np = canon.double().numpy()
    dominant = weights.argmax(1).numpy()
    parts = body_parts(dominant)
    head_j = rest_j[JOINT_INDEX["head"]].numpy()
    is_head = parts == 1
    top = canon_np[:, 1] > eye_y + 0.05
    hair_region = is_head & (top | (canon_np[:, 2] < head_j[2] - 0.01))
    hair_source = is_head & seen & (canon_np[:, 1] > eye_y + HAIR_SOURCE_M)
    where = fill_positions(canon_np, pix, cam_pts[:, 2], float(K[0, 0]), parts)
    outline = outline_band(mask & person.valid, OUTLINE_PX if COVER_GAPS else 0, person.valid)
    # The outline's blend of hair and background (a bright sky) can outnumber the hair itself:
    # leave it out while at least half the seen top of the head lies inside (short hair is mostly
    # outline, and keeps it).
    inner = hair_source & ~sample_mask(outline, pix)
    if inner.sum() >= HAIR_INNER_SHARE * hair_source.sum():
        hair_source = inner
    # not the hip behind a hand, nor the outline's blend of person and background
    sources = fill_sources(pix, cam_pts[:, 2], parts, seen, mask.shape, blended=outline)
    colors = np.where(seen[:, None], colors, fill_unseen(where, colors, sources, parts, hair_region, hair_source))
    # Then fit the colours of everything the photo shows (up to the mask's edge) to the photo.
    cos = facing_cos(cam_pts, cam_n)
    active = visible(cam_pts, cam_n, pix, mask, depth, erode_px=REFINE_MASK_ERODE_PX) | (cos > REFINE_FACING)
    # the outline's discs take the photo's edge colours instead of the edge-on surface there
    active &= ~(sample_mask(outline, pix) & (np.abs(cos) < EDGE_ON_COS))
    if COVER_GAPS:  # discs for the person's pixels the surface does not reach, fitted with the rest
        extra, extra_w = cover_gaps(
            posed_g,
            weights,
            seen,
            pix,
            depth,
            mask & person.valid,
            person.rgb,
            camera,
            OPACITY,
            outline=outline,
        )
        if len(extra):
            extra_canon, extra_q = unskin_gaussians(extra.means, extra.quats, extra_w, A, joint_quats)
            canon, q_canon = torch.cat([canon, extra_canon]), torch.cat([q_canon, extra_q])
            weights = torch.cat([weights, extra_w])
            scales = torch.cat([scales, extra.scales])
            colors = np.concatenate([colors, extra.colors.double().numpy()])
            active = np.concatenate([active, np.ones(len(extra), bool)])
            posed_g = Gaussians.concat([posed_g, extra.replace(colors=torch.zeros(len(extra), 3))])
    colors, mass = refine_colours(posed_g, colors, active, person.rgb / 255.0, mask, camera)
    colors = smooth_weak_colours(colors, mass, canon.double().numpy())

    step("unpose")
    gaussians = Gaussians(
        means=canon.float().contiguous(),
        quats=q_canon.float().contiguous(),
        scales=scales.float().contiguous(),
        opacities=torch.full((len(canon),), OPACITY),
        colors=torch.from_numpy(np.clip(colors, 0, 1)).float().contiguous(),
    )
    avatar = Avatar(gaussians=gaussians, skin_weights=weights.float().contiguous(), betas=pose.betas.clone())
    timings = step.done()
    return Reconstruction(
        avatar=avatar,
        pose=pose,
        camera=camera,
        person=person,
        seen_fraction=float(seen.mean()),
        timings_s=timings,
    )
