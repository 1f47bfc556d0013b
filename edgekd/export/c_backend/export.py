"""``edgekd export ... --format c`` / ``--target cortex-m4-qemu`` / ``--firmware``: the C backend's
part of an export folder (``c/`` with the sources and ``c_model.json``, ``firmware/``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.atomic import atomic_directory, atomic_write_json
from edgekd.errors import EdgekdError

C_TARGETS = ("cortex-m4-qemu",)
CHECK_SAMPLES = 32
MAX_CHECK_BYTES = 64 << 20  # random input bytes of the host check, all samples together


def wants_c_export(source: str | os.PathLike, target: str | None, fmt: str | None, firmware: bool) -> bool:
    """True when ``edgekd export`` should go through the C backend."""
    return fmt == "c" or firmware or str(source).lower().endswith(".tflite") or (target or "") in C_TARGETS


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


def export_c(source: str | os.PathLike, *, target: str | None = None, fmt: str | None = None,
             out: str | os.PathLike | None = None, firmware: bool = False, quiet: bool = False,
             **export_kwargs: Any) -> Path:  # fmt: skip
    """Export SOURCE (a ``.tflite``, run folder, ``.onnx`` or ``.pt``) through the C backend."""
    from rich.console import Console

    console = Console(stderr=True, quiet=quiet)
    src = Path(source)
    name = target or "c"
    if src.suffix.lower() == ".tflite":  # one path for a .tflite: checked options, atomic, one level
        from edgekd.export.from_tflite import export_tflite

        writer = None
        if firmware:
            from edgekd.harness.firmware_project import write_firmware

            writer = write_firmware
        return export_tflite(src, target=target, fmt=None if target else (fmt or "c"),
                             quant=export_kwargs.get("quant"), out=out, firmware=writer, quiet=quiet)  # fmt: skip
    from edgekd.export.api import export_model

    if fmt == "c":
        if export_kwargs.pop("quant", None) not in (None, "int8"):
            raise EdgekdError("--format c needs a full-integer model: --quant int8 (or leave --quant out)")
        default = src / "export" / "c" if src.is_dir() else src.parent / f"{src.stem}_export" / "c"
        out_dir = export_model(
            src, fmt="tflite", quant="int8", out=out or default, quiet=quiet, **export_kwargs
        )
    else:
        out_dir = export_model(src, target=target, out=out, quiet=quiet, **export_kwargs)
    model = out_dir / "model_int8.tflite"
    if fmt == "c" or Path(name).stem in C_TARGETS or target is None:
        info = write_c_folder(model, out_dir)
        console.print(f"C backend: {len(info['ops'])} op types, arena {info['arena_bytes']:,} B "
                      f"(TFLite Micro greedy plan {info['tflm_greedy_arena_bytes']:,} B), weights "
                      f"{info['weight_bytes']:,} B, bit-exact on the host: {info['host_check']['bit_exact']}")  # fmt: skip
    if firmware:
        from edgekd.harness.firmware_project import write_firmware

        fw = write_firmware(model, out_dir, target or "cortex-m4-qemu")
        atomic_write_json(out_dir / "firmware" / "firmware.json", fw)
        skipped = fw["c_backend"].get("skipped")
        console.print(f"firmware projects in {out_dir / 'firmware'}"
                      + (f" (C backend skipped: {skipped})" if skipped else ""))  # fmt: skip
    return out_dir
