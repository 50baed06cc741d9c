"""Ignite handlers and helpers for MONAI's ``SupervisedTrainer`` / ``SupervisedEvaluator``."""

from app.engines.averaging import WeightAveraging
from app.engines.budget import TimeBudget
from app.engines.autocast import AutocastInferer, cpu_bf16_supported
from app.engines.checkpoint import AtomicCheckpointer, latest_checkpoint
from app.engines.compile import compile_supported
from app.engines.distillation import DistillationInferer, DistillationLoss, load_teacher
from app.engines.metrics import RegionOutput, region_dice_metrics
from app.engines.precision import Float32Loss, NonFiniteGradientSkip, NonFiniteLossGuard
from app.engines.prepare import channels_last_prepare_batch, without_meta

__all__ = ["AtomicCheckpointer", "AutocastInferer", "cpu_bf16_supported", "RegionOutput", "TimeBudget", "channels_last_prepare_batch", "compile_supported", "DistillationInferer", "DistillationLoss", "load_teacher", "Float32Loss", "NonFiniteGradientSkip", "NonFiniteLossGuard", "latest_checkpoint", "region_dice_metrics", "WeightAveraging", "without_meta"]
