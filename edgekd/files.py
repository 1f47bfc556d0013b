"""Reading untrusted files with a type and size check first.

Every file a user passes may be hostile: a FIFO named ``model.pt`` blocks a plain ``open`` forever, a
link to ``/dev/zero`` reads until memory runs out. :func:`regular_file` refuses anything but a regular
file (after following links) and :func:`read_bytes_capped` reads at most a stated number of bytes.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from edgekd.errors import EdgekdError

MiB = 1 << 20
# Caps for the files edgekd reads. Generous for real models, far below what would exhaust the machine.
MAX_TFLITE_BYTES = 256 * MiB
MAX_ONNX_BYTES = 1024 * MiB
MAX_CHECKPOINT_BYTES = 2048 * MiB
MAX_TEXT_BYTES = 16 * MiB  # recipes, board files, JSON records
MAX_NPZ_BYTES = 4096 * MiB  # total uncompressed array bytes of one .npz


def regular_file(path: str | os.PathLike, what: str = "file") -> Path:
    """``path`` as a Path if it is an existing regular file (links followed), else one EdgekdError line."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise EdgekdError(f"{p}: {what} not found") from None
    except OSError as e:
        raise EdgekdError(f"{p}: cannot read {what} ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise EdgekdError(f"{p}: is a folder, not a {what}")
    if not stat.S_ISREG(st.st_mode):
        raise EdgekdError(f"{p}: not a regular file (a FIFO, device or socket), so not a {what}; pass a file")
    return p


def check_size(path: str | os.PathLike, limit: int, what: str = "file") -> int:
    """The size of regular file ``path``; one EdgekdError line if it is over ``limit`` bytes."""
    p = regular_file(path, what)
    size = p.stat().st_size
    if size > limit:
        raise EdgekdError(
            f"{p}: {size / MiB:.1f} MiB is over the {limit / MiB:.0f} MiB limit for a {what}; "
            "is it the right file?"
        )
    return size


def read_bytes_capped(path: str | os.PathLike, limit: int, what: str = "file") -> bytes:
    """The bytes of regular file ``path``, refusing files over ``limit`` bytes (also if it grows)."""
    p = regular_file(path, what)
    check_size(p, limit, what)
    try:
        with open(p, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise EdgekdError(f"{p}: cannot read {what} ({e.strerror or e})") from None
    if len(data) > limit:
        raise EdgekdError(f"{p}: over the {limit / MiB:.0f} MiB limit for a {what}; is it the right file?")
    return data


__all__ = [
    "MAX_CHECKPOINT_BYTES",
    "MAX_NPZ_BYTES",
    "MAX_ONNX_BYTES",
    "MAX_TEXT_BYTES",
    "MAX_TFLITE_BYTES",
    "MiB",
    "check_size",
    "read_bytes_capped",
    "regular_file",
]
