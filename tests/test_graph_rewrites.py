"""edgekd.graph.rewrites: split_wide_concatenations, checked against LiteRT.

split_wide_concatenations: a 12-input int8 CONCATENATION (TFLite Micro takes at most 10) becomes a tree
that TFLite Micro runs, with exactly the outputs LiteRT gives for the original file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekd.errors import EdgekdError
from edgekd.graph import read_tflite, run_tflm
from edgekd.graph.rewrites import split_wide_concatenations
from edgekd.runtimes import run_outputs


def _wide_concat_int8(parts: int = 12) -> bytes:
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([1, parts, 4], tf.float32)])
    def f(x: tf.Tensor) -> tf.Tensor:
        return tf.concat([tf.nn.relu(x[:, i : i + 1, :] * float(i + 1)) for i in range(parts)], axis=1)

    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    rng = np.random.default_rng(0)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: (
        [rng.standard_normal((1, parts, 4)).astype(np.float32)] for _ in range(16)
    )
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    return conv.convert()


def test_wide_concatenation_split_runs_on_tflite_micro(tmp_path: Path) -> None:
    data = _wide_concat_int8()
    assert read_tflite(data).op_names().count("CONCATENATION") == 1
    x = np.random.default_rng(1).standard_normal((6, 12, 4)).astype(np.float32)
    with pytest.raises(EdgekdError, match="CONCATENATION"):
        run_tflm(data, x, quantize_io=True)
    new, n = split_wide_concatenations(data)
    m = read_tflite(new)
    concats = [op for op in m.operators if op.name == "CONCATENATION"]
    assert n == 1 and len(concats) == 3 and max(len(op.inputs) for op in concats) == 8
    (tmp_path / "wide.tflite").write_bytes(data)
    ref = run_outputs("litert-ref", tmp_path / "wide.tflite", x, channels_last=False)
    got = run_tflm(new, x, quantize_io=True).reshape(len(x), -1)
    assert np.array_equal(got, ref)
    assert split_wide_concatenations(new) == (new, 0)  # nothing left to split
