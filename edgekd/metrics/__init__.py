"""Metrics in plain numpy, the bottom of every figure edgekd reports (profile, export checks,
time-series scoring, the training loop): classification (accuracy, agreement, KL, confusion),
anomaly detection (ROC AUC, precision/recall/F1, best-F1 and validation thresholds) and
reconstruction (SQNR, rank correlation of anomaly scores).

One argument order everywhere: **what the model produced first, the labels second** —
``topk_accuracy(outputs, labels)``, ``roc_auc(scores, labels)``, ``precision_recall_f1(pred, labels)``,
``best_f1(scores, labels)``, ``confusion_matrix(pred, labels, n)``. (sklearn puts ``y_true`` first;
edgekd's callers mostly hold the scores first, so that order won.)
"""
