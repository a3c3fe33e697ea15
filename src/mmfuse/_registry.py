"""One generic registry that every component family (fusions, data sets, ...) uses.

A family creates one :class:`Registry`; components register with its decorator; users read it through the
family's ``list_*``, ``create_*`` and ``is_*`` functions. Duplicate names are refused and an unknown name
raises a ``ValueError`` that lists the valid ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of components of one family.

    Args:
        family: What the entries are, in words, used in error messages ("fusion", "data set").

    Example:
        >>> reg: Registry[type] = Registry("widget")
        >>> @reg.register("plain")
        ... class Plain: ...
        >>> reg.names()
        ['plain']
        >>> reg.get("plain").__name__
        'Plain'
    """

    def __init__(self, family: str) -> None:
        self.family = family
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Return a decorator that registers its argument under ``name``.

        Raises:
            ValueError: if ``name`` is empty, not lower-case kebab/snake case, or already registered.
        """
        if not isinstance(name, str) or not name or name != name.strip().lower() or " " in name:
            raise ValueError(
                f"The name of a {self.family} must be a non-empty lower-case string without spaces. Got {name!r}."
            )

        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(
                    f"A {self.family} named {name!r} is already registered ({self._entries[name]!r}); "
                    "choose another name."
                )
            self._entries[name] = obj
            return obj

        return decorator

    def add(self, name: str, obj: T) -> T:
        """Register ``obj`` under ``name`` (the non-decorator form)."""
        return self.register(name)(obj)

    def get(self, name: str) -> T:
        """Return the entry called ``name``.

        Raises:
            ValueError: naming the unknown name and listing the valid ones.
        """
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            valid = ", ".join(self.names()) or "(none registered)"
            raise ValueError(f"Unknown {self.family} {name!r}. Valid names: {valid}.") from None

    def names(self) -> list[str]:
        """Return the registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.family!r}, names={self.names()})"
