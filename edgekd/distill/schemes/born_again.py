"""Born-Again networks (Furlanello et al., ICML 2018): a chain of generations of the same architecture.

Generation 1 learns from the recipe's teacher (or from labels alone when there is none); generation
k > 1 learns from generation k-1 with the recipe's method (``kd`` with ``alpha: 1`` is BAN, teacher loss
only; ``alpha < 1`` is BAN+L, labels plus teacher). Each generation is an ordinary run folder
``gen-<k>/`` (resumable); the last generation is the final student, every generation is listed in
``networks.json``. With ``ensemble: true`` generation k > 2 learns from the ensemble of generations
1..k-1 (their outputs averaged: ``teacher.combine: mean-logits``, the mean reconstruction for
autoencoders) instead of generation k-1 alone.
"""

from __future__ import annotations

from dataclasses import replace

from edgekd.distill.methods import needs_teacher
from edgekd.distill.schemes.base import Scheme, SchemeContext, register_scheme
from edgekd.errors import EdgekdError
from edgekd.recipe import MethodConfig, SchemeConfig
from edgekd.runfolder import RunFolder


@register_scheme("born-again")
class BornAgain(Scheme):
    """K generations, each the teacher of the next (the result of one run becomes the next's teacher)."""

    def __init__(self, generations: int = 3, ensemble: bool = False) -> None:
        if generations < 1:
            raise EdgekdError(f"scheme.params.generations={generations}: needs at least 1 generation")
        self.generations = int(generations)
        self.ensemble = bool(ensemble)

    def run(self, ctx: SchemeContext) -> list[RunFolder]:
        recipe, teacher = ctx.recipe, ctx.teacher
        runs: list[RunFolder] = []
        for k in range(1, self.generations + 1):
            r = replace(recipe, name=f"gen-{k}", seed=recipe.seed + k - 1, scheme=SchemeConfig())
            if teacher is None and needs_teacher(recipe.method.name):
                # generation 1 without a teacher learns from labels (methods that need no teacher, e.g.
                # noisy-sequential, run as they are)
                r = replace(r, method=MethodConfig("supervised"), losses=[], teacher=None)
            runs.append(ctx.train_once(r, ctx.root / f"gen-{k}", teacher))
            teacher = [str(g.root) for g in runs] if self.ensemble and len(runs) > 1 else str(runs[-1].root)
        return runs
