"""edgekd.metrics.anomaly: P/R/F1 point-wise and point-adjusted, best-F1, thresholds, ROC AUC."""

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from edgekd.errors import EdgekdError
from edgekd.metrics.anomaly import (
    anomaly_report,
    best_f1,
    evaluate_threshold,
    mean_report,
    point_adjust,
    roc_auc,
    segments,
    val_threshold,
)

LABELS = np.array([0, 0, 1, 1, 1, 0, 0, 1, 1, 0])
SCORES = np.array([0.1, 0.2, 0.9, 0.3, 0.2, 0.1, 0.8, 0.4, 0.1, 0.3])


def test_hand_made_pointwise_and_point_adjusted():
    assert segments(LABELS) == [(2, 5), (7, 9)]
    # threshold 0.5 flags steps 2 (anomaly) and 6 (normal)
    pw = evaluate_threshold(SCORES, LABELS, 0.5)
    assert (pw["tp"], pw["fp"], pw["fn"]) == (1, 1, 4)
    assert pw["precision"] == pytest.approx(0.5) and pw["recall"] == pytest.approx(0.2)
    assert pw["f1"] == pytest.approx(2 * 0.5 * 0.2 / 0.7)
    # point adjustment: step 2 hits segment [2, 5) -> all 3 steps count; segment [7, 9) missed
    assert point_adjust(SCORES >= 0.5, LABELS).tolist() == [0, 0, 1, 1, 1, 0, 1, 0, 0, 0]
    pa = evaluate_threshold(SCORES, LABELS, 0.5, adjust=True)
    assert (pa["tp"], pa["fp"], pa["fn"]) == (3, 1, 2)
    assert pa["f1"] == pytest.approx(2 * 0.75 * 0.6 / 1.35)


def test_hand_made_best_thresholds():
    # point-wise: 0.3 flags 2,3,6,7,9 (tp 3, fp 2) -> F1 0.6; 0.2 adds 1 and 4 (tp 4, fp 3, P 4/7,
    # R 0.8) -> F1 2/3; 0.1 flags all (P 0.5, R 1) -> also 2/3: the larger threshold is kept
    b = best_f1(SCORES, LABELS)
    assert b["threshold"] == 0.2 and b["f1"] == pytest.approx(2 / 3)
    assert evaluate_threshold(SCORES, LABELS, 0.3)["f1"] == pytest.approx(0.6)
    # point-adjusted: at 0.4 -> both segments detected (5 tp), step 6 fp -> P 5/6, R 1 -> 10/11
    pa = best_f1(SCORES, LABELS, adjust=True)
    assert pa["threshold"] == 0.4 and pa["f1"] == pytest.approx(10 / 11)


def _brute(scores, labels, adjust):
    best = 0.0
    for t in np.unique(scores):
        pred = (scores >= t).astype(int)
        if adjust:
            pred = point_adjust(pred, labels)
        best = max(best, f1_score(labels, pred, zero_division=0))
    return best


@pytest.mark.parametrize("adjust", [False, True])
def test_best_f1_equals_brute_force(adjust):
    rng = np.random.default_rng(1)
    labels = (np.convolve(rng.random(400) < 0.03, np.ones(6), "same") > 0).astype(int)
    scores = np.round(rng.random(400) + 0.6 * labels * rng.random(400), 2)  # ties on purpose
    assert best_f1(scores, labels, adjust=adjust)["f1"] == pytest.approx(_brute(scores, labels, adjust))


def test_auc_hand_and_against_sklearn():
    # pairs (anomaly, normal): 0.35 beats 0.1 only, 0.8 beats both -> 3 of 4
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert roc_auc([0.5, 0.5, 0.5], [0, 1, 0]) == pytest.approx(0.5)  # ties count one half
    rng = np.random.default_rng(2)
    for _ in range(5):
        labels = rng.random(300) < 0.2
        scores = np.round(rng.normal(size=300) + labels, 1)
        assert roc_auc(scores, labels.astype(int)) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_val_threshold_rule_and_report():
    assert val_threshold(np.arange(101), 0.99) == pytest.approx(99.0)
    r = anomaly_report(SCORES, LABELS, val_scores=np.linspace(0, 0.5, 101), quantile=0.99)
    assert r["threshold_val"] == pytest.approx(0.495)
    assert r["f1_val"] == pytest.approx(evaluate_threshold(SCORES, LABELS, 0.495)["f1"])
    assert r["f1_best"] == pytest.approx(2 / 3) and r["f1_pa_best"] == pytest.approx(10 / 11)
    m = mean_report([r, {**r, "f1_best": 0.2}])
    assert m["f1_best"] == pytest.approx((2 / 3 + 0.2) / 2) and "threshold_val" not in m


def test_bad_inputs():
    with pytest.raises(EdgekdError, match="3 scores but 2 labels"):
        roc_auc([1, 2, 3], [0, 1])
    with pytest.raises(EdgekdError, match="NaN"):
        best_f1([np.nan, 1.0], [0, 1])
    with pytest.raises(EdgekdError, match="no anomaly"):
        best_f1([0.1, 0.2], [0, 0])
    with pytest.raises(EdgekdError, match="0 \\(normal\\) or 1"):
        roc_auc([0.1, 0.2], [0, 2])
