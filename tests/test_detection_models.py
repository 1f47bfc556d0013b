"""edgekd.models.detection (CenterNet-style and FOMO-style detectors, their layouts), the activation-peak
estimate (edgekd.models.activations) and the target encoding / host decoding (edgekd.models.detection_codec)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from edgekd.data.detection import paste_objects
from edgekd.errors import EdgekdError
from edgekd.metrics.detection import centroid_f1, detection_map
from edgekd.models import build_model
from edgekd.models.activations import activation_peak_bytes, padded_input_shape
from edgekd.models.detection import DetectionLayout
from edgekd.models.detection_codec import (
    centernet_targets,
    decode_centernet,
    decode_fomo,
    fomo_targets,
    gaussian_radius,
    max_pool3,
)
from edgekd.targets import load_target


# --- models ----------------------------------------------------------------------------------------
def test_layout_splits_heat_map_size_offset_and_edge_bins():
    wh, edges = DetectionLayout(3), DetectionLayout(3, "edges", 5)
    assert (wh.channels, edges.channels) == (7, 23)
    out = torch.arange(7.0).view(1, 7, 1, 1).repeat(2, 1, 2, 2)
    assert wh.heatmap(out)[0, :, 0, 0].tolist() == [0, 1, 2] and wh.wh(out)[0, :, 0, 0].tolist() == [3, 4]
    assert wh.offset(out)[0, :, 0, 0].tolist() == [5, 6]
    assert edges.edges(torch.zeros(2, 23, 3, 4)).shape == (2, 4, 5, 3, 4)
    assert DetectionLayout.of(23, "edges", 5) == edges
    with pytest.raises(EdgekdError, match="has no heat map"):
        DetectionLayout.of(4, "wh")
    with pytest.raises(EdgekdError, match="detection head 'boxes'"):
        DetectionLayout(3, "boxes")


@pytest.mark.parametrize("name, stride, channels", [("centernet", 4, 14), ("centernet-teacher", 4, 14), ("fomo", 8, 11),
                                                    ("fomo-teacher", 8, 11)])  # fmt: skip
def test_detectors_give_one_conv_output_at_their_stride(name, stride, channels):
    model = build_model(name, input_shape=(1, 48, 64), num_classes=10).eval()
    out = model(torch.randn(2, 1, 48, 64))
    assert out.shape == (2, channels, 48 // stride, 64 // stride)
    last = list(model.modules())[-1]
    assert isinstance(last, nn.Conv2d) and last.kernel_size == (1, 1)  # the graph ends in one 1x1 conv
    allowed = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Sequential)
    assert all(isinstance(m, allowed) for m in model.modules() if not list(m.children()))


def test_centernet_heat_map_starts_at_the_prior_and_the_input_must_fit_the_stride():
    model = build_model("centernet", input_shape=(1, 32, 32), num_classes=3).eval()
    with torch.no_grad():
        bias = model.head[-1].bias
    assert torch.sigmoid(bias[:3]).tolist() == pytest.approx([0.1] * 3, abs=1e-6)
    with pytest.raises(EdgekdError, match="multiple of the output stride 4"):
        build_model("centernet", input_shape=(1, 30, 32))
    wide = build_model("centernet", input_shape=(1, 32, 32), num_classes=3, width=2.0)
    assert sum(p.numel() for p in wide.parameters()) > 2 * sum(p.numel() for p in model.parameters())


# --- activation peak --------------------------------------------------------------------------------
def test_activation_peak_of_a_chain_is_the_largest_input_plus_output():
    """1x8x8 input (64 B) -> conv to 4 channels (256 B) -> BN/ReLU fused -> conv to 2 (128 B): the peak is
    256 + 128 = 384 bytes at the second conv."""
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    got = activation_peak_bytes(model, (1, 8, 8))
    assert got["peak"] == 384 and got["tensors"] == 3 and got["at"] == "3"
    assert activation_peak_bytes(model, (1, 8, 8), bytes_per_value=4)["peak"] == 4 * 384


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(2, 2, 1), nn.Conv2d(2, 2, 1)

    def forward(self, x):
        return x + self.b(self.a(x))


def test_activation_peak_keeps_a_residual_input_alive():
    """Input 2x4x4 = 32 B stays live until the add: at b, x + a(x) + b(a(x)) = 96 B."""
    assert activation_peak_bytes(_Residual(), (2, 4, 4))["peak"] == 96


def test_activation_peak_counts_the_pad_before_a_strided_conv():
    """A 3x3 stride-2 conv with padding 1 on 1x8x8: the converter pads to 9x9 (the trailing row and column
    no window reads are dropped): 64 + 81 (96 aligned) at the PAD, 96 + 32 at the conv."""
    conv = nn.Conv2d(1, 2, 3, stride=2, padding=1)
    assert padded_input_shape(conv, (1, 1, 8, 8)) == (1, 9, 9)
    assert padded_input_shape(nn.Conv2d(1, 2, 3, padding=1), (1, 1, 8, 8)) is None  # stride 1: SAME
    got = activation_peak_bytes(nn.Sequential(conv), (1, 8, 8))
    assert got == {"peak": 160, "at": "0 (PAD)", "tensors": 3}


STUDENT_PEAK = 48 * 48 * 16 + 49 * 49 * 16  # the stem's output and its padded copy before the stride-2 block


def test_the_mcu_student_fits_a_256_kb_board_and_the_teacher_is_larger():
    """int8 on 96 x 96: the student peaks at the PAD before its stride-2 depthwise conv (48 x 48 x 16 in,
    49 x 49 x 16 out) = 75,280 bytes; the teacher in a stride-4 residual block, 3 maps of 24 x 24 x 128."""
    ram = load_target("arduino-nano-33-ble").ram_bytes
    student = activation_peak_bytes(build_model("centernet"), (1, 96, 96))
    teacher = activation_peak_bytes(build_model("centernet-teacher"), (1, 96, 96))["peak"]
    assert ram == 256 * 1024 and student["peak"] == STUDENT_PEAK and student["at"] == "features.1.dw.0 (PAD)"
    assert student["peak"] < ram / 3 and teacher == 3 * 24 * 24 * 128
    assert activation_peak_bytes(build_model("fomo"), (1, 96, 96))["peak"] == STUDENT_PEAK


@pytest.mark.slow
def test_the_estimate_is_the_arena_tflite_micro_plans_for_the_int8_student(tmp_path):
    """Export the student as edgekd's route does (ONNX, lowering, onnx2tf int8) and measure the arena with
    the host TFLite Micro interpreter: its planned head equals the estimate (no fragmentation here)."""
    pytest.importorskip("onnx2tf")
    pytest.importorskip("tflite_micro")
    import onnx

    from edgekd.export.lower import lower
    from edgekd.export.onnx import export_torch, input_spec, load_onnx
    from edgekd.export.tflite import convert
    from edgekd.graph.tflm import measure_arena

    torch.manual_seed(0)
    model = build_model("centernet").eval()
    export_torch(model, (1, 96, 96), tmp_path / "m.onnx")
    lowered, _ = lower(load_onnx(tmp_path / "m.onnx"))
    onnx.save(lowered, tmp_path / "low.onnx")
    x = np.random.default_rng(0).standard_normal((8, 1, 96, 96)).astype(np.float32)
    out = convert(tmp_path / "low.onnx", tmp_path, ["int8"], x, input_spec(lowered)[0], sample_x=x[:2])
    arena = measure_arena(out["int8"].read_bytes())
    assert arena["head"] == STUDENT_PEAK == activation_peak_bytes(model, (1, 96, 96))["peak"]
    assert arena["total"] < load_target("arduino-nano-33-ble").ram_bytes / 3


# --- encoding ---------------------------------------------------------------------------------------
def test_gaussian_radius_is_cornernets_smallest_root():
    """Box 4 x 4 cells, overlap 0.7: the third root (of 4a r^2 - 2a(h + w) r + (a - 1) w h with a = 0.7,
    halved as CornerNet's code does) is (-b + sqrt(b^2 - 4 a' c)) / 2 with a' = 2.8, b = -11.2, c = -4.8."""
    assert gaussian_radius(4, 4) == pytest.approx((-11.2 + math.sqrt(11.2**2 + 4 * 2.8 * 4.8)) / 2, rel=1e-9)
    assert gaussian_radius(4, 4) == pytest.approx(1.0933, abs=1e-4)
    assert gaussian_radius(2, 2) == pytest.approx((-5.6 + math.sqrt(5.6**2 + 4 * 2.8 * 1.2)) / 2, rel=1e-9)


def test_centernet_targets_by_hand():
    """Box x 3..20, y 5..19 at stride 4: centre (2.875, 3.0) cells -> cell (2, 3), flat index 3 * 12 + 2;
    size (4.25, 3.5); offset (0.875, 0); radius of (ceil 4, ceil 5) is 1.22 -> 1: exp(-2) beside the peak,
    exp(-4) on the diagonal; edges from (2.5, 3.5): left 1.75, top 2.25, right 2.5, bottom 1.25."""
    boxes = torch.tensor([[[3.0, 5.0, 20.0, 19.0], [30, 30, 45, 47], [0, 0, 0, 0]]])
    t = centernet_targets(boxes, torch.tensor([[1, 0, -1]]), DetectionLayout(3), (12, 12), 4)
    assert t["index"][0, 0] == 38 and t["mask"].tolist() == [[True, True, False]]
    assert t["wh"][0, 0].tolist() == [4.25, 3.5] and t["offset"][0, 0].tolist() == [0.875, 0.0]
    assert t["edges"][0, 0].tolist() == [1.75, 2.25, 2.5, 1.25]
    heat = t["heatmap"][0, 1, 2:5, 1:4]
    want = torch.tensor([[math.exp(-4), math.exp(-2), math.exp(-4)], [math.exp(-2), 1, math.exp(-2)],
                         [math.exp(-4), math.exp(-2), math.exp(-4)]])  # fmt: skip
    assert torch.allclose(heat, want, atol=1e-6) and t["heatmap"][0, 1].count_nonzero() == 9
    assert t["heatmap"][0, 2].count_nonzero() == 0  # no object of class 2; padding draws nothing
    assert t["heatmap"][0, 0].max() == 1.0 and (t["heatmap"] == 1).sum() == 2  # one peak per object


def test_fomo_targets_mark_each_centre_cell():
    boxes = torch.tensor([[[0.0, 0, 8, 8], [16, 8, 32, 24], [0, 0, 0, 0]]])
    labels = fomo_targets(boxes, torch.tensor([[2, 0, -1]]), (4, 4), 8)
    want = torch.zeros(1, 4, 4, dtype=torch.long)
    want[0, 0, 0], want[0, 2, 3] = 3, 1  # centres (4, 4) -> cell (0, 0); (24, 16) -> cell x 3, y 2
    assert torch.equal(labels, want)


# --- decoding ---------------------------------------------------------------------------------------
def _scenes(n: int = 12, seed: int = 0):
    """Solid squares of 8..20 pixels on 48 x 48 canvases, 1..4 per image, no overlap."""
    objects = np.full((5, 20, 20), 255, np.uint8)
    _, boxes, classes = paste_objects(objects, np.arange(5) % 3, n, canvas=48, max_objects=4, sizes=(8, 20),
                                      max_iou=0.0, rng=np.random.default_rng(seed))  # fmt: skip
    return torch.from_numpy(boxes), torch.from_numpy(classes)


def _perfect_output(boxes, classes, layout: DetectionLayout, grid=(12, 12), stride=4) -> np.ndarray:
    """What a perfect network would output: the encoded targets, heat map as logits."""
    t = centernet_targets(boxes, classes, layout, grid, stride)
    n = len(boxes)
    out = torch.zeros(n, layout.channels, grid[0] * grid[1], dtype=torch.float64)
    p = t["heatmap"].double().clamp(1e-4, 1 - 1e-4).reshape(n, layout.num_classes, -1)
    out[:, : layout.num_classes] = torch.log(p / (1 - p))
    for i, k in zip(*torch.nonzero(t["mask"], as_tuple=True)):
        cell = t["index"][i, k]
        if layout.head == "wh":
            out[i, layout.num_classes :, cell] = torch.cat([t["wh"][i, k], t["offset"][i, k]]).double()
        else:
            d = t["edges"][i, k].double()
            two_hot = torch.zeros(4, layout.bins, dtype=torch.float64)
            lo = d.floor().clamp(max=layout.bins - 2).long()
            two_hot[torch.arange(4), lo] = 1 - (d - lo)
            two_hot[torch.arange(4), lo + 1] = d - lo
            out[i, layout.num_classes :, cell] = torch.log(two_hot.clamp(min=1e-12)).reshape(-1)
    return out.reshape(n, layout.channels, *grid).numpy()


@pytest.mark.parametrize("head", ["wh", "edges"])
def test_encoded_targets_decode_back_to_the_exact_boxes(head):
    boxes, classes = _scenes()
    layout = DetectionLayout(3, head, 8)
    d_boxes, d_scores, d_classes = decode_centernet(_perfect_output(boxes, classes, layout), layout, 4)
    for i in range(len(boxes)):
        real = classes[i] >= 0
        found = d_classes[i] >= 0
        assert found.sum() == real.sum()  # one detection per object, nothing else above the threshold
        want = sorted(zip(classes[i][real].tolist(), boxes[i][real].tolist()))
        got = sorted(zip(d_classes[i][found].tolist(), d_boxes[i][found].tolist()))
        for (wc, wb), (gc, gb) in zip(want, got):
            assert wc == gc and np.allclose(wb, gb, atol=1e-4)
    m = detection_map(d_boxes, d_scores, d_classes, boxes.numpy(), classes.numpy(), 3)
    assert m["map"] == pytest.approx(1.0) and m["map_50"] == 1.0
    nhwc = decode_centernet(
        np.moveaxis(_perfect_output(boxes, classes, layout), 1, -1), layout, 4, channels_last=True
    )
    assert all(np.array_equal(a, b) for a, b in zip(nhwc, (d_boxes, d_scores, d_classes)))  # TFLite's layout


def test_peak_picking_keeps_3x3_maxima_top_k_and_the_threshold():
    layout = DetectionLayout(1)
    out = np.full((1, 5, 6, 6), -10.0)
    out[0, 1:] = 0.0  # box channels: size and offset 0
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    out[0, 0, 1, 1], out[0, 0, 1, 2] = logit(0.9), logit(0.8)  # neighbours: only 0.9 is a peak
    out[0, 0, 4, 4] = logit(0.6)  # two cells away from both: a peak of its own
    boxes, scores, classes = decode_centernet(out, layout, 4, top_k=5, threshold=0.5)
    assert scores[0].tolist() == pytest.approx([0.9, 0.6, 0, 0, 0]) and classes[0].tolist() == [
        0,
        0,
        -1,
        -1,
        -1,
    ]
    assert boxes[0, 0].tolist() == [4.0, 4.0, 4.0, 4.0]  # w = h = 0 at cell (1, 1), stride 4
    _, scores, classes = decode_centernet(out, layout, 4, top_k=1, threshold=0.5)
    assert classes.shape == (1, 1) and scores[0, 0] == pytest.approx(0.9)
    assert (decode_centernet(out, layout, 4, threshold=0.95)[2] == -1).all()
    pooled = max_pool3(np.arange(9.0).reshape(1, 3, 3))
    assert pooled[0].tolist() == [[4, 5, 5], [7, 8, 8], [7, 8, 8]]


def test_fomo_decoding_gives_one_centroid_per_object_and_merges_touching_cells():
    boxes = torch.tensor([[[0.0, 0, 8, 8], [16, 8, 32, 24]]])
    classes = torch.tensor([[2, 0]])
    labels = fomo_targets(boxes, classes, (4, 4), 8)
    logits = torch.nn.functional.one_hot(labels, 4).permute(0, 3, 1, 2).double().numpy() * 10
    points, d_boxes, scores, d_classes = decode_fomo(logits, 8, top_k=4)
    got = sorted(zip(d_classes[0][:2].tolist(), points[0][:2].tolist()))
    assert got == [(0, [28.0, 20.0]), (2, [4.0, 4.0])] and (d_classes[0][2:] == -1).all()
    for (_, (px, py)), b in zip(got, ([16, 8, 32, 24], [0, 0, 8, 8])):
        assert b[0] <= px < b[2] and b[1] <= py < b[3]  # each centroid lies in its object's box
    assert centroid_f1(points, scores, d_classes, boxes.numpy(), classes.numpy())["f1"] == 1.0
    nhwc = decode_fomo(np.moveaxis(logits, 1, -1), 8, top_k=4, channels_last=True)
    assert all(np.array_equal(a, b) for a, b in zip(nhwc, (points, d_boxes, scores, d_classes)))
    logits[0, :, 0, 1] = logits[0, :, 0, 0]  # class 2 on two touching cells: one object
    points, d_boxes, _, d_classes = decode_fomo(logits, 8, top_k=4)
    assert (d_classes[0] == 2).sum() == 1
    k = int(np.flatnonzero(d_classes[0] == 2)[0])
    assert points[0, k].tolist() == [8.0, 4.0] and d_boxes[0, k].tolist() == [0, 0, 16, 8]
