"""Which user-code model names (``package.module:Callable``) may be imported: torch-free, so a recipe is
checked before anything heavy is imported.

A code reference is honoured only when the user typed it (the command line, Python code) or trusted the
file it came from with ``--trust-model-code``; a name read from a recipe or a checkpoint is data.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

# Names of user models (``module:Class``) that may be built from a file. ``"*"`` trusts every name.
_TRUSTED_CODE: set[str] = set()


def is_code_reference(name: object) -> bool:
    """True for ``package.module:Callable`` names, which import and call user code."""
    return isinstance(name, str) and ":" in name


def is_trusted(name: str) -> bool:
    """True when ``name`` may be imported although it was read from a file."""
    return "*" in _TRUSTED_CODE or name in _TRUSTED_CODE


def trusts_all() -> bool:
    """True while ``--trust-model-code`` is in effect."""
    return "*" in _TRUSTED_CODE


@contextlib.contextmanager
def trust_model_code(names: Iterable[str] | bool) -> Iterator[None]:
    """Allow the given user-model names (or every name, with ``True``) to be built from files."""
    added = {"*"} if names is True else {n for n in (names or []) if is_code_reference(n)}
    added -= _TRUSTED_CODE
    _TRUSTED_CODE.update(added)
    try:
        yield
    finally:
        _TRUSTED_CODE.difference_update(added)


__all__ = ["is_code_reference", "is_trusted", "trust_model_code", "trusts_all"]
