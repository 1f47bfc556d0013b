"""YAML loading with the number rules a user expects.

PyYAML follows YAML 1.1, where ``1e-3`` and ``1e6`` (no dot) are *strings*; YAML 1.2 and every user read
them as floats. :func:`safe_load` is ``yaml.safe_load`` with the YAML 1.2 float rule, so ``lr: 1e-3``
and ``--set train.lr=1e6`` are numbers. Nothing else changes (no Python objects are ever constructed).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class _Loader(yaml.SafeLoader):
    """SafeLoader whose float resolver also accepts exponent notation without a dot (YAML 1.2)."""


_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
for _ch in list("-+0123456789."):
    _Loader.yaml_implicit_resolvers[_ch] = [
        (tag, rx)
        for tag, rx in _Loader.yaml_implicit_resolvers.get(_ch, [])
        if tag != "tag:yaml.org,2002:float"
    ]
    _Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, [_ch])


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` with YAML 1.2 floats (``1e-3`` is 0.001, not a string)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506  (a SafeLoader subclass)


def read_yaml_file(path: str | Path, what: str = "YAML file") -> Any:
    """Read and parse a YAML file; every failure is one EdgekdError line naming the file (and the line)."""
    from edgekd.errors import EdgekdError

    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise EdgekdError(f"{p}: {what} not found") from None
    except IsADirectoryError:
        raise EdgekdError(f"{p}: is a folder; pass a {what} (.yaml)") from None
    except OSError as e:
        raise EdgekdError(f"{p}: cannot read {what} ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise EdgekdError(f"{p}: not a text file, so not a {what}; pass a .yaml file") from None
    if "\x00" in text:
        raise EdgekdError(f"{p}: binary data, not a {what}; pass a .yaml file")
    try:
        return safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise EdgekdError(f"{p}: not valid YAML{where}; fix the syntax of this {what}") from None
