"""``--firmware``: projects a user builds and flashes on their own machine.

* ``firmware/c_backend/``: the C-backend model + the protocol firmware + a plain Makefile for
  ``arm-none-eabi-gcc`` (Cortex-M4F; runs as is on QEMU mps2-an386, port ``board_*.c`` for a board);
* ``firmware/tflite_micro/``: the same protocol around TFLite Micro (PlatformIO layout, ``src/``
  with ``model_data.cc``, ``op_resolver.h``, ``tflm_model.cc``) and README steps.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

from edgekd.export.c_backend.codegen import UnsupportedOpError, generate_c, model_header
from edgekd.harness.mlperf import WireSettings
from edgekd.harness.qemu import CFLAGS, FIRMWARE_DIR, LDFLAGS, LDLIBS, TEMPLATE_FILES


def _fill(text: str, **values: str) -> str:
    for k, v in values.items():
        text = text.replace(f"@{k}@", v)
    return text


def _setting_values(settings: WireSettings) -> dict[str, str]:
    """The @...@ values of Makefile.in / platformio.ini for ee_main.c's EE_* defines."""
    return {"MODEL_NAME": settings.model_name, "VENDOR": settings.vendor,
            "INPUT_FORMAT": settings.input_format, "RESULTS": settings.results}  # fmt: skip


def write_c_backend_project(model_path: str | os.PathLike, dst: Path,
                            settings: WireSettings | None = None) -> dict[str, Any]:  # fmt: skip
    settings = settings or WireSettings.of(model_path, vendor="edgekd C backend")
    cm = generate_c(model_path)
    dst.mkdir(parents=True, exist_ok=True)
    cm.write(dst)
    for f in (*TEMPLATE_FILES, "board_host.c"):
        shutil.copy2(FIRMWARE_DIR / f, dst / f)
    make = (FIRMWARE_DIR / "Makefile.in").read_text()
    flags = [f for f in CFLAGS if not f.startswith("-fcallgraph")]
    (dst / "Makefile").write_text(_fill(make, CFLAGS=" ".join(flags), LDFLAGS=" ".join(LDFLAGS),
                                        LDLIBS=" ".join(LDLIBS), MODEL_SOURCES=" ".join(cm.sources),
                                        **_setting_values(settings)))  # fmt: skip
    return {"folder": str(dst), "arena_bytes": cm.arena_size, **settings.as_dict(),
            "files": sorted(p.name for p in dst.iterdir())}  # fmt: skip


def tflm_model_header(model_path: str | os.PathLike, arena: int) -> str:
    """edgekd_model.h for the TFLite Micro variant: the .tflite's 8-bit input and output tensors."""
    from edgekd.harness.mlperf import ModelIO

    io = ModelIO.of(model_path)
    return model_header(Path(str(model_path)).name, io.input_elements, io.output_size, arena, io.output_scale,
                        io.output_zero_point, in_scale=io.input_scale, in_zp=io.input_zero_point,
                        in_unsigned=io.input_dtype == "uint8")  # fmt: skip


def tflm_arena_bytes(model: bytes) -> int:
    """The TFLite Micro arena for ``model``: the host interpreter's measured need plus export's margin
    (:func:`edgekd.export.micro.arena_report`). The margin is needed: while Prepare() holds temporary
    tensors a target needs more than its final ``arena_used_bytes()`` (the AD autoencoder sample uses
    15,828 B on the Cortex-M4 and fails to allocate in the host's 17,120)."""
    from edgekd.export.micro import arena_report
    from edgekd.graph import measure_arena

    return int(arena_report(measure_arena(model))["recommended_bytes"])


def write_tflm_project(model_path: str | os.PathLike, dst: Path, target: str,
                       settings: WireSettings | None = None) -> dict[str, Any]:  # fmt: skip
    from edgekd.export.micro import write_c_files
    from edgekd.graph import read_tflite
    from edgekd.graph.tflite_model import read_tflite_bytes

    settings = settings or WireSettings.of(model_path, vendor="edgekd TFLite Micro")
    data = read_tflite_bytes(model_path)
    m = read_tflite(model_path)
    arena = tflm_arena_bytes(data)
    src = dst / "src"
    src.mkdir(parents=True, exist_ok=True)
    write_c_files(src, data, m.op_names())
    (src / "edgekd_model.h").write_text(tflm_model_header(model_path, arena))
    for f in ("ee_main.c", "board.h", "board_host.c"):
        shutil.copy2(FIRMWARE_DIR / f, src / f)
    for f in ("tflm_model.cc", "board_port.c"):
        shutil.copy2(FIRMWARE_DIR / "tflm" / f, src / f)
    for f in ("platformio.ini", "README.md"):
        text = (FIRMWARE_DIR / "tflm" / f).read_text()
        (dst / f).write_text(_fill(text, ARENA=f"{arena:,}", TARGET=target, **_setting_values(settings)))
    return {
        "folder": str(dst),
        "arena_bytes": arena,
        **settings.as_dict(),
        "files": sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file()),
    }


def write_firmware(model_path: str | os.PathLike, out_dir: str | os.PathLike, target: str,
                   model_name: str | None = None, input_format: str | None = None,
                   results: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Both firmware projects under ``out_dir/firmware``, built for the MLPerf Tiny task ``model_name``
    with ``input_format`` and ``results`` (defaults: the task's, :class:`WireSettings`); the
    C-backend one is skipped (with the reason) when the model uses an op the C backend lacks."""
    c_settings = WireSettings.of(model_path, model_name, input_format, results, "edgekd C backend")
    tflm_settings = dataclasses.replace(c_settings, vendor="edgekd TFLite Micro")  # the model read once
    root = Path(out_dir) / "firmware"
    if root.exists():
        shutil.rmtree(root)
    info: dict[str, Any] = {}
    try:
        info["c_backend"] = write_c_backend_project(model_path, root / "c_backend", c_settings)
    except UnsupportedOpError as e:
        info["c_backend"] = {"skipped": str(e)}
    info["tflite_micro"] = write_tflm_project(model_path, root / "tflite_micro", target, tflm_settings)
    return info
