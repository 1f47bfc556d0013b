"""What a training run is made of and returns: stages, the result, and the stop for tests and time limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgekd.distill.methods.base import Distiller
from edgekd.distill.qat import FakeQuantizer
from edgekd.recipe import TrainConfig


class TrainingInterrupted(Exception):
    """Raised by ``stop_after_epoch`` (tests, time limits): the checkpoint of the last epoch is on disk."""


@dataclass
class Stage:
    """One stage of a run: a distiller (sharing the student with the other stages), its own training
    settings, which student parameters train (a module-path prefix, or all) and, for a QAT stage, the
    int8 simulation of the student (:class:`edgekd.distill.qat.FakeQuantizer`)."""

    name: str
    distiller: Distiller
    cfg: TrainConfig
    trainable: str | None = None
    quantizer: FakeQuantizer | None = None


@dataclass
class FitResult:
    """Every epoch's row (``history``) and the final test figures (``final``)."""

    history: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] = field(default_factory=dict)
    qat: dict[str, Any] | None = None  # the learned int8 ranges of a QAT run (edgekd.distill.qat)
