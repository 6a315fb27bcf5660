"""The LHM training loop: AdamW, gradient clipping, bf16 autocast on CUDA, atomic checkpoints, resume.

Per step, for every sample of the batch: the network predicts Gaussians on the canonical
big-pose query points from the source images; :func:`..to_avatar.canonical_means_quats` takes
them to the zero pose (with the subject's betas); :func:`streamer.avatar.lbs.skin_gaussians`
poses them into each target frame; :func:`.render.render_train` renders them with the frame's
camera on white; :mod:`.losses` compares render and frame and adds the regularisers.

A run folder ``RUN`` holds:

===================================  ==========================================================
``train_state.pt``                   network + optimiser state, step, options (resume from it)
``model.safetensors``                the network's state dict (inference checkpoint)
``config.json``                      our configuration marker (:func:`..weights.write_config_marker`)
``sapiens_1b_epoch_173_torchscript.pt2``  the body encoder used: for ``tiny`` its random
                                     patchify stand-in (TorchScript); for real sizes a link
                                     to the user's Sapiens file
``log.jsonl``                        one line of loss terms per step
===================================  ==========================================================

so ``RUN`` plus an ``smplx/SMPLX_NEUTRAL.npz`` is a weights folder for
``streamer reconstruct --method lhm --weights RUN``. Checkpoints are written to a temporary
file and renamed, so an interrupted run never leaves a broken one.
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch

from ....avatar.gaussians import Gaussians
from ....avatar.lbs import skin_gaussians
from ....body.model import BodyModel
from ....errors import InputError
from ....fileio import atomic_path
from ..body_encoder import BodyEncoder, PatchStandInEncoder, load_sapiens_torchscript
from ..checkpoint import save_checkpoint
from ..config import LHMConfig, get_config
from ..model import LHMNetwork
from ..query_points import big_pose_transforms, sample_query_points
from ..to_avatar import canonical_means_quats
from ..weights import SAPIENS_FILENAME, write_config_marker
from .data import LHMTrainData, collate
from .losses import (
    LossWeights,
    Perceptual,
    acap_loss,
    asap_loss,
    photometric_terms,
    point_weights,
    total_loss,
)
from .render import render_train

STATE_FILENAME = "train_state.pt"
LOG_FILENAME = "log.jsonl"


@dataclass
class TrainOptions:
    """What a run does (saved in the checkpoint; ``steps`` may grow on resume)."""

    config: str = "tiny"
    steps: int = 200
    lr: float = 1e-3
    weight_decay: float = 0.01
    batch: int = 2
    targets: int = 2
    points: int = 1024
    target_size: int = 64
    grad_clip: float = 1.0
    warmup: int = 10
    checkpoint_every: int = 100
    seed: int = 0
    device: str = "auto"
    workers: int = 0
    weights: LossWeights = field(default_factory=LossWeights)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainOptions:
        data = dict(data)
        data["weights"] = LossWeights(**data.get("weights", {}))
        return cls(**data)


@dataclass
class TrainResult:
    """What :func:`train` did: ``losses`` has one total per step run in this call."""

    run_dir: Path
    start_step: int
    step: int
    losses: list[float]
    seconds: float
    device: str


def _atomic_torch_save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def tiny_body_encoder(config: LHMConfig, seed: int) -> torch.nn.Module:
    """The seeded random patchify stand-in for Sapiens, scripted (saved with the run)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 12345)
        stand_in = PatchStandInEncoder.for_config(config).eval()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*torch.jit.*")
        scripted: torch.nn.Module = torch.jit.script(stand_in)
    return scripted


def export_inference_folder(network: LHMNetwork, run_dir: Path) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``run_dir`` (atomically)."""
    with atomic_path(run_dir / "model.safetensors") as tmp:  # readable as a new file would be, not 0o600
        save_checkpoint(network, tmp)
    write_config_marker(run_dir, network.config)
    return run_dir / "model.safetensors"


def _resolve_device(device: str) -> torch.device:
    from ..infer import resolve_device

    return resolve_device(device)


def _lr_at(step: int, opts: TrainOptions) -> float:
    return opts.lr * min(1.0, (step + 1) / max(1, opts.warmup))


def train(
    data_dir: str | Path,
    run_dir: str | Path,
    opts: TrainOptions,
    body: BodyModel,
    resume: bool = False,
    sapiens: str | Path | None = None,
    dinov2: str | Path | None = None,
    progress: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train (or continue training) an LHM network.

    Args:
        data_dir: training data (:mod:`.data`).
        run_dir: the run folder (created).
        opts: options; on ``resume`` the saved ones are used except ``steps``, ``device`` and
            ``checkpoint_every``.
        body: the body model of the data's SMPL-X parameters (CPU).
        resume: continue from ``run_dir/train_state.pt``.
        sapiens: the user's Sapiens TorchScript (required for every config but ``tiny``).
        dinov2: optional DINOv2 state dict (``.pth``/``.safetensors``) to initialise the head
            encoder's ``encoder.model`` (ignored on resume).
        progress: called after every step with (step, loss terms).

    Raises:
        InputError: bad options, a missing Sapiens file, or a checkpoint that does not match.
    """
    run = Path(run_dir).expanduser()
    state_path = run / STATE_FILENAME
    state: dict[str, Any] | None = None
    if resume:
        if not state_path.is_file():
            raise InputError(f"--resume: no {STATE_FILENAME} in {run}")
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        saved = TrainOptions.from_json(state["options"])
        opts = dataclasses.replace(saved, steps=opts.steps, device=opts.device, checkpoint_every=opts.checkpoint_every)
    base = get_config(opts.config)
    if opts.points < 4 or opts.batch < 1 or opts.targets < 1 or opts.steps < 0 or opts.lr <= 0:
        raise InputError("train-lhm: need --points >= 4, --batch >= 1, --targets >= 1, --steps >= 0, --lr > 0")
    config = dataclasses.replace(base, n_query_points=opts.points)
    device = _resolve_device(opts.device)
    run.mkdir(parents=True, exist_ok=True)

    # body encoder (frozen): the tiny stand-in, or the user's Sapiens TorchScript
    enc_path = run / SAPIENS_FILENAME
    if config.name == "tiny":
        if resume and enc_path.is_file():
            backbone = load_sapiens_torchscript(enc_path)
        else:
            backbone = tiny_body_encoder(config, opts.seed)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*torch.jit.*")
                torch.jit.save(backbone, str(enc_path))  # type: ignore[no-untyped-call]
    else:
        src = Path(sapiens).expanduser() if sapiens is not None else (enc_path if resume and enc_path.exists() else None)
        if src is None:
            raise InputError(
                f"train-lhm --config {config.name} needs --sapiens FILE (your Sapiens-1B TorchScript, "
                f"{SAPIENS_FILENAME}); only 'tiny' has a built-in stand-in"
            )
        backbone = load_sapiens_torchscript(src, map_location=device)
        if not enc_path.exists() and src.resolve() != enc_path.resolve():
            enc_path.symlink_to(src.resolve())

    torch.manual_seed(opts.seed)
    network = LHMNetwork(config)
    if state is not None:
        network.load_state_dict(state["network"])
    elif dinov2 is not None:
        from ..checkpoint import read_state_dict

        sd = read_state_dict(dinov2)
        sd = {k.removeprefix("encoder.model."): v for k, v in sd.items()}
        result = network.encoder.model.load_state_dict(sd, strict=False)
        if result.missing_keys:
            raise InputError(f"--dinov2 {dinov2}: missing {len(result.missing_keys)} keys, e.g. {result.missing_keys[:3]}")
    network.attach_body_encoder(BodyEncoder.for_config(backbone, config))
    network.to(device).train()
    optimizer = torch.optim.AdamW(network.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    step = 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
        torch.set_rng_state(state["torch_rng"])

    data = LHMTrainData(
        data_dir, body, config.body_resolution, config.dino.input_resolution,
        targets=opts.targets, target_size=opts.target_size,
        samples_per_epoch=max(1, opts.steps * opts.batch), seed=opts.seed,
    )
    query = sample_query_points(data.body, config.n_query_points, seed=0)  # as LHMReconstructor
    big = big_pose_transforms(data.body)
    qd = query.to(device)
    big_d = (big[0].to(device), big[1].to(device))
    reg_w = point_weights(len(query), query.n_body, opts.weights.head_weight, device)
    perceptual = Perceptual(device) if opts.weights.lpips > 0 else None
    background = torch.ones(3, device=device)
    body_d = data.body.to(device)

    class _Offset(torch.utils.data.Sampler):  # type: ignore[type-arg]
        """Sample indices from ``start`` on, so a resumed run sees new samples."""

        def __iter__(self):  # type: ignore[no-untyped-def]
            return iter(range(step * opts.batch, len(data)))

        def __len__(self) -> int:
            return max(0, len(data) - step * opts.batch)

    loader = torch.utils.data.DataLoader(
        data, batch_size=opts.batch, sampler=_Offset(), collate_fn=collate, num_workers=opts.workers
    )
    start, losses = step, []
    log = (run / LOG_FILENAME).open("a")
    t0 = time.perf_counter()

    def checkpoint() -> None:
        _atomic_torch_save(
            {
                "network": {k: v.detach().cpu() for k, v in network.state_dict().items()},
                "optimizer": optimizer.state_dict(),
                "step": step,
                "options": opts.to_json(),
                "config": config.name,
                "n_query_points": config.n_query_points,
                "torch_rng": torch.get_rng_state(),
            },
            state_path,
        )
        export_inference_folder(network, run)

    try:
        for batch in loader:
            if step >= opts.steps:
                break
            network.set_training_step(step)
            for g in optimizer.param_groups:
                g["lr"] = _lr_at(step, opts)
            attrs = network(
                batch["body"].to(device), batch["head"].to(device), qd.points, upper_body=qd.upper_body, precision="auto"
            )
            rgbs, alphas, images, masks = [], [], [], []
            for b, targets in enumerate(batch["targets"]):
                betas = batch["betas"][b].to(device)
                means, quats = canonical_means_quats(attrs, qd, body_d, betas, index=b, big_pose=big_d)
                for tgt in targets:
                    posed_m, posed_q = skin_gaussians(
                        means, quats, qd.skin_weights, tgt["transforms"].to(device), tgt["joint_quats"].to(device)
                    )
                    gs = cast(Gaussians, object.__new__(Gaussians))  # skip validation: tensors carry gradients
                    gs.means, gs.quats, gs.scales = posed_m, posed_q, attrs.scales[b]
                    gs.opacities, gs.colors = attrs.opacities[b], attrs.colors[b]
                    rgb, alpha = render_train(gs, tgt["camera"], background)
                    rgbs.append(rgb.permute(2, 0, 1))
                    alphas.append(alpha)
                    images.append(tgt["image"].to(device))
                    masks.append(tgt["mask"].to(device))
            terms = photometric_terms(torch.stack(rgbs), torch.stack(alphas), torch.stack(images), torch.stack(masks), perceptual)
            terms["asap"] = asap_loss(attrs.scales, reg_w)
            terms["acap"] = acap_loss(attrs.offsets, opts.weights.acap_margin, reg_w)
            loss = total_loss(terms, opts.weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            if opts.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(network.parameters(), opts.grad_clip)
            optimizer.step()
            step += 1
            values = {k: float(v.detach()) for k, v in terms.items()} | {"loss": float(loss.detach())}
            losses.append(values["loss"])
            log.write(json.dumps({"step": step, **values}) + "\n")
            if progress is not None:
                progress(step, values)
            if opts.checkpoint_every > 0 and step % opts.checkpoint_every == 0:
                checkpoint()
        checkpoint()
    finally:
        log.close()
    return TrainResult(
        run_dir=run, start_step=start, step=step, losses=losses, seconds=time.perf_counter() - t0, device=str(device)
    )


__all__ = ["TrainOptions", "TrainResult", "export_inference_folder", "tiny_body_encoder", "train"]
