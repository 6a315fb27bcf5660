"""Training data for LHM: one folder per subject (video), and a synthetic maker.

Layout of a data root (every subject folder holding ``subject.json`` is used)::

    DATA/
      subject_000/
        subject.json   {"format": "streamer-lhm-train", "version": 1, "frames": T,
                        "source_frames": [i, ...]}       frames usable as the network's input
        frames/00000.png ...   RGB, 8 bit, T of them, any size (all the same size)
        masks/00000.png  ...   person mask, 8 bit grey (255 = person), same size as the frames
        smplx.npz      SMPL-X parameters per frame (:class:`~streamer.body.pose.SmplxPose`
                       fields, each [T, ...]; ``betas`` [T, B] or [B]: one shape per subject)
        cameras.npz    ``K`` [T, 3, 3] pixels (OpenCV, pixel centres at +0.5),
                       ``viewmat`` [T, 4, 4] world -> camera, ``size`` [T, 2] (width, height)

A training sample is one subject: a source frame (the input photo) and ``targets`` other frames
of the same subject (the supervision). The source frame becomes LHM's two input images as at
inference (:mod:`..preprocess`): the person on white in a 5:3 crop around the mask, padded
square and resized for the body encoder, and a square head crop for the head encoder. The head
box comes from the SMPL-X parameters (the head joint projected through the frame's camera), so
no face detector is needed. Targets are frames composited on white with their masks, resized so
their longer side is ``target_size`` (intrinsics scaled to match).

:func:`make_synthetic` writes such a folder from the built-in body: demo avatars recoloured into
"subjects", posed by the demo motion and rendered from several views (CPU renderer).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ....avatar.avatar import skinning_transforms
from ....body.joints import JOINT_INDEX
from ....body.model import BodyModel
from ....body.pose import FIELDS, SmplxPose
from ....errors import InputError
from ....render.camera import Camera
from ..preprocess import _resize, body_image, crop_square

FORMAT = "streamer-lhm-train"
VERSION = 1
#: Head crop: a box of this many metres around the head centre, which sits this far above the
#: head joint in the rest pose (metres, body frame).
HEAD_BOX_M = 0.34
HEAD_CENTRE_ABOVE_JOINT_M = 0.09
#: Person crop: margin around the mask's box (fraction of its height) before the 5:3 cut.
BODY_MARGIN = 0.05


class TrainDataError(InputError):
    """A training-data folder that is missing files or holds inconsistent ones."""


@dataclass
class Subject:
    """One subject folder, loaded (frames are read lazily)."""

    root: Path
    n_frames: int
    source_frames: list[int]
    poses: SmplxPose  # [T]
    betas: Tensor  # [B]
    K: Tensor  # [T, 3, 3]
    viewmat: Tensor  # [T, 4, 4]
    size: np.ndarray  # [T, 2] (width, height)

    def frame(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """RGB uint8 [H, W, 3] and mask float32 [H, W] in [0, 1] of frame ``t``."""
        rgb = _read_png(self.root / "frames" / f"{t:05d}.png", grey=False)
        mask = _read_png(self.root / "masks" / f"{t:05d}.png", grey=True).astype(np.float32) / 255.0
        w, h = (int(v) for v in self.size[t])
        if rgb.shape[:2] != (h, w) or mask.shape != (h, w):
            raise TrainDataError(f"{self.root}: frame {t} is {rgb.shape[1]}x{rgb.shape[0]}, mask "
                                 f"{mask.shape[1]}x{mask.shape[0]}, cameras.npz says {w}x{h}")
        return rgb, mask

    def camera(self, t: int) -> Camera:
        w, h = (int(v) for v in self.size[t])
        return Camera(K=self.K[t], viewmat=self.viewmat[t], width=w, height=h)


def _read_png(path: Path, grey: bool) -> np.ndarray:
    """An 8-bit PNG as RGB [H, W, 3] or grey [H, W] uint8; a clear error when missing or unreadable."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR)
    if img is None:
        raise TrainDataError(f"{path}: missing or not a readable image")
    return img if grey else np.ascontiguousarray(img[..., ::-1])


def _write_png(path: Path, image: np.ndarray) -> None:
    import cv2

    if not cv2.imwrite(str(path), image if image.ndim == 2 else np.ascontiguousarray(image[..., ::-1])):
        raise OSError(f"could not write {path}")


def _need(path: Path, what: str) -> Path:
    if not path.is_file():
        raise TrainDataError(f"{path.parent}: missing {path.name} ({what}); see the data format in "
                             "streamer/reconstruct/lhm/train/data.py")
    return path


def load_subject(root: str | Path) -> Subject:
    """Read and check one subject folder.

    Raises:
        TrainDataError: naming the missing file or the inconsistency.
    """
    root = Path(root)
    try:
        meta = json.loads(_need(root / "subject.json", "format, frame count, source frames").read_text())
    except ValueError as exc:
        raise TrainDataError(f"{root / 'subject.json'}: not valid json ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise TrainDataError(f"{root / 'subject.json'}: not a {FORMAT} file")
    t = meta.get("frames")
    if not isinstance(t, int) or t < 2:
        raise TrainDataError(f"{root / 'subject.json'}: 'frames' must be an integer >= 2, got {t!r}")
    sources = meta.get("source_frames", [0])
    if not isinstance(sources, list) or not sources or not all(isinstance(i, int) and 0 <= i < t for i in sources):
        raise TrainDataError(f"{root / 'subject.json'}: 'source_frames' must list frame indices below {t}")
    for i in range(t):
        _need(root / "frames" / f"{i:05d}.png", f"frame {i} of {t}")
        _need(root / "masks" / f"{i:05d}.png", f"mask {i} of {t}")
    with np.load(_need(root / "smplx.npz", "SMPL-X parameters per frame")) as z:
        params = {k: z[k] for k in z.files}
    with np.load(_need(root / "cameras.npz", "K, viewmat and size per frame")) as z:
        cams = {k: z[k] for k in z.files}
    missing = [k for k in ("K", "viewmat", "size") if k not in cams]
    if missing:
        raise TrainDataError(f"{root / 'cameras.npz'}: missing arrays {missing}")
    if cams["K"].shape != (t, 3, 3) or cams["viewmat"].shape != (t, 4, 4) or cams["size"].shape != (t, 2):
        raise TrainDataError(
            f"{root / 'cameras.npz'}: expected K [{t}, 3, 3], viewmat [{t}, 4, 4], size [{t}, 2]; got "
            f"{cams['K'].shape}, {cams['viewmat'].shape}, {cams['size'].shape}"
        )
    betas = np.asarray(params.pop("betas", np.zeros(10)), np.float32)
    betas = betas[0] if betas.ndim == 2 else betas
    unknown = sorted(set(params) - set(FIELDS))
    if unknown:
        raise TrainDataError(f"{root / 'smplx.npz'}: unknown arrays {unknown}")
    try:
        for k, v in params.items():
            if v.shape[0] != t:
                raise TrainDataError(f"{root / 'smplx.npz'}: {k} has {v.shape[0]} frames, subject.json says {t}")
        zeros = SmplxPose.zeros(batch=t, num_betas=len(betas))
        poses = SmplxPose.from_dict(
            {**zeros.to_dict(), **params, "betas": np.broadcast_to(betas, (t, len(betas))).copy()}
        )
    except TrainDataError:
        raise
    except (InputError, ValueError, IndexError) as exc:  # PoseError or numpy shape errors
        raise TrainDataError(f"{root / 'smplx.npz'}: {exc}") from None
    return Subject(
        root=root,
        n_frames=t,
        source_frames=list(sources),
        poses=poses,
        betas=torch.from_numpy(betas),
        K=torch.from_numpy(cams["K"].astype(np.float32)),
        viewmat=torch.from_numpy(cams["viewmat"].astype(np.float32)),
        size=cams["size"].astype(np.int64),
    )


def find_subjects(data_dir: str | Path) -> list[Path]:
    """Subject folders under ``data_dir`` (itself, or its children holding ``subject.json``)."""
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise TrainDataError(f"training data folder not found: {root}")
    if (root / "subject.json").is_file():
        return [root]
    found = sorted(p for p in root.iterdir() if (p / "subject.json").is_file())
    if not found:
        raise TrainDataError(
            f"{root}: no subject folders (folders with subject.json); make synthetic data with "
            "'streamer train-lhm --make-synthetic DIR' or see streamer/reconstruct/lhm/train/data.py"
        )
    return found


def head_box(body: BodyModel, pose: SmplxPose, camera: Camera, rest_joints: Tensor) -> tuple[float, float, float, float]:
    """Square head box (x0, y0, x1, y1) in frame pixels, from the posed head joint."""
    with torch.no_grad():
        A, _ = body.joint_transforms(pose, rest_joints=rest_joints)
        h = JOINT_INDEX["head"]
        centre_rest = rest_joints[h] + torch.tensor([0.0, HEAD_CENTRE_ABOVE_JOINT_M, 0.0])
        centre = A[h, :3, :3] @ centre_rest + A[h, :3, 3]
        c = camera.viewmat[:3, :3] @ centre + camera.viewmat[:3, 3]
        z = float(c[2])
        if z <= 1e-3:
            raise TrainDataError("the head is behind the source camera")
        K = camera.K
        u, v = float(K[0, 0] * c[0] / z + K[0, 2]), float(K[1, 1] * c[1] / z + K[1, 2])
        half = 0.5 * HEAD_BOX_M * float(K[1, 1]) / z
    return u - half, v - half, u + half, v + half


def person_crop(rgb: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A 5:3 (height:width) crop around the mask, padded with white / zero mask outside the frame."""
    ys, xs = np.nonzero(mask > 0.5)
    if len(ys) == 0:
        raise TrainDataError("source frame mask is empty")
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    hgt = (y1 - y0) * (1 + 2 * BODY_MARGIN)
    wid = max(x1 - x0, hgt * 3 / 5)
    hgt = max(hgt, wid * 5 / 3)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    bx0, by0 = round(float(cx - wid / 2)), round(float(cy - hgt / 2))
    bw, bh = max(1, round(float(wid))), max(1, round(float(hgt)))
    H, W = mask.shape
    out_rgb = np.full((bh, bw, 3), 255, np.uint8)
    out_mask = np.zeros((bh, bw), np.float32)
    sx0, sy0, sx1, sy1 = max(bx0, 0), max(by0, 0), min(bx0 + bw, W), min(by0 + bh, H)
    out_rgb[sy0 - by0 : sy1 - by0, sx0 - bx0 : sx1 - bx0] = rgb[sy0:sy1, sx0:sx1]
    out_mask[sy0 - by0 : sy1 - by0, sx0 - bx0 : sx1 - bx0] = mask[sy0:sy1, sx0:sx1]
    return out_rgb, out_mask


def _to_tensor(rgb: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float() / 255.0


class LHMTrainData(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Samples (source images, target frames) over every subject of a data folder.

    Args:
        data_dir: a subject folder or a folder of them.
        body: the body model the SMPL-X parameters refer to.
        body_side, head_side: LHM input sides (``config.body_resolution``, ``config.dino.input_resolution``).
        targets: target frames per sample (drawn among the subject's frames, the source included).
        target_size: longer side of the targets, pixels (frames are resized; 0 keeps them).
        samples_per_epoch: length of the dataset (samples are drawn at random, seeded by index).
    """

    def __init__(
        self,
        data_dir: str | Path,
        body: BodyModel,
        body_side: int,
        head_side: int,
        targets: int = 2,
        target_size: int = 64,
        samples_per_epoch: int = 1000,
        seed: int = 0,
    ) -> None:
        self.subjects = [load_subject(p) for p in find_subjects(data_dir)]
        self.body = body.to("cpu")
        self.body_side, self.head_side = body_side, head_side
        self.targets, self.target_size = targets, target_size
        self.samples_per_epoch, self.seed = samples_per_epoch, seed
        self.rest = [self.body.rest_joints(s.betas) for s in self.subjects]
        for s in self.subjects:
            if s.betas.numel() > self.body.num_betas:
                raise TrainDataError(f"{s.root}: {s.betas.numel()} betas, the body model has {self.body.num_betas}")

    def __len__(self) -> int:
        return self.samples_per_epoch

    def source_images(self, subject: int, t: int) -> tuple[Tensor, Tensor]:
        """LHM's body [3, S, S] and head [3, S', S'] images of frame ``t``."""
        s = self.subjects[subject]
        rgb, mask = s.frame(t)
        body = body_image(*person_crop(rgb, mask), self.body_side)
        alpha = torch.from_numpy(mask)[None]
        on_white = _to_tensor(rgb) * alpha + (1 - alpha)
        box = head_box(self.body, s.poses[t], s.camera(t), self.rest[subject])
        head = _resize(crop_square(on_white, box), self.head_side)
        return body, head

    def target(self, subject: int, t: int) -> dict[str, object]:
        """Frame ``t`` on white [3, h, w], its mask [h, w], camera and skinning transforms."""
        s = self.subjects[subject]
        rgb, mask = s.frame(t)
        img, m = _to_tensor(rgb), torch.from_numpy(mask)
        cam = s.camera(t)
        if self.target_size and max(cam.width, cam.height) != self.target_size:
            scale = self.target_size / max(cam.width, cam.height)
            w, h = max(1, round(cam.width * scale)), max(1, round(cam.height * scale))
            img = F.interpolate(img[None], size=(h, w), mode="area")[0]
            m = F.interpolate(m[None, None], size=(h, w), mode="area")[0, 0]
            K = cam.K.clone()
            K[0] *= w / cam.width
            K[1] *= h / cam.height
            cam = Camera(K=K, viewmat=cam.viewmat, width=w, height=h)
        img = img * m[None] + (1 - m[None])
        with torch.no_grad():
            A, Q = skinning_transforms(self.body, s.poses[t], self.rest[subject])
        return {"image": img, "mask": m, "camera": cam, "transforms": A, "joint_quats": Q}

    def __getitem__(self, index: int) -> dict[str, object]:
        gen = np.random.default_rng([self.seed, index])
        k = int(gen.integers(len(self.subjects)))
        s = self.subjects[k]
        src = int(gen.choice(s.source_frames))
        tgt = gen.choice(s.n_frames, size=min(self.targets, s.n_frames), replace=False)
        body, head = self.source_images(k, src)
        return {
            "subject": k,
            "source": src,
            "body": body,
            "head": head,
            "betas": s.betas,
            "targets": [self.target(k, int(t)) for t in tgt],
        }


def collate(items: list[dict[str, object]]) -> dict[str, object]:
    """Stack the input images; keep the per-sample targets as lists."""
    return {
        "body": torch.stack([i["body"] for i in items]),  # type: ignore[misc]
        "head": torch.stack([i["head"] for i in items]),  # type: ignore[misc]
        "betas": [i["betas"] for i in items],
        "targets": [i["targets"] for i in items],
        "subject": [i["subject"] for i in items],
    }


# -- synthetic data ---------------------------------------------------------------------------

#: Colour variations of the demo avatar, one per synthetic subject (RGB channel permutation, tint).
_VARIANTS: tuple[tuple[tuple[int, int, int], tuple[float, float, float]], ...] = (
    ((0, 1, 2), (1.0, 1.0, 1.0)),
    ((2, 0, 1), (0.9, 1.0, 0.8)),
    ((1, 2, 0), (1.0, 0.8, 0.9)),
    ((2, 1, 0), (0.8, 0.9, 1.0)),
)


def make_synthetic(
    out_dir: str | Path,
    body: BodyModel,
    subjects: int = 2,
    poses: int = 4,
    views: int = 4,
    size: int = 64,
    gaussians: int = 20_000,
    seed: int = 0,
) -> list[Path]:
    """Render training subjects of the built-in body into ``out_dir`` (the format above).

    Each subject is the demo avatar with its own colours and body shape, in ``poses`` poses of
    the demo motion (the first is the relaxed stance at the start), seen from ``views`` cameras
    spread around it (the first faces the front). Source frames: the front views.

    Returns:
        the subject folders written.
    """
    from ....avatar.demo import build_demo_avatar
    from ....render.cpu import CpuRenderer
    from ....tracking.demo_motion import demo_motion

    if subjects < 1 or poses < 1 or views < 1 or poses * views < 2 or size < 16:
        raise InputError("make_synthetic: need >= 1 subject, >= 2 frames per subject and size >= 16")
    body = body.to("cpu")
    out = Path(out_dir).expanduser()
    motion = demo_motion().poses
    picks = np.linspace(0, len(motion) - 1, poses).round().astype(int)
    renderer = CpuRenderer()
    base = build_demo_avatar(body, num_gaussians=gaussians, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    rest_verts = body.v_template
    lo, hi = rest_verts.min(0).values, rest_verts.max(0).values
    centre = (lo + hi) / 2
    fov = 30.0
    dist = float(hi[1] - lo[1]) * 0.62 / math.tan(math.radians(fov) / 2)  # whole body plus raised arms
    written = []
    for k in range(subjects):
        perm, tint = _VARIANTS[k % len(_VARIANTS)]
        betas = torch.zeros(body.num_betas)
        if k:
            betas[:2] = (torch.rand(2, generator=gen) - 0.5) * 2.0
        colors = (base.gaussians.colors[:, list(perm)] * torch.tensor(tint)).clamp(0, 1)
        avatar = type(base)(gaussians=base.gaussians.replace(colors=colors), skin_weights=base.skin_weights, betas=betas)
        folder = out / f"subject_{k:03d}"
        (folder / "frames").mkdir(parents=True, exist_ok=True)
        (folder / "masks").mkdir(parents=True, exist_ok=True)
        frames: list[SmplxPose] = []
        Ks, views_m, sizes, sources = [], [], [], []
        for p in picks:
            pose = motion[int(p)].replace(betas=betas.clone())
            posed = avatar.pose(body, pose)
            assert not isinstance(posed, list)
            for v in range(views):
                az = 2 * math.pi * v / views
                eye = (centre + dist * torch.tensor([math.sin(az), 0.0, math.cos(az)])).tolist()
                cam = Camera.look_at(eye, centre.tolist(), size, size, fov)
                rgb, alpha = renderer.render(posed, cam, (1.0, 1.0, 1.0))
                i = len(frames)
                _write_png(folder / "frames" / f"{i:05d}.png", (rgb.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8))
                _write_png(folder / "masks" / f"{i:05d}.png", (alpha.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8))
                frames.append(pose)
                Ks.append(cam.K.numpy())
                views_m.append(cam.viewmat.numpy())
                sizes.append((size, size))
                if v == 0:
                    sources.append(i)
        stacked = SmplxPose.stack(frames).to_dict()
        stacked["betas"] = betas.numpy()
        np.savez(folder / "smplx.npz", **stacked)
        np.savez(folder / "cameras.npz", K=np.stack(Ks), viewmat=np.stack(views_m), size=np.asarray(sizes, np.int64))
        (folder / "subject.json").write_text(
            json.dumps({"format": FORMAT, "version": VERSION, "frames": len(frames), "source_frames": sources}, indent=2) + "\n"
        )
        written.append(folder)
    return written
