"""edgekd.harness.qemu: C-backend firmware on an emulated Cortex-M4.

The emulated Cortex-M4: C-backend firmware cross-compiled with arm-none-eabi-gcc, run on QEMU mps2-an386
over a TCP UART, driven by the same host runner. Skips only outside CI when the Debian packages are
missing; in CI (CI=true) they must be there (scripts/ensure-system-deps.sh).
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from edgekd.errors import EdgekdError
from edgekd.harness.mlperf import FW_VERSION
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
    assert rec["dut"]["profile"] == FW_VERSION
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


class SocketDevice:
    """QEMU's UART on its TCP socket, raw: ``send(cmd)`` is one command's reply up to ``m-ready``."""

    def __init__(self, url: str) -> None:
        import socket

        host, port = url.removeprefix("socket://").split(":")
        deadline = time.monotonic() + 10
        while True:
            try:
                self.sock = socket.create_connection((host, int(port)), timeout=10)
                break
            except OSError:
                assert time.monotonic() < deadline, "QEMU does not listen"
                time.sleep(0.05)
        self.boot = self._until_ready()

    def _until_ready(self) -> str:
        buf = b""
        while not buf.endswith(b"m-ready\r\n"):
            chunk = self.sock.recv(65536)
            assert chunk, f"QEMU closed the UART; got {buf[-200:]!r}"
            buf += chunk
        return buf.decode("latin-1")

    def send(self, cmd: str) -> str:
        self.sock.sendall(cmd.encode("ascii") + b"%")
        return self._until_ready()


def _stub_firmware(d, samples: np.ndarray):
    """ee_main.c around the conformance tests' stand-in model (kws01, int8, float), with samples."""
    from _mlperf_official import N_IN, N_OUT, OUT_SCALE, OUT_ZERO_POINT, STUB_MODEL_C

    from edgekd.export.c_backend.codegen import model_header
    from edgekd.harness.mlperf import WireSettings
    from edgekd.harness.qemu import FIRMWARE_SOURCES, copy_templates, cross_build, samples_c

    d.mkdir()
    copy_templates(d)
    (d / "edgekd_model.h").write_text(model_header("stub", N_IN, N_OUT, 0, OUT_SCALE, OUT_ZERO_POINT))
    (d / "stub_model.c").write_text(STUB_MODEL_C)
    (d / "edgekd_samples.c").write_text(samples_c(samples))
    settings = WireSettings("kws01", "int8", "float", "edgekd stub on QEMU")
    srcs = [*FIRMWARE_SOURCES, "stub_model.c", "edgekd_samples.c"]
    return cross_build("stub", d, srcs, "firmware.elf", defines=[*settings.defines(), "-DEE_SAMPLES"])


@pytest.mark.slow
def test_official_transcript_and_baked_samples_on_qemu(tmp_path):
    """The official replies byte for byte from the Cortex-M4 build, and ``db sample K`` as a db load."""
    import re

    from _mlperf_official import BOOT, N_IN, check_transcript, results_line

    samples = np.random.default_rng(0).integers(0, 256, size=(3, N_IN)).astype(np.uint8)
    elf = _stub_firmware(tmp_path / "stub", samples)
    with run_qemu(elf) as (url, _proc):
        dev = SocketDevice(url)
        assert re.fullmatch(BOOT, dev.boot), dev.boot
        assert check_transcript(dev.send) == []
        for k in (2, 0):
            assert dev.send(f"db sample {k}") == "m-load-done\r\nm-ready\r\n"
            assert dev.send("infer 1 0").endswith(results_line(samples[k].tobytes()) + "m-ready\r\n")
            assert dev.send("db print").startswith("m-buffer-" + "-".join(f"{b:02x}" for b in samples[k][:8]))
        for bad in ("3", "x", "-1"):
            assert dev.send(f"db sample {bad}") == f"e-[No sample {bad}]\r\nm-ready\r\n"
        dev.sock.close()


@pytest.mark.slow
def test_vww_size_samples_baked_into_flash_answer_as_loaded(tmp_path):
    """50 VWW-size samples (27,648 B each) fit the board's flash; ``db sample K`` + ``infer`` gives the
    host TFLite Micro results, through the host runner's Device."""
    from edgekd.graph import run_tflm
    from edgekd.graph.sample_models import sample_models
    from edgekd.harness import mlperf
    from edgekd.harness.qemu import BOARD_FLASH, emulated_board
    from edgekd.harness.runner import Device

    model = sample_models(["vww_mobilenet_like"])["vww_mobilenet_like"]
    io = mlperf.ModelIO.of(model)
    wire = np.random.default_rng(1).integers(0, 256, size=(50, io.input_nbytes("uint8"))).astype(np.uint8)
    with emulated_board(model, "cortex-m4-qemu", tmp_path / "b", samples=wire) as (url, facts):
        assert facts["preloaded_samples"] == 50 and facts["mlperf_model"] == "vww01"
        assert facts["input_format"] == "uint8" and facts["memory"]["flash_bytes"] <= BOARD_FLASH
        assert facts["memory"]["flash_bytes"] > wire.nbytes
        with Device(url, timeout=10) as dev:
            dev.handshake()
            for k in (0, 49):
                assert [m.kind for m in dev.request(f"db sample {k}%")] == ["load_done"]
                got = dev.infer(1, 0).results
                q, xf = mlperf.decode_input(wire[k].tobytes(), io, "uint8")
                host = run_tflm(model, q.reshape(1, *io.input_shape))[0]
                want = mlperf.result_values(host, xf, io, "vww01", facts["results"])
                np.testing.assert_allclose(got, want, atol=0.0015)


# The goals for the fast kernels, in emulated instructions per inference (-icount shift=0):
# KWS at most 6 M; the others at or below TFLite Micro + CMSIS-NN (-Os) on the same board
# (shared/third_party/README.md; AD and residual: benchmarks/results/c_backend_vs_tflm.json). ResNet-8
# and residual run a 3x3 convolution in place, AD its one-row fully connected layers without scratch;
# VWW its first four layers in row bands (patch-based, recomputing halo rows).
FAST_GOALS = {"kws_dscnn_like": 6_000_000, "ic_resnet8_like": 41_073_204, "ad_fcae_like": 890_591,
              "residual": 1_620_750, "vww_mobilenet_like": 28_574_000}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FAST_GOALS))
def test_fast_kernels_on_cortex_m4_are_bit_exact_and_within_the_goal(tmp_path, name):
    """The Cortex-M4 build of the fast kernels (SIMD intrinsics) answers ``infer`` with the host TFLite
    Micro's int8 outputs byte for byte (raw results over the protocol), within the instruction goal."""
    from edgekd.graph import read_tflite, run_tflm
    from edgekd.graph.sample_models import sample_models
    from edgekd.harness.runner import Device

    model = sample_models([name])[name]
    x = np.random.default_rng(3).integers(
        -128, 128, size=(2, *read_tflite(model).input_details()[0]["shape"][1:])
    )
    ref = run_tflm(model, x.astype(np.int8)).reshape(len(x), -1)
    fw = build_firmware(model, tmp_path / "fw", input_format="int8", results="raw", kernels="fast")
    assert fw.c_model["kernels"] == "fast"
    assert (fw.c_model["patches"] is not None) == (name == "vww_mobilenet_like")
    with run_qemu(fw.elf) as (url, _proc), Device(url, timeout=20) as dev:
        dev.handshake()
        for sample, want in zip(x.astype(np.int8), ref, strict=True):
            dev.load(sample.tobytes())
            inf = dev.infer(1, 0)
            assert inf.results == want.astype(int).tolist()
            assert inf.elapsed_us * 1000 <= FAST_GOALS[name]  # 1 instruction = 1 ns of emulated time
