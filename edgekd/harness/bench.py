"""``edgekd bench``: pick the model and inputs, connect a device (a port, the emulated Cortex-M4, or
the software device), run accuracy and performance modes, write ``bench/<target>/bench.json``."""

from __future__ import annotations

import contextlib
import dataclasses
import platform
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekd.atomic import atomic_write_json
from edgekd.errors import EdgekdError
from edgekd.files import file_sha256
from edgekd.harness.mlperf import (
    ModelIO,
    WireSettings,
    encode_inputs,
)
from edgekd.harness.runner import Device, Expected, NoTimestamps, run_accuracy, run_performance
from edgekd.provenance import provenance

if TYPE_CHECKING:
    from edgekd.harness.qemu import Firmware

BENCH_VERSION = 2  # 2: the provenance header (edgekd.provenance) instead of "edgekd_bench": 1
MODES = ("accuracy", "performance", "all")
MAX_INPUT_BYTES = 256 << 20  # all benchmark samples together (a microcontroller model takes KiBs each)


def find_model(source: str | Path, target: str) -> tuple[Path, Path | None]:
    """(model_int8.tflite, run folder or None) for a run folder or a ``.tflite`` file."""
    src = Path(source)
    if src.is_dir():
        exp = src / "export"
        for cand in (exp / target / "model_int8.tflite", exp / "tflite-micro" / "model_int8.tflite"):
            if cand.is_file():
                return cand, src
        found = sorted(exp.glob("*/model_int8.tflite")) if exp.is_dir() else []
        if found:
            return found[0], src
        raise EdgekdError(
            f"{src}: no export/*/model_int8.tflite in this run folder; run "
            f"`edgekd export {src} --target {target}` first"
        )
    if not src.exists():
        raise EdgekdError(f"{src}: not found; pass a run folder or an int8 .tflite model")
    if src.suffix.lower() != ".tflite":
        raise EdgekdError(f"{src}: not a .tflite model or a run folder")
    return src, None


def _quantize(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Float samples -> the model's input dtype with TFLite Micro's rule (:func:`edgekd.graph.quant.quantize`)."""
    from edgekd.graph.quant import quantize

    dt = np.dtype(detail["dtype"])
    if x.dtype == dt:
        return x
    return quantize(x, float(detail["scale"]), int(detail["zero_point"]), dt)


def bench_inputs(model_path: Path, run: Path | None, data: str | None, samples: int, seed: int = 0
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, str]:  # fmt: skip
    """Quantized model inputs ``(N, *input_shape[1:])``, the float inputs they quantize, labels or
    None, and where they came from."""
    from edgekd.graph import read_tflite
    from edgekd.graph.quant import dequantize

    m = read_tflite(model_path)
    ind = m.input_details()[0]
    shape = tuple(ind["shape"][1:])
    if int(ind["nbytes"]) * samples > MAX_INPUT_BYTES:  # bounded before anything is allocated
        raise EdgekdError(
            f"{model_path}: {samples} samples of the declared input ({ind['dtype']} {ind['shape']}) take "
            f"{int(ind['nbytes']) * samples:,} bytes, over the {MAX_INPUT_BYTES >> 20} MiB limit; pass fewer "
            "--samples or check the model (corrupt?)"
        )
    if data is None and run is not None and (run / "data.json").is_file():
        data = str(run / "data.json")
    ev = None
    if data is not None:
        from edgekd.data.evalset import resolve_data

        ev = resolve_data(data, samples)
    if ev is None:
        rng = np.random.default_rng(seed)
        dt = np.dtype(ind["dtype"])
        info = np.iinfo(dt)
        x = rng.integers(info.min, info.max + 1, size=(samples, *shape)).astype(dt)
        xf = dequantize(x, float(ind["scale"]), int(ind["zero_point"]))
        return x, xf, None, f"random {dt.name} inputs (seed {seed}); pass --data for real samples"
    x = ev.x[:samples]
    if x.shape[1:] != shape and x.ndim >= 3 and np.moveaxis(x, 1, -1).shape[1:] == shape:
        x = np.ascontiguousarray(np.moveaxis(x, 1, -1))  # NCHW data, NHWC model
    if x.shape[1:] != shape:
        if int(np.prod(x.shape[1:])) != int(np.prod(shape)):
            raise EdgekdError(
                f"{model_path}: data samples have shape {tuple(x.shape[1:])}, the model input is {shape}"
            )
        x = x.reshape(len(x), *shape)
    y = None if ev.y is None or ev.task != "classification" else ev.y[:samples]
    q = _quantize(x, ind)
    xf = dequantize(q, float(ind["scale"]), int(ind["zero_point"])) if x.dtype == q.dtype else x
    return q, np.asarray(xf, dtype=np.float32), y, ev.name


@dataclass(frozen=True)
class BenchOptions:
    """The settings of one ``edgekd bench`` run (built by the CLI or a caller of :func:`run_bench`).

    ``target``: the board profile; exactly one device: ``port`` (serial device or pyserial URL),
    ``emulate`` (QEMU) or ``software`` (host TFLite Micro on a pty); ``mode`` one of :data:`MODES`;
    ``samples`` accuracy-mode inputs from ``data`` (default: the run's data.json, else random);
    ``windows`` x ``window_s`` device seconds of performance mode; ``timeout`` / ``infer_timeout``
    seconds to wait for an answer; ``output`` the folder for bench.json; ``faults`` injected into the
    software device (tests). ``mlperf_model`` (the ``m-model-[...]`` name, default: inferred from the
    model), ``input_format`` (how samples are sent: ``int8`` / ``uint8`` / ``float32``, default: the
    task's) and ``results`` (``float`` / ``softmax`` / ``raw``, default :func:`mlperf.default_results`)
    configure edgekd's devices and tell the host what a device on ``port`` expects and prints;
    ``preload``: the emulated board gets the accuracy samples in its firmware image (``db sample K``)
    instead of over its UART; ``runtime``: the emulated board's model runtime, edgekd's C backend
    (``c``) or TFLite Micro (``tflm`` with CMSIS-NN, ``tflm-reference``) built from ``tflm_tree``.
    """

    target: str
    port: str | None = None
    emulate: bool = False
    software: bool = False
    mode: str = "all"
    samples: int = 50
    data: str | None = None
    windows: int = 5
    window_s: float = 0.5
    timeout: float = 5.0
    infer_timeout: float = 120.0
    output: str | Path | None = None
    quiet: bool = False
    baudrate: int = 115200
    faults: dict[str, int] | None = None
    mlperf_model: str | None = None
    input_format: str | None = None
    results: str | None = None
    preload: bool = True  # emulated board: accuracy samples in the firmware image, not sent as db lines
    runtime: str = "c"  # emulated board: edgekd's C backend, or TFLite Micro ("tflm", "tflm-reference")
    kernels: str | None = None  # the C backend's kernels ("fast" / "portable"; default: fast)
    tflm_tree: str | None = None  # the TFLite Micro tree (default: tflm_firmware.default_tree)

    @classmethod
    def of(cls, options: BenchOptions | None = None, **changes: Any) -> BenchOptions:
        """``options`` with ``changes`` (without ``options``, ``changes`` must name the target)."""
        return dataclasses.replace(options, **changes) if options is not None else cls(**changes)


def _run_task(run: Path | None) -> str | None:
    """The run folder's task (``classification`` / ``reconstruction``) from its data.json, if any."""
    from edgekd.data.evalset import read_data_info, task_of

    if run is None or not (run / "data.json").is_file():
        return None
    return task_of(read_data_info(run / "data.json"))


@contextlib.contextmanager
def _connect(model_path: Path, target: str, o: BenchOptions, wire: WireSettings, build_dir: Path,
             samples: np.ndarray | None) -> Iterator[tuple[str, dict[str, Any]]]:  # fmt: skip
    """Yields (port, extra facts for bench.json). Starts and always stops an emulator/software device."""
    picked = sum([o.port is not None, o.emulate, o.software])
    if picked != 1:
        raise EdgekdError("pass exactly one of --port PORT, --emulate (QEMU) or --software (host device)")
    if o.port is not None:
        yield o.port, {"device": "port"}
    elif o.software:
        from edgekd.harness.runner import DeviceError
        from edgekd.harness.softdevice import SoftwareDevice, TflmModelFn, pty_device

        run = TflmModelFn(model_path)
        device = SoftwareDevice(run, run.io, faults=dict(o.faults or {}), model_name=wire.model_name,
                                input_format=wire.input_format, results=wire.results)  # fmt: skip
        try:
            with pty_device(device) as name:
                yield name, {"device": "software (host TFLite Micro on a pseudo-terminal)"}
        except DeviceError:
            if device.failure is not None:  # the model crashed the interpreter: say that, not "e-[...]"
                raise device.failure from None
            raise
        finally:
            run.close()
    else:
        from edgekd.harness.qemu import emulated_board

        fw = _tflm_firmware(model_path, o, wire, build_dir, samples) if o.runtime != "c" else None
        with emulated_board(model_path, target, build_dir, quiet=o.quiet, model_name=wire.model_name,
                            input_format=wire.input_format, results=wire.results,
                            samples=samples, kernels=o.kernels, firmware=fw) as (url, facts):  # fmt: skip
            yield url, facts


def _tflm_firmware(model_path: Path, o: BenchOptions, wire: WireSettings, build_dir: Path,
                   samples: np.ndarray | None) -> Firmware:  # fmt: skip
    """The TFLite Micro firmware for ``--runtime tflm`` / ``tflm-reference`` on the emulated board."""
    from edgekd.harness.tflm_firmware import build_tflm_firmware, find_tree

    find_tree(o.runtime, o.tflm_tree)  # a missing tree: say so before anything is built
    _stage(o, f"building the TFLite Micro firmware ({o.runtime}); a first build compiles the tree's files")
    return build_tflm_firmware(model_path, build_dir, o.runtime, o.tflm_tree, wire.model_name, wire.input_format,
                               wire.results, samples)  # fmt: skip


def run_bench(
    source: str | Path, options: BenchOptions | None = None, **changes: Any
) -> tuple[Path, dict[str, Any]]:
    """Benchmark the int8 model of a run folder (or a ``.tflite``) on a device as ``options``
    (:class:`BenchOptions`; keyword ``changes`` override its fields); returns (bench.json, record)."""
    from edgekd.graph import read_tflite, run_tflm
    from edgekd.targets import load_target

    o = BenchOptions.of(options, **changes)
    if o.mode not in MODES:
        raise EdgekdError(f"--mode {o.mode}: valid: {', '.join(MODES)}")
    _check_runtime(o)
    tgt = load_target(o.target)
    model_path, run = find_model(source, tgt.name)
    m = read_tflite(model_path)
    if not m.is_full_integer():
        raise EdgekdError(
            f"{model_path}: the model is {m.kind}; the device harness needs a full-integer int8 model"
        )
    io = ModelIO.of(m)
    wire = WireSettings.of(io, o.mlperf_model, o.input_format, o.results, "edgekd", _run_task(run))
    base = Path(o.output) if o.output is not None else (run or model_path.parent) / "bench" / tgt.name
    q, xf, y, data_name = bench_inputs(model_path, run, o.data, o.samples)
    wire_x = encode_inputs(q, xf, io, wire.input_format)
    accuracy = o.mode in ("accuracy", "all")
    host = run_tflm(model_path, q) if accuracy else None  # the reference outputs
    record: dict[str, Any] = {
        **provenance("bench", BENCH_VERSION),
        "target": tgt.as_dict(),
        "model": {
            "path": str(model_path),
            "sha256": file_sha256(model_path),
            "bytes": model_path.stat().st_size,
            "ops": m.op_names(),
        },  # fmt: skip
        "data": {"source": data_name, "samples": int(len(q))},
        "mode": o.mode,
        "protocol": wire.as_dict(),
        "host": {"machine": platform.machine(), "python": platform.python_version()},
    }
    from edgekd.harness.qemu import MAX_PRELOAD_BYTES

    preload = wire_x if accuracy and o.emulate and o.preload else None
    if preload is not None and preload.nbytes > MAX_PRELOAD_BYTES:
        record["protocol"]["preload_skipped"] = (
            f"{len(preload)} samples take {preload.nbytes:,} B, over the {MAX_PRELOAD_BYTES:,} B the "
            "firmware image holds for them: sent as db lines"
        )
        preload = None
    with _connect(model_path, tgt.name, o, wire, base / "build", preload) as (url, facts):
        record.update(facts)
        record["port"] = url
        with Device(url, timeout=o.timeout, infer_timeout=o.infer_timeout, baudrate=o.baudrate) as dev:
            try:
                _measure(
                    dev,
                    o,
                    facts,
                    Samples(wire_x, xf, host, y),
                    Expected(io, wire.model_name, wire.results),
                    record,
                )
            finally:
                record["protocol"]["non_protocol_lines"] = dev.noise_count
                record["protocol"]["non_protocol_examples"] = dev.noise[:5]
                if o.emulate and o.runtime != "c":
                    from edgekd.harness.tflm_firmware import apply_boot_report

                    apply_boot_report([*dev.boot_text, *dev.noise], record)
    atomic_write_json(base / "bench.json", record)
    return base / "bench.json", record


def _check_runtime(o: BenchOptions) -> None:
    from edgekd.harness.tflm_firmware import RUNTIMES

    if o.runtime not in RUNTIMES:
        raise EdgekdError(f"--runtime {o.runtime}: valid: {', '.join(RUNTIMES)}")
    if o.runtime != "c" and not o.emulate:
        raise EdgekdError(f"--runtime {o.runtime} builds the emulated board's firmware; pass --emulate")


@dataclass(frozen=True)
class Samples:
    """Accuracy-mode inputs: wire bytes per sample, their float values, host outputs, labels."""

    wire: np.ndarray
    x_float: np.ndarray
    host: np.ndarray | None
    labels: np.ndarray | None


ENERGY_NOTE = (
    "energy-mode firmware (m-timestamp-mode-energy) marks inference start and end on a GPIO instead of "
    "printing m-lap-us; timings and energy need an energy monitor (EEMBC EnergyRunner and a power board). "
    "Flash a performance-mode build (EE_CFG_ENERGY_MODE=0) for edgekd's timings."
)


def _measure(dev: Device, o: BenchOptions, facts: dict[str, Any], s: Samples, expected: Expected,
             record: dict[str, Any]) -> None:  # fmt: skip
    """Handshake, then the accuracy and performance modes ``o.mode`` asks for, into ``record``."""
    info = dev.handshake()
    record["dut"] = {"name": info.name, "profile": info.profile, "model": info.model,
                     "timestamp_mode": info.timestamp_mode}  # fmt: skip
    _stage(o, f"device: {info.name or '?'} (m-model-[{info.model or '?'}]) on {dev.port}")
    if info.model and info.model != expected.model_name:
        record["protocol"]["device_model_differs"] = (
            f"the device reports m-model-[{info.model}], the host assumed {expected.model_name}; pass "
            f"--mlperf-model {info.model} if its input encoding is that task's"
        )
    if o.mode in ("accuracy", "all"):
        preloaded = bool(facts.get("preloaded_samples"))
        record["accuracy"] = _accuracy(dev, s, expected, preloaded, o.quiet)
    if o.mode not in ("performance", "all"):
        return
    if info.timestamp_mode == "energy":
        record["performance"] = {"energy_mode": True, "note": ENERGY_NOTE}
        return
    w_s = min(o.window_s, float(facts.get("window_s", o.window_s)))
    try:
        perf = run_performance(dev, s.wire[0].tobytes(), windows=o.windows, window_s=w_s)
    except NoTimestamps:  # the boot banner (m-timestamp-mode-...) is often missed on a serial port
        record["performance"] = {
            "energy_mode": True,
            "note": "no m-lap-us around an inference: " + ENERGY_NOTE,
        }
        return
    _stage(o, f"performance: {o.windows} windows of {perf['iterations_per_window']} inferences")
    perf["time_base"] = facts.get("time_base", "device clock (m-lap-us)")
    if "instructions_per_us" in facts:
        perf["instructions_per_inference"] = round(perf["us_per_inference"] * facts["instructions_per_us"])
    record["performance"] = perf


def _stage(o: BenchOptions, text: str) -> None:
    """One plain line on stderr per stage when stderr is not a terminal (a log file), unless quiet."""
    import sys

    from edgekd.console import is_terminal, plain_line

    if not o.quiet and not is_terminal(sys.stderr):
        plain_line(text, sys.stderr)


def _accuracy(dev: Device, s: Samples, expected: Expected, preloaded: bool, quiet: bool) -> dict[str, Any]:
    import sys

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from edgekd.console import count_lines, is_terminal

    def run(progress: Any) -> dict[str, Any]:
        res = run_accuracy(dev, s.wire, s.host, s.labels, progress=progress, expected=expected,
                           x_float=s.x_float, preloaded=preloaded)  # fmt: skip
        return {**res.as_dict(), "preloaded_samples": preloaded}

    if quiet or not is_terminal():  # off a terminal a transient bar shows nothing: plain lines on stderr
        return run(None if quiet else count_lines("accuracy: samples", len(s.wire), sys.stderr))
    cols = (TextColumn("accuracy"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*cols, transient=True) as bar:
        task = bar.add_task("samples", total=len(s.wire))
        return run(lambda k: bar.update(task, completed=k))


def summary_lines(record: dict[str, Any]) -> list[str]:
    """Short human summary of a bench record."""
    out = [f"device: {record.get('dut', {}).get('name') or '?'} ({record.get('device')})"]
    acc = record.get("accuracy")
    if acc:
        top1 = acc["top1_accuracy"]
        n, equal = acc["samples"], acc.get("bytes_equal_samples")
        agree = (f"bit-exact with host TFLite Micro on {equal}/{n}" if equal is not None else
                 f"results within {acc.get('results_tolerance', 0):g} of host TFLite Micro on "
                 f"{acc.get('results_within_tolerance_samples')}/{n}")  # fmt: skip
        out.append(f"accuracy: {n} samples, top-1 {'n/a' if top1 is None else f'{100 * top1:.2f}%'}, {agree}")
    perf = record.get("performance")
    if perf and perf.get("energy_mode"):
        out.append("performance: energy-mode firmware, no timings (needs an energy monitor)")
    elif perf:
        label = " (emulated)" if record.get("emulated") else ""
        out.append(
            f"performance{label}: {perf['inferences_per_second']:.2f} inferences/s, "
            f"{perf['us_per_inference'] / 1000:.3f} ms/inference (median of {perf['windows']} windows x "
            f"{perf['iterations_per_window']})"
        )
    mem = record.get("memory")
    if mem:
        out.append(f"memory: flash {mem['flash_bytes']:,} B, RAM {mem['ram_bytes']:,} B "
                   f"(data {mem['data']:,} + bss {mem['bss']:,} + stack {mem['stack']:,})")  # fmt: skip
    return out
