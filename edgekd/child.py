"""Run native code on untrusted models in a forked child process with a time and memory limit.

TFLite Micro, LiteRT and the generated C trust the model file: a corrupt one can crash them with
SIGSEGV, abort, allocate without bound or loop for hours. :func:`run_in_child` runs a function in a
``fork()``-ed copy of this process (no re-import, a few ms), with ``RLIMIT_AS`` set to the child's
current address space plus ``memory_bytes`` and a wall-clock deadline, and returns its (pickled)
result. A crash, a limit or a timeout becomes one :class:`ChildFailed` line. :class:`ChildWorker` keeps
such a child alive and answers calls (the software benchmark device runs its interpreter in one).

The child only runs the function and ``os._exit``s: it never returns into the caller's code, runs no
``atexit`` handlers and flushes none of the parent's buffers. What native code prints in the child (fds
1 and 2) goes to a temporary log whose last lines are quoted in the error.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import resource
import select
import signal
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from edgekd.errors import EdgekdError

MiB = 1 << 20
GiB = 1 << 30
TIMEOUT_ENV = "EDGEKD_NATIVE_TIMEOUT_S"  # overrides the default time limit (seconds)
MEMORY_ENV = "EDGEKD_NATIVE_MEMORY_MB"  # overrides the default memory limit (MiB over the parent's size)
LOG_ENV = "EDGEKD_CHILD_LOG"  # set in the child: the file its native output goes to
_DEFAULT_TIMEOUT_S = 600.0
_DEFAULT_MEMORY = 4 * GiB
_SIGNALS = {
    signal.SIGSEGV: "invalid memory access",
    signal.SIGBUS: "invalid memory access",
    signal.SIGABRT: "aborted",
    signal.SIGFPE: "arithmetic error",
    signal.SIGILL: "illegal instruction",
    signal.SIGKILL: "killed, out of memory?",
}
_HINT = "the file is corrupt or the runtime cannot run it; re-export the model"


class ChildFailed(EdgekdError):
    """The child crashed, ran out of memory or time: ``"<what> <how><at> (<said>); <hint>"``.

    ``kind``: signal | memory | timeout | exit; ``sig``: the signal number that ended it (or None);
    ``at``: where it happened when known (e.g. `` at operator 3 (CONV_2D)``); ``said``: the last lines
    the child printed.
    """

    def __init__(self, what: str, how: str, hint: str, kind: str = "signal", sig: int | None = None,
                 said: str = "", at: str = "") -> None:  # fmt: skip
        self.what, self.how, self.hint, self.kind, self.sig, self.said, self.at = (
            what, how, hint, kind, sig, said, at)  # fmt: skip
        super().__init__(f"{what} {how}{at}{f' ({said})' if said else ''}; {hint}")

    def replace(self, **changes: Any) -> ChildFailed:
        """A copy with some fields changed (e.g. ``at=`` once the failing operator is known)."""
        fields = {k: getattr(self, k) for k in ("what", "how", "hint", "kind", "sig", "said", "at")}
        return ChildFailed(**{**fields, **changes})

    def __reduce__(self) -> tuple[Any, ...]:
        return (ChildFailed, (self.what, self.how, self.hint, self.kind, self.sig, self.said, self.at))


def default_timeout() -> float:
    """Seconds a native call on a model may take (``EDGEKD_NATIVE_TIMEOUT_S``, default 600)."""
    return _env_number(TIMEOUT_ENV, _DEFAULT_TIMEOUT_S, 1.0)


def default_memory() -> int:
    """Bytes a native call may allocate beyond what the process holds (``EDGEKD_NATIVE_MEMORY_MB``,
    default 4 GiB)."""
    return int(_env_number(MEMORY_ENV, _DEFAULT_MEMORY / MiB, 1.0) * MiB)


def _env_number(name: str, default: float, unit: float) -> float:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise EdgekdError(f"{name}={raw!r}: not a positive number; unset it or give a number")
    return value * unit


# ---- the child side --------------------------------------------------------------------------------


def _address_space() -> int:
    """The calling process's current virtual memory size in bytes (0 if unknown)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _limit(memory_bytes: int | None) -> None:
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash leaves no core file behind
    if memory_bytes:
        limit = _address_space() + int(memory_bytes)
        with contextlib.suppress(ValueError, OSError):
            soft, hard = resource.getrlimit(resource.RLIMIT_AS)
            if hard != resource.RLIM_INFINITY:
                limit = min(limit, hard)
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def limit_preexec(memory_bytes: int | None = None) -> Callable[[], None]:
    """A ``subprocess`` ``preexec_fn`` for a fresh native program run on an untrusted model: at most
    ``memory_bytes`` of address space (default :func:`default_memory`), no core file."""
    memory = default_memory() if memory_bytes is None else int(memory_bytes)

    def preexec() -> None:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            resource.setrlimit(resource.RLIMIT_AS, (memory, resource.getrlimit(resource.RLIMIT_AS)[1]))

    return preexec


def exit_reason(returncode: int) -> str:
    """``SIGSEGV, invalid memory access`` for a process killed by a signal, else ``exit code N``."""
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"{name}, {_SIGNALS.get(-returncode, 'killed')}"


def _portable(e: BaseException) -> BaseException:
    """``e`` if it survives pickling, else a RuntimeError with its text."""
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:  # noqa: BLE001
        return RuntimeError(f"{type(e).__name__}: {e}")


def _encode(result: tuple[str, Any]) -> bytes:
    try:
        payload = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as e:  # noqa: BLE001
        payload = pickle.dumps(("err", RuntimeError(f"child result cannot be returned: {e}")))
    return struct.pack("<Q", len(payload)) + payload


def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, Any]:
    try:
        return "ok", fn(*args, **kwargs)
    except BaseException as e:  # noqa: BLE001  (everything goes back to the parent)
        return "err", _portable(e)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _die_with_parent(parent: int) -> None:
    """Linux: SIGKILL this process when its parent ends (a killed child takes its own children along)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent ended before the call above
        os._exit(1)


def _enter_child(log_fd: int, memory_bytes: int | None, parent: int) -> None:
    import faulthandler

    _die_with_parent(parent)
    faulthandler.disable()  # a crash is reported by the parent, not as a Python stack dump (pytest's)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent stops the child
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.environ[LOG_ENV] = f"/proc/self/fd/{log_fd}"
    _limit(memory_bytes)


def _fork(log_fd: int, memory_bytes: int | None, body: Callable[[], None]) -> int:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the child: run the body and leave, whatever happens
        try:
            _enter_child(log_fd, memory_bytes, parent)
            body()
        finally:
            os._exit(0)
    return pid


# ---- the parent side -------------------------------------------------------------------------------


def _read_frame(fd: int, deadline: float) -> bytes | None:
    """One length-prefixed frame from ``fd``; None at EOF; raises TimeoutError past ``deadline``."""
    head = _read_exact(fd, 8, deadline)
    if head is None:
        return None
    body = _read_exact(fd, struct.unpack("<Q", head)[0], deadline)
    return body


def _read_exact(fd: int, n: int, deadline: float) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        ready, _, _ = select.select([fd], [], [], min(left, 1.0))
        if not ready:
            continue
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _log_tail(log: Any) -> str:
    with contextlib.suppress(OSError, ValueError):
        log.seek(0)
        lines = [ln.strip() for ln in log.read().decode("utf-8", "replace").splitlines() if ln.strip()]
        return " | ".join(lines[-3:])[-200:]
    return ""


def _failure(status: int | None, what: str, hint: str, tail: str) -> ChildFailed:
    if status is not None and os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return ChildFailed(what, f"crashed ({name}, {_SIGNALS.get(sig, 'killed')})", hint, sig=sig, said=tail)
    code = os.WEXITSTATUS(status) if status is not None else -1
    return ChildFailed(what, f"stopped without an answer (exit code {code})", hint, "exit", said=tail)


def _memory_error(what: str, memory_bytes: int | None) -> ChildFailed:
    limit = f"{memory_bytes / GiB:.1f} GiB" if memory_bytes else "available"
    return ChildFailed(
        what,
        f"needs more than the {limit} memory limit",
        f"the model declares too much memory (corrupt?); raise {MEMORY_ENV} if it is genuine",
        "memory",
    )


def _timeout(what: str, timeout: float) -> ChildFailed:
    return ChildFailed(
        what,
        f"did not finish within {timeout:g} s",
        f"the model is corrupt or far too big (raise {TIMEOUT_ENV} if it is genuine)",
        "timeout",
    )


def _unpack(frame: bytes, what: str, memory_bytes: int | None) -> Any:
    status, value = pickle.loads(frame)
    if status == "ok":
        return value
    if isinstance(value, MemoryError):
        raise _memory_error(what, memory_bytes) from None
    raise value


def _reap(pid: int, kill: bool) -> int | None:
    """Wait for the child (killing it first when ``kill``); its status, or None if already reaped."""
    if kill:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    try:
        return os.waitpid(pid, 0)[1]
    except ChildProcessError:
        return None


def run_in_child(
    fn: Callable[..., Any],
    *args: Any,
    timeout_s: float | None = None,
    memory_bytes: int | None = None,
    what: str = "native code",
    hint: str = _HINT,
    **kwargs: Any,
) -> Any:
    """``fn(*args, **kwargs)`` run in a forked child; its return value, or its exception re-raised.

    ``timeout_s`` / ``memory_bytes`` default to :func:`default_timeout` / :func:`default_memory`
    (``memory_bytes=0``: no memory limit). A crash, timeout or memory limit raises :class:`ChildFailed`:
    ``"<what> crashed (SIGSEGV, invalid memory access); <hint>"``. ``what`` should name the file and
    the runtime, ``hint`` say what to do. The result must pickle.
    """
    timeout = default_timeout() if timeout_s is None else float(timeout_s)
    memory = default_memory() if memory_bytes is None else int(memory_bytes)
    deadline = time.monotonic() + timeout
    with tempfile.TemporaryFile() as log:
        r, w = os.pipe()

        def body() -> None:
            os.close(r)
            _write_all(w, _encode(_call(fn, args, kwargs)))

        try:
            pid = _fork(log.fileno(), memory, body)
        finally:
            os.close(w)
        frame, status, timed_out = None, None, False
        try:
            frame = _read_frame(r, deadline)
        except TimeoutError:
            timed_out = True
        finally:
            os.close(r)
            status = _reap(pid, kill=frame is None)
        if timed_out:
            raise _timeout(what, timeout)
        if frame is None:
            raise _failure(status, what, hint, _log_tail(log))
    return _unpack(frame, what, memory)


class ChildWorker:
    """A forked child holding state made by ``setup(*args)`` (e.g. an interpreter): ``call(*a)`` runs
    ``state(*a)`` there. A crash or timeout raises :class:`ChildFailed` and ends the worker.

    ``info`` is ``setup``'s second return value (``setup`` returns ``(callable, info)``). Close it (or
    use it as a context manager); the child also exits when this process closes the pipes.
    """

    def __init__(
        self,
        setup: Callable[..., tuple[Callable[..., Any], Any]],
        *args: Any,
        timeout_s: float | None = None,
        memory_bytes: int | None = None,
        what: str = "native code",
        hint: str = _HINT,
    ) -> None:
        self.what, self.hint = what, hint
        self.memory = default_memory() if memory_bytes is None else int(memory_bytes)
        self._log = tempfile.TemporaryFile()  # noqa: SIM115  (closed by close())
        req_r, self._req_w = os.pipe()
        self._res_r, res_w = os.pipe()
        own = (self._req_w, self._res_r)

        def body() -> None:
            for fd in own:
                os.close(fd)
            _serve(setup, args, req_r, res_w)

        try:
            self.pid: int | None = _fork(self._log.fileno(), self.memory, body)
        finally:
            os.close(req_r)
            os.close(res_w)
        self.info = self._answer(default_timeout() if timeout_s is None else float(timeout_s))

    def call(self, *args: Any, timeout_s: float | None = None) -> Any:
        """``state(*args)`` in the child; raises ChildFailed if it crashes or takes over ``timeout_s``."""
        if self.pid is None:
            raise ChildFailed(self.what, "is no longer running", self.hint, "exit")
        with contextlib.suppress(OSError):  # the child is gone: _answer reports how it ended
            _write_all(self._req_w, _encode(("call", args)))
        return self._answer(default_timeout() if timeout_s is None else float(timeout_s))

    def _answer(self, timeout: float) -> Any:
        try:
            frame = _read_frame(self._res_r, time.monotonic() + timeout)
        except TimeoutError:
            self.close()
            raise _timeout(self.what, timeout) from None
        if frame is None:
            status = _reap(self.pid, kill=True) if self.pid is not None else None
            self.pid = None
            err = _failure(status, self.what, self.hint, _log_tail(self._log))
            self.close()
            raise err
        return _unpack(frame, self.what, self.memory)

    def close(self) -> None:
        """Stop the child (if running) and release the pipes."""
        if self.pid is not None:
            _reap(self.pid, kill=True)
            self.pid = None
        for fd in (self._req_w, self._res_r):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._req_w = self._res_r = -1
        with contextlib.suppress(Exception):
            self._log.close()

    def __enter__(self) -> ChildWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def _serve(setup: Callable[..., Any], args: tuple[Any, ...], req: int, res: int) -> None:
    """The worker child's loop: set up, answer ``("call", args)`` frames until the pipe closes."""
    status, value = _call(setup, args, {})
    if status != "ok":
        _write_all(res, _encode((status, value)))
        return
    state, info = value
    _write_all(res, _encode(("ok", info)))
    while True:
        frame = _read_frame(req, float("inf"))
        if frame is None:
            return
        _, call_args = pickle.loads(frame)
        _write_all(res, _encode(_call(state, call_args, {})))


__all__ = [
    "LOG_ENV",
    "MEMORY_ENV",
    "TIMEOUT_ENV",
    "ChildFailed",
    "ChildWorker",
    "default_memory",
    "default_timeout",
    "exit_reason",
    "limit_preexec",
    "run_in_child",
]
