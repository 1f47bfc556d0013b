"""Targets from boxes, and boxes from outputs, for the detectors of :mod:`edgekd.models.detection`.

**Encoding** (PyTorch, a batch at a time, what the losses train against). Ground truth in the padded
layout of :mod:`edgekd.data.detection`: ``boxes`` (N, K, 4) ``x0, y0, x1, y1`` in input pixels and
``classes`` (N, K) with -1 padding. On an output grid of stride ``s``, an object's centre is
``c = ((x0 + x1) / 2, (y0 + y1) / 2) / s`` and its cell ``floor(c)`` (clamped to the grid):

* CenterNet (Zhou et al. 2019, "Objects as Points"): heat map ``Y[c] = max_k exp(-((x - p_x)^2 + (y -
  p_y)^2) / (2 sigma^2))`` over the objects of class ``c`` at their cells ``p``, inside a
  ``(2 r + 1)^2`` window, ``sigma = (2 r + 1) / 6``, ``r = max(0, floor(gaussian_radius(h, w)))`` with the
  box size in cells (CornerNet's radius rule, Law & Deng, ECCV 2018); size ``(w, h) / s``; offset
  ``c - floor(c)``; edge distances ``(p + 0.5) - (x0, y0) / s`` and ``(x1, y1) / s - (p + 0.5)`` (left, top,
  right, bottom) from the cell's centre point, clamped to ``[0, bins - 1]``.
* FOMO: per cell the class + 1 of the object whose centre falls in it, 0 (background) elsewhere.

**Decoding** (numpy, on the host; the firmware does the same): heat map ``sigmoid(logits)``, peaks kept
where a cell equals the maximum of its 3x3 neighbourhood (CenterNet's max-pool NMS), the ``top_k`` peaks
over classes and cells, boxes ``(p + offset -+ (w, h) / 2) s`` (``wh`` head) or ``(p + 0.5 -+ E[d]) s``
with ``E[d] = sum_b b softmax(z)_b`` (``edges`` head), detections below ``threshold`` padded with class -1.
FOMO: cells whose arg-max is an object class, 4-connected cells of one class merged into one object:
centroid = mean cell centre, box = the cells' extent, score = the largest probability.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from edgekd.models.detection import DetectionLayout


def gaussian_radius(height: float, width: float, min_overlap: float = 0.7) -> float:
    """CornerNet's radius (as CenterNet's code computes it): the smallest of the three radii at which a
    box with corners displaced that far still has IoU >= ``min_overlap`` with the true box."""
    a1, b1 = 1.0, height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1**2 - 4 * a1 * c1)) / 2
    a2, b2 = 4.0, 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(b2**2 - 4 * a2 * c2)) / 2
    a3, b3 = 4 * min_overlap, -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def centres(boxes: Tensor, stride: int, grid: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Float centres ``(N, K, 2)`` in cells and integer cells ``(N, K, 2)`` (x, y), clamped to the grid."""
    c = (boxes[..., :2] + boxes[..., 2:]) / (2.0 * stride)
    limit = torch.tensor([grid[1] - 1, grid[0] - 1], device=boxes.device)
    cell = torch.minimum(c.floor().long().clamp(min=0), limit)
    return c, cell


def centernet_targets(
    boxes: Tensor, classes: Tensor, layout: DetectionLayout, grid: tuple[int, int], stride: int
) -> dict[str, Tensor]:
    """Training targets on a ``grid`` (h, w) of ``stride``: ``heatmap`` (N, C, h, w), and per object
    ``mask`` (N, K) bool, ``index`` (N, K) flat cell ``y * w + x``, ``wh`` and ``offset`` (N, K, 2) and
    ``edges`` (N, K, 4), all in cells (see the module docstring)."""
    boxes = boxes.float()
    n, k = classes.shape
    h, w = grid
    mask = classes >= 0
    c, cell = centres(boxes, stride, grid)
    size = (boxes[..., 2:] - boxes[..., :2]) / stride
    radius = [
        [max(0, int(gaussian_radius(math.ceil(hh), math.ceil(ww)))) for ww, hh in row]
        for row in size.tolist()
    ]
    r = torch.tensor(radius, dtype=torch.float32, device=boxes.device).reshape(n, k)
    ys = torch.arange(h, device=boxes.device).view(1, 1, h, 1).float()
    xs = torch.arange(w, device=boxes.device).view(1, 1, 1, w).float()
    dx, dy = xs - cell[..., 0, None, None], ys - cell[..., 1, None, None]
    sigma = (2 * r + 1)[..., None, None] / 6
    g = torch.exp(-(dx**2 + dy**2) / (2 * sigma**2))
    g = g * ((dx.abs() <= r[..., None, None]) & (dy.abs() <= r[..., None, None])) * mask[..., None, None]
    target = boxes.new_zeros(n, layout.num_classes + 1, h * w)  # the last row takes the padding
    index = torch.where(mask, classes, torch.full_like(classes, layout.num_classes))
    target.scatter_reduce_(1, index[..., None].expand(n, k, h * w), g.reshape(n, k, h * w), reduce="amax")
    point = cell.float() + 0.5
    edges = torch.cat([point - boxes[..., :2] / stride, boxes[..., 2:] / stride - point], dim=-1)
    return {
        "heatmap": target[:, : layout.num_classes].reshape(n, layout.num_classes, h, w),
        "mask": mask, "index": cell[..., 1] * w + cell[..., 0], "wh": size, "offset": c - cell.float(),
        "edges": edges.clamp(0, layout.bins - 1),
    }  # fmt: skip


def gather_cells(maps: Tensor, index: Tensor) -> Tensor:
    """Values of ``maps`` (N, D, h, w) at flat cells ``index`` (N, K): shape (N, K, D)."""
    n, d = maps.shape[:2]
    flat = maps.reshape(n, d, -1)
    return flat.gather(2, index[:, None, :].expand(n, d, index.shape[1])).transpose(1, 2)


def fomo_targets(boxes: Tensor, classes: Tensor, grid: tuple[int, int], stride: int) -> Tensor:
    """Per-cell labels (N, h, w): class + 1 at the cell of each object's centre, 0 for background."""
    n, k = classes.shape
    _, cell = centres(boxes.float(), stride, grid)
    labels = torch.zeros(n, grid[0] * grid[1], dtype=torch.long, device=classes.device)
    mask = classes >= 0
    flat = cell[..., 1] * grid[1] + cell[..., 0]
    rows = torch.arange(n, device=classes.device)[:, None].expand(n, k)
    labels[rows[mask], flat[mask]] = classes[mask] + 1
    return labels.reshape(n, *grid)


# --- decoding (numpy) -------------------------------------------------------------------------------
def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, np.float64)))  # overflow-free 1 / (1 + e^-z)


def softmax(z: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def max_pool3(x: np.ndarray) -> np.ndarray:
    """3x3 max pooling, stride 1, over the last two axes (edges padded with -inf)."""
    p = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(1, 1), (1, 1)], constant_values=-np.inf)
    h, w = x.shape[-2:]
    return np.max([p[..., i : i + h, j : j + w] for i in range(3) for j in range(3)], axis=0)


def _padded(n: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros((n, k, 4), np.float32), np.zeros((n, k), np.float32), np.full((n, k), -1, np.int64)


def decode_centernet(
    out: np.ndarray, layout: DetectionLayout, stride: int = 4, top_k: int = 100, threshold: float = 0.1,
    channels_last: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Detections ``boxes`` (N, top_k, 4) in input pixels, ``scores`` (N, top_k), ``classes`` (N, top_k)
    (-1 below ``threshold``) from outputs ``(N, channels, h, w)`` (logits as the model gives them; a
    TFLite output ``(N, h, w, channels)`` with ``channels_last``)."""
    out = np.asarray(out, np.float64)
    out = np.moveaxis(out, -1, 1) if channels_last else out
    n, _, h, w = out.shape
    heat = sigmoid(out[:, : layout.num_classes])
    heat = np.where(heat == max_pool3(heat), heat, 0.0).reshape(n, -1)
    k = min(top_k, heat.shape[1])
    order = np.argsort(-heat, axis=1, kind="stable")[:, :k]
    scores = np.take_along_axis(heat, order, axis=1)
    cls, cell = order // (h * w), order % (h * w)
    cy, cx = (cell // w).astype(np.float64), (cell % w).astype(np.float64)
    box = out[:, layout.num_classes :].reshape(n, layout.box_channels, h * w)
    at = np.take_along_axis(box, np.repeat(cell[:, None], layout.box_channels, axis=1), axis=2)  # (N, B, k)
    if layout.head == "wh":
        px, py = cx + at[:, 2], cy + at[:, 3]
        half_w, half_h = at[:, 0] / 2, at[:, 1] / 2
        xyxy = np.stack([px - half_w, py - half_h, px + half_w, py + half_h], axis=-1)
    else:
        d = (softmax(at.reshape(n, 4, layout.bins, k), axis=2) * np.arange(layout.bins)[:, None]).sum(axis=2)
        px, py = cx + 0.5, cy + 0.5
        xyxy = np.stack([px - d[:, 0], py - d[:, 1], px + d[:, 2], py + d[:, 3]], axis=-1)
    boxes, out_scores, classes = _padded(n, top_k)
    keep = scores >= threshold
    boxes[:, :k] = np.where(keep[..., None], xyxy * stride, 0.0)
    out_scores[:, :k] = np.where(keep, scores, 0.0)
    classes[:, :k] = np.where(keep, cls, -1)
    return boxes, out_scores, classes


def _components(mask: np.ndarray) -> list[list[tuple[int, int]]]:
    """4-connected components of a boolean (h, w) grid, each a list of (y, x) in scan order."""
    seen = np.zeros_like(mask)
    parts = []
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        stack, part = [(int(y), int(x))], []
        seen[y, x] = True
        while stack:
            cy, cx = stack.pop()
            part.append((cy, cx))
            for ny, nx in ((cy - 1, cx), (cy + 1, cx), (cy, cx - 1), (cy, cx + 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        parts.append(sorted(part))
    return parts


def decode_fomo(
    out: np.ndarray, stride: int = 8, top_k: int = 100, threshold: float = 0.5, channels_last: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(centroids (N, top_k, 2) x, y in pixels, boxes, scores, classes)`` from FOMO logits
    ``(N, C + 1, h, w)`` (``(N, h, w, C + 1)`` with ``channels_last``): see the module docstring; objects
    sorted by score, -1 padding."""
    out = np.asarray(out, np.float64)
    prob = softmax(np.moveaxis(out, -1, 1) if channels_last else out, axis=1)
    n = prob.shape[0]
    label, best = prob.argmax(axis=1), prob.max(axis=1)
    boxes, scores, classes = _padded(n, top_k)
    points = np.zeros((n, top_k, 2), np.float32)
    for i in range(n):
        found = []
        for c in range(1, prob.shape[1]):
            for part in _components((label[i] == c) & (best[i] >= threshold)):
                ys, xs = np.array(part).T
                found.append((best[i][ys, xs].max(), c - 1, xs, ys))
        found.sort(key=lambda f: -f[0])
        for j, (score, c, xs, ys) in enumerate(found[:top_k]):
            points[i, j] = ((xs.mean() + 0.5) * stride, (ys.mean() + 0.5) * stride)
            boxes[i, j] = (
                xs.min() * stride,
                ys.min() * stride,
                (xs.max() + 1) * stride,
                (ys.max() + 1) * stride,
            )
            scores[i, j], classes[i, j] = score, c
    return points, boxes, scores, classes
