"""Export a trained student: ONNX, TFLite (fp32/fp16/dynamic/int8) and TFLite Micro artifacts, with checks.

Route: PyTorch --torch.onnx.export--> ONNX --onnx2tf--> TFLite; TFLite Micro files from the full-integer
int8 TFLite file. TensorFlow is imported only when a TFLite export runs.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["export_run"]


def export_run(
    run_dir: str | Path,
    *,
    target: str | Path | None = None,
    fmt: str | None = None,
    quant: str | list[str] | None = None,
    calibration: str | Path | None = None,
    eval_data: str | Path | None = None,
    route: str | None = None,
    out: str | Path | None = None,
    method: str = "minmax",
    quiet: bool = True,
) -> Path:
    """Export ``run_dir`` (a run folder, an ``.onnx`` file or an edgekd ``.pt``); returns the export folder.

    Exactly one of ``target`` (a profile name in ``targets/`` or a board ``.yaml``) or ``fmt``
    (``"onnx"`` | ``"tflite"``) is given. ``quant``: ``"fp32" | "fp16" | "dynamic" | "int8"``, a comma
    list or ``"all"`` (ONNX: ``fp32``/``int8``; default: the target's quantization, ``fp32,int8`` for
    tflite, ``fp32`` for onnx). ``calibration``: a recipe ``.yaml`` (``calibration/``) or an ``.npz``
    with ``x`` (N, *input_shape) preprocessed float inputs; default ``calibration/default.yaml``.
    ``method`` (ONNX int8 only): ``minmax | entropy | percentile``. ``out`` overrides the folder,
    which is otherwise ``RUN_DIR/export/<target or format>/`` (``<file>_export/<name>/`` next to an
    ``.onnx``/``.pt``). The folder is built in a temporary sibling and renamed: on any error the
    previous export stays intact. Raises :class:`~edgekd.errors.EdgekdError` (one line) on bad input,
    unsupported ops, a model that does not fit the target or fp32 numerics beyond tolerance.

    Folder contents: ``model.onnx`` (formats onnx, MCU and onnxruntime targets), ``model_int8.onnx``
    (ORT QDQ int8), ``model_<quant>.tflite``; for TFLite Micro targets also ``model_data.cc``/``.h``
    (``alignas(16) const unsigned char g_model[]``, ``g_model_len``), ``op_resolver.h``
    (``MicroMutableOpResolver<kNumOps>`` + ``RegisterOps()``), ``arena.json``; and ``export.json``:

    * ``edgekd_export`` (schema version 1), ``name``, ``format`` (``onnx|tflite|tflite-micro``),
      ``quantizations`` (list), ``target`` (the profile as a dict, or null), ``created``, ``wall_time_s``
    * ``source``: ``type`` (run|checkpoint|onnx), ``path``, ``input_shape`` (C,H,W), ``model`` (name, kwargs)
    * ``onnx``: ``exporter`` (dynamo|torchscript|user), ``opset``
    * ``input_layout``: ``nchw`` or ``nhwc`` (TFLite input after onnx2tf)
    * ``calibration``: ``source`` (recipe|npz path), ``recipe``, ``samples``, ``warning`` (< 100 samples)
    * ``onnx_quantization``: ORT settings (format QDQ, per_channel, method, samples)
    * ``tflite``: per quant: ``file``, ``bytes``, ``kind`` (full_integer|hybrid|float16|float), ``ops``,
      ``input``/``output`` (name, shape, dtype, scale, zero_point, nbytes)
    * ``micro``: ``arena`` (= arena.json: ``tflm.head/tail/total``, ``recommended_bytes``, note),
      ``resolver`` (the ``Add*`` calls)
    * ``fit``: ``target``, ``fits``, ``rows`` [{resource RAM|flash, needed, available, ok, detail}];
      RAM = arena total + input/output buffers, flash = model bytes
    * ``checks``: ``eval_split`` (test|calibration|random), ``eval_samples``, ``reference`` (PyTorch or
      ONNX), ``onnx_max_abs_diff``, ``fp32_max_abs_diff`` (TFLite fp32 or ORT vs reference),
      ``fp32_tolerance``, ``float_accuracy``, ``tflite_fp32_accuracy``, ``int8_accuracy``,
      ``int8_top1_agreement``, ``fp16_*``/``dynamic_*`` when exported, ``tflm_samples``,
      ``tflm_accuracy``, ``tflm_vs_litert_agreement`` (TFLM vs default LiteRT, XNNPACK: int8 rounding
      differs, near-ties can flip), ``tflm_vs_litert_reference_kernels_agreement`` / ``..._max_abs_diff``
      (vs LiteRT's reference kernels, the same integer math as TFLM), ``host_runtime``; accuracies are
      fractions (null without labels)
    * ``files``: name -> ``bytes``, ``sha256``; ``versions``: package versions
    """
    from edgekd.export.api import export_model

    return export_model(
        run_dir,
        target=target,
        fmt=fmt,
        quant=quant,
        calibration=calibration,
        eval_data=eval_data,
        route=route,
        out=out,
        method=method,
        quiet=quiet,
    )
