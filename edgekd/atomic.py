"""Atomic writes: temp file in the same folder, fsync, rename. A crash never leaves half a file."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# A write that fails for lack of space; the CLI turns it into one line naming the file (edgekd.cli).
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _named(e: OSError, path: Path, tmp: Path | None = None) -> OSError:
    """``e`` itself, or for a full disk, the same error naming ``path`` where it names no file (or a file
    in the temporary folder ``tmp`` that is built for ``path``: then the file it will be in ``path``)."""
    if e.errno not in _DISK_FULL:
        return e
    name = Path(e.filename) if e.filename else None
    if name is not None and tmp is not None and tmp in name.parents:
        name = path / name.relative_to(tmp)
    elif name is None or (tmp is not None and name == tmp):
        name = path
    else:
        return e
    return OSError(e.errno, e.strerror or os.strerror(e.errno), str(name))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see either the old or the new file, never a mix.

    The file gets the permissions of an ordinary new file (0666 less the umask, usually 0644), not the
    0600 of a temp file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        named = _named(e, path, Path(tmp)) if isinstance(e, OSError) else e
        if named is not e:
            raise named from e
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> Path:
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Build a folder in a temp sibling; on success it replaces ``path``; on error ``path`` is untouched and
    parent folders created for it are removed again."""
    path = Path(path)
    created = [p for p in reversed(path.parents) if not p.exists()]  # removed again if we fail
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        for p in reversed(created):  # a failed build leaves no empty folders behind
            with contextlib.suppress(OSError):
                p.rmdir()
        named = _named(e, path, tmp) if isinstance(e, OSError) else e
        if named is not e:
            raise named from e
        raise
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.old.{os.getpid()}")
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
