"""MLPerf Tiny conformance of edgekd's software device and host runner, both ways: the official
commands replayed against the official replies (tests/_mlperf_official.py, written from the official
source), edgekd's host against an official-style device, and the official host sequence scoring
edgekd's device as it scores an official-style one."""

from __future__ import annotations

import json
import os
import re
import select
import time

import _mlperf_official as mo
import numpy as np
import pytest

from edgekd.harness.mlperf import ModelIO, encode_inputs
from edgekd.harness.monitor import Monitor
from edgekd.harness.runner import Device, DeviceError
from edgekd.harness.softdevice import SoftwareDevice, pty_device

STUB_IO = ModelIO((mo.N_IN,), "int8", 0.05, 0, mo.N_OUT, mo.OUT_SCALE, mo.OUT_ZERO_POINT, True)


def _stub_device() -> SoftwareDevice:
    return SoftwareDevice(mo.stub_outputs, STUB_IO, model_name="kws01")


def test_software_device_answers_every_official_command_as_the_reference():
    dev = _stub_device()
    assert re.fullmatch(mo.BOOT, dev.boot())
    assert mo.check_transcript(dev.handle, "edgekd software device") == []


class _RawPty:
    """Bytes exactly as the device writes them on its pseudo-terminal."""

    def __init__(self, name: str) -> None:
        self.fd = os.open(name, os.O_RDWR | os.O_NOCTTY)  # pty_device made it raw already
        self.buf = b""

    def until(self, end: bytes, timeout: float = 5.0) -> bytes:
        deadline = time.monotonic() + timeout
        while end not in self.buf and time.monotonic() < deadline:
            if select.select([self.fd], [], [], 0.05)[0]:
                self.buf += os.read(self.fd, 65536)
        out, _, self.buf = self.buf.partition(end)
        return out + end

    def send(self, cmd: str) -> str:
        os.write(self.fd, (cmd + "%").encode())
        return self.until(b"m-ready\r\n").decode("latin-1")


def test_software_device_on_a_pty_is_byte_identical_to_the_reference():
    with pty_device(_stub_device()) as name:
        raw = _RawPty(name)
        try:
            assert re.fullmatch(mo.BOOT, raw.until(b"m-ready\r\n").decode())
            assert mo.check_transcript(raw.send) == []
        finally:
            os.close(raw.fd)


def test_results_before_any_inference_match_the_official_runner_regex():
    reply = _stub_device().handle("results")
    line = reply.split("\r\n")[0]
    m = re.match(r"^m-results-\[([^]]+)\]$", line)
    assert m is not None and len(m.group(1).split(",")) == mo.N_OUT


# ---- edgekd's host on an official-style device ----------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_cnn():
    from edgekd.graph.sample_models import sample_models

    return sample_models(["tiny_cnn"])["tiny_cnn"]


def _official(model, name: str, energy: bool = False):
    from edgekd.harness.softdevice import TflmModelFn

    run = TflmModelFn(model)
    return run, mo.official_style_device(run, run.io, name, energy=energy)


@pytest.mark.slow
@pytest.mark.parametrize("energy", [False, True])
def test_edgekd_bench_scores_an_official_style_device(tiny_cnn, tmp_path, energy):
    """Prefix-less lines (boot, diagnostics on every load), uint8 pixels, float results; energy mode
    gives accuracy and no timings instead of failing."""
    from edgekd.harness.bench import run_bench

    run, dev = _official(tiny_cnn, "ic01", energy=energy)
    try:
        with pty_device(dev) as port:
            path, rec = run_bench(tiny_cnn, target="tflite-micro", port=port, samples=6, windows=2,
                                  window_s=0.02, output=tmp_path, quiet=True)  # fmt: skip
    finally:
        run.close()
    acc = rec["accuracy"]
    assert rec["protocol"]["input_format"] == "uint8" and rec["protocol"]["results"] == "float"
    assert acc["top1_agreement_with_host_tflm"] == 1.0 and acc["bit_exact"] is True
    assert acc["results_within_tolerance_samples"] == 6 and acc["max_abs_diff_vs_host_tflm"] <= 0.0005
    assert rec["protocol"]["non_protocol_lines"] >= 6  # one "INFO: tensor loaded" per inference
    assert json.loads(path.read_text())["accuracy"] == acc
    if energy:
        assert rec["performance"]["energy_mode"] is True and "energy monitor" in rec["performance"]["note"]
    else:
        assert rec["performance"]["inferences_per_second"] > 0


def test_an_oversized_load_is_one_clear_error_and_leaves_no_reply_queued():
    mon = Monitor(_stub_device().port, vendor="x", model_name="kws01", buffer_size=16, timestamp_us=lambda: 0)
    dev = _stub_device()
    dev.monitor = mon
    with pty_device(dev) as port, Device(port, timeout=1) as host:
        host.handshake()
        with pytest.raises(DeviceError, match="Supplied buffer size 64 exceeds maximum of 16"):
            host.load(bytes(64))
        assert [m.kind for m in host.request("name%")] == ["name"]  # its own reply, not a stale one


def test_late_diagnostics_after_a_reply_are_drained_not_read_as_the_next_reply():
    dev = _stub_device()
    handle = dev.handle
    dev.handle = lambda text: handle(text) + "late diagnostic\r\nm-ready\r\n"  # a chatty firmware
    with pty_device(dev) as port, Device(port, timeout=1) as host:
        host.handshake()
        for _ in range(3):
            time.sleep(0.05)
            assert [m.kind for m in host.request("profile%")] == ["profile", "model"]
        assert host.noise_count >= 2


# ---- the official host sequence on edgekd's device --------------------------------------------------------

TASKS = {"kws01": "kws_dscnn_like", "ic01": "ic_resnet8_like", "vww01": "tiny_cnn", "ad01": "ad_fcae_like"}


def official_host_scores(model, name: str, device_kind: str, n: int = 6) -> dict[str, object]:
    """The official host sequence on one device: the model name it reads, top-1 against the host
    TFLite Micro arg-max (classification) or the anomaly scores (AD)."""
    from edgekd.graph import run_tflm
    from edgekd.harness.softdevice import TflmModelFn

    run = TflmModelFn(model)
    io = run.io
    rng = np.random.default_rng(0)
    q = rng.integers(-128, 128, size=(n, *io.input_shape)).astype(np.int8)
    labels = np.argmax(run_tflm(model, q).reshape(n, -1), axis=1)
    fmt = {"kws01": "int8", "ad01": "float32"}.get(name, "uint8")
    wire = encode_inputs(q, None, io, fmt)
    if device_kind == "edgekd":
        dev = SoftwareDevice(run, io, model_name=name)
    else:
        dev = mo.official_style_device(run, io, name)
    try:
        with pty_device(dev) as port:
            host = mo.OfficialHost(port)
            reported, results = host.sequence(wire)
            host.close()
    finally:
        run.close()
    out: dict[str, object] = {"model": reported, "results": results}
    if name != "ad01":
        out["top1"] = float(np.mean([mo.OfficialHost.top1(r) == y for r, y in zip(results, labels)]))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TASKS))
def test_the_official_host_sequence_scores_an_edgekd_device_correctly(name):
    from edgekd.graph.sample_models import sample_models

    model = sample_models([TASKS[name]])[TASKS[name]]
    ours = official_host_scores(model, name, "edgekd")
    ref = official_host_scores(model, name, "official-style")
    assert ours["model"] == ref["model"] == name
    if name == "ad01":
        assert all(len(r) == 1 for r in ours["results"])  # one anomaly score per input
        assert np.allclose(ours["results"], ref["results"], atol=0.0015)
    else:
        assert ours["top1"] == 1.0
        assert ours["top1"] >= ref["top1"]  # the reference prints logits as is; edgekd their softmax


@pytest.mark.slow
def test_edgekd_bench_reads_dequantized_logits_of_an_official_style_device(tmp_path):
    """A classifier without a final softmax: edgekd's firmware prints the softmax, a reference firmware
    the dequantized logits; the host sees which from the first results and compares those."""
    from edgekd.graph.sample_models import sample_models
    from edgekd.harness.bench import run_bench

    model = sample_models(["mlp"])["mlp"]
    run, dev = _official(model, "ic01")
    try:
        with pty_device(dev) as port:
            _, rec = run_bench(model, target="tflite-micro", port=port, samples=6, mode="accuracy",
                               output=tmp_path, quiet=True)  # fmt: skip
    finally:
        run.close()
    acc = rec["accuracy"]
    assert rec["protocol"]["results"] == "softmax" and acc["results_format"] == "float"
    assert acc["results_within_tolerance_samples"] == 6 and acc["bit_exact"] is True
