"""What MLPerf Tiny devices and the official runner agree on beyond the framing: the model names, the
input encoding per task, and the ``m-results-[...]`` vector, on both sides of the serial line.

From the reference submissions and ``benchmark/runner/`` of mlcommons/tiny: the ``m-model-[...]`` name
selects the runner's data set; IC and VWW firmware receive uint8 pixels and subtract 128 for an int8
model, KWS firmware receives int8 features, AD firmware receives float32 features and quantizes them
itself (``round(x / scale) + zero_point``); results are the dequantized outputs printed ``%.3f`` and
joined by ``,`` (the runner divides them by their sum and takes the arg-max), except AD, whose one result
is the anomaly score: the mean squared error between the dequantized reconstruction and the float input.

Everything here is pure numpy in float32, so a device (:mod:`edgekd.harness.softdevice`, the C
firmware) and the host (:mod:`edgekd.harness.runner`) compute the same text from the same int8 outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekd.errors import EdgekdError
from edgekd.graph.quant import dequantize, quantize
from edgekd.harness.protocol import INPUT_FORMATS, MODEL_NAMES, RESULT_FORMATS

DEFAULT_INPUT_FORMAT = {
    "kws01": "int8",
    "vww01": "uint8",
    "ic01": "uint8",
    "ad01": "float32",
    "strww01": "int8",
}
# input shapes (batch dropped) of the MLPerf Tiny reference models
REFERENCE_SHAPES = {(49, 10, 1): "kws01", (96, 96, 3): "vww01", (32, 32, 3): "ic01", (640,): "ad01"}
FW_VERSION = "ULPMark for tinyML Firmware V0.0.1"  # EE_FW_VERSION of internally_implemented.h
MAX_DB_INPUT_SIZE = 96 * 96 * 3  # the reference firmware's db buffer (submitter_implemented.h)


@dataclass(frozen=True)
class ModelIO:
    """The int8 model's input and output as the serial protocol sees them."""

    input_shape: tuple[int, ...]
    input_dtype: str  # "int8" / "uint8"
    input_scale: float
    input_zero_point: int
    output_size: int
    output_scale: float
    output_zero_point: int
    ends_in_softmax: bool

    @classmethod
    def of(cls, model: Any) -> ModelIO:
        """From an :class:`edgekd.graph.TFLiteModel` (or a path to a ``.tflite``)."""
        from edgekd.graph import read_tflite

        m = read_tflite(model) if not hasattr(model, "input_details") else model
        ind, outd = m.input_details()[0], m.output_details()[0]
        last = [op.name for op in m.operators if m.outputs and m.outputs[0] in op.outputs]
        return cls(
            input_shape=tuple(int(d) for d in ind["shape"][1:]),
            input_dtype=np.dtype(ind["dtype"]).name,
            input_scale=_per_tensor(ind["scale"]),
            input_zero_point=int(_per_tensor(ind["zero_point"])),
            output_size=int(np.prod(outd["shape"][1:])),
            output_scale=_per_tensor(outd["scale"]),
            output_zero_point=int(_per_tensor(outd["zero_point"])),
            ends_in_softmax=bool(last) and last[-1] in ("SOFTMAX", "LOGISTIC"),
        )

    @property
    def input_elements(self) -> int:
        return int(np.prod(self.input_shape))

    def input_nbytes(self, input_format: str) -> int:
        """Bytes the host sends per sample in ``input_format``."""
        return self.input_elements * (4 if input_format == "float32" else 1)


def _per_tensor(v: Any) -> float:
    if isinstance(v, (list, tuple, np.ndarray)):
        v = np.asarray(v).reshape(-1)
        return float(v[0]) if v.size else 0.0
    return float(v)


def infer_model_name(io: ModelIO, task: str | None = None) -> tuple[str, str]:
    """(MLPerf Tiny model name, why): the reference model whose input shape this is, else ``ad01`` for
    a reconstruction model (output as large as the input, or ``task == "reconstruction"``), else ``ic01``."""
    if io.input_shape in REFERENCE_SHAPES:
        name = REFERENCE_SHAPES[io.input_shape]
        return name, f"input shape {io.input_shape} is the MLPerf Tiny {name} reference model's"
    if task == "reconstruction" or io.output_size == io.input_elements:
        return "ad01", "a reconstruction model (anomaly score from its error, as the AD reference)"
    return "ic01", f"not an MLPerf Tiny reference shape ({io.input_shape}); a classifier, reported as ic01"


def check_choice(value: str, choices: tuple[str, ...], option: str) -> str:
    if value not in choices:
        raise EdgekdError(f"{option} {value!r}: valid: {', '.join(choices)}")
    return value


def default_results(io: ModelIO, model_name: str) -> str:
    """``float`` (dequantized, as the reference firmware) for AD and models ending in softmax;
    ``softmax`` for a classifier that outputs logits: the runner divides the results by their sum,
    which inverts the ranking when logits sum to a negative number."""
    return "float" if model_name == "ad01" or io.ends_in_softmax else "softmax"


@dataclass(frozen=True)
class WireSettings:
    """What host and device agree on for one model: the MLPerf Tiny name (``m-model-[...]``), the input
    encoding, the results format, and the device's name (``m-name-dut-[...]``); on the firmware, its
    ``EE_*`` defines. ``why`` says where the name came from."""

    model_name: str
    input_format: str
    results: str
    vendor: str = "edgekd"
    why: str = ""

    @classmethod
    def of(cls, model: Any, model_name: str | None = None, input_format: str | None = None,
           results: str | None = None, vendor: str = "edgekd", task: str | None = None) -> WireSettings:  # fmt: skip
        """The settings given, else the defaults for the model (a path, a TFLiteModel or a ModelIO)."""
        io = model if isinstance(model, ModelIO) else ModelIO.of(model)
        if model_name is not None:
            name, why = check_choice(model_name, MODEL_NAMES, "--mlperf-model"), "given (--mlperf-model)"
        else:
            name, why = infer_model_name(io, task)
        fmt = check_choice(input_format or DEFAULT_INPUT_FORMAT[name], INPUT_FORMATS, "--input-format")
        res = check_choice(results or default_results(io, name), RESULT_FORMATS, "--results")
        return cls(name, fmt, res, vendor, why)

    def defines(self) -> list[str]:
        """The firmware's compile-time settings (ee_main.c)."""
        return [f'-DEE_MODEL_NAME="{self.model_name}"', f'-DEE_VENDOR="{self.vendor}"',
                f"-DEE_INPUT_FORMAT={self.input_format}", f"-DEE_RESULTS={self.results}"]  # fmt: skip

    def as_dict(self) -> dict[str, str]:
        return {"mlperf_model": self.model_name, "mlperf_model_reason": self.why,
                "input_format": self.input_format, "results": self.results}  # fmt: skip


# ---- the host side: samples -> bytes on the wire ----------------------------------------------------


def encode_inputs(q: np.ndarray, x_float: np.ndarray | None, io: ModelIO, input_format: str) -> np.ndarray:
    """Per-sample wire bytes ``(N, nbytes)`` from quantized model inputs ``q`` (and the float samples
    for ``float32``; without them, the dequantized ``q``)."""
    n = len(q)
    q = np.asarray(q).reshape(n, -1)
    if input_format == "int8":
        return q.view(np.uint8) if q.dtype == np.int8 else q.astype(np.uint8)
    if input_format == "uint8":
        return (q.astype(np.int16) + 128).astype(np.uint8) if io.input_dtype == "int8" else q.astype(np.uint8)
    xf = x_float if x_float is not None else dequantize(q, io.input_scale, io.input_zero_point)
    return np.ascontiguousarray(np.asarray(xf, dtype=np.float32).reshape(n, -1)).view(np.uint8)


# ---- the device side: bytes on the wire -> model input, model output -> results ---------------------


def decode_input(data: bytes, io: ModelIO, input_format: str) -> tuple[np.ndarray, np.ndarray]:
    """(model input in its dtype, float input for the AD score) from one sample's wire bytes."""
    dt = np.dtype(io.input_dtype)
    n = io.input_elements
    if input_format == "float32":
        xf = np.frombuffer(data[: 4 * n].ljust(4 * n, b"\0"), dtype="<f4").copy()
        q = quantize(xf, io.input_scale, io.input_zero_point, dt)
        return q, xf
    raw = np.frombuffer(data[:n].ljust(n, b"\0"), dtype=np.uint8)
    if input_format == "uint8" and dt == np.int8:
        q = (raw.astype(np.int16) - 128).astype(np.int8)
    else:
        q = raw.view(dt).copy()
    return q, dequantize(q, io.input_scale, io.input_zero_point)


def result_values(out_q: np.ndarray, x_float: np.ndarray | None, io: ModelIO, model_name: str,
                  results: str) -> list[int] | list[float]:  # fmt: skip
    """The values of the ``m-results-[...]`` line for one inference, in float32 as the firmware computes
    them: ``raw`` the int8 outputs; ``float`` the dequantized outputs, or for ``ad01`` one anomaly score
    (mean squared error, accumulated in order); ``softmax`` the softmax of the dequantized outputs."""
    out_q = np.asarray(out_q).reshape(-1)
    if results == "raw":
        return [int(v) for v in out_q]
    deq = dequantize(out_q, io.output_scale, io.output_zero_point)
    if model_name == "ad01" and results == "float" and x_float is not None and deq.size == x_float.size:
        d = deq - np.asarray(x_float, dtype=np.float32).reshape(-1)
        return [float(np.cumsum(d * d, dtype=np.float32)[-1] / np.float32(d.size))]
    if results == "softmax":
        e = np.exp(deq - deq.max(), dtype=np.float32)
        deq = (e / np.cumsum(e, dtype=np.float32)[-1]).astype(np.float32)
    return [float(v) for v in deq]


def format_results(values: list[int] | list[float]) -> str:
    """``m-results-[v0,v1,...]``: ints as is, floats as C's ``%.3f`` (``printf`` rounds the exact
    binary value to nearest, as Python's format does)."""
    parts = [str(v) if isinstance(v, (int, np.integer)) else f"{float(v):.3f}" for v in values]
    return f"m-results-[{','.join(parts)}]"
