"""How a functional block declares the CSMS actions it answers: `@handles(version, action)` on a method.

A handler takes the version's generated request model and returns its response model. The session
layer collects every block's routes with `routing_table` and wraps each in its boot gate; an action no
block serves is answered NotSupported by the call manager. Nothing here knows any block.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final, TypeVar

from evstation.protocol.boot import BootGates, default_gates
from evstation.protocol.messages import OcppModel
from evstation.protocol.versions import OcppVersion
from evstation.records import record

__all__ = ["DuplicateRoute", "Route", "RouteHandler", "handles", "routes_of", "routing_table"]

RouteHandler = Callable[[Any], Awaitable[OcppModel]]
F = TypeVar("F", bound=Callable[..., Awaitable[OcppModel]])

_MARK: Final = "_ocpp_routes"


@record
class Route:
    version: OcppVersion
    action: str
    handler: RouteHandler  # bound to its block
    gates: BootGates
    block: str  # the block's class name, for docs and error messages


class DuplicateRoute(Exception):
    """Two blocks (or two methods) claim the same action of one version."""


def handles(version: OcppVersion, action: str, *, gates: BootGates | None = None) -> Callable[[F], F]:
    """Mark a block method as the handler of `action` in `version`.

    `gates` says how it is served before the CSMS accepted the station (default: the version's
    default, see protocol.boot)."""

    def mark(method: F) -> F:
        marks: list[tuple[OcppVersion, str, BootGates]] = method.__dict__.setdefault(_MARK, [])
        marks.append((version, action, gates if gates is not None else default_gates(version)))
        return method

    return mark


def routes_of(block: object, version: OcppVersion) -> list[Route]:
    """The routes `block` declares for `version`, bound to it."""
    routes: list[Route] = []
    for name in dir(type(block)):
        function = getattr(type(block), name, None)
        for marked_version, action, gates in getattr(function, _MARK, ()):
            if marked_version is version:
                routes.append(Route(version, action, getattr(block, name), gates, type(block).__name__))
    return routes


def routing_table(blocks: Iterable[object], version: OcppVersion) -> Mapping[str, Route]:
    """Every block's routes for `version`, by action. Raises DuplicateRoute on a double claim."""
    table: dict[str, Route] = {}
    for block in blocks:
        for route in routes_of(block, version):
            other = table.get(route.action)
            if other is not None:
                raise DuplicateRoute(
                    f"{version.value} {route.action}: served by {other.block} and {route.block}"
                )
            table[route.action] = route
    return table
