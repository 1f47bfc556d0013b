"""The export pipeline: model -> ONNX -> (ORT int8 | TFLite | TFLite Micro artifacts) + checks.

See :func:`edgekd.export.export_run` for the folder layout and ``export.json``'s keys.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.atomic import atomic_directory, atomic_write_json
from edgekd.data.evalset import EvalSet
from edgekd.errors import EdgekdError
from edgekd.export import checks as ck
from edgekd.export import micro, ranges, routes
from edgekd.export import onnx as ox
from edgekd.export import tflite as tfl
from edgekd.export.context import ExportContext, Log
from edgekd.export.options import ExportOptions
from edgekd.export.outdir import check_output_folder
from edgekd.export.quantize import MIN_SAMPLES, calibration_samples, train_range
from edgekd.export.source import declared_task, eval_set, infer_task, load_source
from edgekd.files import file_sha256
from edgekd.metrics.classification import accuracy, top1_agreement
from edgekd.provenance import provenance
from edgekd.runtimes import input_layout, run_outputs
from edgekd.safetext import markup
from edgekd.targets import Target, load_target

FORMATS = ("onnx", "tflite")
ONNX_QUANTS = ("fp32", "int8")
EXPORT_VERSION = 3  # 3: the provenance header (edgekd.provenance) instead of "edgekd_export": 2


def _quants(fmt: str | None, target: Target | None, quant: str | list[str] | None) -> list[str]:
    if isinstance(quant, str):
        qs = [q.strip() for q in quant.split(",") if q.strip()]
    else:
        qs = list(quant or [])
    if qs == ["all"]:
        qs = list(tfl.QUANTS) if fmt == "tflite" else list(ONNX_QUANTS)
    if target is not None:
        if not qs:
            qs = [target.quantization]
        if target.is_mcu:
            if "dynamic" in qs:
                raise EdgekdError(
                    f"target {target.name}: --quant dynamic gives a hybrid (dynamic-range) model, which TFLite Micro "
                    "rejects; MCU targets need --quant int8 (full integer)"
                )
            if qs != ["int8"]:
                raise EdgekdError(
                    f"target {target.name}: TFLite Micro needs full-integer int8 (--quant int8), not {','.join(qs)}"
                )
        bad = [q for q in qs if q not in tfl.QUANTS]
    elif fmt == "onnx":
        qs = qs or ["fp32"]
        bad = [q for q in qs if q not in ONNX_QUANTS]
    else:
        qs = qs or ["fp32", "int8"]
        bad = [q for q in qs if q not in tfl.QUANTS]
    if bad:
        valid = ONNX_QUANTS if fmt == "onnx" else tfl.QUANTS
        raise EdgekdError(
            f"--quant {','.join(bad)}: not valid for {fmt or 'this target'}; valid: {', '.join(valid)}"
        )
    return list(dict.fromkeys(qs))


def files_record(folder: Path) -> dict[str, dict[str, Any]]:
    """``export.json``'s ``files``: every file under ``folder`` (relative name) -> bytes and sha256."""
    return {
        f.relative_to(folder).as_posix(): {"bytes": f.stat().st_size, "sha256": file_sha256(f)}
        for f in sorted(folder.rglob("*"))
        if f.is_file()
    }


def _io_info(d: dict[str, Any]) -> dict[str, Any]:
    return {k: d[k] for k in ("name", "shape", "dtype", "scale", "zero_point", "nbytes") if k in d}


def package_versions() -> dict[str, str]:
    """Versions of the packages an export depends on (``export.json``'s ``versions``)."""
    import importlib.metadata as md

    out = {}
    for pkg in (
        "torch",
        "litert-torch",
        "ai-edge-quantizer",
        "onnx",
        "onnxruntime",
        "onnx2tf",
        "tensorflow-cpu",
        "ai-edge-litert",
        "tflite-micro",
    ):
        with contextlib.suppress(md.PackageNotFoundError):
            out[pkg] = md.version(pkg)
    return out


def export_model(source: str | Path | Any, options: ExportOptions) -> Path:
    """A run folder, ``.onnx``, ``.pt`` or ``torch.nn.Module`` to ONNX / TFLite / TFLite Micro
    (:func:`edgekd.export.export_run`, which picks this route, documents it)."""
    t_start = time.perf_counter()
    o = options
    log = Log(o.quiet)
    if (o.target is None) == (o.fmt is None):
        raise EdgekdError("pass exactly one of --target NAME or --format onnx|tflite")
    if o.fmt is not None and o.fmt not in FORMATS:
        raise EdgekdError(f"--format {o.fmt}: valid: {', '.join(FORMATS)}")
    tgt = load_target(o.target) if o.target is not None else None
    quants = _quants(o.fmt, tgt, o.quant)
    src = load_source(source, o.input_shape)
    out_dir = _output_folder(src, tgt.name if tgt is not None else str(o.fmt), o.out)
    ev, calib_used, calib_info, eval_npz = _samples(src, o, tgt, quants, log)
    record = _record(src, tgt, o.fmt, quants, ev, calib_info)
    with tempfile.TemporaryDirectory(prefix="edgekd-export-") as work_s, atomic_directory(out_dir) as stage:
        ctx = ExportContext(src=src, tgt=tgt, quants=quants, work=Path(work_s), stage=stage, out_dir=out_dir,
                            record=record, log=log, eval=ev, calib=calib_used, tflm_samples=o.tflm_samples,
                            route=o.route, ranges=_ranges_method(o, calib_info))  # fmt: skip
        _onnx_stage(ctx, eval_npz)
        if o.fmt == "onnx" or (tgt is not None and ("onnxruntime" in tgt.runtimes or tgt.is_mcu)):
            shutil.copy2(ctx.onnx_path, stage / "model.onnx")
        if o.fmt == "onnx":
            ctx.checks["fp32_max_abs_diff"] = ctx.checks.get("onnx_max_abs_diff", 0.0)
            if "int8" in quants:
                _onnx_int8(ctx, o.method, key="int8")
        else:
            _tflite_stage(ctx)
            if tgt is not None and "onnxruntime" in tgt.runtimes and "int8" in quants:
                _onnx_int8(ctx, o.method, key="onnx_int8")
        record["files"] = files_record(stage)
        record["wall_time_s"] = round(time.perf_counter() - t_start, 3)
        atomic_write_json(stage / "export.json", record)
    log.step(f"export written to {out_dir} ({record['wall_time_s']:.1f}s)", style="green")
    if not o.quiet:
        log.console.print(checks_table(record))
    return out_dir


def _output_folder(src: Any, name: str, out: str | Path | None) -> Path:
    """``out``, else the run folder's ``export/<name>``, else ``<file>_export/<name>`` beside the file."""
    if out is None and src.kind == "module":
        raise EdgekdError("exporting a torch.nn.Module needs out=FOLDER")
    if out is not None:
        return check_output_folder(out)
    if src.run is not None:
        return src.run.export_dir(name)
    return check_output_folder(src.path.parent / f"{src.path.stem}_export" / name, "output folder")


def _samples(src: Any, o: ExportOptions, tgt: Target | None, quants: list[str], log: Log
             ) -> tuple[EvalSet, EvalSet | None, dict[str, Any] | None, EvalSet | None]:  # fmt: skip
    """The evaluation set (capped), the calibration samples used, their record and the eval ``.npz``."""
    ref_range = train_range(src.splits)
    calib, calib_info = (None, None)
    if "int8" in quants:
        calib, calib_info = calibration_samples(o.calibration, src.input_shape, src.splits, ref_range)
    ev, calib_used, eval_npz = eval_set(src, o.eval_data, calib, o.calibration, ref_range)
    if calib is not None and calib_used is not None and len(calib_used.x) != len(calib.x):
        calib_info.update(
            samples=int(len(calib_used.x)), held_out_for_eval=int(len(calib.x) - len(calib_used.x))
        )
        if len(calib_used.x) < MIN_SAMPLES:
            calib_info["warning"] = (
                f"only {len(calib_used.x)} calibration samples (< {MIN_SAMPLES}); int8 ranges may be poor"
            )
    if calib_info is not None and "warning" in calib_info:
        log.warn(calib_info["warning"])
    cap = o.max_eval
    if tgt is not None and tgt.is_mcu:  # every headline figure on the samples TFLite Micro runs
        cap = min(cap or o.tflm_samples, o.tflm_samples)
    if cap is not None and len(ev.x) > cap:
        ev = ev.rows(slice(None, cap))
    return ev, calib_used, calib_info, eval_npz


def _ranges_method(o: ExportOptions, calib_info: dict[str, Any] | None) -> str:
    """The int8 activation-range method: the option, else the calibration recipe's, else ``auto``."""
    recipe = (calib_info or {}).get("recipe") or {}
    return o.ranges or recipe.get("ranges") or "auto"


def _record(src: Any, tgt: Target | None, fmt: str | None, quants: list[str], ev: EvalSet,
            calib_info: dict[str, Any] | None) -> dict[str, Any]:  # fmt: skip
    """``export.json`` before the stages fill it."""
    record: dict[str, Any] = {
        **provenance("export", EXPORT_VERSION),
        "name": tgt.name if tgt is not None else str(fmt),
        "format": fmt or ("tflite-micro" if tgt is not None and tgt.is_mcu else "tflite"),
        "quantizations": quants,
        "target": tgt.as_dict() if tgt is not None else None,
        "source": {
            "type": src.kind,
            "path": str(src.path),
            "input_shape": list(src.input_shape),
            "model": {k: src.record[k] for k in ("name", "kwargs") if k in src.record}
            if src.record
            else None,
        },  # fmt: skip
        "files": {},
        "checks": {"eval_split": ev.name, "eval_samples": int(len(ev.x))},
        "versions": package_versions(),
    }
    if ev.note:
        record["checks"]["eval_note"] = ev.note
    if calib_info is not None:
        record["calibration"] = calib_info
    return record


def _onnx_stage(ctx: ExportContext, eval_npz: EvalSet | None) -> None:
    """Write the ONNX model, run it on the evaluation set (the float reference) and settle the task."""
    src, checks, ev = ctx.src, ctx.checks, ctx.eval
    ctx.onnx_path = ctx.work / "model.onnx"
    if src.torch_model is not None:
        ctx.log.step(f"exporting PyTorch model to ONNX (input 1x{'x'.join(map(str, src.input_shape))})")
        ctx.record["onnx"] = ox.export_torch(src.torch_model, src.input_shape, ctx.onnx_path)
    else:
        import onnx

        model = ox.fix_batch(ox.load_onnx(src.onnx_path))
        onnx.save(model, str(ctx.onnx_path))
        opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None)
        ctx.record["onnx"] = {"exporter": "user", "opset": opset}
    ctx.onnx_model = ox.load_onnx(ctx.onnx_path)
    ctx.input_name, _, _ = ox.input_spec(ctx.onnx_model, ctx.onnx_path)
    ort_fp32 = run_outputs("onnxruntime", ctx.onnx_path, ev.x)
    if src.torch_model is not None:
        import torch

        with torch.no_grad():
            ref = np.concatenate([src.torch_model(torch.from_numpy(ev.x[i : i + 256])).numpy()
                                  for i in range(0, len(ev.x), 256)]).reshape(len(ev.x), -1)  # fmt: skip
        ctx.ref, ctx.ref_name = ref, "PyTorch"
        checks["onnx_max_abs_diff"], _ = ck.check_fp32("ONNX (onnxruntime)", ort_fp32, ref, "PyTorch")
    else:
        ctx.ref, ctx.ref_name = ort_fp32, "ONNX (onnxruntime)"
    task, how = declared_task(src, eval_npz, ctx.calib)
    if task is None:
        task, how = infer_task(src.input_shape, int(ctx.ref.shape[1]))
    ctx.task = task
    ctx.record["task"] = {"task": task, "source": how}
    checks["reference"] = ctx.ref_name
    checks.update(ck.float_summary(task, ctx.ref, ev.x, ev.y))
    ctx.log.step(f"ONNX ok ({ctx.record['onnx']['exporter']} exporter, opset {ctx.record['onnx']['opset']}); "
                 f"task {task} ({how})")  # fmt: skip


def _onnx_int8(ctx: ExportContext, method: str, key: str) -> None:
    calib_x = ctx.calib_x
    ctx.log.step(f"onnxruntime static int8 quantization (QDQ, per-channel, {method}, {len(calib_x)} samples)")
    dst = ctx.work / "model_int8.onnx"
    ctx.record["onnx_quantization"] = ox.quantize_int8(ctx.onnx_path, dst, calib_x, method)
    q = run_outputs("onnxruntime", dst, ctx.eval.x)
    shutil.copy2(dst, ctx.stage / "model_int8.onnx")
    ctx.checks.update(ck.compare(ctx.task, q, ctx.ref, ctx.eval.x, ctx.eval.y, key))


def _tflite_stage(ctx: ExportContext) -> None:
    """Convert (with route fallback), check fp32 numerics, write each quantization, run the int8 checks."""
    from edgekd.graph import read_tflite

    checks, ev = ctx.checks, ctx.eval
    files = routes.convert(ctx, ctx.quants)  # an MCU int8 file is already checked loadable in TFLM
    flex = [
        o.removeprefix("CUSTOM:Flex")
        for o in read_tflite(files["fp32"]).op_names()
        if o.startswith("CUSTOM:Flex")
    ]
    if flex:
        raise ck.flex_op_error(flex, ctx.onnx_model, ctx.target_name)
    if "int8" in files and ctx.calib_x is not None:
        ranges.choose(ctx, files, ctx.ranges)
    paths = {}
    for q, data in files.items():  # every runtime (LiteRT, its reference kernels, TFLM) reads files
        paths[q] = ctx.work / f"converted_{q}.tflite"
        paths[q].write_bytes(data)
    layout = input_layout(paths["fp32"], tuple(ev.x.shape[1:]))
    ctx.record["input_layout"] = layout
    ctx.channels_last = layout == "nhwc"
    fp32_out = run_outputs("litert", paths["fp32"], ev.x, channels_last=ctx.channels_last)
    diff, tol = ck.check_fp32("TFLite fp32", fp32_out, ctx.ref, ctx.ref_name)
    checks.update(fp32_max_abs_diff=diff, fp32_tolerance=tol)
    if ctx.task == "classification":
        checks["tflite_fp32_accuracy"] = accuracy(fp32_out, ev.y)
    checks["host_runtime"] = "ai-edge-litert"
    ctx.log.step(f"TFLite fp32 matches {ctx.ref_name} (max |diff| {diff:.2e} <= {tol:.1e})")
    ctx.record["tflite"] = {}
    if "int8" in files and "fp32" not in ctx.quants:  # the reference of `edgekd profile --layers`
        (ctx.stage / "model_fp32.tflite").write_bytes(files["fp32"])
        ctx.record["tflite"]["fp32"] = {"file": "model_fp32.tflite", "bytes": len(files["fp32"]),
                                        "note": "float twin of model_int8.tflite (same operators), for the "
                                                "per-layer float-vs-int8 diff"}  # fmt: skip
    for q in ctx.quants:
        data = files[q]
        model = read_tflite(data)
        fname = f"model_{q}.tflite"
        (ctx.stage / fname).write_bytes(data)
        ctx.record["tflite"][q] = {
            "file": fname, "bytes": len(data), "kind": model.kind, "ops": model.op_names(),
            "route": ctx.record["route"]["used"],
            "input": _io_info(model.input_details()[0]), "output": _io_info(model.output_details()[0]),
        }  # fmt: skip
        if q == "dynamic" and model.kind != "hybrid":
            ctx.record["tflite"][q]["note"] = (
                "no weight tensor reached the converter's 1024-element threshold: stays float"
            )
        if q == "fp32":
            continue
        out = run_outputs("litert", paths[q], ev.x, channels_last=ctx.channels_last)
        if q != "int8":
            checks.update(ck.compare(ctx.task, out, ctx.ref, ev.x, ev.y, q))
            if q == "fp16":
                checks["fp16_max_abs_diff"] = ck.max_abs_diff(out, ctx.ref)
            continue
        if not model.is_full_integer():
            raise EdgekdError(
                f"{fname}: expected a full-integer model with int8 input/output, got {model.kind}"
            )
        if ctx.is_mcu:
            checks["int8_runtime"] = "tflite-micro"
            _micro_stage(ctx, data, paths[q], model, out)
        else:
            checks["int8_runtime"] = "litert"
            checks.update(ck.compare(ctx.task, out, ctx.ref, ev.x, ev.y, "int8"))
    if "int8" in ctx.quants:
        ctx.log.step("int8 on " + checks["int8_runtime"] + ": " + _headline(ctx))


def _headline(ctx: ExportContext) -> str:
    c = ctx.checks
    if ctx.task == "reconstruction":
        return (f"max |error| {c.get('int8_max_abs_error', 0):.3g}, SQNR {_num(c.get('int8_sqnr_db'))} dB, "
                f"anomaly-score rank correlation {_num(c.get('int8_score_spearman'))} vs float")  # fmt: skip
    return (f"accuracy {_pct(c.get('int8_accuracy'))} vs float {_pct(c.get('float_accuracy'))}, "
            f"top-1 agreement with float {_pct(c.get('int8_top1_agreement'))}")  # fmt: skip


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3g}"


def _micro_stage(ctx: ExportContext, data: bytes, path: Path, model: Any, litert_out: np.ndarray) -> None:
    """TFLite Micro: kernels, arena, C files, the headline int8 checks (TFLM vs float) and the fit."""
    from edgekd.graph import measure_arena

    checks, ev, tgt = ctx.checks, ctx.eval, ctx.tgt
    assert tgt is not None
    ops = model.op_names()
    ctx.log.step(f"loading the int8 model in TFLite Micro (ops: {', '.join(ops)})")
    try:
        arena = measure_arena(data)
    except EdgekdError as e:
        raise ck.unsupported_op_error(model, ctx.onnx_model, str(e), None, tgt.name) from None
    n = len(ev.x)  # already capped to tflm_samples
    tflm_out = run_outputs("tflm", path, ev.x, channels_last=ctx.channels_last)
    ref_kernels = run_outputs("litert-ref", path, ev.x, channels_last=ctx.channels_last)
    checks["tflm_samples"] = n
    checks.update(ck.compare(ctx.task, tflm_out, ctx.ref, ev.x, ev.y, "int8"))
    checks.update(ck.compare(ctx.task, litert_out, ctx.ref, ev.x, ev.y, "litert_int8"))
    checks.update(ck.compare(ctx.task, ref_kernels, ctx.ref, ev.x, ev.y, "litert_reference_int8"))
    checks["tflm_vs_litert_agreement"] = top1_agreement(tflm_out, litert_out)
    checks["tflm_vs_litert_reference_kernels_agreement"] = top1_agreement(tflm_out, ref_kernels)
    checks["tflm_vs_litert_reference_kernels_max_abs_diff"] = ck.max_abs_diff(tflm_out, ref_kernels)
    ctx.log.step(f"TFLite Micro arena {arena['total']:,} B (head {arena['head']:,}, tail {arena['tail']:,}); "
                 f"TFLM vs LiteRT reference kernels max |diff| {checks['tflm_vs_litert_reference_kernels_max_abs_diff']:.3g} on {n}")  # fmt: skip
    ctx.record["micro"], ctx.record["fit"] = micro.write_micro_artifacts(
        ctx.stage, data, ops, arena, tgt, ctx.log.console
    )
    ctx.log.step(f"TFLite Micro files: {micro.MICRO_FILES}")


def checks_table(record: dict[str, Any]) -> Any:
    """A rich table of ``export.json``'s checks."""
    from rich.table import Table

    table = Table(title=markup(f"export {record['name']}: checks"))
    table.add_column("check")
    table.add_column("value", justify="right")
    for k, v in record["checks"].items():
        if isinstance(v, float):
            if k.endswith(("_accuracy", "_agreement")):
                s = f"{100 * v:.2f}%"
            else:
                s = f"{v:.4g}" + (" dB" if k.endswith("_db") else "")
        else:
            s = "n/a" if v is None else str(v)
        table.add_row(markup(k), markup(s))
    return table
