"""Specialists (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network", section 5).

A generalist (``teacher.path``, or ``generalist:``) predicts the training split; the covariance of its
predicted class probabilities is clustered (K-means on its rows, ``subsets`` clusters) into sets of
classes that it confuses. Each specialist has the generalist's architecture, starts from its weights
(except the classifier), and learns its subset plus one *dustbin* class for everything else, on its
subset's examples and as many (``dustbin_fraction``) others relabelled dustbin. The generalist and the
specialists, combined per example (:class:`edgekd.models.ensemble.SpecialistEnsemble`), are saved as
``teacher-specialists.pt`` and teach the student (``student/``, the recipe's method);
``specialists.json`` records the subsets and each network's accuracy.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
from torch import nn

from edgekd.atomic import atomic_write_json
from edgekd.data import ArrayDataset
from edgekd.distill.methods import build_method
from edgekd.distill.schemes.base import Scheme, SchemeContext, register_scheme
from edgekd.distill.schemes.library import (
    load_members,
    log_probs,
    member_spec,
    need_val,
    train_student,
)
from edgekd.distill.train import Trainer
from edgekd.errors import EdgekdError
from edgekd.metrics.classification import accuracy
from edgekd.models import build_model, load_model, save_model
from edgekd.models.ensemble import SpecialistEnsemble
from edgekd.runfolder import RunFolder


def cluster_classes(cov: np.ndarray, k: int, iters: int = 50) -> list[list[int]]:
    """K-means on the rows of the class covariance matrix (deterministic farthest-point start)."""
    c = len(cov)
    centers = [int(np.argmax(np.diag(cov)))]
    while len(centers) < k:
        d = np.min([((cov - cov[j]) ** 2).sum(1) for j in centers], axis=0)
        centers.append(int(np.argmax(d)))
    mu = cov[centers].copy()
    labels = np.zeros(c, dtype=int)
    for _ in range(iters):
        labels = np.argmin(((cov[:, None, :] - mu[None]) ** 2).sum(2), axis=1)
        for j in range(k):
            if not (labels == j).any():  # an empty cluster takes the worst-fitting class
                far = np.argmax(((cov - mu[labels]) ** 2).sum(1))
                labels[far] = j
            mu[j] = cov[labels == j].mean(0)
    return [sorted(np.flatnonzero(labels == j).tolist()) for j in range(k)]


def specialist_data(
    data: ArrayDataset, subset: list[int], fraction: float, rng: np.random.Generator
) -> ArrayDataset:
    """The subset's examples (labels 0..|S|-1) plus ``fraction`` x as many others labelled ``|S|``."""
    inside = np.isin(data.y, subset)
    idx_in = np.flatnonzero(inside)
    idx_out = np.flatnonzero(~inside)
    n_out = min(len(idx_out), int(round(fraction * len(idx_in))))
    idx = np.concatenate([idx_in, rng.choice(idx_out, size=n_out, replace=False)])
    remap = {c: i for i, c in enumerate(subset)}
    y = np.array([remap.get(int(v), len(subset)) for v in data.y[idx]], dtype=np.int64)
    return ArrayDataset(data.x[idx], y)


def _train_specialist(folder: RunFolder, generalist: nn.Module, name: str, kw: dict[str, Any], subset: list[int],
                      data: tuple[ArrayDataset, ArrayDataset], cfg: Any, seed: int, task: str) -> nn.Module:  # fmt: skip
    """One specialist, started from the generalist's weights; a resumed scheme reuses a finished one (the
    folder can hold a model only on resume: a new run starts in an empty folder)."""
    if folder.model.exists():
        return load_model(folder.model)[0]
    net = build_model(name, **kw)
    own = net.state_dict()
    net.load_state_dict({k: v for k, v in generalist.state_dict().items() if k in own and v.shape == own[k].shape},
                        strict=False)  # fmt: skip
    distiller = build_method("supervised", net, None, {}, task=task)
    Trainer(distiller, cfg, folder, seed=seed, progress=False).fit(*data)
    save_model(folder.model, net, name, kw, meta={"subset": subset})
    return net


@register_scheme("specialists")
class Specialists(Scheme):
    """A generalist plus specialists on confusable class subsets (each with a dustbin class) as the teacher."""

    def __init__(
        self,
        subsets: int = 2,
        generalist: str | None = None,
        epochs: int | None = None,
        dustbin_fraction: float = 1.0,
        top_n: int = 1,
        seed: int = 0,
    ) -> None:
        if subsets < 1:
            raise EdgekdError(f"scheme.params.subsets={subsets}: needs at least 1 specialist subset")
        if epochs is not None and epochs < 1 or dustbin_fraction < 0 or top_n < 1:
            raise EdgekdError("scheme.params: epochs and top_n must be >= 1, dustbin_fraction >= 0")
        self.k, self.generalist, self.epochs = int(subsets), generalist, epochs
        self.fraction, self.top_n, self.seed = float(dustbin_fraction), int(top_n), int(seed)

    def run(self, ctx: SchemeContext) -> list[RunFolder]:
        recipe, root, splits = ctx.recipe, ctx.root, ctx.splits
        path = self.generalist or ctx.teacher
        if path is None:
            raise EdgekdError(
                "scheme specialists: needs a generalist: set teacher.path or scheme.params.generalist"
            )
        need_val(splits, "specialists")
        if self.k * 2 > splits.num_classes:
            raise EdgekdError(
                f"scheme.params.subsets={self.k}: more specialist subsets than the {splits.num_classes} classes "
                f"allow (each subset needs at least 2 classes); use at most {splits.num_classes // 2}"
            )
        [(gen, record, gen_file)] = load_members([path], root)
        p = log_probs(gen, splits.train.x).exp().numpy()
        subsets = cluster_classes(np.cov(p, rowvar=False), self.k)
        rng = np.random.default_rng(self.seed)
        cfg = replace(recipe.train, epochs=self.epochs or recipe.train.epochs)
        specs, nets, report = [], [], []
        for m, subset in enumerate(subsets):
            kw = {**record["kwargs"], "num_classes": len(subset) + 1}
            # drawn even when a finished specialist is reused: the next subsets then get the same examples
            data = (specialist_data(splits.train, subset, self.fraction, rng),
                    specialist_data(splits.val, subset, self.fraction, rng))  # fmt: skip
            folder = RunFolder(root / f"specialist-{m + 1}").ensure()
            net = _train_specialist(
                folder, gen, record["name"], kw, subset, data, cfg, recipe.seed + m, splits.task
            )
            specs.append({"name": record["name"], "kwargs": kw})
            nets.append(net)
            val_sub = specialist_data(splits.val, subset, self.fraction, np.random.default_rng(0))
            report.append(
                {
                    "subset": subset,
                    "val_accuracy_with_dustbin": accuracy(log_probs(net, val_sub.x), val_sub.y),
                }
            )
        kwargs = {"generalist": member_spec(record), "specialists": specs, "subsets": subsets, "top_n": self.top_n,
                  "input_shape": list(splits.input_shape), "num_classes": splits.num_classes}  # fmt: skip
        ens = SpecialistEnsemble(**kwargs)
        ens.generalist.load_state_dict(gen.state_dict())
        for dst, src in zip(ens.specialists, nets):
            dst.load_state_dict(src.state_dict())
        ens_path = save_model(root / "teacher-specialists.pt", ens, "specialist-ensemble", kwargs)
        combined, _ = load_model(ens_path)
        record_out = {  # log_probs runs without gradients
            "generalist": str(gen_file), "subsets": subsets, "specialists": report,
            "generalist_test_accuracy": accuracy(log_probs(gen, splits.test.x), splits.test.y),
            "combined_test_accuracy": accuracy(log_probs(combined, splits.test.x), splits.test.y),
        }  # fmt: skip
        atomic_write_json(root / "specialists.json", record_out)
        return train_student(ctx, ens_path)
