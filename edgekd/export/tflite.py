"""ONNX -> TFLite with onnx2tf (fp32, fp16, dynamic-range, full-integer int8 with int8 I/O).

Models run on the host through :mod:`edgekd.runtimes` (the one runtime layer).

onnx2tf converts NCHW inputs to NHWC; calibration samples are written as NHWC ``.npy`` and passed with
mean 0 / std 1 because they already carry the training preprocessing. TensorFlow is imported lazily.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.errors import EdgekdError
from edgekd.native_io import redirect_fds

QUANTS = ("fp32", "fp16", "dynamic", "int8")
ONNX2TF_SUFFIX = {
    "fp32": "float32",
    "fp16": "float16",
    "dynamic": "dynamic_range_quant",
    "int8": "full_integer_quant",
}


@contextlib.contextmanager
def captured_output(log: Path) -> Iterator[Path]:
    """Send this process's stdout/stderr (fds and Python streams, so C++ logging too) to ``log``."""
    with open(log, "a", buffering=1, errors="replace") as f, redirect_fds(f, python_streams=True):
        yield log


def to_channels_last(x: np.ndarray) -> np.ndarray:
    """(N, C, ...) -> (N, ..., C) for rank >= 3; 2-D arrays are returned as they are."""
    return np.ascontiguousarray(np.moveaxis(x, 1, -1)) if x.ndim >= 3 else x


class ConversionError(EdgekdError):
    """A converter failed; ``node`` is the ONNX node it was converting when its log says so."""

    def __init__(self, message: str, node: str | None = None, log: Path | None = None) -> None:
        super().__init__(message)
        self.node = node
        self.log = log


def _failed_node(log: Path) -> str | None:
    names = re.findall(r"onnx_op_name:\s*(\S+)", "\n".join(_log_lines(log)))
    return names[-1] if names else None


def _error_line(log: Path) -> str:
    """The exception line of the log's last traceback, else the last error-looking line."""
    lines = _log_lines(log)
    exc = [ln for ln in lines if re.match(r"^[A-Za-z_.]*(Error|Exception)\b[^:]*:", ln)]
    return (exc[-1] if exc else _last_error(log))[:300]


class FlexOpError(EdgekdError):
    """The converter needed TensorFlow (Flex / Select TF) ops, which TFLite builtins and TFLite Micro lack."""

    def __init__(self, message: str, ops: list[str]) -> None:
        super().__init__(message)
        self.ops = ops


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _log_lines(log: Path) -> list[str]:
    try:
        text = _ANSI.sub("", log.read_text(errors="replace"))
    except OSError:
        return []
    noise = re.compile(r"^[IW]\d{4} |^WARNING: All log messages")
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not noise.match(ln.strip())]


def _flex_ops(log: Path) -> list[str]:
    return sorted(set(re.findall(r"\bFlex([A-Z][A-Za-z0-9]+)", "\n".join(_log_lines(log)))))


def _last_error(log: Path) -> str:
    lines = _log_lines(log)
    if not lines:
        return "no log"
    keys = ("Error", "error:", "ERROR", "Exception", "not supported", "failed")
    hits = [ln for ln in lines if any(k in ln for k in keys)]
    line = (hits or lines or ["no output"])[-1]
    return line[:200]


# onnx2tf fetches this file from GitHub for 3-channel 4-D inputs unless it exists in the working directory.
ONNX2TF_SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"


def _reset_keras_names() -> None:
    """Restart Keras' layer-name counters so the same model converts to the same bytes in one process
    (otherwise tensor names carry ``model_14`` vs ``model_29`` and identical exports hash differently)."""
    for mod in ("tf_keras", "tensorflow"):
        with contextlib.suppress(Exception):
            module = __import__(mod)
            keras = module if mod == "tf_keras" else module.keras
            keras.backend.clear_session()


def convert(onnx_path: Path, work: Path, quants: list[str], calib_x: np.ndarray | None, input_name: str,
            per_channel: bool = True, sample_x: np.ndarray | None = None) -> dict[str, Path]:  # fmt: skip
    """Run onnx2tf once; returns ``{quant: .tflite path}`` for the requested quantizations.

    onnx2tf runs with ``work`` as its working directory, where a sample-data file made from our own inputs
    (``sample_x``, NCHW) stops it from downloading test images (nothing is fetched at run time).
    """
    bad = [q for q in quants if q not in QUANTS]
    if bad:
        raise EdgekdError(f"--quant {','.join(bad)}: valid: {', '.join(QUANTS)}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    out_dir = work / "onnx2tf"
    log = work / "onnx2tf.log"
    kwargs: dict[str, Any] = {}
    if "int8" in quants:
        if calib_x is None:
            raise EdgekdError("int8 needs calibration samples: pass --calibration data.npz")
        npy = work / "calibration_nhwc.npy"
        xc = to_channels_last(calib_x.astype(np.float32))
        np.save(npy, xc)
        ones = [1] * xc.ndim
        kwargs.update(
            output_integer_quantized_tflite=True,
            custom_input_op_name_np_data_path=[
                [input_name, str(npy), np.zeros(ones, np.float32), np.ones(ones, np.float32)]
            ],
            input_quant_dtype="int8",
            output_quant_dtype="int8",
            quant_type="per-channel" if per_channel else "per-tensor",
        )
    if "dynamic" in quants:
        kwargs["output_dynamic_range_quantized_tflite"] = True
    samples = sample_x if sample_x is not None else calib_x
    if samples is not None and samples.ndim == 4:
        reps = -(-20 // len(samples))
        np.save(
            work / ONNX2TF_SAMPLE_FILE,
            np.concatenate([to_channels_last(samples.astype(np.float32))] * reps)[:20],
        )
    cwd = os.getcwd()
    try:
        os.chdir(work)
        with captured_output(log), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import onnx2tf

            _reset_keras_names()
            onnx2tf.convert(input_onnx_file_path=str(onnx_path), output_folder_path=str(out_dir), non_verbose=False, verbosity="warn",
                            copy_onnx_input_output_names_to_tflite=True, batch_size=1, **kwargs)  # fmt: skip
    except SystemExit:
        raise ConversionError(_error_line(log), _failed_node(log), log) from None
    except Exception as e:  # noqa: BLE001
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise ConversionError(first, _failed_node(log), log) from None
    finally:
        os.chdir(cwd)
    found: dict[str, Path] = {}
    for q in quants:
        f = out_dir / f"{onnx_path.stem}_{ONNX2TF_SUFFIX[q]}.tflite"
        if not f.is_file():
            flex = _flex_ops(log)
            if flex:
                raise FlexOpError(
                    f"{onnx_path}: the TFLite converter needs TensorFlow op(s) {', '.join(flex)} (Flex delegate), "
                    "which TFLite builtins and TFLite Micro do not have",
                    flex,
                )
            what = "full-integer int8 quantization" if q == "int8" else f"the {q} conversion"
            raise ConversionError(f"{what} failed ({_error_line(log)})", _failed_node(log), log)
        found[q] = f
    return found
