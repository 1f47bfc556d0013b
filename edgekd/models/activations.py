"""Estimate of a model's peak activation memory on TFLite Micro, from the PyTorch graph.

The model is traced with ``torch.fx`` and its shapes propagated for one sample. Batch-norm, ReLU/ReLU6,
dropout and identity layers are merged into the tensor they read (TFLite folds them into the
convolution before them), so each remaining node is one op writing one tensor. A tensor lives from the
op that writes it to the last op that reads it (the input from the first op, the output to the end), as
in TFLite Micro's planner; the estimate is the largest sum of live tensors at any op, each tensor
``elements x bytes_per_value`` rounded up to 16 bytes. A real plan can only be larger (fragmentation:
greedy placement is not optimal), so this is the lower bound of the arena's planned (head) part; the
export's measured arena is the figure to trust.
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


def activation_peak_bytes(
    model: nn.Module, input_shape: Sequence[int], bytes_per_value: int = 1
) -> dict[str, Any]:
    """``{"peak": bytes, "at": the module path (or op) where it peaks, "tensors": count}`` for a batch-1 input of
    ``input_shape`` (int8 activations: ``bytes_per_value=1``); see the module docstring."""
    graph = _trace(model, input_shape)
    modules = dict(graph.named_modules())
    root: dict[str, str] = {}  # node -> the tensor it is stored in
    size: dict[str, int] = {}
    order: list[str] = []  # ops that write a tensor
    label: dict[str, str] = {}  # node -> module path (or the fx name of a function such as add)
    for node in graph.graph.nodes:
        if node.op == "output":
            continue
        meta = node.meta.get("tensor_meta")
        if node.op == "call_module" and isinstance(modules[node.target], ALIASES):
            root[node.name] = root[node.args[0].name]
            continue
        root[node.name] = node.name
        label[node.name] = str(node.target) if node.op == "call_module" else node.name
        size[node.name] = _aligned(math.prod(meta.shape) * bytes_per_value) if meta is not None else 0
        order.append(node.name)
    step = {name: i for i, name in enumerate(order)}
    last = {name: step[name] for name in order}
    for node in graph.graph.nodes:
        for arg in node.all_input_nodes:
            user = len(order) if node.op == "output" else step[root[node.name]]
            last[root[arg.name]] = max(last[root[arg.name]], user)
    peak, at = 0, ""
    for i, name in enumerate(order):
        live = sum(size[t] for t in order if step[t] <= i <= last[t])
        if live > peak:
            peak, at = live, label[name]
    return {"peak": int(peak), "at": at, "tensors": len(order)}
