"""Accuracy metrics in plain numpy: top-k, agreement and KL divergence to a teacher, per-class
accuracy, confusion matrix, the student-vs-teacher cross table, and binary detection metrics
(precision, recall, F1, ROC AUC by the rank statistic) for anomaly detection."""

from __future__ import annotations

from typing import Any

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def to_probs(outputs: np.ndarray, atol: float = 0.05) -> np.ndarray:
    """Model outputs as probabilities: rows that already look like probabilities (non-negative,
    summing to 1 within ``atol``, e.g. a dequantized softmax) are renormalised, logits get a softmax."""
    out = np.asarray(outputs, dtype=np.float64)
    if out.ndim == 2 and out.shape[1] > 1 and (out >= 0).all() and np.allclose(out.sum(1), 1.0, atol=atol):
        return out / out.sum(axis=1, keepdims=True)
    return softmax(out)


def topk_accuracy(outputs: np.ndarray, y: np.ndarray, k: int = 1) -> float:
    """Fraction of rows whose true label is among the ``k`` largest outputs."""
    outputs = np.asarray(outputs)
    y = np.asarray(y)
    if k == 1:
        return float((outputs.argmax(1) == y).mean())
    top = np.argsort(-outputs, axis=1, kind="stable")[:, :k]
    return float((top == y[:, None]).any(axis=1).mean())


def agreement(pred_a: np.ndarray, pred_b: np.ndarray) -> float:
    """Fraction of samples where two models predict the same top-1 class."""
    return float((np.asarray(pred_a) == np.asarray(pred_b)).mean())


def kl_divergence(p_teacher: np.ndarray, q_student: np.ndarray, eps: float = 1e-12) -> float:
    """Mean over samples of KL(teacher || student) = sum p log(p / q), in nats."""
    p = np.clip(np.asarray(p_teacher, dtype=np.float64), eps, 1.0)
    q = np.clip(np.asarray(q_student, dtype=np.float64), eps, 1.0)
    return float((p * (np.log(p) - np.log(q))).sum(axis=1).mean())


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``cm[t, p]`` counts samples of true class ``t`` predicted as ``p``."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def per_class_accuracy(cm: np.ndarray) -> list[float | None]:
    """Recall of each class from a confusion matrix (``None`` for classes absent from the data)."""
    support = cm.sum(axis=1)
    return [float(cm[i, i] / support[i]) if support[i] else None for i in range(len(cm))]


def cross_table(y: np.ndarray, pred_teacher: np.ndarray, pred_student: np.ndarray) -> dict[str, int]:
    """ST-style validation cross table: counts of both correct / only teacher / only student / both wrong."""
    t = np.asarray(pred_teacher) == np.asarray(y)
    s = np.asarray(pred_student) == np.asarray(y)
    return {
        "both_correct": int((t & s).sum()),
        "only_teacher": int((t & ~s).sum()),
        "only_student": int((~t & s).sum()),
        "both_wrong": int((~t & ~s).sum()),
    }


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC via the Mann-Whitney rank statistic (ties get average ranks); ``None`` if one class is missing."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = average_ranks(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def precision_recall_f1(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Binary precision, recall and F1 with class 1 as positive (0.0 where undefined)."""
    y = np.asarray(y_true).astype(bool)
    p = np.asarray(y_pred).astype(bool)
    tp, fp, fn = int((y & p).sum()), int((~y & p).sum()), int((y & ~p).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn}


def best_f1_threshold(y_true: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold (``score >= t`` is anomalous) that maximises F1 on the given data."""
    s = np.asarray(scores, dtype=np.float64)
    best_t, best_f1 = float(s.max()) if len(s) else 0.0, -1.0
    for t in np.unique(s):
        f1 = precision_recall_f1(y_true, s >= t)["f1"]
        if f1 > best_f1:
            best_t, best_f1 = float(t), f1
    return best_t


def classification_metrics(
    outputs: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    teacher_outputs: np.ndarray | None = None,
) -> dict[str, Any]:
    """Everything the report shows for a classifier, optionally compared with a teacher's outputs."""
    outputs = np.asarray(outputs, dtype=np.float64)
    pred = outputs.argmax(1)
    cm = confusion_matrix(y, pred, num_classes)
    res: dict[str, Any] = {
        "task": "classification",
        "n": int(len(y)),
        "top1": topk_accuracy(outputs, y, 1),
        "top5": topk_accuracy(outputs, y, 5) if num_classes > 5 else None,
        "per_class_accuracy": per_class_accuracy(cm),
        "confusion_matrix": cm.tolist(),
    }
    if num_classes == 2:
        probs = to_probs(outputs)
        res["detection"] = {**precision_recall_f1(y, pred == 1), "auc": roc_auc(y, probs[:, 1])}
    if teacher_outputs is not None:
        t_out = np.asarray(teacher_outputs, dtype=np.float64)
        t_pred = t_out.argmax(1)
        res["vs_teacher"] = {
            "agreement": agreement(pred, t_pred),
            "kl_divergence": kl_divergence(to_probs(t_out), to_probs(outputs)),
            "cross_table": cross_table(y, t_pred, pred),
        }
    return res


def anomaly_metrics(
    scores: np.ndarray, y: np.ndarray, teacher_scores: np.ndarray | None = None
) -> dict[str, Any]:
    """Anomaly detection (label 1 = anomaly, higher score = more anomalous): AUC, and precision,
    recall, F1 at the best-F1 threshold on this data (optimistic; labelled as such)."""
    scores = np.asarray(scores, dtype=np.float64)
    t = best_f1_threshold(y, scores)
    pred = scores >= t
    res: dict[str, Any] = {
        "task": "anomaly",
        "n": int(len(y)),
        "auc": roc_auc(y, scores),
        **precision_recall_f1(y, pred),
        "threshold": t,
        "threshold_rule": "best F1 on the test data",
        "confusion_matrix": confusion_matrix(y, pred.astype(np.int64), 2).tolist(),
    }
    if teacher_scores is not None:
        ts = np.asarray(teacher_scores, dtype=np.float64)
        t_pred = ts >= best_f1_threshold(y, ts)
        res["vs_teacher"] = {
            "agreement": agreement(pred, t_pred),
            "kl_divergence": None,
            "cross_table": cross_table(y, t_pred.astype(np.int64), pred.astype(np.int64)),
        }
    return res


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


def reconstruction_scores(outputs: np.ndarray, inputs: np.ndarray) -> np.ndarray:
    """Per-sample anomaly score of an autoencoder: mean squared reconstruction error."""
    out = np.asarray(outputs, dtype=np.float64).reshape(len(outputs), -1)
    ref = np.asarray(inputs, dtype=np.float64).reshape(len(inputs), -1)
    if out.shape != ref.shape:
        raise ValueError(f"reconstruction output has {out.shape[1]} values per sample, input {ref.shape[1]}")
    return ((out - ref) ** 2).mean(axis=1)


def sqnr_db(got: np.ndarray, reference: np.ndarray) -> float | None:
    """Signal-to-quantization-noise ratio of ``got`` against ``reference`` in dB (None if identical)."""
    ref = np.asarray(reference, dtype=np.float64).ravel()
    noise = float(((np.asarray(got, dtype=np.float64).ravel() - ref) ** 2).sum())
    return float(10 * np.log10(float((ref**2).sum()) / noise)) if noise > 0 else None


def reconstruction_metrics(outputs: np.ndarray, reference: np.ndarray, inputs: np.ndarray) -> dict[str, Any]:
    """A quantized (or converted) autoencoder against the float one on the same inputs: max |error|,
    SQNR (dB; None when identical) and the Spearman rank correlation of per-sample anomaly scores."""
    n = min(len(outputs), len(reference), len(inputs))
    got, ref = outputs[:n].reshape(n, -1), reference[:n].reshape(n, -1)
    s_got, s_ref = reconstruction_scores(got, inputs[:n]), reconstruction_scores(ref, inputs[:n])
    return {
        "max_abs_error": float(np.max(np.abs(got - ref))) if n else None,
        "sqnr_db": sqnr_db(got, ref),
        "score_spearman": spearman(s_got, s_ref),
    }
