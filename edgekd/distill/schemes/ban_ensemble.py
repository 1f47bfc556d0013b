"""Born-Again networks with the ensemble of generations (Furlanello et al., ICML 2018, "BAN ensembles").

The ``born-again`` chain (generation k learns from k-1; ``kd`` with ``alpha: 1`` is BAN, ``alpha < 1``
BAN+L), then the average of the generations' probabilities: ``ensemble.pt`` (all generations, a
rebuildable ``ensemble`` model) and ``ensemble.json`` with each generation's test accuracy and that of the
ensemble of generations 1..k for every k. The last generation stays the exported student.
"""

from __future__ import annotations

import torch

from edgekd.atomic import atomic_write_json
from edgekd.distill.schemes.base import SchemeContext, register_scheme
from edgekd.distill.schemes.born_again import BornAgain
from edgekd.distill.schemes.library import load_members, log_probs, save_ensemble
from edgekd.metrics.classification import accuracy
from edgekd.runfolder import RunFolder


@register_scheme("born-again-ensemble")
class BornAgainEnsemble(BornAgain):
    """Born-Again generations plus the ensemble of generations (recorded, saved as ``ensemble.pt``)."""

    def run(self, ctx: SchemeContext) -> list[RunFolder]:
        runs = super().run(ctx)
        root, splits = ctx.root, ctx.splits
        members = load_members([str(r.trained_model()) for r in runs], root)
        lps = [log_probs(m, splits.test.x) for m, _, _ in members]
        rows = []
        for k in range(1, len(runs) + 1):
            ens = torch.logsumexp(torch.stack(lps[:k]), dim=0)  # the 1/k constant does not change the argmax
            rows.append({"generation": k, "test_accuracy": accuracy(lps[k - 1], splits.test.y),
                         f"ensemble_1_{k}_test_accuracy": accuracy(ens, splits.test.y)})  # fmt: skip
        save_ensemble(root / "ensemble.pt", [(m, r) for m, r, _ in members], [1.0] * len(members), splits)
        atomic_write_json(root / "ensemble.json", {"generations": rows, "combine": "mean-probs"})
        return runs
