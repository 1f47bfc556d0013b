"""The litert-torch route: PyTorch -> fp32 TFLite with ``litert_torch``, int8 with ``ai-edge-quantizer``.

fp32: ``litert_torch.convert(model, (example,))`` (inputs stay NCHW; the converter inserts the layout
TRANSPOSE); concatenations wider than TFLite Micro's kernel allows (unrolled LSTM/GRU outputs) are split
into a tree (:func:`edgekd.graph.rewrites.split_wide_concatenations`). int8: ``ai_edge_quantizer``'s ``static_wi8_ai8`` recipe (int8 weights and activations, min/max
calibration on the export's calibration samples) applied to the fp32 file, which gives a full-integer model
with int8 input and output. Both packages are optional: ``pip install 'edgekd[litert]'``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekd.errors import EdgekdError, error_line


def available() -> str | None:
    """None when the route can run here, else why not."""
    try:
        import ai_edge_quantizer  # noqa: F401
        import litert_torch  # noqa: F401
    except ImportError as e:
        return f"{e.name} is not installed (pip install 'edgekd[litert]')"
    return None


def convert(model: Any, input_shape: tuple[int, ...], quants: list[str], calib_x: np.ndarray | None,
            log: Path) -> dict[str, bytes]:  # fmt: skip
    """``{"fp32": bytes, "int8": bytes?}``; converter output goes to ``log``. Needs :func:`available`."""
    import warnings

    import torch

    from edgekd.export.tflite import captured_output
    from edgekd.graph.rewrites import split_wide_concatenations

    out: dict[str, bytes] = {}
    fp32_path = log.with_name("litert_fp32.tflite")
    with captured_output(log), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import litert_torch

        try:
            edge = litert_torch.convert(model.eval(), (torch.zeros((1, *input_shape), dtype=torch.float32),))
            edge.export(str(fp32_path))
        except Exception as e:  # noqa: BLE001  (the converter raises many types)
            raise EdgekdError(error_line(e)) from None
        # unrolled recurrent layers concatenate every step at once: TFLite Micro takes at most 10 inputs
        out["fp32"], _ = split_wide_concatenations(fp32_path.read_bytes())
        if "int8" in quants:
            if calib_x is None:
                raise EdgekdError("int8 needs calibration samples: pass --calibration data.npz")
            try:
                out["int8"] = _quantize_int8(out["fp32"], calib_x)
            except EdgekdError:
                raise
            except Exception as e:  # noqa: BLE001
                raise EdgekdError(f"ai-edge-quantizer: {error_line(e)}") from None
    return out


def _quantize_int8(fp32: bytes, calib_x: np.ndarray) -> bytes:
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import quantizer, recipe

    sigs = Interpreter(model_content=fp32).get_signature_list()
    if len(sigs) != 1:
        raise EdgekdError(f"expected one signature, found {len(sigs)}")
    key, sig = next(iter(sigs.items()))
    if len(sig["inputs"]) != 1:
        raise EdgekdError(f"expected one input, found {len(sig['inputs'])}")
    name = sig["inputs"][0]
    q = quantizer.Quantizer(bytearray(fp32))
    q.load_quantization_recipe(recipe.static_wi8_ai8())
    data = {key: [{name: calib_x[i : i + 1].astype(np.float32)} for i in range(len(calib_x))]}
    result = q.quantize(q.calibrate(data, num_threads=1), enable_progress_report=False)
    return bytes(result.quantized_model)
