"""``edgekd export ... --format c`` / ``--target cortex-m4-qemu`` / ``--firmware``: the C backend's
part of an export folder (``c/`` with the sources and ``c_model.json``, ``firmware/``)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.atomic import atomic_directory, atomic_write_json
from edgekd.errors import EdgekdError
from edgekd.export.options import ExportOptions, FirmwareWriter

C_TARGETS = ("cortex-m4-qemu",)
FIRMWARE_TARGET = "cortex-m4-qemu"  # the board --firmware builds for when no --target names one
CHECK_SAMPLES = 32
MAX_CHECK_BYTES = 64 << 20  # random input bytes of the host check, all samples together


def wants_c_export(options: ExportOptions) -> bool:
    """True when an export (of a run folder, ``.onnx`` or ``.pt``) goes through the C backend."""
    return options.fmt == "c" or options.firmware is not None or str(options.target or "") in C_TARGETS


def host_check(model_path: Path, cm: Any, n: int = CHECK_SAMPLES) -> dict[str, Any]:
    """Compile with the host gcc and compare every output byte with tflite-micro on random inputs."""
    from edgekd.export.c_backend.host import HostBuild, gcc
    from edgekd.graph import read_tflite, run_tflm

    if gcc() is None:
        return {"bit_exact": None, "note": "no host gcc: not checked"}
    ind = read_tflite(model_path).input_details()[0]
    shape = ind["shape"]
    if ind["nbytes"] > MAX_CHECK_BYTES:  # bounded before anything is allocated
        raise EdgekdError(
            f"{model_path}: the model input declares {ind['nbytes']:,} bytes ({ind['dtype']} {shape}), over "
            f"the {MAX_CHECK_BYTES >> 20} MiB the host check feeds; a microcontroller model takes far less "
            "(corrupt file?); re-export the model"
        )
    n = max(1, min(n, MAX_CHECK_BYTES // max(int(ind["nbytes"]), 1)))
    x = np.random.default_rng(0).integers(-128, 128, size=(n, *shape[1:])).astype(np.int8)
    ref = run_tflm(model_path, x).reshape(n, -1)
    with HostBuild(cm) as hb:
        got = hb(x)
    return {"bit_exact": bool(np.array_equal(got, ref)), "samples": n, "inputs": "random int8 (seed 0)",
            "differing_bytes": int((got != ref).sum())}  # fmt: skip


def write_c_folder(model_path: Path, out_dir: Path) -> dict[str, Any]:
    from edgekd.export.c_backend import generate_c

    cm = generate_c(model_path)
    info = {"model": str(model_path), **cm.summary(), "host_check": host_check(model_path, cm)}
    with atomic_directory(out_dir / "c") as stage:
        cm.write(stage)
        atomic_write_json(stage / "c_model.json", info)
    if info["host_check"]["bit_exact"] is False:
        raise EdgekdError(f"{model_path}: the generated C differs from TFLite Micro on "
                          f"{info['host_check']['differing_bytes']} output bytes; please report the model")  # fmt: skip
    return info


def export_c(source: str | os.PathLike | Any, options: ExportOptions) -> Path:
    """Export a run folder, ``.onnx`` or ``.pt`` through the C backend: the int8 export, then ``c/``
    (``--format c``, C backend targets) and ``firmware/`` (``options.firmware``)."""
    from edgekd.export.api import export_model
    from edgekd.export.context import Log

    log = Log(options.quiet)
    src = Path(source)
    if options.fmt == "c":
        if options.quant not in (None, "int8"):
            raise EdgekdError("--format c needs a full-integer model: --quant int8 (or leave --quant out)")
        default = src / "export" / "c" if src.is_dir() else src.parent / f"{src.stem}_export" / "c"
        options = dataclasses.replace(options, fmt="tflite", quant="int8", out=options.out or default)
    out_dir = export_model(src, options)
    model = out_dir / "model_int8.tflite"
    if options.target is None or Path(str(options.target)).stem in C_TARGETS:
        info = write_c_folder(model, out_dir)
        log.step(c_summary(info))
    if options.firmware is not None:
        write_firmware_folder(
            options.firmware, model, out_dir, out_dir, str(options.target or FIRMWARE_TARGET), log
        )
    return out_dir


def c_summary(info: dict[str, Any]) -> str:
    """The C backend's one-line summary (op types, arena, weights, host bit-exactness)."""
    return (f"C backend: {len(info['ops'])} op types, arena {info['arena_bytes']:,} B (TFLite Micro greedy plan "
            f"{info['tflm_greedy_arena_bytes']:,} B), weights {info['weight_bytes']:,} B, bit-exact on the host: "
            f"{info['host_check']['bit_exact']}")  # fmt: skip


def write_firmware_folder(writer: FirmwareWriter, model: Path, stage: Path, out_dir: Path, board: str,
                          log: Any) -> dict[str, Any]:  # fmt: skip
    """``firmware/`` (the projects ``writer`` makes and ``firmware.json``) in the folder being built,
    ``stage`` (``out_dir`` once renamed); returns firmware.json."""
    fw = writer(model, stage, board)
    for part in fw.values():  # name the folders where they will be, not the temporary build
        if "folder" in part:
            part["folder"] = str(out_dir / Path(part["folder"]).relative_to(stage))
    atomic_write_json(stage / "firmware" / "firmware.json", fw)
    skipped = fw["c_backend"].get("skipped")
    log.step(
        f"firmware projects in {out_dir / 'firmware'}"
        + (f" (C backend skipped: {skipped})" if skipped else "")
    )
    return fw
