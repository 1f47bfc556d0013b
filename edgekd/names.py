"""The one rule for names that become paths (run, network, board, target, stage, generation, data set
option): a safe identifier, checked where the name is read, and resolved paths that stay under their
parent.

A safe name is 1-128 characters of letters, digits, ``-``, ``_`` and ``.``, and is not ``.`` or ``..``
alone: no separators, no absolute paths, no traversal, nothing a shell or a terminal treats specially.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from edgekd.errors import EdgekdError

_SAFE_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
MAX_NAME_LENGTH = 128


def is_safe_name(value: Any) -> bool:
    """True when ``value`` is a string that may be used as one path component."""
    return isinstance(value, str) and value not in (".", "..") and _SAFE_NAME.fullmatch(value) is not None


def check_safe_name(value: Any, source: str, key: str) -> str:
    """Return ``value`` if it is a safe name, else raise one line naming ``source`` and ``key``.

    ``source`` is the file (or ``--option``) the name came from, ``key`` where in it (``name``,
    ``networks.peer1``, ``data.options.machines[0]``).
    """
    if is_safe_name(value):
        return value
    shown = repr(value) if isinstance(value, str) and len(value) <= 80 else f"a {type(value).__name__}"
    raise EdgekdError(
        f"{source}: {key} {shown} is not a safe name; use 1-{MAX_NAME_LENGTH} letters, digits, '-', '_' "
        "or '.' (not '.' or '..' alone, no '/')"
    )


def child_path(parent: str | Path, name: Any, source: str, key: str) -> Path:
    """``parent / name`` for a checked safe name, verified (after resolving links) to stay under ``parent``."""
    name = check_safe_name(name, source, key)
    parent = Path(parent)
    path = parent / name
    base = parent.resolve()
    resolved = path.resolve()
    if resolved != base and base not in resolved.parents:
        raise EdgekdError(f"{source}: {key} {name!r} resolves outside {parent} (a link?); remove the link")
    return path


__all__ = ["MAX_NAME_LENGTH", "check_safe_name", "child_path", "is_safe_name"]
