"""Thin wrappers around the host build of the TFLite Micro interpreter (``tflite_micro.runtime``).

The interpreter reports problems (unsupported op, kernel Prepare failure, arena too small) only as text
printed from C++ to stderr followed by a generic ``RuntimeError``, and prints its arena usage the same
way. We capture file descriptors 1 and 2 around those calls and turn the text into numbers or into an
:class:`~edgekd.errors.EdgekdError` naming the op.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.child import LOG_ENV, ChildFailed, run_in_child
from edgekd.errors import EdgekdError
from edgekd.graph.quant import dequantize, quantize
from edgekd.graph.reader import read_tflite
from edgekd.graph.tflite_model import read_tflite_bytes
from edgekd.native_io import redirect_fds

ModelSource = str | os.PathLike | bytes | bytearray | memoryview

_CRASH_HINT = "it cannot run on TFLite Micro as exported (corrupt file?); re-export it or report the file"
_PROBE_CACHE: dict[str, dict[str, Any]] = {}
_MAX_ARENA = 1 << 30
_ALLOC_FAIL = re.compile(
    r"Failed to allocate|Failed to resize buffer|available \d+|Arena size is too small", re.I
)
_MISSING_OP = re.compile(r"Didn't find op for builtin opcode '([^']+)'")
_MISSING_CUSTOM = re.compile(r"Didn't find op for custom opcode '([^']+)'")
_NO_REGISTRATION = re.compile(r"Failed to get registration from op code (\w+)")
_PREPARE_FAIL = re.compile(r"Node (\S+) \(number (\d+)\) failed to (prepare|invoke|init)")


class _Captured:
    text: str = ""


@contextlib.contextmanager
def _capture_native_output() -> Iterator[_Captured]:
    """What the interpreter prints on fds 1 and 2 inside the block, as ``cap.text`` afterwards."""
    cap = _Captured()
    log = os.environ.get(LOG_ENV)  # in a child of edgekd.child: its log, quoted if it crashes
    sink = open(log, "a+b") if log else tempfile.TemporaryFile(mode="w+b")  # noqa: SIM115
    with sink as tmp:
        start = tmp.seek(0, os.SEEK_END)
        try:
            with redirect_fds(tmp):
                yield cap
        finally:
            tmp.seek(start)
            cap.text = tmp.read().decode("utf-8", "replace")


def _load(model: ModelSource) -> tuple[bytes, str]:
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model), "<bytes>"
    return read_tflite_bytes(model), str(Path(model))


def _initial_arena(data: bytes, source: str) -> int:
    m = read_tflite(data) if source == "<bytes>" else _read_named(data, source)
    act = sum((t.nbytes + 15) // 16 * 16 for t in m.activations)
    return act + 256 * len(m.tensors) + 512 * len(m.operators) + (64 << 10)


def _read_named(data: bytes, source: str):  # keep the file name in error messages
    try:
        return read_tflite(data)
    except EdgekdError as e:
        raise EdgekdError(str(e).replace("<bytes>", source, 1)) from None


def _custom_codes(data: bytes | None) -> list[str]:
    if data is None:
        return []
    with contextlib.suppress(EdgekdError):
        return read_tflite(data).custom_ops()
    return []


def _diagnose(text: str, source: str, data: bytes | None = None) -> EdgekdError:
    missing = sorted(set(_MISSING_OP.findall(text)))
    missing_custom = sorted(set(_MISSING_CUSTOM.findall(text)))
    no_reg = set(_NO_REGISTRATION.findall(text))
    if "CUSTOM" in no_reg and not missing_custom:
        missing_custom = _custom_codes(data) or ["?"]
    missing = sorted(set(missing) | (no_reg - {"CUSTOM"}))
    if missing or missing_custom:
        names = ", ".join(missing + [f"CUSTOM:{c}" for c in missing_custom])
        return EdgekdError(
            f"{source}: TFLite Micro has no kernel for op(s) {names}; replace them in the model "
            "(or register a custom kernel)"
        )
    lines = [
        ln.strip()
        for ln in text.splitlines()
        if ln.strip() and not ln.startswith("[RecordingMicroAllocator]")
    ]
    m = _PREPARE_FAIL.search(text)
    if m:
        op, num, stage = m.groups()
        before = [ln for ln in lines if not _PREPARE_FAIL.search(ln)]
        why = before[-1] if before else "no detail printed"
        hint = (
            "use the full-integer int8 model"
            if "not supported" in why.lower()
            else "check the op's types and shapes"
        )
        return EdgekdError(f"{source}: TFLite Micro cannot {stage} op {op} (operator {num}): {why}; {hint}")
    detail = "; ".join(lines[-3:]) if lines else "no detail printed"
    return EdgekdError(f"{source}: TFLite Micro failed to load the model ({detail})")


def tflm_interpreter(model: ModelSource, arena_size: int | None = None, *, isolate: bool = True) -> Any:
    """Build a ``tflite_micro.runtime.Interpreter``; grows the arena until it fits.

    Raises EdgekdError naming the op(s) TFLM lacks or the op whose Prepare failed. With ``isolate``
    the model is first loaded in a child process (cached per model), because TFLM aborts the whole
    process on some models.
    """
    data, source = _load(model)
    if isolate:
        _probe(data, source)
    interp, _ = _build(data, source, arena_size)
    return interp


def _build(data: bytes, source: str, arena_size: int | None) -> tuple[Any, str]:
    from tflite_micro import runtime

    size = arena_size or _initial_arena(data, source)
    while True:
        with _capture_native_output() as cap:
            try:
                interp = runtime.Interpreter.from_bytes(data, arena_size=size)
                err = None
            except (RuntimeError, ValueError) as e:
                interp, err = None, e
        if interp is not None:
            return interp, cap.text
        if _ALLOC_FAIL.search(cap.text) and not _MISSING_OP.search(cap.text) and size < _MAX_ARENA:
            size *= 2
            continue
        exc = _diagnose(cap.text or str(err), source, data)
        raise exc from None


def check_tflm_loadable(model: ModelSource, *, isolate: bool = True) -> None:
    """Load the model into TFLite Micro (host build); raise EdgekdError naming unsupported op(s) if it
    can't, or saying TFLM crashed. ``isolate`` (default) loads it in a child process."""
    data, source = _load(model)
    if isolate:
        _probe(data, source)
    else:
        _build(data, source, None)


_ALLOC_LINE = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")


def measure_arena(model: ModelSource, *, isolate: bool = True) -> dict[str, int]:
    """Exact TFLM arena usage in bytes: ``{"head", "tail", "total"}`` (64-bit host; head == MCU head).

    ``head`` is the non-persistent (planned) part, ``tail`` the persistent part. ``isolate`` (default)
    measures in a child process (~0.5 s, cached per model) so a TFLM abort cannot kill the caller.
    """
    data, source = _load(model)
    if isolate:
        return dict(_probe(data, source))
    return _measure_in_process(data, source)


def _measure_in_process(data: bytes, source: str) -> dict[str, int]:
    interp, _ = _build(data, source, None)
    with _capture_native_output() as cap:
        interp.print_allocations()
    found = {k: int(v) for k, v in _ALLOC_LINE.findall(cap.text)}
    if set(found) != {"total", "head", "tail"}:
        raise EdgekdError(
            f"{source}: could not read TFLM arena usage from print_allocations() output "
            f"({cap.text.strip()[:120]!r}); is tflite-micro built with the recording allocator?"
        )
    return {"head": found["head"], "tail": found["tail"], "total": found["total"]}


def _probe(data: bytes, source: str) -> dict[str, int]:
    """Load + measure the model in a forked child (time and memory limits); cached by content hash."""
    import hashlib

    key = hashlib.sha1(data).hexdigest()
    hit = _PROBE_CACHE.get(key)
    if hit is None:
        try:
            hit = {"arena": _isolated(_measure_in_process, data, source)}
        except EdgekdError as e:
            hit = {"error": str(e)}
        hit["source"] = source
        if len(_PROBE_CACHE) > 256:
            _PROBE_CACHE.clear()
        _PROBE_CACHE[key] = hit
    if "error" in hit:  # cached by content: name the file the caller passed
        raise EdgekdError(str(hit["error"]).replace(hit["source"], source, 1))
    return hit["arena"]


def _isolated(fn: Any, data: bytes, source: str, *args: Any) -> Any:
    """``fn(data, source, *args)`` in a child process (time and memory limits); a crash names the file,
    the operator it happened in (found by running shorter prefixes of the model) and a likely cause."""
    _read_named(data, source)  # structural validation first: a corrupt model never reaches TFLM
    try:
        return run_in_child(fn, data, source, *args, what=f"{source}: TFLite Micro", hint=_CRASH_HINT)
    except ChildFailed as e:
        if e.kind != "signal":
            raise
        hint = (_crash_hint(data) if e.sig == signal.SIGABRT else None) or e.hint
        op = crash_operator(data, source, args[0] if fn is _invoke_all else None)
        raise e.replace(hint=hint, at=f" at or before {op}" if op else "") from None


def crash_operator(
    data: bytes, source: str, x: np.ndarray | None = None, budget_s: float = 30.0
) -> str | None:
    """``"operator K (NAME)"``: the last operator of the shortest model prefix (operators 0..K, K's output
    made the model output) that crashes TFLite Micro in a child process on ``x`` (default: one zero
    sample), found by bisection. A kernel that corrupts memory may crash only in a later operator, so
    callers say "at or before". None for models with control flow or external buffers, or if no
    prefix crashes (memory corruption does not always crash) within ``budget_s`` seconds in all."""
    m = _read_named(data, source)
    if m.num_subgraphs != 1 or not m.operators or len(m.inputs) != 1:
        return None
    ind = m.input_details()[0]
    shape = (1, *ind["shape"][1:]) if ind["shape"] else ()
    xs = np.zeros((1, *shape[1:]), np.dtype(ind["dtype"])) if x is None else np.asarray(x)
    crashed: set[int] = set()
    deadline = time.monotonic() + budget_s

    def crashes(k: int) -> bool:
        prefix = _prefix_model(data, k)
        left = deadline - time.monotonic()
        if prefix is None or left < 0.5:
            return False
        try:
            run_in_child(_invoke_all, prefix, source, xs, shape, timeout_s=left)
        except ChildFailed as e:
            if e.kind == "signal":
                crashed.add(k)
        except EdgekdError:
            pass
        return k in crashed

    lo, hi = 0, len(m.operators) - 1  # the whole model crashed: the first crashing prefix is in lo..hi
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if crashes(mid) else (mid + 1, hi)
    if lo not in crashed and not crashes(lo):
        return None
    return f"operator {lo} ({m.operators[lo].name})"


def _prefix_model(data: bytes, k: int) -> bytes | None:
    """The model cut after operator ``k`` of subgraph 0 (its outputs become the model outputs)."""
    import flatbuffers

    from edgekd.graph.tflite_model import _schema_module

    s = _schema_module()
    mt = s.ModelT.InitFromPackedBuf(bytearray(data), 0)
    if any(b.offset > 1 for b in mt.buffers or []):
        return None
    sg = mt.subgraphs[0]
    sg.operators = sg.operators[: k + 1]
    outs = [int(i) for i in sg.operators[k].outputs if i >= 0]
    if not outs:
        return None
    sg.outputs = outs[:1]
    b = flatbuffers.Builder(len(data) + 4096)
    b.Finish(mt.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def _crash_hint(data: bytes) -> str | None:
    """A known cause of TFLM aborting without a message: degenerate softmax/logistic input scales."""
    with contextlib.suppress(EdgekdError):
        m = read_tflite(data)
        for op in m.operators:
            if op.opcode in ("SOFTMAX", "LOG_SOFTMAX", "LOGISTIC") and op.inputs:
                scale = m.tensors[op.inputs[0]].scale
                if scale and 0 < scale[0] < 1e-6:
                    return (
                        f"{op.opcode} (operator {op.index}) has input scale {scale[0]:.3g}, which TFLM's "
                        "kernel cannot handle (near-constant logits in the calibration data? untrained "
                        "model?); calibrate with real samples or drop the softmax from the exported model"
                    )
    return None


def run_tflm(
    model: ModelSource, x: np.ndarray, *, quantize_io: bool = False, isolate: bool = True
) -> np.ndarray:
    """Run a single-input, single-output model on every sample of ``x`` (batch axis first).

    ``x`` is a stack of samples ``(N, *input_shape[1:])`` or one sample without the batch axis. With
    ``quantize_io=True`` float ``x`` is quantized with the input tensor's scale/zero point and the
    int output is dequantized to float32; otherwise ``x`` must already have the input dtype.
    Returns the stacked outputs, shape ``(N, *output_shape[1:])``. ``isolate`` (default) loads and runs
    the model in a child process, so a TFLM crash, hang or runaway allocation raises EdgekdError.
    """
    data, source = _load(model)
    m = _read_named(data, source)
    if len(m.inputs) != 1 or len(m.outputs) != 1:
        raise EdgekdError(
            f"{source}: run_tflm supports one input and one output, the model has "
            f"{len(m.inputs)} and {len(m.outputs)}; use tflm_interpreter() directly"
        )
    ind = m.input_details()[0]
    outd = m.output_details()[0]
    in_shape = tuple(ind["shape"])
    x = np.asarray(x)
    if x.ndim == len(in_shape) - 1 and tuple(x.shape) == in_shape[1:]:
        x = x[None]  # one sample without its batch axis
    sample_shape = (1, *in_shape[1:]) if in_shape else ()
    if tuple(x.shape[1:]) != tuple(in_shape[1:]):
        raise EdgekdError(
            f"{source}: input batch has shape {tuple(x.shape)} but the model expects (N, {', '.join(map(str, in_shape[1:]))})"
        )
    in_dtype = np.dtype(ind["dtype"])
    if quantize_io and in_dtype.kind in "iu" and x.dtype.kind == "f":
        x = quantize(x, float(ind["scale"]), int(ind["zero_point"]), in_dtype)
    elif x.dtype != in_dtype:
        raise EdgekdError(
            f"{source}: input dtype {x.dtype} but the model expects {in_dtype}; "
            "quantize the input or pass quantize_io=True"
        )
    run = _isolated if isolate else (lambda fn, *a: fn(*a))
    outs = run(_invoke_all, data, source, x, sample_shape)
    y = np.concatenate([o.reshape(1, *o.shape[1:]) if o.ndim else o.reshape(1) for o in outs], axis=0)
    if quantize_io and np.dtype(outd["dtype"]).kind in "iu" and outd["scale"]:
        y = dequantize(y, float(outd["scale"]), int(outd["zero_point"]))
    return y


def _invoke_all(data: bytes, source: str, x: np.ndarray, sample_shape: tuple[int, ...]) -> list[np.ndarray]:
    """Build the interpreter and run it on every sample of ``x``; the outputs."""
    interp, _ = _build(data, source, None)
    outs = []
    failed = False
    with _capture_native_output() as cap:
        try:
            for i in range(x.shape[0]):
                interp.set_input(x[i].reshape(sample_shape), 0)
                interp.invoke()
                outs.append(np.array(interp.get_output(0)))
        except RuntimeError:
            failed = True
    if failed:
        raise _diagnose(cap.text, source, data)
    return outs
