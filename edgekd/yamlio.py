"""YAML loading with the number rules a user expects.

PyYAML follows YAML 1.1, where ``1e-3`` and ``1e6`` (no dot) are *strings*; YAML 1.2 and every user read
them as floats. :func:`safe_load` is ``yaml.safe_load`` with the YAML 1.2 float rule, so ``lr: 1e-3``
and ``--set train.lr=1e6`` are numbers. Nothing else changes (no Python objects are ever constructed).

A document may not expand beyond :data:`MAX_YAML_NODES` nodes or :data:`MAX_YAML_CHARS` scalar characters
with its aliases followed (a 700-byte "billion laughs" recipe would otherwise fill memory when it is
copied, compared or written back), nor refer to itself; files are read with a size cap (edgekd.files).
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


# Far above any recipe, board or calibration file (hundreds of nodes), far below what exhausts memory.
MAX_YAML_NODES = 100_000
MAX_YAML_CHARS = 16 << 20


class YamlBomb(yaml.YAMLError):
    """A document whose aliases expand beyond the bounds, or that contains itself."""


def expanded_size(root: yaml.Node) -> tuple[int, int]:
    """(nodes, scalar characters) of the document rooted at ``root`` with every alias followed.

    Shared nodes (aliases) are sized once and counted at each use; a node that contains itself raises
    :class:`YamlBomb`, as does a document over the bounds (checked as it is counted, so it stays fast)."""
    sizes: dict[int, tuple[int, int]] = {}
    open_ids: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if key in sizes and not done:
            continue
        if isinstance(node, yaml.ScalarNode):
            sizes[key] = (1, len(node.value))
            continue
        children = (
            [c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode) else node.value
        )
        if done:
            open_ids.discard(key)
            nodes = 1 + sum(sizes[id(c)][0] for c in children)
            chars = sum(sizes[id(c)][1] for c in children)
            if nodes > MAX_YAML_NODES or chars > MAX_YAML_CHARS:
                raise YamlBomb(
                    f"expands to {nodes:,} nodes and {chars:,} characters through its aliases (&anchor, "
                    f"*alias), over the limit of {MAX_YAML_NODES:,} nodes and {MAX_YAML_CHARS:,} characters"
                )
            sizes[key] = (nodes, chars)
            continue
        if key in open_ids:
            raise YamlBomb("refers to itself through an alias (&anchor inside its own *alias)")
        open_ids.add(key)
        stack.append((node, True))
        for c in children:
            if id(c) in open_ids:
                raise YamlBomb("refers to itself through an alias (&anchor inside its own *alias)")
            if id(c) not in sizes:
                stack.append((c, False))
    return sizes[id(root)]


class _Loader(yaml.SafeLoader):
    """SafeLoader whose float resolver also accepts exponent notation without a dot (YAML 1.2), and that
    refuses documents expanding beyond the bounds through aliases (:func:`expanded_size`)."""

    def compose_document(self) -> yaml.Node:
        node = super().compose_document()
        if node is not None:
            expanded_size(node)
        return node


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
    from edgekd.files import MAX_TEXT_BYTES, read_bytes_capped

    p = Path(path)
    if p.is_dir():
        raise EdgekdError(f"{p}: is a folder; pass a {what} (.yaml)")
    try:  # a FIFO, a device or a huge file is refused before anything is read
        text = read_bytes_capped(p, MAX_TEXT_BYTES, what).decode("utf-8")
    except UnicodeDecodeError:
        raise EdgekdError(f"{p}: not a text file, so not a {what}; pass a .yaml file") from None
    if "\x00" in text:
        raise EdgekdError(f"{p}: binary data, not a {what}; pass a .yaml file")
    try:
        return safe_load(text)
    except YamlBomb as e:
        raise EdgekdError(f"{p}: this {what} {e}; write the values out instead of nesting aliases") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise EdgekdError(f"{p}: not valid YAML{where}; fix the syntax of this {what}") from None
