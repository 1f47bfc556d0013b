"""The MLPerf Tiny reference device's replies, written down from the official source (mlcommons/tiny,
``benchmark/api/internally_implemented.cpp`` and ``.h``, monitor 2.2.0, and the reference submissions'
``submitter_implemented.cpp``), not from edgekd's code: the conformance tests replay these commands on
every edgekd device and compare every reply, byte for byte (timestamps by pattern).

The device under test runs a stand-in model (:func:`stub_outputs`, also written in C for the firmware)
with a 64-byte int8 input, 10 int8 outputs (scale 1/256, zero point -128, as a softmax output), the
``kws01`` name (int8 input, as the KWS reference) and dequantized float results.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

N_IN = 64  # bytes of the stand-in model's input (= the device's db buffer)
N_OUT = 10
OUT_SCALE = 1 / 256
OUT_ZERO_POINT = -128
FW_VERSION = "ULPMark for tinyML Firmware V0.0.1"  # EE_FW_VERSION

# ee_profile_parse's "help" branch: th_printf("%s\r\n", EE_FW_VERSION), an empty line, then these
HELP = (
    f"{FW_VERSION}\r\n\r\n"
    "help         : Print this information\r\n"
    "name         : Print the name of the device\r\n"
    "timestsamp   : Generate a timetsamp\r\n"
    "db SUBCMD    : Manipulate a generic byte buffer\r\n"
    "  load N     : Allocate N bytes and set load counter\r\n"
    "  db HH[HH]* : Load 8-bit hex byte(s) until N bytes\r\n"
    "  print [N=16] [offset=0]\r\n"
    "             : Print N bytes at offset as hex\r\n"
    "infer N [W=0]: Load input, execute N inferences after W warmup loops\r\n"
    "results      : Return the result fp32 vector\r\n"
)

STUB_MODEL_C = """#include "edgekd_model.h"
static int8_t in_[EDGEKD_INPUT_SIZE], out_[EDGEKD_OUTPUT_SIZE];
int8_t *edgekd_input(void) { return in_; }
const int8_t *edgekd_output(void) { return out_; }
void edgekd_invoke(void) {
    for (int i = 0; i < EDGEKD_OUTPUT_SIZE; ++i) out_[i] = (int8_t)(in_[i % EDGEKD_INPUT_SIZE] + i);
}
"""


def stub_outputs(data: bytes) -> list[int]:
    """The stand-in model (as :data:`STUB_MODEL_C`): output i = int8(input[i % 64] + i)."""
    x = [b - 256 if b > 127 else b for b in data]
    return [((x[i % len(x)] + i + 128) % 256) - 128 for i in range(N_OUT)]


def results_line(data: bytes) -> str:
    """th_results of the reference submissions: the dequantized outputs, ``%.3f``, joined by ``,``."""
    vals = [OUT_SCALE * (q - OUT_ZERO_POINT) for q in stub_outputs(data)]
    return "m-results-[" + ",".join(f"{v:.3f}" for v in vals) + "]\r\n"


LAP = r"m-lap-us-\d+\r\n"
READY = "m-ready\r\n"


def lit(text: str) -> str:
    return re.escape(text)


def infer_reply(n: int, w: int, data: bytes) -> str:
    """ee_infer: warm-up lines, a timestamp either side of the N inferences, m-infer-done, results."""
    return (
        lit(f"m-warmup-start-{w}\r\nm-warmup-done\r\nm-infer-start-{n}\r\n")
        + LAP
        + LAP
        + lit("m-infer-done\r\n" + results_line(data))
    )


def transcript(vendor: str = r"[^\]\r\n]+") -> list[tuple[str, str]]:
    """(command without ``%``, regex of the whole reply up to and including ``m-ready``)."""
    full = bytes((7 * i + 3) % 256 for i in range(N_IN))
    hexs = full.hex()
    steps: list[tuple[str, str]] = [
        ("name", rf"m-name-dut-\[{vendor}\]\r\n"),
        ("name with extra words", rf"m-name-dut-\[{vendor}\]\r\n"),  # strtok: the first word only
        ("   name", rf"m-name-dut-\[{vendor}\]\r\n"),
        ("profile", lit(f"m-profile-[{FW_VERSION}]\r\nm-model-[kws01]\r\n")),
        ("help", lit(HELP)),
        ("timestamp", LAP),
        ("bogus", lit("e-[Unknown command: bogus]\r\n")),
        ("db", lit("e-[Command 'db' requires a subcommand]\r\n")),
        ("db load", lit("e-[Command 'db load' requires the # of bytes]\r\n")),
        ("db load 0", lit("e-[Command 'db load' must be >0 bytes]\r\n")),
        ("db load x", lit("e-[Command 'db load' must be >0 bytes]\r\n")),  # atoi("x") == 0
        (f"db load {N_IN + 1}", lit(f"Supplied buffer size {N_IN + 1} exceeds maximum of {N_IN}\n")),
        ("db load 10", lit("m-[Expecting 10 bytes]\r\n")),
        ("db 0a0b0", lit("e-[Insufficent number of hex digits]\r\n")),
        ("db 0a0g", lit("e-[Invalid hex digit '0g']\r\n")),  # 0a is written before the bad pair
        ("db 0b0c0d0e", ""),
        ("db print", lit("m-buffer-0a-0b-0c-0d-0e-00-00-00\r\nm-buffer-00-00\r\n\r\n")),
        ("db 0f10111213141516", lit("m-load-done\r\n")),  # the rest of the line is disregarded
        ("db 1718", ""),  # after m-load-done: nothing printed
        ("db print", lit("m-buffer-0a-0b-0c-0d-0e-0f-10-11\r\nm-buffer-12-13\r\n\r\n")),
        ("db load 4", lit("m-[Expecting 4 bytes]\r\n")),  # a new load keeps the old bytes
        ("db print", lit("m-buffer-0a-0b-0c-0d\r\n\r\n")),
        (f"db load {N_IN}", lit(f"m-[Expecting {N_IN} bytes]\r\n")),
        # 80 characters are one command (EE_CMD_SIZE); beyond that the reference keeps the first 80
        ("db  " + hexs[:76], ""),  # 80 characters: 38 bytes
        ("db " + hexs[76:] + "0" * 80, lit("e-[Insufficent number of hex digits]\r\n")),  # cut to 77 digits
        ("db " + hexs[76:], lit("m-load-done\r\n")),
        (
            "db print",
            lit(
                "".join(
                    "m-buffer-" + "-".join(f"{b:02x}" for b in full[i : i + 8]) + "\r\n"
                    for i in range(0, N_IN, 8)
                )
            ),
        ),  # fmt: skip
        ("infer 0", lit("e-[Inference iterations must be >0]\r\n")),
        ("infer x", lit("e-[Inference iterations must be >0]\r\n")),
        ("infer 2 -1", lit("e-[Inference warmup must be >=0]\r\n")),
        ("infer", infer_reply(1, 10, full)),  # defaults: N=1, W=10
        ("infer 3", infer_reply(3, 10, full)),
        ("infer 2 0", infer_reply(2, 0, full)),
        ("infer 2 x", infer_reply(2, 0, full)),  # atoi("x") == 0 warm-ups
        ("results", lit(results_line(full))),
    ]
    return [(cmd, reply + lit(READY)) for cmd, reply in steps]


BOOT = r"m-timestamp-mode-performance\r\n" + LAP + r"m-init-done\r\nm-ready\r\n"


def check_transcript(send, vendor: str = r"[^\]\r\n]+") -> list[str]:
    """Replay :func:`transcript` through ``send(command) -> reply text``; the mismatches, as
    ``command: expected ... got ...`` (empty when the device conforms)."""
    bad = []
    for cmd, pattern in transcript(vendor):
        got = send(cmd)
        if re.fullmatch(pattern, got, flags=re.S) is None:
            bad.append(f"{cmd[:30]!r}: expected /{pattern[:120]}/ got {got[:160]!r}")
    return bad


# ---- an official-style device and the official host sequence -----------------------------------------


class ReferencePort:
    """The submitter half as the reference submissions write it (``submitter_implemented.cpp`` of the
    IC / VWW / KWS / AD references): IC and VWW take uint8 pixels and subtract 128, KWS takes int8, AD
    takes float32 and quantizes with ``round(x / scale) + zero_point``; results are the dequantized
    outputs ``%.3f`` (AD: the mean squared error against the float input); diagnostics are printed
    without a prefix."""

    def __init__(self, run, io, model_name: str) -> None:
        import numpy as np

        self.np, self.run, self.io, self.name = np, run, io, model_name
        self.q = np.zeros(io.input_elements, dtype=np.int8)
        self.xf = np.zeros(io.input_elements, dtype=np.float32)
        self.out = np.zeros(io.output_size, dtype=np.int64)

    def load_tensor(self, data: bytes) -> str:
        np, io = self.np, self.io
        if self.name == "ad01":
            self.xf = np.frombuffer(data, dtype="<f4").astype(np.float32)
            v = self.xf / np.float32(io.input_scale)
            r = np.where(v >= 0, np.floor(v + 0.5), np.ceil(v - 0.5))  # C round(): halves away from zero
            self.q = np.clip(r + io.input_zero_point, -128, 127).astype(np.int8)
        elif self.name in ("ic01", "vww01"):
            self.q = (np.frombuffer(data, dtype=np.uint8).astype(np.int16) - 128).astype(np.int8)
        else:
            self.q = np.frombuffer(data, dtype=np.int8).copy()
        return "INFO: tensor loaded\r\n"  # a reference firmware's own diagnostics

    def infer(self) -> None:
        self.out = self.np.asarray(self.run(self.q.tobytes()))

    def results(self) -> str:
        np, io = self.np, self.io
        deq = np.float32(io.output_scale) * (self.out.astype(np.float32) - np.float32(io.output_zero_point))
        if self.name == "ad01":
            diffsum = np.float32(0)
            for d in deq - self.xf:
                diffsum = np.float32(diffsum + d * d)
            return f"m-results-[{float(diffsum / np.float32(deq.size)):0.3f}]\r\n"
        return "m-results-[" + ",".join(f"{float(v):.3f}" for v in deq) + "]\r\n"


def official_style_device(run, io, model_name: str, energy: bool = False):
    """A SoftwareDevice-shaped object (``boot`` / ``handle`` / ``serve``) that answers as a reference
    submission: the reference monitor around :class:`ReferencePort`, vendor ``unspecified``, an
    ``Initialized`` line at boot (the AD reference prints one), optionally in energy mode."""
    import time

    from edgekd.harness.monitor import Monitor
    from edgekd.harness.softdevice import SoftwareDevice

    dev = SoftwareDevice(run, io, model_name=model_name)
    t0 = time.monotonic()
    nbytes = io.input_elements * (4 if model_name == "ad01" else 1)
    dev.monitor = Monitor(ReferencePort(run, io, model_name), vendor="unspecified", model_name=model_name,
                          buffer_size=max(96 * 96 * 3, nbytes), energy=energy,
                          timestamp_us=lambda: int((time.monotonic() - t0) * 1e6))  # fmt: skip
    boot = dev.monitor.boot
    dev.monitor.boot = lambda: "Initialized\r\n" + boot()
    return dev


class OfficialHost:
    """The official runner's host sequence (``benchmark/runner/device_under_test.py`` and the scoring
    of ``main.py``): ``name``, ``profile``, ``db load N`` then ``db`` lines of 31 bytes, ``infer 1 0``,
    the ``m-results-[...]`` regex; top-1 after dividing multi-value results by their sum."""

    MAX_BYTES = 31

    def __init__(self, port: str, timeout: float = 10.0) -> None:
        import serial

        self.ser = serial.serial_for_url(port, baudrate=115200, timeout=timeout)
        self.timeout = timeout

    def close(self) -> None:
        self.ser.close()

    def send_command(self, cmd: str) -> list[str]:
        """SerialDevice.send_command: write, then read lines until ``m-ready``."""
        import time

        self.ser.write((cmd + "%").encode())
        lines, deadline = [], time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            line = self.ser.readline().decode(errors="replace").strip()
            if line == "m-ready":
                return lines
            if line:
                lines.append(line)
        raise TimeoutError(f"no m-ready for {cmd!r}; got {lines[-3:]}")

    def model(self) -> str | None:
        for ln in self.send_command("profile"):
            m = re.match(r"^m-(model|profile)-\[([^]]+)]$", ln)
            if m and m.group(1) == "model":
                return m.group(2)
        return None

    def load(self, data: bytes) -> None:
        self.send_command(f"db load {len(data)}")
        for i in range(0, len(data), self.MAX_BYTES):
            self.send_command(f"db {''.join(f'{d:02x}' for d in data[i : i + self.MAX_BYTES])}")

    def infer(self) -> list[float]:
        for ln in self.send_command("infer 1 0"):
            m = re.match(r"^m-results-\[([^]]+)\]$", ln)
            if m:
                return [float(x) for x in m.group(1).split(",") if x.strip()]
        return []

    def sequence(self, wire) -> tuple[str | None, list[list[float]]]:
        """The runner's accuracy loop: the model name, then each sample (wire bytes) loaded and inferred."""
        self.drain_boot()
        reported = self.model()
        results = []
        for sample in wire:
            self.load(sample.tobytes())
            results.append(self.infer())
        return reported, results

    @staticmethod
    def top1(results: list[float]) -> int:
        """main.py: multi-value results are divided by their sum before the arg-max."""
        total = sum(results)
        if total == 0:  # the runner divides by zero here
            return -1
        return max(range(len(results)), key=lambda i: results[i] / total)

    def drain_boot(self) -> None:
        import time

        time.sleep(0.3)
        self.ser.reset_input_buffer()


@contextlib.contextmanager
def on_pty(exe) -> Iterator[str]:
    """Run a host firmware build (stdin / stdout) behind a pseudo-terminal; yields the port name."""
    import os
    import subprocess
    import time
    import tty

    master, slave = os.openpty()
    tty.setraw(slave)
    proc = subprocess.Popen([str(exe)], stdin=master, stdout=master, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.2)
        yield os.ttyname(slave)
    finally:
        proc.kill()
        proc.wait()
        os.close(master)
        os.close(slave)
