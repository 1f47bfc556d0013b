"""edgekd.harness.runner: the host runner against the software device over a pty: modes, faults, CLI."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from edgekd.errors import EdgekdError
from edgekd.harness.mlperf import FW_VERSION, ModelIO
from edgekd.harness.runner import Device, DeviceError, run_accuracy, run_performance
from edgekd.harness.softdevice import SoftwareDevice, pty_device

N_IN = 20
IO = ModelIO((N_IN,), "int8", 0.1, 0, 4, 0.5, 0, False)  # a stand-in model's input and output


def _model(data: bytes) -> list[int]:
    """A stand-in 'model': 4 int8 outputs, a deterministic function of the input bytes."""
    x = np.frombuffer(data, dtype=np.int8).astype(np.int32)
    return [int(np.clip(x[i::4].sum() // 3, -128, 127)) for i in range(4)]


def _device(**faults: int) -> SoftwareDevice:
    return SoftwareDevice(_model, IO, faults=faults, model_name="kws01", results="raw")


def test_accuracy_and_performance_over_a_pty():
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, size=(6, N_IN)).astype(np.int8)
    host = np.array([_model(s.tobytes()) for s in x], dtype=np.int8)
    host[3, 0] ^= 1  # the host disagrees on one sample: must be counted, not hidden
    labels = np.argmax(host, axis=1)
    with pty_device(_device()) as port, Device(port, timeout=2) as dev:
        info = dev.handshake()
        assert info.name == "edgekd software device" and info.profile == FW_VERSION and info.model == "kws01"
        res = run_accuracy(dev, x, host, labels).as_dict()
        assert res["samples"] == 6 and res["bytes_equal_samples"] == 5 and not res["bit_exact"]
        assert res["first_mismatch_sample"] == 3 and res["max_abs_diff_vs_host_tflm"] == 1.0
        perf = run_performance(dev, x[0].tobytes(), windows=3, window_s=0.02)
        assert perf["windows"] == 3 and perf["iterations_per_window"] >= 1
        assert 0 < perf["us_per_inference"] < 20_000
        assert perf["inferences_per_second"] == pytest.approx(1e6 / perf["us_per_inference"], rel=0.5)


@pytest.mark.parametrize(
    ("fault", "match"),
    [("garble", "garbled"), ("reset", "reset while answering"), ("silent", "no m-ready"),
     ("error", "e-\\[Injected failure\\]")],
)  # fmt: skip
@pytest.mark.slow
def test_faults_give_one_clear_error_and_never_hang(fault, match):
    x = np.zeros((3, N_IN), dtype=np.int8)
    host = np.array([_model(s.tobytes()) for s in x], dtype=np.int8)
    t0 = time.monotonic()
    with pty_device(_device(**{fault: 4})) as port, Device(port, timeout=0.5, infer_timeout=1) as dev:
        dev.handshake()
        with pytest.raises(EdgekdError, match=match) as ei:
            run_accuracy(dev, x, host, None)
    assert "\n" not in str(ei.value)
    assert time.monotonic() - t0 < 10


def test_device_errors_for_bad_commands_are_reported():
    with pty_device(_device()) as port, Device(port, timeout=1) as dev:
        dev.handshake()
        with pytest.raises(DeviceError, match="Unknown command: bogus"):
            dev.request("bogus%")
        with pytest.raises(DeviceError, match="iterations must be >0"):
            dev.request("infer 0 0%")
        with pytest.raises(DeviceError, match="Invalid hex digit '0g'"):
            dev.request("db load 2%")
            dev.request("db 0g%")


def test_port_that_does_not_exist_or_answer():
    with pytest.raises(EdgekdError, match="cannot open"):
        Device("/dev/does-not-exist-edgekd").open()
    import os

    master, slave = os.openpty()  # a terminal nobody answers on
    try:
        t0 = time.monotonic()
        with (
            Device(os.ttyname(slave), timeout=0.3, connect_timeout=1.0) as dev,
            pytest.raises(EdgekdError, match="does not answer 'name%'"),
        ):
            dev.handshake()
        assert time.monotonic() - t0 < 5
    finally:
        os.close(master)
        os.close(slave)


def test_bench_cli_with_the_software_device_writes_bench_json(tmp_path, capsys):
    from edgekd.cli import main
    from edgekd.graph.sample_models import sample_models

    model = sample_models(["mlp"])["mlp"]
    out = tmp_path / "run" / "bench" / "tflite-micro"
    main(["bench", str(model), "--target", "tflite-micro", "--software", "--samples", "8",
          "--windows", "2", "--window-s", "0.02", "--results", "raw", "-o", str(out), "-q"])  # fmt: skip
    assert capsys.readouterr().out.strip() == str(out / "bench.json")
    rec = json.loads((out / "bench.json").read_text())
    assert rec["accuracy"]["samples"] == 8 and rec["accuracy"]["bit_exact"] is True
    assert rec["performance"]["inferences_per_second"] > 0
    assert rec["dut"]["name"] == "edgekd software device"
    assert rec["protocol"]["mlperf_model"] == "ic01" and rec["protocol"]["input_format"] == "uint8"
    # the measured device row edgekd profile shows for the run folder
    from rich.console import Console

    from edgekd.profile.report.bench_file import device_row, device_table

    (row,) = device_row(tmp_path / "run")
    assert row["target"] == "tflite-micro" and row["bit_exact"] is True and not row["emulated"]
    assert row["ms_per_inference"] == pytest.approx(rec["performance"]["us_per_inference"] / 1000)
    con = Console(record=True, width=200)
    con.print(device_table([row]))
    assert "measured on device" in con.export_text()


def test_bench_cli_bad_input_is_one_line_exit_2(tmp_path, capsys):
    from edgekd.cli import main

    with pytest.raises(SystemExit) as ei:
        main(["bench", str(tmp_path / "nope.tflite"), "--target", "tflite-micro", "--software"])
    assert ei.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "nope.tflite" in err and "\n" not in err


def test_bench_options_need_a_target():
    from edgekd.harness.bench import BenchOptions

    assert BenchOptions.of(None, target="tflite-micro", samples=3).samples == 3
    with pytest.raises(TypeError):
        BenchOptions.of(None, samples=3)
