"""edgekd.export.c_backend on whole models.

The C backend on whole models: bit-exact with the tflite-micro interpreter on the exported test models
with either kernel set (portable reference kernels, fast Cortex-M4 kernels through their portable SIMD
fallback), arena from edgekd's planner, clear errors for unsupported ops and float models.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgekd.errors import EdgekdError
from edgekd.export.c_backend import HostBuild, generate_c
from edgekd.export.c_backend.codegen import KERNELS, _dry_run, _scratch_sizes, choose_lowmem, plan_arena
from edgekd.export.c_backend.host import gcc
from edgekd.graph import measure_arena, read_tflite, run_tflm
from edgekd.graph.sample_models import sample_models

NAMES = ["tiny_cnn", "residual", "mlp", "mobilenet_tiny"]
MLPERF = ["kws_dscnn_like", "ic_resnet8_like", "vww_mobilenet_like", "ad_fcae_like"]


@pytest.fixture(scope="module")
def models():
    return sample_models([*NAMES, "scratch_ops"])


def _assert_bit_exact(path, cm, n: int = 32) -> None:
    shape = read_tflite(path).input_details()[0]["shape"]
    x = np.random.default_rng(1).integers(-128, 128, size=(n, *shape[1:])).astype(np.int8)
    ref = run_tflm(path, x).reshape(len(x), -1)
    with HostBuild(cm) as hb:
        got = hb(x)
    assert np.array_equal(got, ref), f"{cm.kernels} kernels: {int((got != ref).sum())} output bytes differ"


@pytest.mark.slow
@pytest.mark.skipif(gcc() is None, reason="no host gcc")
@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("name", NAMES)
def test_bit_exact_with_tflite_micro_and_smaller_arena(models, name, kernels):
    path = models[name]
    cm = generate_c(path, kernels=kernels)
    _assert_bit_exact(path, cm)
    arena = measure_arena(path)
    # one static buffer from edgekd's planner: never above TFLM's planned head plus the fast kernels'
    # largest layer scratch (planned inside the arena), far below its total
    most = max((p["bytes"] for p in cm.scratch_placement), default=0)
    assert cm.arena_size <= arena["head"] + most
    assert cm.arena_size < arena["total"]
    assert cm.greedy_arena == arena["head"]
    assert cm.scratch_bytes == 0 and "ek_scratch" not in cm.files["edgekd_model.c"]


@pytest.mark.slow
@pytest.mark.skipif(gcc() is None, reason="no host gcc")
@pytest.mark.parametrize("name", MLPERF)
def test_fast_kernels_bit_exact_on_the_mlperf_models(name):
    """The MLPerf Tiny shaped models through the fast kernels; the choice is stated in the source and
    the summary (c_model.json), layer by layer."""
    path = sample_models([name])[name]
    cm = generate_c(path, kernels="fast")
    _assert_bit_exact(path, cm, n=8)
    info = cm.summary()
    assert info["kernels"] == "fast" and "Kernels: fast" in cm.files["edgekd_model.c"]
    assert "edgekd_kernels_fast.c" in cm.sources
    assert [lk["op"] for lk in info["layer_kernels"]] == cm.order
    conv = {lk["kernel"] for lk in info["layer_kernels"] if lk["opcode"] in ("CONV_2D", "FULLY_CONNECTED")}
    assert conv <= {
        "ek_fast_conv2d",
        "ek_fast_conv2d_inplace",
        "ek_fast_conv2d_lowmem",
        "ek_fast_fully_connected",
    }
    assert info["scratch_bytes"] == 0 and bool(info["scratch_placement"]) == (name != "ad_fcae_like")
    for p in info["scratch_placement"]:  # inside the arena, passed to that layer's kernel
        assert p["offset"] % 16 == 0 and p["offset"] + p["bytes"] <= cm.arena_size
        assert f"(ek_arena + {p['offset']}));" in cm.files["edgekd_model.c"]


@pytest.mark.parametrize("name", NAMES)
def test_fast_kernel_scratch_is_planned_in_the_arena(models, name):
    """Each layer's scratch is an arena buffer alive during that layer: the arena is never above the
    tensors' arena plus the static scratch buffer it replaces, and the scratch overlaps none of the
    layer's own tensors."""
    m = read_tflite(models[name])
    cm = generate_c(m, kernels="fast")
    tensors_only = plan_arena(m).arena
    static = -(-max(_scratch_sizes(m, "fast", inplace=False).values(), default=0) // 16) * 16
    assert cm.arena_size <= generate_c(m, kernels="fast", inplace=False).arena_size <= tensors_only + static
    plan = plan_arena(m, True, *_dry_run(m, "fast", True, choose_lowmem(m, "fast")))
    assert plan.offsets == {t: cm.input["offset"] for t in m.inputs} | plan.offsets
    sizes = {t.index: t.nbytes for t in m.tensors}
    for p in cm.scratch_placement:
        op = m.operators[p["op"]]
        for t in {*op.inputs, *op.outputs} & plan.offsets.keys():
            lo = plan.offsets[t]
            assert lo + sizes[t] <= p["offset"] or p["offset"] + p["bytes"] <= lo


def test_scratch_in_the_arena_and_in_place_layers_on_tiny_cnn(models):
    """tiny_cnn: 4,096 B of tensors plus a static scratch buffer (1,536 B before it was sized by kernel
    path) became one arena with the scratch in it: 4,176 B (the depthwise layer's 9 tap pointers and
    zero points, 80 B, on top of its 2 x 2,048 B), 2,560 B once the depthwise convolution writes over its
    input (its scratch, 360 B with the ring, the largest; the fully connected layer needs none)."""
    m = read_tflite(models["tiny_cnn"])
    assert plan_arena(m).arena == 4096
    assert max(_scratch_sizes(m, "fast").values()) == 360
    assert generate_c(m, kernels="fast", inplace=False).arena_size == 4176
    assert generate_c(m, kernels="fast").arena_size == 2560


def test_one_row_fully_connected_layers_need_no_scratch():
    """A one-row fully connected layer accumulates straight from its int8 input: ad_fcae_like's arena is
    its 768 B of tensors (TFLite Micro's head; 2,048 B when its 640-deep layer took a 1,280 B int16 row)."""
    m = read_tflite(sample_models(["ad_fcae_like"])["ad_fcae_like"])
    assert plan_arena(m).arena == 768
    assert _scratch_sizes(m, "fast") == {}
    assert generate_c(m, kernels="fast").arena_size == 768


def test_in_place_layers_share_their_input_buffer():
    """kws_dscnn_like: its depthwise (stride 1) and pointwise (64 -> 64) layers write over their input,
    halving the 16,256 B arena (8,000 B in + 8,000 B out + scratch at each layer) to 8,800 B (8,000 B +
    the in-place depthwise scratch: 12 tap and row pointers, zero points, a ring of 2 rows); the
    output of each in-place layer sits at its input's offset, bit-exact (test above)."""
    m = read_tflite(sample_models(["kws_dscnn_like"])["kws_dscnn_like"])
    assert generate_c(m, kernels="fast", inplace=False).arena_size == 16256
    sizes, alias = _dry_run(m, "fast")
    cm = generate_c(m, kernels="fast")
    assert cm.arena_size == 8800
    kinds = [lk["kernel"] for lk in cm.layer_kernels]
    assert kinds.count("ek_fast_depthwise_conv2d_inplace") == 4 and len(alias) == 8
    plan = plan_arena(m, True, sizes, alias)
    assert all(plan.offsets[o] == plan.offsets[i] for o, i in alias.items())


def test_unknown_kernels_are_refused(models):
    with pytest.raises(EdgekdError, match="unknown kernels 'simd'; choose one of portable, fast"):
        generate_c(models["mlp"], kernels="simd")


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


def test_bench_kernels_option_lists_the_c_backend_kernels():
    from edgekd.commands.bench import command
    from edgekd.export.c_backend.codegen import DEFAULT_KERNELS, KERNELS

    opt = next(p for p in command.params if p.name == "kernels")
    assert tuple(opt.type.choices) == KERNELS and opt.default == DEFAULT_KERNELS


# ---- patch-based prefixes (MCUNetV2, rows only) ---------------------------------------------------


def test_patch_bands_follow_the_receptive_field():
    """Two row bands through a 3x3 stride-2 convolution (no top padding, as SAME on an even height) and
    a 3x3 stride-1 one with padding 1: each band's input rows, the padding above its first row (only at
    the image's top edge), and the recomputed halo rows."""
    from edgekd.export.c_backend.patches import Band, Layer, plan_bands

    s2 = Layer(0, 10, 11, 16, 8, 3, 2, 1, 0, 48, 64, 100)
    s1 = Layer(1, 11, 12, 8, 8, 3, 1, 1, 1, 64, 64, 10)
    p = plan_bands([s2, s1], (0, 1), 2)
    assert p.bands[1] == [Band(0, 5, 0, 4, 1), Band(3, 5, 4, 4, 0)]
    assert p.bands[0] == [Band(0, 11, 0, 5, 0), Band(6, 10, 3, 5, 0)]
    assert p.buffer_bytes == (5 * 64, 0)  # the one intermediate: 5 rows a band
    assert (p.prefix_macs, p.extra_macs) == (8 * 100 + 8 * 10, 2 * 100)
    assert p.band_tensors == {10, 11} and (p.input, p.output) == (10, 12)


@pytest.mark.slow
@pytest.mark.skipif(gcc() is None, reason="no host gcc")
@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize(
    "name,prefix",
    [
        ("tiny_cnn", (2, 3)),  # two 3x3 convolutions, padding 1
        ("mobilenet_tiny", (4, 3)),  # 3x3 stride 2 (VALID), depthwise 3x3, pointwise, depthwise stride 2
        ("kws_dscnn_like", (2, 5)),  # 10x4 stride 2 with padding 4 rows, then depthwise 3x3
    ],
)
def test_patch_based_prefix_bit_exact(name, prefix, kernels):
    """A prefix forced into row bands (whatever it saves) gives TFLite Micro's bytes: the bands run the
    whole-tensor kernels on sub-tensors, padding only at the image border."""
    path = sample_models([name])[name]
    cm = generate_c(path, kernels=kernels, patches=prefix)
    info = cm.summary()["patches"]
    assert info["bands"] == prefix[1] and len(info["layers"]) == prefix[0]
    assert f"{prefix[1]} row bands" in cm.files["edgekd_model.c"]
    _assert_bit_exact(path, cm, n=4)


@pytest.mark.slow
@pytest.mark.skipif(gcc() is None, reason="no host gcc")
@pytest.mark.parametrize("kernels", KERNELS)
def test_patches_lower_the_vww_arena(kernels):
    """VWW (MobileNetV1-0.25, 96x96x3): its peak is in the first stage (48x48x8 and 48x48x16), so the
    planner runs the first four layers (conv 3x3 stride 2, depthwise, pointwise, depthwise stride 2) in 12
    row bands: the arena holds the input, the 24x24x16 output and the band buffers; recomputed halo
    rows cost 6.0% of the model's MACs; bit-exact."""
    path = sample_models(["vww_mobilenet_like"])["vww_mobilenet_like"]
    cm = generate_c(path, kernels=kernels)
    without = generate_c(path, kernels=kernels, patches=None)
    assert (without.arena_size, cm.arena_size) == {"fast": (55328, 42800), "portable": (55296, 42624)}[
        kernels
    ]
    assert without.patches is None and "Patch-based" not in without.files["edgekd_model.c"]
    info = cm.summary()["patches"]
    assert (info["layers"], info["bands"], info["extra_macs"]) == ([0, 1, 2, 3], 12, 447744)
    assert info["recompute_overhead_model"] < 0.065
    assert info["scratch_bytes"] + 27648 + 24 * 24 * 16 == cm.arena_size  # input + output + band buffers
    assert "Patch-based prefix (MCUNetV2): operators 0..3 in 12 row bands" in cm.files["edgekd_model.c"]
    _assert_bit_exact(path, cm, n=4)


def test_patches_stay_off_where_they_save_nothing(models):
    """KWS's first stage keeps 25x5x64 to its end (no early peak to cut: in-place layers already share
    one buffer); tiny_cnn's forced bands would raise its arena: the planner leaves both whole."""
    kws = sample_models(["kws_dscnn_like"])["kws_dscnn_like"]
    for path in (kws, models["tiny_cnn"]):
        cm = generate_c(path, kernels="fast")
        assert (
            cm.patches is None and cm.arena_size == generate_c(path, kernels="fast", patches=None).arena_size
        )
    assert generate_c(models["tiny_cnn"], kernels="fast", patches=(2, 3)).arena_size > 2560
