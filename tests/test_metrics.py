"""edgekd.metrics: accuracy, agreement, KL, confusion, cross table, P/R/F1 and AUC by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgekd.metrics import anomaly, summary
from edgekd.metrics import classification as acc

Y = np.array([0, 1, 2, 2, 1, 0])
# student logits: predictions 0, 2, 2, 1, 1, 0 -> 4/6 correct
S = np.array([[3, 1, 0], [0, 1, 2], [0, 0, 5], [0, 4, 1], [1, 3, 2], [2, 1, 1]], dtype=float)
# teacher logits: predictions 0, 1, 2, 2, 0, 1 -> 4/6 correct
T = np.array([[3, 0, 0], [0, 3, 0], [0, 0, 3], [0, 1, 3], [3, 1, 0], [0, 3, 1]], dtype=float)


def test_top1_topk_and_agreement() -> None:
    assert acc.topk_accuracy(S, Y, 1) == pytest.approx(4 / 6)
    assert acc.topk_accuracy(S, Y, 2) == pytest.approx(6 / 6)  # sample 3: label 2 is second (1 vs 4)
    # predictions: student 0,2,2,1,1,0; teacher 0,1,2,2,0,1 -> equal at 0 and 2 only
    assert acc.agreement([0, 2, 2, 1, 1, 0], [0, 1, 2, 2, 0, 1]) == pytest.approx(2 / 6)


def test_kl_divergence_by_hand() -> None:
    p = np.array([[0.5, 0.5], [0.9, 0.1]])
    q = np.array([[0.25, 0.75], [0.9, 0.1]])
    want = (0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75) + 0.0) / 2
    assert acc.kl_divergence(p, q) == pytest.approx(want)
    assert acc.kl_divergence(p, p) == pytest.approx(0.0)


def test_to_probs_keeps_probabilities_and_softmaxes_logits() -> None:
    probs = np.array([[0.2, 0.8], [0.5, 0.5]])
    assert np.allclose(acc.to_probs(probs), probs)
    logits = np.array([[0.0, math.log(3.0)]])
    assert np.allclose(acc.to_probs(logits), [[0.25, 0.75]])


def test_confusion_per_class_and_cross_table() -> None:
    pred = S.argmax(1)
    cm = acc.confusion_matrix(pred, Y, 3)
    assert cm.tolist() == [[2, 0, 0], [0, 1, 1], [0, 1, 1]]
    assert acc.per_class_accuracy(cm) == [1.0, 0.5, 0.5]
    assert acc.per_class_accuracy(acc.confusion_matrix([0], [0], 2)) == [1.0, None]
    # teacher correct at 0,1,2,5? teacher preds 0,1,2,2,0,1 vs Y 0,1,2,2,1,0 -> correct 0,1,2,3
    # student correct at 0,2,4,5
    assert acc.cross_table(T.argmax(1), pred, Y) == {
        "both_correct": 2, "only_teacher": 2, "only_student": 2, "both_wrong": 0,
    }  # fmt: skip


def test_classification_metrics_bundle() -> None:
    m = summary.classification_metrics(S, Y, 3, teacher_outputs=T)
    assert m["top1"] == pytest.approx(4 / 6) and m["top5"] is None
    assert m["vs_teacher"]["agreement"] == pytest.approx(2 / 6)
    assert m["vs_teacher"]["kl_divergence"] > 0
    many = np.eye(10)[[0, 1, 2]]
    assert summary.classification_metrics(many, np.array([0, 1, 3]), 10)["top5"] == pytest.approx(1.0)


def test_precision_recall_f1_by_hand() -> None:
    y = np.array([1, 1, 1, 0, 0, 0, 0])
    p = np.array([1, 1, 0, 1, 0, 0, 0])
    r = anomaly.precision_recall_f1(p, y)
    assert (r["tp"], r["fp"], r["fn"]) == (2, 1, 1)
    assert r["precision"] == pytest.approx(2 / 3) and r["recall"] == pytest.approx(2 / 3)
    assert r["f1"] == pytest.approx(2 / 3)
    assert anomaly.precision_recall_f1([0, 0], [0, 0])["f1"] == 0.0


def test_auc_rank_statistic_by_hand() -> None:
    y = np.array([0, 0, 1, 1])
    assert anomaly.roc_auc([0.1, 0.4, 0.35, 0.8], y) == pytest.approx(0.75)  # 3 of 4 pos>neg pairs
    assert anomaly.roc_auc([0.1, 0.2, 0.3, 0.4], y) == pytest.approx(1.0)
    assert anomaly.roc_auc([0.5, 0.5, 0.5, 0.5], y) == pytest.approx(0.5)  # ties count half
    assert anomaly.roc_auc([0.1, 0.5, 0.5, 0.9], y) == pytest.approx(0.875)  # one tied pair: 3.5 / 4
    assert anomaly.roc_auc([0.1, 0.2], [1, 1]) is None
    rng = np.random.default_rng(0)
    yy, ss = rng.integers(0, 2, 200), rng.random(200)
    pairs = np.mean([(a > b) + 0.5 * (a == b) for a in ss[yy == 1] for b in ss[yy == 0]])
    assert anomaly.roc_auc(ss, yy) == pytest.approx(pairs)


def test_anomaly_metrics() -> None:
    y = np.array([0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.6, 0.5, 0.9])
    m = summary.anomaly_metrics(scores, y, teacher_scores=scores)
    assert m["auc"] == pytest.approx(5 / 6)
    # best F1: threshold 0.5 -> tp 2, fp 1 -> P 2/3, R 1, F1 0.8
    assert m["threshold"] == 0.5 and m["f1"] == pytest.approx(0.8)
    assert m["vs_teacher"]["agreement"] == 1.0
    assert m["confusion_matrix"] == [[2, 1], [0, 2]]
