"""A software MLPerf Tiny device: speaks the protocol on a file descriptor (a pseudo-terminal), reply
for reply as the reference firmware (:mod:`edgekd.harness.monitor`, :mod:`edgekd.harness.mlperf`), and
runs the model with the host TFLite Micro interpreter. Used by the tests and by ``edgekd bench
--software`` to check a host set-up with no board.

Fault injection (``faults``) makes it misbehave the way real boards do: ``garble`` (binary noise
instead of an answer), ``reset`` (re-prints the boot banner mid-command), ``silent`` (stops
answering), ``error`` (answers ``e-[...]``), each after the given number of commands.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekd.errors import EdgekdError
from edgekd.harness.mlperf import (
    DEFAULT_INPUT_FORMAT,
    ModelIO,
    decode_input,
    default_results,
    format_results,
    result_values,
)
from edgekd.harness.monitor import Monitor

VENDOR = "edgekd software device"


def _tflm_runner(model_path: str) -> tuple[Callable[[bytes], list[int]], int]:
    """(run, input_nbytes) with an in-process host TFLite Micro interpreter (run in a ChildWorker)."""
    from edgekd.graph import read_tflite, tflm_interpreter

    m = read_tflite(model_path)
    ind = m.input_details()[0]
    interp = tflm_interpreter(model_path, isolate=False)
    shape, dtype = tuple(ind["shape"]), np.dtype(ind["dtype"])

    def run(data: bytes) -> list[int]:
        interp.set_input(np.frombuffer(data, dtype=dtype).reshape(shape), 0)
        interp.invoke()
        return [int(v) for v in np.asarray(interp.get_output(0)).reshape(-1)]

    return run, int(ind["nbytes"])


class TflmModelFn:
    """``run(input_bytes) -> output ints`` on the host TFLite Micro interpreter, which lives in a forked
    child (:class:`edgekd.child.ChildWorker`): a model that crashes TFLM raises one EdgekdError line
    instead of killing the benchmark. ``close()`` stops the child."""

    def __init__(self, model_path: str | os.PathLike) -> None:
        from edgekd.child import ChildWorker
        from edgekd.graph import read_tflite

        self.io = ModelIO.of(read_tflite(model_path))  # structural validation before the interpreter
        self.path = str(model_path)
        self._worker = ChildWorker(
            _tflm_runner, self.path, what=f"{self.path}: TFLite Micro (software device)"
        )
        self.input_nbytes = int(self._worker.info)

    def __call__(self, data: bytes) -> list[int]:
        from edgekd.child import ChildFailed

        try:
            return self._worker.call(data)
        except ChildFailed as e:
            from edgekd.graph.tflm import crash_operator

            op = crash_operator(Path(self.path).read_bytes(), self.path) if e.kind == "signal" else None
            raise e.replace(at=f" at or before {op}") if op else e from None

    def close(self) -> None:
        self._worker.close()


class TensorPort:
    """The submitter half of the software device (``th_load_tensor`` / ``th_infer`` / ``th_results``)
    around ``run(input_bytes) -> output ints``, with the reference firmware's encoding for the task."""

    def __init__(self, run: Callable[[bytes], list[int]], io: ModelIO, model_name: str,
                 input_format: str, results: str) -> None:  # fmt: skip
        self.run, self.io, self.model_name = run, io, model_name
        self.input_format, self.results_format = input_format, results
        self.q = np.zeros(io.input_elements, dtype=io.input_dtype)
        self.x_float = np.zeros(io.input_elements, dtype=np.float32)
        self.out = np.zeros(io.output_size, dtype=np.int64)  # the output tensor before any inference

    def load_tensor(self, data: bytes) -> str:
        need = self.io.input_nbytes(self.input_format)
        if len(data) != need:  # the reference firmware says so and keeps the previous tensor
            return f"Input db has {len(data)} bytes, expected {need}\r\n"
        self.q, self.x_float = decode_input(data, self.io, self.input_format)
        return ""

    def infer(self) -> None:
        self.out = np.asarray(self.run(self.q.tobytes()))

    def results(self) -> str:
        vals = result_values(self.out, self.x_float, self.io, self.model_name, self.results_format)
        return format_results(vals) + "\r\n"


@dataclass
class SoftwareDevice:
    """The MLPerf Tiny protocol (:class:`~edgekd.harness.monitor.Monitor`) around a model function."""

    run: Callable[[bytes], list[int]]
    io: ModelIO
    faults: dict[str, int] = field(default_factory=dict)
    model_name: str = "ic01"
    input_format: str | None = None  # default: the task's (mlperf.DEFAULT_INPUT_FORMAT)
    results: str | None = None  # default: mlperf.default_results
    _count: int = 0
    _t0: float = field(default_factory=time.monotonic)
    failure: Exception | None = None  # why running the model failed (answered as e-[...])

    def __post_init__(self) -> None:
        fmt = self.input_format or DEFAULT_INPUT_FORMAT[self.model_name]
        res = self.results or default_results(self.io, self.model_name)
        self.port = TensorPort(self.run, self.io, self.model_name, fmt, res)
        self.monitor = Monitor(self.port, vendor=VENDOR, model_name=self.model_name,
                               buffer_size=self.io.input_nbytes(fmt),
                               timestamp_us=lambda: int((time.monotonic() - self._t0) * 1e6))  # fmt: skip

    # ---- protocol ------------------------------------------------------------------------------
    def boot(self) -> str:
        return self.monitor.boot()

    def handle(self, text: str) -> str | None:
        """The text answering one command (``%`` stripped); None means: say nothing (silent fault)."""
        self._count += 1
        for fault in ("garble", "reset", "silent", "error"):
            if fault in self.faults and self._count > self.faults[fault]:
                return {"garble": "\x00\xff\x13garbage\x7f\r\n", "reset": self.boot(), "silent": None,
                        "error": "e-[Injected failure]\r\nm-ready\r\n"}[fault]  # fmt: skip
        try:
            return self.monitor.handle(text)
        except EdgekdError as e:  # the model run failed (a crash in the interpreter's child process)
            self.failure = e
            return "e-[model run failed]\r\nm-ready\r\n"

    # ---- serving -------------------------------------------------------------------------------
    def serve(self, fd: int, stop: threading.Event) -> None:
        """Answer commands on ``fd`` until ``stop`` is set or the other end closes."""
        self._send(fd, self.boot())
        pending = b""
        while not stop.is_set():
            r, _, _ = select.select([fd], [], [], 0.05)
            if not r:
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                return
            if not chunk:
                return
            pending += chunk
            while b"%" in pending:
                cmd, pending = pending.split(b"%", 1)
                text = self.handle(cmd.decode("ascii", "replace").replace("\r", "").replace("\n", ""))
                if text is not None:
                    self._send(fd, text)

    @staticmethod
    def _send(fd: int, text: str) -> None:
        data = text.encode("latin-1")
        with contextlib.suppress(OSError):
            while data:
                data = data[os.write(fd, data) :]


@contextlib.contextmanager
def pty_device(device: SoftwareDevice) -> Iterator[str]:
    """Serve ``device`` on a new pseudo-terminal in a thread; yields the port name (``/dev/pts/N``)."""
    import tty

    master, slave = os.openpty()
    tty.setraw(slave)
    name = os.ttyname(slave)
    stop = threading.Event()
    th = threading.Thread(target=device.serve, args=(master, stop), daemon=True)
    th.start()
    try:
        yield name
    finally:
        stop.set()
        th.join(timeout=2)
        for fd in (master, slave):
            with contextlib.suppress(OSError):
                os.close(fd)
