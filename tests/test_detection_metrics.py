"""edgekd.metrics.detection: IoU and COCO-style AP against small cases computed by hand (pycocotools and
torchmetrics cannot be installed here; the cases pin the COCOeval rules the module names)."""

from __future__ import annotations

import numpy as np
import pytest

from edgekd.errors import EdgekdError
from edgekd.metrics.detection import box_iou, centroid_f1, detection_map, interpolated_ap, match_greedy


def pad(rows: list[list[tuple]], with_scores: bool = True):
    """Padded arrays from per-image lists of ``(class, x0, y0, x1, y1[, score])``."""
    k = max(1, max(len(r) for r in rows))
    boxes = np.zeros((len(rows), k, 4), np.float32)
    classes = np.full((len(rows), k), -1, np.int64)
    scores = np.zeros((len(rows), k), np.float32)
    for i, r in enumerate(rows):
        for j, obj in enumerate(r):
            classes[i, j], boxes[i, j] = obj[0], obj[1:5]
            if with_scores:
                scores[i, j] = obj[5]
    return (boxes, scores, classes) if with_scores else (boxes, classes)


A, B, C = (0, 0, 10, 10), (20, 20, 30, 30), (40, 0, 50, 10)
FAR = (70, 70, 80, 80)


@pytest.mark.parametrize(
    "a, b, want",
    [
        ((0, 0, 4, 4), (0, 0, 4, 4), 1.0),  # identical
        ((0, 0, 2, 2), (5, 5, 7, 7), 0.0),  # disjoint
        ((0, 0, 2, 2), (2, 0, 4, 2), 0.0),  # touching edges share no area
        ((0, 0, 2, 2), (0, 0, 4, 4), 0.25),  # contained: 4 / 16
        ((0, 0, 2, 2), (1, 1, 3, 3), 1 / 7),  # 1 / (4 + 4 - 1)
        ((0, 0, 4, 1), (0, 0, 4, 2), 0.5),  # exactly one half
        ((1, 1, 1, 1), (1, 1, 1, 1), 0.0),  # two empty boxes: no 0/0
    ],
)
def test_box_iou_edge_cases(a, b, want):
    got = box_iou(np.array([a]), np.array([b]))
    assert got.shape == (1, 1) and got[0, 0] == pytest.approx(want, abs=1e-12)
    assert box_iou(np.array([b]), np.array([a]))[0, 0] == pytest.approx(want, abs=1e-12)


def test_box_iou_is_a_matrix_over_both_sets():
    got = box_iou(np.array([A, B]), np.array([A, B, FAR]))
    assert np.allclose(got, [[1, 0, 0], [0, 1, 0]])
    assert box_iou(np.zeros((0, 4)), np.array([A])).shape == (0, 1)


def test_perfect_detections_score_one_at_every_threshold():
    gt = [[(0, *A), (1, *B)], [(2, *C)], [(0, *B), (0, *C)]]
    det = [[(*g, 0.9) for g in img] for img in gt]
    out = detection_map(*pad(det), *pad(gt, False), num_classes=3)
    assert out["map"] == 1.0 and out["map_50"] == 1.0 and out["map_75"] == 1.0
    assert out["ap_per_class"] == {0: 1.0, 1: 1.0, 2: 1.0} and out["classes_evaluated"] == [0, 1, 2]


def test_known_precision_recall_curve():
    """3 objects; detections by score: hit, miss, hit, miss. Recall 1/3, 1/3, 2/3, 2/3, precision 1, 1/2,
    2/3, 1/2 -> interpolated 1 up to recall 1/3 (34 of the 101 points), 2/3 up to 2/3 (33 points), 0 after:
    AP = (34 + 33 * 2/3) / 101 = 56 / 101."""
    gt = [[(0, *A), (0, *B), (0, *C)]]
    det = [[(0, *A, 0.9), (0, *FAR, 0.8), (0, *B, 0.7), (0, 60, 0, 70, 10, 0.6)]]
    out = detection_map(*pad(det), *pad(gt, False))
    assert out["map_50"] == pytest.approx(56 / 101, abs=1e-12)
    assert out["map"] == pytest.approx(56 / 101, abs=1e-12)  # the hits are exact: the same at every IoU


def test_a_duplicate_detection_is_a_false_positive():
    """Two objects; by score: A, A again, B -> hit, false positive, hit. Recall 1/2, 1/2, 1; precision 1,
    1/2, 2/3 -> 1 on the 51 points up to 0.5, 2/3 on the 50 after: AP = (51 + 50 * 2/3) / 101."""
    gt = [[(0, *A), (0, *B)]]
    det = [[(0, *A, 0.9), (0, *A, 0.8), (0, *B, 0.7)]]
    assert match_greedy(box_iou(pad(det)[0][0], pad(gt, False)[0][0]), 0.5).tolist() == [True, False, True]
    out = detection_map(*pad(det), *pad(gt, False))
    assert out["map_50"] == pytest.approx((51 + 50 * 2 / 3) / 101, abs=1e-12)
    without = detection_map(*pad([[det[0][0], det[0][2]]]), *pad(gt, False))
    assert without["map_50"] == 1.0


def test_matching_is_greedy_by_score_not_by_iou():
    """The higher-scored detection takes the object even though the second overlaps it more."""
    ious = np.array([[0.6], [0.9]])
    assert match_greedy(ious, 0.5).tolist() == [True, False]
    assert match_greedy(ious, 0.7).tolist() == [False, True]  # below the threshold it cannot take it
    assert match_greedy(np.array([[0.5]]), 0.5).tolist() == [True]  # IoU >= t counts
    two = np.array([[0.7, 0.8], [0.9, 0.0]])  # the first takes its best object, the second the other
    assert match_greedy(two, 0.5).tolist() == [True, True]
    taken = np.array([[0.7, 0.8], [0.0, 0.9]])  # the second's only object is already taken
    assert match_greedy(taken, 0.5).tolist() == [True, False]


def test_a_class_without_ground_truth_is_left_out_and_a_missed_class_scores_zero():
    gt = [[(0, *A), (2, *C)]]
    det = [[(0, *A, 0.9), (1, *B, 0.95)]]  # class 1 has no object; class 2 is never detected
    out = detection_map(*pad(det), *pad(gt, False), num_classes=3)
    assert out["ap_per_class"] == {0: 1.0, 1: None, 2: 0.0} and out["classes_evaluated"] == [0, 2]
    assert out["map"] == pytest.approx(0.5) and out["map_50"] == pytest.approx(0.5)


def test_iou_exactly_one_half_counts_at_0_5_only():
    gt = [[(0, 0, 0, 4, 2)]]
    det = [[(0, 0, 0, 4, 1, 0.9)]]  # IoU 0.5
    out = detection_map(*pad(det), *pad(gt, False))
    assert out["map_50"] == 1.0 and out["map"] == pytest.approx(0.1)  # 1 of the 10 thresholds


def test_at_most_max_detections_per_image_and_class():
    """100 false positives outscore the one true detection: with the default cap of 100 it is dropped."""
    gt = [[(0, *A)]]
    fps = [(0, 100 + 11 * i, 0, 110 + 11 * i, 10, 0.9) for i in range(100)]
    det = [[*fps, (0, *A, 0.1)]]
    assert detection_map(*pad(det), *pad(gt, False))["map_50"] == 0.0
    kept = detection_map(*pad(det), *pad(gt, False), max_detections=101)["map_50"]
    assert kept == pytest.approx(1 / 101, abs=1e-12)  # recall 1 only at precision 1/101, at every point


def test_detections_of_all_images_are_ranked_together():
    """Image 1's miss outscores image 0's hit: by score miss, hit -> precision 1/2 at recall 1."""
    gt = [[(0, *A)], [(0, *B)]]
    det = [[(0, *A, 0.5)], [(0, *FAR, 0.9)]]
    out = detection_map(*pad(det), *pad(gt, False))
    assert out["map_50"] == pytest.approx((51 * 0.5) / 101, abs=1e-12)  # recall 0.5 only, at precision 1/2


def test_interpolated_ap_without_detections_is_zero():
    assert interpolated_ap(np.zeros(0, bool), np.zeros(0), 3) == 0.0


def test_mismatched_layouts_are_one_line_errors():
    boxes, scores, classes = pad([[(0, *A, 0.9)]])
    with pytest.raises(EdgekdError, match="detections for 1 images, ground truth for 2") as e:
        detection_map(boxes, scores, classes, np.zeros((2, 1, 4)), np.full((2, 1), -1))
    assert "\n" not in str(e.value)
    with pytest.raises(EdgekdError, match="scores"):
        detection_map(boxes, scores[:, :0], classes, boxes, classes)


def test_centroid_f1_counts_points_inside_boxes_of_their_class_once():
    """Image: objects A (class 0) and B (class 1). Points: in A class 0 (hit), in A again (duplicate: false
    positive), in B but class 0 (false positive), nowhere (false positive); B is missed. tp 1, fp 3, fn 1."""
    gt_boxes, gt_classes = pad([[(0, *A), (1, *B)]], False)
    points = np.array([[[5, 5], [6, 6], [25, 25], [60, 60]]], np.float32)
    scores = np.array([[0.9, 0.8, 0.7, 0.6]])
    classes = np.array([[0, 0, 0, 1]])
    got = centroid_f1(points, scores, classes, gt_boxes, gt_classes)
    assert (got["tp"], got["fp"], got["fn"]) == (1, 3, 1)
    assert got["precision"] == 0.25 and got["recall"] == 0.5 and got["f1"] == pytest.approx(2 * 0.125 / 0.75)
    perfect = centroid_f1(
        np.array([[[5, 5], [25, 25]]]), np.ones((1, 2)), np.array([[0, 1]]), gt_boxes, gt_classes
    )
    assert perfect["f1"] == 1.0
