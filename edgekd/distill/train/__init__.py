"""The training loop (``loop.Trainer``) and its parts: checkpoints, the divergence guard, progress,
optimisers and schedules, devices and mixed precision.

Callers write ``from edgekd.distill.train import Trainer, Stage``.
"""

from edgekd.distill.train.checkpoint import CHECKPOINT_FORMAT, Checkpointer
from edgekd.distill.train.device import memory_format, resolve_device, resolve_threads, seed_everything
from edgekd.distill.train.guard import DivergenceGuard, TrainingDiverged, non_finite_tensors
from edgekd.distill.train.loop import Trainer
from edgekd.distill.train.optim import lr_factor, make_optimizer, stage_param_groups
from edgekd.distill.train.progress import Progress
from edgekd.distill.train.stage import FitResult, Stage, TrainingInterrupted

__all__ = [
    "CHECKPOINT_FORMAT",
    "Checkpointer",
    "DivergenceGuard",
    "FitResult",
    "Progress",
    "Stage",
    "Trainer",
    "TrainingDiverged",
    "TrainingInterrupted",
    "lr_factor",
    "make_optimizer",
    "memory_format",
    "non_finite_tensors",
    "resolve_device",
    "resolve_threads",
    "seed_everything",
    "stage_param_groups",
]
