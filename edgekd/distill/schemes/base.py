"""Schemes: how runs are organised above the training loop (one file each, ``@register_scheme``).

A scheme gets the recipe and a ``train(recipe, run_dir, teacher_path)`` callback that performs one
ordinary run (validated, checkpointed, resumable) and returns its run folder; it decides how many runs
there are and which teacher each one gets, then names the final network. ``single`` is one run.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekd.errors import EdgekdError
from edgekd.registry import Registry

TrainOnce = Callable[..., Any]  # (recipe, run_dir: Path, teacher: str | None) -> RunFolder


class Scheme:
    """Base class; subclasses validate their params in ``__init__`` and implement :meth:`run`."""

    def run(self, recipe: Any, root: Path, train: TrainOnce, teacher: str | None) -> Any:
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

    def run(self, recipe: Any, root: Path, train: TrainOnce, teacher: str | None) -> Any:
        return train(recipe, root, teacher)
