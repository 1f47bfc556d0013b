"""Build one-operator int8 ``.tflite`` flatbuffers with chosen shapes and quantisation (for kernel
bit-exactness tests and benchmarks): no TensorFlow needed."""

from __future__ import annotations

import flatbuffers
import numpy as np

from edgekd.graph.tflite_model import _schema_module

S = _schema_module()


class Builder:
    """A one-operator int8 TFLite model (or a chain of operators: ``build_ops``)."""

    def __init__(self) -> None:
        self.tensors: list = []
        self.buffers: list = [S.BufferT()]

    def tensor(self, shape, scale, zp, dtype=S.TensorType.INT8, data=None, qdim=0) -> int:
        t = S.TensorT()
        t.shape = np.asarray(shape, dtype=np.int32)
        t.type = dtype
        t.name = f"t{len(self.tensors)}".encode()
        if scale is not None:
            qp = S.QuantizationParametersT()
            qp.scale = np.atleast_1d(np.asarray(scale, dtype=np.float32))
            qp.zeroPoint = np.atleast_1d(np.asarray(zp, dtype=np.int64))
            qp.quantizedDimension = qdim
            t.quantization = qp
        if data is not None:
            b = S.BufferT()
            b.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=np.uint8)
            self.buffers.append(b)
            t.buffer = len(self.buffers) - 1
        self.tensors.append(t)
        return len(self.tensors) - 1

    def build(self, code: int, inputs, output, opt_type=0, opt=None) -> bytes:
        return self.build_ops([(code, inputs, output, opt_type, opt)])

    def build_ops(self, ops) -> bytes:
        """A model of ``ops`` ((code, inputs, output, options type, options) each) run in order: the
        first op's first input is the model input, the last op's output the model output."""
        codes = list(dict.fromkeys(o[0] for o in ops))
        operator_codes = []
        for code in codes:
            oc = S.OperatorCodeT()
            oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), 1
            operator_codes.append(oc)
        operators = []
        for code, inputs, output, opt_type, opt in ops:
            op = S.OperatorT()
            op.opcodeIndex, op.inputs, op.outputs = codes.index(code), list(inputs), [output]
            op.builtinOptionsType, op.builtinOptions = opt_type, opt
            operators.append(op)
        sg = S.SubGraphT()
        sg.tensors, sg.inputs, sg.outputs, sg.operators = (
            self.tensors,
            [ops[0][1][0]],
            [ops[-1][2]],
            operators,
        )
        m = S.ModelT()
        m.version, m.operatorCodes, m.subgraphs, m.buffers = 3, operator_codes, [sg], self.buffers
        b = flatbuffers.Builder(4096)
        b.Finish(m.Pack(b), file_identifier=b"TFL3")
        return bytes(b.Output())
