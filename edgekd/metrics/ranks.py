"""Rank statistics shared by ROC AUC and the Spearman correlation."""

from __future__ import annotations

import numpy as np


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks with ties sharing their average rank."""
    s = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]]) if len(s) else np.array([], int)
    ends = np.r_[starts[1:], len(s)]
    # every tie block [a, b) gets (a + 1 + b) / 2, spread over its members without a Python loop
    ranks[order] = np.repeat((starts + 1 + ends) / 2.0, ends - starts)
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman rank correlation (Pearson on average ranks); None for fewer than 2 samples or constant input."""
    if len(a) < 2:
        return None
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = float(np.sqrt((ra**2).sum() * (rb**2).sum()))
    return float((ra * rb).sum() / den) if den else None
