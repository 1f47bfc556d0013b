"""edgekd.export.c_backend, kernel by kernel.

Bit-exactness of every C-backend kernel against the tflite-micro interpreter, one op per model, with
random shapes, per-channel scales and edge zero points (single-op flatbuffers built here).
"""

from __future__ import annotations

import numpy as np
import pytest

from edgekd.export.c_backend import HostBuild, generate_c
from edgekd.export.c_backend.host import gcc
from edgekd.export.c_backend.testing import Builder, S
from edgekd.graph import run_tflm

pytestmark = pytest.mark.skipif(gcc() is None, reason="no host gcc")
EDGE_ZPS = [-128, 127, 0]


def _check(model: bytes, n: int = 6, seed: int = 0, tmp_path=None) -> None:
    from edgekd.graph import read_tflite

    m = read_tflite(model)
    shape = m.input_details()[0]["shape"]
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, size=(n, *shape[1:])).astype(np.int8)
    x[0] = -128  # edge values
    x[1] = 127
    ref = run_tflm(model, x, isolate=False).reshape(n, -1)
    with HostBuild(generate_c(model, optimize_plan=False)) as hb:
        got = hb(x)
    assert got.shape == ref.shape
    diff = np.argwhere(got != ref)
    assert diff.size == 0, f"{len(diff)} of {ref.size} output bytes differ, first at {diff[0].tolist()}"


def _act(rng) -> int:
    return int(rng.choice([0, 1, 3]))  # NONE, RELU, RELU6


def _scale(rng, lo=-4.0, hi=-0.5) -> float:
    return float(10 ** rng.uniform(lo, hi))


def _conv_model(rng, depthwise: bool) -> bytes:
    b = Builder()
    ih, iw = int(rng.integers(3, 12)), int(rng.integers(3, 12))
    ic = int(rng.integers(1, 6))
    fh, fw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    sh, sw = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    dh, dw = (int(rng.integers(1, 3)), int(rng.integers(1, 3))) if rng.random() < 0.3 else (1, 1)
    same = bool(rng.random() < 0.5)
    dm = int(rng.integers(1, 3)) if depthwise else 1
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


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
def test_fully_connected(seed):
    rng = np.random.default_rng(200 + seed)
    b = Builder()
    accum, out_n = int(rng.integers(1, 40)), int(rng.integers(1, 20))
    in_s, f_s, out_s = _scale(rng, -2, 0), _scale(rng, -3, -1), _scale(rng, -2, 0.5)
    w = rng.integers(-127, 128, size=(out_n, accum)).astype(np.int8)
    x = b.tensor([1, accum], in_s, int(rng.choice(EDGE_ZPS)))
    ft = b.tensor([out_n, accum], f_s, 0, data=w)
    bt = b.tensor(
        [out_n],
        in_s * f_s,
        0,
        dtype=S.TensorType.INT32,
        data=rng.integers(-3000, 3000, out_n).astype(np.int32),
    )
    y = b.tensor([1, out_n], out_s, int(rng.choice(EDGE_ZPS)))
    opt = S.FullyConnectedOptionsT()
    opt.fusedActivationFunction = _act(rng)
    _check(
        b.build(
            S.BuiltinOperator.FULLY_CONNECTED, [x, ft, bt], y, S.BuiltinOptions.FullyConnectedOptions, opt
        )
    )


@pytest.mark.parametrize(
    ("seed", "kind"), [(s, k) for s in range(3) for k in ("AVERAGE_POOL_2D", "MAX_POOL_2D")]
)
@pytest.mark.slow
def test_pooling(seed, kind):
    rng = np.random.default_rng(300 + seed)
    b = Builder()
    ih, iw, c = int(rng.integers(2, 10)), int(rng.integers(2, 10)), int(rng.integers(1, 6))
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
    _check(b.build(getattr(S.BuiltinOperator, kind), [x], y, S.BuiltinOptions.Pool2DOptions, opt))


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
