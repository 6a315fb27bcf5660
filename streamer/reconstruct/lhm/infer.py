"""The ``lhm`` reconstruction method: one photo -> avatar with the user's LHM weights.

Steps (each timed in :attr:`LHMReconstruction.timings_s`):

1. ``detect``: the person, mask, landmarks and 5:3 crop (shared with the ``fit`` method);
2. ``fit``: pose, camera and betas from the landmarks (our fitter provides LHM's SMPL-X shape);
3. ``prepare``: LHM's body and head images (:mod:`.preprocess`);
4. ``network``: body encoder, head encoder, MBHT and Gaussian decoder on the query points;
5. ``avatar``: big pose -> zero pose, shape added, our :class:`~streamer.avatar.Avatar`.

:class:`LHMReconstructor` loads the network once (checkpoint strictly, Sapiens TorchScript
attached) and can then reconstruct many photos.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ...avatar import Avatar
from ...body.model import BodyModel
from ...body.pose import SmplxPose
from ...errors import InputError
from ...render import Camera
from ..fit import fit_photo
from ..person import Person, find_person
from ..steps import StepClock
from .body_encoder import BodyEncoder, load_sapiens_torchscript
from .checkpoint import TEMPLATE_PREFIX, load_checkpoint
from .config import LHMConfig
from .model import LHMNetwork, Precision, build_network
from .preprocess import LHMInputs, prepare_inputs
from .query_points import QueryPoints, sample_query_points
from .to_avatar import lhm_avatar
from .weights import LHMWeights, checkpoint_config

STEPS = ("detect", "fit", "prepare", "network", "avatar")


@dataclass
class LHMReconstruction:
    """An LHM avatar and what it was made from (the same fields as the ``fit`` method's result).

    Attributes:
        avatar: the animatable avatar.
        pose: the fitted pose of the photo.
        camera: the photo's camera for the crop in :attr:`person`.
        person: the crop, its mask and landmarks.
        inputs: the images the network saw.
        timings_s: seconds per step (:data:`STEPS`).
    """

    avatar: Avatar
    pose: SmplxPose
    camera: Camera
    person: Person
    inputs: LHMInputs
    timings_s: dict[str, float] = field(default_factory=dict)


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is a clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA GPU is available to this PyTorch")
    if device != "cpu" and not device.startswith("cuda"):
        raise InputError(f"--device must be auto, cpu or cuda[:N], got {device!r}")
    return torch.device(device)


class LHMReconstructor:
    """A loaded LHM network with its body model and query points.

    Args:
        network: the network, weights loaded and a body encoder attached.
        body: the SMPL-X body model the query points are sampled on (CPU).
        precision: see :meth:`LHMNetwork.forward`.
        seed: query-point sampling seed.
    """

    def __init__(self, network: LHMNetwork, body: BodyModel, precision: Precision = "auto", seed: int = 0) -> None:
        if network.body_encoder is None:
            raise InputError("LHMReconstructor: the network has no body encoder attached")
        self.network = network.eval()
        self.body = body.to("cpu")
        self.precision: Precision = precision
        self.device = next(network.parameters()).device
        self.query: QueryPoints = sample_query_points(self.body, network.config.n_query_points, seed)

    @property
    def config(self) -> LHMConfig:
        return self.network.config

    @classmethod
    def load(
        cls,
        weights: LHMWeights,
        device: str = "auto",
        config: str | None = None,
        precision: Precision = "auto",
        seed: int = 0,
    ) -> LHMReconstructor:
        """Load the checkpoint strictly, the Sapiens TorchScript and the SMPL-X model.

        The SMPL-X template buffers (``renderer.smplx_model.*``) may be absent from a checkpoint:
        this path samples its own query points and never reads them.
        """
        dev = resolve_device(device)
        cfg = checkpoint_config(weights.checkpoint, config)
        network = build_network(cfg, device="meta")
        load_checkpoint(network, weights.checkpoint, allow_missing_prefixes=(TEMPLATE_PREFIX,), device=dev)
        backbone = load_sapiens_torchscript(weights.sapiens, map_location=dev)
        network.attach_body_encoder(BodyEncoder.for_config(backbone, cfg))
        network.to(dev)
        return cls(network, BodyModel.load(weights.smplx), precision=precision, seed=seed)

    @torch.no_grad()
    def __call__(
        self,
        rgb: np.ndarray,
        strict: bool = False,
        progress: Callable[[str], None] | None = None,
        crop: tuple[float, float, float, float] | None = None,
        search: Callable[[], Person] | None = None,
    ) -> LHMReconstruction:
        """Reconstruct one photo ([H, W, 3] uint8 RGB); ``crop``: a fixed 5:3 box (photo pixels)
        instead of one around the person (a video's frames share one camera); ``search``: gives the
        person instead of :func:`streamer.reconstruct.person.find_person` (as in
        :func:`streamer.reconstruct.fit.reconstruct_photo`).

        Raises:
            ReconstructionError: no usable person (see :func:`streamer.reconstruct.person.find_person`).
        """
        step = StepClock(progress)

        step("detect")
        person = search() if search is not None else find_person(rgb, strict=strict, crop=crop)
        step("fit")
        pose, camera = fit_photo(self.body, person)
        step("prepare")
        cfg = self.config
        inputs = prepare_inputs(person, cfg.body_resolution, cfg.dino.input_resolution)
        step("network")
        attrs = self.network(
            inputs.body[None].to(self.device),
            inputs.head[None].to(self.device),
            self.query.points.to(self.device),
            upper_body=self.query.upper_body.to(self.device),
            precision=self.precision,
        )
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        step("avatar")
        attrs_cpu = type(attrs)(**{k: v.float().cpu() for k, v in vars(attrs).items()})
        avatar = lhm_avatar(attrs_cpu, self.query, self.body, betas=pose.betas)
        timings = step.done()
        return LHMReconstruction(avatar=avatar, pose=pose, camera=camera, person=person, inputs=inputs, timings_s=timings)
