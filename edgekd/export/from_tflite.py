"""``edgekd export MODEL.tflite``: a converted, full-integer int8 ``.tflite`` to a TFLite Micro target
(the C array, op resolver, measured arena and fit check that a run folder's export writes, through the
same :func:`edgekd.export.micro.write_micro_artifacts`) or to C sources (``--format c``).

A ``.tflite`` is exported as it is: options that convert or quantize (``--format onnx|tflite``,
``--quant`` other than the file's own int8, ``--calibration``, ``--eval``, ``--route``, ``--method``)
are refused with the reason, never ignored. The folder is ``<model>_export/<target or c>/`` unless
``-o`` names one, and is built in a temporary sibling: a failed export leaves the previous one intact.

Folder contents: for a target ``model_int8.tflite`` (the input, unchanged), ``model_data.cc``/``.h``,
``op_resolver.h``, ``arena.json``, ``c/`` (C backend targets: cortex-m4-qemu) and ``export.json``;
for ``--format c`` the C backend's sources, ``c_model.json`` and ``export.json``; ``firmware/`` with
``--firmware``. ``export.json``: the provenance header (``schema`` ``edgekd-export/3``, ``edgekd``, ``created``), ``name``, ``format`` (``tflite-micro`` | ``c``),
``quantizations`` (``["int8"]``), ``target``, ``source`` (``type`` tflite, ``path``, ``sha256``,
``kind``), ``tflite``, ``micro``, ``fit``, ``c``, ``firmware``, ``files``, ``versions``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from edgekd.atomic import atomic_directory, atomic_write_json
from edgekd.errors import EdgekdError
from edgekd.export.api import EXPORT_VERSION, files_record, package_versions
from edgekd.export.c_backend.export import (
    C_TARGETS,
    FIRMWARE_TARGET,
    c_summary,
    write_c_folder,
    write_firmware_folder,
)
from edgekd.export.context import Log
from edgekd.export.options import ExportOptions
from edgekd.export.outdir import check_output_folder
from edgekd.files import MAX_TFLITE_BYTES, read_bytes_capped
from edgekd.provenance import provenance
from edgekd.targets import Target, list_targets, load_target

FORMATS = ("c",)


def check_options(path: Path, given: dict[str, Any]) -> None:
    """Refuse options that convert or quantize, which a ``.tflite`` (already both) cannot take."""
    for opt, value in given.items():
        if value not in (None, False, ""):
            raise EdgekdError(
                f"{opt}: does not apply to {path}, a .tflite is already converted and quantized and is "
                f"exported as it is; leave {opt} out (it is for a run folder, .onnx or .pt)"
            )


def _check_format(path: Path, target: str | None, fmt: str | None) -> None:
    if (target is None) == (fmt is None):
        raise EdgekdError(
            f"{path}: pass exactly one of --target NAME (TFLite Micro artifacts: C array, op resolver, "
            "arena, fit check) or --format c (C backend sources)"
        )
    if fmt == "onnx":
        raise EdgekdError(
            f"--format onnx: {path} is a TFLite model and edgekd does not convert TFLite back to ONNX; "
            "export the run folder, .onnx or .pt it came from, or use --format c or --target tflite-micro"
        )
    if fmt == "tflite":
        raise EdgekdError(
            f"--format tflite: {path} already is a TFLite model; use --format c (C sources) or "
            "--target BOARD (TFLite Micro artifacts)"
        )
    if fmt is not None and fmt not in FORMATS:
        raise EdgekdError(f"--format {fmt}: a .tflite exports to --format c or to a --target")


def _check_target(path: Path, tgt: Target) -> None:
    if tgt.is_mcu:
        return
    mcus = [t.name for t in list_targets(strict=False) if t.is_mcu]
    raise EdgekdError(
        f"--target {tgt.name}: its runtime ({', '.join(tgt.runtimes)}) loads {path} as it is, so there is "
        f"nothing to export; copy the file to the device, or pick a TFLite Micro target: {', '.join(mcus)}"
    )


def _check_quant(path: Path, quant: str | None, what: str) -> None:
    qs = [q.strip() for q in (quant or "").split(",") if q.strip()]
    if qs and qs != ["int8"]:
        raise EdgekdError(
            f"--quant {quant}: {path} is exported as it is, a full-integer int8 model, and {what} runs int8 "
            "only; leave --quant out (to get another quantization, export the run folder, .onnx or .pt it "
            "came from with --format tflite)"
        )


def _read_model(path: Path, what: str) -> tuple[bytes, Any]:
    from edgekd.graph import read_tflite

    data = read_bytes_capped(path, MAX_TFLITE_BYTES, "TFLite model")
    model = read_tflite(path)
    if not model.is_full_integer():
        raise EdgekdError(
            f"{path}: a {model.kind} model; {what} needs a full-integer int8 .tflite (int8 input and "
            "output); export the run folder, .onnx or .pt with --target tflite-micro"
        )
    return data, model


def export_tflite(source: str | os.PathLike, options: ExportOptions) -> Path:
    """Export the int8 ``.tflite`` ``source`` for ``options.target`` (TFLite Micro) or ``fmt="c"``;
    returns the folder. See the module docstring for the layout; every problem is one EdgekdError line."""
    path = Path(source)
    target, fmt, out = options.target, options.fmt, options.out
    check_options(path, {"calibration": options.calibration, "eval_data": options.eval_data,
                         "route": options.route, "input_shape": options.input_shape,
                         "method": options.method != "minmax" and options.method})  # fmt: skip
    quant = ",".join(options.quant) if isinstance(options.quant, list) else options.quant
    _check_format(path, None if target is None else str(target), fmt)
    tgt = load_target(target) if target is not None else None
    if tgt is not None:
        _check_target(path, tgt)
    what = f"target {tgt.name} (TFLite Micro)" if tgt is not None else "--format c (the C backend)"
    _check_quant(path, quant, what)
    data, model = _read_model(path, what)
    name = tgt.name if tgt is not None else "c"
    if out is not None:
        out_dir = check_output_folder(out)
    else:
        out_dir = check_output_folder(path.parent / f"{path.stem}_export" / name, "output folder")
    log = Log(options.quiet)
    record = _record(path, data, model, name, tgt)
    with atomic_directory(out_dir) as stage:
        if tgt is not None:
            _micro(path, data, model, tgt, stage, record, log)
        else:
            record["c"] = _c_sources(path, stage, log)
        if options.firmware is not None:
            board = tgt.name if tgt is not None else FIRMWARE_TARGET
            fw = write_firmware_folder(options.firmware, path, stage, out_dir, board, log)
            record["firmware"] = {k: v.get("skipped") or v.get("folder") for k, v in fw.items()}
        record["files"] = files_record(stage)
        atomic_write_json(stage / "export.json", record)
    log.step(f"export written to {out_dir}", style="green")
    return out_dir


def _record(path: Path, data: bytes, model: Any, name: str, tgt: Target | None) -> dict[str, Any]:
    return {
        **provenance("export", EXPORT_VERSION),
        "name": name,
        "format": "tflite-micro" if tgt is not None else "c",
        "quantizations": ["int8"],
        "target": tgt.as_dict() if tgt is not None else None,
        "source": {
            "type": "tflite",
            "path": str(path),
            "sha256": hashlib.sha256(data).hexdigest(),
            "kind": model.kind,
        },
        "tflite": {
            "int8": {
                "file": "model_int8.tflite" if tgt is not None else None,
                "bytes": len(data),
                "kind": model.kind,
                "ops": model.op_names(),
            }
        },
        "checks": {},
        "versions": package_versions(),
    }


def _micro(path: Path, data: bytes, model: Any, tgt: Target, stage: Path, record: dict[str, Any],
           log: Log) -> None:  # fmt: skip
    """TFLite Micro artifacts (shared with a run folder's export) and, for C backend boards, ``c/``."""
    from edgekd.export.micro import MICRO_FILES, write_micro_artifacts
    from edgekd.graph import measure_arena

    ops = model.op_names()
    log.step(f"loading {path.name} in TFLite Micro (ops: {', '.join(ops)})")
    arena = measure_arena(path)
    (stage / "model_int8.tflite").write_bytes(data)
    log.step(f"TFLite Micro arena {arena['total']:,} B (head {arena['head']:,}, tail {arena['tail']:,})")
    record["micro"], record["fit"] = write_micro_artifacts(stage, data, ops, arena, tgt, log.console)
    log.step(f"TFLite Micro files: {MICRO_FILES}")
    record["checks"]["tflm_loads"] = True
    record["checks"]["fits"] = record["fit"]["fits"]
    if tgt.name in C_TARGETS:
        record["c"] = _c_backend(path, stage, log)


def _c_backend(path: Path, folder: Path, log: Log) -> dict[str, Any]:
    """The C backend's sources and ``c_model.json`` in ``folder/c`` (checked bit-exact on the host)."""
    info = write_c_folder(path, folder)
    log.step(c_summary(info))
    return {"folder": "c", "arena_bytes": info["arena_bytes"], "bit_exact": info["host_check"]["bit_exact"]}


def _c_sources(path: Path, stage: Path, log: Log) -> dict[str, Any]:
    """``--format c``: the C backend's files directly in the export folder (one level, no ``c/c/``)."""
    info = _c_backend(path, stage, log)
    built = stage / "c"
    for f in built.iterdir():
        os.replace(f, stage / f.name)
    built.rmdir()
    return {**info, "folder": "."}


__all__ = ["FORMATS", "check_options", "export_tflite"]
