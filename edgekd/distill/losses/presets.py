"""Loss presets: named lists of registered losses, selected by ``method.name`` in a recipe.

A preset changes only *what is minimised*, never the training loop (that is a method, see
:mod:`edgekd.distill.methods`)::

    method: {name: kd, params: {temperature: 4, alpha: 0.9}}   # the preset: 0.9 * kd + 0.1 * ce
    losses: [{name: kd, weight: 0.9, params: {temperature: 4}}, {name: ce, weight: 0.1}]   # the same, spelled out

``losses: [{name: kd}]`` is always the *loss* ``kd``; ``method: kd`` the *preset* above. A recipe without
a method uses the preset ``supervised`` (labels only); a ``losses:`` list replaces that default
(``compose``: the list as it stands). Next to any other preset, or preset parameters, ``losses:`` is
refused: the preset already is the loss list.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from edgekd.errors import EdgekdError
from edgekd.recipe import LossConfig as LossSpec
from edgekd.registry import Registry, summary_line

COMPOSE = "compose"  # the recipe's own `losses:` list
DEFAULT = "supervised"  # a recipe's method when it names none


@dataclass(frozen=True)
class Preset:
    name: str
    build: Callable[..., list[LossSpec]]  # build(task, **params) -> the loss list
    needs_teacher: bool
    paper: str = ""

    @property
    def summary(self) -> str:
        return summary_line(self.build)

    def params(self) -> list[str]:
        return list(inspect.signature(self.build).parameters)[1:]


PRESETS: Registry[Preset] = Registry("loss preset")


def register_preset(name: str, *, needs_teacher: bool, paper: str = "") -> Callable:
    def deco(fn: Callable[..., list[LossSpec]]) -> Callable[..., list[LossSpec]]:
        PRESETS.register(name)(Preset(name, fn, needs_teacher, paper))
        return fn

    return deco


def is_preset(name: str) -> bool:
    """True for a preset name and for ``compose`` (the recipe's `losses:` list)."""
    return name == COMPOSE or name in PRESETS


def preset_losses(
    name: str, params: dict[str, Any], losses: Sequence[LossSpec] | None, task: str, where: str = "losses"
) -> list[LossSpec]:
    """The loss list a run minimises: the recipe's ``losses`` for ``compose`` (or in place of the default
    preset), else preset ``name`` built with ``params`` (one-line errors naming the bad key)."""
    if losses and name == DEFAULT and not params:
        name = COMPOSE  # the default preset stands for "no method named": `losses:` is the loss
    if name == COMPOSE:
        if params:
            raise EdgekdError(f"method.params: {', '.join(sorted(params))} given, but {COMPOSE!r} takes none")
        if not losses:
            raise EdgekdError(f"{where}: method {COMPOSE!r} needs a `losses:` list")
        return list(losses)
    if losses:
        raise EdgekdError(
            f"recipe: method {name!r} is a loss preset (it defines its own losses); remove `losses:` or the method"
        )
    preset = PRESETS.get(name)
    unknown = sorted(set(params) - set(preset.params()))
    if unknown:
        raise EdgekdError(
            f"method.params: unknown key(s) {', '.join(unknown)} for method {name!r}; valid: {', '.join(preset.params())}"
        )
    try:
        return preset.build(task, **params)
    except TypeError as e:
        raise EdgekdError(f"method {name!r}: bad parameters ({e})") from None


def check_unit(key: str, value: float) -> None:
    """``method.params.<key>`` must lie in ``[0, 1]`` (a weight or a fraction)."""
    if not 0.0 <= value <= 1.0:
        raise EdgekdError(f"method.params.{key}={value}: must be in [0, 1]")


def check_positive(key: str, value: float) -> None:
    """``method.params.<key>`` must be > 0 (e.g. a temperature)."""
    if value <= 0:
        raise EdgekdError(f"method.params.{key}={value}: must be > 0")


def with_ce(name: str, alpha: float, params: dict[str, Any]) -> list[LossSpec]:
    """``alpha * loss name + (1 - alpha) * CE(y, softmax(z_s))`` (no CE term when ``alpha`` is 1)."""
    return [LossSpec(name, alpha, params)] + ([LossSpec("ce", 1.0 - alpha)] if alpha < 1.0 else [])


@register_preset(DEFAULT, needs_teacher=False)
def supervised(task: str, label_smoothing: float = 0.0) -> list[LossSpec]:
    """``L = CE(y, softmax(z_s))`` (classification) or ``mean (f(x) - x)^2`` (reconstruction): labels only."""
    if task == "reconstruction":
        return [LossSpec("recon-mse")]
    return [LossSpec("ce", 1.0, {"label_smoothing": label_smoothing})]


@register_preset("kd", needs_teacher=True, paper="Hinton, Vinyals & Dean 2015")
def hinton_kd(task: str, temperature: float = 4.0, alpha: float = 0.9) -> list[LossSpec]:
    """``L = (1 - a) * CE(y, softmax(z_s)) + a * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))``."""
    check_positive("temperature", temperature)
    check_unit("alpha", alpha)
    return with_ce("kd", alpha, {"temperature": float(temperature)})


@register_preset("privileged", needs_teacher=True, paper="Lopez-Paz et al., ICLR 2016")
def privileged(task: str, imitation: float = 0.5, temperature: float = 2.0) -> list[LossSpec]:
    """``(1 - l) CE(y, s(x)) + l CE(softmax(t(x*)/T), s(x))``: a teacher on privileged inputs teaches a student on x.

    The teacher reads the privileged input ``x*`` (``teacher: {path: ..., input: <name>}``; an ``.npz`` data
    set provides it as ``priv_<name>``), the student only ``x``; the export sees only ``x`` (``imitation``
    is lambda, ``temperature`` is T; the loss is ``generalized-kd``).
    """
    check_unit("imitation", imitation)
    check_positive("temperature", temperature)
    return with_ce("generalized-kd", imitation, {"temperature": float(temperature)})


@register_preset("wasserstein-kd", needs_teacher=True, paper="Kong et al., AAAI 2020")
def wasserstein_kd(
    task: str, eps: float = 0.1, temperature: float = 4.0, alpha: float = 0.9
) -> list[LossSpec]:
    """``L = a * L_W(S, T; eps) + (1 - a) * CE(y, softmax(z_s))`` (``a = 1`` uses no labels).

    ``L_W`` is the ``wasserstein-kd`` loss (:mod:`edgekd.distill.losses.wasserstein`)."""
    if eps < 0:
        raise EdgekdError(f"method.params.eps={eps}: must be >= 0 (the Wasserstein ball radius)")
    check_positive("temperature", temperature)
    check_unit("alpha", alpha)
    return with_ce("wasserstein-kd", alpha, {"eps": float(eps), "temperature": float(temperature)})
