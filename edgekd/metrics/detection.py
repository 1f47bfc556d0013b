"""Object-detection metrics: box IoU and COCO-style average precision (mAP@0.5, mAP@0.5:0.95).

Boxes are ``x0, y0, x1, y1`` in continuous pixel coordinates (area ``(x1 - x0) (y1 - y0)``, as COCO's
``bbox`` IoU). Detections and ground truth use the padded layout of :mod:`edgekd.data.detection`:
``boxes`` (N, K, 4), ``classes`` (N, K) with ``-1`` for padding, and for detections ``scores`` (N, D).

The evaluation follows ``pycocotools``' ``COCOeval`` for boxes without crowd regions or area ranges
(Lin et al., ECCV 2014, "Microsoft COCO"):

* per image and class, the ``max_detections`` (100) highest-scoring detections are kept;
* greedy matching: detections in descending score order (stable), each takes the unmatched ground-truth
  box of highest IoU with IoU >= t, else it is a false positive; a ground-truth box is matched at most
  once, so a duplicate detection of a found object is a false positive;
* per class, all images' detections are sorted by score (stable), precision and recall accumulated,
  precision made monotone (``p(r) = max_{r' >= r} p(r')``) and read at the 101 recall points
  ``0, 0.01, ..., 1`` (the first detection reaching each recall; 0 beyond the last recall reached):
  ``AP = mean_r p_interp(r)``;
* a class without ground truth in the data is left out of the mean (its detections count nowhere); a
  class with ground truth but no detection has AP 0;
* ``mAP@0.5`` is the mean AP at IoU 0.5, ``mAP@0.5:0.95`` the mean over classes and the ten IoU
  thresholds ``0.50, 0.55, ..., 0.95``.

:func:`centroid_f1` judges centroid detectors (FOMO), which give points and no boxes of their own.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekd.errors import EdgekdError

COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
MAX_DETECTIONS = 100


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (M, 4) with every box in ``b`` (K, 4), shape (M, K); 0 where the union is
    empty (two degenerate boxes)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = w * h
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_greedy(ious: np.ndarray, threshold: float) -> np.ndarray:
    """True positives of detections (rows of ``ious``, already in descending score order) against
    ground-truth boxes (columns): each detection takes the unmatched box of highest IoU >= ``threshold``
    (COCO caps the threshold at ``1 - 1e-10``)."""
    t = min(float(threshold), 1 - 1e-10)
    taken = np.zeros(ious.shape[1], bool)
    tp = np.zeros(ious.shape[0], bool)
    for d in range(ious.shape[0]):
        row = np.where(taken, -1.0, ious[d])
        if row.size and row.max() >= t:
            g = len(row) - 1 - int(np.argmax(row[::-1]))  # the last of equal IoUs, as COCO's loop
            taken[g] = tp[d] = True
    return tp


def interpolated_ap(tp: np.ndarray, scores: np.ndarray, n_gt: int) -> float:
    """COCO's 101-point interpolated AP of detections (true-positive flags and scores, any order) against
    ``n_gt`` ground-truth boxes."""
    order = np.argsort(-np.asarray(scores, np.float64), kind="mergesort")
    tp = np.asarray(tp, bool)[order]
    tps, fps = np.cumsum(tp), np.cumsum(~tp)
    recall = tps / n_gt
    precision = tps / np.maximum(tps + fps, np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    if not len(precision):
        return 0.0
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    q = np.zeros(len(RECALL_POINTS))
    reached = idx < len(precision)
    q[reached] = precision[idx[reached]]
    return float(q.mean())


def _check_layout(
    boxes: np.ndarray, classes: np.ndarray, what: str, scores: np.ndarray | None = None
) -> None:
    if boxes.ndim != 3 or boxes.shape[2] != 4 or classes.shape != boxes.shape[:2]:
        raise EdgekdError(
            f"detection metrics: {what} boxes {boxes.shape} and classes {classes.shape}; expected (N, K, 4) and (N, K)"
        )
    if scores is not None and scores.shape != classes.shape:
        raise EdgekdError(
            f"detection metrics: {what} scores {scores.shape}; expected {classes.shape} like the classes"
        )


def _per_class(det, gt, c: int, thresholds: np.ndarray, max_detections: int) -> list[float] | None:
    """AP of class ``c`` at each IoU threshold, None when the data holds no box of class ``c``."""
    d_boxes, d_scores, d_classes = det
    g_boxes, g_classes = gt
    n_gt = int((g_classes == c).sum())
    if n_gt == 0:
        return None
    flags: list[list[np.ndarray]] = [[] for _ in thresholds]
    kept_scores = []
    for i in range(len(g_classes)):
        mine = np.flatnonzero(d_classes[i] == c)
        mine = mine[np.argsort(-d_scores[i][mine], kind="mergesort")][:max_detections]
        ious = box_iou(d_boxes[i][mine], g_boxes[i][g_classes[i] == c])
        kept_scores.append(d_scores[i][mine])
        for k, t in enumerate(thresholds):
            flags[k].append(match_greedy(ious, t))
    scores = np.concatenate(kept_scores)
    return [interpolated_ap(np.concatenate(f), scores, n_gt) for f in flags]


def detection_map(
    det_boxes: np.ndarray, det_scores: np.ndarray, det_classes: np.ndarray, gt_boxes: np.ndarray,
    gt_classes: np.ndarray, num_classes: int | None = None, *,
    iou_thresholds: np.ndarray = COCO_IOU_THRESHOLDS, max_detections: int = MAX_DETECTIONS,
) -> dict[str, Any]:  # fmt: skip
    """COCO-style mAP of padded detections against padded ground truth (see the module docstring).

    Returns ``map`` (mean over classes and ``iou_thresholds``), ``map_50`` and ``map_75`` (when those
    thresholds are among them), ``ap_per_class`` and ``ap_50_per_class`` (class -> AP, None for classes
    without ground truth) and ``classes_evaluated``. With no ground truth at all the maps are None."""
    det_boxes, det_scores, det_classes = (np.asarray(a) for a in (det_boxes, det_scores, det_classes))
    gt_boxes, gt_classes = np.asarray(gt_boxes), np.asarray(gt_classes)
    _check_layout(det_boxes, det_classes, "detection", det_scores)
    _check_layout(gt_boxes, gt_classes, "ground-truth")
    if len(det_boxes) != len(gt_boxes):
        raise EdgekdError(
            f"detection metrics: detections for {len(det_boxes)} images, ground truth for {len(gt_boxes)}"
        )
    thresholds = np.asarray(iou_thresholds, np.float64).ravel()
    n_cls = (
        num_classes
        if num_classes is not None
        else int(max(gt_classes.max(initial=-1), det_classes.max(initial=-1))) + 1
    )
    det, gt = (det_boxes, det_scores, det_classes), (gt_boxes, gt_classes)
    per = {c: _per_class(det, gt, c, thresholds, max_detections) for c in range(n_cls)}
    seen = {c: ap for c, ap in per.items() if ap is not None}
    table = np.array(list(seen.values())) if seen else np.zeros((0, len(thresholds)))

    def at(t: float) -> float | None:
        k = np.flatnonzero(np.isclose(thresholds, t))
        return float(table[:, k[0]].mean()) if len(k) and len(table) else None

    k50 = np.flatnonzero(np.isclose(thresholds, 0.5))
    return {
        "map": float(table.mean()) if len(table) else None, "map_50": at(0.5), "map_75": at(0.75),
        "ap_per_class": {c: (None if ap is None else float(np.mean(ap))) for c, ap in per.items()},
        "ap_50_per_class": {c: (None if ap is None or not len(k50) else float(ap[k50[0]])) for c, ap in per.items()},
        "classes_evaluated": sorted(seen), "iou_thresholds": [round(float(t), 4) for t in thresholds],
        "max_detections": int(max_detections),
    }  # fmt: skip


def centroid_f1(
    points: np.ndarray, scores: np.ndarray, classes: np.ndarray, gt_boxes: np.ndarray, gt_classes: np.ndarray
) -> dict[str, float]:
    """Precision, recall and F1 of object centroids (FOMO's measure): ``points`` (N, D, 2) as ``x, y``
    pixels with ``scores`` and ``classes`` (N, D, -1 padded). By descending score within each image, a
    point is a true positive when it lies inside a not yet matched ground-truth box of its class (the one
    whose centre is nearest); else a false positive. Unmatched boxes are false negatives."""
    points, scores, classes = np.asarray(points, np.float64), np.asarray(scores), np.asarray(classes)
    gt_boxes, gt_classes = np.asarray(gt_boxes, np.float64), np.asarray(gt_classes)
    tp = fp = 0
    for i in range(len(gt_classes)):
        taken = np.zeros(gt_classes.shape[1], bool)
        for d in np.argsort(-scores[i], kind="mergesort"):
            if classes[i, d] < 0:
                continue
            (px, py), b = points[i, d], gt_boxes[i]
            ok = (gt_classes[i] == classes[i, d]) & ~taken
            ok &= (b[:, 0] <= px) & (px < b[:, 2]) & (b[:, 1] <= py) & (py < b[:, 3])
            if not ok.any():
                fp += 1
                continue
            dist = np.hypot((b[:, 0] + b[:, 2]) / 2 - px, (b[:, 1] + b[:, 3]) / 2 - py)
            taken[int(np.argmin(np.where(ok, dist, np.inf)))] = True
            tp += 1
    fn = int((gt_classes >= 0).sum()) - tp
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn}
