"""edgekd.distill.losses: golden values for every loss of the method library, from the papers.

Small fixed tensors; expected values computed here by plain numpy / Python formulas written from the
papers, never by the implementation (issue 11).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from edgekd.distill.losses import LOSSES, Step

RNG = np.random.default_rng(11)
N = 3


def arr(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape)


def t(a: np.ndarray) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64)


def loss(name: str, params: dict | None = None, **step) -> float:
    base = {"x": torch.zeros(N, 1), "y": None, "student": torch.zeros(N, 2)}
    base.update(step)
    return float(LOSSES.get(name).fn(Step(**base), **(params or {})))


def huber(d: float) -> float:
    return 0.5 * d * d if abs(d) < 1 else abs(d) - 0.5


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


# --- logits ---------------------------------------------------------------------------------------
def test_output_mse_is_the_mean_squared_logit_difference():
    zs, zt = arr(N, 4), arr(N, 4)
    want = sum((zs[i, c] - zt[i, c]) ** 2 for i in range(N) for c in range(4)) / (N * 4)
    assert loss("output-mse", student=t(zs), teacher=t(zt)) == pytest.approx(want, rel=1e-10)


def test_hint_soft_ce_and_reconstruction():
    fs, ft, x = arr(N, 2, 2), arr(N, 2, 2), arr(N, 5)
    zs, zt = arr(N, 3), arr(N, 3)
    assert loss("hint", fs=t(fs), ft=t(ft)) == pytest.approx(float(np.mean((fs - ft) ** 2)), rel=1e-10)
    T = 3.0
    want = -(T**2) * sum(softmax(zt[i] / T) @ np.log(softmax(zs[i] / T)) for i in range(N)) / N
    assert loss("soft-ce", {"temperature": T}, student=t(zs), teacher=t(zt)) == pytest.approx(want, rel=1e-10)
    rec = arr(N, 5)
    assert loss("recon-mse", x=t(x), student=t(rec)) == pytest.approx(
        float(np.mean((rec - x) ** 2)), rel=1e-10
    )


def test_generalized_kd_softens_only_the_teacher():
    zs, zt = arr(N, 3), arr(N, 3)
    T = 2.5
    want = -sum(softmax(zt[i] / T) @ np.log(softmax(zs[i])) for i in range(N)) / N
    assert loss("generalized-kd", {"temperature": T}, student=t(zs), teacher=t(zt)) == pytest.approx(
        want, rel=1e-10
    )


# --- attention ------------------------------------------------------------------------------------
def _at_map(a: np.ndarray, p: float) -> np.ndarray:
    q = np.zeros(a.shape[1] * a.shape[2])
    for c in range(a.shape[0]):
        q += np.abs(a[c].reshape(-1)) ** p
    return q / math.sqrt(sum(v * v for v in q))


def test_attention_transfer_sums_normalised_map_distances_over_layer_pairs():
    s1, t1 = arr(N, 2, 3, 3), arr(N, 5, 3, 3)  # channel counts differ: allowed
    s2, t2 = arr(N, 4, 2, 2), arr(N, 3, 2, 2)
    want = 0.0
    for s, tt in ((s1, t1), (s2, t2)):
        want += sum(np.linalg.norm(_at_map(s[i], 2) - _at_map(tt[i], 2)) for i in range(N)) / N
    got = loss("at", fs=[t(s1), t(s2)], ft=[t(t1), t(t2)])
    assert got == pytest.approx(want, rel=1e-9)
    one = sum(np.linalg.norm(_at_map(s1[i], 3) - _at_map(t1[i], 3)) for i in range(N)) / N
    assert loss("at", {"p": 3.0}, fs=t(s1), ft=t(t1)) == pytest.approx(one, rel=1e-9)


def test_gradient_attention_matches_input_gradients_of_two_linear_models():
    d, k = 4, 3
    x, y = arr(N, d), np.array([0, 2, 1])
    ws, wt = arr(k, d), arr(k, d)
    student, teacher = nn.Linear(d, k, bias=False).double(), nn.Linear(d, k, bias=False).double()
    student.weight.data, teacher.weight.data = t(ws), t(wt)
    xt = t(x).requires_grad_(True)

    def grad(w: np.ndarray, xi: np.ndarray, yi: int) -> np.ndarray:  # d CE / dx = W^T (softmax(Wx) - e_y)
        p = softmax(w @ xi)
        p[yi] -= 1
        return w.T @ p

    want = 0.5 * sum(np.linalg.norm(grad(ws, x[i], y[i]) - grad(wt, x[i], y[i])) for i in range(N)) / N
    got = LOSSES.get("gradient-at").fn(
        Step(x=xt, y=torch.tensor(y), student=student(xt), teacher=None, teacher_net=teacher)
    )
    assert float(got.detach()) == pytest.approx(want, rel=1e-9)
    got.backward()  # differentiable (double back-prop) into the student
    assert student.weight.grad is not None and float(student.weight.grad.abs().sum()) > 0


# --- factor transfer ------------------------------------------------------------------------------
def test_factor_transfer_is_the_l1_distance_of_normalised_factors():
    fs, ft = arr(N, 2, 2, 2), arr(N, 2, 2, 2)
    ident = nn.ModuleDict({"translator": nn.Identity(), "paraphraser": nn.Module()})
    ident["paraphraser"].enc = nn.Identity()
    want = 0.0
    for i in range(N):
        a, b = fs[i].reshape(-1), ft[i].reshape(-1)
        want += sum(abs(u / np.linalg.norm(a) - v / np.linalg.norm(b)) for u, v in zip(a, b))
    assert loss("factor-transfer", fs=t(fs), ft=t(ft), module=ident) == pytest.approx(want / N, rel=1e-9)


def test_paraphraser_loss_is_the_reconstruction_mse_of_the_teacher_layer():
    ft = arr(N, 2, 2, 2)
    para = nn.Module()
    para.forward = lambda v: 0.5 * v  # type: ignore[method-assign]
    mod = nn.ModuleDict({"paraphraser": para})
    want = float(np.mean((0.5 * ft - ft) ** 2))
    assert loss("ft-paraphraser", ft=t(ft), module=mod) == pytest.approx(want, rel=1e-10)


# --- distributions --------------------------------------------------------------------------------
def _mmd(s: np.ndarray, tt: np.ndarray, k) -> float:
    total = 0.0
    for i in range(N):
        a = [v / np.linalg.norm(v) for v in s[i].reshape(s.shape[1], -1)]
        b = [v / np.linalg.norm(v) for v in tt[i].reshape(tt.shape[1], -1)]
        kss = sum(k(u, v) for u in a for v in a) / len(a) ** 2
        ktt = sum(k(u, v) for u in b for v in b) / len(b) ** 2
        kst = sum(k(u, v) for u in a for v in b) / (len(a) * len(b))
        total += kss + ktt - 2 * kst
    return total / N


def test_nst_and_mmd_kernels():
    s, tt = arr(N, 3, 2, 3), arr(N, 5, 2, 3)
    poly = _mmd(s, tt, lambda u, v: float(u @ v) ** 2)
    assert loss("nst", fs=t(s), ft=t(tt)) == pytest.approx(poly, rel=1e-9)
    poly3 = _mmd(s, tt, lambda u, v: (float(u @ v) + 0.5) ** 3)
    assert loss("mmd", {"degree": 3.0, "c": 0.5}, fs=t(s), ft=t(tt)) == pytest.approx(poly3, rel=1e-9)
    lin = _mmd(s, tt, lambda u, v: float(u @ v))
    assert loss("mmd", {"kernel": "linear"}, fs=t(s), ft=t(tt)) == pytest.approx(lin, rel=1e-9)
    assert lin > 0 and poly > 0


# --- boundaries and sparsity ----------------------------------------------------------------------
def test_activation_boundary_hinge():
    us, vt = arr(N, 2, 2, 2), arr(N, 2, 2, 2)
    m = 0.7
    vals = []
    for u, v in zip(us.reshape(-1), vt.reshape(-1)):
        vals.append(max(0.0, m - u) ** 2 if v > 0 else max(0.0, m + u) ** 2)
    assert loss("ab", {"margin": m}, fs=t(us), ft=t(vt)) == pytest.approx(sum(vals) / len(vals), rel=1e-10)


def test_sparsity_pattern_bce_of_the_sigmoid_surrogate():
    us, vt = arr(N, 4), arr(N, 4)
    tau = 0.5
    vals = []
    for u, v in zip(us.reshape(-1), vt.reshape(-1)):
        s = 1 / (1 + math.exp(-u / tau))
        vals.append(-math.log(s) if v > 0 else -math.log(1 - s))
    assert loss("sparsity", {"tau": tau}, fs=t(us), ft=t(vt)) == pytest.approx(
        sum(vals) / len(vals), rel=1e-9
    )


# --- relations ------------------------------------------------------------------------------------
def _fsp(f1: np.ndarray, f2: np.ndarray) -> np.ndarray:
    c1, c2, hw = f1.shape[0], f2.shape[0], f1.shape[1] * f1.shape[2]
    g = np.zeros((c1, c2))
    for i in range(c1):
        for j in range(c2):
            g[i, j] = sum(a * b for a, b in zip(f1[i].reshape(-1), f2[j].reshape(-1))) / hw
    return g


def test_fsp_matrices_and_pooling_to_the_smaller_map():
    s1, s2, t1, t2 = arr(N, 2, 2, 2), arr(N, 3, 2, 2), arr(N, 2, 2, 2), arr(N, 3, 4, 4)
    t2_pooled = t2.reshape(N, 3, 2, 2, 2, 2).mean(axis=(3, 5))  # 4x4 -> 2x2 average pooling
    want = np.mean([(_fsp(s1[i], s2[i]) - _fsp(t1[i], t2_pooled[i])) ** 2 for i in range(N)])
    assert loss("fsp", fs=[t(s1), t(s2)], ft=[t(t1), t(t2)]) == pytest.approx(want, rel=1e-9)


def _dist(e: np.ndarray) -> list[float]:
    d = [np.linalg.norm(e[i] - e[j]) for i in range(len(e)) for j in range(len(e)) if i != j]
    mu = sum(d) / len(d)
    return [v / mu for v in d]


def test_rkd_distance():
    es, et = arr(4, 3), arr(4, 6)
    ds, dt = _dist(es), _dist(et)
    want = sum(huber(a - b) for a, b in zip(ds, dt)) / len(ds)
    assert loss("rkd-distance", fs=t(es), ft=t(et)) == pytest.approx(want, rel=1e-9)


def test_rkd_angle():
    es, et = arr(4, 3) * 3, arr(4, 2)

    def cosines(e: np.ndarray) -> list[float]:
        out = []
        for j in range(len(e)):
            for i in range(len(e)):
                for k in range(len(e)):
                    a, b = e[i] - e[j], e[k] - e[j]
                    na, nb = np.linalg.norm(a), np.linalg.norm(b)
                    out.append(0.0 if na == 0 or nb == 0 else float(a @ b) / (na * nb))
        return out

    cs, ct = cosines(es), cosines(et)
    want = sum(huber(a - b) for a, b in zip(cs, ct)) / len(cs)
    assert loss("rkd-angle", fs=t(es), ft=t(et)) == pytest.approx(want, rel=1e-7)


def test_similarity_preserving():
    fs, ft = arr(N, 2, 2, 2), arr(N, 7)

    def gram(f: np.ndarray) -> np.ndarray:
        q = f.reshape(len(f), -1)
        g = np.array([[float(q[i] @ q[j]) for j in range(len(q))] for i in range(len(q))])
        return np.array([row / np.linalg.norm(row) for row in g])

    want = float(((gram(fs) - gram(ft)) ** 2).sum()) / N**2
    assert loss("sp", fs=t(fs), ft=t(ft)) == pytest.approx(want, rel=1e-9)


# --- DKD, DIST, PKT (issue 20) ----------------------------------------------------------------------
def kl(p: np.ndarray, q: np.ndarray) -> float:
    return float(sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0))


@pytest.mark.parametrize("alpha,beta,T", [(1.0, 8.0, 4.0), (0.5, 2.0, 1.0)])
def test_dkd_is_target_plus_non_target_kl_from_the_paper(alpha, beta, T):
    zs, zt = arr(N, 5), arr(N, 5)
    y = np.array([0, 3, 4])
    want = 0.0
    for i in range(N):
        ps, pt = softmax(zs[i] / T), softmax(zt[i] / T)
        tckd = kl([pt[y[i]], 1 - pt[y[i]]], [ps[y[i]], 1 - ps[y[i]]])
        rest = [c for c in range(5) if c != y[i]]
        nckd = kl(softmax(zt[i, rest] / T), softmax(zs[i, rest] / T))
        want += T * T * (alpha * tckd + beta * nckd) / N
    got = loss("dkd", {"alpha": alpha, "beta": beta, "temperature": T}, student=t(zs), teacher=t(zt),
               y=torch.tensor(y))  # fmt: skip
    assert got == pytest.approx(want, rel=1e-9)


def test_dkd_with_alpha_1_and_beta_one_minus_pt_target_is_hinton_kd():
    """The paper's identity: KD = TCKD + (1 - p_t[y]) NCKD, per example."""
    zs, zt, T = arr(1, 6), arr(1, 6), 2.0
    y = torch.tensor([2])
    pt_y = softmax(zt[0] / T)[2]
    kd_value = loss("kd", {"temperature": T}, student=t(zs), teacher=t(zt))
    dkd_value = loss(
        "dkd", {"alpha": 1.0, "beta": 1 - pt_y, "temperature": T}, student=t(zs), teacher=t(zt), y=y
    )
    assert dkd_value == pytest.approx(kd_value, rel=1e-9)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("beta,gamma,T", [(1.0, 1.0, 1.0), (2.0, 0.5, 4.0)])
def test_dist_is_one_minus_pearson_between_and_within_classes(beta, gamma, T):
    zs, zt = arr(4, 5), arr(4, 5)
    ps = np.stack([softmax(r / T) for r in zs])
    pt = np.stack([softmax(r / T) for r in zt])
    inter = np.mean([1 - pearson(ps[i], pt[i]) for i in range(4)])
    intra = np.mean([1 - pearson(ps[:, c], pt[:, c]) for c in range(5)])
    want = T * T * (beta * inter + gamma * intra)
    got = loss("dist", {"beta": beta, "gamma": gamma, "temperature": T}, student=t(zs), teacher=t(zt))
    assert got == pytest.approx(want, rel=1e-9)
    assert loss("dist", student=t(zt), teacher=t(zt)) == pytest.approx(0.0, abs=1e-12)


def test_pkt_is_the_kl_of_cosine_kernel_neighbourhoods():
    fs, ft, eps = arr(N, 2, 3), arr(N, 7), 1e-7  # widths differ: PKT needs no adapter

    def probs(e: np.ndarray) -> np.ndarray:
        e = e.reshape(len(e), -1)
        k = np.array([[(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) + 1) / 2 for b in e] for a in e])
        return k / k.sum(axis=1, keepdims=True)

    ps, pt = probs(fs), probs(ft)
    want = np.mean(pt * np.log((pt + eps) / (ps + eps)))
    assert loss("pkt", fs=t(fs), ft=t(ft)) == pytest.approx(float(want), rel=1e-9)
    assert loss("pkt", fs=t(ft), ft=t(ft)) == pytest.approx(0.0, abs=1e-12)


# --- detection (CenterNet layout [heat map C | w, h | dx, dy] on a stride-4 grid, or edge bins) --------
def sig(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def det_step(out: np.ndarray, boxes: list, classes: list, side: int = 16, **more) -> Step:
    return Step(x=torch.zeros(len(out), 1, side, side), y=None, student=t(out),
                targets={"boxes": torch.tensor(boxes, dtype=torch.float32), "classes": torch.tensor(classes)},
                **more)  # fmt: skip


def test_centernet_is_focal_loss_plus_l1_size_and_offset_at_the_centres():
    """Image 0: class 0, box 0..16 (4 x 4 cells, centre cell (2, 2); CornerNet radius 1.09 -> r = 1, sigma
    0.5). Image 1: class 1, box x 5..12, y 4..12 (1.75 x 2 cells, centre (2.125, 2), r = 0), and padding."""
    out = arr(2, 6, 4, 4)
    Y = np.zeros((2, 2, 4, 4))
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            Y[0, 0, 2 + dy, 2 + dx] = math.exp(-(dx * dx + dy * dy) / (2 * 0.25))
    Y[1, 1, 2, 2] = 1.0
    p = np.clip(sig(out[:, :2]), 1e-4, 1 - 1e-4)
    pos = Y == 1
    focal = -(np.sum(np.log(p[pos]) * (1 - p[pos]) ** 2)
              + np.sum(np.log(1 - p[~pos]) * p[~pos] ** 2 * (1 - Y[~pos]) ** 4)) / 2  # fmt: skip
    wh_t = [(4, 4), (1.75, 2)]
    off_t = [(0, 0), (0.125, 0)]
    l1_wh = sum(abs(out[i, 2 + j, 2, 2] - wh_t[i][j]) for i in range(2) for j in range(2)) / 4
    l1_off = sum(abs(out[i, 4 + j, 2, 2] - off_t[i][j]) for i in range(2) for j in range(2)) / 4
    step = det_step(out, [[[0, 0, 16, 16], [0, 0, 0, 0]], [[5, 4, 12, 12], [0, 0, 0, 0]]], [[0, -1], [1, -1]])
    got = {k: float(v) for k, v in LOSSES.get("centernet").fn(step).items()}
    assert got["heatmap"] == pytest.approx(focal, rel=1e-6)
    assert got["wh"] == pytest.approx(0.1 * l1_wh, rel=1e-6)
    assert got["offset"] == pytest.approx(l1_off, rel=1e-6)


def test_centernet_edges_head_uses_the_distribution_focal_loss():
    """Box x 5..12, y 4..12 on the cell (2, 2) whose centre point is (2.5, 2.5) cells: distances left 1.25,
    top 1.5, right 0.5, bottom 0.5; DFL = -((y_(i+1) - y) log S_i + (y - y_i) log S_(i+1))."""
    bins = 4
    out = arr(1, 1 + 4 * bins, 4, 4)
    z = out[0, 1:, 2, 2].reshape(4, bins)
    dfl = 0.0
    for e, y in enumerate((1.25, 1.5, 0.5, 0.5)):
        logs = np.log(softmax(z[e]))
        i = int(y)
        dfl += -((i + 1 - y) * logs[i] + (y - i) * logs[i + 1])
    step = det_step(out, [[[5, 4, 12, 12]]], [[0]])
    got = LOSSES.get("centernet").fn(step, head="edges", bins=bins, edge_weight=0.5)
    assert float(got["edges"]) == pytest.approx(0.5 * dfl / 4, rel=1e-6) and "wh" not in got


def test_fomo_is_cross_entropy_weighted_on_object_cells():
    out = arr(1, 3, 2, 2)  # 2 classes + background, stride 8 on 16 x 16
    ce = [[-math.log(softmax(out[0, :, i, j])[0]) for j in range(2)] for i in range(2)]
    ce[0][0] = -math.log(softmax(out[0, :, 0, 0])[2])  # class 1 centred in cell (0, 0)
    want = (100 * ce[0][0] + ce[0][1] + ce[1][0] + ce[1][1]) / 4
    assert float(LOSSES.get("fomo").fn(det_step(out, [[[0, 0, 8, 8]]], [[1]]))) == pytest.approx(
        want, rel=1e-9
    )


def test_heatmap_kd_is_binary_kl_of_softened_sigmoids_on_class_channels_only():
    zs, zt, T = arr(N, 7, 3, 3), arr(N, 7, 3, 3), 2.0  # 3 classes + 4 box channels
    ps, pt = sig(zs[:, :3] / T), sig(zt[:, :3] / T)
    kl = pt * np.log(pt / ps) + (1 - pt) * np.log((1 - pt) / (1 - ps))
    step = Step(x=torch.zeros(N, 1, 12, 12), y=None, student=t(zs), teacher=t(zt))
    assert float(LOSSES.get("heatmap-kd").fn(step, temperature=T)) == pytest.approx(
        T * T * kl.mean(), rel=1e-9
    )


def test_feature_imitation_is_masked_l2_over_cells_near_objects():
    """Box 0..8 on a 16 x 16 input, a 4 x 4 map (stride 4): cells with centres 2 and 6 are inside, the
    top-left 2 x 2; expand 2 makes the box -4..12: the top-left 3 x 3."""
    fs, ft = arr(1, 2, 4, 4), arr(1, 2, 4, 4)
    sq = ((fs - ft) ** 2).sum(axis=1)[0]
    inner = np.zeros((4, 4), bool)
    inner[:2, :2] = True
    step = det_step(np.zeros((1, 5, 4, 4)), [[[0, 0, 8, 8]]], [[0]], fs=t(fs), ft=t(ft))
    fn = LOSSES.get("feature-imitation").fn
    assert float(fn(step)) == pytest.approx(sq[inner].sum() / (2 * 4), rel=1e-9)
    wide = np.zeros((4, 4), bool)
    wide[:3, :3] = True
    assert float(fn(step, expand=2.0)) == pytest.approx(sq[wide].sum() / (2 * 9), rel=1e-9)
    both = sq[inner].sum() / 8 + 0.5 * sq[~inner].sum() / (2 * 12)
    assert float(fn(step, background_weight=0.5)) == pytest.approx(both, rel=1e-9)


def test_bounded_regression_counts_the_student_error_only_above_the_teacher_plus_margin():
    """Object A (centre cell (1, 1)): student error 1.0, teacher 0.25 -> counted. Object B (cell (3, 3)):
    student 0.04, teacher 0.09 -> not counted unless the margin exceeds 0.05."""
    target = np.zeros((1, 5, 4, 4))
    target[0, 1:3] = 2.0  # w = h = 2 cells everywhere, offsets 0
    student, teacher = target.copy(), target.copy()
    student[0, 1, 1, 1], teacher[0, 1, 1, 1] = 3.0, 2.5  # A: w off by 1 / 0.5
    student[0, 3, 3, 3], teacher[0, 4, 3, 3] = 0.2, 0.3  # B: dx off by 0.2, teacher's dy by 0.3
    step = det_step(student, [[[0, 0, 8, 8], [8, 8, 16, 16]]], [[0, 0]], teacher=t(teacher))
    fn = LOSSES.get("bounded-regression").fn
    assert float(fn(step)) == pytest.approx(1.0 / 2, rel=1e-6)
    assert float(fn(step, margin=0.1)) == pytest.approx((1.0 + 0.04) / 2, rel=1e-6)
    assert float(fn(step, margin=-0.8)) == pytest.approx(0.0, abs=1e-12)  # A within 0.8 of the teacher


def test_localization_distillation_is_the_softened_kl_over_the_four_edge_distributions():
    bins, T = 3, 10.0
    zs, zt = arr(1, 1 + 4 * bins, 4, 4), arr(1, 1 + 4 * bins, 4, 4)
    a, b = zs[0, 1:, 2, 2].reshape(4, bins), zt[0, 1:, 2, 2].reshape(4, bins)  # the object's cell (2, 2)
    want = T * T * sum(softmax(b[e] / T) @ np.log(softmax(b[e] / T) / softmax(a[e] / T)) for e in range(4))
    step = det_step(zs, [[[5, 4, 12, 12]]], [[0]], teacher=t(zt))
    got = LOSSES.get("localization-distillation").fn(step, bins=bins, temperature=T)
    assert float(got) == pytest.approx(want, rel=1e-9)
