"""``edgekd bench``: pick the model and inputs, connect a device (a port, the emulated Cortex-M4, or
the software device), run accuracy and performance modes, write ``bench/<target>/bench.json``."""

from __future__ import annotations

import contextlib
import dataclasses
import platform
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.atomic import atomic_write_json
from edgekd.errors import EdgekdError
from edgekd.files import file_sha256
from edgekd.harness.runner import Device, run_accuracy, run_performance
from edgekd.provenance import provenance

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
                 ) -> tuple[np.ndarray, np.ndarray | None, str]:  # fmt: skip
    """Quantized model inputs ``(N, *input_shape[1:])``, labels or None, and where they came from."""
    from edgekd.graph import read_tflite

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
        return x, None, f"random {dt.name} inputs (seed {seed}); pass --data for real samples"
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
    return _quantize(x, ind), y, ev.name


@dataclass(frozen=True)
class BenchOptions:
    """The settings of one ``edgekd bench`` run (built by the CLI or a caller of :func:`run_bench`).

    ``target``: the board profile; exactly one device: ``port`` (serial device or pyserial URL),
    ``emulate`` (QEMU) or ``software`` (host TFLite Micro on a pty); ``mode`` one of :data:`MODES`;
    ``samples`` accuracy-mode inputs from ``data`` (default: the run's data.json, else random);
    ``windows`` x ``window_s`` device seconds of performance mode; ``timeout`` / ``infer_timeout``
    seconds to wait for an answer; ``output`` the folder for bench.json; ``faults`` injected into the
    software device (tests).
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

    @classmethod
    def of(cls, options: BenchOptions | None = None, **changes: Any) -> BenchOptions:
        """``options`` with ``changes`` (without ``options``, ``changes`` must name the target)."""
        return dataclasses.replace(options, **changes) if options is not None else cls(**changes)


@contextlib.contextmanager
def _connect(
    model_path: Path, target: str, o: BenchOptions, build_dir: Path
) -> Iterator[tuple[str, dict[str, Any]]]:
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
        device = SoftwareDevice(run, run.input_nbytes, faults=dict(o.faults or {}))
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

        with emulated_board(model_path, target, build_dir, quiet=o.quiet) as (url, facts):
            yield url, facts


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
    tgt = load_target(o.target)
    model_path, run = find_model(source, tgt.name)
    m = read_tflite(model_path)
    if not m.is_full_integer():
        raise EdgekdError(
            f"{model_path}: the model is {m.kind}; the device harness needs a full-integer int8 model"
        )
    base = Path(o.output) if o.output is not None else (run or model_path.parent) / "bench" / tgt.name
    x, y, data_name = bench_inputs(model_path, run, o.data, o.samples)
    host = run_tflm(model_path, x) if o.mode in ("accuracy", "all") else None  # the reference outputs
    record: dict[str, Any] = {
        **provenance("bench", BENCH_VERSION),
        "target": tgt.as_dict(),
        "model": {
            "path": str(model_path),
            "sha256": file_sha256(model_path),
            "bytes": model_path.stat().st_size,
            "ops": m.op_names(),
        },  # fmt: skip
        "data": {"source": data_name, "samples": int(len(x))},
        "mode": o.mode,
        "host": {"machine": platform.machine(), "python": platform.python_version()},
    }
    with _connect(model_path, tgt.name, o, base / "build") as (url, facts):
        record.update(facts)
        record["port"] = url
        with Device(url, timeout=o.timeout, infer_timeout=o.infer_timeout, baudrate=o.baudrate) as dev:
            _measure(dev, o, facts, x, host, y, record)
    atomic_write_json(base / "bench.json", record)
    return base / "bench.json", record


def _measure(dev: Device, o: BenchOptions, facts: dict[str, Any], x: np.ndarray, host: np.ndarray | None,
             y: np.ndarray | None, record: dict[str, Any]) -> None:  # fmt: skip
    """Handshake, then the accuracy and performance modes ``o.mode`` asks for, into ``record``."""
    info = dev.handshake()
    record["dut"] = {"name": info.name, "profile": info.profile, "model": info.model,
                     "timestamp_mode": info.timestamp_mode}  # fmt: skip
    if o.mode in ("accuracy", "all"):
        record["accuracy"] = _accuracy(dev, x, host, y, o.quiet)
    if o.mode in ("performance", "all"):
        w_s = min(o.window_s, float(facts.get("window_s", o.window_s)))
        perf = run_performance(dev, x[0].tobytes(), windows=o.windows, window_s=w_s)
        perf["time_base"] = facts.get("time_base", "device clock (m-lap-us)")
        if "instructions_per_us" in facts:
            perf["instructions_per_inference"] = round(
                perf["us_per_inference"] * facts["instructions_per_us"]
            )
        record["performance"] = perf


def _accuracy(
    dev: Device, x: np.ndarray, host: np.ndarray, y: np.ndarray | None, quiet: bool
) -> dict[str, Any]:
    import sys

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from edgekd.console import count_lines, is_terminal

    if quiet or not is_terminal():  # off a terminal a transient bar shows nothing: plain lines on stderr
        lines = None if quiet else count_lines("accuracy: samples", len(x), sys.stderr)
        return run_accuracy(dev, x, host, y, progress=lines).as_dict()
    cols = (TextColumn("accuracy"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*cols, transient=True) as bar:
        task = bar.add_task("samples", total=len(x))
        res = run_accuracy(dev, x, host, y, progress=lambda k: bar.update(task, completed=k))
    return res.as_dict()


def summary_lines(record: dict[str, Any]) -> list[str]:
    """Short human summary of a bench record."""
    out = [f"device: {record.get('dut', {}).get('name') or '?'} ({record.get('device')})"]
    acc = record.get("accuracy")
    if acc:
        top1 = acc["top1_accuracy"]
        out.append(
            f"accuracy: {acc['samples']} samples, top-1 {'n/a' if top1 is None else f'{100 * top1:.2f}%'}, "
            f"bit-exact with host TFLite Micro on {acc['bytes_equal_samples']}/{acc['samples']}"
        )
    perf = record.get("performance")
    if perf:
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
