"""Estimate of a model's peak activation memory on TFLite Micro, from the PyTorch graph.

The model is traced with ``torch.fx`` and its shapes propagated for one sample. Batch-norm, ReLU/ReLU6,
dropout and identity layers are merged into the tensor they read (TFLite folds them into the
convolution before them), so each remaining node is one op writing one tensor. A strided convolution
with padding gets the PAD op the converter puts before it: PyTorch pads both sides where TFLite's SAME
padding would pad the trailing side only, so the padded input is materialised; edgekd's export lowering
(``edgekd/export/lower.py``) drops the trailing padding no window reads, so the PAD output is the input
with its leading padding plus the trailing padding still read. A tensor lives from the op that writes it
to the last op that reads it (the input from the first op, the output to the end), as in TFLite Micro's
planner; the estimate is the largest sum of live tensors at any op, each tensor ``elements x
bytes_per_value`` rounded up to 16 bytes. A real plan can only be larger (greedy placement fragments),
so this is a lower bound of the arena's planned (head) part; the export's measured arena is the figure
to trust.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

ALIASES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.Dropout, nn.Identity)


def _aligned(n: int) -> int:
    return (n + 15) // 16 * 16


def _trace(model: nn.Module, input_shape: Sequence[int]) -> Any:
    from torch.fx import symbolic_trace
    from torch.fx.passes.shape_prop import ShapeProp

    graph = symbolic_trace(model)
    was = model.training
    model.eval()
    with torch.no_grad():
        ShapeProp(graph).propagate(torch.zeros(1, *input_shape))
    model.train(was)
    return graph


def padded_input_shape(conv: nn.Conv2d, shape: Sequence[int]) -> tuple[int, ...] | None:
    """``(C, H', W')`` of the PAD tensor the TFLite route makes before a strided, padded ``conv`` on an
    input of ``shape`` (N, C, H, W); None when no PAD is needed (stride 1, or no padding)."""
    pad = conv.padding if isinstance(conv.padding, tuple) else None
    if pad is None or max(conv.stride) == 1 or not any(pad):
        return None
    dims = []
    for size, k, s, d, p in zip(shape[2:], conv.kernel_size, conv.stride, conv.dilation, pad):
        eff, padded = (k - 1) * d + 1, size + 2 * p
        unused = padded - ((padded - eff) // s * s + eff)
        dims.append(size + p + p - min(p, unused))
    return (int(shape[1]), *dims)


class _Plan:
    """Tensors in the order ops write them, with sizes, labels and last reads."""

    def __init__(self, bytes_per_value: int) -> None:
        self.bytes = bytes_per_value
        self.order: list[str] = []
        self.size: dict[str, int] = {}
        self.label: dict[str, str] = {}
        self.last: dict[str, int] = {}

    def write(self, name: str, shape: Sequence[int], label: str) -> int:
        self.order.append(name)
        self.size[name] = _aligned(math.prod(shape) * self.bytes)
        self.label[name] = label
        self.last[name] = len(self.order) - 1
        return len(self.order) - 1

    def read(self, name: str, step: int) -> None:
        self.last[name] = max(self.last[name], step)

    def peak(self) -> tuple[int, str]:
        step = {name: i for i, name in enumerate(self.order)}
        best, at = 0, ""
        for i, name in enumerate(self.order):
            live = sum(self.size[t] for t in self.order if step[t] <= i <= self.last[t])
            if live > best:
                best, at = live, self.label[name]
        return best, at


def activation_peak_bytes(
    model: nn.Module, input_shape: Sequence[int], bytes_per_value: int = 1
) -> dict[str, Any]:
    """``{"peak": bytes, "at": the module path (or op) where it peaks, "tensors": count}`` for a batch-1
    input of ``input_shape`` (int8 activations: ``bytes_per_value=1``); see the module docstring."""
    graph = _trace(model, input_shape)
    modules = dict(graph.named_modules())
    plan = _Plan(bytes_per_value)
    root: dict[str, str] = {}  # node -> the tensor it is stored in
    for node in graph.graph.nodes:
        module = modules.get(node.target) if node.op == "call_module" else None
        if node.op == "output":
            for arg in node.all_input_nodes:
                plan.read(root[arg.name], len(plan.order))
            continue
        if isinstance(module, ALIASES):
            root[node.name] = root[node.args[0].name]
            continue
        inputs = [root[a.name] for a in node.all_input_nodes]
        padded = (
            padded_input_shape(module, node.args[0].meta["tensor_meta"].shape)
            if isinstance(module, nn.Conv2d)
            else None
        )
        if padded is not None:  # PAD reads the input, the conv reads the PAD output
            step = plan.write(f"pad:{node.name}", padded, f"{node.target} (PAD)")
            for t in inputs:
                plan.read(t, step)
            inputs = [f"pad:{node.name}"]
        label = str(node.target) if node.op == "call_module" else node.name
        step = plan.write(node.name, node.meta["tensor_meta"].shape[1:], label)
        for t in inputs:
            plan.read(t, step)
        root[node.name] = node.name
    peak, at = plan.peak()
    return {"peak": int(peak), "at": at, "tensors": len(plan.order)}
