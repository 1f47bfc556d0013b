"""Losses composed in the recipe: validation, feature taps, adapters and the weighted sum.

Build time: every module path named by a loss is looked up in its network (an unknown path names the
nearest valid ones), one probe forward with hooks gives the shapes, and where the student's and the
teacher's features differ an adapter is created (1x1 conv for ``(N, C, H, W)`` and ``(N, C, L)``, linear
for ``(N, D)``). Adapters are trained with the student, checkpointed, restored on resume and never
exported (they live in the distiller, not in the student).
"""

from __future__ import annotations

import difflib
import weakref
from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import Tensor, nn

from edgekd.distill.features import FeatureTaps
from edgekd.distill.losses import LOSSES, Step, check_params
from edgekd.errors import EdgekdError
from edgekd.recipe import LossConfig as LossSpec

ADAPTERS = ("auto", "conv1x1", "linear", "none")


def split_paths(paths: str | None) -> list[str]:
    """``"features.0, features.1"`` -> ``["features.0", "features.1"]`` (empty for none)."""
    return [p.strip() for p in (paths or "").split(",") if p.strip()]


_SHARED: weakref.WeakKeyDictionary[nn.Module, dict[str, nn.Module]] = weakref.WeakKeyDictionary()


def shared_modules(student: nn.Module) -> dict[str, nn.Module]:
    """Modules that losses share across the stages of one run (all stages train the same student), e.g.
    a paraphraser pre-trained in stage 1 and used frozen in stage 2."""
    return _SHARED.setdefault(student, {})


def nearest_paths(model: nn.Module, path: str, n: int = 5) -> list[str]:
    names = [k for k, _ in model.named_modules() if k]
    return difflib.get_close_matches(path, names, n=n, cutoff=0.3) or names[:n]


def check_path(model: nn.Module, path: str, role: str, where: str) -> None:
    if path not in dict(model.named_modules()):
        near = ", ".join(nearest_paths(model, path))
        raise EdgekdError(
            f"{where}: no module {path!r} in the {role} ({type(model).__name__}); nearest: {near}"
        )


def make_adapter(kind: str, s_shape: Sequence[int], t_shape: Sequence[int], where: str) -> nn.Module | None:
    """An adapter mapping student features of ``s_shape`` to ``t_shape`` (both without the batch)."""
    s_shape, t_shape = tuple(s_shape), tuple(t_shape)
    if kind == "auto" and s_shape == t_shape:
        return None
    if kind == "none":
        if s_shape != t_shape:
            raise EdgekdError(
                f"{where}: student feature {s_shape} and teacher feature {t_shape} differ and adapter is 'none'; "
                "use adapter: auto (1x1 conv / linear) or pick layers of the same shape"
            )
        return None
    if len(s_shape) != len(t_shape) or s_shape[1:] != t_shape[1:]:
        raise EdgekdError(
            f"{where}: student feature {s_shape} and teacher feature {t_shape} differ beyond channels; "
            "an adapter maps channels only: pick layers with the same spatial size"
        )
    if len(s_shape) == 1:
        if kind == "conv1x1":
            raise EdgekdError(
                f"{where}: adapter conv1x1 needs (C, H, W) or (C, L) features; these are {s_shape}"
            )
        return nn.Linear(s_shape[0], t_shape[0], bias=False)
    if kind == "linear":
        raise EdgekdError(
            f"{where}: adapter linear needs flat (D,) features; these are {s_shape}: use conv1x1"
        )
    conv = nn.Conv2d if len(s_shape) == 3 else nn.Conv1d if len(s_shape) == 2 else None
    if conv is None:
        raise EdgekdError(f"{where}: no adapter for features of shape {s_shape}")
    return nn.Sequential(conv(s_shape[0], t_shape[0], 1, bias=False), conv_bn(len(s_shape), t_shape[0]))


def conv_bn(rank: int, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if rank == 3 else nn.BatchNorm1d(channels)


class LossComposer(nn.Module):
    """The weighted sum of the recipe's losses over one :class:`Step`; owns the adapters."""

    def __init__(
        self,
        specs: Sequence[LossSpec],
        student: nn.Module,
        teacher: nn.Module | None,
        *,
        task: str = "classification",
        sample_x: Tensor | None = None,
        where: str = "losses",
    ) -> None:
        super().__init__()
        if not specs:
            raise EdgekdError(f"{where}: the list is empty; name at least one loss (e.g. ce)")
        self.specs = [replace(s, params=dict(s.params)) for s in specs]
        self.infos = []
        self.term_names: list[str] = []
        for i, s in enumerate(self.specs):
            w = f"{where}[{i}] ({s.name})"
            info = LOSSES.get(s.name)
            check_params(info, s.params, w)
            if task not in info.tasks:
                raise EdgekdError(
                    f"{w}: loss {s.name!r} is for {' / '.join(info.tasks)} and this data set's task is {task!r}"
                )
            if info.needs_teacher and teacher is None:
                raise EdgekdError(f"{w}: loss {s.name!r} needs a teacher; set teacher.path in the recipe")
            if s.adapter not in ADAPTERS:
                raise EdgekdError(f"{w}: adapter {s.adapter!r}; valid: {', '.join(ADAPTERS)}")
            if info.features:
                s_paths, t_paths = split_paths(s.student), split_paths(s.teacher)
                if not t_paths or (info.student_side and not s_paths):
                    need = (
                        "`student:` and `teacher:` module paths"
                        if info.student_side
                        else "a `teacher:` module path"
                    )
                    raise EdgekdError(f"{w}: loss {s.name!r} needs {need}")
                if s_paths and len(s_paths) != len(t_paths):
                    raise EdgekdError(
                        f"{w}: {len(s_paths)} student path(s) and {len(t_paths)} teacher path(s); give them in pairs"
                    )
                for sp in s_paths:
                    check_path(student, sp, "student", w)
                for tp in t_paths:
                    check_path(teacher, tp, "teacher", w)
            elif s.student or s.teacher:
                raise EdgekdError(
                    f"{w}: loss {s.name!r} works on outputs; remove `student:`/`teacher:` paths"
                )
            self.infos.append(info)
            name, n = s.name, 2
            while name in self.term_names:
                name, n = f"{s.name}_{n}", n + 1
            self.term_names.append(name)
        self.student_paths = sorted({p for s in self.specs for p in split_paths(s.student)})
        self.teacher_paths = sorted({p for s in self.specs for p in split_paths(s.teacher)})
        self.adapters = nn.ModuleDict()
        self.owned = nn.ModuleDict()
        s_shapes: dict[str, tuple[int, ...]] = {}
        t_shapes: dict[str, tuple[int, ...]] = {}
        if self.student_paths or self.teacher_paths:
            if sample_x is None:
                raise EdgekdError(f"{where}: feature losses need a sample batch to probe shapes")
            s_shapes, t_shapes = probe_shapes(
                student, teacher, sample_x, self.student_paths, self.teacher_paths
            )
        shared = shared_modules(student)
        for i, (s, info) in enumerate(zip(self.specs, self.infos)):
            w = f"{where}[{i}] ({s.name})"
            ss = [s_shapes[p] for p in split_paths(s.student)]
            ts = [t_shapes[p] for p in split_paths(s.teacher)]
            if info.check is not None:
                info.check(ss, ts, s.params, w)
            if info.adapter and ss:
                for j, (a_s, a_t) in enumerate(zip(ss, ts)):
                    a = make_adapter(s.adapter, a_s, a_t, w)
                    if a is not None:
                        self.adapters[str(i) if len(ss) == 1 else f"{i}_{j}"] = a
            if info.owns is not None:
                self.owned[str(i)] = info.owns(ss, ts, s.params, shared)

    def _adapt(self, i: int, j: int, n: int, f: Tensor) -> Tensor:
        key = str(i) if n == 1 else f"{i}_{j}"
        return self.adapters[key](f) if key in self.adapters else f

    @property
    def input_grad(self) -> bool:
        return any(i.input_grad for i in self.infos)

    def forward(self, step: Step) -> dict[str, Tensor]:
        terms: dict[str, Tensor] = {}
        for i, (spec, info, name) in enumerate(zip(self.specs, self.infos, self.term_names)):
            view = step
            if spec.student or spec.teacher:
                s_paths, t_paths = split_paths(spec.student), split_paths(spec.teacher)
                fs = [
                    self._adapt(i, j, len(s_paths), step.student_features[p]) for j, p in enumerate(s_paths)
                ]
                ft = [step.teacher_features[p] for p in t_paths]
                view = replace(
                    step, fs=fs[0] if len(fs) == 1 else fs or None, ft=ft[0] if len(ft) == 1 else ft
                )
            if str(i) in self.owned:
                view = replace(view, module=self.owned[str(i)])
            out = info.fn(view, **spec.params)
            if isinstance(out, dict):
                for sub, v in out.items():
                    key = sub if sub not in terms else f"{name}_{sub}"
                    terms[key] = spec.weight * v
            else:
                terms[name] = spec.weight * out
        return terms


@torch.no_grad()
def probe_shapes(
    student: nn.Module, teacher: nn.Module | None, x: Tensor, s_paths: list[str], t_paths: list[str]
) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    """One forward of each network on two samples with hooks: feature shapes without the batch."""
    shapes = []
    for model, paths in ((student, s_paths), (teacher, t_paths)):
        if model is None or not paths:
            shapes.append({})
            continue
        was = model.training
        model.eval()
        taps = FeatureTaps(model, paths)
        try:
            model(x[:2])
        finally:
            taps.remove()
            model.train(was)
        shapes.append({p: tuple(t.shape[1:]) for p, t in taps.outputs.items()})
    return shapes[0], shapes[1]
