"""Reading untrusted files with a type and size check first.

Every file a user passes may be hostile: a FIFO named ``model.pt`` blocks a plain ``open`` forever, a
link to ``/dev/zero`` reads until memory runs out. :func:`regular_file` refuses anything but a regular
file (after following links) and :func:`read_bytes_capped` reads at most a stated number of bytes.
:func:`load_npz` reads an ``.npz`` only after every member's ``.npy`` header (shape, dtype) was checked
against a cap on the uncompressed bytes, so a 1 MB zip bomb is refused before anything is allocated.
"""

from __future__ import annotations

import hashlib
import math
import os
import stat
import zipfile
import zlib
from pathlib import Path
from typing import Any

from edgekd.errors import EdgekdError

MiB = 1 << 20
# Caps for the files edgekd reads. Generous for real models, far below what would exhaust the machine.
MAX_TFLITE_BYTES = 256 * MiB
MAX_ONNX_BYTES = 1024 * MiB
MAX_CHECKPOINT_BYTES = 2048 * MiB
MAX_TEXT_BYTES = 16 * MiB  # recipes, board files, JSON records
MAX_NPZ_BYTES = 4096 * MiB  # total uncompressed array bytes of one .npz data set (data: {name: npz})
MAX_EVAL_NPZ_BYTES = 256 * MiB  # an .npz of samples: profile --data, export --calibration / --eval


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


def file_sha256(path: str | os.PathLike, what: str = "file") -> str:
    """The sha256 of a regular file, read in 1 MiB chunks (a FIFO or a link to a device is never read)."""
    h = hashlib.sha256()
    with open(regular_file(path, what), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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


def _npy_header(f: Any) -> tuple[tuple[int, ...], Any]:
    """(shape, dtype) from the ``.npy`` header at the start of the open member ``f``."""
    from numpy.lib import format as npy

    version = npy.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = npy.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, _, dtype = npy.read_array_header_2_0(f)
    else:  # 3.0: utf-8 field names, otherwise the same
        shape, _, dtype = npy._read_array_header(f, version)
    return tuple(shape), dtype


def npz_headers(
    path: str | os.PathLike, limit: int, what: str = "npz"
) -> dict[str, tuple[tuple[int, ...], Any]]:
    """Array name -> (shape, dtype) of every member of the ``.npz`` at ``path``, read from the ``.npy``
    headers only. One EdgekdError line for: not a regular file, not a zip or a truncated one, a member
    that is not an array, object arrays (pickles), a header that claims more bytes than its member holds,
    or arrays over ``limit`` bytes uncompressed in total."""
    p = regular_file(path, what)
    out: dict[str, tuple[tuple[int, ...], Any]] = {}
    total = 0
    try:
        with zipfile.ZipFile(p) as zf:
            for info in zf.infolist():
                key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                with zf.open(info) as f:
                    shape, dtype = _npy_header(f)
                    header = f.tell()
                if dtype.hasobject:
                    raise EdgekdError(
                        f"{p}: array {key!r} holds Python objects (dtype object), which edgekd never unpickles; "
                        "save plain numeric arrays (numpy.savez)"
                    )
                nbytes = math.prod(shape) * dtype.itemsize
                if header + nbytes != info.file_size:
                    raise EdgekdError(
                        f"{p}: array {key!r} claims shape {shape} {dtype} ({nbytes:,} bytes) but its archive member "
                        f"holds {info.file_size - header:,}; the file is corrupt, save it again with numpy.savez"
                    )
                total += nbytes
                if total > limit:
                    raise EdgekdError(
                        f"{p}: array {key!r} {shape} {dtype} is {nbytes / MiB:,.1f} MiB uncompressed; the arrays are "
                        f"over the {limit / MiB:,.0f} MiB limit for {what} (a zip bomb?); pass fewer samples"
                    )
                out[key] = (shape, dtype)
    except EdgekdError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:100]
        raise EdgekdError(
            f"{p}: cannot read npz ({reason}; truncated or not made by numpy.savez); save it again"
        ) from None
    return out


def load_npz(path: str | os.PathLike, limit: int = MAX_NPZ_BYTES, what: str = "npz") -> dict[str, Any]:
    """The arrays of the ``.npz`` at ``path`` (``allow_pickle=False``), loaded only after
    :func:`npz_headers` accepted them; every failure is one EdgekdError line naming the file."""
    import numpy as np

    p = Path(path)
    npz_headers(p, limit, what)
    try:
        with np.load(p, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:100]
        raise EdgekdError(f"{p}: cannot read npz ({reason}; truncated or corrupt); save it again") from None


__all__ = [
    "MAX_CHECKPOINT_BYTES",
    "MAX_EVAL_NPZ_BYTES",
    "MAX_NPZ_BYTES",
    "MAX_ONNX_BYTES",
    "MAX_TEXT_BYTES",
    "MAX_TFLITE_BYTES",
    "MiB",
    "check_size",
    "load_npz",
    "npz_headers",
    "read_bytes_capped",
    "regular_file",
]
