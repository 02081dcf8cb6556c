"""Engines: the paired labeled/unlabeled loader, the CrossMatch trainer, the threshold schedules and the precision
guard of autocast training."""

from __future__ import annotations

from .builders import build_train_loader, loss_terms
from .handlers import HandlerGroup, TrainingLog, TrainingProgressBar, read_training_log
from .loaders import CrossMatchLoader
from .precision import (
    DEFAULT_TOLERANCE,
    PRECISION_CACHE_ENV,
    ConvolutionConfig,
    PrecisionGuard,
    PrecisionVerdict,
    check_convolution,
    clear_verdict_cache,
    default_cache_path,
    environment_key,
)
from .randomness import RandomStreams, ResumableLoader, SeededDataset, SeededSampler, randomizable_transforms
from .schedules import ConstantThreshold, OfficialRampThreshold, sigmoid_rampup
from .trainer import CrossMatchTrainer, TrainingRandomState, unwrap_network

__all__ = [
    "read_training_log",
    "ConstantThreshold",
    "CrossMatchLoader",
    "CrossMatchTrainer",
    "HandlerGroup",
    "OfficialRampThreshold",
    "RandomStreams",
    "ResumableLoader",
    "SeededDataset",
    "SeededSampler",
    "TrainingLog",
    "TrainingRandomState",
    "TrainingProgressBar",
    "build_train_loader",
    "loss_terms",
    "randomizable_transforms",
    "sigmoid_rampup",
    "unwrap_network",
    # precision guard
    "DEFAULT_TOLERANCE",
    "PRECISION_CACHE_ENV",
    "ConvolutionConfig",
    "PrecisionGuard",
    "PrecisionVerdict",
    "check_convolution",
    "clear_verdict_cache",
    "default_cache_path",
    "environment_key",
]
