"""The C firmware (edgekd/harness/firmware/ee_main.c) against MLPerf Tiny's reference replies.

ee_main.c is built for the host (board_host.c: stdin / stdout) around the stand-in model of
``tests/_mlperf_official.py`` and driven one command at a time over pipes; each reply (up to its
``m-ready``) is compared with the official transcript, byte for byte. Other builds (``EE_*`` defines)
check the input encodings and the results against :mod:`edgekd.harness.mlperf`, the host's side.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from _mlperf_official import BOOT, N_IN, N_OUT, OUT_SCALE, OUT_ZERO_POINT, STUB_MODEL_C, check_transcript

from edgekd.export.c_backend.codegen import model_header
from edgekd.export.c_backend.host import gcc
from edgekd.harness import mlperf
from edgekd.harness.qemu import FIRMWARE_DIR

pytestmark = pytest.mark.skipif(gcc() is None, reason="no host gcc")

READY = b"m-ready\r\n"
RESULTS_RE = r"^m-results-\[([^]]+)\]$"  # the official runner's (benchmark/runner/device_under_test.py)


def build_host(d: Path, *, n_in: int = N_IN, n_out: int = N_OUT, out_scale: float = OUT_SCALE,
               out_zp: int = OUT_ZERO_POINT, in_scale: float = 0.0, in_zp: int = 0, in_unsigned: bool = False,
               defines: tuple[str, ...] = ()) -> Path:  # fmt: skip
    """ee_main.c + board_host.c + the stand-in model, warnings as errors."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "edgekd_model.h").write_text(model_header("stub", n_in, n_out, 0, out_scale, out_zp, in_scale=in_scale,
                                                   in_zp=in_zp, in_unsigned=in_unsigned))  # fmt: skip
    (d / "stub_model.c").write_text(STUB_MODEL_C)
    exe = d / "fw"
    cmd = [gcc(), "-std=c99", "-O1", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off", f"-I{d}",
           f"-I{FIRMWARE_DIR}", *defines, "-o", str(exe), str(FIRMWARE_DIR / "ee_main.c"),
           str(FIRMWARE_DIR / "board_host.c"), str(d / "stub_model.c"), "-lm"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return exe


class HostDevice:
    """The host build on pipes: ``boot`` is what it printed first, ``send(cmd)`` one command's reply."""

    def __init__(self, exe: Path) -> None:
        self.proc = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.boot = self._until_ready()

    def _until_ready(self, timeout: float = 5.0) -> str:
        buf = b""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while not buf.endswith(READY):
            left = deadline - time.monotonic()
            r, _, _ = select.select([fd], [], [], max(left, 0))
            assert r, f"no m-ready within {timeout} s; got {buf[-200:]!r}"
            chunk = os.read(fd, 65536)
            assert chunk, f"firmware exited; got {buf[-200:]!r}"
            buf += chunk
        return buf.decode("latin-1")

    def send(self, cmd: str) -> str:
        self.proc.stdin.write(cmd.encode("ascii") + b"%")
        self.proc.stdin.flush()
        return self._until_ready()

    def load(self, data: bytes) -> None:
        assert self.send(f"db load {len(data)}") == f"m-[Expecting {len(data)} bytes]\r\nm-ready\r\n"
        hexs = data.hex()
        for i in range(0, len(hexs), 76):
            reply = self.send("db " + hexs[i : i + 76])
        assert reply == "m-load-done\r\nm-ready\r\n"

    def results(self, cmd: str = "infer 1 0") -> list[str]:
        last = self.send(cmd).splitlines()[-2]
        m = re.match(RESULTS_RE, last)
        assert m, last
        return m.group(1).split(",")

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=5)


@pytest.fixture
def device(tmp_path):
    devices: list[HostDevice] = []

    def start(**build) -> HostDevice:
        dev = HostDevice(build_host(tmp_path / f"b{len(devices)}", **build))
        devices.append(dev)
        return dev

    yield start
    for dev in devices:
        dev.close()


def _kws(**extra) -> dict:
    return {"defines": ('-DEE_MODEL_NAME="kws01"', "-DEE_INPUT_FORMAT=int8", "-DEE_RESULTS=float",
                        '-DEE_VENDOR="edgekd test"'), **extra}  # fmt: skip


def test_boot_banner_and_results_before_any_inference(device):
    dev = device(**_kws())
    assert re.fullmatch(BOOT, dev.boot), dev.boot
    reply = dev.send("results")
    assert re.match(RESULTS_RE, reply.splitlines()[0]) and reply.endswith("\r\nm-ready\r\n")


def test_official_transcript_byte_for_byte(device):
    dev = device(**_kws())
    assert check_transcript(dev.send) == []
    assert dev.send("name") == "m-name-dut-[edgekd test]\r\nm-ready\r\n"


def test_short_input_is_reported_and_the_previous_tensor_kept(device):
    dev = device(**_kws())
    full = bytes(range(N_IN))
    dev.load(full)
    before = dev.results()
    assert dev.send("db load 10") == "m-[Expecting 10 bytes]\r\nm-ready\r\n"
    assert dev.send("db ff") == "m-ready\r\n"  # 1 of 10 bytes
    reply = dev.send("infer 1 0")
    assert reply.startswith(f"Input db has 1 bytes, expected {N_IN}\r\nm-warmup-start-0\r\n")
    assert dev.results() == before


def _stub_out(q: np.ndarray, n_out: int) -> np.ndarray:
    """The stand-in model on int8 input bytes: out[i] = int8(in[i % n] + i)."""
    x = q.view(np.int8).astype(np.int64)
    return ((x[np.arange(n_out) % len(x)] + np.arange(n_out) + 128) % 256 - 128).astype(np.int8)


def test_softmax_results_agree_with_the_host(device):
    io = mlperf.ModelIO((N_IN,), "int8", 0.1, 0, N_OUT, 0.3, 5, False)
    dev = device(out_scale=io.output_scale, out_zp=io.output_zero_point,
                 defines=('-DEE_MODEL_NAME="ic01"', "-DEE_INPUT_FORMAT=int8", "-DEE_RESULTS=softmax"))  # fmt: skip
    rng = np.random.default_rng(0)
    for _ in range(5):
        q = rng.integers(-128, 128, N_IN).astype(np.int8)
        dev.load(q.tobytes())
        want = mlperf.result_values(_stub_out(q, N_OUT), None, io, "ic01", "softmax")
        got = [float(v) for v in dev.results()]
        np.testing.assert_allclose(got, want, atol=0.0015)


@pytest.mark.parametrize("fmt", ["float32", "int8"])
def test_ad_anomaly_score_agrees_with_the_host(device, fmt):
    n = 64  # a reconstruction: as many outputs as inputs
    io = mlperf.ModelIO((n,), "int8", 0.05, 3, n, 0.07, -5, False)
    dev = device(n_in=n, n_out=n, in_scale=io.input_scale, in_zp=io.input_zero_point, out_scale=io.output_scale,
                 out_zp=io.output_zero_point, defines=('-DEE_MODEL_NAME="ad01"', f"-DEE_INPUT_FORMAT={fmt}",
                                                       "-DEE_RESULTS=float"))  # fmt: skip
    rng = np.random.default_rng(1)
    for _ in range(5):
        xf = rng.normal(0, 3, n).astype(np.float32)
        q0 = mlperf.quantize(xf, io.input_scale, io.input_zero_point, np.int8)
        wire = mlperf.encode_inputs(q0[None], xf[None], io, fmt)[0].tobytes()
        q, x_float = mlperf.decode_input(wire, io, fmt)
        dev.load(wire)
        got = dev.results()
        want = mlperf.result_values(_stub_out(q, n), x_float, io, "ad01", "float")
        assert len(got) == 1 and abs(float(got[0]) - want[0]) <= 0.0015, (got, want)


@pytest.mark.parametrize(("fmt", "dtype"), [("uint8", "int8"), ("uint8", "uint8"), ("float32", "int8"),
                                            ("float32", "uint8")])  # fmt: skip
def test_input_decoding_matches_the_host(device, fmt, dtype):
    """Raw results of a 64-output stand-in give back the decoded model input: out[i] - i."""
    n = 64
    io = mlperf.ModelIO((n,), dtype, 0.02, -7 if dtype == "int8" else 120, n, 1.0, 0, False)
    dev = device(n_in=n, n_out=n, in_scale=io.input_scale, in_zp=io.input_zero_point,
                 in_unsigned=dtype == "uint8",
                 defines=('-DEE_MODEL_NAME="vww01"', f"-DEE_INPUT_FORMAT={fmt}", "-DEE_RESULTS=raw"))  # fmt: skip
    rng = np.random.default_rng(2)
    if fmt == "uint8":
        wire = rng.integers(0, 256, n).astype(np.uint8).tobytes()
    else:  # around the clamps, halves (round away from zero) included
        x = np.concatenate([rng.normal(0, 4, n - 8), [0.01, -0.01, 0.03, -0.03, 1e9, -1e9, 2.55, -2.57]])
        wire = x.astype("<f4").tobytes()
    q, _ = mlperf.decode_input(wire, io, fmt)
    dev.load(wire)
    got = [int(v) for v in dev.results()]
    assert got == [int(v) for v in _stub_out(q.view(np.uint8), n)]


@pytest.mark.parametrize(("scale", "zp"), [(1e-4, 0), (0.0123, 17), (1 / 3, -128), (1.7e6, 3), (3e36, 0)])
def test_float_results_print_as_printf_percent_3f(device, scale, zp):
    """Dequantized outputs over the whole int8 range: tiny negatives (-0.000), rounding, integers past
    2^24 and float32 overflow (inf), as Python's format (= glibc's printf)."""
    dev = device(n_in=64, n_out=64, out_scale=scale, out_zp=zp)
    io = mlperf.ModelIO((64,), "int8", 1.0, 0, 64, scale, zp, False)
    for start in range(0, 256, 64):
        q = ((np.arange(64) + start) % 256 - 128).astype(np.int8)
        q_in = ((q.astype(np.int64) - np.arange(64) + 128) % 256 - 128).astype(np.int8)  # out = q
        dev.load(q_in.tobytes())
        with np.errstate(over="ignore"):  # 3e36 * 255 is inf in float32, on both sides
            want = mlperf.format_results(mlperf.result_values(q, None, io, "ic01", "float"))
        assert "m-results-[" + ",".join(dev.results()) + "]" == want
