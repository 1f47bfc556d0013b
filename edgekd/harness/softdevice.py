"""A software MLPerf Tiny device: speaks the protocol on a file descriptor (a pseudo-terminal) and
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
from edgekd.harness import protocol as p

FIRMWARE = "edgekd-softdevice"


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

        read_tflite(model_path)  # structural validation before the interpreter sees the file
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


def tflm_model_fn(model_path: str | os.PathLike) -> tuple[TflmModelFn, int]:
    """(run, input_nbytes): ``run(input_bytes) -> output ints`` with the host TFLite Micro interpreter
    (in a child process; ``run.close()`` stops it)."""
    fn = TflmModelFn(model_path)
    return fn, fn.input_nbytes


@dataclass
class SoftwareDevice:
    run: Callable[[bytes], list[int]]
    input_nbytes: int
    faults: dict[str, int] = field(default_factory=dict)
    model_name: str = "ic01"
    _buffer: bytearray = field(default_factory=bytearray)
    _expect: int = 0
    _results: list[int] = field(default_factory=list)
    _count: int = 0
    _t0: float = field(default_factory=time.monotonic)
    failure: Exception | None = None  # why running the model failed (answered as e-[...])

    # ---- protocol ------------------------------------------------------------------------------
    def boot(self) -> list[str]:
        return ["m-timestamp-mode-performance", p.INIT_DONE, p.READY]

    def _lap(self) -> str:
        return f"m-lap-us-{int((time.monotonic() - self._t0) * 1e6)}"

    def handle(self, text: str) -> list[str] | None:
        """Lines answering one command (``%`` stripped); None means: say nothing (silent fault)."""
        self._count += 1
        for fault in ("garble", "reset", "silent", "error"):
            if fault in self.faults and self._count > self.faults[fault]:
                return {"garble": ["\x00\xff\x13garbage\x7f"], "reset": self.boot(), "silent": None,
                        "error": ["e-[Injected failure]", p.READY]}[fault]  # fmt: skip
        try:
            out = self._dispatch(p.parse_command(text))
        except p.ProtocolError as e:
            out = [f"e-[{str(e)}]"]
        except EdgekdError as e:  # the model run failed (a crash in the interpreter's child process)
            self.failure = e
            out = ["e-[model run failed]"]
        return [*out, p.READY]

    def _dispatch(self, cmd: p.Command) -> list[str]:
        a = cmd.args
        if cmd.name == "name":
            return ["m-name-dut-[edgekd software device]"]
        if cmd.name == "profile":
            return [f"m-profile-[{FIRMWARE}]", f"m-model-[{self.model_name}]"]
        if cmd.name == "timestamp":
            return [self._lap()]
        if cmd.name == "help":
            return ["m-[name, profile, timestamp, db load N, db HEX, db print, infer N W, results]"]
        if cmd.name == "results":
            return [p.format_results(self._results)]
        if cmd.name == "db":
            return self._db(a)
        if cmd.name == "infer":
            return self._infer(a)
        raise p.ProtocolError(f"Unknown command: {cmd.name}")

    def _db(self, a: tuple[str, ...]) -> list[str]:
        if len(a) == 2 and a[0] == "load":
            if not a[1].isdigit() or int(a[1]) > self.input_nbytes:
                raise p.ProtocolError(f"Invalid load size {a[1]} (max {self.input_nbytes})")
            self._expect = int(a[1])
            self._buffer = bytearray()
            return [f"m-[Expecting {self._expect} bytes]"]
        if len(a) == 1 and a[0] == "print":
            return [f"m-buffer-{self._buffer.hex()}"]
        if len(a) == 1:
            self._buffer += p.decode_hex(a[0])
            if len(self._buffer) > self._expect:
                raise p.ProtocolError("Too many bytes")
            return ["m-load-done"] if len(self._buffer) == self._expect else []
        raise p.ProtocolError("Unknown db command")

    def _infer(self, a: tuple[str, ...]) -> list[str]:
        try:
            n, w = int(a[0]), int(a[1]) if len(a) > 1 else 0
        except (IndexError, ValueError):
            raise p.ProtocolError("infer needs N [W]") from None
        if n <= 0:
            raise p.ProtocolError("Inference iterations must be >0")
        if len(self._buffer) != self.input_nbytes:
            raise p.ProtocolError(f"Input buffer has {len(self._buffer)} of {self.input_nbytes} bytes")
        data = bytes(self._buffer)
        out = [f"m-warmup-start-{w}"]
        for _ in range(w):
            self.run(data)
        out += ["m-warmup-done", f"m-infer-start-{n}", self._lap()]
        for _ in range(n):
            self._results = self.run(data)
        out += [self._lap(), "m-infer-done", p.format_results(self._results)]
        return out

    # ---- serving -------------------------------------------------------------------------------
    def serve(self, fd: int, stop: threading.Event) -> None:
        """Answer commands on ``fd`` until ``stop`` is set or the other end closes."""
        self._send(fd, self.boot()[:-1])
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
                lines = self.handle(cmd.decode("ascii", "replace").strip())
                if lines is not None:
                    self._send(fd, lines)

    @staticmethod
    def _send(fd: int, lines: list[str]) -> None:
        data = "".join(f"{ln}\r\n" for ln in lines).encode("latin-1")
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
