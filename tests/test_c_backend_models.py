"""edgekd.export.c_backend on whole models.

The C backend on whole models: bit-exact with the tflite-micro interpreter on the exported test models,
arena from edgekd's planner, clear errors for unsupported ops and float models.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgekd.errors import EdgekdError
from edgekd.export.c_backend import HostBuild, generate_c
from edgekd.export.c_backend.host import gcc
from edgekd.graph import measure_arena, read_tflite, run_tflm
from edgekd.graph.sample_models import sample_models

NAMES = ["tiny_cnn", "residual", "mlp", "mobilenet_tiny"]


@pytest.fixture(scope="module")
def models():
    return sample_models([*NAMES, "scratch_ops"])


@pytest.mark.slow
@pytest.mark.skipif(gcc() is None, reason="no host gcc")
@pytest.mark.parametrize("name", NAMES)
def test_bit_exact_with_tflite_micro_and_smaller_arena(models, name):
    path = models[name]
    cm = generate_c(path)
    shape = read_tflite(path).input_details()[0]["shape"]
    x = np.random.default_rng(1).integers(-128, 128, size=(32, *shape[1:])).astype(np.int8)
    ref = run_tflm(path, x).reshape(len(x), -1)
    with HostBuild(cm) as hb:
        got = hb(x)
    assert np.array_equal(got, ref), f"{int((got != ref).sum())} output bytes differ"
    arena = measure_arena(path)
    # one static buffer from edgekd's planner: never above TFLM's planned head, far below its total
    assert cm.arena_size <= arena["head"]
    assert cm.arena_size < arena["total"]
    assert cm.greedy_arena == arena["head"]


def test_unsupported_op_is_named_and_tflm_suggested(models):
    with pytest.raises(EdgekdError) as ei:
        generate_c(models["scratch_ops"])
    msg = str(ei.value)
    assert "TRANSPOSE_CONV" in msg and "REDUCE_MAX" in msg and "--target tflite-micro --firmware" in msg
    assert "\n" not in msg


def test_float_model_is_refused():
    from edgekd.export.c_backend.testing import Builder, S

    b = Builder()
    x = b.tensor([1, 4], None, None, dtype=S.TensorType.FLOAT32)
    w = b.tensor([2, 4], None, None, dtype=S.TensorType.FLOAT32, data=np.ones((2, 4), np.float32))
    y = b.tensor([1, 2], None, None, dtype=S.TensorType.FLOAT32)
    model = b.build(S.BuiltinOperator.FULLY_CONNECTED, [x, w], y)
    with pytest.raises(EdgekdError, match="full-integer int8"):
        generate_c(model)
