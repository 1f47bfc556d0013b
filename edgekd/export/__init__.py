"""Export a trained student: ONNX, TFLite (fp32/fp16/dynamic/int8) and TFLite Micro artifacts, with checks.

Routes (registered in :mod:`edgekd.export.routes`): PyTorch --torch.onnx.export--> ONNX --folding,
lowering--> onnx2tf --> TFLite, or PyTorch --litert-torch--> TFLite --ai-edge-quantizer--> int8; TFLite
Micro files from the full-integer int8 TFLite file. TensorFlow is imported only when a TFLite export runs.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from edgekd.export.options import ExportOptions

__all__ = ["ExportOptions", "export_networks", "export_run"]


def export_run(source: str | os.PathLike | Any, options: ExportOptions | None = None, **changes: Any) -> Path:
    """Export ``source`` (a run folder, an ``.onnx`` file, an edgekd ``.pt`` or an int8 ``.tflite``) as
    ``options`` (:class:`ExportOptions`; keyword ``changes`` override its fields); returns the folder.

    Exactly one of ``target`` (a profile name in ``targets/`` or a board ``.yaml``) or ``fmt``
    (``"onnx"`` | ``"tflite"`` | ``"c"``) is given; ``fmt="c"``, a C backend target (``cortex-m4-qemu``)
    and ``firmware`` go through :func:`edgekd.export.c_backend.export.export_c` (``c/``, ``firmware/``). ``quant``: ``"fp32" | "fp16" | "dynamic" | "int8"``, a comma
    list or ``"all"`` (ONNX: ``fp32``/``int8``; default: the target's quantization, ``fp32,int8`` for
    tflite, ``fp32`` for onnx). ``calibration``: a recipe ``.yaml`` (``calibration/``) or an ``.npz``
    with ``x`` (N, *input_shape) preprocessed float inputs; default ``calibration/default.yaml``.
    ``method`` (ONNX int8 only): ``minmax | entropy | percentile``. ``out`` overrides the folder,
    which is otherwise ``RUN_DIR/export/<target or format>/`` (``<file>_export/<name>/`` next to an
    ``.onnx``/``.pt``). The folder is built in a temporary sibling and renamed: on any error the
    previous export stays intact; so ``out`` must be new, empty or an earlier export (a file, a link or
    a folder without ``export.json`` is refused). A full-integer ``.tflite`` is exported as it is by
    :func:`edgekd.export.from_tflite.export_tflite` (a TFLite Micro ``target`` or ``fmt="c"``; options
    that convert or quantize are refused). Raises :class:`~edgekd.errors.EdgekdError` (one line) on bad input,
    unsupported ops, a model that does not fit the target or fp32 numerics beyond tolerance.

    ``eval_data``: an ``.npz`` (``x``, optional ``y`` labels, optional ``task``) to judge the export on;
    default: the run's test split, else the last 20% of a ``--calibration`` ``.npz`` (held out, not used
    to calibrate), else random inputs. ``route``: ``onnx2tf`` | ``litert-torch`` (default: onnx2tf, then
    litert-torch when it fails). The Python API also takes a ``torch.nn.Module`` with ``input_shape=``.

    Folder contents: ``model.onnx`` (formats onnx, MCU and onnxruntime targets), ``model_int8.onnx``
    (ORT QDQ int8), ``model_<quant>.tflite``; for TFLite Micro targets also ``model_data.cc``/``.h``
    (``alignas(16) const unsigned char g_model[]``, ``g_model_len``), ``op_resolver.h``
    (``MicroMutableOpResolver<kNumOps>`` + ``RegisterOps()``), ``arena.json``; and ``export.json``
    (schema ``edgekd-export/3``):

    * the provenance header (:mod:`edgekd.provenance`): ``schema``, ``edgekd`` (package version), ``created``
    * ``name``, ``format`` (``onnx|tflite|tflite-micro``), ``quantizations``, ``target`` (profile dict or
      null), ``wall_time_s``; ``source``: ``type`` (run|checkpoint|onnx|module), ``path``,
      ``input_shape`` (C,H,W), ``model`` (name, kwargs)
    * ``task``: ``task`` (``classification`` | ``reconstruction``) and ``source`` (npz array ``task``,
      ``data.json``'s ``task`` key (missing = classification), or inferred: reconstruction when the
      output has as many values as the input)
    * ``onnx``: ``exporter`` (dynamo|torchscript|user), ``opset``, ``folded`` (onnx2tf route, when any node
      was folded: ``nodes``, ``ops``, ``graph_nodes`` before/after, ``over_size_cap``; see
      :mod:`edgekd.export.fold`), ``lowered`` (ONNX nodes rewritten for TFLite Micro: HardSigmoid, LSTM,
      GRU, Gather int64 indices, Conv trailing padding)
    * ``route``: ``requested``, ``used``, ``attempts`` [{route, ok, seconds, error, skipped}]
    * ``input_layout``: ``nchw`` or ``nhwc`` (the TFLite input)
    * ``calibration``: ``source`` (recipe|npz path), ``recipe``, ``samples``, ``held_out_for_eval``,
      ``warning`` (< 100 samples)
    * ``onnx_quantization``: ORT settings (format QDQ, per_channel, method, samples)
    * ``tflite``: per quant: ``file``, ``bytes``, ``kind``, ``ops``, ``route``, ``input``/``output`` (name,
      shape, dtype, scale, zero_point, nbytes)
    * ``micro``: ``arena`` (= arena.json), ``resolver`` (the ``Add*`` calls)
    * ``fit``: the one rule of :func:`edgekd.targets.fit_check` (RAM = TFLite Micro arena total, flash =
      model bytes): ``target``, ``fits``, ``rule``, ``rows`` [{resource, needed, available, ok, detail}]
    * ``checks``: ``eval_split``, ``eval_samples``, ``eval_note``, ``reference`` (PyTorch or ONNX),
      ``onnx_max_abs_diff``, ``fp32_max_abs_diff``, ``fp32_tolerance``, ``host_runtime``. By task, with
      ``<p>`` one of ``int8`` (the headline: TFLite Micro against float on MCU targets, LiteRT otherwise;
      ``int8_runtime`` says which), ``litert_int8`` (LiteRT default kernels), ``litert_reference_int8``
      (reference kernels), ``fp16``, ``dynamic``, ``onnx_int8``: classification ``float_accuracy``,
      ``tflite_fp32_accuracy``, ``<p>_accuracy`` (null without labels), ``<p>_top1_agreement`` (with the
      float model); reconstruction ``float_score_mean`` (mean per-sample MSE), ``<p>_max_abs_error``,
      ``<p>_sqnr_db``, ``<p>_score_spearman`` (rank correlation of per-sample anomaly scores). MCU also
      ``tflm_samples``, ``tflm_vs_litert_agreement``, ``tflm_vs_litert_reference_kernels_agreement`` /
      ``..._max_abs_diff``. Accuracies are fractions.
    * ``files``: name -> ``bytes``, ``sha256``; ``versions``: package versions
    """
    opts = ExportOptions.of(options, **changes)
    if isinstance(source, (str, os.PathLike)) and str(source).lower().endswith(".tflite"):
        from edgekd.export.from_tflite import export_tflite

        return export_tflite(source, opts)
    from edgekd.export.c_backend.export import export_c, wants_c_export

    if wants_c_export(opts):
        return export_c(source, opts)
    from edgekd.export.api import export_model

    return export_model(source, opts)


def export_networks(run_dir: str | os.PathLike, options: ExportOptions | None = None,
                    **changes: Any) -> dict[str, Path]:  # fmt: skip
    """Export every network a run produced (``networks.json``: peers, generations; see
    :mod:`edgekd.networks`) into ``RUN_DIR/export/<target or format>-<network>/``; returns name -> folder."""
    from edgekd.errors import EdgekdError
    from edgekd.names import child_path
    from edgekd.networks import list_networks

    opts = ExportOptions.of(options, **changes)
    run = Path(run_dir)
    if not run.is_dir() or opts.out:
        raise EdgekdError("--all-networks takes a run folder and writes into its export/ (no --output)")
    label = Path(str(opts.target or opts.fmt or "export")).stem
    child_path(run, "export", str(run_dir), "folder")  # a link named export/ must not lead out
    folders = {}
    for name, model_file in list_networks(run_dir).items():
        dest = child_path(run / "export", f"{label}-{name}", "--target", "export folder")
        folders[name] = export_run(str(model_file), dataclasses.replace(opts, out=str(dest)))
    return folders
