"""The handler registry: every CSMS action of each version is served by exactly one block or listed as
not yet served, and every handler is typed with the generated request and response models."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
from runtime_session_harness import open_session_context

from evstation.protocol.boot import V16_REMOTE_TX_GATES, BootGates, default_gates
from evstation.protocol.directions import csms_initiated, station_initiated
from evstation.protocol.messages import OcppModel, actions, request_model, response_model
from evstation.protocol.versions import OcppVersion
from evstation.runtime.blocks.assembly import NOT_YET_SERVED
from evstation.runtime.blocks.registry import DuplicateRoute, handles, routes_of, routing_table
from evstation.runtime.session import SessionContext

VERSIONS = [OcppVersion.V16, OcppVersion.V201]


def test_directions_cover_every_action_and_only_data_transfer_goes_both_ways() -> None:
    for version in VERSIONS:
        assert csms_initiated(version) | station_initiated(version) == actions(version)
        assert csms_initiated(version) & station_initiated(version) == {"DataTransfer"}


@pytest.mark.parametrize("version", VERSIONS)
async def test_every_csms_action_is_served_once_or_listed_as_not_yet_served(
    tmp_path: Path, version: OcppVersion
) -> None:
    async with open_session_context(tmp_path, version) as ctx:
        served = set(routing_table(ctx.blocks.serving(), version))
    unserved = set(NOT_YET_SERVED[version])
    assert not served & unserved, "served and listed as not yet served"
    assert served | unserved == csms_initiated(version)


@pytest.mark.parametrize("version", VERSIONS)
async def test_handlers_take_the_request_model_and_return_the_response_model(
    tmp_path: Path, version: OcppVersion
) -> None:
    async with open_session_context(tmp_path, version) as ctx:
        routes = list(routing_table(ctx.blocks.serving(), version).values())
    assert routes
    for route in routes:
        hints = typing.get_type_hints(route.handler)
        returned = hints.pop("return")
        (taken,) = hints.values()
        assert taken is request_model(version, route.action), route
        assert returned is response_model(version, route.action), route


def _routes(ctx: SessionContext, version: OcppVersion) -> dict[str, str]:
    return {action: route.block for action, route in routing_table(ctx.blocks.serving(), version).items()}


async def test_remote_start_is_found_in_the_remote_control_block(tmp_path: Path) -> None:
    async with open_session_context(tmp_path, OcppVersion.V16) as ctx:
        assert _routes(ctx, OcppVersion.V16)["RemoteStartTransaction"] == "RemoteControl"
        route = routing_table(ctx.blocks.serving(), OcppVersion.V16)["RemoteStartTransaction"]
    assert route.gates == V16_REMOTE_TX_GATES


class _Twice:
    @handles(OcppVersion.V201, "Reset")
    async def one(self, req: OcppModel) -> OcppModel:
        raise NotImplementedError

    @handles(OcppVersion.V201, "Reset", gates=BootGates(*[default_gates(OcppVersion.V201).pending] * 2))
    async def two(self, req: OcppModel) -> OcppModel:
        raise NotImplementedError


def test_two_handlers_for_one_action_are_refused() -> None:
    assert len(routes_of(_Twice(), OcppVersion.V201)) == 2
    assert routes_of(_Twice(), OcppVersion.V16) == []
    with pytest.raises(DuplicateRoute, match="Reset"):
        routing_table([_Twice()], OcppVersion.V201)
