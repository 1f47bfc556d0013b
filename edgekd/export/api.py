"""The export pipeline: model -> ONNX -> (ORT int8 | TFLite | TFLite Micro artifacts) + checks.

See :func:`edgekd.export.export_run` for the folder layout and ``export.json``'s keys.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.atomic import atomic_directory, atomic_write_json
from edgekd.errors import EdgekdError
from edgekd.export import checks as ck
from edgekd.export import micro
from edgekd.export import onnx as ox
from edgekd.export import tflite as tfl
from edgekd.export.quantize import calibration_data
from edgekd.targets import Target, load_target

FORMATS = ("onnx", "tflite")
ONNX_QUANTS = ("fp32", "int8")
EXPORT_VERSION = 1
TFLM_MAX_SAMPLES = 1000


@dataclass
class Source:
    """What is being exported: a PyTorch model (run folder or .pt) or an ONNX file."""

    kind: str  # run | checkpoint | onnx
    path: Path
    input_shape: tuple[int, ...]
    torch_model: Any = None
    record: dict[str, Any] | None = None
    onnx_path: Path | None = None
    splits: Any = None
    run: Any = None


def _load_source(path: str | Path) -> Source:
    from edgekd.runfolder import RunFolder

    p = Path(path)
    if p.is_dir():
        from edgekd.models import load_model

        run = RunFolder(p)
        model, record = load_model(run.trained_model())
        splits = None
        if run.data_info.exists():
            from edgekd.data import load_data_from_info

            splits = load_data_from_info(run.read_json(run.data_info))
        shape = tuple(int(s) for s in record["kwargs"].get("input_shape", ()))
        if not shape and splits is not None:
            shape = tuple(int(s) for s in splits.input_shape)
        if not shape:
            raise EdgekdError(f"{run.trained_model()}: the model record has no input_shape; cannot export it")
        return Source("run", p, shape, model, record, splits=splits, run=run)
    if not p.exists():
        raise EdgekdError(f"{p}: not found; pass a run folder, a .onnx file or an edgekd .pt model")
    if p.suffix.lower() == ".onnx":
        model = ox.load_onnx(p)
        _, shape, _ = ox.input_spec(model, p)
        return Source("onnx", p, shape, onnx_path=p)
    if p.suffix.lower() in (".pt", ".pth"):
        from edgekd.models import load_model

        model, record = load_model(p)
        shape = tuple(int(s) for s in record["kwargs"].get("input_shape", ()))
        splits = None
        if (p.parent / "data.json").exists():
            from edgekd.data import load_data_from_info

            splits = load_data_from_info(json.loads((p.parent / "data.json").read_text()))
        return Source("checkpoint", p, shape, model, record, splits=splits)
    raise EdgekdError(f"{p}: not a run folder, a .onnx file or an edgekd .pt model")


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


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _io_info(d: dict[str, Any]) -> dict[str, Any]:
    return {k: d[k] for k in ("name", "shape", "dtype", "scale", "zero_point", "nbytes") if k in d}


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in (
        "torch",
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


class _Log:
    def __init__(self, quiet: bool) -> None:
        from rich.console import Console

        self.console = Console(stderr=True, quiet=quiet)
        self.t0 = time.perf_counter()

    def step(self, msg: str) -> None:
        self.console.print(f"[dim]{time.perf_counter() - self.t0:6.1f}s[/] {msg}")

    def warn(self, msg: str) -> None:
        self.console.print(f"[yellow]warning:[/] {msg}")


def export_model(
    source: str | Path,
    *,
    target: str | Path | None = None,
    fmt: str | None = None,
    quant: str | list[str] | None = None,
    calibration: str | Path | None = None,
    out: str | Path | None = None,
    method: str = "minmax",
    max_eval: int | None = None,
    tflm_samples: int = TFLM_MAX_SAMPLES,
    quiet: bool = False,
) -> Path:
    """Implementation of :func:`edgekd.export.export_run` (which documents it)."""
    t_start = time.perf_counter()
    log = _Log(quiet)
    if (target is None) == (fmt is None):
        raise EdgekdError("pass exactly one of --target NAME or --format onnx|tflite")
    if fmt is not None and fmt not in FORMATS:
        raise EdgekdError(f"--format {fmt}: valid: {', '.join(FORMATS)}")
    tgt = load_target(target) if target is not None else None
    quants = _quants(fmt, tgt, quant)
    src = _load_source(source)
    name = tgt.name if tgt is not None else str(fmt)
    if out is not None:
        out_dir = Path(out)
    elif src.run is not None:
        out_dir = src.run.export_dir(name)
    else:
        out_dir = src.path.parent / f"{src.path.stem}_export" / name

    need_int8 = "int8" in quants
    calib_x, calib_info = (None, None)
    if need_int8:
        calib_x, calib_info = calibration_data(calibration, src.input_shape, src.splits)
        if "warning" in calib_info:
            log.warn(calib_info["warning"])
    # evaluation data: the test split, else the calibration samples (no labels)
    if src.splits is not None:
        eval_x, eval_y, eval_name = src.splits.test.x, src.splits.test.y, "test"
    elif calib_x is not None:
        eval_x, eval_y, eval_name = calib_x, None, "calibration"
    else:
        rng = np.random.default_rng(0)
        eval_x, eval_y, eval_name = (
            rng.standard_normal((32, *src.input_shape)).astype(np.float32),
            None,
            "random",
        )
    if max_eval is not None:
        eval_x, eval_y = eval_x[:max_eval], (None if eval_y is None else eval_y[:max_eval])

    record: dict[str, Any] = {
        "edgekd_export": EXPORT_VERSION,
        "name": name,
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
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "files": {},
        "checks": {"eval_split": eval_name, "eval_samples": int(len(eval_x))},
        "versions": _versions(),
    }
    if calib_info is not None:
        record["calibration"] = calib_info
    checks = record["checks"]

    with tempfile.TemporaryDirectory(prefix="edgekd-export-") as work_s, atomic_directory(out_dir) as stage:
        work = Path(work_s)
        # 1. ONNX ------------------------------------------------------------------------------
        onnx_path = work / "model.onnx"
        if src.torch_model is not None:
            log.step(f"exporting PyTorch model to ONNX (input 1x{'x'.join(map(str, src.input_shape))})")
            record["onnx"] = ox.export_torch(src.torch_model, src.input_shape, onnx_path)
        else:
            model = ox.fix_batch(ox.load_onnx(src.onnx_path))
            import onnx

            onnx.save(model, str(onnx_path))
            record["onnx"] = {
                "exporter": "user",
                "opset": max(
                    (o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None
                ),
            }
        onnx_model = ox.load_onnx(onnx_path)
        input_name, _, _ = ox.input_spec(onnx_model, onnx_path)
        ort_fp32 = ox.OrtRunner(onnx_path)(eval_x)
        if src.torch_model is not None:
            import torch

            with torch.no_grad():
                ref = np.concatenate([src.torch_model(torch.from_numpy(eval_x[i : i + 256])).numpy()
                                      for i in range(0, len(eval_x), 256)]).reshape(len(eval_x), -1)  # fmt: skip
            ref_name = "PyTorch"
            diff, tol = ck.check_fp32("ONNX (onnxruntime)", ort_fp32, ref, ref_name)
            checks["onnx_max_abs_diff"] = diff
        else:
            ref, ref_name = ort_fp32, "ONNX (onnxruntime)"
        checks["reference"] = ref_name
        checks["float_accuracy"] = ck.accuracy(ref, eval_y)
        log.step(f"ONNX ok ({record['onnx']['exporter']} exporter, opset {record['onnx']['opset']})")

        write_onnx = fmt == "onnx" or (tgt is not None and ("onnxruntime" in tgt.runtimes or tgt.is_mcu))
        if write_onnx:
            shutil.copy2(onnx_path, stage / "model.onnx")

        if fmt == "onnx":
            checks["fp32_max_abs_diff"] = checks.get("onnx_max_abs_diff", 0.0)
            if need_int8:
                _onnx_int8(work, stage, onnx_path, calib_x, method, eval_x, eval_y, ref, record, log)
        else:
            _tflite(work, stage, onnx_path, onnx_model, input_name, quants, calib_x, eval_x, eval_y, ref, ref_name,
                    tgt, record, log, tflm_samples)  # fmt: skip
            if tgt is not None and "onnxruntime" in tgt.runtimes and need_int8:
                _onnx_int8(
                    work, stage, onnx_path, calib_x, method, eval_x, eval_y, ref, record, log, key="onnx_int8"
                )

        for f in sorted(stage.iterdir()):
            record["files"][f.name] = {"bytes": f.stat().st_size, "sha256": _sha256(f)}
        record["wall_time_s"] = round(time.perf_counter() - t_start, 3)
        atomic_write_json(stage / "export.json", record)
    log.step(f"[green]export written to {out_dir}[/] ({record['wall_time_s']:.1f}s)")
    if not quiet:
        log.console.print(checks_table(record))
    return out_dir


def _onnx_int8(work: Path, stage: Path, onnx_path: Path, calib_x: np.ndarray, method: str, eval_x: np.ndarray,
               eval_y: np.ndarray | None, ref: np.ndarray, record: dict[str, Any], log: _Log,
               key: str = "int8") -> None:  # fmt: skip
    log.step(f"onnxruntime static int8 quantization (QDQ, per-channel, {method}, {len(calib_x)} samples)")
    dst = work / "model_int8.onnx"
    record["onnx_quantization"] = ox.quantize_int8(onnx_path, dst, calib_x, method)
    q = ox.OrtRunner(dst)(eval_x)
    shutil.copy2(dst, stage / "model_int8.onnx")
    record["checks"][f"{key}_accuracy"] = ck.accuracy(q, eval_y)
    record["checks"][f"{key}_top1_agreement"] = ck.top1_agreement(q, ref)


def _tflite(work: Path, stage: Path, onnx_path: Path, onnx_model: Any, input_name: str, quants: list[str],
            calib_x: np.ndarray | None, eval_x: np.ndarray, eval_y: np.ndarray | None, ref: np.ndarray,
            ref_name: str, tgt: Target | None, record: dict[str, Any], log: _Log, tflm_samples: int) -> None:  # fmt: skip
    from edgekd.graph import read_tflite

    checks = record["checks"]
    conv = sorted(set(quants) | {"fp32"}, key=tfl.QUANTS.index)
    log.step(f"converting ONNX to TFLite with onnx2tf ({', '.join(conv)})")
    target_name = tgt.name if tgt is not None else "TFLite"
    try:
        files = tfl.convert(onnx_path, work, conv, calib_x, input_name, sample_x=eval_x[:20])
    except tfl.FlexOpError as e:
        raise ck.flex_op_error(e.ops, onnx_model, target_name) from None
    flex = [
        o.removeprefix("CUSTOM:Flex")
        for o in read_tflite(files["fp32"]).op_names()
        if o.startswith("CUSTOM:Flex")
    ]
    if flex:
        raise ck.flex_op_error(flex, onnx_model, target_name)
    # fp32 numerics: TFLite fp32 vs PyTorch (or onnxruntime for a user ONNX file)
    fp32_runner = tfl.TFLiteRunner(files["fp32"])
    fp32_out = fp32_runner(eval_x)
    diff, tol = ck.check_fp32("TFLite fp32", fp32_out, ref, ref_name)
    checks.update(
        fp32_max_abs_diff=diff, fp32_tolerance=tol, tflite_fp32_accuracy=ck.accuracy(fp32_out, eval_y)
    )
    checks["host_runtime"] = fp32_runner.runtime
    record["input_layout"] = fp32_runner.layout(tuple(eval_x.shape[1:]))
    log.step(f"TFLite fp32 matches {ref_name} (max |diff| {diff:.2e} <= {tol:.1e})")
    is_mcu = tgt is not None and tgt.is_mcu
    record["tflite"] = {}
    for q in quants:
        data = files[q].read_bytes()
        model = read_tflite(data)
        fname = f"model_{q}.tflite"
        (stage / fname).write_bytes(data)
        record["tflite"][q] = {
            "file": fname, "bytes": len(data), "kind": model.kind, "ops": model.op_names(),
            "input": _io_info(model.input_details()[0]), "output": _io_info(model.output_details()[0]),
        }  # fmt: skip
        if q == "dynamic" and model.kind != "hybrid":
            record["tflite"][q]["note"] = (
                "no weight tensor reached the converter's 1024-element threshold: stays float"
            )
        if q == "fp32":
            continue
        out = fp32_out if q == "fp32" else tfl.TFLiteRunner(data)(eval_x)
        if q == "int8":
            if not model.is_full_integer():
                raise EdgekdError(
                    f"{fname}: expected a full-integer model with int8 input/output, got {model.kind}"
                )
            checks["int8_accuracy"] = ck.accuracy(out, eval_y)
            checks["int8_top1_agreement"] = ck.top1_agreement(out, ref)
        else:
            checks[f"{q}_accuracy"] = ck.accuracy(out, eval_y)
            checks[f"{q}_top1_agreement"] = ck.top1_agreement(out, ref)
            if q == "fp16":
                checks["fp16_max_abs_diff"] = ck.max_abs_diff(out, ref)
        if is_mcu and q == "int8":
            _micro(stage, data, model, onnx_model, out, eval_x, eval_y, tgt, record, log, tflm_samples)
    if "int8" in quants:
        log.step(
            f"int8: accuracy {_pct(checks.get('int8_accuracy'))} vs float {_pct(checks.get('float_accuracy'))}, "
            f"top-1 agreement {_pct(checks.get('int8_top1_agreement'))}"
        )


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def _micro(stage: Path, data: bytes, model: Any, onnx_model: Any, litert_out: np.ndarray, eval_x: np.ndarray,
           eval_y: np.ndarray | None, tgt: Target, record: dict[str, Any], log: _Log, tflm_samples: int) -> None:  # fmt: skip
    from edgekd.graph import measure_arena, run_tflm

    checks = record["checks"]
    if model.is_hybrid() or not model.is_full_integer():
        raise EdgekdError(
            f"target {tgt.name}: the model is {model.kind}; TFLite Micro needs a full-integer int8 model"
        )
    ops = model.op_names()
    missing = [n for n in ops if n not in micro.RESOLVER_METHODS]
    if missing:
        raise ck.unsupported_op_error(
            model, onnx_model, "TFLite Micro has no kernel for it", missing, tgt.name
        )
    log.step(f"loading the int8 model in TFLite Micro (ops: {', '.join(ops)})")
    try:
        arena = measure_arena(data)
    except EdgekdError as e:
        raise ck.unsupported_op_error(model, onnx_model, str(e), None, tgt.name) from None
    atomic_write_json(stage / "arena.json", micro.arena_report(arena))
    micro.write_c_files(stage, data, ops)
    record["micro"] = {"arena": micro.arena_report(arena), "resolver": micro.resolver_methods(ops),
                       "c_array": "g_model", "c_array_len": "g_model_len"}  # fmt: skip
    # TFLM vs LiteRT on a subset (TFLM's exact kernels)
    n = min(tflm_samples, len(eval_x))
    xin = tfl.to_channels_last(eval_x[:n]) if record.get("input_layout") == "nhwc" else eval_x[:n]
    tflm_out = run_tflm(data, xin, quantize_io=True).reshape(n, -1)
    checks["tflm_samples"] = n
    checks["tflm_vs_litert_agreement"] = ck.top1_agreement(tflm_out, litert_out[:n])
    ref_kernels = tfl.TFLiteRunner(data, reference_kernels=True)(eval_x[:n])
    checks["tflm_vs_litert_reference_kernels_agreement"] = ck.top1_agreement(tflm_out, ref_kernels)
    checks["tflm_vs_litert_reference_kernels_max_abs_diff"] = ck.max_abs_diff(tflm_out, ref_kernels)
    checks["tflm_accuracy"] = ck.accuracy(tflm_out, None if eval_y is None else eval_y[:n])
    log.step(f"TFLite Micro arena {arena['total']:,} B (head {arena['head']:,}, tail {arena['tail']:,}); "
             f"TFLM vs LiteRT top-1 agreement {_pct(checks['tflm_vs_litert_agreement'])} on {n}")  # fmt: skip
    inp, outp = model.input_details()[0], model.output_details()[0]
    fit = micro.fit_check(tgt, len(data), arena["total"], int(inp["nbytes"]) + int(outp["nbytes"]))
    record["fit"] = fit
    log.console.print(micro.fit_table(fit))
    if not fit["fits"]:
        raise EdgekdError(micro.fit_error(fit))


def checks_table(record: dict[str, Any]) -> Any:
    """A rich table of ``export.json``'s checks."""
    from rich.table import Table

    table = Table(title=f"export {record['name']}: checks")
    table.add_column("check")
    table.add_column("value", justify="right")
    for k, v in record["checks"].items():
        if isinstance(v, float):
            s = f"{v:.3g}" if "diff" in k or "tolerance" in k else f"{100 * v:.2f}%"
        else:
            s = "n/a" if v is None else str(v)
        table.add_row(k, s)
    return table
