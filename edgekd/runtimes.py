"""Runtime adapters: one small class per backend with the same interface.

``load()`` reads the file (raising :class:`EdgekdError` for files that are not models), ``predict(x)``
takes normalised float32 inputs in the data set's layout (N, C, H, W) or (N, F) and returns float
outputs (N, ...); int8 models get quantized inputs and dequantized outputs. Adapters are chosen from
a registry by file extension (``RUNTIMES_BY_EXTENSION``); heavy imports happen in ``load()``.
"""

from __future__ import annotations

import contextlib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgekd.errors import EdgekdError, error_line
from edgekd.graph.quant import dequantize, quantize

RUNTIMES: dict[str, type[Runtime]] = {}
RUNTIMES_BY_EXTENSION: dict[str, list[str]] = {}


def register_runtime(cls: type[Runtime]) -> type[Runtime]:
    """Class decorator: make ``cls`` available by ``cls.name`` and for each of ``cls.extensions``."""
    RUNTIMES[cls.name] = cls
    for ext in cls.extensions:
        RUNTIMES_BY_EXTENSION.setdefault(ext, []).append(cls.name)
    return cls


def adapt_input(
    x: np.ndarray, model_shape: tuple[int, ...], channels_last: bool, path: str | Path
) -> np.ndarray:
    """Bring a data batch (N, ...) to the model's per-sample input shape ``model_shape[1:]``.

    Tries, in order of the runtime's convention, the data as is and channels-last (NCHW -> NHWC,
    NCL -> NLC); a flat model input takes the flattened sample. Anything else is an error that names
    both shapes."""
    want = tuple(int(s) for s in model_shape[1:])
    have = tuple(x.shape[1:])
    moved = np.moveaxis(x, 1, -1) if x.ndim >= 3 else None
    candidates = [moved, x] if channels_last else [x, moved]
    for cand in candidates:
        if cand is not None and tuple(cand.shape[1:]) == want:
            return np.ascontiguousarray(cand)
    if len(want) == 1 and math.prod(have) == want[0]:
        return np.ascontiguousarray(x.reshape(len(x), -1))
    raise EdgekdError(
        f"{path}: model input shape {list(want)} does not match the data's sample shape {list(have)}; "
        "profile it with the data set it was trained on (--data)"
    )


class Runtime(ABC):
    """A loaded model on one backend."""

    name: ClassVar[str]
    extensions: ClassVar[tuple[str, ...]] = ()
    kernels: ClassVar[str] = "default"
    channels_last: ClassVar[bool] = False
    #: measured RSS covers the whole host process when True (meaningless for MCU runtimes)
    host: ClassVar[bool] = True

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        self.path = Path(path)
        self.threads = int(threads)
        self.input_shape: tuple[int, ...] = ()
        self.precision = "fp32"

    @classmethod
    def applicable(cls, path: Path) -> str | None:
        """``None`` if this runtime can run ``path`` by default, else the reason it is skipped."""
        return None

    @abstractmethod
    def load(self) -> None:
        """Read the model file; raise EdgekdError if it is not a valid model for this runtime."""

    @abstractmethod
    def _run(self, x: np.ndarray) -> np.ndarray:
        """Run an already-adapted batch; returns float outputs."""

    def batch_size(self) -> int:
        """Largest batch the model accepts (1 for fixed-shape models)."""
        return 1

    def prepare(self, x: np.ndarray) -> np.ndarray:
        """Data batch -> the model's layout (and dtype). Errors if the shapes cannot match."""
        return adapt_input(np.asarray(x, dtype=np.float32), self.input_shape, self.channels_last, self.path)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Outputs for a data batch, in chunks the model accepts."""
        xa = self.prepare(x)
        bs = self.batch_size()
        outs = [self._run(xa[i : i + bs]) for i in range(0, len(xa), bs)]
        return np.concatenate(outs, axis=0) if outs else np.empty((0,))

    def runner(self, x1: np.ndarray) -> Callable[[], Any]:
        """A zero-argument callable running one prepared batch-1 input (used for latency)."""
        xa = self.prepare(x1[:1])
        return lambda: self._run(xa)

    def close(self) -> None:  # noqa: B027  (optional hook)
        """Release resources."""


@register_runtime
class TorchRuntime(Runtime):
    """An edgekd checkpoint (``.pt``) on PyTorch (eager, CPU)."""

    name = "pytorch"
    extensions = (".pt", ".pth")

    def load(self) -> None:
        import torch

        from edgekd.models import load_model

        self.model, self.record = load_model(self.path)
        kwargs = self.record.get("kwargs", {})
        shape = kwargs.get("input_shape")
        if shape is None:
            raise EdgekdError(f"{self.path}: checkpoint kwargs have no input_shape; cannot profile it")
        self.input_shape = (1, *(int(s) for s in shape))
        self.num_classes = kwargs.get("num_classes")
        self._torch = torch
        self._prev_threads = torch.get_num_threads()
        torch.set_num_threads(max(1, self.threads))

    def batch_size(self) -> int:
        return 256

    def _run(self, x: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            return self.model(self._torch.from_numpy(x)).float().numpy()

    def close(self) -> None:
        with contextlib.suppress(AttributeError):
            self._torch.set_num_threads(self._prev_threads)


@register_runtime
class OnnxRuntime(Runtime):
    """An ONNX file on onnxruntime's CPU execution provider."""

    name = "onnxruntime"
    extensions = (".onnx",)

    def load(self) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, self.threads)
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.sess = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001  (onnxruntime raises many types)
            raise EdgekdError(
                f"{self.path}: not a loadable ONNX model ({error_line(e, 200, with_type=False)})"
            ) from None
        inp = self.sess.get_inputs()[0]
        self.input_name = inp.name
        self._dynamic_batch = not isinstance(inp.shape[0], int)
        self.input_shape = tuple(d if isinstance(d, int) else 1 for d in inp.shape)
        self._dtype = np.float16 if "float16" in inp.type else np.float32
        self.precision = "int8" if self._is_quantized() else ("fp16" if self._dtype == np.float16 else "fp32")

    def _is_quantized(self) -> bool:
        try:
            import onnx

            m = onnx.load(str(self.path), load_external_data=False)
            return any(n.op_type in ("QuantizeLinear", "QLinearConv", "ConvInteger") for n in m.graph.node)
        except Exception:  # noqa: BLE001
            return False

    def batch_size(self) -> int:
        return 256 if self._dynamic_batch else 1

    def _run(self, x: np.ndarray) -> np.ndarray:
        out = self.sess.run(None, {self.input_name: x.astype(self._dtype, copy=False)})[0]
        return np.asarray(out, dtype=np.float32)


def _qparams(detail: dict[str, Any]) -> tuple[float, int]:
    """(scale, zero point) of a LiteRT or TFLite Micro tensor detail (per-tensor quantization)."""
    if "quantization" in detail:
        scale, zp = detail["quantization"]
        return float(scale), int(zp)
    qp = detail.get("quantization_parameters") or {}
    scales, zps = qp.get("scales", []), qp.get("zero_points", [])
    return (float(scales[0]) if len(scales) else 0.0), (int(zps[0]) if len(zps) else 0)


def _quantize(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return x.astype(dtype, copy=False)
    scale, zp = _qparams(detail)
    if not scale:
        raise EdgekdError(f"integer input {detail.get('name')!r} has no quantization scale")
    return quantize(x, scale, zp, dtype)


def _dequantize(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return y.astype(np.float32)
    scale, zp = _qparams(detail)
    return dequantize(y, scale or 1.0, zp)


def read_model_bytes(path: Path, magic: bytes | None = None) -> bytes:
    """A ``.tflite`` file's bytes: a regular file under the size cap (:func:`edgekd.files.read_bytes_capped`)."""
    from edgekd.files import MAX_TFLITE_BYTES, read_bytes_capped

    data = read_bytes_capped(path, MAX_TFLITE_BYTES, "TFLite model")
    if magic is not None and (len(data) < 8 or data[4:8] != magic):
        raise EdgekdError(f"{path}: not a TFLite flatbuffer (missing 'TFL3' identifier)")
    return data


_GRAPH_KINDS = {
    "hybrid": "dynamic-range",
    "float16": "fp16",
    "float": "fp32",
    "integer_float_io": "int8-float-io",
}


def tflite_precision(model_content: bytes, source: str | None = None) -> tuple[str, bool]:
    """``(precision label, full_integer)`` of a ``.tflite``: int8/int16 (full integer), fp16,
    dynamic-range, int8-float-io, fp32 or mixed. Uses :mod:`edgekd.graph` when available."""
    try:
        from edgekd.graph import read_tflite
    except ImportError:
        read_tflite = None
    if read_tflite is not None:
        g = read_tflite(model_content, source=source)
        kind = g.kind
        if kind == "full_integer":
            io = {d["dtype"] for d in g.input_details() + g.output_details()}
            return ("int16" if "int16" in io else "int8"), True
        return _GRAPH_KINDS.get(kind, kind), False
    from ai_edge_litert.interpreter import Interpreter

    from edgekd.native_io import redirect_fds

    with redirect_fds(fds=(2,)):
        it = Interpreter(model_content=model_content)
    dtypes = {np.dtype(t["dtype"]) for t in it.get_tensor_details()}
    io = {np.dtype(d["dtype"]) for d in it.get_input_details() + it.get_output_details()}
    if not any(d.kind == "f" for d in dtypes):
        return ("int16" if np.dtype(np.int16) in io else "int8"), True
    if np.dtype(np.float16) in dtypes:
        return "fp16", False
    if np.dtype(np.int8) in dtypes:
        return ("int8-float-io" if all(d.kind == "f" for d in io) else "dynamic-range"), False
    return "fp32", False


class _TfliteBase(Runtime):
    extensions = (".tflite",)
    channels_last = True

    def _read(self) -> bytes:
        data = read_model_bytes(self.path, magic=b"TFL3")
        try:
            self.precision, self.full_integer = tflite_precision(data, str(self.path))
        except EdgekdError:
            raise
        except Exception as e:  # noqa: BLE001
            raise EdgekdError(
                f"{self.path}: not a valid TFLite model ({error_line(e, 200, with_type=False)})"
            ) from None
        return data


@register_runtime
class LiteRTRuntime(_TfliteBase):
    """A ``.tflite`` on LiteRT (``ai_edge_litert``) with its default (optimised, XNNPACK) kernels."""

    name = "litert"
    resolver = "AUTO"

    def load(self) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        from edgekd.native_io import redirect_fds

        data = self._read()
        try:
            with redirect_fds(fds=(2,)):  # "Created TensorFlow Lite XNNPACK delegate for CPU."
                self.it = Interpreter(
                    model_content=data,
                    num_threads=max(1, self.threads),
                    experimental_op_resolver_type=getattr(OpResolverType, self.resolver),
                )
                self.it.allocate_tensors()
        except Exception as e:  # noqa: BLE001
            raise EdgekdError(
                f"{self.path}: LiteRT cannot load it ({error_line(e, 200, with_type=False)})"
            ) from None
        self.inp = self.it.get_input_details()[0]
        self.out = self.it.get_output_details()[0]
        self.input_shape = tuple(int(s) for s in self.inp["shape"])

    def prepare(self, x: np.ndarray) -> np.ndarray:
        return _quantize(super().prepare(x), self.inp)

    def _run(self, x: np.ndarray) -> np.ndarray:
        self.it.set_tensor(self.inp["index"], x)
        self.it.invoke()
        return _dequantize(self.it.get_tensor(self.out["index"]), self.out)


@register_runtime
class LiteRTReferenceRuntime(LiteRTRuntime):
    """A ``.tflite`` on LiteRT's reference kernels (``OpResolverType.BUILTIN_REF``): slow, exact."""

    name = "litert-ref"
    kernels = "reference"
    resolver = "BUILTIN_REF"


@register_runtime
class TFLMRuntime(_TfliteBase):
    """A full-integer ``.tflite`` on the TFLite Micro interpreter built for the host (``tflite_micro``)."""

    name = "tflm"
    host = False

    @classmethod
    def applicable(cls, path: Path) -> str | None:
        try:
            _, full = tflite_precision(read_model_bytes(path))
        except Exception:  # noqa: BLE001  (load() reports the real error)
            return None
        return None if full else "not a full-integer model (TFLite Micro targets need int8)"

    def load(self) -> None:
        data = self._read()
        if not self.full_integer:
            raise EdgekdError(
                f"{self.path}: a {self.precision} model cannot run on TFLite Micro; export the full-integer "
                "int8 file (model_int8.tflite) with `edgekd export --quant int8`"
            )
        try:
            from edgekd.graph.tflm import tflm_interpreter  # names missing ops, grows the arena
        except ImportError:
            tflm_interpreter = None
        try:
            if tflm_interpreter is not None:
                self.it = tflm_interpreter(self.path)
            else:
                from tflite_micro.python.tflite_micro import runtime as tflm

                from edgekd.native_io import redirect_fds

                with redirect_fds(fds=(1,)):
                    self.it = tflm.Interpreter.from_bytes(data)
        except EdgekdError:
            raise
        except Exception as e:  # noqa: BLE001
            raise EdgekdError(
                f"{self.path}: TFLite Micro cannot load it ({error_line(e, 200, with_type=False)})"
            ) from None
        self.inp = self.it.get_input_details(0)
        self.out = self.it.get_output_details(0)
        self.input_shape = tuple(int(s) for s in self.inp["shape"])

    def prepare(self, x: np.ndarray) -> np.ndarray:
        return _quantize(super().prepare(x), self.inp)

    def _run(self, x: np.ndarray) -> np.ndarray:
        self.it.set_input(x, 0)
        self.it.invoke()
        return _dequantize(self.it.get_output(0), self.out)


def runtimes_for(path: str | Path, requested: list[str] | None = None) -> list[tuple[str, str | None]]:
    """Runtime names for a file, each with ``None`` or the reason it does not apply.

    With ``requested``, only those runtimes; a requested runtime that cannot handle the extension is
    an error (a float model asked for on TFLite Micro fails later in ``load()`` with a clear message).
    """
    path = Path(path)
    ext = path.suffix.lower()
    names = RUNTIMES_BY_EXTENSION.get(ext)
    if not names:
        raise EdgekdError(
            f"{path}: unknown model format {ext or '(no extension)'!r}; expected one of "
            f"{', '.join(sorted(RUNTIMES_BY_EXTENSION))}"
        )
    if requested:
        chosen = [n for n in requested if n in names]
        if not chosen:
            raise EdgekdError(
                f"{path}: none of the runtimes {', '.join(requested)} runs {ext} files ({', '.join(names)} do)"
            )
        return [(n, None) for n in chosen]
    return [(n, RUNTIMES[n].applicable(path)) for n in names]


def open_runtime(name: str, path: str | Path, threads: int = 1) -> Runtime:
    """Instantiate and load runtime ``name`` for ``path``."""
    if name not in RUNTIMES:
        raise EdgekdError(f"unknown runtime {name!r}; valid: {', '.join(sorted(RUNTIMES))}")
    rt = RUNTIMES[name](path, threads=threads)
    rt.load()
    return rt


def run_outputs(
    name: str, path: str | Path, x: np.ndarray, *, channels_last: bool | None = None
) -> np.ndarray:
    """Outputs ``(N, -1)`` of runtime ``name`` on a data batch ``x`` (export checks use this too).

    ``channels_last`` fixes the input layout when the caller knows it (otherwise the runtime's
    convention decides, see :func:`adapt_input`)."""
    rt = open_runtime(name, path)
    try:
        if channels_last is not None:
            rt.channels_last = channels_last
        out = rt.predict(x)
        if out.ndim == 4 and x.ndim == 4 and tuple(rt.input_shape[1:]) != tuple(x.shape[1:]):
            out = np.moveaxis(out, -1, 1)  # channels moved last at both ends (onnx2tf): back to NCHW
        return out.reshape(len(x), -1)
    finally:
        rt.close()


def input_layout(path: str | Path, sample_shape: tuple[int, ...]) -> str:
    """``nchw`` when a ``.tflite`` takes the data's own layout, ``nhwc`` when channels were moved last."""
    rt = open_runtime("litert", path)
    try:
        want = tuple(rt.input_shape[1:])
    finally:
        rt.close()
    if want == tuple(sample_shape):
        return "nchw"
    if len(sample_shape) >= 2 and want == (*sample_shape[1:], sample_shape[0]):
        return "nhwc"
    raise EdgekdError(
        f"{path}: TFLite input shape {list(want)} does not match the model input {list(sample_shape)}"
    )
