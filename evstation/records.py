"""`@record`: a frozen, slotted dataclass made without compiling a method for it.

Start-up cost (issue 9): Python 3.11's `dataclasses` compiles every generated method from source (40 to
90 µs each), and a frozen dataclass has six (`__init__`, `__repr__`, `__eq__`, `__hash__`, `__setattr__`,
`__delattr__`); it also builds an `inspect.Signature` for the docstring of a class that has none.
`record` lets `dataclasses` make only the fields, `__match_args__` and the slots, and gives the class
shared functions for the rest, with the same results as the generated ones:
- `__init__` binds the arguments to the fields (positional, keyword, defaults, default factories,
  keyword-only fields, `__post_init__`) and fills each slot with `object.__setattr__`, as a frozen
  dataclass's does. What the generated one refuses when made (a required field after one with a
  default) is refused at the class's definition; an `InitVar` is refused (use `@dataclass`). It is
  faster to call than the compiled one of a write-once class (each assignment of which goes through
  `__setattr__`) and raises the same `TypeError`s for a wrong call;
  `inspect.signature` still shows the fields (`__signature__`, built when asked for);
- equality, hash and repr from a C `attrgetter` over the compared / hashed / shown fields;
- immutability from a write-once `__setattr__`: copy and pickle fill each slot of a new instance once,
  any later assignment or deletion raises `FrozenInstanceError`.
tests/test_records.py compares all of it with `@dataclass(frozen=True, slots=True)`.

At run time `dataclasses` sees a non-frozen class, so a record and a stdlib frozen dataclass cannot
inherit from each other (dataclasses refuses the mix); mypy sees a frozen one (`dataclass_transform`).
"""

from __future__ import annotations

import dataclasses
import inspect
import reprlib
from collections.abc import Callable
from operator import attrgetter
from typing import Any, NoReturn, TypeVar, dataclass_transform

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


def _methods(cls: type, fields: tuple[dataclasses.Field[Any], ...]) -> None:
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
    """`@dataclass(frozen=True, slots=True)`: the same behaviour, with shared methods instead of compiled
    ones (see the module's docstring)."""
    if any(name in cls.__dict__ for name in ("__init__", "__eq__", "__hash__", "__repr__")):
        raise TypeError(
            f"{cls.__qualname__}: @record makes __init__, __eq__, __hash__ and __repr__; use @dataclass"
        )
    if any(not f.init for f in getattr(cls, "__dataclass_fields__", {}).values()) or any(
        isinstance(v, dataclasses.Field) and not v.init for v in cls.__dict__.values()
    ):
        # Such a field would stay unset after __init__, and so writable once later.
        raise TypeError(f"{cls.__qualname__}: every @record field is set by __init__ (no init=False)")
    undocumented = cls.__doc__ is None
    if undocumented:
        cls.__doc__ = cls.__name__  # else dataclasses builds a Signature for it: replaced below
    made = dataclasses.dataclass(init=False, slots=True, eq=False, repr=False)(cls)
    fields = dataclasses.fields(made)  # type: ignore[arg-type]  # a dataclass now
    _check_init_fields(made, fields)
    _methods(made, fields)
    made.__init__ = _initializer(made, fields)  # type: ignore[method-assign]
    made.__signature__ = _Signature()  # type: ignore[attr-defined]
    made.__setattr__ = _set_once  # type: ignore[method-assign]
    made.__delattr__ = _never_delete  # type: ignore[method-assign]
    if undocumented:
        made.__doc__ = f"{made.__name__}({', '.join(f.name for f in fields)})"
    return made


def _check_init_fields(cls: type, fields: tuple[dataclasses.Field[Any], ...]) -> None:
    """What the generated `__init__` refuses when it is made (with `init=False` dataclasses checks none
    of it): a class no call could build as declared is an error at its definition, not later."""
    with_default = None
    for f in fields:
        if f.kw_only:
            continue
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
            with_default = f.name
        elif with_default is not None:
            raise TypeError(f"{cls.__qualname__}: non-default argument {f.name!r} follows default argument")
    # An InitVar is an argument of `__init__` for `__post_init__` only: not bound here.
    init_only = [
        name
        for name, f in cls.__dataclass_fields__.items()  # type: ignore[attr-defined]
        if repr(f._field_type) == "_FIELD_INITVAR"
    ]
    if init_only:
        raise TypeError(
            f"{cls.__qualname__}: InitVar {init_only[0]!r} is not bound by @record; use @dataclass"
        )


def _initializer(cls: type, fields: tuple[dataclasses.Field[Any], ...]) -> Callable[..., None]:
    """The class's `__init__`: what the generated one does, from tables built once here."""
    positional = tuple(f.name for f in fields if not f.kw_only)
    keyword_only = tuple(f.name for f in fields if f.kw_only)
    # The fields left to keyword arguments and defaults once `n` were given by position.
    rest = [positional[n:] + keyword_only for n in range(len(positional) + 1)]
    defaults = {f.name: f.default for f in fields if f.default is not dataclasses.MISSING}
    factories = {f.name: f.default_factory for f in fields if f.default_factory is not dataclasses.MISSING}
    has_post_init = hasattr(cls, "__post_init__")
    name = f"{cls.__qualname__}.__init__()"
    fill = object.__setattr__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if len(args) > len(positional):
            _too_many(name, len(positional), len(args))
        for field_name, value in zip(positional, args, strict=False):  # args may be fewer
            fill(self, field_name, value)
        missing: list[str] = []
        for field_name in rest[len(args)]:
            if field_name in kwargs:
                fill(self, field_name, kwargs.pop(field_name))
            elif field_name in defaults:
                fill(self, field_name, defaults[field_name])
            elif field_name in factories:
                fill(self, field_name, factories[field_name]())
            else:
                missing.append(field_name)
        if missing or kwargs:
            _bad_call(name, positional[: len(args)], missing, kwargs)
        if has_post_init:
            self.__post_init__()

    __init__.__qualname__ = f"{cls.__qualname__}.__init__"
    return __init__


def _too_many(name: str, accepted: int, given: int) -> NoReturn:
    raise TypeError(f"{name} takes {accepted + 1} positional arguments but {given + 1} were given")


def _bad_call(
    name: str, by_position: tuple[str, ...], missing: list[str], unknown: dict[str, Any]
) -> NoReturn:
    for key in unknown:
        if key in by_position:
            raise TypeError(f"{name} got multiple values for argument {key!r}")
        raise TypeError(f"{name} got an unexpected keyword argument {key!r}")
    quoted = [repr(m) for m in missing]
    serial_comma = "," if len(quoted) > 2 else ""
    listed = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])}{serial_comma} and {quoted[-1]}"
    plural = "s" if len(missing) > 1 else ""
    raise TypeError(f"{name} missing {len(missing)} required argument{plural}: {listed}")


class _Factory:
    def __repr__(self) -> str:
        return "<factory>"  # as the generated __init__'s signature shows a default factory


_FACTORY = _Factory()


class _Signature:
    """`inspect.signature(cls)`: the fields as the generated `__init__` would take them, built on the
    first call (tools and `help()` ask; the station never does)."""

    def __get__(self, instance: object, owner: type) -> inspect.Signature:
        parameters = []
        for f in dataclasses.fields(owner):
            kind = inspect.Parameter.KEYWORD_ONLY if f.kw_only else inspect.Parameter.POSITIONAL_OR_KEYWORD
            default = f.default if f.default is not dataclasses.MISSING else inspect.Parameter.empty
            if f.default_factory is not dataclasses.MISSING:
                default = _FACTORY
            parameters.append(inspect.Parameter(f.name, kind, default=default, annotation=f.type))
        return inspect.Signature(parameters, return_annotation=None)


def _set_once(self: object, name: str, value: object) -> None:
    # An unset slot is how `__init__` (and copy or pickle, on a new instance) finds a field; a set one
    # is frozen. A name that is no slot falls through to object's AttributeError.
    if hasattr(self, name):
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")
    object.__setattr__(self, name, value)


def _never_delete(self: object, name: str) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")
