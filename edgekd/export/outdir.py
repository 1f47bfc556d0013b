"""The export folder a user names with ``-o``: edgekd replaces it as a whole (built in a temporary
sibling, then renamed), so it must be new, empty or an earlier edgekd export; never a file, a link or
a folder of the user's own, which the replacement would delete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from edgekd.errors import EdgekdError
from edgekd.files import MAX_TEXT_BYTES, read_bytes_capped
from edgekd.provenance import schema_of

# A folder holding one of these (an export.json edgekd wrote: schema edgekd-export/N, or the older
# key "edgekd_export"; or the C backend's
# c_model.json, alone or in c/ as older versions wrote it) was written by edgekd export.
C_MARKERS = ("c_model.json", "c/c_model.json")


def is_export_folder(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder an earlier ``edgekd export`` wrote (or an empty one)."""
    p = Path(path)
    if not p.is_dir() or p.is_symlink():
        return False
    if not any(p.iterdir()):
        return True
    record = p / "export.json"
    if record.is_file() and not record.is_symlink():
        try:
            data = json.loads(read_bytes_capped(record, MAX_TEXT_BYTES, "export record"))
        except (EdgekdError, ValueError):  # unreadable, too big, not JSON: not ours
            data = None
        if (schema_of(data) or ("",))[0] == "export":
            return True
    return any((p / m).is_file() for m in C_MARKERS)


def check_output_folder(path: str | os.PathLike, option: str = "-o") -> Path:
    """``path`` if edgekd may (re)place an export there, else one EdgekdError line saying why."""
    p = Path(path)
    if p.is_symlink():
        raise EdgekdError(f"{option} {p}: is a link; pass the real folder or a new folder name")
    if p.exists() and not p.is_dir():
        raise EdgekdError(f"{option} {p}: is a file, not an export folder; pass a new folder name")
    if p.exists() and not is_export_folder(p):
        raise EdgekdError(
            f"{option} {p}: is a folder that is not an earlier edgekd export (no export.json), and "
            "exporting there would replace it; pass a new folder name or an empty folder"
        )
    for parent in p.parents:  # the nearest existing ancestor must be a folder
        if parent.exists():
            if not parent.is_dir():
                raise EdgekdError(f"{option} {p}: {parent} is a file, not a folder; pass another path")
            break
    return p


__all__ = ["check_output_folder", "is_export_folder"]
