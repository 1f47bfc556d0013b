"""edgekd.profile.macs: MACs and parameters against hand-computed values (PyTorch, ONNX, TFLite)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from edgekd.profile.macs import count_tflite_ops, onnx_macs, torch_macs


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),  # out 4x8x8 = 256 values x (1*3*3) = 2304 MACs, 40 params
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4),  # out 4x4x4 = 64 x 9 = 576 MACs, 40 params
        nn.Flatten(),
        nn.Linear(64, 10),  # 10 x 64 = 640 MACs, 650 params
    ).eval()


def test_torch_macs_by_hand() -> None:
    r = torch_macs(_model(), (1, 8, 8))
    assert [(layer["name"], layer["type"], layer["macs"], layer["params"]) for layer in r["layers"]] == [
        ("0", "conv", 2304, 40),
        ("2", "depthwise_conv", 576, 40),
        ("4", "linear", 640, 650),
    ]
    assert r["total"] == 2304 + 576 + 640 == 3520
    assert r["params"] == 730


def test_onnx_macs_match_torch(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    torch.onnx.export(_model(), torch.zeros(1, 1, 8, 8), str(path), dynamo=False)
    r = onnx_macs(path)
    assert [layer["macs"] for layer in r["layers"]] == [2304, 576, 640]
    assert r["total"] == 3520 and r["params"] == 730


def test_tflite_op_macs_by_hand() -> None:
    ops = [
        {"name": "conv", "type": "CONV_2D", "inputs": [[1, 8, 8, 1], [4, 3, 3, 1], [4]], "outputs": [[1, 8, 8, 4]]},
        {"name": "dw", "type": "DEPTHWISE_CONV_2D", "inputs": [[1, 8, 8, 4], [1, 3, 3, 4], [4]],
         "outputs": [[1, 4, 4, 4]]},
        {"name": "pool", "type": "MAX_POOL_2D", "inputs": [[1, 4, 4, 4]], "outputs": [[1, 2, 2, 4]]},
        {"name": "fc", "type": "FULLY_CONNECTED", "inputs": [[1, 64], [10, 64], [10]], "outputs": [[1, 10]]},
    ]  # fmt: skip
    layers = count_tflite_ops(ops)
    assert [(lyr["name"], lyr["macs"], lyr["params"]) for lyr in layers] == [
        ("conv", 2304, 40),
        ("dw", 576, 40),
        ("fc", 640, 650),
    ]
