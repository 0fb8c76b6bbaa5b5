"""`@record`: a frozen, slotted dataclass made with two compiled methods instead of six.

Start-up cost (issue 9): Python 3.11's `dataclasses` compiles every generated method from source, ~80 µs
each, and a frozen dataclass has six (`__init__`, `__repr__`, `__eq__`, `__hash__`, `__setattr__`,
`__delattr__`). `record` lets `dataclasses` generate only what must be specific to the class (`__init__`,
`__match_args__`, the slots) and gives it equality, hash and repr built from shared functions over a C
`attrgetter`, with the same results as the generated ones, and immutability from a shared write-once
`__setattr__`: `__init__` (or copy / pickle, on a new instance) fills each slot once, any later
assignment or deletion raises `FrozenInstanceError` as a frozen dataclass does. tests/test_records.py
compares all of it with `@dataclass(frozen=True, slots=True)`. The price: constructing an instance costs
~0.3 µs more per field (the write-once check), against ~150 µs less per class at import.

At run time `dataclasses` sees a non-frozen class, so a record and a stdlib frozen dataclass cannot
inherit from each other (dataclasses refuses the mix); mypy sees a frozen one (`dataclass_transform`).
"""

from __future__ import annotations

import dataclasses
import reprlib
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

    # As generated: guarded (per thread) against an object that contains itself.
    @reprlib.recursive_repr()
    def __repr__(self: object) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in shown)
        return f"{self.__class__.__qualname__}({inner})"

    for method in (__eq__, __hash__, __repr__):
        method.__qualname__ = f"{cls.__qualname__}.{method.__name__}"
        setattr(cls, method.__name__, method)


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field, dataclasses.Field))
def record(cls: type[_T]) -> type[_T]:
    """`@dataclass(frozen=True, slots=True)`: the same behaviour, three compiled methods fewer and a
    write-once `__setattr__` / `__delattr__` shared by every record in place of two compiled ones."""
    if any(name in cls.__dict__ for name in ("__eq__", "__hash__", "__repr__")):
        raise TypeError(f"{cls.__qualname__}: @record makes __eq__, __hash__ and __repr__; use @dataclass")
    if any(not f.init for f in getattr(cls, "__dataclass_fields__", {}).values()) or any(
        isinstance(v, dataclasses.Field) and not v.init for v in cls.__dict__.values()
    ):
        # Such a field would stay unset after __init__, and so writable once later.
        raise TypeError(f"{cls.__qualname__}: every @record field is set by __init__ (no init=False)")
    made = dataclasses.dataclass(slots=True, eq=False, repr=False)(cls)
    _methods(made)
    made.__setattr__ = _set_once  # type: ignore[method-assign]
    made.__delattr__ = _never_delete  # type: ignore[method-assign]
    return made


def _set_once(self: object, name: str, value: object) -> None:
    # An unset slot is how `__init__` (and copy or pickle, on a new instance) finds a field; a set one
    # is frozen. A name that is no slot falls through to object's AttributeError.
    if hasattr(self, name):
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")
    object.__setattr__(self, name, value)


def _never_delete(self: object, name: str) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")
