"""edgekd.graph.planner: exact TFLM greedy plan, optimized plan, re-ordered flatbuffers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekd.errors import EdgekdError
from edgekd.graph import measure_arena, read_tflite, run_tflm
from edgekd.graph.planner import (
    Buffer,
    apply_plan,
    build_buffers,
    greedy_plan,
    optimized_plan,
    reorder_model,
    tflm_greedy_place,
)
from edgekd.graph.sample_models import sample_models

NAMES = ["tiny_cnn", "branch", "residual", "mlp", "scratch_ops", "mobilenet_tiny"]


@pytest.fixture(scope="session")
def models() -> dict[str, Path]:
    return sample_models(NAMES)


@pytest.fixture(scope="session")
def tflm_heads(models) -> dict[str, int]:
    return {n: measure_arena(p)["head"] for n, p in models.items()}


def _assert_valid(plan) -> None:
    """No two buffers that are live at the same time overlap in memory."""
    bufs = plan.buffers
    for i, a in enumerate(bufs):
        assert a.offset >= 0 and a.offset + a.size <= plan.head
        for b in bufs[i + 1 :]:
            if a.overlaps(b):
                assert a.offset + a.size <= b.offset or b.offset + b.size <= a.offset, (a, b)


@pytest.mark.parametrize("name", NAMES)
def test_greedy_equals_tflm(models, tflm_heads, name):
    m = read_tflite(models[name])
    plan = greedy_plan(m)
    assert plan.head == tflm_heads[name]
    _assert_valid(plan)
    assert len(plan.timeline) == len(m.operators)
    assert max(plan.timeline) <= plan.head
    assert set(plan.offsets) == {t.index for t in m.activations if t.nbytes}


def test_scratch_buffers_counted(models, tflm_heads):
    m = read_tflite(models["scratch_ops"])
    with_scratch = greedy_plan(m)
    scratch = [b for b in with_scratch.buffers if b.tensor < 0]
    ops = {m.operators[b.op].opcode for b in scratch}
    assert ops == {"TRANSPOSE_CONV", "MEAN", "REDUCE_MAX"}
    assert all(b.first == b.last for b in scratch)
    without = tflm_greedy_place(build_buffers(m, scratch=False))
    assert without < tflm_heads["scratch_ops"] == with_scratch.head


@pytest.mark.parametrize("name", NAMES)
def test_optimized_never_worse_and_confirmed_by_tflm(models, tflm_heads, name):
    m = read_tflite(models[name])
    opt = optimized_plan(m)
    assert opt.head <= tflm_heads[name]
    _assert_valid(opt)
    assert sorted(opt.order) == list(range(len(m.operators)))
    if opt.head < tflm_heads[name]:
        new = apply_plan(m, opt)
        assert measure_arena(new)["head"] == opt.head
        x = np.random.default_rng(1).integers(
            -128, 128, size=(2, *m.input_details()[0]["shape"][1:]), dtype=np.int8
        )
        np.testing.assert_array_equal(run_tflm(new, x), run_tflm(m.data, x))


def test_branch_reordering_helps(models, tflm_heads):
    """The converter may emit either branch first: write the file with the long branch first (the worse
    order), then the optimizer must run the short branch (1x1 conv on the input) before the wide tensor is made."""
    m0 = read_tflite(models["branch"])
    inp = m0.inputs[0]
    concat = next(op for op in m0.operators if op.name == "CONCATENATION")
    on_input = [op.index for op in m0.operators if op.name == "CONV_2D" and inp in op.inputs]
    short = next(i for i in on_input if m0.operators[i].outputs[0] in concat.inputs)
    wide = max(range(len(m0.operators)), key=lambda i: m0.tensors[m0.operators[i].outputs[0]].nbytes)
    bad = [i for i in range(len(m0.operators)) if i != short]
    bad.insert(bad.index(concat.index), short)  # the short branch just before the concatenation
    m = read_tflite(reorder_model(m0, bad))
    short_new, wide_new = bad.index(short), bad.index(wide)
    opt = optimized_plan(m)
    assert opt.head < greedy_plan(m).head == measure_arena(m.data)["head"]
    assert opt.head <= tflm_heads["branch"]
    assert opt.order.index(short_new) < opt.order.index(wide_new)


def test_better_placement_via_offline_offsets(models, tflm_heads):
    m = read_tflite(models["mobilenet_tiny"])
    opt = optimized_plan(m)
    assert opt.needs_offline_offsets and opt.head < tflm_heads["mobilenet_tiny"]
    assert opt.head == opt.peak_live  # placement reaches the lower bound here
    data = apply_plan(m, opt)
    assert "OfflineMemoryAllocation" in read_tflite(data).metadata
    assert greedy_plan(data).head == opt.head  # our TFLM model reads the offsets back


def test_offline_offsets_are_honoured(models):
    m = read_tflite(models["residual"])
    plan = greedy_plan(m)
    # stack every tensor at its own offset (valid, wasteful): TFLM must follow the metadata
    offsets, cur = {}, 0
    for b in plan.buffers:
        if b.tensor >= 0:
            offsets[b.tensor] = cur
            cur += b.size
    data = reorder_model(m, plan.order, offsets)
    m2 = read_tflite(data)
    assert greedy_plan(m2).head == cur == measure_arena(data)["head"]


def test_reorder_rejects_bad_orders(models):
    m = read_tflite(models["tiny_cnn"])
    with pytest.raises(EdgekdError, match="permutation"):
        reorder_model(m, [0, 1])
    with pytest.raises(EdgekdError, match="topological"):
        reorder_model(m, list(reversed(range(len(m.operators)))))


def test_greedy_place_matches_tflm_rules():
    # sizes sorted largest first; ties: the later-added buffer is placed first (TFLM fills from the back)
    bufs = [Buffer(0, 32, 0, 0), Buffer(1, 32, 0, 0)]
    assert tflm_greedy_place(bufs) == 64
    assert [b.offset for b in bufs] == [32, 0]
    # a buffer not overlapping in time shares offsets; the small long-lived one goes above all
    bufs = [Buffer(0, 32, 0, 1), Buffer(1, 32, 1, 2), Buffer(2, 64, 2, 3), Buffer(3, 16, 0, 3)]
    assert tflm_greedy_place(bufs) == 112
    assert [b.offset for b in bufs] == [0, 64, 0, 96]
    # a gap between two live buffers is reused by a later, smaller one
    bufs = [Buffer(0, 48, 0, 0), Buffer(1, 64, 0, 2), Buffer(2, 32, 1, 1)]
    tflm_greedy_place(bufs)
    assert [b.offset for b in bufs] == [64, 0, 64]


def test_control_flow_subgraphs_match_tflm():
    """A tf.while_loop converts to a WHILE op with cond/body subgraphs, planned together by TFLM.

    (Built from a concrete function: a Keras LSTM becomes WHILE or a fused LSTM op depending on which
    Keras the process imported first, so it is not a stable fixture.)
    """
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32), tf.TensorSpec([], tf.int32)])
    def repeat_relu(x, n):
        def cond(i, x):
            return i < n

        def body(i, x):
            return i + 1, tf.nn.relu(x * 2.0 - 1.0)

        return tf.while_loop(cond, body, [tf.constant(0), x])[1]

    conv = tf.lite.TFLiteConverter.from_concrete_functions([repeat_relu.get_concrete_function()], repeat_relu)
    data = conv.convert()
    m = read_tflite(data)
    assert m.num_subgraphs == 3 and "WHILE" in m.op_names()
    assert next(op for op in m.operators if op.opcode == "WHILE").subgraph_calls == (1, 2)
    plan = greedy_plan(m)
    assert plan.head == measure_arena(data)["head"]
    assert {b.subgraph for b in plan.buffers} == {0, 1, 2}
    assert len(plan.timeline) == len(m.operators)
    assert optimized_plan(m).head <= plan.head


@pytest.mark.slow
def test_fused_lstm_scratch_matches_tflm():
    """tf_keras LSTM -> UNIDIRECTIONAL_SEQUENCE_LSTM (int8, int16 cell state): 4 cell-sized scratch buffers."""
    import tensorflow as tf
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    inp = tf_keras.Input((6, 4), batch_size=1)
    conv = tf.lite.TFLiteConverter.from_keras_model(tf_keras.Model(inp, tf_keras.layers.LSTM(8)(inp)))

    def rep():
        rng = np.random.default_rng(0)
        for _ in range(4):
            yield [rng.standard_normal((1, 6, 4)).astype(np.float32)]

    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    data = conv.convert()
    m = read_tflite(data)
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in m.op_names() and m.is_full_integer()
    plan = greedy_plan(m)
    scratch = [b for b in plan.buffers if b.tensor < 0]
    assert len(scratch) == 4
    assert plan.head == measure_arena(data)["head"]
