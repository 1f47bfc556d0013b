"""PyTorch -> ONNX (fixed opset, batch 1, static shapes), validation, onnxruntime runs and ORT int8.

Exporter: ``torch.onnx.export(..., dynamo=True)`` (the torch.export based exporter, default in torch 2.x;
it folds BatchNorm into Conv and records every node's PyTorch module path in ``metadata_props``). If it
fails on a model it falls back to the TorchScript exporter, whose node names are module paths
(``/features/features.0/features.0.0/Conv``). Either way :func:`node_module_paths` maps ONNX nodes back to
PyTorch layers, used to name the layer behind an unsupported op.
"""

from __future__ import annotations

import ast
import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.errors import EdgekdError

OPSET = 18
LEGACY_OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def export_torch(model: Any, input_shape: tuple[int, ...], path: Path, opset: int = OPSET) -> dict[str, Any]:
    """Export ``model`` with a static ``(1, *input_shape)`` input to ``path``; returns exporter info."""
    import torch

    model = model.eval()
    example = (torch.zeros((1, *input_shape), dtype=torch.float32),)
    errors = []
    for exporter, kw in (("dynamo", {"dynamo": True, "opset_version": opset}),
                         ("torchscript", {"dynamo": False, "opset_version": LEGACY_OPSET})):  # fmt: skip
        try:
            sink = io.StringIO()
            with (
                warnings.catch_warnings(),
                contextlib.redirect_stdout(sink),
                contextlib.redirect_stderr(sink),
            ):
                warnings.simplefilter("ignore")
                _quiet_torch_logs()
                torch.onnx.export(model, example, str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                  external_data=False, **kw)  # fmt: skip
            return {"exporter": exporter, "opset": kw["opset_version"], "torch_version": torch.__version__}
        except Exception as e:  # noqa: BLE001  (try the next exporter)
            errors.append(
                f"{exporter}: {str(e).strip().splitlines()[0][:150] if str(e).strip() else type(e).__name__}"
            )
    raise EdgekdError(f"torch.onnx.export failed for this model ({'; '.join(errors)})")


def _quiet_torch_logs() -> None:
    for name in ("torch.onnx", "torch._dynamo", "torch.export", "onnxscript"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # torch's structured trace logger emits large DEBUG payloads; when a root handler collects them (pytest)
    # formatting them dominates the export time
    logging.getLogger("torch.__trace").propagate = False


def load_onnx(path: Path) -> Any:
    """Load and check an ONNX file; one-line error for a corrupt or non-ONNX file."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise EdgekdError(f"{path}: ONNX file not found")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as e:  # noqa: BLE001  (protobuf raises many types)
        msg = str(e).strip().splitlines()[0][:150] if str(e).strip() else type(e).__name__
        raise EdgekdError(f"{path}: corrupt or not an ONNX model ({msg})") from None
    if not model.graph.node:
        raise EdgekdError(f"{path}: the ONNX graph has no nodes")
    return model


def input_spec(model: Any, path: Path | str = "model.onnx") -> tuple[str, tuple[int, ...], str]:
    """``(input name, shape without batch, output name)``; a dynamic batch becomes 1, other dims must be fixed."""
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise EdgekdError(
            f"{path}: edgekd exports models with one input and one output (found {len(inputs)} and {len(model.graph.output)})"
        )
    dims = inputs[0].type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    if len(shape) < 2 or any(s is None or s <= 0 for s in shape[1:]):
        raise EdgekdError(
            f"{path}: input {inputs[0].name!r} needs a static shape except the batch (got {shape})"
        )
    if shape[0] not in (None, 1):
        raise EdgekdError(
            f"{path}: input {inputs[0].name!r} has batch {shape[0]}; export it with batch 1 or dynamic"
        )
    return inputs[0].name, tuple(int(s) for s in shape[1:]), model.graph.output[0].name


def fix_batch(model: Any) -> Any:
    """Set a dynamic batch dimension of the input and output to 1 (in place)."""
    for v in [*model.graph.input, *model.graph.output]:
        dims = v.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1
    return model


def node_module_paths(model: Any) -> dict[str, str]:
    """ONNX node name -> PyTorch module path (``features.1.0.0``) where it can be recovered."""
    out: dict[str, str] = {}
    for node in model.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        scopes = meta.get("pkg.torch.onnx.name_scopes")
        path = ""
        if scopes:
            try:
                parts = [s for s in ast.literal_eval(scopes) if s]
                path = parts[-2] if len(parts) >= 2 else ""  # last scope is the aten op
            except (ValueError, SyntaxError):
                path = ""
        elif node.name.startswith("/"):
            parts = [p for p in node.name.split("/") if p]
            path = parts[-2] if len(parts) >= 2 else ""
        out[node.name] = path
    return out


# --- onnxruntime ------------------------------------------------------------------------------
class _Reader:
    def __init__(self, name: str, x: np.ndarray) -> None:
        self.name, self.x, self.i = name, x.astype(np.float32), 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= len(self.x):
            return None
        self.i += 1
        return {self.name: self.x[self.i - 1 : self.i]}

    def rewind(self) -> None:
        self.i = 0


def quantize_int8(src: Path, dst: Path, calib_x: np.ndarray, method: str = "minmax") -> dict[str, Any]:
    """onnxruntime static QDQ int8 quantization, per-channel weights, calibrated on ``calib_x``."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}  # fmt: skip
    if method not in methods:
        raise EdgekdError(f"calibration method {method!r}: valid: {', '.join(methods)}")
    name = input_spec(onnx.load(str(src)), src)[0]
    pre = src
    try:  # shape inference + graph optimisation recommended by onnxruntime before quantization
        from onnxruntime.quantization.shape_inference import quant_pre_process

        pre = dst.with_name(dst.stem + "_pre.onnx")
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    except Exception:  # noqa: BLE001  (pre-processing is optional)
        pre = src
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_static(str(pre), str(dst), _Reader(name, calib_x), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            calibrate_method=methods[method])  # fmt: skip
    except Exception as e:  # noqa: BLE001
        raise EdgekdError(
            f"{src}: onnxruntime int8 quantization failed ({str(e).splitlines()[0][:150]})"
        ) from None
    finally:
        if pre != src:
            pre.unlink(missing_ok=True)
    return {"format": "QDQ", "per_channel": True, "activations": "int8", "weights": "int8", "method": method,
            "samples": int(len(calib_x))}  # fmt: skip
