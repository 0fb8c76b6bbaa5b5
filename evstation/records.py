"""`@record`: a frozen, slotted dataclass whose `__eq__`, `__hash__` and `__repr__` are not compiled.

Start-up cost (issue 9): Python 3.11's `dataclasses` compiles every generated method from source, ~80 µs
each, and a frozen dataclass has six. `record` lets `dataclasses` generate what must be specific to the
class (`__init__`, the frozen `__setattr__`/`__delattr__`, `__match_args__`, the slots) and gives it
equality, hash and repr built from shared functions and a C `attrgetter` instead, with the same results
as the generated ones (tests/test_records.py compares them with `@dataclass(frozen=True, slots=True)`).
It never changes anything but how those three methods are made.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from operator import attrgetter
from typing import Any, TypeVar, dataclass_transform

__all__ = ["record"]

_T = TypeVar("_T")


def _values(names: tuple[str, ...]) -> Callable[[object], tuple[Any, ...]]:
    """A function giving the tuple of the named attributes, as the generated methods build it."""
    if not names:
        return lambda obj: ()
    if len(names) == 1:
        single = attrgetter(names[0])
        return lambda obj: (single(obj),)
    # With two or more names attrgetter returns the tuple.
    return attrgetter(*names)


def _methods(cls: type) -> None:
    fields = dataclasses.fields(cls)
    compared = _values(tuple(f.name for f in fields if f.compare))
    # dataclasses: a field's `hash=None` means "hash it if it is compared".
    hashed = _values(tuple(f.name for f in fields if (f.compare if f.hash is None else f.hash)))
    shown = tuple(f.name for f in fields if f.repr)

    def __eq__(self: object, other: object) -> bool:
        # As generated: only the same class compares; tuples, so identical members are equal (NaN).
        if other.__class__ is self.__class__:
            return compared(self) == compared(other)
        return NotImplemented

    def __hash__(self: object) -> int:
        return hash(hashed(self))

    # The generated repr guards against an object that contains itself, per thread.
    running: set[tuple[int, int]] = set()

    def __repr__(self: object) -> str:
        key = (id(self), threading.get_ident())
        if key in running:
            return "..."
        running.add(key)
        try:
            inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in shown)
        finally:
            running.discard(key)
        return f"{self.__class__.__qualname__}({inner})"

    for method in (__eq__, __hash__, __repr__):
        method.__qualname__ = f"{cls.__qualname__}.{method.__name__}"
        setattr(cls, method.__name__, method)


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field, dataclasses.Field))
def record(cls: type[_T]) -> type[_T]:
    """`@dataclass(frozen=True, slots=True)` with the same eq, hash and repr, made without compiling."""
    if any(name in cls.__dict__ for name in ("__eq__", "__hash__", "__repr__")):
        raise TypeError(f"{cls.__qualname__}: @record makes __eq__, __hash__ and __repr__; use @dataclass")
    made = dataclasses.dataclass(frozen=True, slots=True, eq=False, repr=False)(cls)
    _methods(made)
    return made
