"""Training LHM (``streamer train-lhm``): data (:mod:`.data`), objective (:mod:`.losses`),
differentiable rendering (:mod:`.render`) and the loop (:mod:`.trainer`). See docs/lhm-training.md."""

from .data import LHMTrainData, TrainDataError, load_subject, make_synthetic
from .losses import ACAP_MARGIN, LossWeights, acap_loss, asap_loss, ssim, ssim_map
from .trainer import TrainOptions, TrainResult, train

__all__ = [
    "ACAP_MARGIN", "LHMTrainData", "LossWeights", "TrainDataError", "TrainOptions", "TrainResult",
    "acap_loss", "asap_loss", "load_subject", "make_synthetic", "ssim", "ssim_map", "train",
]
