"""The distiller base class (mdistiller style), the composed distiller and the method registry.

A method changes the training loop (several networks, branches, a supernet, noise); what is minimised
is a list of losses (:mod:`edgekd.distill.losses.presets` names the usual ones: ``kd``, ``supervised``,
``privileged``, ``wasserstein-kd``), trained by :class:`ComposedDistiller`. A method wraps the student
(and teacher). ``forward_train(x, y)`` returns the student's outputs and a
dict of *weighted* named loss terms; the engine sums them, back-propagates and logs each term. The
teacher is frozen and always in ``eval()``. A distiller that trains several networks (a scheme) returns
one optimizer parameter group per network from :meth:`Distiller.param_groups`; the engine then keeps one
optimizer and schedule for each.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from edgekd.distill.compose import LossComposer, LossSpec
from edgekd.distill.features import tap_features
from edgekd.distill.losses import PRESETS, Step, is_preset, preset_losses
from edgekd.errors import EdgekdError
from edgekd.registry import Registry

# What the runner hands every method besides its own params (methods take what they need via **context).
CONTEXT_KEYS = ("losses", "task", "sample_x", "teacher_input", "model_factory")


class Distiller(nn.Module):
    """Base class: holds ``student`` and an optional frozen ``teacher``."""

    needs_teacher: bool = True
    own_losses: bool = True  # False: the recipe's `losses:` list is this method's loss

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
        """Student parameters plus any the method itself learns (e.g. adapters), never the teacher's."""
        teacher_ids = {id(p) for p in self.teacher.parameters()} if self.teacher is not None else set()
        for p in self.parameters():
            if p.requires_grad and id(p) not in teacher_ids:
                yield p

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """One entry per separately optimised network (each gets its own optimizer and schedule)."""
        return {"student": list(self.trainable_parameters())}

    @torch.no_grad()
    def teacher_outputs(self, x: Tensor) -> Tensor:
        """The frozen teacher's outputs (logits, or a reconstruction for autoencoders)."""
        assert self.teacher is not None
        return self.teacher(x)

    def cacheable_teacher(self) -> bool:
        """True when ``forward_train(..., teacher_out=T)`` may replace the teacher's forward by ``T``, its
        outputs on the same inputs (or the same augmented view): the engine's teacher-output cache. Off by default."""
        return False

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

    def networks(self) -> dict[str, nn.Module]:
        """Every network this method produced, by name (peers, branches, exits); empty when the exported
        student is the only one (the runner records it as ``student``)."""
        return {}


class ComposedDistiller(Distiller):
    """A student trained on the weighted sum of registered losses (``losses:`` in the recipe).

    Module paths named by feature losses are tapped with forward hooks on both networks during the step
    only; the teacher reads ``extra[teacher_input]`` (privileged inputs) when ``teacher_input`` is not
    ``"x"``.
    """

    needs_teacher = False

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        *,
        losses: Sequence[LossSpec],
        task: str = "classification",
        sample_x: Tensor | None = None,
        teacher_input: str = "x",
        where: str = "losses",
        model_factory: Callable[[], nn.Module] | None = None,  # used by schemes with several networks
    ) -> None:
        super().__init__(student, teacher)
        self.task = task
        self.teacher_input = teacher_input
        self.composer = LossComposer(losses, student, teacher, task=task, sample_x=sample_x, where=where)

    def cacheable_teacher(self) -> bool:
        """The teacher may be skipped for cached outputs when no loss reads its tapped features or needs
        input gradients (with augmentation the engine caches K views: ``train.teacher_views``)."""
        return self.teacher is not None and not self.composer.teacher_paths and not self.composer.input_grad

    def forward_train(
        self,
        x: Tensor,
        y: Tensor | None,
        extra: dict[str, Tensor] | None = None,
        teacher_out: Tensor | None = None,
        targets: dict[str, Tensor] | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        extra = extra or {}
        if self.composer.input_grad:
            x = x.detach().clone().requires_grad_(True)
        c = self.composer
        with tap_features(self.student, c.student_paths) as s_feats:
            out = self.student(x)
        t_out, t_feats = teacher_out, {}
        if self.teacher is not None and teacher_out is None:
            t_x = x.detach() if self.teacher_input == "x" else extra[self.teacher_input]
            with tap_features(self.teacher, c.teacher_paths) as t_feats:
                t_out = self.teacher_outputs(t_x)
            t_feats = dict(t_feats)
        step = Step(x=x, y=y, student=out, teacher=t_out, student_features=dict(s_feats),
                    teacher_features=t_feats, extra=extra, teacher_net=self.teacher,
                    targets=dict(targets or {}))  # fmt: skip
        return out, c(step)


METHODS: Registry[Callable[..., Distiller]] = Registry("method")
register_method = METHODS.register


def method_params(cls: Callable[..., Distiller]) -> list[str]:
    sig = inspect.signature(cls.__init__)
    skip = {"self", "student", "teacher", "where", *CONTEXT_KEYS}
    return [p for p, v in sig.parameters.items() if p not in skip and v.kind != v.VAR_KEYWORD]


def build_method(
    name: str, student: nn.Module, teacher: nn.Module | None, params: dict[str, Any], **context: Any
) -> Distiller:
    """Build a registered method, or a :class:`ComposedDistiller` for a loss preset (or ``compose``, the
    ``losses`` list); unknown parameters are reported with the valid ones.

    ``context`` (``losses``, ``task``, ``sample_x``, ``teacher_input``) is passed to methods whose
    constructor takes it (by name or ``**context``).
    """
    if is_preset(name):
        return build_composed(name, student, teacher, params, **context)
    cls = method_class(name)
    allowed = method_params(cls)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise EdgekdError(
            f"method.params: unknown key(s) {', '.join(unknown)} for method {name!r}; valid: {', '.join(allowed)}"
        )
    sig = inspect.signature(cls.__init__)
    takes_all = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    ctx = {k: v for k, v in context.items() if v is not None and (takes_all or k in sig.parameters)}
    if context.get("losses") and cls.own_losses:
        raise EdgekdError(f"recipe: method {name!r} defines its own losses; remove `losses:` (or the method)")
    try:
        return cls(student=student, teacher=teacher, **params, **ctx)
    except TypeError as e:
        raise EdgekdError(f"method {name!r}: bad parameters ({e})") from None


def method_class(name: str) -> Callable[..., Distiller]:
    """The registered method ``name``; an unknown name lists the methods and the loss presets."""
    if name not in METHODS:
        raise EdgekdError(
            f"unknown method {name!r}; valid names: {', '.join(METHODS.names())} (methods), "
            f"{', '.join(PRESETS.names())} (loss presets)"
        )
    return METHODS.get(name)


def needs_teacher(name: str) -> bool:
    """True when method or loss preset ``name`` cannot train without a teacher."""
    if is_preset(name):
        return name in PRESETS and PRESETS.get(name).needs_teacher
    return method_class(name).needs_teacher


def build_composed(
    name: str, student: nn.Module, teacher: nn.Module | None, params: dict[str, Any], **context: Any
) -> ComposedDistiller:
    """The student trained on preset ``name``'s losses, or on ``context["losses"]`` (``compose``)."""
    where, given = context.get("where") or "losses", context.get("losses")
    losses = preset_losses(name, params, given, context.get("task") or "classification", where)
    preset = None if given else PRESETS.get(name)
    if preset is not None and preset.needs_teacher and teacher is None:
        raise EdgekdError(f"method {name!r} needs a teacher: set `teacher.path` in the recipe")
    if preset is not None and not preset.needs_teacher:
        teacher = None  # a labels-only preset never runs the teacher
    kw = {k: context[k] for k in ("task", "sample_x", "teacher_input") if context.get(k) is not None}
    return ComposedDistiller(student, teacher, losses=losses, where=where, **kw)
