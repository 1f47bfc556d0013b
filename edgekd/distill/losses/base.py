"""The loss registry (torchdistill style) and :class:`Step`, what a training step produced.

A loss is one registered function over a :class:`Step`: ``fn(step, **params) -> Tensor`` (or a dict of
named sub-terms). Recipes compose them::

    losses:
      - {name: ce, weight: 0.1}
      - {name: kd, weight: 0.9, params: {temperature: 4}}
      - {name: hint, weight: 1.0, student: features.2, teacher: features.4, adapter: auto}

Module paths make both networks tap that module with forward hooks; the loss then sees the pair as
``step.fs`` (student feature, through the adapter when the shapes differ) and ``step.ft`` (teacher).
Several comma-separated paths (``student: features.0,features.1``) give lists of features, pair by pair.
A loss may own trainable modules (``owns=``: a factory called with the probed shapes), which it sees as
``step.module``; they train with the student and are never exported, like adapters.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from edgekd.data.registry import TASKS
from edgekd.errors import EdgekdError
from edgekd.registry import Registry, summary_line


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
    # per-image targets beyond y, batched like x (detection: boxes (N, K, 4), classes (N, K), -1 padded);
    # losses may add what they derive from them (encoded heat maps) for the other losses of the step
    targets: dict[str, Tensor] = field(default_factory=dict)
    fs: Tensor | list[Tensor] | None = None  # this loss's student feature(s) (after the adapters)
    ft: Tensor | list[Tensor] | None = None  # this loss's teacher feature(s)
    module: nn.Module | None = None  # the module(s) this loss owns (``owns=``), if any
    teacher_net: nn.Module | None = None  # the frozen teacher itself (losses on input gradients)


@dataclass(frozen=True)
class LossInfo:
    name: str
    fn: Callable[..., Tensor | dict[str, Tensor]]
    needs_teacher: bool
    tasks: tuple[str, ...]
    features: bool  # needs `student:` and `teacher:` module paths
    input_grad: bool  # needs d/dx (the input gets requires_grad)
    paper: str
    adapter: bool = True  # False: the loss compares features of different widths itself (no adapter)
    student_side: bool = True  # False: only a `teacher:` path (e.g. a paraphraser trained on the teacher)
    check: Callable[..., None] | None = None  # check(s_shapes, t_shapes, params, where) at build time
    owns: Callable[..., nn.Module] | None = None  # owns(s_shapes, t_shapes, params, shared) -> module

    @property
    def summary(self) -> str:
        return summary_line(self.fn)

    def params(self) -> list[str]:
        sig = inspect.signature(self.fn)
        return list(sig.parameters)[1:]


LOSSES: Registry[LossInfo] = Registry("loss")


def register_loss(
    name: str,
    *,
    needs_teacher: bool = True,
    tasks: tuple[str, ...] = TASKS,
    features: bool = False,
    input_grad: bool = False,
    paper: str = "",
    adapter: bool = True,
    student_side: bool = True,
    check: Callable[..., None] | None = None,
    owns: Callable[..., Any] | None = None,
) -> Callable[[Callable], Callable]:
    """Register ``fn(step, **params)`` as loss ``name``; returns ``fn`` unchanged.

    ``check(s_shapes, t_shapes, params, where)`` validates the probed feature shapes (lists, one per
    path, without the batch) and the param values at build time, raising a one-line EdgekdError.
    ``owns(s_shapes, t_shapes, params, shared)`` builds the module the loss owns (``shared`` is a dict
    that lives as long as the student, so stages can hand a trained module on to the next one).
    """

    def deco(fn: Callable) -> Callable:
        bad = set(tasks) - set(TASKS)
        if bad:
            raise ValueError(f"loss {name!r}: unknown task(s) {bad}")
        LOSSES.register(name)(LossInfo(name, fn, needs_teacher, tuple(tasks), features, input_grad, paper, adapter,
                                           student_side, check, owns))  # fmt: skip
        return fn

    return deco


def check_params(info: LossInfo, params: dict, where: str) -> None:
    unknown = sorted(set(params) - set(info.params()))
    if unknown:
        raise EdgekdError(
            f"{where}: unknown param(s) {', '.join(unknown)} for loss {info.name!r}; "
            f"valid: {', '.join(info.params()) or 'none'}"
        )
