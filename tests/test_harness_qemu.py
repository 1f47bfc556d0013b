"""edgekd.harness.qemu: C-backend firmware on an emulated Cortex-M4.

The emulated Cortex-M4: C-backend firmware cross-compiled with arm-none-eabi-gcc, run on QEMU mps2-an386
over a TCP UART, driven by the same host runner. Skips only outside CI when the Debian packages are
missing; in CI (CI=true) they must be there (scripts/ensure-system-deps.sh).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from edgekd.errors import EdgekdError
from edgekd.harness.qemu import build_firmware, have_toolchain, run_qemu

if not have_toolchain():
    if os.environ.get("CI", "").lower() in ("1", "true"):
        pytest.fail("CI=true but qemu-system-arm / arm-none-eabi-gcc are missing; run scripts/ensure-system-deps.sh",
                    pytrace=False)  # fmt: skip
    pytest.skip("qemu-system-arm / gcc-arm-none-eabi not installed (make test installs them as root)",
                allow_module_level=True)  # fmt: skip


def _qemu_children() -> list[int]:
    import psutil

    return [p.pid for p in psutil.Process().children(recursive=True) if "qemu" in p.name()]


@pytest.mark.slow
def test_bench_emulate_end_to_end_is_bit_exact_and_reports_memory(tmp_path, capsys):
    from edgekd.cli import main
    from edgekd.graph.sample_models import sample_models

    model = sample_models(["tiny_cnn"])["tiny_cnn"]
    out = tmp_path / "bench"
    main(["bench", str(model), "--target", "cortex-m4-qemu", "--emulate", "--samples", "6", "--windows", "2",
          "-o", str(out), "-q"])  # fmt: skip
    rec = json.loads((out / "bench.json").read_text())
    acc, perf, mem = rec["accuracy"], rec["performance"], rec["memory"]
    assert acc["samples"] == 6 and acc["bit_exact"] is True
    assert rec["emulated"] is True and "emulated" in perf["time_base"]
    # -icount: emulated time is deterministic, so windows agree to within the timer's 40 ns tick
    w = perf["window_inferences_per_second"]
    assert max(w) / min(w) < 1.001
    assert 1e5 < perf["instructions_per_inference"] < 1e8
    assert mem["ram_bytes"] == mem["data"] + mem["bss"] + mem["stack"]
    assert mem["flash_bytes"] == mem["text"] + mem["data"]
    assert mem["bss"] >= mem["arena"] > 0 and 0 < mem["stack"] < 4096
    assert rec["dut"]["profile"] == "edgekd-c-backend"
    assert _qemu_children() == []
    err = capsys.readouterr().err
    assert "emulated" in err and "bit-exact with host TFLite Micro on 6/6" in err


def test_model_too_big_for_the_board_is_a_clear_error(tmp_path):
    from edgekd.export.c_backend.testing import Builder, S

    b = Builder()  # PAD to a 4.2 MB activation: more than the board's 4 MiB RAM
    x = b.tensor([1, 1, 1, 2], 0.1, 0)
    pads = np.array([[0, 0], [0, 2099], [0, 999], [0, 0]], dtype=np.int32)
    pt = b.tensor([4, 2], None, None, dtype=S.TensorType.INT32, data=pads)
    y = b.tensor([1, 2100, 1000, 2], 0.1, 0)
    model = tmp_path / "huge.tflite"
    model.write_bytes(
        b.build(S.BuiltinOperator.PAD, [x, pt], y, S.BuiltinOptions.PadOptions, S.PadOptionsT())
    )
    with pytest.raises(EdgekdError, match="does not fit the emulated board: RAM overflowed") as ei:
        build_firmware(model, tmp_path / "build")
    assert "\n" not in str(ei.value)


def test_qemu_is_stopped_on_error(tmp_path):
    from edgekd.graph.sample_models import sample_models

    fw = build_firmware(sample_models(["mlp"])["mlp"], tmp_path / "build")
    with pytest.raises(RuntimeError, match="boom"), run_qemu(fw.elf) as (url, proc):
        assert url.startswith("socket://127.0.0.1:") and proc.poll() is None
        raise RuntimeError("boom")
    assert proc.poll() is not None
    assert _qemu_children() == []
