"""IDX files (MNIST format), gzipped or raw: big-endian magic 0x000008TT + ndim, dims as uint32, data."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from edgekd.errors import EdgekdError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (``.gz`` or raw) into a numpy array."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(2)
        opener = gzip.open if head == b"\x1f\x8b" else open
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise EdgekdError(f"{path}: cannot read IDX file ({e})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise EdgekdError(f"{path}: not an IDX file (bad magic number); expected MNIST-format data")
    dtype = np.dtype(_DTYPES[data[2]])
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise EdgekdError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    count = int(np.prod(dims)) if dims else 0
    body = data[4 + 4 * ndim :]
    if len(body) != count * dtype.itemsize:
        raise EdgekdError(
            f"{path}: IDX header says {count} values of {dtype.itemsize} bytes but the file holds {len(body)} bytes"
        )
    return np.frombuffer(body, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def find_idx(folder: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem, stem.replace("-idx", ".idx")):
        if (folder / name).exists():
            return folder / name
    return None
