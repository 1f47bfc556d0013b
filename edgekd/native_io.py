"""Point the process's own file descriptors (1, 2) elsewhere: what native libraries print.

LiteRT prints ``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.`` on fd 2, TFLite Micro its
allocation log on fd 1 and onnx2tf / litert-torch pages of C++ logging on both; none of that goes
through Python's streams, so the only way to keep it off the terminal (or in a log) is to point the
descriptors elsewhere for a block. :func:`redirect_fds` is the one place that does it: descriptors are
process-wide, so it holds a lock (re-entrant: nested blocks in one thread are fine), flushes Python's
streams and C stdio before and after, and always restores the descriptors.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from typing import IO

_FD_LOCK = threading.RLock()


def _flush_all() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).fflush(None)  # C stdio buffers, written while the descriptor still points there


@contextlib.contextmanager
def redirect_fds(sink: IO[bytes] | IO[str] | None = None, fds: tuple[int, ...] = (1, 2), *,
                 python_streams: bool = False) -> Iterator[None]:  # fmt: skip
    """Point ``fds`` at the open file ``sink`` (default ``/dev/null``) inside the block.

    ``python_streams`` also sends ``sys.stdout`` / ``sys.stderr`` to ``sink`` (they may not write to
    fds 1/2 at all, e.g. under pytest's capture); ``sink`` is then a text file.
    """
    with _FD_LOCK, contextlib.ExitStack() as stack:
        if sink is None:
            sink = stack.enter_context(open(os.devnull, "wb"))  # noqa: SIM115
        _flush_all()
        saved = [os.dup(fd) for fd in fds]
        try:
            for fd in fds:
                os.dup2(sink.fileno(), fd)
            if python_streams:
                stack.enter_context(contextlib.redirect_stdout(sink))  # type: ignore[arg-type]
                stack.enter_context(contextlib.redirect_stderr(sink))  # type: ignore[arg-type]
            try:
                yield
            finally:
                _flush_all()
                with contextlib.suppress(Exception):
                    sink.flush()
        finally:
            for fd, old in zip(fds, saved, strict=True):
                os.dup2(old, fd)
                os.close(old)
