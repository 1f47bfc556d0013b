"""edgekd.graph: .tflite reader and TFLite Micro wrappers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekd.errors import EdgekdError
from edgekd.graph import check_tflm_loadable, measure_arena, read_tflite, run_tflm
from edgekd.graph.sample_models import convert_int8, sample_models


@pytest.fixture(scope="session")
def models() -> dict[str, Path]:
    return sample_models()


def test_reader_cnn_fields(models):
    m = read_tflite(models["tiny_cnn"])
    assert m.op_names() == [
        "AVERAGE_POOL_2D",
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "FULLY_CONNECTED",
        "MAX_POOL_2D",
        "RESHAPE",
        "SOFTMAX",
    ]
    (inp,) = m.input_details()
    assert inp["shape"] == [1, 16, 16, 1] and inp["dtype"] == "int8"
    assert 0 < inp["scale"] < 1 and -128 <= inp["zero_point"] <= 127
    (out,) = m.output_details()
    assert out["dtype"] == "int8" and out["shape"] == [1, 10]
    assert m.is_full_integer() and not m.is_hybrid() and not m.is_float()
    assert m.kind == "full_integer"
    conv = next(op for op in m.operators if op.opcode == "CONV_2D")
    w = m.tensors[conv.inputs[1]]
    assert w.has_data and w.dtype == "int8" and len(w.scale) == 8  # per-channel weights
    assert all(not t.has_data for t in m.activations)
    assert m.tensors[m.inputs[0]].nbytes == 256


def test_reader_bytes_and_errors(models, tmp_path):
    data = models["mlp"].read_bytes()
    m = read_tflite(data)
    assert m.op_names() == ["FULLY_CONNECTED"] and len(m.operators) == 3
    bad = tmp_path / "garbage.tflite"
    bad.write_bytes(b"this is not a flatbuffer at all")
    with pytest.raises(EdgekdError, match="garbage.tflite: not a TFLite flatbuffer"):
        read_tflite(bad)
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(b"\xff\xff\xff\x7fTFL3" + b"\x01" * 40)
    with pytest.raises(EdgekdError, match="corrupt.tflite: not a TFLite flatbuffer"):
        read_tflite(corrupt)
    with pytest.raises(EdgekdError, match="missing.tflite"):
        read_tflite(tmp_path / "missing.tflite")


def test_measure_and_run(models):
    a = measure_arena(models["tiny_cnn"])
    assert a["head"] > 0 and a["tail"] > 0 and a["total"] == a["head"] + a["tail"]
    assert a["head"] % 16 == 0
    check_tflm_loadable(models["tiny_cnn"])
    x = np.random.default_rng(0).standard_normal((3, 16, 16, 1)).astype(np.float32)
    y = run_tflm(models["tiny_cnn"], x, quantize_io=True)
    assert y.shape == (3, 10) and y.dtype == np.float32
    np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=0.05)  # softmax output
    yq = run_tflm(models["tiny_cnn"].read_bytes(), np.zeros((1, 16, 16, 1), np.int8))
    assert yq.shape == (1, 10) and yq.dtype == np.int8
    with pytest.raises(EdgekdError, match="expects int8"):
        run_tflm(models["tiny_cnn"], x)


def _float_fc_model(hybrid: bool) -> bytes:
    import tensorflow as tf

    inp = tf.keras.Input((64,), batch_size=1)  # >= 1024 weights, else the converter keeps them float
    k = tf.keras.Model(inp, tf.keras.layers.Dense(64)(inp))
    conv = tf.lite.TFLiteConverter.from_keras_model(k)
    if hybrid:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    return conv.convert()


def test_hybrid_rejected_with_op_name():
    data = _float_fc_model(hybrid=True)
    m = read_tflite(data)
    assert m.is_hybrid() and not m.is_full_integer() and m.kind == "hybrid"
    with pytest.raises(EdgekdError, match="FULLY_CONNECTED"):
        check_tflm_loadable(data)
    f = read_tflite(_float_fc_model(hybrid=False))
    assert f.is_float() and not f.is_hybrid()
    check_tflm_loadable(f.data)


def test_unsupported_op_named():
    import tensorflow as tf

    class TopK(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 8], tf.float32)])
        def f(self, x):
            return tf.math.top_k(x, k=3).values

    mod = TopK()
    data = tf.lite.TFLiteConverter.from_concrete_functions([mod.f.get_concrete_function()], mod).convert()
    assert "TOPK_V2" in read_tflite(data).op_names()
    with pytest.raises(EdgekdError, match="no kernel for op.*TOPK_V2"):
        check_tflm_loadable(data)


def test_tflm_abort_becomes_error():
    """TFLM abort()s the process on a softmax with a degenerate input scale; we load in a child."""
    import tensorflow as tf

    inp = tf.keras.Input((8,), batch_size=1)
    y = tf.keras.layers.Dense(2, kernel_initializer="zeros", bias_initializer="zeros")(inp)
    data = convert_int8(tf.keras.Model(inp, tf.keras.layers.Softmax()(y)))
    with pytest.raises(EdgekdError, match="crashed.*SOFTMAX .operator 1. has input scale"):
        measure_arena(data)
    with pytest.raises(EdgekdError, match="crashed"):
        check_tflm_loadable(data)
