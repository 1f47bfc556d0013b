"""Silence what native libraries print straight to the terminal (not through Python's logging).

LiteRT prints ``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.`` on file descriptor 2 when an
interpreter applies its default delegate; no environment variable turns it off. The context manager
points fd 2 at ``/dev/null`` for the block and restores it, so edgekd's own messages stay the only output.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Redirect the process's fd 2 to /dev/null inside the block (Python's ``sys.stderr`` is flushed first)."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # captured streams (pytest) have no real fd
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        with contextlib.suppress(Exception):
            import ctypes

            ctypes.CDLL(None).fflush(None)  # flush C stdio buffers while fd 2 still points at /dev/null
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)
