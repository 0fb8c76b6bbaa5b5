"""TriggerMessage (2.0.1 F06; 1.6 section 5.17 and the security whitepaper's ExtendedTriggerMessage)
through the session: the answer first, then the message; Pending; unknown targets; NotImplemented."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from runtime_session_harness import (
    CsmsPeer,
    MemoryConnection,
    NoAnswer,
    call,
    online,
    open_session_context,
    serving,
    start_transaction,
    statuses_at_boot,
)

from evstation.protocol.boot import BootState
from evstation.protocol.versions import OcppVersion
from evstation.runtime.blocks.trigger import NOT_IMPLEMENTED_TRIGGERS

V16, V201 = OcppVersion.V16, OcppVersion.V201


async def test_f06_heartbeat_trigger_is_answered_accepted_before_the_heartbeat_goes_out(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    csms, conn = CsmsPeer(V201), MemoryConnection(V201)
    async with open_session_context(tmp_path, V201) as ctx, serving(csms, conn, ctx):
        await csms.wait_for("StatusNotification", 2)
        start = len(csms.wire)
        assert await call(csms, conn, "TriggerMessage", {"requestedMessage": "Heartbeat"}) == {
            "status": "Accepted"
        }
        await csms.wait_for("Heartbeat")
        assert csms.wire[start:] == ["answer", "Heartbeat"]  # F06.FR.04: response first


async def test_f06_status_notification_trigger_for_one_connector_and_f06_fr_12_without_one_rejected(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    csms, conn = CsmsPeer(V201), MemoryConnection(V201)
    async with open_session_context(tmp_path, V201) as ctx, serving(csms, conn, ctx):
        await csms.wait_for("StatusNotification", 2)
        request = {"requestedMessage": "StatusNotification", "evse": {"id": 2, "connectorId": 1}}
        assert await call(csms, conn, "TriggerMessage", request) == {"status": "Accepted"}
        sent = (await csms.wait_for("StatusNotification", 3))[2].call.payload
        assert (sent["evseId"], sent["connectorId"], sent["connectorStatus"]) == (2, 1, "Available")
        for evse in ({"id": 2}, None):
            request = {"requestedMessage": "StatusNotification", **({"evse": evse} if evse else {})}
            assert await call(csms, conn, "TriggerMessage", request) == {"status": "Rejected"}
        unknown = {"requestedMessage": "Heartbeat", "evse": {"id": 7}}
        assert (await call(csms, conn, "TriggerMessage", unknown))["status"] == "Rejected"
        assert len(csms.of("StatusNotification")) == 3 and not csms.of("Heartbeat")


def _set_variable(component: str, variable: str, value: str) -> dict[str, Any]:
    return {
        "setVariableData": [
            {"component": {"name": component}, "variable": {"name": variable}, "attributeValue": value}
        ]
    }


async def _triggered_meter_values(
    csms: CsmsPeer, conn: MemoryConnection, request: dict[str, Any]
) -> list[dict[str, Any]]:
    """Send TriggerMessage(MeterValues) `request`: Accepted, then the MeterValues it brought."""
    before = len(csms.of("MeterValues"))
    assert await call(csms, conn, "TriggerMessage", {"requestedMessage": "MeterValues", **request}) == {
        "status": "Accepted"
    }
    await csms.wait_for("MeterValues", before + 1)
    await trio.sleep(1)  # every EVSE's MeterValues of this trigger is in
    return [s.call.payload for s in csms.of("MeterValues")[before:]]


def _by_measurand(payload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """measurand(/phase) -> sampled value, of the payload's one MeterValue."""
    [meter_value] = payload["meterValue"]
    values: list[dict[str, Any]] = meter_value["sampledValue"]
    return {v["measurand"] + ("/" + v["phase"] if "phase" in v else ""): v for v in values}


async def test_f06_fr_06_meter_values_trigger_sends_the_aligned_data_measurands_of_the_evse(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """F06.FR.06: MeterValues with the most recent reading of every measurand in
    AlignedDataCtrlr.Measurands (not TxUpdatedMeasurands), context Trigger, each value with its unit,
    location and, per phase, its phase; the timestamp is the station clock's now. No EVSE: one
    MeterValues per EVSE."""
    csms, conn = CsmsPeer(V201), MemoryConnection(V201)
    async with open_session_context(tmp_path, V201, run_evses=True) as ctx, serving(csms, conn, ctx):
        await csms.wait_for("StatusNotification", 2)
        await trio.sleep(6)  # the sim meters have been polled
        asked_at = ctx.clock.iso()
        [payload] = await _triggered_meter_values(csms, conn, {"evse": {"id": 1}})
        assert payload["evseId"] == 1
        [meter_value] = payload["meterValue"]
        assert meter_value["timestamp"] == asked_at  # read when asked (no virtual time passed)
        # AlignedDataCtrlr.Measurands' default: the energy register only.
        assert meter_value["sampledValue"] == [
            {
                "value": 1000,
                "context": "Trigger",
                "measurand": "Energy.Active.Import.Register",
                "location": "Outlet",
                "unitOfMeasure": {"unit": "Wh", "multiplier": 0},
            }
        ]
        write = _set_variable("AlignedDataCtrlr", "Measurands", "Current.Import,Voltage,Frequency")
        assert (await call(csms, conn, "SetVariables", write))["setVariableResult"][0]["attributeStatus"] == (
            "Accepted"
        )
        payloads = await _triggered_meter_values(csms, conn, {})
    assert [p["evseId"] for p in payloads] == [1, 2]
    values = _by_measurand(payloads[0])
    assert set(values) == {
        "Current.Import/L1",
        "Current.Import/L2",
        "Current.Import/L3",
        "Voltage/L1-N",
        "Voltage/L2-N",
        "Voltage/L3-N",
        "Frequency",
    }
    assert values["Voltage/L2-N"] == {
        "value": 230,
        "context": "Trigger",
        "measurand": "Voltage",
        "phase": "L2-N",
        "location": "Outlet",
        "unitOfMeasure": {"unit": "V", "multiplier": 0},
    }
    assert values["Current.Import/L3"]["unitOfMeasure"] == {"unit": "A", "multiplier": 0}
    assert values["Frequency"]["value"] == 50 and "phase" not in values["Frequency"]


async def test_v16_5_17_meter_values_trigger_sends_the_meter_values_sampled_data_measurands(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """1.6 section 5.17 (errata 3.46): a triggered MeterValues holds the most recent measurements of
    every measurand in MeterValuesSampledData (not MeterValuesAlignedData), context Trigger, as 1.6
    strings with unit, location, format and, per phase, the phase."""
    csms, conn = CsmsPeer(V16), MemoryConnection(V16)
    async with open_session_context(tmp_path, V16, run_evses=True) as ctx, serving(csms, conn, ctx):
        await csms.wait_for("StatusNotification", 3)
        await trio.sleep(6)  # the sim meters have been polled
        change = {"key": "MeterValuesAlignedData", "value": "Frequency"}
        assert (await call(csms, conn, "ChangeConfiguration", change))["status"] == "Accepted"
        asked_at = ctx.clock.iso()
        [payload] = await _triggered_meter_values(csms, conn, {"connectorId": 1})
        assert payload["connectorId"] == 1 and "transactionId" not in payload
        assert payload["meterValue"][0]["timestamp"] == asked_at
        values = _by_measurand(payload)
        # MeterValuesSampledData's default: the register, the power and the current of each phase.
        assert set(values) == {
            "Energy.Active.Import.Register",
            "Power.Active.Import",
            "Current.Import/L1",
            "Current.Import/L2",
            "Current.Import/L3",
        }
        assert values["Energy.Active.Import.Register"] == {
            "value": "1000",
            "context": "Trigger",
            "format": "Raw",
            "measurand": "Energy.Active.Import.Register",
            "location": "Outlet",
            "unit": "Wh",
        }
        assert values["Current.Import/L2"] == {
            "value": "0",
            "context": "Trigger",
            "format": "Raw",
            "measurand": "Current.Import",
            "phase": "L2",
            "location": "Outlet",
            "unit": "A",
        }
        assert values["Power.Active.Import"]["unit"] == "W"
        change = {"key": "MeterValuesSampledData", "value": "Voltage"}
        assert (await call(csms, conn, "ChangeConfiguration", change))["status"] == "Accepted"
        payloads = await _triggered_meter_values(csms, conn, {})
    assert [p["connectorId"] for p in payloads] == [1, 2]
    assert set(_by_measurand(payloads[1])) == {"Voltage/L1-N", "Voltage/L2-N", "Voltage/L3-N"}


async def test_f06_fr_17_boot_trigger_after_accepted_is_rejected_and_sends_nothing(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    csms, conn = CsmsPeer(V201), MemoryConnection(V201)
    async with open_session_context(tmp_path, V201) as ctx, serving(csms, conn, ctx):
        await csms.wait_for("StatusNotification", 2)
        request = {"requestedMessage": "BootNotification"}
        assert await call(csms, conn, "TriggerMessage", request) == {"status": "Rejected"}
        await trio.sleep(1)
        assert len(csms.of("BootNotification")) == 1


async def test_b02_f06_while_pending_boot_trigger_sends_boot_now_and_triggered_messages_go_out(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """B02.FR.09: a triggered message goes out while Pending; TC_B_31: the trigger cuts the boot
    interval short, with reason Triggered."""
    csms, conn = CsmsPeer(V201), MemoryConnection(V201)
    csms.then(
        "BootNotification", {"status": "Pending", "currentTime": "2030-06-01T12:00:00Z", "interval": 600}
    )
    async with open_session_context(tmp_path, V201) as ctx, serving(csms, conn, ctx):
        await csms.wait_for("BootNotification")
        await trio.sleep(1)  # virtual: the Pending answer is processed long before (nothing to wait on)
        assert ctx.uplink.boot.state is BootState.PENDING
        assert await call(csms, conn, "TriggerMessage", {"requestedMessage": "Heartbeat"}) == {
            "status": "Accepted"
        }
        await csms.wait_for("Heartbeat")
        pending_at = trio.current_time()
        assert await call(csms, conn, "TriggerMessage", {"requestedMessage": "BootNotification"}) == {
            "status": "Accepted"
        }
        boots = await csms.wait_for("BootNotification", 2)
        assert boots[1].at - pending_at < 10  # not after the 600 s interval
        assert boots[1].call.payload["reason"] == "Triggered"
        await csms.wait_for("StatusNotification", 2)  # Accepted now


@pytest.mark.parametrize(
    ("version", "action", "message"),
    [(V201, "TriggerMessage", m) for m in sorted(NOT_IMPLEMENTED_TRIGGERS[V201])]
    + [(V16, "TriggerMessage", m) for m in ("DiagnosticsStatusNotification", "FirmwareStatusNotification")]
    + [
        (V16, "ExtendedTriggerMessage", m)
        for m in ("LogStatusNotification", "FirmwareStatusNotification", "SignChargePointCertificate")
    ],
)
async def test_trigger_of_a_message_whose_block_is_not_built_is_not_implemented_and_sends_nothing(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion, action: str, message: str
) -> None:
    csms, conn = CsmsPeer(version), MemoryConnection(version)
    async with open_session_context(tmp_path, version) as ctx, serving(csms, conn, ctx):
        await csms.wait_for("StatusNotification", statuses_at_boot(version))  # 1.6: and connector 0
        before = len(csms.seen)
        assert await call(csms, conn, action, {"requestedMessage": message}) == {"status": "NotImplemented"}
        await trio.sleep(1)
        assert len(csms.seen) == before


async def test_v16_5_17_status_for_all_connectors_one_connector_connector_0_and_unknown_rejected(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    csms, conn = CsmsPeer(V16), MemoryConnection(V16)
    async with open_session_context(tmp_path, V16) as ctx, serving(csms, conn, ctx):
        await csms.wait_for("StatusNotification", 3)
        assert await call(csms, conn, "TriggerMessage", {"requestedMessage": "StatusNotification"}) == {
            "status": "Accepted"
        }
        seen = await csms.wait_for("StatusNotification", 6)
        assert [s.call.payload["connectorId"] for s in seen[3:]] == [0, 1, 2]
        for connector_id, expected in ((2, 2), (0, 0)):
            request = {"requestedMessage": "StatusNotification", "connectorId": connector_id}
            assert await call(csms, conn, "TriggerMessage", request) == {"status": "Accepted"}
            seen = await csms.wait_for("StatusNotification", len(seen) + 1)
            assert seen[-1].call.payload["connectorId"] == expected
        request = {"requestedMessage": "MeterValues", "connectorId": 3}
        assert await call(csms, conn, "TriggerMessage", request) == {"status": "Rejected"}


async def test_v16_boot_and_extended_heartbeat_triggers_after_accepted_send_the_message(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """1.6 has no F06.FR.17: an Accepted charge point sends a BootNotification on request."""
    csms, conn = CsmsPeer(V16), MemoryConnection(V16)
    async with open_session_context(tmp_path, V16) as ctx, serving(csms, conn, ctx):
        await csms.wait_for("StatusNotification", 3)
        assert await call(csms, conn, "TriggerMessage", {"requestedMessage": "BootNotification"}) == {
            "status": "Accepted"
        }
        await csms.wait_for("BootNotification", 2)
        assert await call(csms, conn, "ExtendedTriggerMessage", {"requestedMessage": "Heartbeat"}) == {
            "status": "Accepted"
        }
        await csms.wait_for("Heartbeat")
        assert ctx.uplink.boot.state is BootState.ACCEPTED


def transaction_events(csms: CsmsPeer) -> list[dict[str, Any]]:
    return [s.call.payload for s in csms.of("TransactionEvent")]


async def test_f06_fr_07_transaction_event_trigger_sends_updated_trigger_after_the_answer_seq_no_contiguous(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """F06.FR.07: TransactionEvent Updated, triggerReason Trigger, with chargingState and a Trigger
    reading, for the EVSE's transaction (no EVSE: every running one), after the answer (F06.FR.04),
    queued through the outbox so seqNo follows the transaction's other events and is persisted.
    Without a running transaction there (or anywhere): Rejected (TxNotFound), nothing sent."""
    csms = CsmsPeer(V201)
    async with online(tmp_path, V201, csms) as (ctx, conn):
        for evse in ({"evse": {"id": 1}}, {}):
            answer = await call(
                csms, conn, "TriggerMessage", {"requestedMessage": "TransactionEvent", **evse}
            )
            assert answer["status"] == "Rejected"
            assert answer["statusInfo"]["reasonCode"] == "TxNotFound"
        await start_transaction(ctx, 1)
        await trio.sleep(10)  # the sim EV draws energy: Started, then Updated ChargingStateChanged
        await ctx.outbox.wait_empty()
        assert all(e["triggerReason"] != "Trigger" for e in transaction_events(csms))
        start = len(csms.wire)
        request = {"requestedMessage": "TransactionEvent", "evse": {"id": 1}}
        assert await call(csms, conn, "TriggerMessage", request) == {"status": "Accepted"}
        count = len(csms.of("TransactionEvent"))
        await csms.wait_for("TransactionEvent", count + 1)
        assert csms.wire[start : start + 2] == ["answer", "TransactionEvent"]  # F06.FR.04
        triggered = transaction_events(csms)[-1]
        assert (triggered["eventType"], triggered["triggerReason"]) == ("Updated", "Trigger")
        assert triggered["evse"] == {"id": 1, "connectorId": 1}
        assert triggered["transactionInfo"] == {
            "transactionId": ctx.blocks.transactions.ids.get(1),
            "chargingState": "Charging",
        }
        [reading] = triggered["meterValue"]
        assert {v["context"] for v in reading["sampledValue"]} == {"Trigger"}
        # EVSE 2 has no transaction; no EVSE (or EVSE 0) means every running transaction.
        request = {"requestedMessage": "TransactionEvent", "evse": {"id": 2}}
        assert (await call(csms, conn, "TriggerMessage", request))["status"] == "Rejected"
        for evse in ({}, {"evse": {"id": 0}}):
            request = {"requestedMessage": "TransactionEvent", **evse}
            assert await call(csms, conn, "TriggerMessage", request) == {"status": "Accepted"}
            count += 1
            await csms.wait_for("TransactionEvent", count + 1)
            assert transaction_events(csms)[-1]["triggerReason"] == "Trigger"
        await ctx.outbox.wait_empty()
        events = transaction_events(csms)
        assert [e["seqNo"] for e in events] == list(range(len(events)))
        [record] = await ctx.blocks.transactions.services.storage.transactions()
        assert record.seq_no == events[-1]["seqNo"]  # persisted: the next event continues from it


async def test_v16_5_17_meter_values_trigger_carries_the_transaction_id_of_its_connector(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """1.6 MeterValues.transactionId: the CSMS's id of the transaction on the triggered connector; a
    connector without one sends none."""
    csms = CsmsPeer(V16)
    async with online(tmp_path, V16, csms) as (ctx, conn):
        await start_transaction(ctx, 1)
        await ctx.blocks.transactions.ids.wait_known(1)
        await trio.sleep(6)  # the sim meters have been polled

        def triggered() -> list[dict[str, Any]]:
            payloads: list[dict[str, Any]] = [s.call.payload for s in csms.of("MeterValues")]
            return [p for p in payloads if p["meterValue"][0]["sampledValue"][0]["context"] == "Trigger"]

        for connector_id in (1, 2):
            request = {"requestedMessage": "MeterValues", "connectorId": connector_id}
            assert await call(csms, conn, "TriggerMessage", request) == {"status": "Accepted"}
            while len(triggered()) < connector_id:
                await csms.wait_for("MeterValues", len(csms.of("MeterValues")) + 1)
        first, second = triggered()
        assert (first["connectorId"], first["transactionId"]) == (1, 42)  # the CsmsPeer's id
        assert second["connectorId"] == 2 and "transactionId" not in second


async def test_v16_5_17_triggered_meter_values_carry_no_placeholder_id_before_the_start_is_answered(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """While the StartTransaction waits for its answer the transaction has only the station's local
    (negative) placeholder id, which names nothing the CSMS knows: the triggered MeterValues of its
    connector goes out without a transactionId."""
    csms = CsmsPeer(V16).then("StartTransaction", NoAnswer())
    async with online(tmp_path, V16, csms) as (ctx, conn):
        await start_transaction(ctx, 1)
        await csms.wait_for("StartTransaction")
        await trio.sleep(6)  # the sim meters have been polled; the start still unanswered
        assert (ctx.blocks.transactions.ids.get(1) or "").startswith("-")
        request = {"requestedMessage": "MeterValues", "connectorId": 1}
        assert await call(csms, conn, "TriggerMessage", request) == {"status": "Accepted"}
        (sent,) = await csms.wait_for("MeterValues")
    payload: dict[str, Any] = sent.call.payload
    assert payload["meterValue"][0]["sampledValue"][0]["context"] == "Trigger"
    assert payload["connectorId"] == 1 and "transactionId" not in payload
