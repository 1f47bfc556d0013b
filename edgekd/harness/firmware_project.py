"""``--firmware``: projects a user builds and flashes on their own machine.

* ``firmware/c_backend/``: the C-backend model + the protocol firmware + a plain Makefile for
  ``arm-none-eabi-gcc`` (Cortex-M4F; runs as is on QEMU mps2-an386, port ``board_*.c`` for a board);
* ``firmware/tflite_micro/``: the same protocol around TFLite Micro (PlatformIO layout, ``src/``
  with ``model_data.cc``, ``op_resolver.h``, ``tflm_model.cc``) and README steps.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from edgekd.errors import EdgekdError
from edgekd.export.c_backend.codegen import UnsupportedOpError, generate_c, model_header
from edgekd.harness.qemu import CFLAGS, FIRMWARE_DIR, LDFLAGS, TEMPLATE_FILES

MODEL_NAMES = ("kws01", "vww01", "ad01", "ic01", "strww01")


def _fill(text: str, **values: str) -> str:
    for k, v in values.items():
        text = text.replace(f"@{k}@", v)
    return text


def write_c_backend_project(
    model_path: str | os.PathLike, dst: Path, model_name: str = "ic01"
) -> dict[str, Any]:
    cm = generate_c(model_path)
    dst.mkdir(parents=True, exist_ok=True)
    cm.write(dst)
    for f in (*TEMPLATE_FILES, "board_host.c"):
        shutil.copy2(FIRMWARE_DIR / f, dst / f)
    make = (FIRMWARE_DIR / "Makefile.in").read_text()
    flags = [f for f in CFLAGS if not f.startswith("-fcallgraph")]
    (dst / "Makefile").write_text(
        _fill(make, CFLAGS=" ".join(flags), LDFLAGS=" ".join(LDFLAGS), MODEL_NAME=model_name)
    )
    return {"folder": str(dst), "arena_bytes": cm.arena_size, "files": sorted(p.name for p in dst.iterdir())}


def write_tflm_project(
    model_path: str | os.PathLike, dst: Path, target: str, model_name: str = "ic01"
) -> dict[str, Any]:
    from edgekd.export.micro import write_c_files
    from edgekd.graph import measure_arena, read_tflite
    from edgekd.graph.tflite_model import read_tflite_bytes

    data = read_tflite_bytes(model_path)
    m = read_tflite(model_path)
    arena = (measure_arena(data)["total"] + 15) // 16 * 16
    src = dst / "src"
    src.mkdir(parents=True, exist_ok=True)
    write_c_files(src, data, m.op_names())
    ind, outd = m.input_details()[0], m.output_details()[0]
    scale = float(outd["scale"]) if not isinstance(outd["scale"], list) else 0.0
    zp = int(outd["zero_point"]) if not isinstance(outd["zero_point"], list) else 0
    (src / "edgekd_model.h").write_text(model_header(Path(str(model_path)).name, int(ind["nbytes"]),
                                                     int(outd["nbytes"]), arena, scale, zp))  # fmt: skip
    for f in ("ee_main.c", "board.h", "board_host.c"):
        shutil.copy2(FIRMWARE_DIR / f, src / f)
    for f in ("tflm_model.cc", "board_port.c"):
        shutil.copy2(FIRMWARE_DIR / "tflm" / f, src / f)
    for f in ("platformio.ini", "README.md"):
        text = (FIRMWARE_DIR / "tflm" / f).read_text()
        (dst / f).write_text(_fill(text, MODEL_NAME=model_name, ARENA=f"{arena:,}", TARGET=target))
    return {
        "folder": str(dst),
        "arena_bytes": arena,
        "files": sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file()),
    }


def write_firmware(model_path: str | os.PathLike, out_dir: str | os.PathLike, target: str,
                   model_name: str = "ic01") -> dict[str, Any]:  # fmt: skip
    """Both firmware projects under ``out_dir/firmware``; the C-backend one is skipped (with the
    reason) when the model uses an op the C backend lacks."""
    if model_name not in MODEL_NAMES:
        raise EdgekdError(f"model name {model_name!r}: MLPerf Tiny names are {', '.join(MODEL_NAMES)}")
    root = Path(out_dir) / "firmware"
    if root.exists():
        shutil.rmtree(root)
    info: dict[str, Any] = {}
    try:
        info["c_backend"] = write_c_backend_project(model_path, root / "c_backend", model_name)
    except UnsupportedOpError as e:
        info["c_backend"] = {"skipped": str(e)}
    info["tflite_micro"] = write_tflm_project(model_path, root / "tflite_micro", target, model_name)
    return info
