"""Ensemble selection from a library of models (Caruana, Niculescu-Mizil, Crew & Ksikes, ICML 2004).

On the validation split: start from the ``init`` best models (sorted initialisation), then ``size`` times
add, *with replacement*, the library model that most improves the ensemble (the average of the chosen
models' probabilities; ``metric: accuracy``, ties broken by log-loss, or ``metric: log-loss``). With
``bags > 1`` the selection is repeated on random subsets of ``bag_fraction`` of the library and the
counts are summed. The chosen ensemble (models weighted by how often they were picked) is saved as
``ensemble.pt`` and teaches the student (``student/``, the recipe's method); ``selection.json`` records
the library, every step and the weights.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from edgekd.atomic import atomic_write_json
from edgekd.distill.schemes.base import Scheme, SchemeContext, register_scheme
from edgekd.distill.schemes.library import (
    load_members,
    log_probs,
    need_val,
    save_ensemble,
    train_student,
)
from edgekd.errors import EdgekdError
from edgekd.metrics.classification import accuracy
from edgekd.models import load_model
from edgekd.runfolder import RunFolder

METRICS = ("accuracy", "log-loss")


def _score(logp: torch.Tensor, y: torch.Tensor, metric: str) -> tuple[float, float]:
    """Higher is better: (accuracy, -log-loss) or (-log-loss, accuracy)."""
    acc = float((logp.argmax(1) == y).float().mean())
    nll = float(-logp.gather(1, y[:, None]).mean())
    return (acc, -nll) if metric == "accuracy" else (-nll, acc)


def select(
    logps: list[torch.Tensor], y: np.ndarray, size: int, init: int, metric: str, candidates: list[int]
) -> tuple[list[int], list[dict[str, Any]]]:
    """Forward selection with replacement among ``candidates``; returns the picks and a step record."""
    yt = torch.from_numpy(np.asarray(y))
    probs = [lp.exp() for lp in logps]
    ranked = sorted(candidates, key=lambda k: _score(logps[k], yt, metric), reverse=True)
    picks = ranked[:init]
    total = sum(probs[k] for k in picks)
    steps = [{"step": 0, "added": picks, "score": _score((total / len(picks)).log(), yt, metric)[0]}]
    for s in range(1, size + 1):
        best = max(
            candidates, key=lambda k: _score(((total + probs[k]) / (len(picks) + 1)).log(), yt, metric)
        )
        picks.append(best)
        total = total + probs[best]
        steps.append({"step": s, "added": [best], "score": _score((total / len(picks)).log(), yt, metric)[0]})
    return picks, steps


@register_scheme("ensemble-selection")
class EnsembleSelection(Scheme):
    """Caruana ensemble selection from a library of trained models; the chosen ensemble teaches the student."""

    def __init__(
        self,
        library: list[str] | None = None,
        size: int = 10,
        init: int = 1,
        metric: str = "accuracy",
        bags: int = 1,
        bag_fraction: float = 0.5,
        seed: int = 0,
    ) -> None:
        library = list(library or [])
        if len(library) < 2:
            raise EdgekdError(
                f"scheme.params.library holds {len(library)} model(s); ensemble selection needs at least 2 "
                "(run folders or .pt files)"
            )
        if not 1 <= init <= len(library):
            raise EdgekdError(
                f"scheme.params.init={init}: asks for {init} model(s) but the library holds {len(library)}"
            )
        if size < 0 or bags < 1 or not 0 < bag_fraction <= 1 or metric not in METRICS:
            raise EdgekdError(
                "scheme.params: size must be >= 0, bags >= 1, bag_fraction in (0, 1], metric one of "
                + ", ".join(METRICS)
            )
        if bags > 1 and max(1, round(bag_fraction * len(library))) < init:
            raise EdgekdError(
                f"scheme.params.init={init}: each bag holds only {round(bag_fraction * len(library))} model(s)"
            )
        self.library, self.size, self.init, self.metric = library, int(size), int(init), metric
        self.bags, self.bag_fraction, self.seed = int(bags), float(bag_fraction), int(seed)

    def run(self, ctx: SchemeContext) -> list[RunFolder]:
        root, splits = ctx.root, ctx.splits
        need_val(splits, "ensemble-selection")
        members = load_members(self.library, root)
        for _, rec, f in members:
            kw = rec.get("kwargs", {})
            if "num_classes" in kw and int(kw["num_classes"]) != splits.num_classes:
                raise EdgekdError(
                    f"{f}: predicts {kw['num_classes']} classes, the data set has {splits.num_classes}"
                )
        val = [log_probs(m, splits.val.x) for m, _, _ in members]
        rng = np.random.default_rng(self.seed)
        counts = np.zeros(len(members), dtype=int)
        bags = []
        for _ in range(self.bags):
            cand = list(range(len(members)))
            if self.bags > 1:
                k = max(self.init, round(self.bag_fraction * len(members)))
                cand = sorted(rng.choice(len(members), size=k, replace=False).tolist())
            picks, steps = select(val, splits.val.y, self.size, self.init, self.metric, cand)
            np.add.at(counts, picks, 1)
            bags.append({"candidates": cand, "picks": picks, "steps": steps})
        chosen = [i for i in range(len(members)) if counts[i] > 0]
        ens_path = save_ensemble(root / "ensemble.pt", [(members[i][0], members[i][1]) for i in chosen],
                                 [int(counts[i]) for i in chosen], splits)  # fmt: skip
        ens, _ = load_model(ens_path)
        record = {
            "library": [{"path": str(f), "val_accuracy": accuracy(lp, splits.val.y),
                         "test_accuracy": accuracy(log_probs(m, splits.test.x), splits.test.y)}
                        for (m, _, f), lp in zip(members, val)],  # fmt: skip
            "metric": self.metric, "size": self.size, "init": self.init, "bags": bags,
            "weights": {str(members[i][2]): int(counts[i]) for i in chosen},
            "ensemble_val_accuracy": accuracy(log_probs(ens, splits.val.x), splits.val.y),
            "ensemble_test_accuracy": accuracy(log_probs(ens, splits.test.x), splits.test.y),
        }  # fmt: skip
        atomic_write_json(root / "selection.json", record)
        return train_student(ctx, ens_path)
