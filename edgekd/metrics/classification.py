"""Classification metrics: top-k accuracy, agreement and KL divergence to a teacher, confusion matrix,
per-class accuracy and the student-vs-teacher cross table (outputs first, labels second)."""

from __future__ import annotations

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


def topk_accuracy(outputs: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Fraction of rows whose true label is among the ``k`` largest outputs."""
    outputs = np.asarray(outputs)
    labels = np.asarray(labels)
    if k == 1:
        return float((outputs.argmax(1) == labels).mean())
    top = np.argsort(-outputs, axis=1, kind="stable")[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def accuracy(outputs: np.ndarray, labels: np.ndarray | None) -> float | None:
    """Top-1 accuracy of outputs of any shape ``(N, ...)`` (flattened per row); None without labels."""
    if labels is None or len(labels) == 0:
        return None
    return topk_accuracy(np.asarray(outputs).reshape(len(outputs), -1), np.asarray(labels)[: len(outputs)])


def agreement(pred_a: np.ndarray, pred_b: np.ndarray) -> float:
    """Fraction of samples where two models predict the same top-1 class."""
    return float((np.asarray(pred_a) == np.asarray(pred_b)).mean())


def top1_agreement(outputs_a: np.ndarray, outputs_b: np.ndarray) -> float:
    """:func:`agreement` of two models' arg-max over their common first rows (0.0 when empty)."""
    n = min(len(outputs_a), len(outputs_b))
    if not n:
        return 0.0
    return agreement(outputs_a[:n].reshape(n, -1).argmax(1), outputs_b[:n].reshape(n, -1).argmax(1))


def kl_divergence(p_teacher: np.ndarray, q_student: np.ndarray, eps: float = 1e-12) -> float:
    """Mean over samples of KL(teacher || student) = sum p log(p / q), in nats."""
    p = np.clip(np.asarray(p_teacher, dtype=np.float64), eps, 1.0)
    q = np.clip(np.asarray(q_student, dtype=np.float64), eps, 1.0)
    return float((p * (np.log(p) - np.log(q))).sum(axis=1).mean())


def confusion_matrix(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``cm[t, p]`` counts samples of true class ``t`` predicted as ``p``."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels, dtype=np.int64), np.asarray(pred, dtype=np.int64)), 1)
    return cm


def per_class_accuracy(cm: np.ndarray) -> list[float | None]:
    """Recall of each class from a confusion matrix (``None`` for classes absent from the data)."""
    support = cm.sum(axis=1)
    return [float(cm[i, i] / support[i]) if support[i] else None for i in range(len(cm))]


def cross_table(pred_teacher: np.ndarray, pred_student: np.ndarray, labels: np.ndarray) -> dict[str, int]:
    """ST-style validation cross table: counts of both correct / only teacher / only student / both wrong."""
    t = np.asarray(pred_teacher) == np.asarray(labels)
    s = np.asarray(pred_student) == np.asarray(labels)
    return {
        "both_correct": int((t & s).sum()),
        "only_teacher": int((t & ~s).sum()),
        "only_student": int((~t & s).sum()),
        "both_wrong": int((~t & ~s).sum()),
    }
