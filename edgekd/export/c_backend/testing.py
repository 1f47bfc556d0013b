"""Build one-operator int8 ``.tflite`` flatbuffers with chosen shapes and quantisation (for kernel
bit-exactness tests and benchmarks): no TensorFlow needed."""

from __future__ import annotations

import flatbuffers
import numpy as np

from edgekd.graph.tflite_model import _schema_module

S = _schema_module()


class Builder:
    """A one-operator int8 TFLite model."""

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
        oc = S.OperatorCodeT()
        oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), 1
        op = S.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = 0, list(inputs), [output]
        op.builtinOptionsType, op.builtinOptions = opt_type, opt
        sg = S.SubGraphT()
        sg.tensors, sg.inputs, sg.outputs, sg.operators = self.tensors, [inputs[0]], [output], [op]
        m = S.ModelT()
        m.version, m.operatorCodes, m.subgraphs, m.buffers = 3, [oc], [sg], self.buffers
        b = flatbuffers.Builder(4096)
        b.Finish(m.Pack(b), file_identifier=b"TFL3")
        return bytes(b.Output())
