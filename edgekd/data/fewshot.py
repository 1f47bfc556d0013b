"""Few-shot sampling: keep N training examples (in total or per class), stratified and seeded.

Used for few-shot distillation (Kong et al., "Learning Student Networks with Few Data", AAAI 2020).
Only the training split is reduced; validation and test splits are returned unchanged, and the rows of
the training split that are not sampled are never passed on.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from edgekd.data.registry import ArrayDataset, DataSplits
from edgekd.errors import EdgekdError
from edgekd.recipe import FewShotConfig

KEY = "data.few_shot.size"


def few_shot_indices(y: np.ndarray, size: int, *, per_class: bool = False, seed: int = 0) -> np.ndarray:
    """Sorted row indices of a stratified, seeded sample of ``y``.

    * ``per_class``: exactly ``size`` rows of every class present in ``y``.
    * otherwise: ``size`` rows in total, allocated to classes in proportion to their frequency
      (largest remainder, ties broken by the seeded generator), at least one per class.

    Raises :class:`EdgekdError` naming ``data.few_shot.size`` when the request cannot be met.
    """
    y = np.asarray(y)
    size = int(size)
    classes, counts = np.unique(y, return_counts=True)
    k = len(classes)
    if k == 0:
        raise EdgekdError(f"{KEY}: the training split is empty; nothing to sample")
    if size < 1:
        raise EdgekdError(f"{KEY}={size}: must be >= 1")
    rng = np.random.default_rng(seed)
    if per_class:
        if size > counts.min():
            c = classes[int(counts.argmin())]
            raise EdgekdError(
                f"{KEY}={size} per class is larger than the data: class {c} has only {counts.min()} "
                "training examples; lower it"
            )
        alloc = np.full(k, size, dtype=np.int64)
    else:
        if size > len(y):
            raise EdgekdError(
                f"{KEY}={size} is larger than the data: the training split has {len(y)} examples; lower it"
            )
        if size < k:
            raise EdgekdError(
                f"{KEY}={size} is smaller than the number of classes ({k}); use at least {k} "
                "(one example per class)"
            )
        alloc = _allocate(counts, size, rng)
    picked = []
    for c, n in zip(classes, alloc):
        idx = np.flatnonzero(y == c)
        picked.append(rng.choice(idx, size=int(n), replace=False))
    return np.sort(np.concatenate(picked)).astype(np.int64)


def _allocate(counts: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Split ``size`` over classes proportionally to ``counts`` (>= 1 each, <= count each)."""
    k = len(counts)
    base = np.ones(k, dtype=np.int64)
    rest = size - k
    share = counts / counts.sum() * rest
    alloc = base + np.floor(share).astype(np.int64)
    left = size - int(alloc.sum())
    if left > 0:
        frac = share - np.floor(share)
        order = np.lexsort((rng.random(k), -frac))  # largest remainder first, random tie-break
        for i in order[:left]:
            alloc[i] += 1
    # never ask for more rows than a class has: move the excess to classes with room
    over = alloc - counts
    while (over > 0).any():
        i = int(np.argmax(over))
        alloc[i] -= 1
        room = np.flatnonzero(alloc < counts)
        alloc[room[int(rng.integers(len(room)))]] += 1
        over = alloc - counts
    return alloc


def apply_few_shot(splits: DataSplits, cfg: FewShotConfig) -> DataSplits:
    """Return ``splits`` whose training split holds only the few-shot sample (val/test untouched).

    The sampled indices (into the original training split) are recorded in ``info["few_shot"]``.
    Normalisation statistics are kept as computed by ``load_data``.
    """
    idx = few_shot_indices(splits.train.y, cfg.size, per_class=cfg.per_class, seed=cfg.seed)
    targets = {k: v[idx].copy() for k, v in splits.train.targets.items()}  # detection boxes stay with images
    train = ArrayDataset(splits.train.x[idx].copy(), splits.train.y[idx].copy(), targets=targets)
    counts = {str(int(c)): int(n) for c, n in zip(*np.unique(train.y, return_counts=True))}
    info = dict(splits.info)
    info["few_shot"] = {
        "size": int(cfg.size),
        "per_class": bool(cfg.per_class),
        "seed": int(cfg.seed),
        "examples": len(idx),
        "from": len(splits.train),
        "per_class_counts": counts,
        "indices": idx.tolist(),
    }
    return dataclasses.replace(splits, train=train, info=info)


__all__ = ["apply_few_shot", "few_shot_indices"]
