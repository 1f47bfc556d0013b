"""Distillation losses, one family per file, registered by name (``@register_loss``)."""

from edgekd.distill.losses import (  # noqa: F401  (registration)
    attention,
    boundary,
    decoupled,
    detection,
    distribution,
    factor,
    features,
    logits,
    presets,
    privileged,
    reconstruction,
    relational,
    sensors,
    sparsity,
    wasserstein,
)
from edgekd.distill.losses.base import LOSSES, TASKS, LossInfo, Step, check_params, register_loss
from edgekd.distill.losses.logits import cross_entropy, kd_loss, kd_per_example, soft_cross_entropy
from edgekd.distill.losses.presets import PRESETS, is_preset, preset_losses

__all__ = [
    "LOSSES",
    "TASKS",
    "LossInfo",
    "PRESETS",
    "Step",
    "check_params",
    "is_preset",
    "preset_losses",
    "register_loss",
    "cross_entropy",
    "kd_loss",
    "kd_per_example",
    "soft_cross_entropy",
]
