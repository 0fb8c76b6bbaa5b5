"""The provisioning block through the session (2.0.1 B05-B09; 1.6 GetConfiguration / ChangeConfiguration):
per-item statuses, request limits answered with the spec's CALLERROR, reports answered first and then
paged, Pending, network profiles, and a changed HeartbeatInterval taking effect on the next beat.

Every frame the station sends is validated by the scripted CSMS against the official schema.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from runtime_session_harness import (
    CsmsPeer,
    Fail,
    MemoryConnection,
    NoAnswer,
    call,
    open_session_context,
    serving,
    station_config,
)

from evstation.protocol.boot import BootState
from evstation.protocol.device_model.v16 import V16_KEYS, V16KeyMap, V16Profile
from evstation.protocol.rpc import CallError
from evstation.protocol.versions import OcppVersion
from evstation.runtime.device_model import (
    HEARTBEAT_INTERVAL,
    IMPLEMENTED_V16_PROFILES,
    MESSAGE_TIMEOUT,
    definitions_for,
)

V16, V201 = OcppVersion.V16, OcppVersion.V201
# The scripted CSMS's bound in virtual seconds: generous, because the MockClock jumps to the next
# heartbeat whenever a SQLite write on a loaded machine takes longer than the autojump threshold.
SLACK_S = 20_000
BOOT_PENDING = {"status": "Pending", "currentTime": "2030-06-01T12:00:00.000Z", "interval": 1000}


async def refused(csms: CsmsPeer, conn: MemoryConnection, action: str, payload: dict[str, Any]) -> str:
    answer = await csms.wait_answer(await csms.send_call(conn, action, payload))
    assert isinstance(answer, CallError), answer
    return answer.code


def item(
    component: str,
    variable: str,
    *,
    evse: dict[str, int] | None = None,
    instance: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    data: dict[str, Any] = {"component": {"name": component}, "variable": {"name": variable}, **extra}
    if evse is not None:
        data["component"]["evse"] = evse
    if instance is not None:
        data["variable"]["instance"] = instance
    return data


def results(answer: dict[str, Any], field: str) -> list[tuple[str, str | None]]:
    return [(r["attributeStatus"], r.get("attributeValue")) for r in answer[field]]


# --- GetVariables (B06) / SetVariables (B05) ----------------------------------------------------------


async def test_b06_get_variables_answers_each_item_with_status_and_value(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    csms, conn = CsmsPeer(V201), MemoryConnection(V201)
    async with open_session_context(tmp_path, V201) as ctx, serving(csms, conn, ctx, fail_after_s=SLACK_S):
        await csms.wait_for("StatusNotification", 2)
        request = [
            item("OCPPCommCtrlr", "HeartbeatInterval"),  # B06.FR.11: no attributeType -> Actual
            item("EVSE", "AvailabilityState", evse={"id": 2}),
            item("Connector", "ConnectorType", evse={"id": 1, "connectorId": 1}),
            item("ClockCtrlr", "DateTime"),
            item("NoSuchCtrlr", "HeartbeatInterval"),  # B06.FR.06
            item("OCPPCommCtrlr", "NoSuchVariable"),  # B06.FR.07
            item("OCPPCommCtrlr", "HeartbeatInterval", attributeType="Target"),  # B06.FR.08
            item("EVSE", "AvailabilityState", evse={"id": 9}),  # no EVSE 9: UnknownComponent
            item("OCPPCommCtrlr", "MessageAttempts", instance="X"),
        ]
        answer = await call(csms, conn, "GetVariables", {"getVariableData": request})
    got = answer["getVariableResult"]
    assert len(got) == len(request)  # B06.FR.01
    assert [(r["component"], r["variable"]) for r in got] == [
        (i["component"], i["variable"]) for i in request
    ]  # B06.FR.02
    assert got[0]["attributeType"] == "Actual" and got[6]["attributeType"] == "Target"  # B06.FR.03 / .11
    assert results(answer, "getVariableResult")[:3] == [
        ("Accepted", "300"),  # the BootNotification's interval
        ("Accepted", "Available"),
        ("Accepted", "cType2"),
    ]
    assert got[3]["attributeStatus"] == "Accepted" and got[3]["attributeValue"].startswith("20")
    assert [r["attributeStatus"] for r in got[4:]] == [
        "UnknownComponent",
        "UnknownVariable",
        "NotSupportedAttributeType",
        "UnknownComponent",
        "UnknownVariable",  # B06.FR.14: the instance must match
    ]
    assert all("attributeValue" not in r for r in got[4:])


async def test_b05_set_variables_per_item_statuses_then_read_back_on_station_evse_and_connector(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    csms, conn = CsmsPeer(V201), MemoryConnection(V201)
    async with open_session_context(tmp_path, V201) as ctx, serving(csms, conn, ctx, fail_after_s=SLACK_S):
        await csms.wait_for("StatusNotification", 2)
        writes = [
            item("OCPPCommCtrlr", "WebSocketPingInterval", attributeValue="45"),  # B05.FR.10
            item("ChargingStation", "PhaseRotation", attributeValue="RST"),
            item("Connector", "PhaseRotation", evse={"id": 2, "connectorId": 1}, attributeValue="TSR"),
            item("ChargingStation", "VendorName", attributeValue="Other"),  # B05.FR.08 read-only
            item("OCPPCommCtrlr", "HeartbeatInterval", attributeValue="0"),  # below minLimit 1
            item("OCPPCommCtrlr", "HeartbeatInterval", attributeValue="soon"),  # B05.FR.07
            item("NoSuchCtrlr", "X", attributeValue="1"),  # B05.FR.04
            item("OCPPCommCtrlr", "X", attributeValue="1"),  # B05.FR.05
            item("OCPPCommCtrlr", "HeartbeatInterval", attributeValue="5", attributeType="MaxSet"),  # .06
        ]
        answer = await call(csms, conn, "SetVariables", {"setVariableData": writes})
        got = answer["setVariableResult"]
        assert len(got) == len(writes)  # B05.FR.01
        assert [(r["component"], r["variable"]) for r in got] == [
            (w["component"], w["variable"]) for w in writes
        ]  # B05.FR.02
        assert [r["attributeType"] for r in got] == ["Actual"] * 8 + ["MaxSet"]  # B05.FR.03 / .12
        assert [r["attributeStatus"] for r in got] == [
            "Accepted",
            "Accepted",
            "Accepted",
            "Rejected",
            "Rejected",
            "Rejected",
            "UnknownComponent",
            "UnknownVariable",
            "NotSupportedAttributeType",
        ]
        reasons = [r.get("attributeStatusInfo", {}).get("reasonCode") for r in got[3:6]]
        assert reasons == ["ReadOnly", "ValueTooLow", "InvalidValue"]
        reads = [{k: v for k, v in w.items() if k != "attributeValue"} for w in writes[:5]]
        answer = await call(csms, conn, "GetVariables", {"getVariableData": reads})
    assert results(answer, "getVariableResult") == [
        ("Accepted", "45"),
        ("Accepted", "RST"),
        ("Accepted", "TSR"),
        ("Accepted", "Acme"),
        ("Accepted", "300"),
    ]
    # The other connector kept its own value: the EVSE scope is honoured.
    other = ctx.device_model.get(
        next(
            d.key
            for d in ctx.device_model.definitions
            if d.key.component.evse_id == 1 and d.key.name == "PhaseRotation"
        )
    )
    assert other == "Unknown"


async def test_b05_fr_13_the_same_variable_twice_is_answered_twice_and_the_last_value_wins(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """B05.FR.13: the CSMS SHALL NOT name the same component/variable/attributeType twice in one
    request; when one does, each item is still answered, in order, and applied in order: the last
    accepted value is the one that reads back (nothing is dropped silently)."""
    csms, conn = CsmsPeer(V201), MemoryConnection(V201)
    async with open_session_context(tmp_path, V201) as ctx, serving(csms, conn, ctx, fail_after_s=SLACK_S):
        await csms.wait_for("StatusNotification", 2)
        writes = [
            item("OCPPCommCtrlr", "WebSocketPingInterval", attributeValue="45"),
            item("OCPPCommCtrlr", "WebSocketPingInterval", attributeValue="never"),
            item("OCPPCommCtrlr", "WebSocketPingInterval", attributeValue="50"),
        ]
        answer = await call(csms, conn, "SetVariables", {"setVariableData": writes})
        statuses = [r["attributeStatus"] for r in answer["setVariableResult"]]
        read = {k: v for k, v in writes[0].items() if k != "attributeValue"}
        got = await call(csms, conn, "GetVariables", {"getVariableData": [read]})
    assert statuses == ["Accepted", "Rejected", "Accepted"]
    assert results(got, "getVariableResult") == [("Accepted", "50")]


async def test_b05_set_variables_heartbeat_interval_takes_effect_on_the_next_beat(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    csms, conn = CsmsPeer(V201), MemoryConnection(V201)
    async with open_session_context(tmp_path, V201) as ctx, serving(csms, conn, ctx, fail_after_s=SLACK_S):
        await csms.wait_for("StatusNotification", 2)
        write = item("OCPPCommCtrlr", "HeartbeatInterval", attributeValue="2")
        answer = await call(csms, conn, "SetVariables", {"setVariableData": [write]})
        assert answer["setVariableResult"][0]["attributeStatus"] == "Accepted"
        changed_at = trio.current_time()
        beats = await csms.wait_for("Heartbeat", 2)
    assert [round(b.at - changed_at) for b in beats] == [2, 4]
    assert ctx.device_model.get(HEARTBEAT_INTERVAL) == "2"


@pytest.mark.parametrize("action", ["GetVariables", "SetVariables"])
async def test_b06_fr_16_fr_17_requests_over_items_or_bytes_per_message_get_the_spec_callerror(
    clock: trio.testing.MockClock, tmp_path: Path, action: str
) -> None:
    """B06.FR.16 (items: OccurrenceConstraintViolation), B06.FR.17 (bytes: FormatViolation); SetVariables
    gets the same answers over its own ItemsPerMessage / BytesPerMessage (B05.FR.11)."""
    field = "getVariableData" if action == "GetVariables" else "setVariableData"
    extra: dict[str, Any] = {} if action == "GetVariables" else {"attributeValue": "60"}
    one = item("OCPPCommCtrlr", "HeartbeatInterval", **extra)
    csms, conn = CsmsPeer(V201), MemoryConnection(V201)
    async with open_session_context(tmp_path, V201) as ctx, serving(csms, conn, ctx, fail_after_s=SLACK_S):
        await csms.wait_for("StatusNotification", 2)
        assert (
            len((await call(csms, conn, action, {field: [one] * 64}))[field.replace("Data", "Result")]) == 64
        )
        assert await refused(csms, conn, action, {field: [one] * 65}) == "OccurenceConstraintViolation"
        big = {**one, "customData": {"vendorId": "x", "blob": "y" * 70_000}}
        assert await refused(csms, conn, action, {field: [big]}) == "FormatViolation"
        assert ctx.device_model.get(HEARTBEAT_INTERVAL) == ("300" if action == "GetVariables" else "60")


# --- reports (B07 / B08) ---------------------------------------------------------------------------


async def report(csms: CsmsPeer, conn: MemoryConnection, action: str, payload: dict[str, Any]) -> Any:
    """Ask for a report; the answer, and the NotifyReport pages once the last one (tbc false) is in."""
    before = len(csms.of("NotifyReport"))
    answer = await call(csms, conn, action, payload)
    if answer["status"] != "Accepted":
        return answer, []
    while True:
        pages = [s.call.payload for s in csms.of("NotifyReport")[before:]]
        if pages and not pages[-1]["tbc"]:
            return answer, pages
        await csms.wait_for("NotifyReport", before + len(pages) + 1)


def reported(pages: list[dict[str, Any]]) -> list[tuple[str, int | None, str]]:
    return [
        (d["component"]["name"], d["component"].get("evse", {}).get("id"), d["variable"]["name"])
        for page in pages
        for d in page["reportData"]
    ]


async def test_b07_full_inventory_is_answered_first_then_paged_with_seq_no_and_tbc(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    csms, conn = CsmsPeer(V201), MemoryConnection(V201)
    async with open_session_context(tmp_path, V201) as ctx, serving(csms, conn, ctx, fail_after_s=SLACK_S):
        await csms.wait_for("StatusNotification", 2)
        start = len(csms.wire)
        answer, pages = await report(
            csms, conn, "GetBaseReport", {"requestId": 17, "reportBase": "FullInventory"}
        )
    assert answer == {"status": "Accepted"}
    assert csms.wire[start:] == ["answer"] + ["NotifyReport"] * len(pages)  # the answer goes first
    assert len(pages) > 1
    assert [p["seqNo"] for p in pages] == list(range(len(pages)))  # seqNo from 0
    assert [p["tbc"] for p in pages] == [True] * (len(pages) - 1) + [False]
    assert {p["requestId"] for p in pages} == {17}  # B07.FR.04
    assert len({p["generatedAt"] for p in pages}) == 1
    items = reported(pages)
    assert len(items) == len(ctx.device_model.definitions)  # every variable, once
    assert ("Connector", 2, "ConnectorType") in items and ("EVSE", 1, "Power") in items


async def final_page(csms: CsmsPeer) -> list[dict[str, Any]]:
    """Every NotifyReport `csms` has seen, once the last page (tbc false) is among them."""
    while True:
        pages = [s.call.payload for s in csms.of("NotifyReport")]
        if pages and not pages[-1]["tbc"]:
            return pages
        await csms.wait_for("NotifyReport", len(pages) + 1)


@pytest.mark.parametrize("registration", ["Accepted", "Pending"])
async def test_b07_a_report_a_lost_connection_interrupts_goes_on_after_the_reconnect(
    clock: trio.testing.MockClock, tmp_path: Path, registration: str
) -> None:
    # Given a FullInventory report whose second page the first CSMS connection never answers
    first, conn1 = CsmsPeer(V201), MemoryConnection(V201)
    first.then("NotifyReport", {}, NoAnswer())
    if registration == "Pending":
        first.then("BootNotification", BOOT_PENDING)
    async with open_session_context(tmp_path, V201) as ctx:
        async with serving(first, conn1, ctx, fail_after_s=SLACK_S):
            await first.wait_for("StatusNotification" if registration == "Accepted" else "BootNotification")
            answer = await call(
                first, conn1, "GetBaseReport", {"requestId": 21, "reportBase": "FullInventory"}
            )
            assert answer == {"status": "Accepted"}
            await first.wait_for("NotifyReport", 2)
            # When the connection drops while seqNo 1 waits for its answer
            conn1.close()
        # Then the next connection carries seqNo 1 again and the rest of the same report
        second, conn2 = CsmsPeer(V201), MemoryConnection(V201, generation=2)
        async with serving(second, conn2, ctx, fail_after_s=SLACK_S):
            rest = await final_page(second)
            assert ctx.uplink.boot.state.value == registration
    before = [s.call.payload for s in first.of("NotifyReport")]
    assert [p["seqNo"] for p in before] == [0, 1]
    assert [p["seqNo"] for p in rest] == list(range(1, len(rest) + 1))  # seqNo goes on from 1
    assert len(rest) >= 2 and rest[0] == before[1]  # the interrupted page, unchanged
    assert [p["tbc"] for p in rest] == [True] * (len(rest) - 1) + [False]
    assert {p["requestId"] for p in before + rest} == {21}
    assert len({p["generatedAt"] for p in before + rest}) == 1  # one report, made once
    assert len(reported(before[:1] + rest)) == len(ctx.device_model.definitions)  # nothing lost
    assert "BootNotification" not in second.actions()  # a reconnect, not a reboot (B01)
    if registration == "Pending":
        assert set(second.actions()) == {"NotifyReport"}  # B02.FR.02: only what the CSMS asked for


async def test_b07_after_a_boot_lost_in_flight_the_rest_waits_for_the_new_boot_answer(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    # Given a Pending station whose report stalls at seqNo 1 and whose next BootNotification is in
    # flight when the connection drops
    first, conn1 = CsmsPeer(V201), MemoryConnection(V201)
    first.then("BootNotification", {**BOOT_PENDING, "interval": 5}, NoAnswer())
    first.then("NotifyReport", {}, NoAnswer())
    async with open_session_context(tmp_path, V201) as ctx:
        async with serving(first, conn1, ctx, fail_after_s=SLACK_S):
            await first.wait_for("BootNotification")
            await call(first, conn1, "GetBaseReport", {"requestId": 30, "reportBase": "FullInventory"})
            await first.wait_for("BootNotification", 2)
            conn1.close()
        # When the next connection boots again and the CSMS keeps the station Pending
        second, conn2 = CsmsPeer(V201), MemoryConnection(V201, generation=2)
        second.then("BootNotification", BOOT_PENDING)
        async with serving(second, conn2, ctx, fail_after_s=SLACK_S):
            rest = await final_page(second)
    # Then the pages follow that answer, from the interrupted one on
    assert second.wire[0] == "BootNotification" and set(second.actions()) == {
        "BootNotification",
        "NotifyReport",
    }
    assert [s.call.payload["seqNo"] for s in first.of("NotifyReport")] == [0, 1]
    assert [p["seqNo"] for p in rest] == list(range(1, len(rest) + 1))


async def test_b07_b10_fr_10_a_switch_to_another_csms_drops_the_rest_of_the_report(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    first, conn1 = CsmsPeer(V201), MemoryConnection(V201)
    first.then("NotifyReport", {}, NoAnswer())
    async with open_session_context(tmp_path, V201) as ctx:
        async with serving(first, conn1, ctx, fail_after_s=SLACK_S):
            await first.wait_for("StatusNotification", 2)
            await call(first, conn1, "GetBaseReport", {"requestId": 22, "reportBase": "FullInventory"})
            await first.wait_for("NotifyReport", 2)
            conn1.close()
        # The link found the next connection on another network profile (runtime/network_profiles.py).
        ctx.uplink.boot.profile_switched()
        second, conn2 = CsmsPeer(V201), MemoryConnection(V201, generation=2)
        async with serving(second, conn2, ctx, fail_after_s=SLACK_S):
            await second.wait_for("StatusNotification", 2)
            await trio.testing.wait_all_tasks_blocked()
    # The new CSMS never asked for report 22: it gets none of it
    assert "BootNotification" in second.actions() and not second.of("NotifyReport")


async def test_b07_a_refused_page_does_not_stop_the_report(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    # Given a CSMS that answers the first NotifyReport with a CALLERROR
    csms, conn = CsmsPeer(V201), MemoryConnection(V201)
    csms.then("NotifyReport", Fail())
    async with open_session_context(tmp_path, V201) as ctx, serving(csms, conn, ctx, fail_after_s=SLACK_S):
        await csms.wait_for("StatusNotification", 2)
        # When it asks for a report
        _, pages = await report(csms, conn, "GetBaseReport", {"requestId": 4, "reportBase": "FullInventory"})
    # Then every page goes out once, in order: the CSMS received the refused one
    assert [p["seqNo"] for p in pages] == list(range(len(pages)))
    assert len(reported(pages)) == len(ctx.device_model.definitions)


async def test_b07_a_page_unanswered_on_a_live_connection_is_sent_again_then_given_up(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    # Given a CSMS that never answers NotifyReport but keeps the connection
    csms, conn = CsmsPeer(V201), MemoryConnection(V201)
    csms.then("NotifyReport", *[NoAnswer()] * 4)
    async with open_session_context(tmp_path, V201) as ctx, serving(csms, conn, ctx, fail_after_s=SLACK_S):
        await csms.wait_for("StatusNotification", 2)
        await call(csms, conn, "GetBaseReport", {"requestId": 8, "reportBase": "FullInventory"})
        await csms.wait_for("NotifyReport", 3)
        # When each send times out (MessageTimeout), then the report is given up after the last attempt
        await trio.sleep(10 * ctx.device_model.get_float(MESSAGE_TIMEOUT))
    # Sent 3 times in all (docs/status/B-provisioning.md), then no more
    assert [s.call.payload["seqNo"] for s in csms.of("NotifyReport")] == [0] * 3


async def test_b07_configuration_and_summary_inventories_hold_what_their_base_names(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    csms, conn = CsmsPeer(V201), MemoryConnection(V201)
    async with open_session_context(tmp_path, V201) as ctx, serving(csms, conn, ctx, fail_after_s=SLACK_S):
        await csms.wait_for("StatusNotification", 2)
        _, configuration = await report(
            csms, conn, "GetBaseReport", {"requestId": 1, "reportBase": "ConfigurationInventory"}
        )
        _, summary = await report(
            csms, conn, "GetBaseReport", {"requestId": 2, "reportBase": "SummaryInventory"}
        )
    writable = {
        (d.key.component.name, d.key.component.evse_id, d.key.name)
        for d in ctx.device_model.definitions
        if d.writable
    }
    assert set(reported(configuration)) == writable
    mutabilities = {
        a["mutability"] for page in configuration for d in page["reportData"] for a in d["variableAttribute"]
    }
    assert "ReadOnly" not in mutabilities
    assert ("EVSE", 2, "AvailabilityState") in reported(summary)
    assert {name for _, _, name in reported(summary)} <= {"AvailabilityState", "Available", "Problem"}


async def test_b08_custom_report_filters_criteria_and_empty_result_set(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    csms, conn = CsmsPeer(V201), MemoryConnection(V201)
    async with open_session_context(tmp_path, V201) as ctx, serving(csms, conn, ctx, fail_after_s=SLACK_S):
        await csms.wait_for("StatusNotification", 2)
        evse2 = {"component": {"name": "EVSE", "evse": {"id": 2}}}
        answer, pages = await report(csms, conn, "GetReport", {"requestId": 5, "componentVariable": [evse2]})
        assert answer == {"status": "Accepted"}
        assert {(c, e) for c, e, _ in reported(pages)} == {("EVSE", 2)}
        heartbeat = {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}
        _, pages = await report(csms, conn, "GetReport", {"requestId": 6, "componentVariable": [heartbeat]})
        assert reported(pages) == [("OCPPCommCtrlr", None, "HeartbeatInterval")]
        assert pages[0]["reportData"][0]["variableAttribute"][0]["value"] == "300"
        # B08.FR.10: only a component whose Problem variable is true meets Problem: none does.
        answer, _ = await report(csms, conn, "GetReport", {"requestId": 7, "componentCriteria": ["Problem"]})
        assert answer == {"status": "EmptyResultSet"}
        nothing = {"component": {"name": "NoSuchCtrlr"}}
        answer, _ = await report(csms, conn, "GetReport", {"requestId": 8, "componentVariable": [nothing]})
        assert answer == {"status": "EmptyResultSet"}
        # Available: the EVSEs are available, so their variables are reported.
        _, pages = await report(
            csms,
            conn,
            "GetReport",
            {"requestId": 9, "componentCriteria": ["Available"], "componentVariable": [evse2]},
        )
        assert reported(pages) and {e for _, e, _ in reported(pages)} == {2}
        assert all(s.call.payload["requestId"] in (5, 6, 9) for s in csms.of("NotifyReport"))
        del ctx


async def test_b08_fr_17_fr_18_get_report_over_the_limits_gets_the_spec_callerror(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    csms, conn = CsmsPeer(V201), MemoryConnection(V201)
    async with open_session_context(tmp_path, V201) as ctx, serving(csms, conn, ctx, fail_after_s=SLACK_S):
        await csms.wait_for("StatusNotification", 2)
        one = {"component": {"name": "OCPPCommCtrlr"}}
        request = {"requestId": 1, "componentVariable": [one] * 65}
        assert await refused(csms, conn, "GetReport", request) == "OccurenceConstraintViolation"  # FR.17
        big = {"requestId": 2, "componentVariable": [one], "customData": {"vendorId": "x", "b": "y" * 70_000}}
        assert await refused(csms, conn, "GetReport", big) == "FormatViolation"  # B08.FR.18
        assert not csms.of("NotifyReport")
        del ctx


async def test_b02_fr_01_pending_station_serves_variables_and_sends_the_report_it_was_asked_for(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    csms, conn = CsmsPeer(V201), MemoryConnection(V201)
    csms.then("BootNotification", BOOT_PENDING)
    async with open_session_context(tmp_path, V201) as ctx, serving(csms, conn, ctx, fail_after_s=SLACK_S):
        await csms.wait_for("BootNotification")
        await trio.testing.wait_all_tasks_blocked()
        assert ctx.uplink.boot.state is BootState.PENDING
        write = item("OCPPCommCtrlr", "HeartbeatInterval", attributeValue="77")
        answer = await call(csms, conn, "SetVariables", {"setVariableData": [write]})
        assert answer["setVariableResult"][0]["attributeStatus"] == "Accepted"
        answer = await call(
            csms, conn, "GetVariables", {"getVariableData": [item("OCPPCommCtrlr", "HeartbeatInterval")]}
        )
        assert results(answer, "getVariableResult") == [("Accepted", "77")]
        answer, pages = await report(
            csms, conn, "GetBaseReport", {"requestId": 3, "reportBase": "SummaryInventory"}
        )
        assert answer == {"status": "Accepted"} and pages
        assert ctx.uplink.boot.state is BootState.PENDING
    # B02.FR.02: nothing but the boot and what the CSMS asked for.
    assert set(csms.actions()) == {"BootNotification", "NotifyReport"}


# --- SetNetworkProfile (B09) -------------------------------------------------------------------------


def profile(url: str = "wss://csms.example/ocpp", security: int = 2, **extra: Any) -> dict[str, Any]:
    return {
        "ocppVersion": "OCPP20",
        "ocppTransport": "JSON",
        "ocppCsmsUrl": url,
        "messageTimeout": 30,
        "securityProfile": security,
        "ocppInterface": "Wired0",
        **extra,
    }


ENDPOINTS = [
    {"url": "ws://127.0.0.1:9/ocpp", "priority": 1, "security_profile": 1, "password": "p" * 16},
    {"url": "ws://127.0.0.1:9/other", "priority": 4, "security_profile": 1, "password": "q" * 16},
]


async def test_b09_set_network_profile_checks_slot_security_and_content_then_stores(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    csms, conn = CsmsPeer(V201), MemoryConnection(V201)
    async with (
        open_session_context(tmp_path, V201, endpoints=ENDPOINTS) as ctx,
        serving(csms, conn, ctx, fail_after_s=SLACK_S),
    ):
        await csms.wait_for("StatusNotification", 2)

        async def set_profile(slot: int, data: dict[str, Any]) -> tuple[str, str | None]:
            answer = await call(
                csms, conn, "SetNetworkProfile", {"configurationSlot": slot, "connectionData": data}
            )
            return answer["status"], answer.get("statusInfo", {}).get("reasonCode")

        # B09.FR.05: the slot must be one of NetworkConfigurationPriority's valuesList (1, 4).
        assert await set_profile(2, profile()) == ("Rejected", "InvalidConfSlot")
        # B09.FR.04: the profile in use is 1; 0 would lower it.
        assert await set_profile(4, profile("ws://csms.example/ocpp", 0)) == (
            "Rejected",
            "NoSecurityDowngrade",
        )
        # B09.FR.02: content the station cannot use.
        assert await set_profile(4, profile("ws://csms.example/ocpp", 2)) == (
            "Rejected",
            "InvalidNetworkConf",
        )
        assert await set_profile(4, profile(ocppTransport="SOAP")) == ("Rejected", "InvalidNetworkConf")
        assert await set_profile(4, profile(ocppVersion="OCPP16")) == ("Rejected", "InvalidNetworkConf")
        vpn = {"server": "vpn", "user": "u", "password": "p", "key": "k", "type": "IPSec"}
        assert await set_profile(4, profile(vpn=vpn)) == ("Rejected", "InvalidNetworkConf")
        assert await ctx.blocks.provisioning.network_profiles() == []
        # B09.FR.01: valid, stored, Accepted; a second one for the same slot replaces it.
        assert await set_profile(4, profile(security=1, url="ws://old.example/ocpp")) == ("Accepted", None)
        assert await set_profile(4, profile()) == ("Accepted", None)
        (stored,) = await ctx.blocks.provisioning.network_profiles()
    assert (stored.slot, stored.security_profile) == (4, 2)
    assert stored.connection_data == profile()


async def test_b02_b09_set_network_profile_while_pending_is_a_security_error_and_nothing_is_stored(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    # Given a station the CSMS keeps Pending
    csms, conn = CsmsPeer(V201), MemoryConnection(V201)
    csms.then("BootNotification", BOOT_PENDING)
    async with (
        open_session_context(tmp_path, V201, endpoints=ENDPOINTS) as ctx,
        serving(csms, conn, ctx, fail_after_s=SLACK_S),
    ):
        await csms.wait_for("BootNotification")
        # When the CSMS sends a valid SetNetworkProfile (not one of the B02 messages for a Pending station)
        request = {"configurationSlot": 4, "connectionData": profile()}
        code = await refused(csms, conn, "SetNetworkProfile", request)
        # Then the station refuses it like any message B02 does not allow, and stores nothing
        assert code == "SecurityError"
        assert await ctx.blocks.provisioning.network_profiles() == []
        assert ctx.uplink.boot.state is BootState.PENDING
    assert csms.actions() == ["BootNotification"]


async def test_b09_fr_03_a_valid_profile_the_database_refuses_is_failed(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """B09.FR.03: a valid profile that cannot be stored is answered Failed (not Accepted, not a crash).
    The refusal is SQLite's own: a trigger another connection put on the table aborts the insert."""
    csms, conn = CsmsPeer(V201), MemoryConnection(V201)
    async with (
        open_session_context(tmp_path, V201, endpoints=ENDPOINTS) as ctx,
        serving(csms, conn, ctx, fail_after_s=SLACK_S),
    ):
        await csms.wait_for("StatusNotification", 2)
        other = sqlite3.connect(ctx.blocks.transactions.services.storage.path)
        try:
            other.execute(
                "CREATE TRIGGER refuse_profiles BEFORE INSERT ON network_profiles "
                "BEGIN SELECT RAISE(ABORT, 'the disk refuses'); END"
            )
            other.commit()
        finally:
            other.close()
        request = {"configurationSlot": 4, "connectionData": profile()}
        answer = await call(csms, conn, "SetNetworkProfile", request)
        stored = await ctx.blocks.provisioning.network_profiles()
    assert answer == {"status": "Failed"}
    assert stored == []


async def test_b09_profile_stored_before_a_restart_is_still_there_after_it(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    csms, conn = CsmsPeer(V201), MemoryConnection(V201)
    async with (
        open_session_context(tmp_path, V201, endpoints=ENDPOINTS) as ctx,
        serving(csms, conn, ctx, fail_after_s=SLACK_S),
    ):
        await csms.wait_for("StatusNotification", 2)
        request = {"configurationSlot": 1, "connectionData": profile()}
        assert (await call(csms, conn, "SetNetworkProfile", request))["status"] == "Accepted"
    async with open_session_context(tmp_path, V201, endpoints=ENDPOINTS) as ctx:
        (stored,) = await ctx.blocks.provisioning.network_profiles()
    assert stored.slot == 1 and stored.connection_data["ocppCsmsUrl"] == "wss://csms.example/ocpp"


# --- 1.6 GetConfiguration / ChangeConfiguration ------------------------------------------------------


async def test_v16_5_8_get_configuration_with_and_without_keys(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    csms, conn = CsmsPeer(V16), MemoryConnection(V16)
    async with open_session_context(tmp_path, V16) as ctx, serving(csms, conn, ctx, fail_after_s=SLACK_S):
        await csms.wait_for("StatusNotification", 3)
        everything = await call(csms, conn, "GetConfiguration", {})
        named = await call(
            csms, conn, "GetConfiguration", {"key": ["heartbeatinterval", "NumberOfConnectors", "NoSuchKey"]}
        )
        too_many = await refused(csms, conn, "GetConfiguration", {"key": ["HeartbeatInterval"] * 101})
    keys = {k["key"]: k for k in everything["configurationKey"]}
    assert "unknownKey" not in everything
    profiles = {p for p in V16Profile if p in IMPLEMENTED_V16_PROFILES}
    served = {k.name for k in V16_KEYS if k.profile in profiles and k.projection.value != "Unsupported"}
    assert set(keys) <= served and "HeartbeatInterval" in keys
    assert keys["SupportedFeatureProfiles"] == {
        "key": "SupportedFeatureProfiles",
        "readonly": True,
        "value": "Core,LocalAuthListManagement,Reservation,RemoteTrigger",
    }
    assert keys["HeartbeatInterval"] == {"key": "HeartbeatInterval", "readonly": False, "value": "300"}
    assert keys["GetConfigurationMaxKeys"]["value"] == "100"
    assert named["configurationKey"] == [
        {"key": "HeartbeatInterval", "readonly": False, "value": "300"},
        {"key": "NumberOfConnectors", "readonly": True, "value": "2"},
    ]
    assert named["unknownKey"] == ["NoSuchKey"]
    assert too_many == "OccurenceConstraintViolation"  # more than GetConfigurationMaxKeys


async def test_v16_5_3_change_configuration_statuses_and_heartbeat_interval_on_the_next_beat(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    csms, conn = CsmsPeer(V16), MemoryConnection(V16)
    async with open_session_context(tmp_path, V16) as ctx, serving(csms, conn, ctx, fail_after_s=SLACK_S):
        await csms.wait_for("StatusNotification", 3)

        async def change(key: str, value: str) -> str:
            return str(
                (await call(csms, conn, "ChangeConfiguration", {"key": key, "value": value}))["status"]
            )

        assert await change("NumberOfConnectors", "7") == "Rejected"  # read-only
        assert await change("HeartbeatInterval", "often") == "Rejected"  # not an integer
        assert await change("HeartbeatInterval", "0") == "Rejected"  # the variable's minLimit is 1
        assert await change("NoSuchKey", "1") == "NotSupported"
        assert await change("LightIntensity", "1") == "NotSupported"  # no light to dim
        assert await change("heartbeatInterval", "2") == "Accepted"
        changed_at = trio.current_time()
        beats = await csms.wait_for("Heartbeat", 2)
        answer = await call(csms, conn, "GetConfiguration", {"key": ["HeartbeatInterval"]})
    assert [round(b.at - changed_at) for b in beats] == [2, 4]
    assert answer["configurationKey"] == [{"key": "HeartbeatInterval", "readonly": False, "value": "2"}]
    assert ctx.device_model.get(HEARTBEAT_INTERVAL) == "2"


def test_v16_keys_table_lists_every_key_with_its_status(tmp_path: Path) -> None:
    """docs/status/v16-core-keys.md has one row per key of V16_KEYS, and says what the station does."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "status" / "v16-core-keys.md").read_text("utf-8")
    rows = {
        cells[0]: cells[2]
        for line in text.splitlines()
        if line.startswith("| ") and not line.startswith("| Key") and not line.startswith("|---")
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }
    keys = V16KeyMap(definitions_for(station_config(tmp_path, V16)), IMPLEMENTED_V16_PROFILES)
    assert set(rows) == {k.name for k in V16_KEYS}
    for key in V16_KEYS:
        entry = keys.read(key.name, lambda _key, _attribute: None)
        if entry is None:
            assert rows[key.name] in ("unknown", "not supported"), key.name
        else:
            assert rows[key.name] == ("served, read-only" if entry.readonly else "served"), key.name
