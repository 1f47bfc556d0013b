"""A tiny name -> object registry used for models, losses, methods and data sets."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Generic, TypeVar

from edgekd.errors import EdgekdError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise EdgekdError(
                f"unknown {self.kind} {name!r}; valid names: {', '.join(sorted(self._items))}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items


def summary_line(obj: object) -> str:
    """The first line of ``obj``'s docstring (what ``edgekd methods`` shows for a registered entry)."""
    doc = inspect.getdoc(obj) or ""
    return doc.splitlines()[0] if doc else ""
