"""One name → object registry, shared by models, augmentation pipelines, scoring conventions and layouts.

Each registry is an explicit object owned by the module that defines its entries (no global table of
tables), so ``import micronet_lib.models`` fills the model registry and nothing else. Unknown names
raise :class:`UnknownNameError` (a ``ValueError``) that names the kind, suggests the closest names and
lists every allowed one, so a typo on the command line or in a notebook parameter says how to fix it.
"""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

__all__ = ["Registry", "UnknownNameError"]

T = TypeVar("T")


class UnknownNameError(ValueError):
    """A name that is not registered; the message lists the allowed names."""


class Registry(Generic[T]):
    """Names → objects of one kind (builders, classes, instances).

    ``kind`` is the word used in messages ("model", "pipeline", …); ``example`` is appended to the
    unknown-name error when a name alone is not enough to show the syntax (e.g. ``'randaugment:2:9'``).
    """

    def __init__(self, kind: str, *, example: str = "") -> None:
        self.kind = kind
        self.example = example
        self._entries: dict[str, T] = {}

    def add(self, name: str, obj: T) -> T:
        """Register ``obj`` under ``name``; a second registration of the same name raises."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = obj
        return obj

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator form of :meth:`add`; the name defaults to the decorated object's ``__name__``."""

        def wrap(obj: T) -> T:
            self.add(name or obj.__name__, obj)
            return obj

        return wrap

    def get(self, name: str) -> T:
        """The object registered under ``name``, or :class:`UnknownNameError` naming the allowed ones."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name: object) -> str:
        close = difflib.get_close_matches(name, self._entries, n=3) if isinstance(name, str) else []
        hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
        example = f" (e.g. {self.example})" if self.example else ""
        return f"unknown {self.kind} {name!r}{hint}; allowed: {', '.join(self.names())}{example}"

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
