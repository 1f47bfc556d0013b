"""Flatbuffer rewrites that make a converted model runnable on TFLite Micro without changing its outputs.

* :func:`split_wide_concatenations`: TFLite Micro's CONCATENATION kernel takes at most 10 inputs
  (``kMaxInputNum``); converters that unroll recurrent layers concatenate every time step at once. A
  CONCATENATION with more than ``max_inputs`` inputs becomes a tree of concatenations of at most
  ``max_inputs`` each along the same axis (new intermediate tensors copy the output's type and
  quantization, which TFLite requires to be shared by a concatenation's inputs and output in int8).
"""

from __future__ import annotations

import os

import numpy as np

from edgekd.graph.reader import read_tflite
from edgekd.graph.tflite_model import TFLiteModel, _schema_module

MAX_CONCAT_INPUTS = 8


def _concat_code(mt: object, s: object) -> int | None:
    for i, code in enumerate(mt.operatorCodes or []):  # type: ignore[attr-defined]
        builtin = max(int(code.builtinCode or 0), int(code.deprecatedBuiltinCode or 0))
        if builtin == s.BuiltinOperator.CONCATENATION:  # type: ignore[attr-defined]
            return i
    return None


def split_wide_concatenations(
    model: TFLiteModel | bytes | str | os.PathLike, max_inputs: int = MAX_CONCAT_INPUTS
) -> tuple[bytes, int]:
    """``(flatbuffer bytes, number of concatenations split)``; the model unchanged when there is none."""
    import copy

    import flatbuffers

    m = model if isinstance(model, TFLiteModel) else read_tflite(model)
    s = _schema_module()
    mt = s.ModelT.InitFromPackedBuf(bytearray(m.data), 0)
    code = _concat_code(mt, s)
    if code is None:
        return m.data, 0
    split = 0
    for g in mt.subgraphs:
        ops = []
        for op in g.operators:
            inputs = list(op.inputs)
            if op.opcodeIndex != code or len(inputs) <= max_inputs:
                ops.append(op)
                continue
            out_t = g.tensors[op.outputs[0]]
            rank = len(out_t.shape)
            axis = int(op.builtinOptions.axis) % rank
            while len(inputs) > max_inputs:
                grouped = []
                for k in range(0, len(inputs), max_inputs):
                    group = inputs[k : k + max_inputs]
                    if len(group) == 1:
                        grouped.append(group[0])
                        continue
                    t = copy.deepcopy(out_t)
                    shape = np.array(g.tensors[group[0]].shape, dtype=np.int32)
                    shape[axis] = sum(int(g.tensors[i].shape[axis]) for i in group)
                    t.shape = shape
                    t.shapeSignature = None
                    t.name = (out_t.name or b"concat") + f"/edgekd_part{len(g.tensors)}".encode()
                    mt.buffers.append(s.BufferT())
                    t.buffer = len(mt.buffers) - 1
                    g.tensors.append(t)
                    part = copy.deepcopy(op)
                    part.inputs, part.outputs = (
                        np.array(group, dtype=np.int32),
                        np.array([len(g.tensors) - 1], np.int32),
                    )
                    part.builtinOptions.fusedActivationFunction = s.ActivationFunctionType.NONE
                    ops.append(part)
                    grouped.append(len(g.tensors) - 1)
                inputs = grouped
            op.inputs = np.array(inputs, dtype=np.int32)
            ops.append(op)
            split += 1
        g.operators = ops
    if not split:
        return m.data, 0
    builder = flatbuffers.Builder(len(m.data) + 4096)
    builder.Finish(mt.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), split
