"""Anomaly-detection metrics over per-time-step scores and 0/1 labels (1 = anomalous).

Prediction rule everywhere: a step is flagged when ``score >= threshold``.

Two threshold rules, always reported under their own names:

* **best** (``best_f1``): the threshold that maximises F1 *on the test labels*. It is what papers
  on SMD report, and an upper bound: a deployment never sees the test labels.
* **val** (``val_threshold``): fixed before the test set is seen, as the ``quantile`` (default 0.99)
  of the anomaly scores on the validation split (the last part of the normal training series), i.e.
  about 1% false alarms on normal data.

Point adjustment (Xu et al., 2018): when any step of a contiguous labelled anomaly segment is
flagged, the whole segment counts as detected. It inflates precision/recall and F1 and is reported
separately (``*_pa``), never mixed with the point-wise figures.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekd.errors import EdgekdError
from edgekd.metrics.ranks import average_ranks

DEFAULT_VAL_QUANTILE = 0.99


def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    if scores.shape != labels.shape:
        raise EdgekdError(f"anomaly metrics: {scores.size} scores but {labels.size} labels")
    if not np.isin(labels, (0, 1)).all():
        raise EdgekdError("anomaly metrics: labels must be 0 (normal) or 1 (anomaly)")
    if np.isnan(scores).any():
        raise EdgekdError("anomaly metrics: NaN in the scores (a time step covered by no window?)")
    return scores, labels.astype(np.int64)


def segments(labels: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous runs of 1 as ``[(start, end_exclusive), ...]``."""
    lab = np.asarray(labels).astype(np.int8).ravel()
    d = np.diff(np.concatenate([[0], lab, [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def point_adjust(pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Flag every step of a labelled segment in which at least one step is flagged."""
    out = np.asarray(pred).astype(np.int64).ravel().copy()
    for a, b in segments(labels):
        if out[a:b].any():
            out[a:b] = 1
    return out


def precision_recall_f1(pred: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Binary precision, recall and F1 with class 1 as positive (0.0 where undefined), and the counts."""
    y = np.asarray(labels).astype(bool)
    p = np.asarray(pred).astype(bool)
    tp, fp, fn = int((y & p).sum()), int((~y & p).sum()), int((y & ~p).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn}


def evaluate_threshold(
    scores: np.ndarray, labels: np.ndarray, threshold: float, *, adjust: bool = False
) -> dict[str, float]:
    """P/R/F1 of ``scores >= threshold`` (point-adjusted when ``adjust``), with the threshold."""
    scores, labels = _check(scores, labels)
    pred = (scores >= threshold).astype(np.int64)
    if adjust:
        pred = point_adjust(pred, labels)
    return {**precision_recall_f1(pred, labels), "threshold": float(threshold)}


def best_f1(scores: np.ndarray, labels: np.ndarray, *, adjust: bool = False) -> dict[str, float]:
    """The threshold (among the score values) with the highest F1 on these labels, exactly.

    Point-wise: sort the scores once; the counts at every candidate threshold are cumulative sums.
    Point-adjusted: a segment is detected at threshold t iff its largest score is >= t, so the true
    positives at t are the total length of segments whose maximum is >= t; false positives are
    normal steps with score >= t. Both are monotone in t, so one sorted pass finds the optimum.
    Ties: the largest threshold reaching the best F1.
    """
    scores, labels = _check(scores, labels)
    n_pos = int(labels.sum())
    if n_pos == 0:
        raise EdgekdError("best_f1: the labels hold no anomaly; F1 is undefined")
    if adjust:
        segs = segments(labels)
        # events: each normal step contributes (score, fp=1); each segment (its max, tp=length)
        normal = scores[labels == 0]
        seg_max = np.array([scores[a:b].max() for a, b in segs])
        seg_len = np.array([b - a for a, b in segs], dtype=np.int64)
        ev_score = np.concatenate([normal, seg_max])
        ev_tp = np.concatenate([np.zeros(len(normal), np.int64), seg_len])
        ev_fp = np.concatenate([np.ones(len(normal), np.int64), np.zeros(len(segs), np.int64)])
    else:
        ev_score, ev_tp, ev_fp = scores, labels, 1 - labels
    order = np.argsort(-ev_score, kind="stable")
    s = ev_score[order]
    tp = np.cumsum(ev_tp[order])
    fp = np.cumsum(ev_fp[order])
    # a threshold equal to s[i] flags every event with score >= s[i]: take the last index of each tie
    last = np.flatnonzero(np.append(s[1:] != s[:-1], True))
    tp, fp, thr = tp[last], fp[last], s[last]
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / n_pos
    f1 = np.where(tp > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-300), 0.0)
    k = int(np.argmax(f1))  # first = largest threshold among equal F1
    return evaluate_threshold(scores, labels, float(thr[k]), adjust=adjust)


def val_threshold(val_scores: np.ndarray, quantile: float = DEFAULT_VAL_QUANTILE) -> float:
    """The ``quantile`` of the validation (normal) scores: the threshold a deployment can fix."""
    v = np.asarray(val_scores, dtype=np.float64).ravel()
    if not 0.0 < quantile <= 1.0:
        raise EdgekdError(f"val_threshold: quantile={quantile} must be in (0, 1]")
    if v.size == 0 or np.isnan(v).any():
        raise EdgekdError("val_threshold: the validation scores are empty or hold NaN")
    return float(np.quantile(v, quantile))


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve = P(score of an anomaly > score of a normal step), ties count 1/2
    (the Mann-Whitney rank statistic with average ranks); ``None`` when one class is missing."""
    scores, labels = _check(scores, labels)
    y = labels.astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = average_ranks(scores)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def anomaly_report(
    test_scores: np.ndarray,
    test_labels: np.ndarray,
    val_scores: np.ndarray,
    *,
    quantile: float = DEFAULT_VAL_QUANTILE,
) -> dict[str, Any]:
    """Every figure for one machine: both threshold rules, point-wise and point-adjusted, and AUC."""
    thr = val_threshold(val_scores, quantile)
    rows = {
        "best": best_f1(test_scores, test_labels),
        "val": evaluate_threshold(test_scores, test_labels, thr),
        "pa_best": best_f1(test_scores, test_labels, adjust=True),
        "pa_val": evaluate_threshold(test_scores, test_labels, thr, adjust=True),
    }
    auc = roc_auc(test_scores, test_labels)
    if auc is None:
        raise EdgekdError("roc_auc: needs both normal and anomalous steps")
    out: dict[str, Any] = {"auc": auc, "val_quantile": quantile}
    for name, r in rows.items():
        out[f"f1_{name}"] = r["f1"]
        out[f"p_{name}"] = r["precision"]
        out[f"r_{name}"] = r["recall"]
        out[f"threshold_{name}"] = r["threshold"]
    return out


def mean_report(reports: list[dict[str, Any]]) -> dict[str, float]:
    """The unweighted mean over machines of every numeric figure."""
    if not reports:
        raise EdgekdError("mean_report: no machine reports")
    keys = [k for k, v in reports[0].items() if isinstance(v, int | float) and not k.startswith("threshold")]
    return {k: float(np.mean([r[k] for r in reports])) for k in keys}
