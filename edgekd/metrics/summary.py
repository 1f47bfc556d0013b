"""The metric bundles a profile report row shows: a classifier's, or an anomaly detector's, each
optionally compared with a teacher on the same data (outputs first, labels second)."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekd.metrics.anomaly import best_f1, precision_recall_f1, roc_auc
from edgekd.metrics.classification import (
    agreement,
    confusion_matrix,
    cross_table,
    kl_divergence,
    per_class_accuracy,
    to_probs,
    topk_accuracy,
)


def classification_metrics(
    outputs: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    teacher_outputs: np.ndarray | None = None,
) -> dict[str, Any]:
    """Everything the report shows for a classifier, optionally compared with a teacher's outputs."""
    outputs = np.asarray(outputs, dtype=np.float64)
    pred = outputs.argmax(1)
    cm = confusion_matrix(pred, labels, num_classes)
    res: dict[str, Any] = {
        "task": "classification",
        "n": int(len(labels)),
        "top1": topk_accuracy(outputs, labels, 1),
        "top5": topk_accuracy(outputs, labels, 5) if num_classes > 5 else None,
        "per_class_accuracy": per_class_accuracy(cm),
        "confusion_matrix": cm.tolist(),
    }
    if num_classes == 2:
        probs = to_probs(outputs)
        res["detection"] = {**precision_recall_f1(pred == 1, labels), "auc": roc_auc(probs[:, 1], labels)}
    if teacher_outputs is not None:
        t_out = np.asarray(teacher_outputs, dtype=np.float64)
        t_pred = t_out.argmax(1)
        res["vs_teacher"] = {
            "agreement": agreement(pred, t_pred),
            "kl_divergence": kl_divergence(to_probs(t_out), to_probs(outputs)),
            "cross_table": cross_table(t_pred, pred, labels),
        }
    return res


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """:func:`~edgekd.metrics.anomaly.best_f1`'s threshold; the smallest score when the labels hold no
    anomaly (every threshold then has F1 0 and flags something normal)."""
    if not np.asarray(labels).any():
        return float(np.min(scores)) if len(scores) else 0.0
    return best_f1(scores, labels)["threshold"]


def anomaly_metrics(
    scores: np.ndarray, labels: np.ndarray, teacher_scores: np.ndarray | None = None
) -> dict[str, Any]:
    """Anomaly detection (label 1 = anomaly, higher score = more anomalous): AUC, and precision,
    recall, F1 at the best-F1 threshold on this data (optimistic; labelled as such)."""
    scores = np.asarray(scores, dtype=np.float64)
    threshold = best_threshold(scores, labels)
    pred = scores >= threshold
    res: dict[str, Any] = {
        "task": "anomaly",
        "n": int(len(labels)),
        "auc": roc_auc(scores, labels),
        **precision_recall_f1(pred, labels),
        "threshold": threshold,
        "threshold_rule": "best F1 on the test data",
        "confusion_matrix": confusion_matrix(pred.astype(np.int64), labels, 2).tolist(),
    }
    if teacher_scores is not None:
        ts = np.asarray(teacher_scores, dtype=np.float64)
        t_pred = ts >= best_threshold(ts, labels)
        res["vs_teacher"] = {
            "agreement": agreement(pred, t_pred),
            "kl_divergence": None,
            "cross_table": cross_table(t_pred.astype(np.int64), pred.astype(np.int64), labels),
        }
    return res
