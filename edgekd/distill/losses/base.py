"""The loss registry (torchdistill style) and :class:`Step`, what a training step produced.

A loss is one registered function over a :class:`Step`: ``fn(step, **params) -> Tensor`` (or a dict of
named sub-terms). Recipes compose them::

    losses:
      - {name: ce, weight: 0.1}
      - {name: kd, weight: 0.9, params: {temperature: 4}}
      - {name: hint, weight: 1.0, student: features.2, teacher: features.4, adapter: auto}

Module paths make both networks tap that module with forward hooks; the loss then sees the pair as
``step.fs`` (student feature, through the adapter when the shapes differ) and ``step.ft`` (teacher).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import Tensor

from edgekd.errors import EdgekdError
from edgekd.registry import Registry

TASKS = ("classification", "reconstruction")


@dataclass
class Step:
    """What one training step produced, as every loss sees it."""

    x: Tensor  # the student's input batch
    y: Tensor | None  # labels (classification) or anomaly labels / None (reconstruction)
    student: Tensor  # student outputs: logits or reconstruction
    teacher: Tensor | None = None  # teacher outputs (frozen, no grad)
    student_features: dict[str, Tensor] = field(default_factory=dict)  # tapped by module path
    teacher_features: dict[str, Tensor] = field(default_factory=dict)
    extra: dict[str, Tensor] = field(default_factory=dict)  # e.g. privileged inputs
    fs: Tensor | None = None  # this loss's student feature (after its adapter)
    ft: Tensor | None = None  # this loss's teacher feature


@dataclass(frozen=True)
class LossInfo:
    name: str
    fn: Callable[..., Tensor | dict[str, Tensor]]
    needs_teacher: bool
    tasks: tuple[str, ...]
    features: bool  # needs `student:` and `teacher:` module paths
    input_grad: bool  # needs d/dx (the input gets requires_grad)
    paper: str

    @property
    def summary(self) -> str:
        doc = inspect.getdoc(self.fn) or ""
        return doc.splitlines()[0] if doc else ""

    def params(self) -> list[str]:
        sig = inspect.signature(self.fn)
        return [p for p in list(sig.parameters)[1:]]


LOSSES: Registry[LossInfo] = Registry("loss")


def register_loss(
    name: str,
    *,
    needs_teacher: bool = True,
    tasks: tuple[str, ...] = TASKS,
    features: bool = False,
    input_grad: bool = False,
    paper: str = "",
) -> Callable[[Callable], Callable]:
    """Register ``fn(step, **params)`` as loss ``name``; returns ``fn`` unchanged."""

    def deco(fn: Callable) -> Callable:
        bad = set(tasks) - set(TASKS)
        if bad:
            raise ValueError(f"loss {name!r}: unknown task(s) {bad}")
        LOSSES.register(name)(LossInfo(name, fn, needs_teacher, tuple(tasks), features, input_grad, paper))
        return fn

    return deco


def check_params(info: LossInfo, params: dict, where: str) -> None:
    unknown = sorted(set(params) - set(info.params()))
    if unknown:
        raise EdgekdError(
            f"{where}: unknown param(s) {', '.join(unknown)} for loss {info.name!r}; "
            f"valid: {', '.join(info.params()) or 'none'}"
        )
