"""Schemes: how runs are organised above the training loop (one file each, ``@register_scheme``).

A scheme gets a :class:`SchemeContext`: the recipe, the scheme's root folder, the data splits the runner
already loaded, the teacher and a ``train_once(recipe, run_dir, teacher)`` callback that performs one
ordinary run (validated, checkpointed, resumable) and returns its run folder. It decides how many runs
there are and which teacher each one gets; the last run it returns is the final network. ``single`` is
one run.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.data import DataSplits
from edgekd.errors import EdgekdError
from edgekd.recipe import Recipe
from edgekd.registry import Registry
from edgekd.runfolder import RunFolder

# (recipe, run_dir, teacher: a model path, several (an ensemble) or None) -> the finished run folder
TrainOnce = Callable[[Recipe, Path, "str | list[str] | None"], RunFolder]


@dataclass(frozen=True)
class SchemeContext:
    """What a scheme works with; the data is loaded once, by the runner."""

    recipe: Recipe
    root: Path  # the scheme's run folder: every run and file it makes lives inside
    splits: DataSplits
    train_once: TrainOnce
    teacher: str | None  # the recipe's teacher (a model file), or None


class Scheme:
    """Base class; subclasses validate their params in ``__init__`` and implement :meth:`run`."""

    def run(self, ctx: SchemeContext) -> list[RunFolder]:
        """Train the scheme's runs inside ``ctx.root``; the last one is the final network."""
        raise NotImplementedError


SCHEMES: Registry[type[Scheme]] = Registry("scheme")
register_scheme = SCHEMES.register


def build_scheme(name: str, params: dict[str, Any]) -> Scheme:
    cls = SCHEMES.get(name)
    valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise EdgekdError(
            f"scheme.params: unknown key(s) {', '.join(unknown)} for scheme {name!r}; valid: {', '.join(valid)}"
        )
    return cls(**params)


@register_scheme("single")
class Single(Scheme):
    """One run: the recipe's method trains one student (default)."""

    def run(self, ctx: SchemeContext) -> list[RunFolder]:
        return [ctx.train_once(ctx.recipe, ctx.root, ctx.teacher)]
