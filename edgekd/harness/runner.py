"""Host runner: drive an MLPerf Tiny / EEMBC device over a serial port (or any pyserial URL).

Every read has a deadline, so a device that is silent, garbled, answers ``e-[...]`` or resets
mid-run gives one clear :class:`~edgekd.errors.EdgekdError` and never a hang.
"""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekd.errors import EdgekdError
from edgekd.harness import protocol as p
from edgekd.harness.mlperf import ModelIO, result_values

BAUDRATE = 115200
_MAX_LINE = 4096  # bytes; a longer line without a newline is garbage
_MAX_BOOT_LINES = 200


class DeviceError(EdgekdError):
    """The device answered ``e-[...]``, reset, or stopped answering."""


class NoTimestamps(DeviceError):
    """The device printed no ``m-lap-us`` around an inference (energy-mode firmware, or no timer)."""


@dataclass
class DeviceInfo:
    name: str = ""
    profile: str = ""
    model: str = ""
    timestamp_mode: str = ""


@dataclass
class Inference:
    """What ``infer N W%`` returned: laps in device microseconds and the results vector."""

    iterations: int
    warmup: int
    laps_us: list[int]
    results: list[float] | list[int]

    @property
    def elapsed_us(self) -> int:
        if len(self.laps_us) < 2:
            raise NoTimestamps(
                "device sent fewer than two m-lap-us timestamps around the inference; "
                "its firmware does not time inferences (th_timestamp missing?)"
            )
        p.check_laps(self.laps_us)
        return self.laps_us[-1] - self.laps_us[0]


class Device:
    """A protocol session on ``port``: a serial device (``/dev/ttyACM0``) or a pyserial URL
    (``socket://127.0.0.1:5555``, ``loop://``). Use as a context manager."""

    def __init__(self, port: str, *, timeout: float = 5.0, infer_timeout: float = 120.0,
                 baudrate: int = BAUDRATE, connect_timeout: float = 10.0) -> None:  # fmt: skip
        self.port = port
        self.timeout = timeout
        self.infer_timeout = infer_timeout
        self.baudrate = baudrate
        self.connect_timeout = connect_timeout
        self._ser: Any = None
        self._buf = bytearray()
        self.info = DeviceInfo()
        self.log: list[str] = []  # last lines received, for error messages
        self.texts: list[str] = []  # the non-protocol lines of the last reply
        self.noise: list[str] = []  # the first non-protocol lines of the session (for bench.json)
        self.noise_count = 0
        self.boot_text: list[str] = []  # the first non-protocol lines before the handshake (a boot report)

    # ---- connection ------------------------------------------------------------------------------
    def open(self) -> Device:
        import serial

        deadline = time.monotonic() + self.connect_timeout
        while True:
            try:
                self._ser = serial.serial_for_url(self.port, baudrate=self.baudrate, timeout=0.02)
                break
            except (serial.SerialException, OSError, ValueError) as e:
                # a socket:// port of an emulator that is still starting: retry until the deadline
                if not self.port.startswith("socket://") or time.monotonic() > deadline:
                    raise DeviceError(
                        f"port {self.port}: cannot open ({str(e).splitlines()[0][:120]}); check the cable "
                        "and the --port name (a device like /dev/ttyACM0 or a URL like socket://HOST:PORT)"
                    ) from None
                time.sleep(0.1)
        return self

    def close(self) -> None:
        if self._ser is not None:
            with contextlib.suppress(Exception):
                self._ser.close()
            self._ser = None

    def __enter__(self) -> Device:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- lines -----------------------------------------------------------------------------------
    def _readline(self, deadline: float) -> str | None:
        """One line (without the ending), or None at the deadline."""
        import serial

        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                raw = bytes(self._buf[:nl]).rstrip(b"\r")
                del self._buf[: nl + 1]
                text = raw.decode("ascii", "replace").replace("\ufffd", "\x00") if raw else ""
                self.log = (self.log + [text])[-5:]
                return text
            if len(self._buf) > _MAX_LINE:
                raise p.ProtocolError(
                    f"port {self.port}: device sent {len(self._buf)} bytes without a line ending "
                    "(garbage on the line; wrong baud rate?)"
                )
            if time.monotonic() > deadline:
                return None
            try:
                chunk = self._ser.read(max(1, self._ser.in_waiting or 1))
            except (serial.SerialException, OSError) as e:
                raise DeviceError(f"port {self.port}: read failed ({e}); was the device unplugged?") from None
            if chunk:
                self._buf += chunk

    def _write(self, text: str) -> None:
        import serial

        try:
            self._ser.write(text.encode("ascii"))
            self._ser.flush()
        except (serial.SerialException, OSError) as e:
            raise DeviceError(f"port {self.port}: write failed ({e}); was the device unplugged?") from None

    def _drain(self) -> None:
        """Drop what arrived after the last reply (late diagnostics), so no stale line answers the
        next command; it is kept in :attr:`noise`."""
        with contextlib.suppress(Exception):
            waiting = self._ser.in_waiting
            if waiting:
                self._buf += self._ser.read(waiting)
        if self._buf:
            for text in bytes(self._buf).decode("ascii", "replace").splitlines():
                self._note_noise(text, "after a reply")
            self._buf.clear()

    def _note_noise(self, text: str, where: str) -> None:
        if not text.strip():
            return
        self.noise_count += 1
        if len(self.noise) < 20:
            self.noise.append(f"{where}: {text[:100]}")

    def request(self, cmd: str, timeout: float | None = None) -> list[p.Message]:
        """Send one command; return its messages up to (not including) ``m-ready``. Lines that are not
        protocol (a firmware's diagnostics, the reference's prefix-less texts) are kept in
        :attr:`texts` (this reply's) and :attr:`noise`, never fatal."""
        self._drain()
        self._write(cmd)
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        out: list[p.Message] = []
        self.texts = []
        error: str | None = None
        garbled = 0
        while True:
            line = self._readline(deadline)
            if line is None and error is not None:
                break
            if line is None:
                seen = f"; last lines: {' | '.join(self.log)}" if self.log else ""
                why = (f"{garbled} garbled line(s): binary noise or a wrong baud rate?" if garbled
                       else "device silent or hung")  # fmt: skip
                raise DeviceError(
                    f"port {self.port}: no m-ready for {cmd!r} within {limit:g} s ({why}{seen})"
                )
            if not line.strip():
                continue
            try:
                msg = p.parse_line(line)
            except p.ProtocolError:
                if not line.startswith(("m-results-", "m-lap-us-")):
                    garbled += int(not line.isascii() or any(ord(c) < 32 for c in line))
                    self.texts.append(line)
                    self._note_noise(line, cmd)
                    continue
                raise
            if msg.kind == "ready" and error is None:
                return out
            if msg.kind == "ready":
                break
            if msg.kind == "error":  # read on to its m-ready, so the next command starts clean
                error = f"port {self.port}: device error for {cmd!r}: e-[{msg.value}]"
                deadline = min(deadline, time.monotonic() + 1.0)
                continue
            if msg.kind in ("init_done", "timestamp_mode"):
                raise DeviceError(
                    f"port {self.port}: device reset while answering {cmd!r} ({msg.raw}); "
                    "check its power supply / watchdog, or a model too big for its RAM"
                )
            out.append(msg)
        raise DeviceError(error)

    # ---- protocol commands -----------------------------------------------------------------------
    def handshake(self) -> DeviceInfo:
        """Wait for the device (boot text is skipped) and read its name and profile."""
        deadline = time.monotonic() + self.connect_timeout
        # drain the boot banner: lines until a quiet moment
        for _ in range(_MAX_BOOT_LINES):
            line = self._readline(min(deadline, time.monotonic() + 0.3))
            if line is None:
                break
            try:
                msg = p.parse_line(line)
            except p.ProtocolError:
                if line.strip() and len(self.boot_text) < 20:
                    self.boot_text.append(line[:200])
                continue
            if msg.kind == "timestamp_mode":
                self.info.timestamp_mode = str(msg.value)
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                msgs = self.request(p.command("name"), timeout=min(2.0, self.timeout))
                break
            except DeviceError as e:
                if "device error" in str(e):
                    raise
                last = e
        else:
            raise DeviceError(
                f"port {self.port}: the device does not answer 'name%' within {self.connect_timeout:g} s"
                f" ({last}); is it running MLPerf Tiny / EEMBC firmware?"
            )
        self.info.name = next((str(m.value) for m in msgs if m.kind == "name"), "")
        with contextlib.suppress(DeviceError):
            for m in self.request(p.command("profile")):
                if m.kind in ("profile", "model"):
                    setattr(self.info, m.kind, str(m.value))
        return self.info

    def load(self, data: bytes) -> None:
        """``db load N`` + ``db HEX`` lines; checks the device's byte count."""
        lines = p.db_lines(data)
        msgs = self.request(lines[0])
        exp = next((m.value for m in msgs if m.kind == "expecting"), None)
        if exp != len(data):
            said = (msgs[0].raw if msgs else " | ".join(self.texts)) or "nothing"
            raise DeviceError(
                f"port {self.port}: device answered {said[:100]!r} to {lines[0]!r} (expected m-[Expecting "
                f"{len(data)} bytes]); its input buffer is smaller than this model's input in the "
                "--input-format sent (uint8 / int8: 1 byte per value, float32: 4)"
            )
        done = False
        for ln in lines[1:]:
            done = any(m.kind == "load_done" for m in self.request(ln)) or done
        if not done:
            raise DeviceError(f"port {self.port}: device never sent m-load-done after {len(data)} bytes")

    def load_sample(self, index: int) -> None:
        """``db sample K``: an edgekd firmware with the accuracy samples in its image copies sample K
        into its buffer (no transfer over the UART)."""
        if not any(m.kind == "load_done" for m in self.request(p.command("db", "sample", index))):
            raise DeviceError(f"port {self.port}: no m-load-done for 'db sample {index}%'")

    def infer(self, iterations: int = 1, warmup: int = 0) -> Inference:
        msgs = self.request(p.command("infer", iterations, warmup), timeout=self.infer_timeout)
        if not any(m.kind == "infer_done" for m in msgs):
            raise DeviceError(f"port {self.port}: no m-infer-done for 'infer {iterations} {warmup}%'")
        laps = [int(m.value) for m in msgs if m.kind == "lap_us"]  # type: ignore[arg-type]
        results = next((m.value for m in msgs if m.kind == "results"), None)
        if results is None:
            results = next((m.value for m in self.request(p.command("results")) if m.kind == "results"), [])
        return Inference(iterations, warmup, laps, list(results))  # type: ignore[arg-type]


# ---- modes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """How the device prints its results (:mod:`edgekd.harness.mlperf`), so the host can compute the
    same values from its own TFLite Micro outputs. ``raw``: int8 values, compared byte for byte;
    ``float`` / ``softmax``: printed ``%.3f``, compared within :attr:`tolerance` (rounding to 3
    decimals, and for softmax a last-bit difference of ``expf``)."""

    io: ModelIO
    model_name: str
    results: str

    def values(self, out_q: np.ndarray, x_float: np.ndarray | None) -> np.ndarray:
        return np.asarray(result_values(out_q, x_float, self.io, self.model_name, self.results), np.float64)

    @property
    def tolerance(self) -> float:
        return 0.0 if self.results == "raw" else (0.0005 + 1e-6 if self.results == "float" else 0.0015)

    def as_seen(self, got: np.ndarray) -> Expected:
        """For a classifier without a final softmax, ``float`` and ``softmax`` depend on the firmware
        (edgekd prints the softmax, a reference firmware the dequantized logits): the one the device's
        first results show (probabilities sum to 1)."""
        if self.results == "raw" or self.io.ends_in_softmax or self.model_name == "ad01" or got.size < 2:
            return self
        probs = bool(
            np.all((got >= 0) & (got <= 1)) and abs(float(got.sum()) - 1.0) <= 0.001 * got.size + 0.002
        )
        return dataclasses.replace(self, results="softmax" if probs else "float")

    @property
    def recoverable(self) -> bool:
        """Dequantized values printed to 3 decimals still name the int8 value (scale > 0.001)."""
        one_score = self.model_name == "ad01" and self.results == "float"
        return self.results == "float" and not one_score and self.io.output_scale > 0.001


@dataclass
class AccuracyResult:
    samples: int = 0
    correct: int = 0
    labelled: int = 0
    bytes_equal: int = 0
    comparable: bool = True  # the device's values name its int8 outputs (raw, or recoverable floats)
    within_tolerance: int = 0
    top1_agree: int = 0
    max_abs_diff: float = 0.0
    tolerance: float = 0.0
    first_mismatch: int | None = None
    results_format: str = "raw"  # what the device printed (float / softmax / raw)
    seconds: float = 0.0  # wall time of the accuracy run (load, infer, results per sample)
    outputs: list[list[float]] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, Any]:
        n = max(self.samples, 1)
        return {
            "samples": self.samples,
            "top1_accuracy": (self.correct / self.labelled) if self.labelled else None,
            "labelled_samples": self.labelled,
            "bytes_equal_samples": self.bytes_equal if self.comparable else None,
            "bit_exact": (self.bytes_equal == self.samples and self.samples > 0) if self.comparable else None,
            "results_within_tolerance_samples": self.within_tolerance,
            "results_tolerance": self.tolerance,
            "top1_agreement_with_host_tflm": self.top1_agree / n,
            "max_abs_diff_vs_host_tflm": self.max_abs_diff,
            "first_mismatch_sample": self.first_mismatch,
            "results_format": self.results_format,
            "seconds": self.seconds,
            "seconds_per_sample": self.seconds / n,
        }


def _int8_of(got: np.ndarray, ex: Expected | None, is_int: bool) -> np.ndarray | None:
    """The device's int8 outputs: as printed (raw) or recovered from dequantized floats."""
    if is_int:
        return got.astype(np.int64)
    if ex is not None and ex.recoverable:
        return np.rint(got / ex.io.output_scale).astype(np.int64) + ex.io.output_zero_point
    return None


def run_accuracy(dev: Device, x: np.ndarray, host_out: np.ndarray, labels: np.ndarray | None,
                 progress: Callable[[int], None] | None = None, *, expected: Expected | None = None,
                 x_float: np.ndarray | None = None, preloaded: bool = False) -> AccuracyResult:  # fmt: skip
    """Each sample loaded and inferred once: top-1, and agreement with the host TFLite Micro outputs.

    ``x`` holds each sample's bytes as sent (the ``--input-format`` encoding), ``host_out`` the host
    TFLite Micro int8 outputs, ``x_float`` the float inputs (the AD score), ``expected`` how the device
    prints results (None: raw int8). ``preloaded``: the samples are in the firmware image
    (``db sample K``)."""
    res = AccuracyResult(tolerance=expected.tolerance if expected else 0.0)
    t0 = time.monotonic()
    for i in range(len(x)):
        dev.load_sample(i) if preloaded else dev.load(np.ascontiguousarray(x[i]).tobytes())
        inf = dev.infer(1, 0)
        if i == 0 and expected is not None:
            expected = expected.as_seen(np.asarray(inf.results, dtype=np.float64))
            res.results_format, res.tolerance = expected.results, expected.tolerance
        q_ref = np.asarray(host_out[i]).reshape(-1)
        xf = None if x_float is None else np.asarray(x_float[i]).reshape(-1)
        is_int = all(isinstance(v, int) for v in inf.results)
        ref = q_ref.astype(np.float64) if expected is None or is_int else expected.values(q_ref, xf)
        got = np.asarray(inf.results, dtype=np.float64).reshape(-1)
        if got.size != ref.size:
            raise DeviceError(
                f"port {dev.port}: sample {i}: device returned {got.size} results, {ref.size} expected from "
                "the model (an AD device returns one score); is the device running this model?"
            )
        _compare(res, i, got, ref, q_ref, _int8_of(got, expected, is_int))
        if labels is not None and got.size > 1:
            res.labelled += 1
            res.correct += int(np.argmax(got) == int(labels[i]))
        res.outputs.append(got.tolist())
        if progress is not None:
            progress(i + 1)
    res.seconds = time.monotonic() - t0
    return res


def _compare(res: AccuracyResult, i: int, got: np.ndarray, ref: np.ndarray, q_ref: np.ndarray,
             q_got: np.ndarray | None) -> None:  # fmt: skip
    diff = float(np.max(np.abs(got - ref))) if got.size else 0.0
    res.max_abs_diff = max(res.max_abs_diff, diff)
    ok = diff <= res.tolerance
    res.within_tolerance += int(ok)
    if q_got is None:
        res.comparable = False
    else:
        equal = q_got.shape == q_ref.shape and np.array_equal(q_got, q_ref.astype(np.int64))
        res.bytes_equal += int(equal)
        ok = ok and equal
    if not ok and res.first_mismatch is None:
        res.first_mismatch = i
    res.top1_agree += int(np.argmax(got) == np.argmax(ref)) if got.size > 1 else int(ok)
    res.samples += 1


def run_performance(dev: Device, sample: bytes, *, windows: int = 5, warmup: int = 1,
                    window_s: float = 0.5, max_iterations: int = 100_000) -> dict[str, Any]:  # fmt: skip
    """Warm-up, then ``windows`` timed windows of N inferences (N sized so a window lasts about
    ``window_s`` device seconds); the median inferences per second over the windows."""
    dev.load(sample)
    probe = dev.infer(1, warmup)
    one_us = max(probe.elapsed_us, 1)
    n = int(min(max_iterations, max(1, round(window_s * 1e6 / one_us))))
    ips: list[float] = []
    us: list[float] = []
    for _ in range(windows):
        inf = dev.infer(n, 0)
        elapsed = max(inf.elapsed_us, 1)
        ips.append(n * 1e6 / elapsed)
        us.append(elapsed / n)
    return {
        "iterations_per_window": n,
        "windows": windows,
        "warmup": warmup,
        "inferences_per_second": statistics.median(ips),
        "us_per_inference": statistics.median(us),
        "window_inferences_per_second": ips,
    }
