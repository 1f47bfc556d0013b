"""Detection losses: the CenterNet and FOMO task losses and four ways of distilling a detector.

Every loss reads the ground truth from ``step.targets`` (``boxes`` (N, K, 4) in input pixels,
``classes`` (N, K), -1 padded; :mod:`edgekd.data.detection`) and encodes it on the output grid with
:mod:`edgekd.models.detection_codec` (once per step: the encoding is kept in ``step.targets``). Outputs
follow :class:`edgekd.models.detection.DetectionLayout`: the params ``head`` (``wh`` | ``edges``) and
``bins`` name the layout, the class count is what the box channels leave, the stride is the input's width
over the output's. "At the objects" means at each object's centre cell; ``M`` is the number of objects in
the batch, and a batch without objects gives 0 for those terms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from edgekd.distill.losses.base import Step, register_loss
from edgekd.distill.losses.checks import need_maps, non_negative, one_pair, positive, same_positions
from edgekd.errors import EdgekdError
from edgekd.models.detection import HEADS, DetectionLayout
from edgekd.models.detection_codec import centernet_targets, fomo_targets, gather_cells

DETECTION = ("detection",)
PROB_CLAMP = 1e-4  # CenterNet's clamp of sigmoid(z) before the logs of the focal loss


def _boxes(step: Step, loss: str) -> tuple[Tensor, Tensor]:
    if "boxes" not in step.targets or "classes" not in step.targets:
        raise EdgekdError(f"loss {loss!r} needs the detection targets 'boxes' and 'classes' of the batch")
    return step.targets["boxes"], step.targets["classes"]


def _stride(x: Tensor, out: Tensor) -> int:
    return max(1, x.shape[-1] // out.shape[-1])


def encoded(step: Step, out: Tensor, layout: DetectionLayout, loss: str) -> dict[str, Tensor]:
    """CenterNet targets of the batch on ``out``'s grid, encoded once per step."""
    key = f"_centernet:{layout.bins}:{tuple(out.shape[-2:])}"
    if key not in step.targets:
        boxes, classes = _boxes(step, loss)
        step.targets[key] = centernet_targets(
            boxes, classes, layout, tuple(out.shape[-2:]), _stride(step.x, out)
        )
    return step.targets[key]


def _layout(out: Tensor, head: str, bins: int, loss: str) -> DetectionLayout:
    if head not in HEADS:
        raise EdgekdError(f"loss {loss!r}: params.head={head!r}; valid: {', '.join(HEADS)}")
    return DetectionLayout.of(out.shape[1], head, bins, f"loss {loss!r}")


def _check_head(s_shapes, t_shapes, params, where) -> None:
    if params.get("head", "wh") not in HEADS:
        raise EdgekdError(f"{where}: params.head={params['head']!r}; valid: {', '.join(HEADS)}")
    if int(params.get("bins", 8)) < 2:
        raise EdgekdError(f"{where}: params.bins={params['bins']}: must be >= 2")


def _mean_over_objects(per_object: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``per_object`` (N, K) over the real objects (0 when there are none, keeping the graph)."""
    return (per_object * mask).sum() / mask.sum().clamp(min=1)


# --- task losses -------------------------------------------------------------------------------------
def focal_heatmap(logits: Tensor, target: Tensor, alpha: float = 2.0, beta: float = 4.0) -> Tensor:
    """CenterNet's penalty-reduced focal loss ``-1/M sum [Y = 1] (1 - p)^a log p + [Y < 1] (1 - Y)^b p^a
    log(1 - p)`` with ``p = clamp(sigmoid(z), 1e-4, 1 - 1e-4)`` and ``M`` the number of peaks ``Y = 1``."""
    p = torch.sigmoid(logits).clamp(PROB_CLAMP, 1 - PROB_CLAMP)
    pos = target.eq(1).float()
    pos_term = torch.log(p) * (1 - p).pow(alpha) * pos
    neg_term = torch.log(1 - p) * p.pow(alpha) * (1 - target).pow(beta) * (1 - pos)
    return -(pos_term.sum() + neg_term.sum()) / pos.sum().clamp(min=1)


def distribution_focal(logits: Tensor, target: Tensor) -> Tensor:
    """GFL's distribution focal loss per value: ``-((y_(i+1) - y) log S_i + (y - y_i) log S_(i+1))`` with
    ``y_i = floor(y)`` (the last bin pair for ``y = bins - 1``) and ``S = softmax(z)`` over the last axis."""
    bins = logits.shape[-1]
    left = target.floor().clamp(max=bins - 2).long()
    w_right = target - left.float()
    logp = F.log_softmax(logits, dim=-1)
    lp_left, lp_right = logp.gather(-1, left[..., None])[..., 0], logp.gather(-1, left[..., None] + 1)[..., 0]
    return -((1 - w_right) * lp_left + w_right * lp_right)


def edge_logits(out: Tensor, layout: DetectionLayout, index: Tensor) -> Tensor:
    """Edge-distance logits at the objects, ``(N, K, 4, bins)``."""
    n, k = index.shape
    return gather_cells(out[:, layout.num_classes :], index).reshape(n, k, 4, layout.bins)


def box_values(out: Tensor, layout: DetectionLayout, index: Tensor) -> Tensor:
    """The regressed box at the objects ``(N, K, 4)``: ``w, h, dx, dy`` (``wh``) or the expected edge
    distances ``l, t, r, b`` (``edges``), in cells."""
    if layout.head == "wh":
        return gather_cells(out[:, layout.num_classes :], index)
    probs = F.softmax(edge_logits(out, layout, index), dim=-1)
    return (probs * torch.arange(layout.bins, device=out.device, dtype=probs.dtype)).sum(-1)


def box_targets(t: dict[str, Tensor], layout: DetectionLayout) -> Tensor:
    return torch.cat([t["wh"], t["offset"]], dim=-1) if layout.head == "wh" else t["edges"]


@register_loss(
    "centernet", needs_teacher=False, tasks=DETECTION, check=_check_head,
    paper="Zhou, Wang & Krähenbühl 2019 (Objects as Points); focal loss: Law & Deng 2018 (CornerNet)",
)  # fmt: skip
def centernet(step: Step, head: str = "wh", bins: int = 8, wh_weight: float = 0.1, offset_weight: float = 1.0,
              edge_weight: float = 0.25) -> dict[str, Tensor]:  # fmt: skip
    """CenterNet ``L_k + 0.1 L_size + L_off``: focal loss on the heat map, L1 on size and offset at the objects.

    ``L_k`` = :func:`focal_heatmap` (alpha 2, beta 4) against the gaussian heat map;
    ``L_size = 1/(2M) sum |s_hat - s|`` and ``L_off = 1/(2M) sum |o_hat - o|`` over the objects' two
    coordinates (``head="wh"``). With ``head="edges"`` the box term is ``edge_weight`` times the mean
    distribution focal loss (Li et al., NeurIPS 2020, GFL) over the objects' four edges. Returns the terms
    ``heatmap`` and ``wh`` + ``offset`` (or ``edges``)."""
    out = step.student
    layout = _layout(out, head, bins, "centernet")
    t = encoded(step, out, layout, "centernet")
    terms = {"heatmap": focal_heatmap(layout.heatmap(out), t["heatmap"])}
    mask = t["mask"].float()
    if layout.head == "wh":
        pred = gather_cells(out[:, layout.num_classes :], t["index"])
        terms["wh"] = wh_weight * _mean_over_objects((pred[..., :2] - t["wh"]).abs().mean(-1), mask)
        terms["offset"] = offset_weight * _mean_over_objects(
            (pred[..., 2:] - t["offset"]).abs().mean(-1), mask
        )
    else:
        dfl = distribution_focal(edge_logits(out, layout, t["index"]), t["edges"]).mean(-1)
        terms["edges"] = edge_weight * _mean_over_objects(dfl, mask)
    return terms


@register_loss(
    "fomo", needs_teacher=False, tasks=DETECTION, paper="FOMO 2022 (Edge Impulse; weighted cross-entropy)"
)
def fomo(step: Step, object_weight: float = 100.0) -> Tensor:
    """Weighted per-cell cross-entropy ``mean_cells w CE(label, softmax(z))``, ``w = object_weight`` on
    object cells (label = class + 1 at each object's centre cell) and 1 on background (label 0)."""
    boxes, classes = _boxes(step, "fomo")
    labels = fomo_targets(boxes, classes, tuple(step.student.shape[-2:]), _stride(step.x, step.student))
    ce = F.cross_entropy(step.student, labels, reduction="none")
    weight = torch.where(labels > 0, torch.full_like(ce, float(object_weight)), torch.ones_like(ce))
    return (weight * ce).mean()


# --- distillation ------------------------------------------------------------------------------------
def _check_kd(s_shapes, t_shapes, params, where) -> None:
    _check_head(s_shapes, t_shapes, params, where)
    positive(params, "temperature", where, 1.0)


def binary_kd(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """``T^2 mean KL(Bern(sigmoid(z_t/T)) || Bern(sigmoid(z_s/T)))`` over every element."""
    zs, zt = student_logits / temperature, teacher_logits / temperature
    pt = torch.sigmoid(zt)
    kl = pt * (F.logsigmoid(zt) - F.logsigmoid(zs)) + (1 - pt) * (F.logsigmoid(-zt) - F.logsigmoid(-zs))
    return kl.mean() * temperature**2


def _same_layout(step: Step, layout: DetectionLayout, loss: str) -> None:
    if step.teacher is None or step.teacher.shape != step.student.shape:
        got = None if step.teacher is None else tuple(step.teacher.shape)
        raise EdgekdError(
            f"loss {loss!r}: teacher output {got} and student output {tuple(step.student.shape)} differ; "
            f"both networks need the same head ({layout.head}, {layout.channels} channels) and stride"
        )


@register_loss(
    "heatmap-kd",
    tasks=DETECTION,
    check=_check_kd,
    paper="Hinton, Vinyals & Dean 2015 (binary soft targets per heat-map cell)",
)
def heatmap_kd(step: Step, head: str = "wh", bins: int = 8, temperature: float = 1.0) -> Tensor:
    """Soft heat maps ``T^2 mean_{n,c,i,j} KL(Bern(sigmoid(z_t/T)) || Bern(sigmoid(z_s/T)))`` (the class channels only)."""
    layout = _layout(step.student, head, bins, "heatmap-kd")
    _same_layout(step, layout, "heatmap-kd")
    return binary_kd(layout.heatmap(step.student), layout.heatmap(step.teacher), float(temperature))


def object_mask(
    boxes: Tensor, classes: Tensor, grid: tuple[int, int], stride: float, expand: float
) -> Tensor:
    """``(N, h, w)`` 1 where a cell's centre lies inside an object's box scaled by ``expand`` about its centre."""
    h, w = grid
    ys = (torch.arange(h, device=boxes.device, dtype=torch.float32) + 0.5) * stride
    xs = (torch.arange(w, device=boxes.device, dtype=torch.float32) + 0.5) * stride
    centre, half = (boxes[..., :2] + boxes[..., 2:]) / 2, (boxes[..., 2:] - boxes[..., :2]) * expand / 2
    lo, hi = centre - half, centre + half
    inside_x = (xs >= lo[..., 0, None]) & (xs < hi[..., 0, None])  # (N, K, w)
    inside_y = (ys >= lo[..., 1, None]) & (ys < hi[..., 1, None])  # (N, K, h)
    inside = inside_y[..., :, None] & inside_x[..., None, :] & (classes >= 0)[..., None, None]
    return inside.any(dim=1).float()


def _check_imitation(s_shapes, t_shapes, params, where) -> None:
    need_maps(s_shapes, t_shapes, where, "feature imitation")
    same_positions(s_shapes, t_shapes, where, "feature imitation")
    one_pair(t_shapes, where, "feature imitation")
    positive(params, "expand", where, 1.0)
    non_negative(params, "background_weight", where, 0.0)


@register_loss(
    "feature-imitation", features=True, tasks=DETECTION, check=_check_imitation,
    paper="Wang et al. 2019 (fine-grained feature imitation); Chen et al. 2017 (hints for detectors)",
)  # fmt: skip
def feature_imitation(step: Step, expand: float = 1.0, background_weight: float = 0.0) -> Tensor:
    """Masked imitation ``1/(2 N_p) sum_ij I_ij sum_c (r(s)_ijc - t_ijc)^2`` (+ the same over ``1 - I`` by ``N_bg``, weighted).

    ``r`` is the 1x1 adapter (``adapter: auto``), ``I_ij`` = 1 on the cells near objects: cells whose
    centre lies in a box (scaled by ``expand``), on the feature map's own grid; ``N_p = sum I``.
    ``background_weight`` > 0 adds the background cells' term (Chen et al.'s full-map hint), normalised by
    their count."""
    boxes, classes = _boxes(step, "feature-imitation")
    fs, ft = step.fs, step.ft
    mask = object_mask(
        boxes.float(), classes, tuple(ft.shape[-2:]), step.x.shape[-1] / ft.shape[-1], float(expand)
    )
    sq = (fs - ft).pow(2).sum(dim=1)  # (N, h, w)
    loss = (sq * mask).sum() / (2 * mask.sum().clamp(min=1))
    if background_weight > 0:
        loss = loss + background_weight * (sq * (1 - mask)).sum() / (2 * (1 - mask).sum().clamp(min=1))
    return loss


def _check_bounded(s_shapes, t_shapes, params, where) -> None:
    _check_head(s_shapes, t_shapes, params, where)
    float(params.get("margin", 0.0))


@register_loss(
    "bounded-regression", tasks=DETECTION, check=_check_bounded,
    paper="Chen et al. 2017 (Learning Efficient Object Detection Models with Knowledge Distillation)",
)  # fmt: skip
def bounded_regression(step: Step, head: str = "wh", bins: int = 8, margin: float = 0.0) -> Tensor:
    """Teacher-bounded L2 ``1/M sum_objects ||R_s - y||^2 [||R_s - y||^2 + m > ||R_t - y||^2]``.

    ``R`` is the regressed box at the objects (``w, h, dx, dy`` or the expected edge distances, in cells)
    and ``y`` its target. As the paper's Eq. 3: with ``margin`` m = 0 the student is penalised only where
    its error exceeds the teacher's; m > 0 keeps penalising it until it is m better than the teacher, and a
    negative m lets it stop |m| short of the teacher. Add it to the task loss (``centernet``)."""
    layout = _layout(step.student, head, bins, "bounded-regression")
    _same_layout(step, layout, "bounded-regression")
    t = encoded(step, step.student, layout, "bounded-regression")
    y = box_targets(t, layout)
    err_s = (box_values(step.student, layout, t["index"]) - y).pow(2).sum(-1)
    with torch.no_grad():
        err_t = (box_values(step.teacher, layout, t["index"]) - y).pow(2).sum(-1)
    counted = (err_s.detach() + margin > err_t).float() * t["mask"].float()
    return (err_s * counted).sum() / t["mask"].float().sum().clamp(min=1)


def _check_ld(s_shapes, t_shapes, params, where) -> None:
    positive(params, "temperature", where, 10.0)
    if int(params.get("bins", 8)) < 2:
        raise EdgekdError(f"{where}: params.bins={params['bins']}: must be >= 2")


@register_loss(
    "localization-distillation", tasks=DETECTION, check=_check_ld,
    paper="Zheng et al. 2022 (Localization Distillation for Dense Object Detection)",
)  # fmt: skip
def localization_distillation(step: Step, bins: int = 8, temperature: float = 10.0) -> Tensor:
    """LD ``1/M sum_objects sum_edges T^2 KL(softmax(z_t/T) || softmax(z_s/T))`` over the discretised box edges.

    Needs ``head: edges`` networks (a distribution over ``bins`` distances for each of the four edges);
    the distillation region is each object's centre cell (the positive locations)."""
    layout = _layout(step.student, "edges", bins, "localization-distillation")
    _same_layout(step, layout, "localization-distillation")
    t = encoded(step, step.student, layout, "localization-distillation")
    zs = edge_logits(step.student, layout, t["index"]) / temperature
    zt = edge_logits(step.teacher, layout, t["index"]) / temperature
    log_ps, log_pt = F.log_softmax(zs, dim=-1), F.log_softmax(zt, dim=-1)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(-1).sum(-1) * temperature**2  # (N, K): summed over edges
    return _mean_over_objects(kl, t["mask"].float())
