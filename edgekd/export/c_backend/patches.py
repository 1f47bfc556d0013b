"""Patch-based execution of a CNN's first layers (MCUNetV2, Lin et al., NeurIPS 2021), rows only: the
prefix's output is split into ``n`` row bands; for each band the rows of every prefix tensor it depends
on (the receptive field: kernel height, stride, dilation, padding) are computed into small per-band
buffers, and the band is written into the full prefix output. Then the network runs as usual.

Bit-exact by construction: a band runs the same kernels on a sub-tensor of ``in_rows`` rows starting at
global row ``in_row0``, with ``pad_h = pad + in_row0 - out_row0 * stride``; the kernels read a row
outside ``[0, in_rows)`` as padding only where it is outside the whole tensor (image border), so every
output element sees the same inputs and the same int8 arithmetic as the whole-tensor call. Only halo
rows are computed more than once (``extra_macs``).

This module holds the geometry only; the code generator (``codegen.py``) chooses the prefix and ``n``
by the arena and emits the band loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


class Layer(NamedTuple):
    """A prefix convolution: operator, the tensor it reads (a fused PAD's input) and writes, row
    geometry, bytes per input and output row, MACs per output row."""

    op: int
    src: int
    out: int
    ih: int
    oh: int
    fh: int
    sh: int
    dh: int
    ph: int
    in_row_bytes: int
    out_row_bytes: int
    row_macs: int


class Band(NamedTuple):
    """One band of one layer: its input rows ``[in_row0, in_row0 + in_rows)``, output rows
    ``[out_row0, out_row0 + out_rows)`` and the padding above its first input row."""

    in_row0: int
    in_rows: int
    out_row0: int
    out_rows: int
    pad_h: int


def in_rows(layer: Layer, o0: int, o1: int) -> tuple[int, int, int]:
    """(first input row, end input row, pad_h) output rows ``[o0, o1)`` of ``layer`` read."""
    lo = o0 * layer.sh - layer.ph
    hi = (o1 - 1) * layer.sh - layer.ph + (layer.fh - 1) * layer.dh + 1
    r0, r1 = max(0, lo), min(layer.ih, hi)
    return r0, r1, layer.ph + r0 - o0 * layer.sh


@dataclass
class PatchPlan:
    """``layers`` (in order) run in ``n`` row bands; ``ops``: every operator of the prefix (fused PADs
    too); ``bands[op]``: per band of the layer; band buffer bytes of the two ping-pong buffers
    (odd / even intermediates)."""

    layers: list[Layer]
    n: int
    ops: tuple[int, ...]
    bands: dict[int, list[Band]] = field(default_factory=dict)
    buffer_bytes: tuple[int, int] = (0, 0)
    extra_macs: int = 0
    prefix_macs: int = 0
    kernel_scratch: int = 0  # the largest scratch a layer's kernel needs (set by the code generator)

    @property
    def input(self) -> int:
        return self.layers[0].src

    @property
    def output(self) -> int:
        return self.layers[-1].out

    @property
    def last_op(self) -> int:
        return self.layers[-1].op

    @property
    def intermediates(self) -> list[int]:
        return [la.out for la in self.layers[:-1]]

    @property
    def band_tensors(self) -> set[int]:
        """Tensors never overwritten in place while the bands run: the prefix input and intermediates."""
        return {self.input, *self.intermediates}

    def buffer_of(self, k: int) -> int:
        """Which ping-pong buffer (0 or 1) holds intermediate ``k`` (layer ``k``'s output)."""
        return k % 2

    def summary(self, model_macs: int) -> dict[str, object]:
        return {"bands": self.n, "split": "rows", "ops": list(self.ops), "layers": [la.op for la in self.layers],
                "output_tensor": self.output, "band_buffer_bytes": list(self.buffer_bytes),
                "kernel_scratch_bytes": self.kernel_scratch,
                "prefix_macs": self.prefix_macs, "extra_macs": self.extra_macs,
                "recompute_overhead_prefix": round(self.extra_macs / max(self.prefix_macs, 1), 4),
                "recompute_overhead_model": round(self.extra_macs / max(model_macs, 1), 4)}  # fmt: skip


def plan_bands(layers: list[Layer], ops: tuple[int, ...], n: int) -> PatchPlan:
    """The bands of ``layers`` for ``n`` row bands of the last layer's output (split as evenly as
    rows allow)."""
    last = layers[-1]
    n = max(1, min(n, last.oh))
    plan = PatchPlan(layers, n, ops, {la.op: [] for la in layers})
    biggest = [0, 0]
    computed = 0
    for j in range(n):
        o0, o1 = j * last.oh // n, (j + 1) * last.oh // n
        for k in range(len(layers) - 1, -1, -1):
            la = layers[k]
            r0, r1, pad = in_rows(la, o0, o1)
            plan.bands[la.op].append(Band(r0, r1 - r0, o0, o1 - o0, pad))
            computed += (o1 - o0) * la.row_macs
            if k:
                biggest[(k - 1) % 2] = max(biggest[(k - 1) % 2], (r1 - r0) * la.in_row_bytes)
            o0, o1 = r0, r1
    plan.buffer_bytes = (biggest[0], biggest[1])
    plan.prefix_macs = sum(la.oh * la.row_macs for la in layers)
    plan.extra_macs = computed - plan.prefix_macs
    return plan
