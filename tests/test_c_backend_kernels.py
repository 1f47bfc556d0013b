"""edgekd.export.c_backend, kernel by kernel.

Bit-exactness of every C-backend kernel against the tflite-micro interpreter, one op per model, with
random shapes, per-channel scales and edge zero points (single-op flatbuffers built here); the fast
kernels (``kernels="fast"``: host build with the portable SIMD fallback) on shapes that take each of
their paths, and their one-step requantisation against the reference arithmetic.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgekd.export.c_backend import HostBuild, generate_c
from edgekd.export.c_backend.codegen import _dry_run
from edgekd.export.c_backend.host import gcc
from edgekd.export.c_backend.testing import Builder, S
from edgekd.graph import read_tflite, run_tflm

pytestmark = pytest.mark.skipif(gcc() is None, reason="no host gcc")
EDGE_ZPS = [-128, 127, 0]


def _check(
    model: bytes,
    n: int = 6,
    seed: int = 0,
    kernels: str = "portable",
    want: str | list[str] | None = None,
    **gen: bool,
):
    """The host build of ``model`` equals tflite-micro on ``n`` inputs; ``want``: the kernel it must use;
    ``gen``: more generate_c options. Returns the CModel."""
    from edgekd.graph import read_tflite

    m = read_tflite(model)
    shape = m.input_details()[0]["shape"]
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, size=(n, *shape[1:])).astype(np.int8)
    x[0] = -128  # edge values
    x[1] = 127
    ref = run_tflm(model, x, isolate=False).reshape(n, -1)
    cm = generate_c(model, optimize_plan=False, kernels=kernels, **gen)
    if want is not None:
        assert [lk["kernel"] for lk in cm.layer_kernels] == ([want] if isinstance(want, str) else want)
    with HostBuild(cm) as hb:
        got = hb(x)
    assert got.shape == ref.shape
    diff = np.argwhere(got != ref)
    assert diff.size == 0, f"{len(diff)} of {ref.size} output bytes differ, first at {diff[0].tolist()}"
    return cm


def _act(rng) -> int:
    return int(rng.choice([0, 1, 3]))  # NONE, RELU, RELU6


def _scale(rng, lo=-4.0, hi=-0.5) -> float:
    return float(10 ** rng.uniform(lo, hi))


def _conv_model(rng, depthwise: bool, ic: int | None = None, kernel: tuple[int, int] | None = None) -> bytes:
    b = Builder()
    ih, iw = int(rng.integers(3, 12)), int(rng.integers(3, 12))
    ic = ic or int(rng.integers(1, 6))
    fh, fw = kernel or (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    sh, sw = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    dh, dw = (int(rng.integers(1, 3)), int(rng.integers(1, 3))) if rng.random() < 0.3 else (1, 1)
    same = bool(rng.random() < 0.5)
    dm = int(rng.integers(1, 3)) if depthwise and kernel is None else 1
    oc = ic * dm if depthwise else int(rng.integers(1, 9))
    eh, ew = (fh - 1) * dh + 1, (fw - 1) * dw + 1
    if not same and (eh > ih or ew > iw):
        same = True
    oh = -(-ih // sh) if same else (ih - eh) // sh + 1
    ow = -(-iw // sw) if same else (iw - ew) // sw + 1
    in_s, out_s = _scale(rng, -2, 0), _scale(rng, -2, 0.5)
    in_zp, out_zp = int(rng.choice(EDGE_ZPS + [int(rng.integers(-128, 128))])), int(rng.choice(EDGE_ZPS))
    f_scales = np.array([_scale(rng, -3, -1) for _ in range(oc)], dtype=np.float32)
    if depthwise:
        w = rng.integers(-127, 128, size=(1, fh, fw, oc)).astype(np.int8)
        qdim = 3
    else:
        w = rng.integers(-127, 128, size=(oc, fh, fw, ic)).astype(np.int8)
        qdim = 0
    bias = rng.integers(-5000, 5000, size=oc).astype(np.int32)
    x = b.tensor([1, ih, iw, ic], in_s, in_zp)
    ft = b.tensor(list(w.shape), f_scales, [0] * oc, data=w, qdim=qdim)
    bt = b.tensor([oc], f_scales.astype(np.float64) * in_s, [0] * oc, dtype=S.TensorType.INT32, data=bias)
    y = b.tensor([1, oh, ow, oc], out_s, out_zp)
    if depthwise:
        opt = S.DepthwiseConv2DOptionsT()
        opt.depthMultiplier = dm
        kind, code = S.BuiltinOptions.DepthwiseConv2DOptions, S.BuiltinOperator.DEPTHWISE_CONV_2D
    else:
        opt = S.Conv2DOptionsT()
        kind, code = S.BuiltinOptions.Conv2DOptions, S.BuiltinOperator.CONV_2D
    opt.padding, opt.strideH, opt.strideW = (0 if same else 1), sh, sw
    opt.dilationHFactor, opt.dilationWFactor, opt.fusedActivationFunction = dh, dw, _act(rng)
    return b.build(code, [x, ft, bt], y, kind, opt)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6))
def test_conv2d_per_channel(seed):
    _check(_conv_model(np.random.default_rng(seed), depthwise=False), seed=seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6))
def test_depthwise_conv2d_per_channel(seed):
    _check(_conv_model(np.random.default_rng(100 + seed), depthwise=True), seed=seed)


def _fc_model(rng, batches: int = 1) -> bytes:
    b = Builder()
    accum, out_n = int(rng.integers(1, 40)), int(rng.integers(1, 20))
    in_s, f_s, out_s = _scale(rng, -2, 0), _scale(rng, -3, -1), _scale(rng, -2, 0.5)
    w = rng.integers(-127, 128, size=(out_n, accum)).astype(np.int8)
    x = b.tensor([1, batches, accum] if batches > 1 else [1, accum], in_s, int(rng.choice(EDGE_ZPS)))
    ft = b.tensor([out_n, accum], f_s, 0, data=w)
    bt = b.tensor(
        [out_n],
        in_s * f_s,
        0,
        dtype=S.TensorType.INT32,
        data=rng.integers(-3000, 3000, out_n).astype(np.int32),
    )
    y = b.tensor([1, batches, out_n] if batches > 1 else [1, out_n], out_s, int(rng.choice(EDGE_ZPS)))
    opt = S.FullyConnectedOptionsT()
    opt.fusedActivationFunction = _act(rng)
    return b.build(
        S.BuiltinOperator.FULLY_CONNECTED, [x, ft, bt], y, S.BuiltinOptions.FullyConnectedOptions, opt
    )


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
def test_fully_connected(seed):
    _check(_fc_model(np.random.default_rng(200 + seed)))


def _pool_model(rng, kind: str, c: int | None = None) -> bytes:
    b = Builder()
    ih, iw, c = int(rng.integers(2, 10)), int(rng.integers(2, 10)), c or int(rng.integers(1, 6))
    fh, fw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    sh, sw = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    same = bool(rng.random() < 0.5) or fh > ih or fw > iw
    oh = -(-ih // sh) if same else (ih - fh) // sh + 1
    ow = -(-iw // sw) if same else (iw - fw) // sw + 1
    s, zp = _scale(rng), int(rng.choice(EDGE_ZPS))
    x = b.tensor([1, ih, iw, c], s, zp)
    y = b.tensor([1, oh, ow, c], s, zp)
    opt = S.Pool2DOptionsT()
    opt.padding, opt.strideH, opt.strideW, opt.filterHeight, opt.filterWidth = (
        (0 if same else 1),
        sh,
        sw,
        fh,
        fw,
    )
    opt.fusedActivationFunction = _act(rng)
    return b.build(getattr(S.BuiltinOperator, kind), [x], y, S.BuiltinOptions.Pool2DOptions, opt)


@pytest.mark.parametrize(
    ("seed", "kind"), [(s, k) for s in range(3) for k in ("AVERAGE_POOL_2D", "MAX_POOL_2D")]
)
@pytest.mark.slow
def test_pooling(seed, kind):
    _check(_pool_model(np.random.default_rng(300 + seed), kind))


@pytest.mark.slow
@pytest.mark.parametrize(("seed", "broadcast"), [(0, False), (1, False), (2, True), (3, True)])
def test_add_with_and_without_broadcast(seed, broadcast):
    rng = np.random.default_rng(400 + seed)
    b = Builder()
    shape = [1, int(rng.integers(1, 6)), int(rng.integers(1, 6)), int(rng.integers(1, 6))]
    other = [1, 1, 1, shape[3]] if broadcast else shape
    x = b.tensor(shape, _scale(rng, -2, 0), int(rng.choice(EDGE_ZPS)))
    cst = rng.integers(-128, 128, size=other).astype(np.int8)
    k = b.tensor(other, _scale(rng, -2, 0), int(rng.choice(EDGE_ZPS)), data=cst)
    y = b.tensor(shape, _scale(rng, -2, 0), int(rng.choice(EDGE_ZPS)))
    opt = S.AddOptionsT()
    opt.fusedActivationFunction = _act(rng)
    _check(b.build(S.BuiltinOperator.ADD, [x, k], y, S.BuiltinOptions.AddOptions, opt))


@pytest.mark.slow
@pytest.mark.parametrize(("seed", "axes", "same_q"), [(0, [1, 2], False), (1, [1, 2], True), (2, [1], False), (3, [2, 3], False)])  # fmt: skip
def test_mean(seed, axes, same_q):
    rng = np.random.default_rng(500 + seed)
    b = Builder()
    shape = [1, int(rng.integers(1, 9)), int(rng.integers(1, 9)), int(rng.integers(1, 6))]
    keep = bool(rng.random() < 0.5)
    out_shape = (
        [1 if d in axes else n for d, n in enumerate(shape)]
        if keep
        else [n for d, n in enumerate(shape) if d not in axes]
    )
    s_in, zp_in = _scale(rng), int(rng.choice(EDGE_ZPS))
    s_out, zp_out = (s_in, zp_in) if same_q else (_scale(rng), int(rng.choice(EDGE_ZPS)))
    x = b.tensor(shape, s_in, zp_in)
    ax = b.tensor([len(axes)], None, None, dtype=S.TensorType.INT32, data=np.array(axes, dtype=np.int32))
    y = b.tensor(out_shape, s_out, zp_out)
    opt = S.ReducerOptionsT()
    opt.keepDims = keep
    _check(b.build(S.BuiltinOperator.MEAN, [x, ax], y, S.BuiltinOptions.ReducerOptions, opt))


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
def test_softmax(seed):
    rng = np.random.default_rng(600 + seed)
    b = Builder()
    shape = [1, int(rng.integers(2, 30))] if seed % 2 else [1, 3, int(rng.integers(2, 12))]
    x = b.tensor(shape, _scale(rng, -3, 0), int(rng.choice(EDGE_ZPS)))
    y = b.tensor(shape, 1 / 256, -128)
    opt = S.SoftmaxOptionsT()
    opt.beta = float(rng.choice([1.0, 0.5, 2.0]))
    _check(b.build(S.BuiltinOperator.SOFTMAX, [x], y, S.BuiltinOptions.SoftmaxOptions, opt), n=12)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3))
def test_pad_and_padv2(seed):
    rng = np.random.default_rng(700 + seed)
    b = Builder()
    shape = [1, int(rng.integers(1, 6)), int(rng.integers(1, 6)), int(rng.integers(1, 4))]
    pads = np.array(
        [[0, 0]] + [[int(rng.integers(0, 3)), int(rng.integers(0, 3))] for _ in range(3)], dtype=np.int32
    )
    s, zp = _scale(rng), int(rng.choice(EDGE_ZPS))
    x = b.tensor(shape, s, zp)
    pt = b.tensor([4, 2], None, None, dtype=S.TensorType.INT32, data=pads)
    y = b.tensor([n + int(p.sum()) for n, p in zip(shape, pads)], s, zp)
    if seed == 2:
        v = b.tensor([1], s, zp, data=np.array([int(rng.integers(-128, 128))], dtype=np.int8))
        _check(
            b.build(S.BuiltinOperator.PADV2, [x, pt, v], y, S.BuiltinOptions.PadV2Options, S.PadV2OptionsT())
        )
    else:
        _check(b.build(S.BuiltinOperator.PAD, [x, pt], y, S.BuiltinOptions.PadOptions, S.PadOptionsT()))


def test_reshape():
    b = Builder()
    x = b.tensor([1, 4, 3, 2], 0.05, -3)
    sh = b.tensor([2], None, None, dtype=S.TensorType.INT32, data=np.array([1, 24], dtype=np.int32))
    y = b.tensor([1, 24], 0.05, -3)
    _check(b.build(S.BuiltinOperator.RESHAPE, [x, sh], y))


# ---- the fast kernels --------------------------------------------------------------------------------
FAST_CONV_CASES = [(4, (1, 1)), (8, (1, 1)), (12, (1, 1)), (3, (3, 3)), (5, (2, 3)), (8, (3, 3)), (1, (3, 2))]


@pytest.mark.slow
@pytest.mark.parametrize(("seed", "case"), list(enumerate(FAST_CONV_CASES)))
def test_fast_conv2d(seed, case):
    """Pointwise rows straight from the input (channels a multiple of 4), else im2col with padding:
    int16 rows (lowmem=False) or, where that lowers the arena, two int8 im2col rows of scratch."""
    ic, kernel = case
    model = _conv_model(np.random.default_rng(800 + seed), depthwise=False, ic=ic, kernel=kernel)
    cm = _check(model, seed=seed, kernels="fast", want="ek_fast_conv2d", lowmem=False)
    low = _check(model, seed=seed, kernels="fast")
    kernel = low.layer_kernels[0]["kernel"]
    assert kernel in ("ek_fast_conv2d", "ek_fast_conv2d_lowmem")
    if kernel == "ek_fast_conv2d_lowmem":
        assert low.scratch_placement[0]["bytes"] * 3 == cm.scratch_placement[0]["bytes"]
        assert low.arena_size < cm.arena_size


@pytest.mark.slow
@pytest.mark.parametrize(
    ("seed", "case"), list(enumerate([(4, (3, 3)), (8, (3, 3)), (12, (2, 3)), (4, (1, 1))]))
)
def test_fast_depthwise_conv2d(seed, case):
    ic, kernel = case
    model = _conv_model(np.random.default_rng(900 + seed), depthwise=True, ic=ic, kernel=kernel)
    _check(model, seed=seed, kernels="fast", want="ek_fast_depthwise_conv2d")


def _inplace_chain(rng, ic: int, kernel: tuple[int, int], dil: tuple[int, int], oc: int) -> bytes:
    """RESHAPE (a copy) -> depthwise stride 1 SAME -> pointwise to ``oc`` channels: the depthwise and
    pointwise layers' inputs die there, so they may be written over (images large enough that the
    ring and tap pointers are smaller than the output)."""
    b = Builder()
    ih, iw = int(rng.integers(8, 12)), int(rng.integers(8, 12))
    shape = [1, ih, iw, ic]
    in_s, in_zp = _scale(rng, -2, 0), int(rng.choice(EDGE_ZPS))
    x = b.tensor(shape, in_s, in_zp)
    sh = b.tensor([4], None, None, dtype=S.TensorType.INT32, data=np.array(shape, dtype=np.int32))
    t = b.tensor(shape, in_s, in_zp)
    ops = [(S.BuiltinOperator.RESHAPE, [x, sh], t, 0, None)]
    for depthwise, n_out in ((True, ic), (False, oc)):
        w_shape = (1, *kernel, ic) if depthwise else (n_out, 1, 1, ic)
        w = rng.integers(-127, 128, size=w_shape).astype(np.int8)
        f_scales = np.array([_scale(rng, -3, -1) for _ in range(n_out)], dtype=np.float32)
        ft = b.tensor(list(w.shape), f_scales, [0] * n_out, data=w, qdim=3 if depthwise else 0)
        bias = rng.integers(-5000, 5000, size=n_out).astype(np.int32)
        bt = b.tensor(
            [n_out], f_scales.astype(np.float64) * in_s, [0] * n_out, dtype=S.TensorType.INT32, data=bias
        )
        in_s, in_zp = _scale(rng, -2, 0.5), int(rng.choice(EDGE_ZPS))
        y = b.tensor([1, ih, iw, n_out], in_s, in_zp)
        opt = S.DepthwiseConv2DOptionsT() if depthwise else S.Conv2DOptionsT()
        if depthwise:
            opt.depthMultiplier = 1
        opt.padding, opt.strideH, opt.strideW = 0, 1, 1
        opt.dilationHFactor, opt.dilationWFactor = dil if depthwise else (1, 1)
        opt.fusedActivationFunction = _act(rng)
        kind = S.BuiltinOptions.DepthwiseConv2DOptions if depthwise else S.BuiltinOptions.Conv2DOptions
        code = S.BuiltinOperator.DEPTHWISE_CONV_2D if depthwise else S.BuiltinOperator.CONV_2D
        ops.append((code, [t, ft, bt], y, kind, opt))
        t = y
    return b.build_ops(ops)


INPLACE_CASES = [
    (4, (3, 3), (1, 1), 4),
    (8, (5, 5), (1, 1), 4),
    (12, (3, 2), (2, 1), 12),
    (4, (2, 3), (1, 2), 8),
]


@pytest.mark.slow
@pytest.mark.parametrize(("seed", "case"), list(enumerate(INPLACE_CASES)))
def test_fast_in_place_depthwise_and_pointwise(seed, case):
    """The in-place depthwise kernel (a ring of pad_h + 1 input rows) and the pointwise convolution
    written over its input (out channels <= in channels; more: a separate buffer), bit-exact."""
    ic, kernel, dil, oc = case
    model = _inplace_chain(np.random.default_rng(1000 + seed), ic, kernel, dil, oc)
    _check(
        model,
        seed=seed,
        kernels="fast",
        want=["ek_copy", "ek_fast_depthwise_conv2d_inplace", "ek_fast_conv2d"],
    )
    m = read_tflite(model)
    alias = _dry_run(m, "fast")[1]
    _, dw_out, pw_out = (op.outputs[0] for op in m.operators)
    assert dw_out in alias and (pw_out in alias) == (oc <= ic)
    assert (
        generate_c(model, kernels="fast").arena_size
        <= generate_c(model, kernels="fast", inplace=False).arena_size
    )


@pytest.mark.slow
def test_fast_kernels_fall_back_where_they_do_not_apply():
    """Depth multiplier 2 / channels not a multiple of 4: the reference kernel, still bit-exact."""
    model = _conv_model(np.random.default_rng(7), depthwise=True, ic=3)
    _check(model, kernels="fast", want="ek_depthwise_conv2d")


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
def test_fast_fully_connected(seed):
    """Odd and even output counts, depths not a multiple of 4, one to three batches."""
    _check(_fc_model(np.random.default_rng(1000 + seed), batches=1 + seed % 3), kernels="fast",
           want="ek_fast_fully_connected")  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3))
def test_fast_average_pool(seed):
    _check(_pool_model(np.random.default_rng(1100 + seed), "AVERAGE_POOL_2D", c=4 * (seed + 1)), kernels="fast",
           want="ek_fast_avg_pool")  # fmt: skip


REQUANT_MAIN = r"""#include <stdio.h>
#include "edgekd_kernels_fast.h"
/* stdin: acc mult shift zp rshift rnd_lo rnd_hi per line; stdout: reference + zp, fast */
int main(void) {
    long acc, mult, shift, zp, rshift, lo, hi;
    while (scanf("%ld %ld %ld %ld %ld %ld %ld", &acc, &mult, &shift, &zp, &rshift, &lo, &hi) == 7) {
        ek_requant q = {(int32_t)mult, (int32_t)rshift, (int32_t)lo, (int32_t)hi};
        printf("%ld %ld\n", (long)ek_mul_by_quantized_multiplier((int32_t)acc, (int32_t)mult, (int32_t)shift) + zp,
               (long)ek_fast_requantize((int32_t)acc, &q));
    }
    return 0;
}
"""


def test_fast_requantize_equals_the_reference_arithmetic(tmp_path):
    """The one-SMLAL rounding of ek_fast_requantize (the fast kernels' output step) against TFLM's
    double rounding, on int32 extremes, rounding ties and random values over every right shift."""
    import subprocess

    from edgekd.export.c_backend.codegen import RUNTIME_DIR, requant_entry
    from edgekd.export.c_backend.quant import quantize_multiplier

    for f in ("edgekd_kernels.h", "edgekd_kernels.c", "edgekd_kernels_fast.h", "edgekd_kernels_fast.c"):
        (tmp_path / f).write_text((RUNTIME_DIR / f).read_text())
    (tmp_path / "main.c").write_text(REQUANT_MAIN)
    exe = tmp_path / "rq"
    subprocess.run([gcc(), "-O2", "-std=c99", "-Wall", "-Wextra", "-Werror", "-o", str(exe), *(str(tmp_path / f) for f in
                    ("main.c", "edgekd_kernels.c", "edgekd_kernels_fast.c"))], check=True)  # fmt: skip
    rng = np.random.default_rng(0)
    edges = [0, 1, -1, 2, -2, 2**31 - 1, -(2**31), 2**30, -(2**30), 12345, -12345]
    lines = []
    for real in [*(2.0 ** -np.arange(0, 34)), *(10 ** rng.uniform(-9, 1.5, 200)), 1.0 - 1e-12, 0.5]:
        mult, shift = quantize_multiplier(float(real))
        e = max(-shift, 1)
        ties = [k * (1 << (e - 1)) + d for k in (-3, -1, 1, 3) for d in (-1, 0, 1)]  # near .5 after the shift
        accs = [*edges, *rng.integers(-(2**31), 2**31, 20), *rng.integers(-5000, 5000, 20), *ties]
        for zp in (-128, 0, 127):
            entry = requant_entry(mult, shift, zp)
            lines += [f"{int(a)} {mult} {shift} {zp} {' '.join(map(str, entry[1:]))}" for a in accs
                      if -(2**31) <= int(a) < 2**31]  # fmt: skip
    out = subprocess.run(
        [str(exe)], input="\n".join(lines), capture_output=True, text=True, check=True
    ).stdout
    pairs = np.array([line.split() for line in out.splitlines()], dtype=np.int64)
    assert len(pairs) == len(lines) > 10000
    bad = np.flatnonzero(pairs[:, 0] != pairs[:, 1])
    assert bad.size == 0, f"{bad.size} differ, first: {lines[bad[0]]} -> {pairs[bad[0]].tolist()}"


# ---- less RAM: fully connected without scratch, convolutions in place, PAD fused ---------------------
@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6))
def test_fast_fully_connected_one_row_needs_no_scratch(seed):
    """One batch: accumulated straight from the int8 input (4, 2 and 1 channels a step, depth tails
    zero-filled in registers): no scratch in the arena, bit-exact."""
    cm = _check(_fc_model(np.random.default_rng(1200 + seed)), kernels="fast", want="ek_fast_fully_connected")
    assert cm.scratch_placement == []
    call = next(ln for ln in cm.files["edgekd_model.c"].splitlines() if "ek_fast_fully_connected(&" in ln)
    assert call.endswith(", 0);")  # the scratch argument


def _conv_op(b, rng, t, shape, q, depthwise, kernel, stride, same, dil, oc):
    """A convolution reading tensor ``t`` (``shape``, quantisation ``q``): (op, output, shape, q)."""
    _, ih, iw, ic = shape
    fh, fw = kernel
    eh, ew = (fh - 1) * dil[0] + 1, (fw - 1) * dil[1] + 1
    oh = -(-ih // stride) if same else (ih - eh) // stride + 1
    ow = -(-iw // stride) if same else (iw - ew) // stride + 1
    oc = ic if depthwise else oc
    w = rng.integers(-127, 128, size=(1, fh, fw, oc) if depthwise else (oc, fh, fw, ic)).astype(np.int8)
    f_scales = np.array([_scale(rng, -3, -1) for _ in range(oc)], dtype=np.float32)
    ft = b.tensor(list(w.shape), f_scales, [0] * oc, data=w, qdim=3 if depthwise else 0)
    bias = rng.integers(-5000, 5000, size=oc).astype(np.int32)
    bt = b.tensor([oc], f_scales.astype(np.float64) * q[0], [0] * oc, dtype=S.TensorType.INT32, data=bias)
    out_q = (_scale(rng, -2, 0.5), int(rng.choice(EDGE_ZPS)))
    out_shape = [shape[0], oh, ow, oc]
    y = b.tensor(out_shape, *out_q)
    opt = S.DepthwiseConv2DOptionsT() if depthwise else S.Conv2DOptionsT()
    if depthwise:
        opt.depthMultiplier = 1
    opt.padding, opt.strideH, opt.strideW = (0 if same else 1), stride, stride
    opt.dilationHFactor, opt.dilationWFactor, opt.fusedActivationFunction = *dil, _act(rng)
    kind = S.BuiltinOptions.DepthwiseConv2DOptions if depthwise else S.BuiltinOptions.Conv2DOptions
    code = S.BuiltinOperator.DEPTHWISE_CONV_2D if depthwise else S.BuiltinOperator.CONV_2D
    return (code, [t, ft, bt], y, kind, opt), y, out_shape, out_q


def _copied_input(b, rng, shape):
    """RESHAPE (a copy) of the model input: its output dies at its one reader, which may write over it."""
    q = (_scale(rng, -2, 0), int(rng.choice(EDGE_ZPS)))
    x = b.tensor(shape, *q)
    sh = b.tensor([4], None, None, dtype=S.TensorType.INT32, data=np.array(shape, dtype=np.int32))
    t = b.tensor(shape, *q)
    return (S.BuiltinOperator.RESHAPE, [x, sh], t, 0, None), t, q


IN_PLACE_CONV_CASES = [  # batches (the host check feeds one), in channels, out channels, kernel, dilation
    (1, 16, 16, (3, 3), (1, 1)),
    (1, 8, 4, (3, 3), (1, 1)),
    (1, 6, 6, (3, 3), (2, 1)),
    (1, 5, 3, (2, 3), (1, 2)),
    (1, 8, 8, (5, 5), (1, 1)),
]


@pytest.mark.slow
@pytest.mark.parametrize(("seed", "case"), list(enumerate(IN_PLACE_CONV_CASES)))
def test_fast_conv2d_in_place(seed, case):
    """A stride-1 SAME convolution (out channels <= in channels) written over its dead input, with a
    ring of pad_h + 1 input rows and two int8 im2col rows: bit-exact, and a smaller arena."""
    n, ic, oc, kernel, dil = case
    rng = np.random.default_rng(1300 + seed)
    b = Builder()
    shape = [n, int(rng.integers(12, 16)), int(rng.integers(12, 16)), 1]
    q = (_scale(rng, -2, 0), int(rng.choice(EDGE_ZPS)))
    x = b.tensor(shape, *q)  # a 1x1 convolution to ic channels first: the next one is the arena's peak
    first, t, shape, q = _conv_op(b, rng, x, shape, q, False, (1, 1), 1, True, (1, 1), ic)
    conv, y, _, _ = _conv_op(b, rng, t, shape, q, False, kernel, 1, True, dil, oc)
    model = b.build_ops([first, conv])
    cm = _check(model, seed=seed, kernels="fast")
    assert cm.layer_kernels[1]["kernel"] == "ek_fast_conv2d_inplace"
    assert y in _dry_run(read_tflite(model), "fast")[1]
    assert cm.arena_size < generate_c(model, kernels="fast", lowmem=False).arena_size


PAD_CASES = [  # depthwise, kernel, stride, conv SAME, pads (top, bottom, left, right), PADV2
    (True, (3, 3), 2, False, (0, 1, 0, 1), False),
    (True, (3, 3), 1, False, (1, 1, 1, 1), True),
    (False, (3, 3), 2, False, (1, 1, 1, 1), False),
    (False, (3, 3), 1, True, (2, 0, 1, 2), True),
    (True, (5, 5), 1, True, (0, 2, 2, 0), False),
]


def _pad_chain(rng, depthwise, kernel, stride, same, pads, v2, value_offset=0):
    b = Builder()
    shape = [1, int(rng.integers(6, 11)), int(rng.integers(6, 11)), 8]
    copy, t, q = _copied_input(b, rng, shape)
    top, bottom, left, right = pads
    pt = b.tensor([4, 2], None, None, dtype=S.TensorType.INT32,
                  data=np.array([[0, 0], [top, bottom], [left, right], [0, 0]], dtype=np.int32))  # fmt: skip
    padded = [1, shape[1] + top + bottom, shape[2] + left + right, 8]
    pad_out = b.tensor(padded, *q)
    if v2:
        v = b.tensor([1], *q, data=np.array([q[1] + value_offset], dtype=np.int8))
        pad = (S.BuiltinOperator.PADV2, [t, pt, v], pad_out, S.BuiltinOptions.PadV2Options, S.PadV2OptionsT())
    else:
        pad = (S.BuiltinOperator.PAD, [t, pt], pad_out, S.BuiltinOptions.PadOptions, S.PadOptionsT())
    conv, _, _, _ = _conv_op(b, rng, pad_out, padded, q, depthwise, kernel, stride, same, (1, 1), 8)
    return b.build_ops([copy, pad, conv])


@pytest.mark.slow
@pytest.mark.parametrize(("seed", "case"), list(enumerate(PAD_CASES)))
def test_pad_fused_into_the_convolution(seed, case):
    """A PAD (or PADV2 with the zero point) read by one convolution is not copied: the convolution
    reads the unpadded input with the PAD's rows and columns added to its own padding (fast and
    portable kernels), bit-exact and with a smaller arena than with the copy."""
    model = _pad_chain(np.random.default_rng(1400 + seed), *case)
    for kernels in ("fast", "portable"):
        cm = _check(model, seed=seed, kernels=kernels)
        assert [lk["kernel"] for lk in cm.layer_kernels][:2] == ["ek_copy", "fused"]
        assert cm.arena_size < generate_c(model, kernels=kernels, inplace=False).arena_size


@pytest.mark.slow
def test_pad_with_another_value_is_copied():
    """PADV2 with a value other than the zero point: the copy stays (the kernels pad with the zero point)."""
    model = _pad_chain(
        np.random.default_rng(1500), True, (3, 3), 1, False, (1, 1, 1, 1), True, value_offset=3
    )
    cm = _check(model, kernels="fast")
    assert [lk["kernel"] for lk in cm.layer_kernels][:2] == ["ek_copy", "ek_pad"]
