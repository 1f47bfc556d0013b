"""The distiller base class (mdistiller style) and the method registry.

A method wraps the student (and teacher). ``forward_train(x, y)`` returns the student's logits and a
dict of *weighted* named loss terms; the engine sums them, back-propagates and logs each term. The
teacher is frozen and always in ``eval()``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from edgekd.errors import EdgekdError
from edgekd.registry import Registry


class Distiller(nn.Module):
    """Base class: holds ``student`` and an optional frozen ``teacher``."""

    needs_teacher: bool = True

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None) -> None:
        super().__init__()
        self.student = student
        if self.needs_teacher and teacher is None:
            raise EdgekdError(
                f"method {type(self).__name__} needs a teacher: set `teacher.path` in the recipe"
            )
        self.teacher = teacher
        if teacher is not None:
            for p in teacher.parameters():
                p.requires_grad_(False)
            teacher.eval()

    def train(self, mode: bool = True) -> Distiller:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Student parameters plus any the method itself learns (e.g. regressors), never the teacher's."""
        teacher_ids = {id(p) for p in self.teacher.parameters()} if self.teacher is not None else set()
        for p in self.parameters():
            if p.requires_grad and id(p) not in teacher_ids:
                yield p

    @torch.no_grad()
    def teacher_logits(self, x: Tensor) -> Tensor:
        assert self.teacher is not None
        return self.teacher(x)

    def forward_train(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def forward_test(self, x: Tensor) -> Tensor:
        return self.student(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_test(x)

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """Hook for schedules inside a method (e.g. stop augmentation after a fraction of epochs)."""

    def on_train_end(self, train_x: Tensor) -> None:
        """Hook run once after the last epoch (e.g. re-estimate BN statistics)."""

    def export_student(self) -> nn.Module:
        """The plain student to save and export."""
        return self.student


METHODS: Registry[Callable[..., Distiller]] = Registry("method")
register_method = METHODS.register


def build_method(
    name: str, student: nn.Module, teacher: nn.Module | None, params: dict[str, Any]
) -> Distiller:
    """Build a registered method; unknown parameters are reported with the valid ones."""
    cls = METHODS.get(name)
    sig = inspect.signature(cls.__init__)
    allowed = [p for p in sig.parameters if p not in ("self", "student", "teacher")]
    has_var_kw = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    unknown = sorted(set(params) - set(allowed))
    if unknown and not has_var_kw:
        raise EdgekdError(
            f"method.params: unknown key(s) {', '.join(unknown)} for method {name!r}; valid: {', '.join(allowed)}"
        )
    try:
        return cls(student=student, teacher=teacher, **params)
    except TypeError as e:
        raise EdgekdError(f"method {name!r}: bad parameters ({e})") from None
