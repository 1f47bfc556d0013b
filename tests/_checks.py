"""Checks shared by the security tests: a one-line error, a tree that did not change, a recipe file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml


def write_yaml(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def tree(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` with its content hash: what 'nothing changed' compares."""
    out = {}
    for p in sorted(root.rglob("*")):
        key = str(p.relative_to(root))
        out[key] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


def one_line_error(code: int, err: str, *parts: str, no_escapes: bool = False) -> None:
    """Exit 2, one ``error:`` line holding every part, no traceback (and, if asked, no raw ESC)."""
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert "Traceback" not in err
    if no_escapes:
        assert "\x1b" not in err
    for part in parts:
        assert part in err, (part, err)
