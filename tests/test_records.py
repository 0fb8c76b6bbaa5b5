"""`@record` behaves as `@dataclass(frozen=True, slots=True)`: same equality, hash, repr, immutability,
fields, replace and pattern matching; only how eq/hash/repr are made differs (start-up, issue 9)."""

from __future__ import annotations

import copy
import dataclasses
import math
import pickle
from dataclasses import dataclass, field
from typing import Any

import pytest

from evstation.records import record


@record
class Point:
    x: int
    y: float = 0.0
    tags: tuple[str, ...] = ()
    note: str = field(default="", compare=False)
    secret: str = field(default="", repr=False)
    seen: list[Any] = field(default_factory=list, hash=False)


@dataclass(frozen=True, slots=True)
class StdPoint:
    x: int
    y: float = 0.0
    tags: tuple[str, ...] = ()
    note: str = field(default="", compare=False)
    secret: str = field(default="", repr=False)
    seen: list[Any] = field(default_factory=list, hash=False)


@record
class Single:
    value: float


@dataclass(frozen=True, slots=True)
class StdSingle:
    value: float


@record
class Empty:
    pass


@dataclass(frozen=True, slots=True)
class StdEmpty:
    pass


@record
class Child(Single):
    extra: str = "e"


@dataclass(frozen=True, slots=True)
class StdChild(StdSingle):
    extra: str = "e"


_ARGS: list[dict[str, Any]] = [
    {"x": 1},
    {"x": 1, "y": 2.5, "tags": ("a",)},
    {"x": 1, "note": "other note"},
    {"x": 1, "secret": "s"},
    {"x": 2, "y": math.nan},
    {"x": -3, "tags": ("a", "b"), "note": "n", "secret": "s"},
]


def _std(point: Point) -> StdPoint:
    return StdPoint(**{f.name: getattr(point, f.name) for f in dataclasses.fields(point)})


def test_equality_hash_and_repr_match_the_generated_ones() -> None:
    points = [Point(**args) for args in _ARGS]
    std = [_std(p) for p in points]
    for a, sa in zip(points, std, strict=True):
        assert repr(a) == repr(sa).replace("StdPoint", "Point")
        assert hash(a) == hash(sa)
        for b, sb in zip(points, std, strict=True):
            assert (a == b) is (sa == sb)
            assert (a != b) is (sa != sb)


def test_a_nan_member_equals_itself_as_in_the_generated_tuple_comparison() -> None:
    nan = math.nan
    assert Single(nan) == Single(nan)
    assert StdSingle(nan) == StdSingle(nan)
    assert Single(nan) != Single(float("nan"))
    assert hash(Single(1.0)) == hash(StdSingle(1.0))


def test_no_fields_and_inherited_fields() -> None:
    assert Empty() == Empty()
    assert hash(Empty()) == hash(StdEmpty())
    assert repr(Empty()) == "Empty()"
    assert Child(1.0, "x") == Child(1.0, "x")
    assert Child(1.0, "x") != Child(1.0, "y")
    assert hash(Child(1.0, "x")) == hash(StdChild(1.0, "x"))
    assert repr(Child(1.0)) == repr(StdChild(1.0)).replace("StdChild", "Child")


def test_only_the_same_class_compares() -> None:
    assert Single(1.0) != Child(1.0)
    assert Single(1.0).__eq__(StdSingle(1.0)) is NotImplemented
    assert Single(1.0) != 1.0  # type: ignore[comparison-overlap]


def test_frozen_slotted_and_still_a_dataclass() -> None:
    point = Point(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        point.x = 2  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del point.x
    assert not hasattr(point, "__dict__")
    assert dataclasses.is_dataclass(point)
    assert [f.name for f in dataclasses.fields(point)] == ["x", "y", "tags", "note", "secret", "seen"]
    assert dataclasses.replace(point, x=5) == Point(5)
    assert dataclasses.asdict(Point(1, tags=("t",)))["tags"] == ("t",)
    assert Point.__match_args__ == StdPoint.__match_args__
    match point:
        case Point(1, y):
            assert y == 0.0
        case _:
            pytest.fail("positional pattern did not match")


def test_no_field_can_be_set_or_deleted_after_init() -> None:
    """Write-once: __init__ fills the slots; every later write or delete is refused as on a frozen
    dataclass, and a name that is no field is refused as on any slotted class."""
    point, std = Point(1, 2.0), StdPoint(1, 2.0)
    for target in (point, std):
        for name in ("y", "seen"):
            with pytest.raises(dataclasses.FrozenInstanceError):
                setattr(target, name, 3.0)
            with pytest.raises(dataclasses.FrozenInstanceError):
                delattr(target, name)
    # (On 3.11 the stdlib's own frozen slotted class fails here with a TypeError from its generated
    # __setattr__, so only ours is checked.)
    unknown = "not_a_field"
    with pytest.raises(AttributeError):
        setattr(point, unknown, 1)
    assert (point.x, point.y) == (1, 2.0)


def test_a_field_that_init_would_not_set_is_refused() -> None:
    with pytest.raises(TypeError, match="init=False"):

        @record
        class Late:
            x: int
            later: int = field(default=0, init=False)


def test_copies_and_pickles_like_a_frozen_dataclass() -> None:
    point = Point(3, 1.5, ("a",), "n", "s")
    assert copy.deepcopy(point) == point
    assert pickle.loads(pickle.dumps(point)) == point


def test_a_repr_of_an_object_containing_itself_stops() -> None:
    outer = Point(1, seen=[])
    outer.seen.append(outer)
    std = StdPoint(1, seen=[])
    std.seen.append(std)
    assert repr(outer) == repr(std).replace("StdPoint", "Point")


def test_a_class_defining_its_own_methods_is_refused() -> None:
    with pytest.raises(TypeError, match="use @dataclass"):

        @record
        class Custom:
            value: int

            def __repr__(self) -> str:
                return "custom"


@record
class Options:
    name: str
    count: int = 1
    items: list[int] = field(default_factory=list)
    flag: bool = field(default=False, kw_only=True)
    level: int = field(kw_only=True, default=0)


@dataclass(frozen=True, slots=True)
class StdOptions:
    name: str
    count: int = 1
    items: list[int] = field(default_factory=list)
    flag: bool = field(default=False, kw_only=True)
    level: int = field(kw_only=True, default=0)


_CALLS: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    (("a",), {}),
    (("a", 2), {}),
    (("a", 2, [1]), {}),
    ((), {"name": "a", "items": [3], "flag": True}),
    (("a",), {"level": 4, "count": 5}),
]

_BAD_CALLS: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    ((), {}),  # a required field missing
    (("a", 2, [1], True), {}),  # a keyword-only field given by position
    (("a",), {"name": "b"}),  # twice
    (("a",), {"colour": "red"}),  # no such field
    ((), {"count": 3}),
]


def test_init_binds_arguments_as_the_generated_one() -> None:
    for args, kwargs in _CALLS:
        ours, std = Options(*args, **kwargs), StdOptions(*args, **kwargs)
        assert repr(ours) == repr(std).replace("StdOptions", "Options")
    # A default factory runs for each instance.
    first, second = Options("a"), Options("b")
    assert first.items == [] and first.items is not second.items
    for args, kwargs in _BAD_CALLS:
        with pytest.raises(TypeError):
            StdOptions(*args, **kwargs)
        with pytest.raises(TypeError, match=r"Options\.__init__\(\)"):
            Options(*args, **kwargs)


def test_init_calls_post_init_with_every_field_set() -> None:
    seen: list[tuple[int, int]] = []

    @record
    class Checked:
        low: int
        high: int = 10

        def __post_init__(self) -> None:
            seen.append((self.low, self.high))
            if self.low > self.high:
                raise ValueError("low above high")

    assert Checked(1).high == 10
    with pytest.raises(ValueError, match="low above high"):
        Checked(5, high=2)
    assert seen == [(1, 10), (5, 2)]


def test_signature_and_doc_show_the_fields() -> None:
    import inspect

    assert str(inspect.signature(Options)) == str(inspect.signature(StdOptions))
    assert str(inspect.signature(Point)) == str(inspect.signature(StdPoint))
    assert Options.__doc__ == "Options(name, count, items, flag, level)"
    assert Point.__doc__ is not None and Point.__doc__.startswith("Point(")


def test_a_required_field_after_one_with_a_default_is_refused_as_dataclass_does() -> None:
    """The generated `__init__` refuses it when made; `@record` makes none, so it checks the order."""
    with pytest.raises(TypeError, match="non-default argument 'b' follows default argument"):

        @dataclass(frozen=True, slots=True)
        class StdLate:
            a: int = 1
            b: int  # type: ignore[misc]

    with pytest.raises(TypeError, match="non-default argument 'b' follows default argument"):

        @record
        class Late:
            a: int = 1
            b: int  # type: ignore[misc]

    with pytest.raises(TypeError, match="non-default argument 'extra' follows default argument"):

        @record
        class Child(Point):  # Point's fields with defaults, then a required one
            extra: int  # type: ignore[misc]

    @record
    class KeywordOnly(Point):  # a keyword-only field may follow defaults
        extra: int = field(kw_only=True)

    assert KeywordOnly(1, extra=2).extra == 2


def test_an_init_var_is_refused() -> None:
    """`@record`'s `__init__` binds fields only: an InitVar would fail at every call."""
    with pytest.raises(TypeError, match="InitVar 'scale'"):

        @record
        class Scaled:
            value: float
            scale: dataclasses.InitVar[float] = 1.0

            def __post_init__(self, scale: float) -> None:
                pass
